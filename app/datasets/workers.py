"""A large JSONL file checked by several worker processes, and their results put together.

The file is split at line boundaries; each worker (a `python -c` child running `_range_worker`)
checks one range with `RecordsPass.jsonl`. The first writes straight into the output; the
others' parts are appended in order as soon as everything before them is in, and their results
(counts, errors, duplicate digests) add up as if one pass had read the whole file.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import mmap
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import IO, BinaryIO

from app.core.csv_cells import safe_writer
from app.datasets import containers as dataset_containers
from app.datasets.output import AtomicFile, EarlySync, Ticker
from app.datasets.plan import Plan
from app.datasets.records_pass import READ_BUFFER, RecordsPass, Result

# JSONL at least this large is checked by several processes (when there are cores for them).
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
MAX_WORKERS = 4

logger = logging.getLogger(__name__)


def worker_count(size: int, workers: int | None) -> int:
    if workers is not None:
        return max(1, min(workers, MAX_WORKERS))
    if size < PARALLEL_MIN_BYTES:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


@dataclass
class _Job:
    """One worker's share of a JSONL file: the lines starting in [start, end)."""

    path: str
    start: int
    end: int
    plan: Plan
    max_errors: int
    errors_cap: int  # rows of the errors file
    max_record_bytes: int
    progress_every: float  # seconds
    out: str | None
    errors_out: str | None
    result: str


