"""Run the model server: ``python -m worker.serving --base-model NAME --adapter NAME=DIR``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import uvicorn

from worker.serving.engine import ServingEngine
from worker.serving.openai_app import make_app
from worker.spec.errors import TrainingError


def main(argv: list[str] | None = None) -> None:
    """Load the model and adapters, then serve them until interrupted."""
    args = _parser().parse_args(argv)
    adapters: dict[str, Path] = dict(args.adapter)
    api_key = args.api_key_file.read_text(encoding="utf-8").strip() if args.api_key_file else None
    if args.api_key_file and not api_key:
        sys.exit(f"The API key file {args.api_key_file} is empty.")
    try:
        engine = _engine(args, adapters)
    except (TrainingError, ValueError) as exc:
        sys.exit(f"Cannot serve: {exc}")
    config = uvicorn.Config(
        make_app(engine, api_key=api_key), host=args.host, port=args.port, log_level="warning"
    )
    try:
        asyncio.run(_serve(uvicorn.Server(config), args.host))
    finally:
        engine.close()


def _engine(args: argparse.Namespace, adapters: dict[str, Path]) -> ServingEngine:
    return ServingEngine(
        args.base_model,
        adapters,
        model_cache_dir=args.model_cache_dir,
        served_name=args.served_name,
        allow_downloads=args.allow_downloads,
        trust_remote_code=args.trust_remote_code,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        dtype=args.dtype,
    )


async def _serve(server: uvicorn.Server, host: str) -> None:
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        # The bound port, which differs from the asked one for --port 0.
        port = server.servers[0].sockets[0].getsockname()[1]
        print(f"serving on http://{host}:{port}", flush=True)
    await task


def _adapter(value: str) -> tuple[str, Path]:
    name, sep, folder = value.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"--adapter wants NAME=DIR, got '{value}'.")
    return name, Path(folder).expanduser()


def _parser() -> argparse.ArgumentParser:
    default_cache = os.environ.get("TUNELAB_MODELS_DIR", "~/.cache/tunelab/models")
    parser = argparse.ArgumentParser(
        prog="python -m worker.serving", description="OpenAI-compatible server for a model."
    )
    parser.add_argument("--base-model", required=True, help="catalog name, folder, .gguf or hub id")
    parser.add_argument("--adapter", action="append", type=_adapter, default=[], metavar="NAME=DIR")
    parser.add_argument("--served-name", default="base", help="model name of the bare base")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--api-key-file", type=Path, help="require this bearer key")
    parser.add_argument("--model-cache-dir", type=Path, default=Path(default_cache).expanduser())
    parser.add_argument("--allow-downloads", action="store_true")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
    return parser


if __name__ == "__main__":
    main()
