"""Training passes replayed as CUDA graphs (worker.training.graphs): the fixed row shapes
they need (packing.graph_row), that those shapes change neither the loss nor a gradient (on a
CPU, where the same padded rows run as usual), when a run records them, and on a CUDA GPU
(skipped without one) that a graphed run trains as a plain one."""

from __future__ import annotations

import dataclasses
import itertools
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.worker.test_compiled import cuda_llama, pattern_samples
from tests.worker.test_training_speed import lora_grads, lora_model, make_samples
from worker.spec.config import TrainConfig
from worker.spec.formatting import Sample
from worker.training import attention, fused, graphs, packing
from worker.training.steps import StepPlan, micro_batch_loss, micro_batches, plan_steps


def test_a_graph_row_has_fixed_shapes_and_keeps_the_real_tokens_and_labels() -> None:
    samples = make_samples([5, 17, 9])
    plain = packing.collate_packed(samples)
    row = packing.graph_row(samples)
    assert row.tokens == plain.tokens == 31
    # Eight segments (a power of two above three samples): five of filler, sharing the rest of
    # the 256-token width evenly.
    assert row.input_ids.shape == (1, 256)
    assert row.cu_seq_lens.tolist() == [0, 5, 22, 31, 76, 121, 166, 211, 256]
    assert row.cu_seq_lens.dtype == torch.int32
    assert row.position_ids[0, :31].tolist() == plain.position_ids[0].tolist()
    assert row.position_ids[0, 31:76].tolist() == list(range(45))
    assert row.position_ids[0, -1].item() == 44
    assert row.max_length == 128  # the 45-token filler segments, rounded up (128 at least)
    labels = plain.label_positions.numel()
    assert row.label_positions.numel() == 256
    assert torch.equal(row.label_positions[:labels], plain.label_positions)
    assert torch.equal(row.label_targets[:labels], plain.label_targets)
    assert set(row.label_positions[labels:].tolist()) == {255}
    assert row.label_weights is not None
    assert row.label_weights.tolist() == [1.0] * labels + [0.0] * (256 - labels)
    assert row.shape_key() == (256, 256, 9, 128)


def test_graph_rows_fall_into_a_few_shapes() -> None:
    """Steps of 32 short chat samples (one pass each, as at 0.5B): a run of 500 steps meets
    a few dozen shapes at most, and the padding stays small."""
    rng = random.Random(0)
    keys, run_keys = set(), set()
    real = padded = 0
    bound = packing.segment_bound(2048)  # the run's longest sample, rounded up
    for _ in range(500):
        lengths = [min(2048, int(rng.lognormvariate(5.4, 0.7)) + 8) for _ in range(32)]
        samples = make_samples(lengths)
        row = packing.graph_row(samples)
        keys.add(row.shape_key())
        # With the run's bound, the same row but for its longest-segment bound.
        run_keys.add((*row.shape_key()[:3], min(bound, row.input_ids.shape[1])))
        real += row.tokens
        padded += row.input_ids.shape[1]
        bounds = row.cu_seq_lens.tolist()
        assert all(b > a for a, b in itertools.pairwise(bounds))  # none empty
        assert max(b - a for a, b in itertools.pairwise(bounds)) <= row.max_length
        assert row.max_length <= row.input_ids.shape[1]
    assert len(keys) <= 40
    # One attention bound for the whole run: fewer shapes to record.
    assert len(run_keys) < len(keys) * 0.7
    bounded = packing.graph_row(samples, bound)
    assert bounded.shape_key() == (*row.shape_key()[:3], min(bound, row.input_ids.shape[1]))
    assert torch.equal(bounded.input_ids, row.input_ids)
    assert padded / real < 1.2


def _step(model: Any, plan: StepPlan, samples: list[Sample]) -> tuple[float, dict[str, Any]]:
    lm = model.get_base_model()
    model.zero_grad(set_to_none=True)
    total = torch.zeros(())
    for batch in micro_batches([samples], plan, pad_id=0):
        loss = micro_batch_loss(lm, batch, plan)
        loss.backward()
        total += loss.detach()
    return float(total), lora_grads(model)


