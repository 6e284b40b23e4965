"""What a validation writes: the output that appears only once complete, the errors CSV, the
sha256 of the input, and progress reports."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO

from app.core.csv_cells import safe_writer

Progress = Callable[[int, int], None]


def write_all(out: BinaryIO, pieces: list[bytes]) -> int:
    """Write `pieces` in one system call when possible: no joined copy of them is made.

    `out` must not hold buffered data of its own (only this function writes to it).
    """
    total = sum(map(len, pieces))
    try:
        written = os.writev(out.fileno(), pieces)
    except (AttributeError, OSError, io.UnsupportedOperation):  # no writev here
        written = 0
    if written < total:
        out.write(b"".join(pieces)[written:])
        out.flush()
    return total


class EarlySync:
    """Has the disk take the output while records are still being checked.

    The output is fsynced before it is renamed into place; issued every 64 MB from a thread,
    fdatasync overlaps the disk's work with ours, and the last fsync has little left to wait for.
    """

    EVERY = 64 * 1024 * 1024

    def __init__(self, out: BinaryIO | None) -> None:
        self.fd = out.fileno() if out is not None else None
        self.unsynced = 0
        self.thread: threading.Thread | None = None

    def wrote(self, count: int) -> None:
        self.unsynced += count
        if self.fd is None or self.unsynced < self.EVERY:
            return
        if self.thread is not None and self.thread.is_alive():
            return
        self.unsynced = 0
        self.thread = threading.Thread(target=self._sync, args=(self.fd,), daemon=True)
        self.thread.start()

    @staticmethod
    def _sync(fd: int) -> None:
        with contextlib.suppress(OSError):  # the final fsync reports a real failure
            getattr(os, "fdatasync", os.fsync)(fd)  # macOS has no fdatasync

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None


class AtomicFile:
    """A file that appears at `dest` only on commit(); otherwise nothing is left behind.

    It is written to a temporary file in the same folder and renamed at the end, so a reader
    never sees half a dataset and a failed upload leaves no file.
    """

    def __init__(self, dest: Path | None) -> None:
        self.dest = dest
        self.tmp: Path | None = None
        self._file: BinaryIO | None = None

    @property
    def file(self) -> BinaryIO:
        assert self._file is not None
        return self._file

    def __enter__(self) -> AtomicFile | None:
        if self.dest is None:
            return None
        fd, name = tempfile.mkstemp(
            dir=self.dest.parent, prefix=f".{self.dest.name}.", suffix=".part"
        )
        self.tmp = Path(name)
        self._file = os.fdopen(fd, "wb")
        return self

    def truncate(self) -> None:
        self.file.seek(0)
        self.file.truncate()

    def commit(self) -> None:
        assert self._file is not None and self.tmp is not None and self.dest is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.replace(self.tmp, self.dest)
        self.tmp = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


class ErrorsCsv:
    """Every error as CSV (line, field, message), UTF-8 with a byte order mark so that Excel
    shows Chinese right. Written next to `path` and moved there when complete."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.tmp: Path | None = None
        self.file: IO[str] | None = None

    @staticmethod
    def header(f: IO[str]) -> None:
        f.write("\ufeff")
        safe_writer(f).writerow(("line", "field", "message"))

    def __enter__(self) -> IO[str] | None:
        if self.path is None:
            return None
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        self.tmp = Path(name)
        self.file = open(fd, "w", encoding="utf-8", newline="")
        self.header(self.file)
        return self.file

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.file is None or self.tmp is None or self.path is None:
            return
        self.file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class Sha256:
    """The sha256 of a file, computed by a thread while the records are read.

    hashlib lets go of the GIL while hashing large blocks, so on a machine with two cores the
    digest costs the validation (almost) no time.
    """

    def __init__(self, path: Path) -> None:
        self._digest = ""
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            with path.open("rb") as f:
                self._digest = hashlib.file_digest(f, "sha256").hexdigest()
        except BaseException as exc:  # re-raised in the caller's thread
            self._error = exc

    def hexdigest(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest


class Ticker:
    """Calls progress(bytes_read, bytes_total) at most once every `every` seconds, and once at
    the end."""

    def __init__(self, progress: Progress | None, total: int, *, every: float) -> None:
        self.progress = progress
        self.total = total
        self.every = every
        self.last = 0.0

    def update(self, done: int) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.progress(min(done, self.total), self.total)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress(self.total, self.total)
