"""app.core.coalesce: concurrent reads of one key share a load, and none is answered with what
was loaded before it arrived."""

from __future__ import annotations

import asyncio

import pytest

from app.core.coalesce import Coalescer


async def settle() -> None:
    """Let every task that can run, run (a read starts its load task, which then starts)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Source:
    """A value that changes, read slowly: each load returns the value as it was when the load
    started, and can be held open by the test."""

    def __init__(self) -> None:
        self.value = 0
        self.loads_started = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def load(self) -> int:
        self.loads_started += 1
        seen = self.value
        await self.gate.wait()
        return seen


def test_reads_during_a_load_share_the_next_one_and_see_what_came_after_them() -> None:
    async def scenario() -> None:
        reads: Coalescer[int] = Coalescer()
        source = Source()
        source.gate.clear()
        first = asyncio.ensure_future(reads.read("job", source.load))
        await settle()
        assert source.loads_started == 1
        # The value changes while the first load runs; reads that arrive now must not get the
        # first load's answer (it was read before they came).
        source.value = 1
        later = [asyncio.ensure_future(reads.read("job", source.load)) for _ in range(50)]
        await settle()
        assert source.loads_started == 1  # they wait for the running load to end
        source.gate.set()
        assert await first == 0
        assert await asyncio.gather(*later) == [1] * 50
        # 51 reads, two loads; and nothing is kept once the reads are answered.
        assert (reads.reads, reads.loads, source.loads_started) == (51, 2, 2)
        assert reads._slots == {}
        source.value = 2
        assert await reads.read("job", source.load) == 2

    asyncio.run(scenario())


def test_keys_do_not_share() -> None:
    async def scenario() -> None:
        reads: Coalescer[str] = Coalescer()

        async def load(name: str) -> str:
            await asyncio.sleep(0.01)
            return name

        answers = await asyncio.gather(
            *(reads.read(k, lambda k=k: load(k)) for k in ["a", "b", "a", "b"])  # type: ignore[misc]
        )
        assert answers == ["a", "b", "a", "b"]
        assert reads.loads == 4  # per key: the first read's load, and the next for the second

    asyncio.run(scenario())


def test_an_error_reaches_every_reader_of_its_load_and_the_next_read_tries_again() -> None:
    async def scenario() -> None:
        reads: Coalescer[int] = Coalescer()
        gate = asyncio.Event()
        fail = True

        async def load() -> int:
            await gate.wait()
            if fail:
                raise LookupError("job not found")
            return 7

        first = asyncio.ensure_future(reads.read("job", load))
        await settle()
        second = asyncio.ensure_future(reads.read("job", load))
        await settle()
        gate.set()
        with pytest.raises(LookupError):
            await first
        with pytest.raises(LookupError):  # its own load (the second) failed as well
            await second
        fail = False
        assert await reads.read("job", load) == 7

    asyncio.run(scenario())


def test_a_reader_that_goes_away_does_not_cancel_the_others() -> None:
    async def scenario() -> None:
        reads: Coalescer[int] = Coalescer()
        source = Source()
        source.gate.clear()
        leader = asyncio.ensure_future(reads.read("job", source.load))
        follower = asyncio.ensure_future(reads.read("job", source.load))
        await settle()
        # The one that started the load goes away (its client disconnected).
        leader.cancel()
        await settle()
        source.value = 3
        source.gate.set()
        assert await follower == 3  # the follower's own load ran, after the first ended
        assert source.loads_started == 2
        with pytest.raises(asyncio.CancelledError):
            await leader

    asyncio.run(scenario())


def test_each_event_loop_has_its_own_reads() -> None:
    # One app served from one loop after another (as tests do): nothing of the first loop's
    # is awaited from the second.
    reads: Coalescer[int] = Coalescer()
    source = Source()
    assert asyncio.run(reads.read("job", source.load)) == 0
    source.value = 1
    assert asyncio.run(reads.read("job", source.load)) == 1
