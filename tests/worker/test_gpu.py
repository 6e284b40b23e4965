"""The engine on a CUDA GPU (skipped without one). Runs on a bare GPU host with only the
engine's own dependencies: `pytest --noconftest -m gpu tests/worker/test_gpu.py`."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.factories_models import build_tiny_model
from worker.spec.formatting import IGNORE_INDEX, Sample
from worker.training import TrainConfig, attention, fused, packing, train
from worker.training.loss import linear_cross_entropy_sum

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


class Recorder:
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.events: list[tuple[str, str, dict | None]] = []

    def on_event(self, level: str, message: str, data: dict | None = None) -> None:
        self.events.append((level, message, data))

    def on_step(self, metrics: object) -> None:
        self.losses.append(metrics.loss)  # type: ignore[attr-defined]

    def should_stop(self) -> bool:
        return False


def test_lora_trains_in_bf16_on_the_gpu(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "model")
    records = [
        {
            "messages": [
                {"role": "user", "content": f"Repeat {i % 4}"},
                {"role": "assistant", "content": f"{i % 4} {i % 4} {i % 4}"},
            ]
        }
        for i in range(32)
    ]
    recorder = Recorder()
    config = TrainConfig(
        base_model=str(model), max_steps=30, learning_rate=5e-3, batch_size=8, max_seq_length=64
    )
    result = train(
        config,
        records=records,
        output_dir=tmp_path / "adapter",
        model_cache_dir=tmp_path / "cache",
        callbacks=recorder,
    )
    loaded = next(
        data for _, message, data in recorder.events if message.startswith("Model loaded")
    )
    assert loaded is not None and loaded["device"].startswith("cuda")
    assert loaded["dtype"] == "bfloat16"
    started = next(data for _, message, data in recorder.events if message == "Training started")
    assert started is not None and started["packing"] is True
    assert started["gradient_checkpointing"] is False and started["fused_layers"] > 0
    assert sum(recorder.losses[-5:]) < sum(recorder.losses[:5])
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.float() - expected.float()).norm() / expected.float().norm())


def test_varlen_flash_attention_matches_attention_run_per_sample() -> None:
    torch.manual_seed(0)
    lengths = [1, 37, 300, 5, 128, 77]
    total, heads, kv_heads, dim = sum(lengths), 8, 2, 64
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    cu = cu.cuda()

    def inputs() -> list[torch.Tensor]:
        return [
            torch.randn(total, h, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            for h in (heads, kv_heads, kv_heads)
        ]

    q, k, v = inputs()
    out = attention._VarlenFlash.apply(q, k, v, cu, max(lengths), 0.0, dim**-0.5)
    grad = torch.randn_like(out)
    out.backward(grad)
    rq, rk, rv = (t.detach().float().requires_grad_(True) for t in (q, k, v))
    ref = attention._per_sample_sdpa(rq, rk, rv, cu.cpu(), 0.0, dim**-0.5)
    ref.backward(grad.float())
    assert relative_error(out, ref) < 1e-2
    for got, expected in ((q, rq), (k, rk), (v, rv)):
        assert got.grad is not None and expected.grad is not None
        assert relative_error(got.grad, expected.grad) < 2e-2


def test_packed_bf16_loss_and_gradients_match_padded_batches() -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    with torch.device("cuda"):
        base = LlamaForCausalLM(config).bfloat16()
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        init_lora_weights=False,
    )
    model = get_peft_model(base, lora)
    lm: Any = model.get_base_model()
    rng = random.Random(0)
    samples = []
    for n in (3, 200, 41, 513, 7, 96):
        ids = [rng.randrange(1, 1000) for _ in range(n)]
        samples.append(Sample(ids, [IGNORE_INDEX if i < n // 3 else t for i, t in enumerate(ids)]))

    padded = packing.collate_padded(samples, pad_id=0).to(torch.device("cuda"))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = lm(input_ids=padded.input_ids, attention_mask=padded.attention_mask).logits
    picked = logits.flatten(0, 1).index_select(0, padded.label_positions).float()
    reference = F.cross_entropy(picked, padded.label_targets, reduction="sum")
    reference.backward()
    reference_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    row = packing.collate_packed(samples).to(torch.device("cuda"))
    with fused.fused_modules(model), attention.packed_attention(lm):
        hidden = lm.get_decoder()(
            input_ids=row.input_ids,
            position_ids=row.position_ids,
            cu_seq_lens_q=row.cu_seq_lens,
            cu_seq_lens_k=row.cu_seq_lens,
            max_length_q=row.max_length,
            max_length_k=row.max_length,
        ).last_hidden_state
        picked_hidden = hidden.flatten(0, 1).index_select(0, row.label_positions)
        total = linear_cross_entropy_sum(
            picked_hidden, lm.get_output_embeddings().weight, row.label_targets
        )
        total.backward()
    assert abs(float(total) - float(reference)) / float(reference) < 5e-3
    for name, expected in reference_grads.items():
        got = dict(model.named_parameters())[name].grad
        assert got is not None and relative_error(got, expected) < 5e-2, name


# --- Every training method on a Llama-shaped model ------------------------------------------


def build_llama(dest: Path, **shape: Any) -> Path:
    """A random-initialised Llama of ``shape`` with the Qwen tokenizer, saved in bf16."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.factories_models import qwen_tokenizer_dir

    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).bfloat16()
    model.save_pretrained(str(dest), safe_serialization=True)
    tokenizer.save_pretrained(str(dest))
    del model
    torch.cuda.empty_cache()
    return dest


