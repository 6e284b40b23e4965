"""Shared reads for many clients that ask the same question at once, never answered late.

A hundred scripts polling one job's status ask the database the same thing a hundred times a
second. ``Coalescer.read`` lets concurrent reads of one key share a load, without ever
answering a read with what was loaded before it arrived: a read that comes while a load runs
waits for the next load, which starts as soon as the running one ends and answers every read
that arrived meanwhile. So each answer reflects the database at some moment after its request
came in (as a load of its own would), and a key costs at most one running load and one waiting
one, however many clients ask.

The load runs as a task of its own: a client that goes away does not cancel the others'
answer. It is the caller's to run blocking work off the event loop (``app.api.deps.in_thread``
or ``run_in_threadpool``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Slot(Generic[T]):
    running: asyncio.Future[T]
    waiting: asyncio.Future[T] | None = None
    load: Callable[[], Awaitable[T]] | None = field(default=None)


class Coalescer(Generic[T]):
    """Concurrent reads of one key share a load; no read gets an answer loaded before it came."""

    def __init__(self) -> None:
        # Per event loop: a test may serve one app from several loops in turn, and a future of
        # one loop cannot be awaited from another.
        self._slots: dict[tuple[asyncio.AbstractEventLoop, Hashable], _Slot[T]] = {}
        self.loads = 0  # how many loads ran, of how many reads (the tests read them)
        self.reads = 0

    async def read(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """The result of ``load()`` (or of an equal load of the same key that started after
        this call); the exception it raised, if it raised."""
        self.reads += 1
        loop = asyncio.get_running_loop()
        slot_key = (loop, key)
        slot = self._slots.get(slot_key)
        if slot is None:
            slot = _Slot(running=self._start(slot_key, load))
            self._slots[slot_key] = slot
            return await asyncio.shield(slot.running)
        if slot.waiting is None:
            slot.waiting = loop.create_future()
            # Its error is seen here too, so one whose readers all went away is not logged.
            slot.waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
            slot.load = load
        return await asyncio.shield(slot.waiting)

    def _start(
        self, slot_key: tuple[asyncio.AbstractEventLoop, Hashable], load: Callable[[], Awaitable[T]]
    ) -> asyncio.Future[T]:
        self.loads += 1
        task: asyncio.Future[T] = asyncio.ensure_future(load())
        task.add_done_callback(lambda done: self._finished(slot_key, done))
        return task

    def _finished(
        self, slot_key: tuple[asyncio.AbstractEventLoop, Hashable], done: asyncio.Future[T]
    ) -> None:
        if not done.cancelled():
            done.exception()  # seen here, so an answer nobody waits for any more is not logged
        slot = self._slots.get(slot_key)
        if slot is None or slot.running is not done:
            return
        if slot.waiting is None or slot.load is None:
            del self._slots[slot_key]
            return
        waiting, load = slot.waiting, slot.load
        slot.running, slot.waiting, slot.load = self._start(slot_key, load), None, None
        _chain(slot.running, waiting)


def _chain(source: asyncio.Future[T], target: asyncio.Future[T]) -> None:
    """Settle ``target`` as ``source`` settles."""

    def copy(done: asyncio.Future[T]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif (error := done.exception()) is not None:
            target.set_exception(error)
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)