@pytest.mark.parametrize("fused_head", [True, False])
def test_graph_rows_give_the_loss_and_gradients_of_plain_rows(
    fused_head: bool, tiny_model_dir: Path
) -> None:
    """The filler segments and the label slots of weight 0 add nothing: the same padded rows a
    GPU replays, run as usual on a CPU, give the plain rows' loss and gradients."""
    model = lora_model(tiny_model_dir)
    lm = model.get_base_model()
    plain = StepPlan(
        packed=True, token_budget=64, checkpointing=False, fused_head=fused_head, note=""
    )
    graphed = dataclasses.replace(plain, graphs=True)
    samples = make_samples([5, 17, 9, 30, 12, 40, 3])
    rows = micro_batches([samples], graphed, pad_id=0)
    assert len(rows) > 1 and all(r.label_weights is not None for r in rows)
    with fused.fused_modules(model), attention.packed_attention(lm):
        expected_loss, expected = _step(model, plain, samples)
        loss, got = _step(model, graphed, samples)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert expected.keys() == got.keys() and expected
    for name, grad in expected.items():
        scale = float(grad.norm()) or 1.0
        assert float((got[name] - grad).norm()) / scale < 1e-5, name


def test_a_graph_row_widened_to_a_larger_shape_keeps_its_tokens_and_labels() -> None:
    samples = make_samples([5, 17, 9])
    row = packing.graph_row(samples)
    assert row.shape_key() == (256, 256, 9, 128)
    wide = packing.widen_row(row, (384, 320, 17, 256))
    assert wide is not None and wide.shape_key() == (384, 320, 17, 256)
    assert wide.tokens == row.tokens == 31
    assert torch.equal(wide.input_ids[:, :31], row.input_ids[:, :31])
    assert torch.equal(wide.position_ids[:, :31], row.position_ids[:, :31])
    bounds = wide.cu_seq_lens.tolist()
    assert (
        bounds[:4] == [0, 5, 22, 31] and bounds[-1] == 384 and wide.cu_seq_lens.dtype == torch.int32
    )
    # The filler shared evenly over 13 segments, each at most the longest segment.
    filler = [b - a for a, b in itertools.pairwise(bounds[3:])]
    assert len(filler) == 13 and max(filler) - min(filler) <= 1 and max(filler) <= 256
    assert wide.position_ids[0, 31:].tolist() == [i for n in filler for i in range(n)]
    labels = int(row.label_weights.sum())
    assert torch.equal(wide.label_positions[:labels], row.label_positions[:labels])
    assert torch.equal(wide.label_targets[:labels], row.label_targets[:labels])
    assert set(wide.label_positions[labels:].tolist()) == {383}
    assert wide.label_weights.tolist() == [1.0] * labels + [0.0] * (320 - labels)
    # The same shape is the row itself; a smaller one, or filler segments longer than the
    # shape's longest (here 353 tokens in one segment of at most 128), cannot be.
    assert packing.widen_row(row, row.shape_key()).shape_key() == row.shape_key()
    assert packing.widen_row(row, (256, 128, 9, 128)) is None
    assert packing.widen_row(packing.graph_row(make_samples([60] * 7)), (768, 512, 9, 128)) is None


