"""Memory and time estimates before queueing, against peaks measured on an H200, and the
estimates service the form and the API use."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from app.core.errors import InvalidInput
from app.services.jobs.estimates import (
    DatasetLengths,
    estimate_for,
    human_duration,
    lengths_from_stats,
)
from worker.spec.catalog import CATALOG, Architecture
from worker.spec.config import TrainConfig
from worker.spec.estimate import GPUS, default_token_budget, estimate, gpu_spec, known_gpu

H200 = GPUS["H200"]

# tests/worker/test_gpu.py::test_memory_estimate_is_within_20_percent_of_the_measured_peak,
# random-initialised models of each shape, three optimiser steps on random tokens of 75-125% of
# a mean length, half of each an answer. (case, shape, settings, batch size, accumulation,
# max_seq_length, samples, mean tokens, 95th-percentile tokens, answer share, measured peak GiB
# (max_memory_allocated), tokens per second over steps 2-3.) First measured on one H200, then
# all again on 2026-12-07 on one H100 (torch 2.11, transformers 5.17, peft 0.21, bitsandbytes
# 0.50.2) once the dropout and loss kernels came on by default (no dropout masks kept), at the
# budgets the engine chose there (pinned here; the H200's were the same: these saturation caps
# are below what either card holds). The estimate's rate is the same on either card (the same
# bf16 peak). Two timed steps are a short sample: repeated runs differed by up to 45%.
MEASURED: list[tuple[Any, ...]] = [
    ("qwen0.5b-lora-10k", "qwen2.5-0.5b-instruct", {"micro_batch_tokens": 32768}, 8, 4, 1024, 96, 313.5, 384, 0.5008, 8.61, 65475.2),
    ("qwen0.5b-lora-65k", "qwen2.5-0.5b-instruct", {"micro_batch_tokens": 32768}, 16, 4, 2048, 192, 1013.1, 1252, 0.5003, 24.58, 103656.1),
    ("llama1b-lora-4k-nodrop", "llama-3.2-1b-instruct", {"lora_dropout": 0.0, "micro_batch_tokens": 29378}, 8, 1, 1024, 24, 491.9, 607, 0.5004, 6.52, 37657.6),
    ("llama1b-lora-48k", "llama-3.2-1b-instruct", {"micro_batch_tokens": 29378}, 8, 4, 2048, 96, 1523.9, 1863, 0.5002, 29.82, 68687.8),
    ("qwen3-0.6b-lora-22k", "qwen3-0.6b", {"micro_batch_tokens": 32768}, 16, 2, 1024, 96, 717.9, 854, 0.5004, 25.76, 70826.2),
    ("llama8b-lora-8k", "llama-3.1-8b-instruct", {"micro_batch_tokens": 8192}, 8, 2, 1024, 48, 496.9, 607, 0.5005, 42.67, 14561.1),
    ("llama8b-lora-long", "llama-3.1-8b-instruct", {"micro_batch_tokens": 8192}, 4, 1, 4096, 12, 2857.7, 3634, 0.5001, 38.49, 12641.4),
    ("qwen0.5b-dora", "qwen2.5-0.5b-instruct", {"use_dora": True}, 8, 2, 1024, 48, 496.9, 607, 0.5005, 35.56, 15381.3),
    ("qwen0.5b-ia3", "qwen2.5-0.5b-instruct", {"method": "ia3"}, 8, 2, 1024, 48, 496.9, 607, 0.5005, 10.13, 99105.7),
    ("qwen0.5b-prefix", "qwen2.5-0.5b-instruct", {"method": "prefix_tuning"}, 8, 1, 1024, 24, 491.9, 607, 0.5004, 7.06, 21008.4),
    ("qwen0.5b-ptuning", "qwen2.5-0.5b-instruct", {"method": "p_tuning"}, 8, 1, 1024, 24, 491.9, 607, 0.5004, 8.06, 24404.6),
    ("qwen0.5b-full", "qwen2.5-0.5b-instruct", {"method": "full"}, 8, 2, 1024, 48, 496.9, 607, 0.5005, 17.05, 73254.2),
]  # fmt: skip


def measured_case(case: tuple[Any, ...]) -> tuple[Any, float, float]:
    _, shape, settings, batch, accum, max_seq, count, mean, p95, share, gib, rate = case
    config = TrainConfig(
        base_model=f"random {shape}",
        max_steps=3,
        batch_size=batch,
        gradient_accumulation_steps=accum,
        max_seq_length=max_seq,
        learning_rate=1e-4,
        **settings,
    )
    result = estimate(
        config,
        CATALOG[shape].arch,
        gpu=GPUS["H100"],  # where the table above was measured
        dataset_records=count,
        mean_tokens=mean,
        p95_tokens=p95,
        answer_share=share,
    )
    return result, gib * 2**30, rate


@pytest.mark.parametrize("case", MEASURED, ids=[c[0] for c in MEASURED])
def test_memory_estimates_are_within_20_percent_of_the_peaks_measured_on_the_gpu(
    case: tuple[Any, ...],
) -> None:
    result, measured, _ = measured_case(case)
    assert 0.8 <= result.peak_memory_bytes / measured <= 1.2


@pytest.mark.parametrize("case", MEASURED, ids=[c[0] for c in MEASURED])
def test_throughput_estimates_are_within_20_percent_of_the_measured_rates(
    case: tuple[Any, ...],
) -> None:
    # Refitted on 2026-12-07 (worker.spec.estimate._MFU_POINTS): 0.89-1.08 of the table's rates.
    result, _, rate = measured_case(case)
    assert 0.8 <= result.breakdown["tokens_per_second"] / rate <= 1.2


# bench/train_throughput.py's own runs, 100 steps of 8 x 4 samples of its two data shapes
# (log-normal lengths; short chat turns), LoRA r16, on one H100 on 2026-12-07 with the code of
# that night (CUDA graphs replaying its passes): (shape, samples, mean tokens, p95 tokens,
# answer share, peak GiB with graphs, without, tokens per second with graphs). Their steps
# vary: the largest holds 1.47x (log-normal) and 1.52x (chat) the mean step's tokens, and the
# peak comes with it.
BENCH_RUNS: list[tuple[Any, ...]] = [
    ("qwen2.5-0.5b-instruct", 3200, 457.9, 1449, 0.5, 18.93, 16.64, 85483.7),
    ("llama-3.2-1b-instruct", 3200, 243.8, 593, 0.6, 13.79, 13.67, 55844.3),
]  # fmt: skip


@pytest.mark.parametrize("case", BENCH_RUNS, ids=[c[0] for c in BENCH_RUNS])
def test_the_peak_is_judged_at_the_largest_step_of_a_run(case: tuple[Any, ...]) -> None:
    shape, samples, mean, p95, share, graphed_gib, plain_gib, rate = case
    settings = {"batch_size": 8, "gradient_accumulation_steps": 4, "lora_dropout": 0.05}
    result = estimate(
        config(max_seq_length=2048, lora_r=16, lora_alpha=32, **settings),
        CATALOG[shape].arch,
        gpu=GPUS["H100"],
        dataset_records=samples,
        mean_tokens=mean,
        p95_tokens=p95,
        answer_share=share,
    )
    # Judged at the mean step (0.78x and 0.82x before), the estimate missed the peak.
    assert result.breakdown["peak_row_tokens"] > 1.3 * result.breakdown["row_tokens"]
    for measured in (graphed_gib, plain_gib):
        assert 0.8 <= result.peak_memory_bytes / 2**30 / measured <= 1.2
    assert 0.8 <= result.breakdown["tokens_per_second"] / rate <= 1.2


def test_the_largest_step_is_bounded_by_the_budget_and_the_longest_samples() -> None:
    # An 8B pass fills its budget whatever the step: the peak pass is the budget.
    big = estimate(
        config(micro_batch_tokens=8192),
        CATALOG["llama-3.1-8b-instruct"].arch,
        gpu=GPUS["H100"],
        dataset_records=3200,
        mean_tokens=458,
        p95_tokens=1449,
    )
    assert big.breakdown["peak_row_tokens"] == big.breakdown["row_tokens"] == 8192
    # Samples of one length: every step holds the same tokens.
    same = estimate(
        config(),
        CATALOG["qwen2.5-0.5b-instruct"].arch,
        gpu=GPUS["H100"],
        dataset_records=3200,
        mean_tokens=300,
        p95_tokens=300,
    )
    assert same.breakdown["peak_row_tokens"] == same.breakdown["row_tokens"]


def config(**settings: Any) -> TrainConfig:
    return TrainConfig(**{"base_model": "m", "max_steps": 100, **settings})


def peak(shape: str, *, gpu: Any = H200, mean: float = 500, **settings: Any) -> Any:
    return estimate(
        config(**settings), CATALOG[shape].arch, gpu=gpu, dataset_records=10_000, mean_tokens=mean
    )


def test_the_breakdown_adds_up_to_the_peak() -> None:
    result = peak("qwen2.5-7b-instruct")
    assert sum(result.breakdown["memory_bytes"].values()) == result.peak_memory_bytes
    assert result.breakdown["reserved_bytes"] > result.peak_memory_bytes
    assert result.breakdown["approximate"] is True


def test_auto_fields_are_resolved_as_the_engine_would() -> None:
    result = estimate(
        TrainConfig(base_model="qwen3-0.6b"),
        CATALOG["qwen3-0.6b"].arch,
        gpu=H200,
        dataset_records=5000,
        mean_tokens=300,
        p95_tokens=600,
    )
    shown = result.breakdown["config"]
    assert "auto" not in shown.values()
    assert shown["max_seq_length"] == 768 and shown["learning_rate"] == 2e-4
    # 5,000 samples, 2 passes at 64 samples per step.
    assert result.breakdown["steps"] == 2 * 79


def test_more_tokens_per_pass_need_more_memory() -> None:
    budgets = [peak("llama-3.2-1b-instruct", micro_batch_tokens=n) for n in (2048, 8192, 32768)]
    peaks = [r.peak_memory_bytes for r in budgets]
    assert peaks == sorted(peaks) and peaks[2] > 2 * peaks[0]


def test_the_packing_budget_is_the_engines() -> None:
    from worker.training.packing import default_token_budget as engines

    for name in ("qwen2.5-0.5b-instruct", "llama-3.2-1b-instruct", "llama-3.1-8b-instruct"):
        arch = CATALOG[name].arch
        hf = SimpleNamespace(
            hidden_size=arch.hidden_size,
            intermediate_size=arch.intermediate_size,
            num_attention_heads=arch.heads,
            num_key_value_heads=arch.kv_heads,
            head_dim=arch.dim_per_head,
        )
        assert default_token_budget(arch) == engines(hf)


def test_qlora_needs_much_less_memory_than_lora_on_an_8b_model_for_short_rows() -> None:
    lora = peak("llama-3.1-8b-instruct", method="lora", micro_batch_tokens=512, mean=200)
    qlora = peak("llama-3.1-8b-instruct", method="qlora", micro_batch_tokens=512, mean=200)
    weights = qlora.breakdown["memory_bytes"]["weights"]
    assert weights < 0.4 * lora.breakdown["memory_bytes"]["weights"]
    assert qlora.peak_memory_bytes < 0.7 * lora.peak_memory_bytes
    # QLoRA runs the same fused layers as LoRA, so with long rows both keep the same
    # activations: QLoRA saves what its 4-bit weights save, less a layer dequantised in flight.
    long_lora = peak("llama-3.1-8b-instruct", method="lora", micro_batch_tokens=8192)
    long_qlora = peak("llama-3.1-8b-instruct", method="qlora", micro_batch_tokens=8192)
    lora_parts, qlora_parts = (e.breakdown["memory_bytes"] for e in (long_lora, long_qlora))
    assert qlora_parts["activations"] == lora_parts["activations"]
    saved = lora_parts["weights"] - qlora_parts["weights"]
    difference = long_lora.peak_memory_bytes - long_qlora.peak_memory_bytes
    assert 0.9 * saved < difference <= saved


def test_full_fine_tuning_keeps_16_bytes_per_parameter() -> None:
    result = peak("smollm2-360m-instruct", method="full")
    params = CATALOG["smollm2-360m-instruct"].params
    kept = result.breakdown["memory_bytes"]
    assert kept["trainable"] + kept["optimizer"] == 12 * params
    assert result.peak_memory_bytes > 16 * params


def test_sharded_full_fine_tuning_never_holds_the_whole_float32_model_on_a_gpu() -> None:
    """The weights come from host memory a layer at a time (ranks.bring_to_device), so the
    loading peak is a share plus one layer, not the whole float32 model per GPU. What is
    left is training's own: the float32 shares of weights, gradients and AdamW's moments, and
    the two layers gathered in bf16 (no autocast copy of every weight): about 2 bytes a
    parameter on each of eight cards, against 18 on one."""
    arch = CATALOG["qwen2.5-14b-instruct"].arch

    def full(gpus: int) -> Any:
        return estimate(
            config(method="full", micro_batch_tokens=512),
            arch,
            gpu=H200,
            dataset_records=10_000,
            mean_tokens=500,
            gpus=gpus,
        )

    one, eight = full(1), full(8)
    assert one.peak_memory_bytes > 16 * arch.params()
    assert eight.peak_memory_bytes < one.peak_memory_bytes / 3
    kept = eight.breakdown["memory_bytes"]
    assert kept["trainable"] + kept["optimizer"] == pytest.approx(12 * arch.params() / 8, rel=0.01)
    # Not the whole model in bf16 on every GPU: each layer is gathered in bf16 as it runs.
    assert "autocast_weight_copies" not in kept
    assert "autocast_weight_copies" in one.breakdown["memory_bytes"]
    assert kept["gathered_layers"] == 2 * 2 * arch.layer_weights()


def test_dora_costs_more_memory_and_time_than_lora() -> None:
    lora = peak("qwen2.5-1.5b-instruct")
    dora = peak("qwen2.5-1.5b-instruct", use_dora=True)
    assert dora.peak_memory_bytes > 1.3 * lora.peak_memory_bytes
    assert dora.seconds > 2 * lora.breakdown["seconds"]["training"]


def test_prompt_methods_run_on_padded_batches() -> None:
    result = peak("qwen2.5-0.5b-instruct", method="p_tuning", num_virtual_tokens=30)
    assert result.breakdown["packed"] is False
    assert "attention_mask" in result.breakdown["memory_bytes"]


def test_models_with_sliding_windows_are_padded_and_softcapped_logits_cost_memory() -> None:
    gemma = peak("gemma-2-2b-it")
    assert gemma.breakdown["packed"] is False
    assert gemma.breakdown["memory_bytes"]["loss_head"] > 2 * 2**30


def test_a_run_too_big_for_the_gpu_says_it_does_not_fit() -> None:
    small = GPUS["RTX 4090"]
    result = peak("qwen2.5-14b-instruct", gpu=small, max_seq_length=8192, mean=6000)
    assert result.breakdown["fits"] is False
    # The engine shrinks its token budget to the free memory, and so does the estimate.
    shrunk = peak("qwen2.5-0.5b-instruct", gpu=small)
    assert shrunk.breakdown["fits"] is True
    assert shrunk.breakdown["row_tokens"] < peak("qwen2.5-0.5b-instruct").breakdown["row_tokens"]


def test_checkpointing_is_predicted_when_one_long_sample_would_not_fit() -> None:
    result = peak(
        "llama-3.1-8b-instruct",
        gpu=GPUS["RTX 4090"],
        method="qlora",
        max_seq_length=32768,
        mean=30000,
    )
    assert result.breakdown["gradient_checkpointing"] is True


def test_a_faster_gpu_gives_a_shorter_time() -> None:
    h100 = peak("llama-3.1-8b-instruct", gpu=GPUS["H100"]).breakdown["seconds"]["training"]
    a100 = peak("llama-3.1-8b-instruct", gpu=GPUS["A100-80GB"]).breakdown["seconds"]["training"]
    assert a100 == pytest.approx(h100 * 989.4 / 312.0, rel=0.01)


def test_time_includes_loading_and_grows_with_the_steps() -> None:
    short = peak("llama-3.2-1b-instruct", max_steps=100)
    long = peak("llama-3.2-1b-instruct", max_steps=1000)
    assert short.breakdown["seconds"]["loading"] > 15
    assert long.breakdown["seconds"]["training"] == pytest.approx(
        10 * short.breakdown["seconds"]["training"], rel=0.01
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H200", "H200"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100-PCIE-40GB", "A100"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("rtx 3090", "RTX 3090"),
        ("NVIDIA L40S", "L40S"),
    ],
)
def test_gpu_names_as_torch_reports_them_are_recognised(name: str, expected: str) -> None:
    assert known_gpu(name) is GPUS[expected]


def test_an_unknown_gpu_is_taken_for_an_h200() -> None:
    assert known_gpu("Some Accelerator 9000") is None
    assert gpu_spec("Some Accelerator 9000") is H200 and gpu_spec(None) is H200


def test_an_architecture_from_any_config_json_can_be_estimated() -> None:
    arch = Architecture.from_hf_config(
        {
            "model_type": "llama",
            "hidden_size": 512,
            "intermediate_size": 1024,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "vocab_size": 32000,
        }
    )
    result = estimate(config(), arch, gpu=H200, dataset_records=100, mean_tokens=200)
    assert 0 < result.peak_memory_bytes < 2 * 2**30


# --- The estimates service -------------------------------------------------------------------


def test_the_service_estimates_a_catalog_model_and_says_what_it_assumed() -> None:
    dataset = DatasetLengths(2000, 350.0, 800.0, 0.4, "measured in tokens of the qwen3 tokenizer")
    result = estimate_for(
        TrainConfig(base_model="qwen2.5-7b-instruct"), dataset=dataset, gpu_name="NVIDIA H100"
    )
    assert result["available"] is True
    assert result["model"]["title"] == "Qwen2.5 7B Instruct"
    assert result["gpu"]["name"] == "NVIDIA H100 80GB"
    assert 15 < result["peak_memory_gib"] < 80 and result["fits"] is True
    assert result["duration"].startswith("about ")
    assert result["chosen"]["max_seq_length"] == 896
    assert any("qwen3 tokenizer" in a for a in result["assumptions"])
    assert not any("assumed" in a for a in result["assumptions"] if a.startswith("GPU"))


def test_the_service_assumes_a_dataset_and_a_gpu_when_none_is_given() -> None:
    result = estimate_for(
        TrainConfig(base_model="smollm2-135m-instruct"), dataset=None, gpu_name=None
    )
    assert result["dataset"]["records"] == 1000
    assert any(a.startswith("No dataset") for a in result["assumptions"])
    assert any(a.startswith("GPU: NVIDIA H200") for a in result["assumptions"])


def test_a_hub_id_of_a_catalog_model_is_estimated_and_others_are_not() -> None:
    known = estimate_for(TrainConfig(base_model="Qwen/Qwen3-8B"), dataset=None, gpu_name="H200")
    assert known["available"] is True and known["model"]["params"] == 8_190_735_360
    unknown = estimate_for(
        TrainConfig(base_model="someone/some-model"), dataset=None, gpu_name=None
    )
    assert unknown["available"] is False and "someone/some-model" in unknown["reason"]


def test_a_config_that_does_not_fit_the_dataset_names_the_field() -> None:
    dataset = DatasetLengths(50, 300.0, None, 0.5, "test")
    with pytest.raises(InvalidInput) as caught:
        estimate_for(
            TrainConfig(base_model="qwen3-0.6b", batch_size=8, gradient_accumulation_steps=16),
            dataset=dataset,
            gpu_name=None,
        )
    assert [e.field for e in caught.value.errors] == ["config.gradient_accumulation_steps"]


def test_without_a_dataset_no_batch_size_is_refused() -> None:
    config = TrainConfig(base_model="qwen3-0.6b", batch_size=64, gradient_accumulation_steps=64)
    assert estimate_for(config, dataset=None, gpu_name=None)["available"] is True


def test_a_too_long_max_seq_length_for_the_model_names_the_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        estimate_for(
            TrainConfig(base_model="Qwen/Qwen2.5-0.5B-Instruct", max_seq_length=65536),
            dataset=None,
            gpu_name=None,
        )
    assert [e.field for e in caught.value.errors] == ["config.max_seq_length"]


def test_token_statistics_give_the_lengths_directly() -> None:
    stats = {
        "records": 500,
        "unit": "tokens",
        "tokenizer": "qwen3",
        "total": {"mean": 420.5, "p90": 700, "p99": 1600},
        "answer": {"mean": 210.25},
    }
    lengths = lengths_from_stats(stats, records=400, tokenizer="qwen3")
    assert (lengths.records, lengths.mean_tokens, lengths.answer_share) == (400, 420.5, 0.5)
    assert lengths.p95_tokens == pytest.approx(700 + 900 * 5 / 9)


def test_character_statistics_are_converted_counting_chinese_denser() -> None:
    def stats(language: str) -> dict[str, Any]:
        return {
            "records": 100,
            "unit": "characters",
            "mean_turns": 2,
            "languages": {language: 100},
            "total": {"mean": 560.0, "p90": 800, "p99": 1000},
            "answer": {"mean": 280.0},
        }

    chinese = lengths_from_stats(stats("zh"), records=None, tokenizer=None)
    english = lengths_from_stats(stats("latin"), records=None, tokenizer=None)
    assert chinese.mean_tokens == pytest.approx(560 / 1.4 + 12)
    assert english.mean_tokens == pytest.approx(560 / 4.0 + 12)
    assert "characters" in chinese.source and chinese.records == 100


def test_missing_statistics_fall_back_to_defaults() -> None:
    lengths = lengths_from_stats({}, records=10, tokenizer=None)
    assert lengths.records == 10 and lengths.mean_tokens > 0 and lengths.p95_tokens is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(42, "about 42 s"), (1500, "about 25 min"), (3 * 3600 + 1800, "about 3.5 h")],
)
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_the_estimates_route_returns_the_services_answer() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from app.api import deps
    from app.api.routes import estimates

    app = FastAPI()
    app.include_router(estimates.router, prefix="/api/v1")
    app.dependency_overrides[deps.READER] = lambda: SimpleNamespace(user=None)
    app.dependency_overrides[deps.get_session] = lambda: None
    client = TestClient(app)
    body = {"base_model": "llama-3.2-1b-instruct", "method": "lora", "gpu": "RTX 4090"}
    answer = client.post("/api/v1/estimates", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["gpu"]["name"] == "NVIDIA GeForce RTX 4090"
    refused = client.post("/api/v1/estimates", json={**body, "method": "full", "lora_alpha": 8})
    assert refused.status_code == 422
