"""Every training method on the CPU: it trains, its loss falls, and what it saves loads back
and generates. Plus the checks that refuse a method before a job is queued."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.factories import QA, chat
from worker.spec import config as config_module
from worker.spec.method_support import check_method, method_choices, model_type_of
from worker.spec.methods import METHODS
from worker.training import TrainConfig, TrainingError, TrainResult, attention, fused, train
from worker.training import data as training_data
from worker.training.models import ResolvedModel

RECORDS = [chat(q, a) for q, a in QA] * 4

# Learning rates that make each method visibly learn the four answers in 25 steps, and how
# far the mean loss falls at least. A random two-layer model 32 wide gives virtual tokens
# little to work with, so P-tuning's fall is the smallest (about 0.27 measured).
CPU_METHODS: dict[str, tuple[dict[str, Any], float]] = {
    "lora": ({"method": "lora"}, 0.5),
    "rslora": ({"method": "lora", "use_rslora": True}, 0.5),
    "dora": ({"method": "lora", "use_dora": True}, 0.5),
    "prefix_tuning": (
        {"method": "prefix_tuning", "learning_rate": 0.2, "num_virtual_tokens": 8},
        0.5,
    ),
    "p_tuning": ({"method": "p_tuning", "learning_rate": 3e-2, "num_virtual_tokens": 8}, 0.15),
    "ia3": ({"method": "ia3", "learning_rate": 0.2}, 0.5),
    "full": ({"method": "full", "learning_rate": 1e-3}, 0.5),
}


@dataclass
class Recorder:
    events: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((level, message, data))

    def on_step(self, metrics: Any) -> None:
        self.losses.append(metrics.loss)

    def should_stop(self) -> bool:
        return False

    def event(self, prefix: str) -> dict[str, Any]:
        found = next(data for _, message, data in self.events if message.startswith(prefix))
        assert found is not None
        return found

    @property
    def messages(self) -> list[str]:
        return [message for _, message, _ in self.events]


def run(model: str, tmp_path: Path, records: list[dict[str, Any]], **settings: Any) -> Any:
    options: dict[str, Any] = {
        "base_model": model,
        "max_steps": 25,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "warmup_steps": 0,
        "learning_rate": 1e-2,
        "lora_dropout": 0.0,
        "max_seq_length": 128,
        **settings,
    }
    if options.get("method", "lora") in config_module.LORA_METHODS:
        options = {"lora_r": 8, "lora_alpha": 16, **options}
    recorder = Recorder()
    result = train(
        TrainConfig(**options),
        records=records,
        output_dir=tmp_path / "out",
        model_cache_dir=tmp_path / "cache",
        callbacks=recorder,
    )
    return result, recorder


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def answer_loss(model: Any, tokenizer: Any, records: list[dict[str, Any]]) -> float:
    """Mean loss over the answer tokens of ``records``, virtual tokens (if any) left out."""
    prepared = training_data.prepare_samples(
        tokenizer, records, max_seq_length=128, system_prompt=None
    )
    total, count = 0.0, 0
    with torch.no_grad():
        for sample in prepared.samples:
            ids = torch.tensor([sample.input_ids])
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            logits = logits[0, logits.shape[1] - ids.shape[1] : -1]
            labels = torch.tensor(sample.labels[1:])
            total += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            count += int((labels != training_data.IGNORE_INDEX).sum())
    return total / count


def reload(result: TrainResult, base_dir: Path, method: str) -> Any:
    """The saved artifact as a user would load it: PEFT adapters on the base model, or the
    fully fine-tuned model on its own."""
    if method == "full":
        return AutoModelForCausalLM.from_pretrained(str(result.adapter_dir)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(base_dir)).eval()
    return PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()


def generate(model: Any, tokenizer: Any, question: str, tokens: int = 4) -> str:
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False
        )
    new = out[0, inputs["input_ids"].shape[1] :]
    assert len(new) == tokens
    return str(tokenizer.decode(new))


# --- Every method on a tiny random model ---------------------------------------------------


@pytest.mark.parametrize("variant", list(CPU_METHODS))
def test_method_trains_and_its_artifact_reloads_and_generates(
    variant: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings, fall = CPU_METHODS[variant]
    result, recorder = run(str(tiny_model_dir), tmp_path, RECORDS, **settings)

    assert result.steps == 25
    assert mean(recorder.losses[-5:]) < mean(recorder.losses[:5]) - fall
    method = settings["method"]
    names = {p.name for p in result.files}
    if method == "full":
        assert {"model.safetensors", "config.json", "tokenizer.json"} <= names
        assert "adapter_config.json" not in names
    else:
        assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names

    tokenizer = AutoTokenizer.from_pretrained(str(result.adapter_dir))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    tuned = reload(result, tiny_model_dir, method)
    # The reloaded artifact is the trained one: it knows the answers better than the base.
    assert answer_loss(tuned, tokenizer, RECORDS[:4]) < answer_loss(base, tokenizer, RECORDS[:4])
    generate(tuned, tokenizer, "What colour is the sky?")


def test_lora_options_reach_the_saved_adapter_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    result, _ = run(
        str(tiny_model_dir), tmp_path, RECORDS, max_steps=1, use_rslora=True, use_dora=True
    )
    saved = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA"
    assert saved["use_rslora"] is True and saved["use_dora"] is True


def test_prompt_learning_methods_train_on_padded_batches_and_say_why(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    _, recorder = run(str(tiny_model_dir), tmp_path, RECORDS, max_steps=1, method="prefix_tuning")
    assert recorder.event("Training started")["packing"] is False
    assert any(
        m.startswith("Batches are padded, not packed: prefix-tuning") for m in recorder.messages
    )


def test_full_fine_tuning_trains_every_weight(tiny_model_dir: Path, tmp_path: Path) -> None:
    result, recorder = run(str(tiny_model_dir), tmp_path, RECORDS, max_steps=1, method="full")
    loaded = recorder.event("Model loaded")
    assert loaded["trainable"] == loaded["parameters"]
    assert loaded["dtype"] == "float32" and loaded["method"] == "full"
    assert "Saving model" in recorder.messages
    assert result.adapter_dir.is_dir()


def test_ia3_scales_keys_values_and_the_mlp_output(tiny_model_dir: Path, tmp_path: Path) -> None:
    result, _ = run(str(tiny_model_dir), tmp_path, RECORDS, max_steps=1, method="ia3")
    saved = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert saved["peft_type"] == "IA3"
    assert sorted(saved["target_modules"]) == ["down_proj", "k_proj", "v_proj"]
    assert saved["feedforward_modules"] == ["down_proj"]


def test_ia3_with_named_target_modules_uses_them(tiny_model_dir: Path, tmp_path: Path) -> None:
    result, _ = run(
        str(tiny_model_dir),
        tmp_path,
        RECORDS,
        max_steps=1,
        method="ia3",
        target_modules=["v_proj", "down_proj"],
    )
    saved = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert sorted(saved["target_modules"]) == ["down_proj", "v_proj"]
    assert saved["feedforward_modules"] == ["down_proj"]


def test_fused_lora_leaves_dora_layers_to_peft(tiny_model_dir: Path) -> None:
    targets = ["q_proj", "v_proj"]
    plain = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
        LoraConfig(r=4, target_modules=targets),
    )
    with fused.fused_modules(plain) as report:
        assert report.lora_linear == 4 and report.skipped_lora == []
    dora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
        LoraConfig(r=4, target_modules=targets, use_dora=True),
    )
    with fused.fused_modules(dora) as report:
        assert report.lora_linear == 0 and len(report.skipped_lora) == 4


# --- QLoRA without a GPU, and the checks made before queueing -------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU machine")
def test_qlora_on_a_machine_without_cuda_is_a_clear_error_and_leaves_no_output(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(TrainingError, match="QLoRA needs an NVIDIA GPU"):
        run(str(tiny_model_dir), tmp_path, RECORDS, max_steps=1, method="qlora")
    assert not (tmp_path / "out").exists()


def test_check_method_says_why_qlora_needs_cuda() -> None:
    reason = check_method("qlora", model_type="llama", cuda_available=False)
    assert reason is not None and "NVIDIA GPU" in reason and "LoRA" in reason
    assert check_method("qlora", model_type="llama", cuda_available=True) is None


@pytest.mark.parametrize("method", ["lora", "p_tuning", "full"])
def test_check_method_accepts_methods_that_work_without_a_gpu(method: str) -> None:
    assert check_method(method, model_type="llama", cuda_available=False) is None
    assert check_method(method, model_type=None, cuda_available=False) is None


@pytest.mark.parametrize("method", ["prefix_tuning", "ia3"])
def test_check_method_refuses_attention_methods_on_state_space_models(method: str) -> None:
    reason = check_method(method, model_type="mamba", cuda_available=True)
    assert reason is not None and "no attention" in reason
    assert check_method("lora", model_type="mamba", cuda_available=True) is None


def test_check_method_names_the_methods_when_it_does_not_know_one() -> None:
    reason = check_method("adalora", model_type="llama", cuda_available=True)
    assert reason is not None and "adalora" in reason and "prefix_tuning" in reason


def test_engine_refuses_the_method_before_loading_a_model_it_cannot_train(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mamba-shaped"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    assert model_type_of(folder) == "mamba"
    with pytest.raises(TrainingError, match="Prefix-tuning cannot train this model"):
        run(str(folder), tmp_path, RECORDS, max_steps=1, method="prefix_tuning")


def test_model_type_of_an_unreadable_folder_is_unknown(tmp_path: Path) -> None:
    assert model_type_of(tmp_path) is None
    (tmp_path / "config.json").write_text("[1, 2]")
    assert model_type_of(tmp_path) is None


def test_every_method_is_listed_with_a_title_and_description() -> None:
    choices = method_choices()
    assert [m.name for m in choices] == list(config_module.METHODS)
    assert set(METHODS) == set(config_module.METHODS)
    assert all(m.title and len(m.description) > 40 for m in choices)


def test_method_support_imports_no_torch() -> None:
    code = (
        "import sys, worker.spec.method_support as m\n"
        "m.check_method('qlora', model_type='llama', cuda_available=False)\n"
        "m.method_choices()\n"
        "print(' '.join(sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    assert not loaded & {"torch", "transformers", "peft"}


@pytest.mark.parametrize("option", ["use_rslora", "use_dora"])
@pytest.mark.parametrize("method", ["prefix_tuning", "p_tuning", "ia3", "full"])
def test_lora_options_with_another_method_are_refused_naming_the_field(
    option: str, method: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(base_model="m", method=method, **{option: True})
    (error,) = caught.value.errors()
    assert error["loc"] == (option,)
    assert method in error["msg"] and "lora" in error["msg"]


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_lora_options_are_accepted_with_the_lora_methods(method: str) -> None:
    config = TrainConfig(base_model="m", method=method, use_rslora=True, use_dora=True)
    assert config.use_rslora and config.use_dora


def test_full_fine_tuning_in_float16_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(base_model="m", method="full", dtype="float16")
    (error,) = caught.value.errors()
    assert error["loc"] == ("dtype",) and "full fine-tuning" in error["msg"]
    assert TrainConfig(base_model="m", method="full", dtype="bfloat16").dtype == "bfloat16"


def test_num_virtual_tokens_is_bounded() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(base_model="m", method="p_tuning", num_virtual_tokens=0)
    assert caught.value.errors()[0]["loc"] == ("num_virtual_tokens",)


# --- Real SmolLM2-135M-Instruct, every CPU method for a few steps ---------------------------

SMOLLM2_METHODS: dict[str, dict[str, Any]] = {
    "lora": {"method": "lora", "use_rslora": True, "learning_rate": 2e-3},
    "dora": {"method": "lora", "use_dora": True, "learning_rate": 2e-3},
    "prefix_tuning": {"method": "prefix_tuning", "learning_rate": 3e-2, "num_virtual_tokens": 8},
    "p_tuning": {"method": "p_tuning", "learning_rate": 3e-3, "num_virtual_tokens": 8},
    "ia3": {"method": "ia3", "learning_rate": 3e-2},
    "full": {"method": "full", "learning_rate": 5e-5, "max_steps": 2},
}


@pytest.mark.slow
def test_every_cpu_method_trains_smollm2(smollm2: ResolvedModel, tmp_path: Path) -> None:
    # One question twice per batch: every step sees the same answer, so three steps show the
    # loss falling however the batches are shuffled.
    records = [chat(*QA[0])] * 2
    timings = {}
    for variant, settings in SMOLLM2_METHODS.items():
        begun = time.perf_counter()
        result, recorder = run(
            str(smollm2.path),
            tmp_path / variant,
            records,
            **{"max_steps": 3, "batch_size": 2, "max_seq_length": 64, **settings},
        )
        assert recorder.losses[-1] < recorder.losses[0], (variant, recorder.losses)
        assert result.adapter_dir.is_dir()
        timings[variant] = round(time.perf_counter() - begun, 1)
    print("SmolLM2 seconds per method:", timings)


# --- check_method agrees with what actually trains ------------------------------------------

# Small enough to build in a blink; each type's config keeps only the attributes it has.
SMALL_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 512,
    "max_position_embeddings": 256,
    "moe_intermediate_size": 32,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "state_size": 8,
    "mamba_d_state": 8,
    "mamba_n_heads": 4,
    "mamba_d_head": 16,
    "mamba_d_ssm": 64,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 1,
}


def small_model(model_type: str) -> Any:
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    for name, value in SMALL_SHAPE.items():
        if hasattr(config, name):
            setattr(config, name, value)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def trains_and_generates(model_type: str, method: str) -> None:
    """One optimiser step's forward and backward through the engine's own step code, every
    trainable weight getting a gradient, then three generated tokens."""
    from worker.spec.formatting import Sample
    from worker.training import steps
    from worker.training.adapters import build_peft_config
    from worker.training.engine import _forward_module

    settings: dict[str, Any] = {"lora_dropout": 0.0, "num_virtual_tokens": 4}
    if method == "lora":
        settings.update(lora_r=4, lora_alpha=8)
    config = TrainConfig(
        base_model="m",
        method=method,
        batch_size=2,
        gradient_accumulation_steps=1,
        warmup_steps=0,
        learning_rate=1e-3,
        max_seq_length=64,
        **settings,
    )
    base = small_model(model_type)
    model = get_peft_model(base, build_peft_config(config, base))
    lm = _forward_module(model)
    samples = [
        Sample(list(range(5, 25)), [-100] * 10 + list(range(15, 25))),
        Sample(list(range(30, 42)), [-100] * 6 + list(range(36, 42))),
    ]
    plan = steps.plan_steps(lm, samples, config)
    with contextlib.ExitStack() as stack:
        if plan.packed:
            stack.enter_context(attention.packed_attention(lm))
        batches = steps.micro_batches([samples], plan, pad_id=0)
        steps.optimiser_step(lm, batches, 16, plan, torch.device("cpu"))
    # LoRA's A gets a zero gradient at first (B starts at zero), but never none at all.
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    prompt = torch.tensor([[5, 6, 7]])
    out = model.eval().generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=3,
        min_new_tokens=3,
        do_sample=False,
    )
    assert out.shape[1] == 6


@pytest.mark.parametrize("method", ["lora", "prefix_tuning", "p_tuning", "ia3"])
@pytest.mark.parametrize("model_type", ["llama", "gemma2", "qwen3_moe", "falcon_h1", "mamba"])
def test_check_method_refuses_exactly_what_cannot_train(model_type: str, method: str) -> None:
    refusal = check_method(method, model_type=model_type, cuda_available=False)
    if refusal is None:
        trains_and_generates(model_type, method)
    else:
        with pytest.raises(Exception):  # noqa: B017 - PEFT and transformers raise many kinds
            trains_and_generates(model_type, method)
