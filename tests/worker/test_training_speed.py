"""Packed, token-budget training on a tiny random model (CPU): the same per-token loss as
padded batches, samples kept apart inside a packed row, labels right at the pack boundaries,
fused layers equal to the modules they replace, and reproducible loss curves."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from worker.spec.formatting import IGNORE_INDEX, Sample
from worker.training import TrainConfig, attention, fused, packing, train
from worker.training.loss import linear_cross_entropy_sum

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_samples(lengths: list[int], seed: int = 0) -> list[Sample]:
    """Samples whose first half is prompt (unlabelled) and second half answer."""
    rng = random.Random(seed)
    samples = []
    for n in lengths:
        ids = [rng.randrange(3, 5000) for _ in range(n)]
        labels = [IGNORE_INDEX if i < n // 2 else t for i, t in enumerate(ids)]
        samples.append(Sample(ids, labels))
    return samples


def lora_model(model_dir: Path, dropout: float = 0.0) -> Any:
    """The tiny model with LoRA whose B is random too, so the adapters change the output."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    config = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=dropout, target_modules=TARGETS, init_lora_weights=False
    )
    return get_peft_model(base, config)


def packed_hidden(lm: Any, batch: packing.MicroBatch, **overrides: Any) -> torch.Tensor:
    inputs: dict[str, Any] = {
        "input_ids": batch.input_ids,
        "position_ids": batch.position_ids,
        "cu_seq_lens_q": batch.cu_seq_lens,
        "cu_seq_lens_k": batch.cu_seq_lens,
        "max_length_q": batch.max_length,
        "max_length_k": batch.max_length,
        "use_cache": False,
    }
    inputs.update(overrides)
    hidden: torch.Tensor = lm.get_decoder()(**inputs).last_hidden_state
    return hidden


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).norm() / expected.norm())


