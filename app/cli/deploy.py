"""``tunelab export`` and ``tunelab deploy``: the deploy step over a running server's API."""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.cli.http import POLL_SECONDS, Api, CliError, command_entry, server_options
from app.core.i18n import N_, gettext
from app.core.messages import status_text

# What an export holds, as the messages name it.
KINDS = {"adapter": N_("adapter"), "merged": N_("merged")}


def cmd_export(args: argparse.Namespace, api: Api) -> int:
    """Ask for an export, wait for the worker, download it and unpack it into DIR."""
    target = Path(args.dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CliError(gettext("%(target)s exists and is not an empty folder", target=target))
    kind = "merged" if args.merged else "adapter"
    export = api.post(f"/jobs/{args.job}/exports", {"kind": kind, "dtype": args.dtype})
    print(
        gettext("export %(id)s queued (%(kind)s)", id=export["id"], kind=gettext(KINDS[kind])),
        file=sys.stderr,
    )
    started = time.monotonic()
    while export["status"] in ("queued", "running"):
        time.sleep(POLL_SECONDS)
        export = api.get(f"/exports/{export['id']}")
        elapsed = f"{time.monotonic() - started:.0f}"
        print(
            "\r"
            + gettext(
                "%(status)s … %(seconds)ss", status=status_text(export["status"]), seconds=elapsed
            ),
            end="",
            file=sys.stderr,
        )
    print(file=sys.stderr)
    if export["status"] != "succeeded":
        print(gettext("export failed: %(error)s", error=export["error"]), file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "export.tar"
        with api.stream(f"/exports/{export['id']}/download") as response, archive.open("wb") as out:
            total = int(response.headers.get("content-length") or 0)
            with tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr) as bar:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")  # no links or paths outside the folder
        (inner,) = list(unpacked.iterdir())
        target.mkdir(parents=True, exist_ok=True)
        for path in inner.iterdir():
            shutil.move(str(path), target / path.name)
    if export.get("note"):
        print(export["note"], file=sys.stderr)
    if export.get("verification"):
        v = export["verification"]
        print(
            gettext(
                "checked: logits within %(difference)s of base + adapter (allowed %(tolerance)s)",
                difference=f"{v['max_relative_difference']:.1e}",
                tolerance=f"{v['tolerance']:.0e}",
            ),
            file=sys.stderr,
        )
    written = (
        N_("merged model written to %(target)s (see %(readme)s)")
        if kind == "merged"
        else N_("adapter model written to %(target)s (see %(readme)s)")
    )
    print(gettext(written, target=target, readme=target / "README.md"))
    return 0


def add_parser(sub: Any) -> None:
    server = server_options()

    export = sub.add_parser(
        "export",
        help=gettext("export a job's model (adapter or merged) into a folder"),
        parents=[server],
    )
    export.add_argument("job", metavar="JOB_ID")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--merged", metavar="DIR", help=gettext("merged into the base model"))
    which.add_argument("--adapter", metavar="DIR", help=gettext("the adapter alone (PEFT format)"))
    export.add_argument(
        "--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"]
    )
    export.set_defaults(func=command_entry(_export_entry))
    add_deploy_parser(sub, server)


def _export_entry(args: argparse.Namespace, api: Api) -> int:
    args.dir = args.merged or args.adapter
    return cmd_export(args, api)


def cmd_deploy_start(args: argparse.Namespace, api: Api) -> int:
    """Deploy jobs' adapters under a name; with --wait, until the models answer."""
    project = args.project or api.get(f"/jobs/{args.jobs[0]}")["project_id"]
    deployment = api.post(
        "/deployments", {"project_id": project, "name": args.name, "job_ids": args.jobs}
    )
    print(gettext("deployment %(id)s starting", id=deployment["id"]), file=sys.stderr)
    while args.wait and deployment["status"] == "starting":
        time.sleep(POLL_SECONDS)
        deployment = api.get(f"/deployments/{deployment['id']}")
    if deployment["status"] == "failed":
        print(gettext("deployment failed: %(error)s", error=deployment["error"]), file=sys.stderr)
        return 1
    print(f"{status_text(deployment['status'])}: {deployment['id']}")
    for name in deployment["models"]:
        print("  " + gettext("model %(name)s", name=name))
    if deployment["models"]:
        print(
            gettext("OpenAI base URL: %(url)s/v1 (your tunelab token is the API key)", url=api.url)
        )
    return 0


def cmd_deploy_list(args: argparse.Namespace, api: Api) -> int:
    page = api.get("/deployments", project_id=args.project)
    for d in page["items"]:
        models = ", ".join(d["models"]) or "-"
        print(f"{d['id']}  {d['name']:<20} {status_text(d['status']):<9} {models}")
    if not page["items"]:
        print(gettext("no deployments"))
    return 0


def cmd_deploy_stop(args: argparse.Namespace, api: Api) -> int:
    deployment = api.post(f"/deployments/{args.id}/stop")
    print(f"{deployment['name']}: {status_text(deployment['status'])}")
    return 0


def add_deploy_parser(sub: Any, server: argparse.ArgumentParser) -> None:
    deploy = sub.add_parser(
        "deploy", help=gettext("serve jobs' adapters behind the OpenAI-compatible API")
    )
    deploy_sub = deploy.add_subparsers(dest="deploy_command", required=True)
    start = deploy_sub.add_parser(
        "start", help=gettext("deploy jobs under a name"), parents=[server]
    )
    start.add_argument("jobs", nargs="+", metavar="JOB_ID")
    start.add_argument(
        "--name", required=True, help=gettext("lower-case letters, digits and dashes")
    )
    start.add_argument("--project", metavar="ID", help=gettext("default: the first job's project"))
    start.add_argument("--wait", action="store_true", help=gettext("until the models answer"))
    start.set_defaults(func=command_entry(cmd_deploy_start))
    listing = deploy_sub.add_parser(
        "list", help=gettext("deployments and their models"), parents=[server]
    )
    listing.add_argument("--project", metavar="ID")
    listing.set_defaults(func=command_entry(cmd_deploy_list))
    stop = deploy_sub.add_parser("stop", help=gettext("undeploy"), parents=[server])
    stop.add_argument("id", metavar="DEPLOYMENT_ID")
    stop.set_defaults(func=command_entry(cmd_deploy_stop))