def test_a_pass_of_a_new_shape_replays_in_a_larger_graph_until_that_costs_a_recording() -> None:
    """Ski rental: the cheapest recorded shape that holds the pass, while the extra work its
    shape's passes cost stays within a width; then the shape is recorded."""
    recorded = [(4096, 2048, 65, 2048), (5120, 2048, 65, 2048), (5120, 3072, 65, 2048)]
    key = (4096, 3072, 65, 2048)
    # Only the last holds it: 1,024 more tokens and no more slots.
    assert graphs.stand_in(recorded, key, 0.0, 0.4, room=True) == ((5120, 3072, 65, 2048), 1024)
    assert graphs.stand_in(recorded, key, 3072.0, 0.4, room=True) == ((5120, 3072, 65, 2048), 1024)
    assert graphs.stand_in(recorded, key, 3073.0, 0.4, room=True) is None  # now record it
    # Slots are cheaper than tokens: of two that hold it, the one with more slots wins.
    more_slots = [(4096, 4096, 65, 2048), (5120, 3072, 65, 2048)]
    assert graphs.stand_in(more_slots, key, 0.0, 0.4, room=True) == ((4096, 4096, 65, 2048), 409.6)
    # More boundaries and a longer segment hold it too; nothing smaller in any part does.
    assert graphs.stand_in([(4096, 3072, 129, 4096)], key, 0.0, 0.4, room=True) is not None
    for smaller in [(4096, 3072, 33, 2048), (4096, 3072, 65, 1024), (3072, 4096, 65, 2048)]:
        assert graphs.stand_in([smaller], key, 0.0, 0.4, room=True) is None
    # With no room for a recording, any that costs under a pass of its own.
    assert graphs.stand_in(recorded, key, 1e9, 0.4, room=False) is not None
    assert graphs.stand_in([(9000, 3072, 65, 2048)], key, 0.0, 0.4, room=False) is None


def test_a_label_slot_costs_the_loss_heads_share_of_a_token() -> None:
    from transformers import LlamaConfig, Qwen2Config

    qwen = Qwen2Config(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
    )
    llama8b = LlamaConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    )
    assert graphs.slot_cost(qwen) == pytest.approx(0.38, abs=0.01)
    assert graphs.slot_cost(llama8b) == pytest.approx(0.075, abs=0.005)


def test_widened_graph_rows_give_the_loss_and_gradients_of_plain_rows(
    tiny_model_dir: Path,
) -> None:
    """More filler, in more segments, and more label slots of weight 0 add nothing either."""
    model = lora_model(tiny_model_dir)
    lm = model.get_base_model()
    plain = StepPlan(packed=True, token_budget=64, checkpointing=False, fused_head=True, note="")
    graphed = dataclasses.replace(plain, graphs=True)
    samples = make_samples([5, 17, 9, 30, 12, 40, 3])
    rows = micro_batches([samples], graphed, pad_id=0)
    wide = [packing.widen_row(r, (640, 320, 33, 512)) for r in rows]
    assert all(w is not None and w.shape_key() == (640, 320, 33, 512) for w in wide)

    def step(batches: list[Any]) -> tuple[float, dict[str, Any]]:
        model.zero_grad(set_to_none=True)
        total = torch.zeros(())
        for batch in batches:
            loss = micro_batch_loss(lm, batch, graphed)
            loss.backward()
            total += loss.detach()
        return float(total), lora_grads(model)

    with fused.fused_modules(model), attention.packed_attention(lm):
        expected_loss, expected = _step(model, plain, samples)
        loss, got = step(wide)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert expected.keys() == got.keys() and expected
    for name, grad in expected.items():
        scale = float(grad.norm()) or 1.0
        assert float((got[name] - grad).norm()) / scale < 1e-5, name


def test_passes_over_the_limit_run_plain_rows() -> None:
    plan = StepPlan(packed=True, token_budget=40, checkpointing=False, fused_head=True, note="")
    plan = dataclasses.replace(plan, graphs=True, graph_tokens=20)
    rows = micro_batches([make_samples([30, 5, 17, 9])], plan, pad_id=0)
    assert [r.tokens for r in rows] == [39, 22]
    # Both over the limit: unpadded. With a limit of 30 the second is recorded.
    assert all(r.label_weights is None and r.input_ids.shape[1] == r.tokens for r in rows)
    rows = micro_batches(
        [make_samples([30, 5, 17, 9])], dataclasses.replace(plan, graph_tokens=30), 0
    )
    assert rows[0].label_weights is None and rows[1].label_weights is not None
    assert rows[1].input_ids.shape[1] == 256


