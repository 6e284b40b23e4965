"""``tunelab serve`` (the web server, and in embedded mode its supervised worker) and
``tunelab worker``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import unicodedata
from typing import Any

from app.cli.accounts import settings_ready
from app.core.i18n import gettext


def worker_command(queue: str, loglevel: str = "INFO", quiet: bool = False) -> list[str]:
    # One job at a time per process (solo pool): a GPU host runs one worker per GPU. Gossip,
    # mingle and broker heartbeats are off because the embedded SQL broker has no fan-out,
    # and job liveness is tracked on the job row instead. quiet: no start-up banner (serve's
    # own worker, whose banner would bury the first-start link printed last).
    return [
        sys.executable,
        "-m",
        "celery",
        *(["--quiet"] if quiet else []),
        "-A",
        "worker.celery_app:celery_app",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        f"--queues={queue}",
        f"--loglevel={loglevel}",
        f"--hostname=tunelab-{queue}-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.spec.versions import warn_untested_versions

    if args.parent_pid:
        from app.cli.supervisor import die_with_parent

        die_with_parent(args.parent_pid)
    warn_untested_versions()
    settings = settings_ready()
    queue = args.queue or settings.default_queue
    if args.queue:
        # A queue named by hand is consumed alone; else the worker adds the capacity classes
        # it satisfies when it starts (worker.tasks.upkeep).
        os.environ["TUNELAB_WORKER_CLASS_QUEUES"] = "false"
    cmd = worker_command(queue, args.loglevel, quiet=bool(args.parent_pid))
    os.execv(cmd[0], cmd)
    return 0  # not reached


def _exit_on_signal(signum: int, _frame: Any) -> None:
    # uvicorn stops serving on SIGTERM, restores the handler it found and raises the signal
    # again: this handler turns it into an ordinary exit, so serve's cleanup (stopping its
    # worker) runs instead of the process vanishing with the worker left training.
    raise SystemExit(128 + signum)


def cmd_serve(args: argparse.Namespace) -> int:
    from worker.spec.versions import warn_untested_versions

    warn_untested_versions()
    import uvicorn

    from app.cli.supervisor import WorkerSupervisor
    from app.core.db import session_scope
    from app.core.migrate import upgrade
    from app.services import leases
    from app.services.datasets.imports import purge_stale_uploads

    settings = settings_ready()
    upgrade()
    with session_scope() as session:
        # Uploads nobody imported within a week; they count against their owner's quota.
        purge_stale_uploads(session, settings=settings)
    host = args.host or settings.host
    port = args.port or settings.port
    start_worker = settings.embedded if args.worker is None else args.worker
    supervisor: WorkerSupervisor | None = None
    if start_worker and not _engine_installed():
        print(
            gettext(
                "tunelab: the training engine is not installed here (pip install "
                "'tunelab[engine]'); serving without a local worker"
            ),
            flush=True,
        )
        start_worker = False
    if start_worker:
        if settings.embedded:
            # Nothing else can be running this data folder's work before our worker starts:
            # anything still marked running was cut off when tunelab last stopped. Give it
            # back to the queue now instead of waiting for its lease to expire; the worker's
            # sweeper offers it to the broker.
            with session_scope() as session:
                leases.reap(session, lease_seconds=0, reason="tunelab stopped while it ran")
        # No --queue: a queue named by hand is consumed alone, and in cluster mode jobs go to
        # the queues of capacity classes (placement), which the worker adds when it starts.
        supervisor = WorkerSupervisor(
            tunelab_command(
                "worker",
                "--loglevel",
                "WARNING",
                "--parent-pid",
                str(os.getpid()),
            )
        )
        supervisor.start()
    signal.signal(signal.SIGTERM, _exit_on_signal)
    mode = gettext("embedded") if settings.embedded else gettext("cluster")
    print(
        gettext(
            "tunelab (%(mode)s mode, data in %(data)s) at %(url)s",
            mode=mode,
            data=settings.data_dir,
            url=f"http://{host}:{port}",
        ),
        flush=True,
    )
    box = None
    if settings.embedded and host in ("127.0.0.1", "localhost", "::1"):
        box = _first_start(settings, host, port)
    server = uvicorn.Server(
        uvicorn.Config(
            "app.main:app",
            host=host,
            port=port,
            log_level=args.log_level,
            timeout_keep_alive=settings.keep_alive_seconds,
        )
    )
    if box:
        # Last of all: after uvicorn's own start-up lines, so it is not lost above them.
        threading.Thread(target=_print_when_started, args=(server, box), daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:
        # Ctrl-C: uvicorn has shut down and re-raises the interrupt; stopping is no error.
        pass
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0


def tunelab_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def _engine_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _first_start(settings: Any, host: str, port: int) -> str | None:
    """On loopback in embedded mode, the first start makes a local admin and gives a one-time
    login link (as Jupyter does), so the quick start needs no account setup; the admin then
    sets a password on the account page. Returns the box to print, or None on later starts."""
    from datetime import timedelta

    from app.core.db import session_scope
    from app.services.accounts import users as accounts

    with session_scope() as session:
        admin, created = accounts.ensure_local_admin(session)
        if not created:
            return None
        secret = accounts.create_login_link(session, user=admin, valid_for=timedelta(days=1))
        return boxed(
            [
                gettext(
                    "First start: log in as %(email)s with this one-time link:", email=admin.email
                ),
                f"http://{host}:{port}/login/link/{secret}",
                gettext("Then set a password on your account page to log in without a link."),
                gettext(
                    "(another link any time: tunelab user login-link %(email)s)", email=admin.email
                ),
            ]
        )


def display_width(text: str) -> int:
    """Columns a terminal gives ``text``: Chinese (East Asian wide) characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def boxed(lines: list[str]) -> str:
    """Lines in a frame, padded to the widest (CJK counted as two columns)."""
    width = max(display_width(line) for line in lines)
    rule = "─" * (width + 2)
    body = [f"│ {line}{' ' * (width - display_width(line))} │" for line in lines]
    return "\n".join(["", f"┌{rule}┐", *body, f"└{rule}┘", ""])


def _print_when_started(server: Any, box: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not server.started and not server.should_exit and time.monotonic() < deadline:
        time.sleep(0.1)
    if server.started:
        print(box, flush=True)
