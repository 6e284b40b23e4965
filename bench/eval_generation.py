"""Evaluation generation speed: one prompt at a time with model.generate against generate_batched.

    python bench/eval_generation.py                 # 64 prompts, default model for the device
    python bench/eval_generation.py --quick         # CPU smoke run in seconds

The same model, prompts (real instructions from ../shared/data when present: alpaca demo in
English and Chinese and belle-eval-zh, else generated) and greedy decoding settings go through

(a) ``model.generate`` on each prompt alone (no padding), the usual evaluation loop;
(b) ``worker.evaluation.generation.generate_batched``: sorted by length, left-padded batches.

Prints one JSON line: new (generated) tokens per second of each, the ratio, seconds, the
device, and whether the answers were the same token for token.

Default model: a random-initialised Qwen2.5-0.5B shape in bf16 on CUDA (weights do not change
speed, and random weights rarely stop early, so both sides generate the full length); on CPU
SmolLM2-135M-Instruct from the catalog (installed package, converted once into --cache-dir),
or a small random shape if it is not installed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.evaluation.generation import DecodingSettings, eos_token_ids, generate_batched
from worker.spec.formatting import ensure_chat_template, ensure_pad_token, render

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Public architecture hyper-parameters; the weights are random.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
    "small": {
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 768,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
    },
    "tiny": {
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        help="a shape (random weights: " + ", ".join(SHAPES) + ") or a model name/folder "
        "for worker.training.models.resolve_model; default depends on the device",
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-tokens", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/tunelab-bench-models"))
    parser.add_argument("--quick", action="store_true", help="tiny model, 8 prompts, 8 tokens")
    args = parser.parse_args()
    if args.quick:
        args.model, args.prompts, args.max_new_tokens = "tiny", 8, 8

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_grad_enabled(False)
    model, tokenizer, model_name = load(args.model, device, args.cache_dir)
    prompts = load_prompts(args.prompts)
    settings = DecodingSettings(max_new_tokens=args.max_new_tokens)

    # Warm both paths (kernels, allocator) on one prompt so neither pays start-up costs.
    one_at_a_time(model, tokenizer, prompts[:1], settings)
    generate_batched(model, tokenizer, prompts[:2], settings, backend="transformers")

    start = _now(device)
    singles = one_at_a_time(model, tokenizer, prompts, settings)
    single_seconds = _now(device) - start

    start = _now(device)
    batched = generate_batched(
        model,
        tokenizer,
        prompts,
        settings,
        batch_tokens=args.batch_tokens,
        batch_size=args.batch_size,
        backend="transformers",
    )
    batched_seconds = _now(device) - start

    single_tokens = sum(len(ids) for ids in singles)
    batched_tokens = sum(g.new_tokens for g in batched)
    matched = sum(
        tokenizer.decode(ids, skip_special_tokens=True) == g.text and len(ids) == g.new_tokens
        for ids, g in zip(singles, batched, strict=True)
    )
    single_rate = single_tokens / single_seconds
    batched_rate = batched_tokens / batched_seconds
    print(
        json.dumps(
            {
                "model": model_name,
                "device": _device_name(device),
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "prompts": len(prompts),
                "prompt_tokens": sum(g.prompt_tokens for g in batched),
                "max_new_tokens": settings.max_new_tokens,
                "one_at_a_time_new_tokens": single_tokens,
                "batched_new_tokens": batched_tokens,
                "one_at_a_time_seconds": round(single_seconds, 3),
                "batched_seconds": round(batched_seconds, 3),
                "one_at_a_time_tokens_per_s": round(single_rate, 1),
                "batched_tokens_per_s": round(batched_rate, 1),
                "ratio": round(batched_rate / single_rate, 2),
                "outputs_matched": matched,
                "outputs_match": matched == len(prompts),
                "settings": settings.model_dump(mode="json"),
            }
        )
    )


def load(name: str | None, device: torch.device, cache_dir: Path) -> tuple[Any, Any, str]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if name is None:
        name = "qwen2.5-0.5b" if device.type == "cuda" else "smollm2-135m-instruct"
    if name in SHAPES:
        from tests.factories_models import qwen_tokenizer_dir

        tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()))
        shape = dict(SHAPES[name])
        config = AutoConfig.for_model(
            shape.pop("model_type"),
            vocab_size=len(tokenizer),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **shape,
        )
        torch.manual_seed(0)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device)
        return model.eval(), tokenizer, f"{name} (random weights)"

    from worker.spec.errors import TrainingError
    from worker.training.models import (
        load_model,
        load_tokenizer,
        pick_device_and_dtype,
        resolve_model,
    )

    try:
        resolved = resolve_model(name, cache_dir)
    except TrainingError as exc:
        if name != "smollm2-135m-instruct":
            raise
        print(f"note: {exc}; using the 'small' random shape", file=sys.stderr)
        return load("small", device, cache_dir)
    device, dtype = pick_device_and_dtype("auto")
    return load_model(resolved, dtype=dtype, device=device).eval(), load_tokenizer(resolved), name


def load_prompts(count: int) -> list[str]:
    """Real instructions of varied length (English and Chinese), else generated ones."""
    pool: list[str] = []
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json"):
        path = DATA / "llamafactory-demo" / name
        if path.is_file():
            for record in json.loads(path.read_text(encoding="utf-8")):
                text = record["instruction"] + ("\n\n" + record["input"] if record["input"] else "")
                pool.append(text)
    belle = DATA / "belle-eval-zh" / "eval_set.jsonl"
    if belle.is_file():
        for line in belle.read_text(encoding="utf-8").splitlines():
            if line.strip():
                pool.append(json.loads(line)["question"])
    rng = random.Random(0)
    if not pool:
        words = [
            "the",
            "model",
            "answers",
            "questions",
            "about",
            "data",
            "training",
            "and",
            "evaluation",
        ]
        pool = [" ".join(rng.choices(words, k=rng.randint(3, 120))) for _ in range(count)]
    rng.shuffle(pool)
    return pool[:count]


def one_at_a_time(
    model: Any, tokenizer: Any, prompts: list[str], settings: DecodingSettings
) -> list[list[int]]:
    """The usual loop: each prompt alone through model.generate; new tokens up to EOS."""
    ensure_chat_template(tokenizer)
    pad_id = ensure_pad_token(tokenizer)
    device = next(model.parameters()).device
    eos_ids = eos_token_ids(model, tokenizer)
    results = []
    for prompt in prompts:
        text = render(tokenizer, [{"role": "user", "content": prompt}], generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = ids.to(device)
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,
            top_p=1.0,
            temperature=1.0,
            repetition_penalty=settings.repetition_penalty,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
        )
        new = out[0, ids.shape[1] :].tolist()
        ends = [i for i, token in enumerate(new) if token in eos_ids]
        results.append(new[: ends[0] + 1] if ends else new)
    return results


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


if __name__ == "__main__":
    main()