def test_validation_runs_plain_rows_in_a_graphed_run(tiny_model_dir: Path) -> None:
    from worker.training.steps import validation_sums

    model = lora_model(tiny_model_dir)
    lm = model.get_base_model()
    plain = StepPlan(packed=True, token_budget=64, checkpointing=False, fused_head=True, note="")
    samples = make_samples([5, 17, 9, 30], seed=2)
    with fused.fused_modules(model), attention.packed_attention(lm):
        expected = validation_sums(lm, samples, plain, 0, 2, torch.device("cpu"))
        got = validation_sums(
            lm, samples, dataclasses.replace(plain, graphs=True), 0, 2, torch.device("cpu")
        )
    assert got[1] == expected[1]  # the answer tokens, not the label slots
    assert got[0] == pytest.approx(expected[0], rel=1e-6)


def test_the_switch_and_the_automatic_choice(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = lora_model(tiny_model_dir).get_base_model()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv(graphs.MODE_ENV, raising=False)
    assert graphs.setting() == "auto"
    common: dict[str, Any] = {
        "packed": True,
        "checkpointing": False,
        "fused_head": True,
        "autocast": None,
    }
    assert graphs.decide(lm, cpu, **common) == (False, "not on a CUDA GPU")
    # The device is only looked at, never used. Small layers replay graphs on CUDA.
    chosen, why = graphs.decide(lm, cuda, **common)
    assert chosen and "launch-bound" in why
    for change, reason in [
        ({"packed": False}, "not packed"),
        ({"checkpointing": True}, "checkpointing"),
        ({"fused_head": False}, "hidden states"),
        ({"autocast": torch.bfloat16}, "float32 masters"),
        ({"method": "qlora"}, "plain LoRA"),
        ({"dora": True}, "plain LoRA"),
    ]:
        chosen, why = graphs.decide(lm, cuda, **{**common, **change})
        assert not chosen and reason in why, change
    chosen, why = graphs.decide(lm, cuda, **common, run_passes=99)
    assert not chosen and "too short to repay" in why
    assert graphs.decide(lm, cuda, **common, run_passes=100)[0]
    # Llama-3-8B's layers (218M weights) keep a GPU busy without them.
    big = type(lm.config)(hidden_size=4096, intermediate_size=14336, num_key_value_heads=8)
    monkeypatch.setattr(lm, "config", big)
    chosen, why = graphs.decide(lm, cuda, **common)
    assert not chosen and "keep the GPU busy" in why
    # Passes of more work than MAX_PASS_WORK keep the GPU busy: 2,751 tokens of an 8B layer;
    # at Llama-3.2-1B's layers 9,866 (its chat-short passes of ~7.8k tokens are recorded, its
    # lognormal ones of ~14.6k are not).
    assert graphs.row_limit(big) == 2750
    one_b = type(lm.config)(
        hidden_size=2048, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=8
    )
    assert graphs.row_limit(one_b) == 9865
    monkeypatch.setenv(graphs.MODE_ENV, "on")
    assert graphs.row_limit(big) is None  # every pass
    assert graphs.decide(lm, cuda, **common)[0]
    assert graphs.decide(lm, cuda, **common, method="qlora")[0]
    assert not graphs.decide(lm, cpu, **common)[0]
    monkeypatch.setenv(graphs.MODE_ENV, "off")
    assert graphs.decide(lm, cuda, **common) == (False, "TUNELAB_CUDA_GRAPHS=off")
    monkeypatch.setenv(graphs.MODE_ENV, "nonsense")
    assert graphs.setting() == "auto"


def test_the_estimate_mirrors_the_automatic_rule() -> None:
    from worker.spec import estimate

    assert estimate._GRAPH_PASS_WORK == graphs.MAX_PASS_WORK
    assert estimate._GRAPH_LAYER_WEIGHTS == graphs.SMALL_LAYER_WEIGHTS
    assert estimate._GRAPH_MIN_PASSES == graphs.MIN_RUN_PASSES


def test_a_cpu_run_plans_no_graphs(tiny_model_dir: Path) -> None:
    lm = lora_model(tiny_model_dir).get_base_model()
    plan = plan_steps(lm, make_samples([5, 9]), TrainConfig(base_model="t", max_steps=1))
    assert not plan.graphs and plan.graphs_note == "not on a CUDA GPU"
    assert all(r.label_weights is None for r in micro_batches([make_samples([5])], plan, 0))


# --- On a CUDA GPU (skipped without one) ---------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_a_small_lora_run_replays_graphs_on_the_gpu_and_trains_as_a_plain_one(
    dropout: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.worker.test_training_speed import Recorder
    from worker.training import trainer

    config = TrainConfig(
        base_model="random small llama",
        max_steps=12,
        batch_size=8,
        gradient_accumulation_steps=2,
        learning_rate=2e-3,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=dropout,
        max_seq_length=512,
        micro_batch_tokens=1024,  # several passes a step, of shapes that come back
    )
    samples = pattern_samples(192)
    runs = {}
    # "on": auto leaves runs this short plain (see decide).
    for mode in ("off", "on"):
        monkeypatch.setenv(graphs.MODE_ENV, mode)
        recorder = Recorder()
        trainer.train_model(cuda_llama(), samples, config, pad_id=0, callbacks=recorder)
        runs[mode] = recorder
    runs["auto"] = runs["on"]
    started = [d for m, d in runs["auto"].events if m == "Training started"]
    assert started and started[0]["cuda_graphs"] is True
    off = [m for m, _ in runs["auto"].events if m.startswith("CUDA graphs are off")]
    assert not off, off[0]
    summary = [d for m, d in runs["auto"].events if m.startswith("CUDA graphs:")]
    assert summary and summary[0]["graphs_recorded"] >= 1
    assert summary[0]["passes_replayed"] >= 1
    plain, fast = runs["off"].losses, runs["auto"].losses
    assert all(torch.isfinite(torch.tensor(fast)))
    assert fast[-1] < fast[0]
    if dropout == 0.0:  # the same masks are not drawn with and without graphs
        for a, b in zip(plain, fast, strict=True):
            assert b == pytest.approx(a, rel=2e-2)  # bf16 rounding over other shapes


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_pass_that_cannot_be_recorded_turns_graphs_off_and_the_step_goes_on() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        cuda_llama(),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]),
    )
    lm = model.get_base_model()
    plan = StepPlan(packed=True, token_budget=512, checkpointing=False, fused_head=True, note="")
    plan = dataclasses.replace(plan, graphs=True)
    events: list[tuple[str, str]] = []

    def waits_for_the_gpu(lm: Any, batch: packing.MicroBatch) -> torch.Tensor:
        loss = micro_batch_loss(lm, batch, plan)
        float(loss)  # a host sync: not allowed while recording
        return loss

    recorded = graphs.PassGraphs(waits_for_the_gpu, lambda lvl, msg, _d: events.append((lvl, msg)))
    device = torch.device("cuda")
    rows = micro_batches([pattern_samples(4)], plan, pad_id=0)
    with attention.packed_attention(lm):
        first = recorded.run(lm, rows[0], 100, device)
        again = recorded.run(lm, rows[0], 100, device)
    assert recorded.off is not None and "recording a pass failed" in recorded.off
    assert events and events[0][0] == "warning"
    assert float(first) == pytest.approx(float(again), rel=1e-3)
    assert recorded.replayed == 0 and recorded.eager == 2
    # Random numbers still come after the failed recording (dropout, a new model's weights).
    assert torch.isfinite(torch.nn.functional.dropout(torch.ones(8, device=device), 0.5)).all()
    torch.randn(4, device=device)


