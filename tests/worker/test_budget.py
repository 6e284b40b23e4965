"""The token budget from the GPU's memory (worker.spec.budget), the same rule in the estimate,
and a step that runs out of memory halved and retried instead of failing the job (CPU, with
the run-time limit forced by TUNELAB_SIMULATE_OOM_ABOVE_TOKENS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.worker.test_training_speed import Recorder, run_train
from worker.spec import budget as rule
from worker.spec.catalog import CATALOG
from worker.spec.config import TrainConfig
from worker.spec.estimate import GPUS, estimate
from worker.training.budget import SIMULATE_ENV

GIB = 2**30
LLAMA_8B = rule.ModelShape(hidden_size=4096, intermediate_size=14336, layers=32)


def budget(free_gib: float, **kwargs: Any) -> rule.Budget:
    per_token = rule.activation_bytes_per_token(LLAMA_8B, lora_dropout=0.05)
    fixed = rule.fixed_bytes(trainable=42_000_000, shape=LLAMA_8B, quantized=False)
    settings: dict[str, Any] = {"fixed": fixed, "per_token": per_token, "longest": 1000}
    settings.update(kwargs)
    return rule.token_budget(free_bytes=int(free_gib * GIB), **settings)


def test_the_budget_grows_with_the_free_memory_and_keeps_a_margin() -> None:
    small, large = budget(20), budget(110)
    assert small.from_memory and not small.checkpointing
    assert large.tokens > 4 * small.tokens
    per_token = rule.activation_bytes_per_token(LLAMA_8B, lora_dropout=0.05)
    fixed = rule.fixed_bytes(trainable=42_000_000, shape=LLAMA_8B, quantized=False)
    # Activations take at most the margin's share of what is left.
    assert large.tokens * per_token <= rule.SAFETY_MARGIN * (110 * GIB - fixed)
    assert budget(110, margin=0.5).tokens < large.tokens
    assert budget(5000).tokens == rule.MAX_BUDGET


def test_passes_stop_growing_where_longer_ones_stop_paying() -> None:
    llama_8b = rule.ModelShape(4096, 14336, 32, layer_weights=218_103_808)
    qwen_05b = rule.ModelShape(896, 4864, 24, layer_weights=14_909_440)
    assert rule.largest_useful(llama_8b) == 8192
    assert rule.largest_useful(qwen_05b) == rule.MAX_BUDGET
    assert budget(110, cap=rule.largest_useful(llama_8b)).tokens == 8192
    assert budget(20, cap=rule.largest_useful(llama_8b)).tokens < 8192  # memory decides


def test_a_pass_holds_the_longest_sample_or_checkpointing_comes_on() -> None:
    assert budget(20, longest=3000).tokens >= 3000
    tight = budget(3, longest=3000)
    assert tight.checkpointing and tight.tokens == 3000


def test_an_explicit_micro_batch_tokens_wins() -> None:
    chosen = budget(110, explicit=1024)
    assert chosen.tokens == 1024 and not chosen.from_memory
    assert budget(110, explicit=100).tokens == 1000  # never below the longest sample


def test_methods_without_the_fused_path_and_dropout_keep_more_per_token() -> None:
    def per_token(**kwargs: Any) -> int:
        return rule.activation_bytes_per_token(LLAMA_8B, **{"lora_dropout": 0.0, **kwargs})

    lora = per_token()
    assert per_token(method="qlora") == lora  # the fused 4-bit path keeps what LoRA keeps
    assert per_token(lora_dropout=0.1) > lora
    assert per_token(method="ia3") > lora
    assert per_token(dora=True) > per_token(method="ia3")
    assert per_token(method="full") > lora
    assert rule.fixed_bytes(trainable=1, shape=LLAMA_8B, quantized=True) > rule.fixed_bytes(
        trainable=1, shape=LLAMA_8B, quantized=False
    )


def test_on_a_gpu_the_dropout_kernels_keep_no_masks_up_to_their_largest_rank() -> None:
    with_masks = rule.activation_bytes_per_token(LLAMA_8B, lora_dropout=0.05)
    without = rule.activation_bytes_per_token(LLAMA_8B, lora_dropout=0.05, masks=False)
    assert without == rule.activation_bytes_per_token(LLAMA_8B, lora_dropout=0.0)
    # At 8B the bit masks are 4% of what a token keeps.
    assert 1.03 < with_masks / without < 1.05
    assert not rule.masks_kept(16) and not rule.masks_kept(rule.DROPOUT_KERNEL_MAX_RANK)
    assert rule.masks_kept(rule.DROPOUT_KERNEL_MAX_RANK + 1)

    # The estimate's memory and pass size follow: a rank past the kernels' keeps masks.
    arch = CATALOG["qwen2.5-0.5b-instruct"].arch

    def activations(r: int, dropout: float) -> float:
        config = TrainConfig(base_model="m", max_steps=10, lora_r=r, lora_dropout=dropout)
        result = estimate(config, arch, gpu=GPUS["H100"], dataset_records=1000, mean_tokens=300)
        return float(result.breakdown["memory_bytes"]["activations"])

    assert activations(16, 0.1) == activations(16, 0.0)
    assert activations(256, 0.1) > activations(256, 0.0)


def test_the_estimate_uses_the_same_rule_for_the_chosen_gpu() -> None:
    arch = CATALOG["llama-3.1-8b-instruct"].arch

    def row_tokens(gpu: str, **settings: Any) -> int:
        config = TrainConfig(
            base_model="m", max_steps=10, batch_size=8, gradient_accumulation_steps=8, **settings
        )
        result = estimate(
            config, arch, gpu=GPUS[gpu], dataset_records=10_000, mean_tokens=1500, p95_tokens=2000
        )
        return int(result.breakdown["row_tokens"])

    h200, l40s, rtx = row_tokens("H200"), row_tokens("L40S"), row_tokens("RTX 4090")
    assert h200 == 8192  # the 8B layer's useful pass size, which an H200 has room for
    assert h200 > l40s > rtx
    # 4-bit weights leave more of the same card to activations.
    assert row_tokens("L40S", method="qlora") > l40s
    assert row_tokens("H200", micro_batch_tokens=4096) == 4096
    # What the estimate chose on a smaller card is the rule's own answer for that card.
    shape = rule.ModelShape(arch.hidden_size, arch.intermediate_size, arch.layers)
    per_token = rule.activation_bytes_per_token(shape, lora_dropout=0.05, masks=False)
    assert l40s * per_token < GPUS["L40S"].memory_bytes
    assert (l40s + 1024) * per_token > 0.5 * (GPUS["L40S"].memory_bytes - 16 * 2**30)


def run(tmp_path: Path, tiny_model_dir: Path, name: str, **overrides: Any) -> Recorder:
    # float32: the runs compare a step cut in different passes to 1e-4, which bfloat16 sums
    # (chosen on a processor with AMX/AVX-512 bf16) do not keep.
    settings = {"max_steps": 6, "dtype": "float32", **overrides}
    return run_train(tiny_model_dir, tmp_path, name, **settings)


def halvings(recorder: Recorder) -> list[dict[str, Any]]:
    return [d for _, d in recorder.events if d and "previous_micro_batch_tokens" in d]


def test_a_pass_that_does_not_fit_is_halved_and_the_step_retried(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = run(tmp_path, tiny_model_dir, "whole", micro_batch_tokens=4096)
    assert whole.started()["micro_batch_tokens"] == 4096 and not halvings(whole)
    # Forced: a pass of more than 100 tokens runs out of memory as it starts.
    monkeypatch.setenv(SIMULATE_ENV, "100")
    halved = run(tmp_path, tiny_model_dir, "halved", micro_batch_tokens=4096)
    events = halvings(halved)
    assert events[0]["previous_micro_batch_tokens"] == 4096
    # Halved (from the largest pass that failed) until the passes fit, then kept for the run:
    # every event's budget is below the one before.
    budgets = [e["micro_batch_tokens"] for e in events]
    assert budgets == sorted(budgets, reverse=True) and len(set(budgets)) == len(budgets)
    assert budgets[-1] <= 100
    assert all(e["micro_batch_tokens"] <= e["previous_micro_batch_tokens"] // 2 for e in events[1:])
    warnings = [m for m, d in halved.events if d and "previous_micro_batch_tokens" in d]
    assert "did not fit in GPU memory" in warnings[0] and "retried" in warnings[0]
    # Every step trained, and the gradient of a step does not depend on how it was cut.
    assert len(halved.losses) == len(whole.losses) == 6
    assert halved.losses == pytest.approx(whole.losses, rel=1e-4)


def test_padded_batches_that_do_not_fit_run_in_fewer_rows(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = run(tmp_path, tiny_model_dir, "whole", packing=False)
    monkeypatch.setenv(SIMULATE_ENV, "60")
    split = run(tmp_path, tiny_model_dir, "split", packing=False)
    events = [d for _, d in split.events if d and "rows_per_pass" in d]
    assert events and events[0] == {"rows_per_pass": 2, "previous_rows_per_pass": 4}
    assert split.losses == pytest.approx(whole.losses, rel=1e-4)


def test_a_single_sample_that_does_not_fit_fails_with_a_clear_message(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.spec.errors import TrainingError

    monkeypatch.setenv(SIMULATE_ENV, "5")
    with pytest.raises(TrainingError, match="one sample"):
        run(tmp_path, tiny_model_dir, "none", micro_batch_tokens=4096)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_the_gpu_the_budget_follows_free_memory_and_a_pass_too_big_is_halved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tests.worker.test_training_speed import make_samples
    from worker.training import trainer

    def train_once() -> Recorder:
        config = LlamaConfig(
            vocab_size=5000,
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        recorder = Recorder()
        settings = TrainConfig(
            base_model="random llama",
            max_steps=4,
            batch_size=8,
            gradient_accumulation_steps=2,
            learning_rate=1e-3,
            lora_dropout=0.0,
            max_seq_length=256,
        )
        samples = make_samples([30 + 11 * (i % 13) for i in range(64)])
        trainer.train_model(model, samples, settings, pad_id=0, callbacks=recorder)
        return recorder

    whole = train_once()
    # A tiny model on a large GPU: the rule's cap, far above the step's tokens.
    assert whole.started()["micro_batch_tokens"] == rule.MAX_BUDGET
    monkeypatch.setenv(SIMULATE_ENV, "300")
    halved = train_once()
    assert halvings(halved) and halvings(halved)[-1]["micro_batch_tokens"] <= 300
    assert halved.losses == pytest.approx(whole.losses, rel=2e-2)
