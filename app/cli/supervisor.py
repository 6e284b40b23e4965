"""The worker process that ``tunelab serve`` runs beside the web server (embedded mode).

It is supervised: a worker that dies is restarted after a growing pause (1 s, 2 s, 4 s … a
minute), the work it held goes back to the queue at once with an event saying why, and
``serve`` stops it (waiting for it to hand its job back) before exiting. Should ``serve``
itself be killed outright, the kernel stops the worker too (``PR_SET_PDEATHSIG``), so no
orphan keeps training a job that a restarted ``serve`` runs again.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
BACKOFF_SECONDS = (1, 2, 4, 8, 16, 32, 60)
# A worker that ran this long before dying starts the backoff from the beginning again.
HEALTHY_SECONDS = 60.0


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to send SIGTERM to this process when its parent dies (Linux); exit now
    if the parent is already gone. Kept across ``exec``, so the Celery worker inherits it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: serve's own shutdown still stops the worker
        return
    if os.getppid() != parent_pid:
        sys.exit(0)


class WorkerSupervisor:
    """Start, watch, restart and stop one worker process."""

    def __init__(self, command: list[str], *, on_death: object = None) -> None:
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self.process = subprocess.Popen(self.command)
            self.started_at = time.monotonic()

    def stop(self, grace: float = 30.0) -> None:
        """Warm shutdown: the worker stops its job at the next step and hands it back to the
        queue; past ``grace`` it is killed (the job is then re-queued on the next start)."""
        self._stopping.set()
        with self._lock:
            proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _watch(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            proc = self.process
            assert proc is not None
            code = proc.wait()
            if self._stopping.is_set():
                return
            lived = time.monotonic() - self.started_at
            if lived > HEALTHY_SECONDS:
                attempt = 0
            pause = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
            why = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            log.warning("the worker (pid %s) %s; restarting it in %s s", proc.pid, why, pause)
            print(f"tunelab: the worker {why}; restarting it in {pause} s", flush=True)
            try:
                requeue_work_of(f"{socket.gethostname()}:{proc.pid}", f"the worker {why}")
            except Exception:  # the next start reaps whatever this could not
                log.exception("could not hand the dead worker's work back to the queue")
            if self._stopping.wait(pause):
                return
            attempt += 1
            self.restarts += 1
            self._spawn()


def requeue_work_of(worker: str, why: str) -> int:
    """Give back to the queue (or end) what a dead worker held, now rather than after its
    lease runs out, and offer it to the broker again."""
    from app.core.db import session_scope
    from app.services import leases
    from app.services.queue import offer_all

    with session_scope() as session:
        offers = leases.reap(session, lease_seconds=0, worker=worker, reason=why)
        session.commit()
        return offer_all(session, offers)
