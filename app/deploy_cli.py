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

from app.eval_cli import DEFAULT_URL, POLL_SECONDS, Api, CliError, command_entry


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
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--url", help=f"tunelab server (default: $TUNELAB_URL or {DEFAULT_URL})")
    server.add_argument("--token", help="API token (default: $TUNELAB_TOKEN)")

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


def _export_entry(args: argparse.Namespace, api: Api) -> int:
    args.dir = args.merged or args.adapter
    return cmd_export(args, api)


__all__ = ["add_parser", "cmd_export"]