def _split(src: Path, size: int, count: int) -> list[tuple[int, int]]:
    """`count` byte ranges of about equal size, each starting at the start of a line."""
    bounds = [0]
    with src.open("rb") as f:
        for k in range(1, count):
            f.seek(max(size * k // count - 1, bounds[-1]))
            f.readline()  # to the end of the line this offset falls in
            bounds.append(min(f.tell(), size))
    bounds.append(size)
    return [(a, b) for a, b in pairwise(bounds) if b > a]


def check_jsonl_in_workers(
    src: Path,
    plan: Plan,
    out: AtomicFile | None,
    errors_out: IO[str] | None,
    max_errors: int,
    ticker: Ticker,
    size: int,
    count: int,
    *,
    errors_cap: int,
) -> Result | None:
    """Check ranges of `src` in worker processes and add up what they found (None: a worker
    failed). The first worker writes straight into `out`; the others' parts are appended as
    soon as everything before them is in, while the later workers are still busy."""
    ranges = _split(src, size, count)
    with tempfile.TemporaryDirectory(prefix="tunelab-validate-") as tmp:
        folder = Path(tmp)
        jobs = [
            _Job(
                path=str(src),
                start=start,
                end=end,
                plan=plan,
                max_errors=max_errors,
                errors_cap=errors_cap,
                max_record_bytes=dataset_containers.MAX_RECORD_BYTES,
                progress_every=ticker.every,
                out=(str(out.tmp) if i == 0 else str(folder / f"part{i}")) if out else None,
                errors_out=str(folder / f"errors{i}.csv") if errors_out is not None else None,
                result=str(folder / f"result{i}"),
            )
            for i, (start, end) in enumerate(ranges)
        ]
        if out is not None:
            out.file.flush()
        # One hash seed for all workers, so hash() of equal conversations agrees between them.
        seed = str(int.from_bytes(os.urandom(4), "little") or 1)
        workers = [_Worker(job, seed) for job in jobs]
        tail = _Tail(out.file if out else None, workers)
        try:
            while any(w.running() for w in workers):
                ticker.update(sum(w.done for w in workers))
                if not tail.step():
                    time.sleep(ticker.every / 2)
            results = [w.outcome() for w in workers]
            if all(r is not None for r in results):
                tail.finish()
        finally:
            for w in workers:
                w.stop()
        if any(r is None for r in results):
            return None
        total = _merge([r for r in results if r is not None], max_errors)
        if errors_out is not None:
            written = 0
            for job in jobs:
                assert job.errors_out is not None
                written += _append_rows(errors_out, Path(job.errors_out), errors_cap - written)
            total.error_rows = written
    return total


class _Worker:
    """A child process checking one range; it reports progress on stdout."""

    def __init__(self, job: _Job, seed: str) -> None:
        self.job = job
        self.done = 0  # bytes of its range read
        self.written = 0  # bytes of its part written whole: they may be copied already
        env = dict(os.environ, PYTHONHASHSEED=seed)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        code = "from app.datasets.workers import _range_worker; _range_worker()"
        # kept for the worker's life, to log why it failed if it does
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                env=env,
            )
        except OSError as exc:
            logger.warning("could not start a dataset validation worker: %s", exc)
            self.proc = None
            return
        self.reader = threading.Thread(target=self._read_progress, daemon=True)
        self.reader.start()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(pickle.dumps(job))  # small: it fits in the pipe at once
            self.proc.stdin.close()
        except OSError:  # it died at once; outcome() says so
            pass

    def _read_progress(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                done, written = map(int, line.split())
                self.done, self.written = done - self.job.start, written

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def outcome(self) -> Result | None:
        if self.proc is None:
            return None
        if code := self.proc.wait():
            self.stderr.seek(0)
            tail = self.stderr.read()[-2000:].decode("utf-8", "replace")
            logger.warning("a dataset validation worker failed (exit %s): %s", code, tail)
            return None
        self.reader.join()
        try:
            with open(self.job.result, "rb") as f:
                result = pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError):
            return None
        return result if isinstance(result, Result) else None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(timeout=5)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        self.stderr.close()


def _range_worker() -> None:
    """Entry point of a worker process: check the range described on stdin."""
    job: _Job = pickle.loads(sys.stdin.buffer.read())
    dataset_containers.MAX_RECORD_BYTES = job.max_record_bytes
    out = open(job.out, "r+b" if job.start == 0 else "wb") if job.out else None  # noqa: SIM115
    errors_out = (
        open(job.errors_out, "w", encoding="utf-8", newline="") if job.errors_out else None  # noqa: SIM115
    )
    try:
        if out is not None:
            out.seek(0, os.SEEK_END)
        # only the first range writes the output itself; the others' parts are copied into it
        pass_ = RecordsPass(
            job.plan,
            out=out,
            errors_out=errors_out,
            max_errors=job.max_errors,
            errors_cap=job.errors_cap,
            sync=not job.start,
        )
        last = [0.0]

        def tick(pos: int) -> None:
            now = time.monotonic()
            if now - last[0] >= job.progress_every / 2:
                last[0] = now
                sys.stdout.write(f"{pos} {pass_.written}\n")
                sys.stdout.flush()

        with open(job.path, "rb", buffering=READ_BUFFER) as f:
            line = _count_lines(f, job.start) if job.start else 0
            f.seek(job.start)
            pass_.jsonl(f, line=line, start=job.start, end=job.end, tick=tick)
        pass_.finish()
        with open(job.result, "wb") as result:
            pickle.dump(pass_.result(), result, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        if out is not None:
            out.close()
        if errors_out is not None:
            errors_out.close()


def _count_lines(f: BinaryIO, end: int) -> int:
    """Newlines in the first `end` bytes: the line number just before a worker's range.

    With long lines (training records are), jumping from newline to newline in a memory map
    beats copying the bytes out to count them; short lines are counted in copied chunks.
    """
    try:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            if mapped[: min(end, 1 << 20)].count(b"\n") < 2048:  # lines of 512 bytes or more
                lines, find, window = 0, mapped.find, 4 * 1024 * 1024
                for start in range(0, end, window):
                    stop = min(start + window, end)
                    pos = start
                    while pos := find(b"\n", pos, stop) + 1:
                        lines += 1
                    # let go of the pages read: they would count as this process's memory
                    mapped.madvise(mmap.MADV_DONTNEED, start, stop - start)
                return lines
    except (OSError, ValueError, AttributeError):  # cannot be mapped here: count below
        pass
    f.seek(0)
    lines = pos = 0
    while pos < end and (chunk := f.read(min(4 * 1024 * 1024, end - pos))):
        lines += chunk.count(b"\n")
        pos += len(chunk)
    return lines


def _merge(results: list[Result], max_errors: int) -> Result:
    """The results of consecutive ranges as if one pass had read them all."""
    # the first part's digests are extended in place, and each later part's freed once copied
    total = Result(
        hashes=results[0].hashes, lines=results[0].lines, scripts={"cjk": [0, 0], "latin": [0, 0]}
    )
    for k, part in enumerate(results):
        total.records += part.records
        total.invalid += part.invalid
        total.error_count += part.error_count
        total.errors.extend(part.errors[: max(0, max_errors - len(total.errors))])
        total.fatal = total.fatal or part.fatal
        total.wrote = total.wrote and part.wrote
        for name, n in part.formats.items():
            total.formats[name] = total.formats.get(name, 0) + n
            total.format_lines.setdefault(name, part.format_lines[name])
        total.short += part.short
        total.short_line = total.short_line or part.short_line
        total.unanswered += part.unanswered
        total.unanswered_line = total.unanswered_line or part.unanswered_line
        total.unanswered_field = total.unanswered_field or part.unanswered_field
        for script, (n, line) in part.scripts.items():
            counts = total.scripts[script]
            counts[0] += n
            counts[1] = counts[1] or line
        if k:
            for i in range(256):
                total.hashes[i].extend(part.hashes[i])
                total.lines[i].extend(part.lines[i])
                part.hashes[i], part.lines[i] = array("Q"), array("I")
    return total


class _Tail:
    """Appends the workers' parts to the output in order, each as soon as all before it is in.

    The first worker writes the output itself and usually finishes first (the others count
    lines before they start), so the copying of the later parts, and their way to the disk,
    overlap with the work still going on.
    """

    def __init__(self, out: BinaryIO | None, workers: list[_Worker]) -> None:
        self.out = out
        self.workers = workers
        self.current = 1  # the part being appended
        self.copied = 0  # bytes of it appended so far
        self.sync = EarlySync(out)

    def step(self) -> bool:
        """Append what is ready; False when there was nothing to do."""
        if self.out is None or self.current >= len(self.workers):
            return False
        if self.workers[self.current - 1].running():
            return False  # what comes before this part is not complete yet
        if self.current == 1 and self.copied == 0:
            self.out.seek(0, os.SEEK_END)  # past what the first worker wrote
        worker = self.workers[self.current]
        if worker.proc is None or worker.job.out is None:
            return False  # it never started: everything is done again in one process
        finished = not worker.running()
        try:
            with open(worker.job.out, "rb") as f:
                # a running worker has said how much it has written whole; a finished one is done
                size = os.fstat(f.fileno()).st_size if finished else worker.written
                moved = _copy(f, self.out, self.copied, max(0, size - self.copied))
        except FileNotFoundError:  # not created yet (or the worker failed before)
            moved = 0
        self.copied += moved
        self.sync.wrote(moved)
        if finished:
            self.current += 1
            self.copied = 0
        return moved > 0 or finished

    def finish(self) -> None:
        while self.step():
            pass
        self.sync.join()


def _copy(src: BinaryIO, out: BinaryIO, offset: int, count: int) -> int:
    """Append `count` bytes of `src` from `offset` to `out`, inside the kernel when it can."""
    done = 0
    try:
        while done < count:
            sent = os.copy_file_range(src.fileno(), out.fileno(), count - done, offset + done)
            if sent == 0:
                break
            done += sent
    except (AttributeError, OSError):  # not Linux, or a file system that cannot
        src.seek(offset + done)
        while done < count and (chunk := src.read(min(1024 * 1024, count - done))):
            out.write(chunk)
            done += len(chunk)
        out.flush()
    return done


def _append_rows(out: IO[str], part: Path, room: int) -> int:
    """Copy at most `room` CSV rows of `part` to `out`; return how many were copied."""
    copied = 0
    with part.open(encoding="utf-8", newline="") as f:
        writer = safe_writer(out)
        for row in csv.reader(f):
            if copied >= room:
                break
            writer.writerow(row)
            copied += 1
    return copied