def _graphed_cuda_run() -> tuple[Any, StepPlan, graphs.PassGraphs]:
    """A small LoRA model on the GPU, a graphed plan (a run bound of 512) and its graphs."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        cuda_llama(),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"),
    )
    plan = StepPlan(packed=True, token_budget=4096, checkpointing=False, fused_head=True, note="")
    plan = dataclasses.replace(plan, graphs=True, graph_bound=512)
    recorded = graphs.PassGraphs(lambda lm, b: micro_batch_loss(lm, b, plan), lambda *_: None)
    return model, plan, recorded


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_new_shape_once_warm_is_recorded_then_replayed_and_gives_a_plain_pass() -> None:
    """After the run's first pass, a pass of a new shape is recorded first and replayed at
    once (no plain pass before it): its loss and the gradients it adds are a plain pass's."""
    model, plan, recorded = _graphed_cuda_run()
    lm, device = model.get_base_model(), torch.device("cuda")
    first = micro_batches([pattern_samples(6)], plan, pad_id=0)[0]
    second = micro_batches([pattern_samples(9)], plan, pad_id=0)[0]
    assert first.shape_key() != second.shape_key()
    assert first.max_length == second.max_length == 512  # the run's bound, not the row's
    params = [p for p in lm.parameters() if p.requires_grad]
    with fused.fused_modules(model), attention.packed_attention(lm):
        recorded.run(lm, first, 100, device)
        for p in params:
            p.grad.zero_()
        loss = float(recorded.run(lm, second, 50, device))
        replayed = [p.grad.clone() for p in params]
        again = float(recorded.run(lm, second, 50, device))  # now a replay of its graph
        for p in params:
            p.grad.zero_()
        expected = micro_batch_loss(lm, second.to(device), plan)
        (expected / 50).backward()
    assert (recorded.recorded, recorded.replayed, recorded.eager) == (2, 2, 1)
    assert loss == pytest.approx(float(expected), rel=1e-3)
    assert again == pytest.approx(loss, rel=1e-5)
    for got, want in zip(replayed, [p.grad for p in params], strict=True):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_pass_replayed_in_a_larger_recorded_graph_gives_a_plain_pass() -> None:
    """A pass of a shape not recorded, widened into a larger recorded graph (``stand_in``):
    no recording, and its loss and the gradients it adds are a plain pass's."""
    model, plan, recorded = _graphed_cuda_run()
    lm, device = model.get_base_model(), torch.device("cuda")
    large = micro_batches([pattern_samples(9)], plan, pad_id=0)[0]
    small = micro_batches([pattern_samples(8)], plan, pad_id=0)[0]
    assert small.shape_key() != large.shape_key()
    assert graphs.stand_in([large.shape_key()], small.shape_key(), 0.0, 0.5, room=True)
    params = [p for p in lm.parameters() if p.requires_grad]
    with fused.fused_modules(model), attention.packed_attention(lm):
        recorded.run(lm, large, 100, device)  # the run's first pass: plain, then recorded
        for p in params:
            p.grad.zero_()
        loss = float(recorded.run(lm, small, 50, device))
        replayed = [p.grad.clone() for p in params]
        for p in params:
            p.grad.zero_()
        expected = micro_batch_loss(lm, small.to(device), plan)
        (expected / 50).backward()
    assert (recorded.recorded, recorded.replayed, recorded.widened) == (1, 1, 1)
    assert list(recorded.graphs) == [large.shape_key()]
    assert loss == pytest.approx(float(expected), rel=1e-3)
    for got, want in zip(replayed, [p.grad for p in params], strict=True):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=1e-5)