def lora_grads(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# --- Same loss as padded batches -----------------------------------------------------------


def test_packed_row_gives_the_same_per_token_loss_and_gradients_as_padded_batches(
    tiny_model_dir: Path,
) -> None:
    model = lora_model(tiny_model_dir)
    lm = model.get_base_model()
    samples = make_samples([5, 17, 2, 30, 9])

    # Reference: the unpatched model on right-padded rows with an attention mask.
    padded = packing.collate_padded(samples, pad_id=0)
    logits = lm(input_ids=padded.input_ids, attention_mask=padded.attention_mask).logits
    picked = logits.flatten(0, 1).index_select(0, padded.label_positions)
    reference = F.cross_entropy(picked, padded.label_targets, reduction="none")
    reference.sum().backward()
    reference_grads = lora_grads(model)
    model.zero_grad(set_to_none=True)

    row = packing.collate_packed(samples)
    assert row.input_ids.shape == (1, sum(len(s.input_ids) for s in samples))  # no padding
    with fused.fused_modules(model), attention.packed_attention(lm):
        hidden = packed_hidden(lm, row).flatten(0, 1).index_select(0, row.label_positions)
        head = lm.get_output_embeddings()
        per_token = F.cross_entropy(hidden @ head.weight.t(), row.label_targets, reduction="none")
        total = linear_cross_entropy_sum(hidden, head.weight, row.label_targets)
        total.backward()

    assert torch.equal(row.label_targets, padded.label_targets)
    assert torch.allclose(per_token, reference.detach(), rtol=1e-5, atol=1e-5)
    assert torch.allclose(total, reference.sum(), rtol=1e-5)
    grads = lora_grads(model)
    assert grads.keys() == reference_grads.keys() and len(grads) == 2 * 7 * 2
    for name, grad in grads.items():
        assert relative_error(grad, reference_grads[name]) < 1e-5, name


def test_no_sample_attends_to_another_in_a_packed_row(tiny_model_dir: Path) -> None:
    model = lora_model(tiny_model_dir)
    lm = model.get_base_model()
    first, middle, last = make_samples([7, 11, 6])
    row = packing.collate_packed([first, middle, last])
    changed = packing.collate_packed(
        [make_samples([7], seed=1)[0], middle, make_samples([6], seed=2)[0]]
    )
    span = slice(7, 18)

    with fused.fused_modules(model), attention.packed_attention(lm):
        # The middle sample's hidden states ignore what its neighbours contain ...
        hidden = packed_hidden(lm, row)[0, span]
        hidden_changed = packed_hidden(lm, changed)[0, span]
        assert torch.allclose(hidden, hidden_changed, atol=1e-6)
        alone = packed_hidden(lm, packing.collate_packed([middle]))[0]
        assert torch.allclose(hidden, alone, atol=1e-5)

        # ... and a loss on it sends no gradient into them.
        embeds = lm.get_input_embeddings()(row.input_ids).detach().requires_grad_(True)
        out = packed_hidden(lm, row, input_ids=None, inputs_embeds=embeds)
        out[0, span].sum().backward()
    assert embeds.grad is not None
    assert embeds.grad[0, :7].abs().max() == 0
    assert embeds.grad[0, 18:].abs().max() == 0
    assert embeds.grad[0, span].abs().max() > 0


def test_labels_at_pack_boundaries_stay_inside_their_own_sample() -> None:
    # Both samples end on an answer token; the second starts right after it.
    first = Sample([10, 11, 12, 13], [IGNORE_INDEX, IGNORE_INDEX, 12, 13])
    second = Sample([20, 21, 22], [IGNORE_INDEX, 21, 22])
    row = packing.collate_packed([first, second])
    assert row.input_ids.tolist() == [[10, 11, 12, 13, 20, 21, 22]]
    assert row.position_ids is not None and row.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    assert row.cu_seq_lens is not None and row.cu_seq_lens.tolist() == [0, 4, 7]
    assert row.max_length == 4 and row.tokens == 7
    # Position 3 (the first sample's last token) must not learn to predict token 20.
    assert row.label_positions.tolist() == [1, 2, 4, 5]
    assert row.label_targets.tolist() == [12, 13, 21, 22]
    assert packing.answer_token_count(first) + packing.answer_token_count(second) == 4


def test_padded_micro_batch_labels_the_same_tokens() -> None:
    first = Sample([10, 11, 12, 13], [IGNORE_INDEX, IGNORE_INDEX, 12, 13])
    second = Sample([20, 21], [IGNORE_INDEX, 21])
    batch = packing.collate_padded([first, second], pad_id=0)
    assert batch.input_ids.tolist() == [[10, 11, 12, 13], [20, 21, 0, 0]]
    assert batch.attention_mask is not None
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch.label_positions.tolist() == [1, 2, 4]
    assert batch.label_targets.tolist() == [12, 13, 21]
    assert batch.tokens == 6


def test_pack_keeps_every_sample_once_and_rows_within_the_budget() -> None:
    rng = random.Random(3)
    samples = make_samples([rng.randrange(2, 90) for _ in range(60)] + [150], seed=3)
    rows = packing.pack(samples, token_budget=128)
    packed_ids = sorted(id(s) for row in rows for s in row)
    assert packed_ids == sorted(id(s) for s in samples)
    for row in rows:
        size = sum(len(s.input_ids) for s in row)
        assert size <= 128 or len(row) == 1  # only an over-long sample gets a row alone
    assert [[id(s) for s in row] for row in rows] == [
        [id(s) for s in row] for row in packing.pack(samples, token_budget=128)
    ]
    # First-fit keeps rows nearly full: no more rows than one over the ideal count.
    assert len(rows) <= sum(len(s.input_ids) for s in samples) // 128 + 2


def test_default_token_budget_gives_small_models_longer_rows() -> None:
    from transformers import LlamaConfig, Qwen2Config

    llama_8b = LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8
    )
    qwen_05b = Qwen2Config(
        hidden_size=896, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2
    )
    tiny = LlamaConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4)
    assert packing.layer_weights(llama_8b) == 218_103_808
    assert packing.default_token_budget(llama_8b) == 2048
    assert 28_000 < packing.default_token_budget(qwen_05b) < 32_768
    assert packing.default_token_budget(tiny) == 32_768


# --- Fused layers and loss -----------------------------------------------------------------


