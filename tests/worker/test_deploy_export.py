"""Exports on tiny random models: a merged LoRA model that reloads with plain transformers
and answers exactly as base + adapter; adapters that cannot merge say why."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PrefixTuningConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from worker.deploy.export import ExportError, export_adapter, export_merged

CARD = {
    "name": "tiny specialist",
    "base_model": "tiny",
    "method": "lora",
    "job_id": "job-1",
    "license": "Apache-2.0",
    "dataset": {"name": "qa", "version": 1, "records": 8, "format": "chat"},
    "evaluation": {
        "id": "e1",
        "results": {
            "n": 8,
            "labels": {"baseline": "Base", "tuned": "Tuned"},
            "models": {"tuned": {"rougeL": {"value": 0.5, "low": 0.4, "high": 0.6}}},
        },
        "verdict": [{"criterion": "rougeL >= 0.4", "status": "met", "explanation": "met: …"}],
    },
}
PROMPTS = [
    [{"role": "user", "content": "What is two plus two?"}],
    [{"role": "user", "content": "天空是什么颜色？"}],
]


def _adapter(model_dir: Path, dest: Path, config: object) -> Path:
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    peft = get_peft_model(base, config)  # type: ignore[arg-type]
    peft.save_pretrained(str(dest))
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(dest))
    return dest


def _greedy(model: object, tokenizer: object, messages: list[dict]) -> list[int]:
    inputs = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)  # type: ignore[attr-defined]
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def test_a_merged_export_reloads_and_answers_exactly_as_the_adapter(
    tiny_model: Path, tmp_path: Path
) -> None:
    lora = LoraConfig(
        r=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    adapter = _adapter(tiny_model, tmp_path / "adapter", lora)
    result = export_merged(
        str(tiny_model),
        adapter,
        tmp_path / "merged",
        model_cache_dir=tmp_path / "cache",
        card=CARD,
        prompts=PROMPTS,
    )
    assert result.verification is not None and result.verification["passed"]
    assert result.verification["same_next_token"] == 1.0
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(result.files)
    assert "adapter_config.json" not in result.files
    with tarfile.open(result.archive) as tar:
        assert "merged/model.safetensors" in tar.getnames()

    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(str(result.folder))
    merged = AutoModelForCausalLM.from_pretrained(str(result.folder))
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(adapter)
    )
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    for messages in PROMPTS:
        expected = _greedy(adapted, tokenizer, messages)
        assert _greedy(merged, tokenizer, messages) == expected
    assert any(_greedy(base, tokenizer, m) != _greedy(adapted, tokenizer, m) for m in PROMPTS)
    card = (result.folder / "README.md").read_text()
    assert "vllm serve ./merged" in card and "rougeL >= 0.4" in card and "Apache-2.0" in card


def test_an_adapter_export_has_the_peft_files_and_the_vllm_lora_command(
    tiny_model: Path, tmp_path: Path
) -> None:
    adapter = _adapter(tiny_model, tmp_path / "adapter", LoraConfig(r=4, target_modules=["q_proj"]))
    result = export_adapter(adapter, tmp_path / "out", card={**CARD, "folder_name": "out"})
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(result.files)
    assert result.note is None
    assert "--enable-lora --lora-modules" in result.card


def test_prefix_tuning_exports_as_an_adapter_whose_card_says_why(
    tiny_model: Path, tmp_path: Path
) -> None:
    prefix = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    adapter = _adapter(tiny_model, tmp_path / "adapter", prefix)
    with pytest.raises(ExportError, match="virtual tokens"):
        export_merged(
            str(tiny_model), adapter, tmp_path / "merged", model_cache_dir=tmp_path / "c", card=CARD
        )
    assert not (tmp_path / "merged").exists()
    result = export_adapter(adapter, tmp_path / "out", card=CARD)
    assert result.note and "Not merged: prefix-tuning" in result.note
    assert "Not merged: prefix-tuning" in (result.folder / "README.md").read_text()
    assert "enable-lora" not in result.card
    config = json.loads((result.folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "PREFIX_TUNING"


def test_a_failed_check_leaves_nothing_behind(tiny_model: Path, tmp_path: Path) -> None:
    lora = LoraConfig(r=8, target_modules=["q_proj"], init_lora_weights=False)
    adapter = _adapter(tiny_model, tmp_path / "adapter", lora)
    import worker.deploy.export as export

    strict = {k: -1.0 for k in export.TOLERANCE}
    original = dict(export.TOLERANCE)
    export.TOLERANCE.update(strict)
    try:
        with pytest.raises(ExportError, match="does not match base"):
            export_merged(
                str(tiny_model),
                adapter,
                tmp_path / "merged",
                model_cache_dir=tmp_path / "c",
                card=CARD,
            )
    finally:
        export.TOLERANCE.update(original)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