SMALL_LLAMA = {
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 8,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
}
# Llama-3.2-1B's shape (with the Qwen tokenizer's vocabulary).
LLAMA_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
}

GPU_METHODS: dict[str, dict[str, Any]] = {
    "lora": {"method": "lora"},
    "rslora_dora": {"method": "lora", "use_rslora": True, "use_dora": True},
    "qlora": {"method": "qlora"},
    "qlora_dora": {"method": "qlora", "use_dora": True},
    "prefix_tuning": {"method": "prefix_tuning", "learning_rate": 3e-2, "num_virtual_tokens": 8},
    "p_tuning": {"method": "p_tuning", "learning_rate": 1e-2, "num_virtual_tokens": 8},
    "ia3": {"method": "ia3", "learning_rate": 5e-2},
    "full": {"method": "full", "learning_rate": 1e-4},
}


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llama(tmp_path_factory.mktemp("small-llama"), **SMALL_LLAMA)


def repeat_records(count: int) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Repeat {i % 4}"},
                {"role": "assistant", "content": f"{i % 4} {i % 4} {i % 4}"},
            ]
        }
        for i in range(count)
    ]


@pytest.mark.parametrize("variant", list(GPU_METHODS))
def test_every_method_trains_a_llama_shaped_model_and_its_artifact_generates(
    variant: str, small_llama: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings: dict[str, Any] = {
        "learning_rate": 5e-3,
        "lora_dropout": 0.0,
        "gradient_accumulation_steps": 1,
        "warmup_steps": 0,
        **GPU_METHODS[variant],
    }
    if settings["method"] in ("lora", "qlora"):
        settings.update(lora_r=16, lora_alpha=32)
    recorder = Recorder()
    config = TrainConfig(
        base_model=str(small_llama), max_steps=30, batch_size=8, max_seq_length=64, **settings
    )
    result = train(
        config,
        records=repeat_records(32),
        output_dir=tmp_path / "out",
        model_cache_dir=tmp_path / "cache",
        callbacks=recorder,
    )
    print(f"{variant}: first 3 {recorder.losses[:3]}, last 3 {recorder.losses[-3:]}")
    assert sum(recorder.losses[-5:]) < sum(recorder.losses[:5]) * 0.7
    loaded = next(d for _, m, d in recorder.events if m.startswith("Model loaded"))
    assert loaded is not None and loaded["device"].startswith("cuda")
    started = next(d for _, m, d in recorder.events if m == "Training started")
    assert started is not None
    assert started["packing"] is (config.method not in ("prefix_tuning", "p_tuning"))
    if config.method == "qlora":
        assert loaded["quantization"] == "nf4"

    tokenizer = AutoTokenizer.from_pretrained(str(result.adapter_dir))
    if config.method == "full":
        tuned = AutoModelForCausalLM.from_pretrained(
            str(result.adapter_dir), dtype=torch.bfloat16, device_map={"": "cuda"}
        )
    else:
        base = AutoModelForCausalLM.from_pretrained(
            str(small_llama), dtype=torch.bfloat16, device_map={"": "cuda"}
        )
        tuned = PeftModel.from_pretrained(base, str(result.adapter_dir))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Repeat 1"}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to("cuda")
    with torch.no_grad():
        out = tuned.eval().generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4


def peak_training_memory(model_dir: Path, tmp_path: Path, method: str) -> tuple[int, float]:
    """Peak GPU memory allocated (bytes) over loading and a few steps, and seconds per step."""
    import gc

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    config = TrainConfig(
        base_model=str(model_dir),
        method=method,  # type: ignore[arg-type]
        max_steps=4,
        batch_size=4,
        gradient_accumulation_steps=1,
        warmup_steps=0,
        max_seq_length=128,
        learning_rate=2e-4,
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.0,
    )
    result = train(
        config,
        records=repeat_records(16),
        output_dir=tmp_path / method,
        model_cache_dir=tmp_path / "cache",
    )
    peak = torch.cuda.max_memory_allocated()
    gc.collect()
    torch.cuda.empty_cache()
    return peak, result.train_seconds / result.steps


def test_qlora_peak_memory_is_well_below_lora_on_a_1b_llama(tmp_path: Path) -> None:
    model_dir = build_llama(tmp_path / "llama-1b", **LLAMA_1B)
    lora_peak, lora_step = peak_training_memory(model_dir, tmp_path, "lora")
    qlora_peak, qlora_step = peak_training_memory(model_dir, tmp_path, "qlora")
    print(
        f"1B Llama shape, 4 x 128 tokens: LoRA peak {lora_peak / 2**30:.2f} GiB "
        f"({lora_step * 1000:.0f} ms/step), QLoRA peak {qlora_peak / 2**30:.2f} GiB "
        f"({qlora_step * 1000:.0f} ms/step)"
    )
    assert qlora_peak < 0.6 * lora_peak


# --- Memory and time estimates against measured runs ----------------------------------------

# (name, catalog shape, method settings, batch size, accumulation, mean sample length,
# max_seq_length). Samples are random tokens of 75-125% of the mean length, half answer.
ESTIMATE_CASES: list[tuple[str, str, dict[str, Any], int, int, int, int]] = [
    ("qwen0.5b-lora-10k", "qwen2.5-0.5b-instruct", {}, 8, 4, 320, 1024),
    ("qwen0.5b-lora-65k", "qwen2.5-0.5b-instruct", {}, 16, 4, 1024, 2048),
    ("llama1b-lora-4k-nodrop", "llama-3.2-1b-instruct", {"lora_dropout": 0.0}, 8, 1, 512, 1024),
    ("llama1b-lora-48k", "llama-3.2-1b-instruct", {}, 8, 4, 1500, 2048),
    ("qwen3-0.6b-lora-22k", "qwen3-0.6b", {}, 16, 2, 700, 1024),
    ("llama8b-lora-8k", "llama-3.1-8b-instruct", {}, 8, 2, 512, 1024),
    ("llama8b-lora-long", "llama-3.1-8b-instruct", {}, 4, 1, 3000, 4096),
    ("qwen0.5b-dora", "qwen2.5-0.5b-instruct", {"use_dora": True}, 8, 2, 512, 1024),
    ("qwen0.5b-ia3", "qwen2.5-0.5b-instruct", {"method": "ia3"}, 8, 2, 512, 1024),
    ("qwen0.5b-prefix", "qwen2.5-0.5b-instruct", {"method": "prefix_tuning"}, 8, 1, 512, 1024),
    ("qwen0.5b-ptuning", "qwen2.5-0.5b-instruct", {"method": "p_tuning"}, 8, 1, 512, 1024),
    ("qwen0.5b-full", "qwen2.5-0.5b-instruct", {"method": "full"}, 8, 2, 512, 1024),
]
ESTIMATE_STEPS = 3


class StepMemory:
    """Callbacks keeping each step's peak GPU memory and end time."""

    def __init__(self) -> None:
        self.peaks: list[int] = []
        self.kept: list[int] = []
        self.marks: list[float] = []
        self.started: dict[str, Any] = {}

    def on_event(self, level: str, message: str, data: dict | None = None) -> None:
        if message == "Training started" and data:
            self.started = data

    def on_step(self, metrics: object) -> None:
        import time

        torch.cuda.synchronize()
        self.marks.append(time.perf_counter())
        self.peaks.append(torch.cuda.max_memory_allocated())
        self.kept.append(torch.cuda.memory_allocated())

    def should_stop(self) -> bool:
        return False


def random_samples(count: int, mean_length: int, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        n = rng.randint(int(mean_length * 0.75), int(mean_length * 1.25))
        ids = [rng.randrange(1, 8192) for _ in range(n)]
        samples.append(Sample(ids, [IGNORE_INDEX] * (n // 2) + ids[n // 2 :]))
    return samples


def build_random_model(arch: Any, dtype: torch.dtype) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        arch.model_type,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads,
        head_dim=arch.dim_per_head,
        vocab_size=arch.vocab_size,
        tie_word_embeddings=arch.tied_embeddings,
        max_position_embeddings=32768,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")


@pytest.mark.parametrize("case", ESTIMATE_CASES, ids=[c[0] for c in ESTIMATE_CASES])
def test_memory_estimate_is_within_20_percent_of_the_measured_peak(
    case: tuple[str, str, dict[str, Any], int, int, int, int],
) -> None:
    import gc
    import json
    import os

    from worker.spec.catalog import CATALOG
    from worker.spec.estimate import estimate, gpu_spec
    from worker.training.engine import train_model

    name, shape, settings, batch_size, accumulation, length, max_seq_length = case
    arch = CATALOG[shape].arch
    config = TrainConfig(
        base_model=f"random {shape}",
        max_steps=ESTIMATE_STEPS,
        batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_seq_length=max_seq_length,
        learning_rate=1e-4,
        **settings,
    )
    samples = random_samples(batch_size * accumulation * ESTIMATE_STEPS, length, seed=1)
    full = config.method == "full"
    model = build_random_model(arch, torch.float32 if full else torch.bfloat16)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    clock = StepMemory()
    train_model(model, samples, config, pad_id=0, callbacks=clock)
    measured = max(clock.peaks)
    reserved = torch.cuda.max_memory_reserved()
    del model
    gc.collect()
    torch.cuda.empty_cache()

    lengths = sorted(len(s.input_ids) for s in samples)
    answers = sum(len(s.input_ids) - len(s.input_ids) // 2 for s in samples)
    guess = estimate(
        config,
        arch,
        gpu=gpu_spec(torch.cuda.get_device_name()),
        dataset_records=len(samples),
        mean_tokens=sum(lengths) / len(lengths),
        p95_tokens=lengths[int(0.95 * (len(lengths) - 1))],
        answer_share=answers / sum(lengths),
    )
    step_tokens = batch_size * accumulation * sum(lengths) / len(lengths)
    seconds = clock.marks[-1] - clock.marks[0]
    measured_rate = step_tokens * (ESTIMATE_STEPS - 1) / seconds
    line = {
        "case": name,
        "estimate_gib": round(guess.peak_memory_bytes / 2**30, 2),
        "measured_gib": round(measured / 2**30, 2),
        "ratio": round(guess.peak_memory_bytes / measured, 3),
        "reserved_gib": round(reserved / 2**30, 2),
        "estimate_reserved_gib": round(guess.breakdown["reserved_bytes"] / 2**30, 2),
        "step_peaks_gib": [round(p / 2**30, 2) for p in clock.peaks],
        "kept_after_step_gib": [round(p / 2**30, 2) for p in clock.kept],
        "estimate_tokens_per_s": guess.breakdown["tokens_per_second"],
        "measured_tokens_per_s": round(measured_rate, 1),
        "engine": {k: clock.started.get(k) for k in ("micro_batch_tokens", "packing")}
        | {"checkpointing": clock.started.get("gradient_checkpointing")},
        "estimate_row_tokens": guess.breakdown["row_tokens"],
        "breakdown_gib": {
            k: round(v / 2**30, 3) for k, v in guess.breakdown["memory_bytes"].items()
        },
    }
    print(json.dumps(line))
    report = os.environ.get("TUNELAB_ESTIMATE_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
    assert 0.8 <= guess.peak_memory_bytes / measured <= 1.2, line


def test_evaluation_compares_base_lora_and_qlora_on_the_gpu(tmp_path: Path) -> None:
    """The evaluation library on CUDA in bf16: the prompting baseline, a LoRA adapter, and a
    QLoRA adapter evaluated on its 4-bit base, sharing one loaded model per base."""
    from worker.evaluation.run import Candidate, evaluate, examples_from_records
    from worker.spec.decoding import DecodingSettings

    model = build_tiny_model(tmp_path / "model")
    records = [
        {
            "messages": [
                {"role": "user", "content": f"Repeat {i % 4}"},
                {"role": "assistant", "content": f"{i % 4} {i % 4} {i % 4}"},
            ]
        }
        for i in range(32)
    ]
    adapters = {}
    for method in ("lora", "qlora"):
        config = TrainConfig(
            base_model=str(model),
            method=method,
            max_steps=30,
            learning_rate=5e-3,
            batch_size=8,
            max_seq_length=64,
        )
        adapters[method] = train(
            config,
            records=records,
            output_dir=tmp_path / method,
            model_cache_dir=tmp_path / "cache",
        ).adapter_dir
    candidates = [
        Candidate(key="base", label="Base", base_model=str(model)),
        Candidate(
            key="lora",
            label="LoRA",
            base_model=str(model),
            kind="job",
            weights_dir=adapters["lora"],
        ),
        Candidate(
            key="qlora",
            label="QLoRA",
            base_model=str(model),
            kind="job",
            weights_dir=adapters["qlora"],
            quantization="nf4",
        ),
    ]
    examples = examples_from_records(records[:8])
    outcome = evaluate(
        candidates,
        examples,
        DecodingSettings(max_new_tokens=8),
        model_cache_dir=tmp_path / "cache",
        baseline="base",
        resamples=200,
    )
    perplexity = {k: r.metrics["perplexity"].value for k, r in outcome.reports.items()}
    assert all(torch.isfinite(torch.tensor(v)) for v in perplexity.values()), perplexity
    assert perplexity["lora"] < perplexity["base"] / 2, perplexity
    assert perplexity["qlora"] < perplexity["base"] / 2, perplexity
    for run in outcome.runs.values():
        assert len(run.answers) == len(examples)
    assert set(outcome.deltas) == {"lora", "qlora"}


def test_the_model_server_batches_adapter_requests_on_the_gpu(tmp_path: Path) -> None:
    """The serving engine on CUDA in bf16: concurrent requests for an adapter are answered
    in shared batches."""
    import asyncio

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker.serving.engine import SamplingParams, ServingEngine

    model_dir = build_tiny_model(tmp_path / "model")
    torch.manual_seed(0)
    peft = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(model_dir)),
        LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft.save_pretrained(str(tmp_path / "adapter"))
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(tmp_path / "adapter"))
    engine = ServingEngine(
        str(model_dir), {"tuned": tmp_path / "adapter"}, model_cache_dir=tmp_path / "cache"
    )
    try:
        params = SamplingParams(max_tokens=12, temperature=0.0)

        async def ask_all() -> list[object]:
            return await asyncio.gather(
                *(
                    engine.complete(
                        "tuned", [{"role": "user", "content": f"Say {i}"}], None, params
                    )
                    for i in range(16)
                )
            )

        answers = asyncio.run(ask_all())
        assert len(answers) == 16 and all(a.completion_tokens > 0 for a in answers)  # type: ignore[attr-defined]
        assert engine.stats()["max_batch_rows"] > 1
    finally:
        engine.close()


def test_a_merged_bf16_export_passes_its_check_on_the_gpu(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker.deploy.export import export_merged

    model_dir = build_tiny_model(tmp_path / "model")
    torch.manual_seed(0)
    peft = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(model_dir)),
        LoraConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False),
    )
    peft.save_pretrained(str(tmp_path / "adapter"))
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(tmp_path / "adapter"))
    result = export_merged(
        str(model_dir),
        tmp_path / "adapter",
        tmp_path / "merged",
        model_cache_dir=tmp_path / "cache",
        card={"name": "gpu"},
    )
    assert result.verification is not None and result.verification["passed"], result.verification
