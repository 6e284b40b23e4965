"""Merge-and-save time of a merged export: tunelab's export (merge, save, read back, compare
logits with base + adapter) against a plain PEFT ``merge_and_unload`` + ``save_pretrained`` of
the same model and adapter, in one run.

    python bench/merge_export.py --shape llama-3-8b      # on a GPU host
    python bench/merge_export.py --quick                 # a tiny shape on the CPU, in seconds

The base model is random-initialised at a real shape (weights do not change the time), saved
once as safetensors; the adapter is LoRA r16 on every projection, B drawn small as after
training. Prints
one JSON line: seconds of each, their ratio, the export's check, sizes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.factories_models import qwen_tokenizer_dir
from worker.deploy.export import export_merged

SHAPES = {
    "llama-3-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
    ),
    "llama-3.2-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
}
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3-8b")
    parser.add_argument("--quick", action="store_true", help="the tiny shape")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    shape = "tiny" if args.quick else args.shape

    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    work = Path(tempfile.mkdtemp(prefix="tunelab-merge-", dir=args.workdir))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()))
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=8192,
            tie_word_embeddings=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **SHAPES[shape],
        )
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model.save_pretrained(str(work / "base"), safe_serialization=True)
        tokenizer.save_pretrained(str(work / "base"))
        lora = LoraConfig(r=16, lora_alpha=32, target_modules=PROJECTIONS)
        peft = get_peft_model(model, lora)
        # A trained adapter's B is small, not zero (PEFT starts it at zero): N(0, 5e-3) moves
        # each weight by a few per cent, as training does.
        with torch.no_grad():
            for name, param in peft.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 5e-3)
        peft.save_pretrained(str(work / "adapter"))
        tokenizer.save_pretrained(str(work / "adapter"))
        del peft, model
        torch.cuda.empty_cache() if device == "cuda" else None

        # Baseline: load, attach, merge, save; nothing checked.
        _sync()
        started = time.perf_counter()
        base = AutoModelForCausalLM.from_pretrained(
            str(work / "base"), dtype=dtype, device_map={"": device}
        )
        merged = PeftModel.from_pretrained(base, str(work / "adapter")).merge_and_unload()
        merged.save_pretrained(str(work / "plain"), safe_serialization=True)
        tokenizer.save_pretrained(str(work / "plain"))
        _sync()
        plain_seconds = time.perf_counter() - started
        del base, merged
        torch.cuda.empty_cache() if device == "cuda" else None

        _sync()
        started = time.perf_counter()
        result = export_merged(
            str(work / "base"),
            work / "adapter",
            work / "export",
            model_cache_dir=work / "cache",
            card={"name": f"{shape} bench"},
            dtype="bfloat16" if dtype == torch.bfloat16 else "float32",
        )
        _sync()
        export_seconds = time.perf_counter() - started
        print(
            json.dumps(
                {
                    "shape": shape,
                    "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                    "dtype": str(dtype).removeprefix("torch."),
                    "plain_merge_and_save_seconds": round(plain_seconds, 1),
                    "tunelab_export_seconds": round(export_seconds, 1),
                    "ratio": round(export_seconds / plain_seconds, 2),
                    "export_gib": round(result.size_bytes / 2**30, 2),
                    "archive_gib": round(result.archive.stat().st_size / 2**30, 2),
                    "verification": result.verification,
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