def test_once_graphs_are_off_a_run_packs_plain_rows_again(tiny_model_dir: Path) -> None:
    """After a failed recording (graphs off for the run), the next step packs plain rows
    (no filler), drops gradients between steps again, and trains as a plain run would."""
    from worker.training.budget import StepFitter

    model = lora_model(tiny_model_dir)
    lm = model.get_base_model()
    plain = StepPlan(packed=True, token_budget=64, checkpointing=False, fused_head=True, note="")
    fitter = StepFitter(dataclasses.replace(plain, graphs=True), on_event=lambda *_: None)
    assert fitter.recorded is not None and fitter.graphed
    group = [make_samples([5, 17, 9, 30])]
    assert all(r.label_weights is not None for r in fitter.passes(group, 0))
    fitter.recorded.off = "recording a pass failed (test)"
    assert not fitter.graphed
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    cpu = torch.device("cpu")
    with fused.fused_modules(model), attention.packed_attention(lm):
        loss, tokens = fitter.step(lm, group, 0, 40, optimizer, cpu)
        expected, _ = StepFitter(plain, on_event=lambda *_: None).step(
            lm, group, 0, 40, optimizer, cpu
        )
    assert not fitter.plan.graphs
    assert all(r.label_weights is None for r in fitter.passes(group, 0))
    assert tokens == 61
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
