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


def cmd_export(args: argparse.Namespace, api: Api) -> int:
    """Ask for an export, wait for the worker, download it and unpack it into DIR."""
    target = Path(args.dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CliError(f"{target} exists and is not an empty folder")
    kind = "merged" if args.merged else "adapter"
    export = api.post(f"/jobs/{args.job}/exports", {"kind": kind, "dtype": args.dtype})
    print(f"export {export['id']} queued ({kind})", file=sys.stderr)
    started = time.monotonic()
    while export["status"] in ("queued", "running"):
        time.sleep(POLL_SECONDS)
        export = api.get(f"/exports/{export['id']}")
        print(f"\r{export['status']} … {time.monotonic() - started:.0f}s", end="", file=sys.stderr)
    print(file=sys.stderr)
    if export["status"] != "succeeded":
        print(f"export failed: {export['error']}", file=sys.stderr)
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
            f"checked: logits within {v['max_relative_difference']:.1e} of base + adapter "
            f"(allowed {v['tolerance']:.0e})",
            file=sys.stderr,
        )
    print(f"{kind} model written to {target} (see {target / 'README.md'})")
    return 0


def add_parser(sub: Any) -> None:
    server = server_options()

    export = sub.add_parser(
        "export", help="export a job's model (adapter or merged) into a folder", parents=[server]
    )
    export.add_argument("job", metavar="JOB_ID")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--merged", metavar="DIR", help="merged into the base model")
    which.add_argument("--adapter", metavar="DIR", help="the adapter alone (PEFT format)")
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
    print(f"deployment {deployment['id']} starting", file=sys.stderr)
    while args.wait and deployment["status"] == "starting":
        time.sleep(POLL_SECONDS)
        deployment = api.get(f"/deployments/{deployment['id']}")
    if deployment["status"] == "failed":
        print(f"deployment failed: {deployment['error']}", file=sys.stderr)
        return 1
    print(f"{deployment['status']}: {deployment['id']}")
    for name in deployment["models"]:
        print(f"  model {name}")
    if deployment["models"]:
        print(f"OpenAI base URL: {api.url}/v1 (your tunelab token is the API key)")
    return 0


def cmd_deploy_list(args: argparse.Namespace, api: Api) -> int:
    page = api.get("/deployments", project_id=args.project)
    for d in page["items"]:
        models = ", ".join(d["models"]) or "-"
        print(f"{d['id']}  {d['name']:<20} {d['status']:<9} {models}")
    if not page["items"]:
        print("no deployments")
    return 0


def cmd_deploy_stop(args: argparse.Namespace, api: Api) -> int:
    deployment = api.post(f"/deployments/{args.id}/stop")
    print(f"{deployment['name']}: {deployment['status']}")
    return 0


def add_deploy_parser(sub: Any, server: argparse.ArgumentParser) -> None:
    deploy = sub.add_parser("deploy", help="serve jobs' adapters behind the OpenAI-compatible API")
    deploy_sub = deploy.add_subparsers(dest="deploy_command", required=True)
    start = deploy_sub.add_parser("start", help="deploy jobs under a name", parents=[server])
    start.add_argument("jobs", nargs="+", metavar="JOB_ID")
    start.add_argument("--name", required=True, help="lower-case letters, digits and dashes")
    start.add_argument("--project", metavar="ID", help="default: the first job's project")
    start.add_argument("--wait", action="store_true", help="until the models answer")
    start.set_defaults(func=command_entry(cmd_deploy_start))
    listing = deploy_sub.add_parser("list", help="deployments and their models", parents=[server])
    listing.add_argument("--project", metavar="ID")
    listing.set_defaults(func=command_entry(cmd_deploy_list))
    stop = deploy_sub.add_parser("stop", help="undeploy", parents=[server])
    stop.add_argument("id", metavar="DEPLOYMENT_ID")
    stop.set_defaults(func=command_entry(cmd_deploy_stop))