class SameMaskDropout(torch.nn.Module):
    """Inverted dropout with the fused path's CPU mask."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = fused._cpu_keep_mask(x.shape, self.p)
        return torch.where(keep, x, 0) / (1 - self.p)


def test_the_cpu_dropout_mask_keeps_one_minus_p_and_repeats_with_the_seed() -> None:
    for shape, p in (((512, 576), 0.05), ((7, 13), 0.5), ((1, 3, 5), 0.2)):
        torch.manual_seed(1)
        keep = fused._cpu_keep_mask(torch.Size(shape), p)
        assert keep.shape == shape and keep.dtype == torch.bool
        torch.manual_seed(1)
        assert torch.equal(keep, fused._cpu_keep_mask(torch.Size(shape), p))
    torch.manual_seed(2)
    big = fused._cpu_keep_mask(torch.Size((1000, 1000)), 0.1)
    assert abs(big.float().mean().item() - 0.9) < 0.002
    # Rows and columns alike: no position is kept more often than another.
    assert big.float().mean(0).std() < 0.02 and big.float().mean(1).std() < 0.02
    assert fused._cpu_keep_mask(torch.Size((100, 100)), 1e-9).all()
    assert not fused._cpu_keep_mask(torch.Size((100, 100)), 1 - 1e-9).any()
    # The mask is the 16-bit draws compared with the threshold (the clamp is an integer form
    # of that comparison), and multiplying by it keeps what torch.where keeps.
    torch.manual_seed(3)
    keep = fused._cpu_keep_mask(torch.Size((64, 96)), 0.3)
    torch.manual_seed(3)
    words = torch.randint(-(2**63), 2**63 - 1, (64 * 96 // 4,), dtype=torch.int64)
    assert torch.equal(keep, words.view(torch.int16).view(64, 96) >= round(0.3 * 65536) - 32768)
    x = torch.randn(64, 96, dtype=torch.bfloat16)
    assert torch.equal(x * fused._cpu_keep(keep, x.dtype), torch.where(keep, x, 0))


def test_fused_layers_compute_what_the_modules_they_replace_compute(tiny_model_dir: Path) -> None:
    model = lora_model(tiny_model_dir, dropout=0.2)
    model.train()
    lm = model.get_base_model()
    ids = torch.randint(3, 5000, (2, 13))

    def run(seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)  # the same dropout masks in both runs
        logits = lm(input_ids=ids).logits
        (logits.float() ** 2).mean().backward()
        return logits.detach(), lora_grads(model)

    # On a CPU the fused path draws its dropout masks its own way (fused._cpu_keep_mask), so
    # PEFT's dropout is given the same draw, in the same order, for the reference run.
    originals = {}
    for name, module in model.named_modules():
        if isinstance(getattr(module, "lora_dropout", None), torch.nn.ModuleDict):
            originals[name] = dict(module.lora_dropout)
            for key, dropout in module.lora_dropout.items():
                module.lora_dropout[key] = SameMaskDropout(dropout.p)
    assert len(originals) == 14
    plain_logits, plain_grads = run(5)
    for name, module in model.named_modules():
        if name in originals:
            module.lora_dropout.update(originals[name])
    with fused.fused_modules(model) as report:
        fused_logits, fused_grads = run(5)
    assert (report.lora_linear, report.rms_norm, report.gated_mlp) == (14, 5, 2)
    assert report.skipped_lora == []
    assert torch.allclose(fused_logits, plain_logits, rtol=1e-5, atol=1e-5)
    for name, grad in plain_grads.items():
        assert relative_error(fused_grads[name], grad) < 1e-4, name
    # Leaving the block restores the modules' own forward.
    assert "forward" not in vars(lm.model.layers[0].mlp)


def test_linear_cross_entropy_matches_full_logits_across_chunks() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(50, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (37,))

    expected = F.cross_entropy(hidden @ weight.t() + bias, targets, reduction="sum")
    expected_grads = torch.autograd.grad(expected * 0.5, (hidden, weight, bias))
    # 8 rows a chunk: five chunks, the last one partial; with a row multiple of 4 (the CPU
    # path), the last one is padded to 8 rows that count for nothing.
    for row_multiple in (None, 4):
        got = linear_cross_entropy_sum(
            hidden, weight, targets, bias, chunk_elements=8 * 50, row_multiple=row_multiple
        )
        got_grads = torch.autograd.grad(got * 0.5, (hidden, weight, bias))
        assert torch.allclose(got, expected, rtol=1e-12)
        for a, b in zip(got_grads, expected_grads, strict=True):
            assert a.shape == b.shape
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_linear_cross_entropy_reduces_bf16_logits_in_float32() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(9, 16, dtype=torch.bfloat16)
    weight = torch.randn(50, 16, dtype=torch.bfloat16)
    targets = torch.randint(0, 50, (9,))
    got = linear_cross_entropy_sum(hidden, weight, targets)
    expected = F.cross_entropy((hidden @ weight.t()).float(), targets, reduction="sum")
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, rtol=1e-6)


# --- End to end ----------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.events: list[tuple[str, dict[str, Any] | None]] = []

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((message, data))

    def on_step(self, metrics: Any) -> None:
        self.losses.append(metrics.loss)

    def should_stop(self) -> bool:
        return False

    def started(self) -> dict[str, Any]:
        return next(d for m, d in self.events if m == "Training started" and d is not None)


def records(count: int) -> list[dict[str, Any]]:
    """Conversations of uneven length (1 to 12 words of answer)."""
    words = ["red", "green", "blue", "one", "two", "three", "sky", "sea", "sun", "moon"]
    out = []
    for i in range(count):
        answer = " ".join(words[(i + j) % len(words)] for j in range(1 + i % 12))
        out.append(
            {
                "messages": [
                    {"role": "user", "content": f"Say {1 + i % 12} words starting at {i % 10}."},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return out


def run_train(tiny_model_dir: Path, tmp_path: Path, name: str, **overrides: Any) -> Recorder:
    settings: dict[str, Any] = {
        "base_model": str(tiny_model_dir),
        "max_steps": 8,
        "batch_size": 4,
        "gradient_accumulation_steps": 2,
        "learning_rate": 1e-2,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "max_seq_length": 128,
    }
    settings.update(overrides)
    recorder = Recorder()
    train(
        TrainConfig(**settings),
        records=records(24),
        output_dir=tmp_path / name,
        model_cache_dir=tmp_path / "cache",
        callbacks=recorder,
    )
    return recorder


def test_packed_padded_and_budgeted_runs_follow_the_same_loss_curve(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # In float32: bfloat16 (the CPU path's default here) rounds each layout differently.
    exact = {"dtype": "float32"}
    packed = run_train(tiny_model_dir, tmp_path, "packed", **exact)
    padded = run_train(tiny_model_dir, tmp_path, "padded", packing=False, **exact)
    # A budget below one sample's length: every sample gets a forward pass of its own.
    budgeted = run_train(tiny_model_dir, tmp_path, "budgeted", micro_batch_tokens=16, **exact)
    assert packed.started()["packing"] is True
    assert padded.started()["packing"] is False
    assert budgeted.started()["micro_batch_tokens"] >= 16
    assert packed.losses == pytest.approx(padded.losses, rel=1e-4)
    assert packed.losses == pytest.approx(budgeted.losses, rel=1e-4)


def test_packed_training_learns_and_repeats_exactly_with_the_same_seed(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = {"lora_dropout": 0.1, "seed": 11, "micro_batch_tokens": 96, "max_steps": 12}
    first = run_train(tiny_model_dir, tmp_path, "first", **settings)
    second = run_train(tiny_model_dir, tmp_path, "second", **settings)
    # Another seed changes the curve from its first steps on: three of them show it.
    other = run_train(tiny_model_dir, tmp_path, "other", **{**settings, "seed": 12, "max_steps": 3})
    assert first.started()["packing"] is True and first.started()["fused_layers"] > 0
    assert first.losses == second.losses
    assert first.losses[:3] != other.losses
    assert sum(first.losses[-3:]) / 3 < sum(first.losses[:3]) / 3 - 0.5
