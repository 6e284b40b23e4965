"""The ``tunelab`` command: serve, worker, db, train."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


def _settings() -> Any:
    from app.core.config import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    return settings


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from app.core.migrate import upgrade

    settings = _settings()
    upgrade(args.revision)
    print(f"database at {_safe_url(settings.sqlalchemy_url)} is at revision {args.revision}")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def worker_command(queue: str, loglevel: str = "INFO") -> list[str]:
    # One job at a time per process (solo pool): a GPU host runs one worker per GPU. Gossip,
    # mingle and broker heartbeats are off because the embedded SQL broker has no fan-out,
    # and job liveness is tracked on the job row instead.
    return [
        sys.executable,
        "-m",
        "celery",
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
    settings = _settings()
    queue = args.queue or settings.default_queue
    cmd = worker_command(queue, args.loglevel)
    os.execv(cmd[0], cmd)
    return 0  # not reached


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.core.db import session_scope
    from app.core.migrate import upgrade
    from app.services import jobs as jobs_service

    settings = _settings()
    upgrade()
    host = args.host or settings.host
    port = args.port or settings.port
    start_worker = settings.embedded if args.worker is None else args.worker
    worker: subprocess.Popen[bytes] | None = None
    if start_worker:
        if settings.embedded:
            # Nothing else can be running this data folder's jobs before our worker starts: a
            # job still marked running was cut off when tunelab last stopped. Give it back to
            # the queue now instead of waiting for its lease to expire.
            with session_scope() as session:
                stale = jobs_service.reap_stale_jobs(session, lease_seconds=0)
            from app.services.queue import enqueue_training

            for job_id, queue in stale:
                enqueue_training(job_id=job_id, queue=queue)
        worker = subprocess.Popen(worker_command(settings.default_queue, "WARNING"))
    mode = "embedded" if settings.embedded else "cluster"
    print(f"tunelab ({mode} mode, data in {settings.data_dir}) at http://{host}:{port}", flush=True)
    try:
        uvicorn.run("app.main:app", host=host, port=port, log_level=args.log_level)
    finally:
        if worker is not None:
            _stop(worker)
    return 0


def _stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    # Warm shutdown: the worker stops its job at the next step and hands it back to the queue.
    # Should that take too long, the kill leaves the job to be re-queued on the next start.
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cmd_train(args: argparse.Namespace) -> int:
    from app.services.training_runs import run_config_file

    return run_config_file(
        Path(args.config),
        data=Path(args.data) if args.data else None,
        output=Path(args.output) if args.output else None,
        progress=not args.quiet,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunelab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the web server (and, in embedded mode, a worker)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", default="info")
    group = serve.add_mutually_exclusive_group()
    group.add_argument(
        "--worker",
        dest="worker",
        action="store_true",
        default=None,
        help="also start a local worker (default in embedded mode)",
    )
    group.add_argument(
        "--no-worker",
        dest="worker",
        action="store_false",
        help="serve only; workers run elsewhere (default in cluster mode)",
    )
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a training worker (one per GPU)")
    worker.add_argument("--queue", help="queue to consume, e.g. gpu-80g (default: training)")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)

    train = sub.add_parser("train", help="train locally from a YAML config, no server needed")
    train.add_argument("config", help="YAML file: the training config plus `data` and `output`")
    train.add_argument("--data", help="training file (overrides `data` in the YAML)")
    train.add_argument("--output", help="adapter folder (overrides `output` in the YAML)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
