"""The ``tunelab`` command: serve, worker, db, user, token, train, data, eval, export, deploy."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from app import data_cli, deploy_cli, eval_cli


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
    from worker.versions import warn_untested_versions

    if args.parent_pid:
        from app.supervisor import die_with_parent

        die_with_parent(args.parent_pid)
    warn_untested_versions()
    settings = _settings()
    queue = args.queue or settings.default_queue
    cmd = worker_command(queue, args.loglevel)
    os.execv(cmd[0], cmd)
    return 0  # not reached


def _exit_on_signal(signum: int, _frame: Any) -> None:
    # uvicorn stops serving on SIGTERM, restores the handler it found and raises the signal
    # again: this handler turns it into an ordinary exit, so serve's cleanup (stopping its
    # worker) runs instead of the process vanishing with the worker left training.
    raise SystemExit(128 + signum)


def cmd_serve(args: argparse.Namespace) -> int:
    from worker.versions import warn_untested_versions

    warn_untested_versions()
    import uvicorn

    from app.core.db import session_scope
    from app.core.migrate import upgrade
    from app.services import leases
    from app.services.dataset_imports import purge_stale_uploads
    from app.supervisor import WorkerSupervisor

    settings = _settings()
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
            "tunelab: the training engine is not installed here (pip install 'tunelab[engine]'); "
            "serving without a local worker",
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
        supervisor = WorkerSupervisor(
            tunelab_command(
                "worker",
                "--queue",
                settings.default_queue,
                "--loglevel",
                "WARNING",
                "--parent-pid",
                str(os.getpid()),
            )
        )
        supervisor.start()
    signal.signal(signal.SIGTERM, _exit_on_signal)
    mode = "embedded" if settings.embedded else "cluster"
    print(f"tunelab ({mode} mode, data in {settings.data_dir}) at http://{host}:{port}", flush=True)
    if settings.embedded and host in ("127.0.0.1", "localhost", "::1"):
        _first_start(settings, host, port)
    try:
        uvicorn.run("app.main:app", host=host, port=port, log_level=args.log_level)
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0


def tunelab_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def _engine_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _first_start(settings: Any, host: str, port: int) -> None:
    """On loopback in embedded mode, the first start makes a local admin and prints a one-time
    login link (as Jupyter does), so the quick start needs no account setup."""
    from datetime import timedelta

    from app.core.db import session_scope
    from app.services import accounts

    with session_scope() as session:
        admin, created = accounts.ensure_local_admin(session)
        if created:
            secret = accounts.create_login_link(session, user=admin, valid_for=timedelta(days=1))
            print(
                f"\n  First start: log in as {admin.email} with this one-time link:\n"
                f"  http://{host}:{port}/login/link/{secret}\n"
                f"  (another one any time: tunelab user login-link {admin.email})\n",
                flush=True,
            )


def cmd_user_create(args: argparse.Namespace) -> int:
    import getpass

    from app.core.db import session_scope
    from app.core.errors import TunelabError
    from app.models import Role
    from app.services import accounts

    _settings()
    role = Role.admin if args.admin else Role(args.role)
    password = args.password
    if password is None and not args.no_password and sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.email} (empty: use a login link): ") or None
    try:
        with session_scope() as session:
            user = accounts.create_user(session, email=args.email, role=role, password=password)
            print(f"created {role} {user.email}")
            if password is None:
                _print_login_link(session, user)
    except TunelabError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


def _print_login_link(session: Any, user: Any) -> None:
    from datetime import timedelta

    from app.services import accounts

    settings = _settings()
    secret = accounts.create_login_link(session, user=user, valid_for=timedelta(days=1))
    print(
        f"one-time login link (valid for a day): "
        f"http://{settings.host}:{settings.port}/login/link/{secret}",
        flush=True,
    )


def cmd_user_login_link(args: argparse.Namespace) -> int:
    from app.core.db import session_scope
    from app.core.errors import TunelabError
    from app.services import accounts

    _settings()
    try:
        with session_scope() as session:
            _print_login_link(session, accounts.find_user(session, email=args.email))
    except TunelabError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from app.core.db import session_scope, utcnow
    from app.core.errors import TunelabError
    from app.services import accounts, credentials

    _settings()
    expires = utcnow() + timedelta(days=args.expires_days) if args.expires_days else None
    try:
        with session_scope() as session:
            user = accounts.find_user(session, email=args.user)
            _, secret = credentials.create_token(
                session,
                user=user,
                name=args.name,
                scopes=args.scopes.split(","),
                # Whoever runs the CLI holds the database itself: any scope the user's role
                # allows.
                granted=set(credentials.SCOPES),
                expires_at=expires,
            )
    except TunelabError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(secret)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from worker.versions import warn_untested_versions

    warn_untested_versions()
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
    # Set by `tunelab serve` for its own worker: stop when serve's process is gone.
    worker.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    worker.set_defaults(func=cmd_worker)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)

    user = sub.add_parser("user", help="manage accounts")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    create = user_sub.add_parser("create", help="create an account")
    create.add_argument("--email", required=True)
    create.add_argument("--admin", action="store_true", help="shorthand for --role admin")
    create.add_argument("--role", default="trainer", choices=["admin", "trainer", "reviewer"])
    create.add_argument("--password", help="prompted for when omitted on a terminal")
    create.add_argument(
        "--no-password",
        action="store_true",
        help="no password: print a one-time login link instead",
    )
    create.set_defaults(func=cmd_user_create)
    link = user_sub.add_parser("login-link", help="print a one-time login link for a user")
    link.add_argument("email")
    link.set_defaults(func=cmd_user_login_link)

    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    tcreate = token_sub.add_parser("create", help="create a token and print it (shown once)")
    tcreate.add_argument("--user", required=True, help="e-mail of the token's owner")
    tcreate.add_argument("--name", default="cli")
    tcreate.add_argument("--scopes", default="read,write", help="comma-separated: read,write,admin")
    tcreate.add_argument("--expires-days", type=int)
    tcreate.set_defaults(func=cmd_token_create)

    train = sub.add_parser("train", help="train locally from a YAML config, no server needed")
    train.add_argument("config", help="YAML file: the training config plus `data` and `output`")
    train.add_argument("--data", help="training file (overrides `data` in the YAML)")
    train.add_argument("--output", help="adapter folder (overrides `output` in the YAML)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    data_cli.add_parser(sub)
    eval_cli.add_parser(sub)
    deploy_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
