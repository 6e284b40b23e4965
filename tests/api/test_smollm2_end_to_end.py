"""The issue's own check, on real weights: through the API alone, 50 Chinese alpaca records,
a 30-step LoRA job on SmolLM2-135M-Instruct trained by the Celery worker on CPU. The adapter
makes the answers it saw likelier and changes the model's output (the only SmolLM2 training run
on Chinese data in the suite: the engine's own tests use tiny random models)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.factories import alpaca_zh_demo, chat, create_project, start_job, upload, wait_for_status


@pytest.mark.slow
def test_lora_on_smollm2_learns_and_the_adapter_changes_the_model(api: httpx.Client) -> None:
    project = create_project(api, name="SmolLM2 中文")
    content = json.dumps(alpaca_zh_demo(50), ensure_ascii=False).encode()
    dataset = upload(api, project["id"], content, filename="alpaca_zh_demo.json").json()
    assert dataset["records"] == 50
    config = {
        "base_model": "smollm2-135m-instruct",
        "method": "lora",
        "max_steps": 30,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "max_seq_length": 256,
    }
    job = start_job(api, project["id"], dataset["id"], config)
    done = wait_for_status(api, job["id"], timeout=900)
    assert done["status"] == "succeeded", done["error"]

    losses = [p["value"] for p in api.get(f"/jobs/{job['id']}/metrics?name=loss").json()]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 * 0.9, losses

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from app.core.config import get_settings
    from worker.training.models import resolve_model

    artifact = api.get(f"/jobs/{job['id']}/artifacts").json()[0]
    adapter_dir = Path(os.environ["TUNELAB_DATA_DIR"]) / "artifacts" / job["id"]
    adapter = next(p.parent for p in adapter_dir.rglob("adapter_config.json"))
    assert set(artifact["files"]) >= {"adapter_config.json", "adapter_model.safetensors"}

    base_dir = resolve_model("smollm2-135m-instruct", get_settings().model_cache_dir).path
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": alpaca_zh_demo(1)[0]["instruction"]}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        before = base(**prompt).logits
        tuned = PeftModel.from_pretrained(base, adapter)
        after = tuned(**prompt).logits
        assert not torch.allclose(before, after, atol=1e-3)
        seen = [
            chat("\n\n".join(p for p in (r["instruction"], r["input"]) if p), r["output"])
            for r in alpaca_zh_demo(8)
        ]
        tuned_loss = answer_loss(tuned, tokenizer, seen)
        with tuned.disable_adapter():
            base_loss = answer_loss(tuned, tokenizer, seen)
    assert tuned_loss < base_loss - 0.1, (base_loss, tuned_loss)


def answer_loss(model: Any, tokenizer: Any, records: list[dict[str, Any]]) -> float:
    """Mean loss over every answer token of ``records``, as training measures it."""
    from worker.training import data as training_data

    prepared = training_data.prepare_samples(
        tokenizer, records, max_seq_length=256, system_prompt=None
    )
    total, count = 0.0, 0
    for sample in prepared.samples:
        batch = training_data.collate([sample], pad_id=0)
        logits = model(input_ids=batch["input_ids"]).logits[0, :-1]
        labels = batch["labels"][0, 1:]
        total += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
        count += int((labels != training_data.IGNORE_INDEX).sum())
    return total / count
