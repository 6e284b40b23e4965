"""The ``tunelab`` command: serve, worker, db, user, token, train, data, eval, export, deploy,
import-openai.

Each group of commands is a module here; this one wires them into one parser.
"""

from __future__ import annotations

import argparse

from app.cli import accounts
from app.cli import data as data_cli
from app.cli import deploy as deploy_cli
from app.cli import evaluations as eval_cli
from app.cli import import_openai as import_openai_cli
from app.cli import serve as serve_cli
from app.cli import train as train_cli
from app.core.i18n import from_environment, gettext, set_locale


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunelab",
        description=gettext(
            "Fine-tune open LLMs into specialists, measured against a prompting baseline."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help=gettext("start the web server (and, in embedded mode, a worker)")
    )
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", default="info")
    group = serve.add_mutually_exclusive_group()
    group.add_argument(
        "--worker",
        dest="worker",
        action="store_true",
        default=None,
        help=gettext("also start a local worker (default in embedded mode)"),
    )
    group.add_argument(
        "--no-worker",
        dest="worker",
        action="store_false",
        help=gettext("serve only; workers run elsewhere (default in cluster mode)"),
    )
    serve.set_defaults(func=serve_cli.cmd_serve)

    worker = sub.add_parser("worker", help=gettext("run a training worker (one per GPU)"))
    worker.add_argument(
        "--queue",
        help=gettext(
            "consume this queue alone (default: the default queue and the capacity classes "
            "this machine's GPUs satisfy)"
        ),
    )
    worker.add_argument("--loglevel", default="INFO")
    # Set by `tunelab serve` for its own worker: stop when serve's process is gone.
    worker.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    worker.set_defaults(func=serve_cli.cmd_worker)

    db = sub.add_parser("db", help=gettext("database maintenance"))
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help=gettext("apply migrations"))
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=accounts.cmd_db_upgrade)

    user = sub.add_parser("user", help=gettext("manage accounts"))
    user_sub = user.add_subparsers(dest="user_command", required=True)
    create = user_sub.add_parser("create", help=gettext("create an account"))
    create.add_argument("--email", required=True)
    create.add_argument("--admin", action="store_true", help=gettext("shorthand for --role admin"))
    create.add_argument("--role", default="trainer", choices=["admin", "trainer", "reviewer"])
    create.add_argument("--password", help=gettext("prompted for when omitted on a terminal"))
    create.add_argument(
        "--no-password",
        action="store_true",
        help=gettext("no password: print a one-time login link instead"),
    )
    create.set_defaults(func=accounts.cmd_user_create)
    link = user_sub.add_parser("login-link", help=gettext("print a one-time login link for a user"))
    link.add_argument("email")
    link.set_defaults(func=accounts.cmd_user_login_link)

    token = sub.add_parser("token", help=gettext("API tokens"))
    token_sub = token.add_subparsers(dest="token_command", required=True)
    tcreate = token_sub.add_parser(
        "create", help=gettext("create a token and print it (shown once)")
    )
    tcreate.add_argument("--user", required=True, help=gettext("e-mail of the token's owner"))
    tcreate.add_argument("--name", default="cli")
    tcreate.add_argument(
        "--scopes", default="read,write", help=gettext("comma-separated: read,write,admin")
    )
    tcreate.add_argument("--expires-days", type=int)
    tcreate.set_defaults(func=accounts.cmd_token_create)

    train = sub.add_parser(
        "train", help=gettext("train locally from a YAML config, no server needed")
    )
    train.add_argument(
        "config", help=gettext("YAML file: the training config plus `data` and `output`")
    )
    train.add_argument("--data", help=gettext("training file (overrides `data` in the YAML)"))
    train.add_argument("--output", help=gettext("adapter folder (overrides `output` in the YAML)"))
    train.add_argument("--quiet", action="store_true", help=gettext("no progress bar"))
    train.set_defaults(func=train_cli.cmd_train)

    data_cli.add_parser(sub)
    eval_cli.add_parser(sub)
    deploy_cli.add_parser(sub)
    import_openai_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Human messages in the terminal's language (TUNELAB_LANGUAGE, LANGUAGE, LC_ALL, LANG).
    set_locale(from_environment())
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
