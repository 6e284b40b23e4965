"""Serving throughput: N concurrent chat requests to the built-in server against model.generate.

    python bench/serve_throughput.py                  # 16 concurrent requests, default model
    python bench/serve_throughput.py --concurrency 64
    python bench/serve_throughput.py --quick          # CPU smoke run in seconds

The same model, prompts and greedy decoding (same max_new_tokens) go through

(a) ``model.generate`` on each prompt alone, one after another: what a naive server does;
(b) the built-in server (``worker.serving``), started in-process on a free loopback port, with
    all requests sent at once over HTTP (httpx, asyncio) so its scheduler batches them.

Prints one JSON line: new tokens per second of each, the ratio, seconds, the widest batch the
server ran, and how many answers were the same text. Needs only torch, transformers, peft,
fastapi, uvicorn and httpx (no database). Default model as in bench/eval_generation.py: a
random-initialised Qwen2.5-0.5B shape in bf16 on CUDA, SmolLM2-135M-Instruct on CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.eval_generation import _device_name, _now, load, load_prompts, one_at_a_time
from worker.evaluation.generation import DecodingSettings
from worker.serving.engine import ServingEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a shape from bench/eval_generation.py or a model name")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=None, help="default: concurrency")
    parser.add_argument("--max-wait-ms", type=float, default=20.0, help="server's batching wait")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/tunelab-bench-models"))
    parser.add_argument("--quick", action="store_true", help="tiny model, 8 requests, 8 tokens")
    args = parser.parse_args()
    if args.quick:
        args.model, args.concurrency, args.max_new_tokens = "tiny", 8, 8

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, model_name = load(args.model, device, args.cache_dir)
    prompts = load_prompts(args.concurrency)
    settings = DecodingSettings(max_new_tokens=args.max_new_tokens)
    engine = ServingEngine.from_model(
        model,
        tokenizer,
        max_batch_size=args.max_batch_size or args.concurrency,
        max_wait_ms=args.max_wait_ms,
    )
    try:
        with serving(engine) as url:
            # Warm both paths (kernels, allocator) so neither pays start-up costs.
            with torch.inference_mode():
                one_at_a_time(model, tokenizer, prompts[:1], settings)
            asyncio.run(ask_all(url, prompts[:2], args.max_new_tokens))

            start = _now(device)
            with torch.inference_mode():
                singles = one_at_a_time(model, tokenizer, prompts, settings)
            single_seconds = _now(device) - start

            batches_before = engine.stats()["batches"]
            start = _now(device)
            answers = asyncio.run(ask_all(url, prompts, args.max_new_tokens))
            server_seconds = _now(device) - start
            stats = engine.stats()
    finally:
        engine.close()

    single_tokens = sum(len(ids) for ids in singles)
    server_tokens = sum(a["usage"]["completion_tokens"] for a in answers)
    matched = sum(
        tokenizer.decode(ids, skip_special_tokens=True) == a["choices"][0]["message"]["content"]
        for ids, a in zip(singles, answers, strict=True)
    )
    single_rate = single_tokens / single_seconds
    server_rate = server_tokens / server_seconds
    print(
        json.dumps(
            {
                "model": model_name,
                "device": _device_name(device),
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "concurrency": len(prompts),
                "max_new_tokens": args.max_new_tokens,
                "max_wait_ms": args.max_wait_ms,
                "one_at_a_time_new_tokens": single_tokens,
                "server_new_tokens": server_tokens,
                "one_at_a_time_seconds": round(single_seconds, 3),
                "server_seconds": round(server_seconds, 3),
                "one_at_a_time_tokens_per_s": round(single_rate, 1),
                "server_tokens_per_s": round(server_rate, 1),
                "ratio": round(server_rate / single_rate, 2),
                "server_batches": stats["batches"] - batches_before,
                "max_batch_rows": stats["max_batch_rows"],
                "outputs_matched": matched,
            }
        )
    )


async def ask_all(url: str, prompts: list[str], max_tokens: int) -> list[dict[str, Any]]:
    """Send every prompt at once as a greedy chat request; the answers in prompt order."""
    import httpx

    limits = httpx.Limits(max_connections=len(prompts) + 1)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as client:

        async def ask(prompt: str) -> dict[str, Any]:
            body = {
                "model": "base",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            response = await client.post("/chat/completions", json=body)
            response.raise_for_status()
            answer: dict[str, Any] = response.json()
            return answer

        return list(await asyncio.gather(*(ask(p) for p in prompts)))


@contextmanager
def serving(engine: ServingEngine) -> Iterator[str]:
    """The server app on a free loopback port in a background thread; yields its /v1 URL."""
    import uvicorn

    from worker.serving.openai_app import make_app

    server = uvicorn.Server(uvicorn.Config(make_app(engine), port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the model server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


if __name__ == "__main__":
    main()
