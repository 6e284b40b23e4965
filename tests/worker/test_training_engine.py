"""The training engine, end to end on a tiny random model, and once on real SmolLM2."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.factories import QA, chat
from worker.training import (
    StepMetrics,
    TrainConfig,
    TrainingCancelled,
    TrainingError,
    TrainResult,
    train,
)
from worker.training import data as training_data
from worker.training.data import FALLBACK_CHAT_TEMPLATE, IGNORE_INDEX

RECORDS = [chat(q, a) for q, a in QA] * 4


@dataclass
class Recorder:
    """Callbacks that keep everything and can ask to stop after a number of steps."""

    stop_after_steps: int | None = None
    events: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    steps: list[StepMetrics] = field(default_factory=list)

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((level, message, data))

    def on_step(self, metrics: StepMetrics) -> None:
        self.steps.append(metrics)

    def should_stop(self) -> bool:
        return self.stop_after_steps is not None and len(self.steps) >= self.stop_after_steps

    @property
    def messages(self) -> list[str]:
        return [message for _, message, _ in self.events]

    def warnings(self) -> list[str]:
        return [message for level, message, _ in self.events if level == "warning"]


def tiny_config(model_dir: Path, **overrides: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "base_model": str(model_dir),
        "max_steps": 3,
        "batch_size": 4,
        "learning_rate": 1e-2,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "max_seq_length": 128,
    }
    settings.update(overrides)
    return TrainConfig(**settings)


def run(
    config: TrainConfig,
    tmp_path: Path,
    records: list[dict[str, Any]] | None = None,
    recorder: Recorder | None = None,
) -> tuple[TrainResult, Recorder]:
    recorder = recorder or Recorder()
    result = train(
        config,
        records=RECORDS if records is None else records,
        output_dir=tmp_path / "runs" / "adapter",
        model_cache_dir=tmp_path / "cache",
        callbacks=recorder,
    )
    return result, recorder


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def trained(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainResult, Recorder]:
    """Thirty steps on the repetitive dataset, shared by the tests that only read the result."""
    return run(tiny_config(tiny_model_dir, max_steps=30), tmp_path_factory.mktemp("trained"))


def copy_model(tiny_model_dir: Path, dest: Path) -> Path:
    shutil.copytree(tiny_model_dir, dest)
    return dest


# --- Training ------------------------------------------------------------------------------


def test_loss_falls_over_thirty_steps_on_a_repetitive_dataset(
    trained: tuple[TrainResult, Recorder],
) -> None:
    result, recorder = trained
    losses = [m.loss for m in recorder.steps]
    assert len(losses) == 30 == result.steps
    assert mean(losses[-5:]) < mean(losses[:5]) - 1.0
    assert result.final_loss == losses[-1]


def test_step_metrics_report_progress(trained: tuple[TrainResult, Recorder]) -> None:
    result, recorder = trained
    assert [m.step for m in recorder.steps] == list(range(1, 31))
    assert all(m.total_steps == 30 for m in recorder.steps)
    # 16 samples in batches of 4: each step is a quarter of an epoch.
    assert [m.epoch for m in recorder.steps[:5]] == [0.25, 0.5, 0.75, 1.0, 1.25]
    assert recorder.steps[0].learning_rate == pytest.approx(1e-2)
    assert recorder.steps[-1].learning_rate < recorder.steps[0].learning_rate  # linear decay
    assert all(m.grad_norm > 0 and m.tokens > 0 and m.tokens_per_second > 0 for m in recorder.steps)
    assert result.tokens == sum(m.tokens for m in recorder.steps)


def test_phases_are_announced_in_order(trained: tuple[TrainResult, Recorder]) -> None:
    _, recorder = trained
    expected = [
        "Loading model",
        "Prepared 16 samples (0 dropped: too long)",
        "Model loaded (",
        "Training started",
        "Saving adapter",
        "Done",
    ]
    positions = [
        next(i for i, message in enumerate(recorder.messages) if message.startswith(prefix))
        for prefix in expected
    ]
    assert positions == sorted(positions)
    assert recorder.warnings() == []


def test_adapter_is_saved_as_safetensors_and_changes_the_base_models_logits(
    trained: tuple[TrainResult, Recorder], tiny_model_dir: Path
) -> None:
    result, _ = trained
    names = {p.name for p in result.files}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
    assert all(p.parent == result.adapter_dir for p in result.files)
    adapter_config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA"
    assert sorted(adapter_config["target_modules"]) == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]

    tokenizer = AutoTokenizer.from_pretrained(str(result.adapter_dir))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What colour is the sky?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    with torch.no_grad():
        base_logits = base(**inputs).logits
        tuned = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
        tuned_logits = tuned(**inputs).logits
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-3)


def test_same_seed_and_data_give_the_same_loss_curve(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_model_dir, max_steps=6, lora_dropout=0.1, seed=7)
    _, first = run(config, tmp_path / "first")
    _, second = run(config, tmp_path / "second")
    _, other_seed = run(config.model_copy(update={"seed": 8}), tmp_path / "third")
    assert [m.loss for m in first.steps] == [m.loss for m in second.steps]
    assert [m.loss for m in first.steps] != [m.loss for m in other_seed.steps]


def test_epochs_and_gradient_accumulation_set_the_number_of_steps(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # 10 samples in batches of 2 are 5 batches; accumulating 2 makes 3 steps an epoch, the
    # last of them a single batch.
    config = tiny_config(
        tiny_model_dir, max_steps=None, epochs=2, batch_size=2, gradient_accumulation_steps=2
    )
    result, recorder = run(config, tmp_path, records=RECORDS[:10])
    assert result.steps == 6
    assert [m.total_steps for m in recorder.steps] == [6] * 6
    assert [m.epoch for m in recorder.steps] == pytest.approx([0.4, 0.8, 1.0, 1.4, 1.8, 2.0])


def test_output_folder_that_already_has_files_is_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "runs" / "adapter"
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("earlier work")
    with pytest.raises(TrainingError, match="already exists and is not empty"):
        run(tiny_config(tiny_model_dir), tmp_path)
    assert (target / "keep.txt").read_text() == "earlier work"


# --- Failure and cancellation leave nothing behind ----------------------------------------


def test_should_stop_cancels_and_leaves_no_output(tiny_model_dir: Path, tmp_path: Path) -> None:
    recorder = Recorder(stop_after_steps=2)
    with pytest.raises(TrainingCancelled):
        run(tiny_config(tiny_model_dir, max_steps=10), tmp_path, recorder=recorder)
    assert len(recorder.steps) == 2
    assert list((tmp_path / "runs").iterdir()) == []


def test_cancel_before_training_stops_between_phases(tiny_model_dir: Path, tmp_path: Path) -> None:
    recorder = Recorder(stop_after_steps=0)
    with pytest.raises(TrainingCancelled):
        run(tiny_config(tiny_model_dir), tmp_path, recorder=recorder)
    assert recorder.steps == []
    assert "Training started" not in recorder.messages
    assert list((tmp_path / "runs").iterdir()) == []


def test_unknown_model_is_a_readable_error_and_leaves_no_output(tmp_path: Path) -> None:
    config = tiny_config(Path("."), base_model="tunelab-tests/no-such-model")
    with pytest.raises(TrainingError, match=r"^Model 'tunelab-tests/no-such-model' was not found"):
        run(config, tmp_path)
    assert list((tmp_path / "runs").iterdir()) == []


def test_unknown_target_module_names_the_layers_that_exist(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = tiny_config(tiny_model_dir, target_modules=["q_proj", "query_key_value"])
    with pytest.raises(
        TrainingError, match=r"query_key_value do not exist.*q_proj, up_proj, v_proj"
    ):
        run(config, tmp_path)


def test_unexpected_failure_becomes_a_training_error_with_its_cause(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    class Exploding(Recorder):
        def on_step(self, metrics: StepMetrics) -> None:
            raise RuntimeError("metrics store is down")

    with pytest.raises(TrainingError, match="metrics store is down") as caught:
        run(tiny_config(tiny_model_dir), tmp_path, recorder=Exploding())
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert list((tmp_path / "runs").iterdir()) == []


# --- Data: templates, masking, truncation --------------------------------------------------


@pytest.fixture(scope="module")
def chatml(tiny_model_dir: Path) -> Any:
    """The tiny model's tokenizer with the fallback template, whose turns split cleanly."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


TWO_TURNS = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello, how can I help?"},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
]


def labelled_runs(tokenizer: Any, sample: training_data.Sample) -> list[str]:
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in sample.labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return [tokenizer.decode(run) for run in runs]


def test_only_answer_tokens_and_their_end_of_turn_are_labelled(chatml: Any) -> None:
    sample = training_data.encode(chatml, TWO_TURNS, max_seq_length=512)

    # Positions found independently, by counting the tokens of rendered prefixes.
    def length(messages: list[dict[str, str]], generation_prompt: bool) -> int:
        text = training_data.render(chatml, messages, generation_prompt=generation_prompt)
        return len(chatml(text, add_special_tokens=False)["input_ids"])

    expected = [IGNORE_INDEX] * len(sample.input_ids)
    for i in (1, 3):
        start = length(TWO_TURNS[:i], generation_prompt=True)
        end = (
            length(TWO_TURNS[: i + 1], generation_prompt=False) - 1
        )  # the newline after <|im_end|>
        expected[start:end] = sample.input_ids[start:end]
    assert sample.labels == expected
    assert labelled_runs(chatml, sample) == [
        "Hello, how can I help?<|im_end|>",
        "Blue.<|im_end|>",
    ]


def test_template_that_rewrites_history_still_labels_every_answer(tiny_model_dir: Path) -> None:
    # The Qwen3 template adds an empty reasoning block to the last answer only, so earlier
    # turns render differently inside the whole conversation than on their own.
    qwen3 = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    sample = training_data.encode(qwen3, TWO_TURNS, max_seq_length=512)
    assert labelled_runs(qwen3, sample) == [
        "Hello, how can I help?<|im_end|>",
        "<think>\n\n</think>\n\nBlue.<|im_end|>",
    ]


def test_an_opening_assistant_greeting_is_context_not_an_answer(chatml: Any) -> None:
    greeting = {"role": "assistant", "content": "Hi, I am the support bot."}
    sample = training_data.encode(chatml, [greeting, *TWO_TURNS[2:]], max_seq_length=512)
    assert labelled_runs(chatml, sample) == ["Blue.<|im_end|>"]


def test_system_prompt_is_added_only_to_samples_without_one() -> None:
    plain = training_data.with_system_prompt(TWO_TURNS, "Answer briefly.")
    assert plain[0] == {"role": "system", "content": "Answer briefly."}
    assert plain[1:] == TWO_TURNS
    own = [{"role": "system", "content": "Be a pirate."}, *TWO_TURNS]
    assert training_data.with_system_prompt(own, "Answer briefly.") == own


def test_system_prompt_reaches_the_rendered_sample_but_is_not_labelled(chatml: Any) -> None:
    prepared = training_data.prepare_samples(
        chatml, [chat("Hi", "Hello.")], max_seq_length=128, system_prompt="Answer briefly."
    )
    sample = prepared.samples[0]
    assert chatml.decode(sample.input_ids).startswith("<|im_start|>system\nAnswer briefly.")
    assert labelled_runs(chatml, sample) == ["Hello.<|im_end|>"]


def test_samples_with_no_answer_left_after_truncation_are_dropped_with_a_warning(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    too_long = chat("word " * 100, "Short answer.")
    records = [*RECORDS[:4], too_long, too_long]
    result, recorder = run(
        tiny_config(tiny_model_dir, max_seq_length=48), tmp_path, records=records
    )
    assert result.steps == 3
    assert "Prepared 4 samples (2 dropped: too long)" in recorder.messages
    [warning] = recorder.warnings()
    assert warning.startswith("2 of 6 samples were dropped")
    assert "max_seq_length=48" in warning


def test_a_sample_cut_inside_its_answer_is_kept_and_truncated(chatml: Any) -> None:
    long_answer = chat("Count.", "one two three four five six seven eight nine ten " * 5)
    prepared = training_data.prepare_samples(
        chatml, [long_answer], max_seq_length=24, system_prompt=None
    )
    assert prepared.dropped_too_long == 0
    [sample] = prepared.samples
    assert len(sample.input_ids) == len(sample.labels) == 24
    assert sample.labels[-1] == sample.input_ids[-1]


def test_no_sample_fitting_is_a_readable_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    records = [chat("word " * 100, "Short answer.")]
    with pytest.raises(TrainingError, match="No sample fits in max_seq_length=32"):
        run(tiny_config(tiny_model_dir, max_seq_length=32), tmp_path, records=records)
    assert list((tmp_path / "runs").iterdir()) == []


def test_tokenizer_without_chat_template_trains_with_the_fallback(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = copy_model(tiny_model_dir, tmp_path / "no-template")
    (model_dir / "chat_template.jinja").unlink()
    assert AutoTokenizer.from_pretrained(str(model_dir)).chat_template is None
    result, recorder = run(tiny_config(model_dir), tmp_path)
    assert any("no chat template" in warning for warning in recorder.warnings())
    saved = AutoTokenizer.from_pretrained(str(result.adapter_dir))
    assert saved.chat_template == FALLBACK_CHAT_TEMPLATE


def test_tokenizer_without_pad_token_pads_with_end_of_sequence(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = copy_model(tiny_model_dir, tmp_path / "no-pad")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.pad_token = None
    tokenizer.save_pretrained(str(model_dir))
    assert AutoTokenizer.from_pretrained(str(model_dir)).pad_token is None
    # Answers of different lengths, so every batch needs padding.
    records = [chat("Say hi.", "Hi."), chat("Say a long greeting.", "Good morning to you all!")] * 2
    result, recorder = run(tiny_config(model_dir), tmp_path, records=records)
    assert result.steps == 3
    assert any("no padding token" in message for message in recorder.messages)
    saved = AutoTokenizer.from_pretrained(str(result.adapter_dir))
    assert saved.pad_token == saved.eos_token == "<|im_end|>"


# --- Batching ------------------------------------------------------------------------------


def test_batches_are_a_fixed_shuffle_per_seed_and_epoch() -> None:
    samples = [training_data.Sample([i, i], [i, i]) for i in range(10)]
    first = training_data.make_batches(samples, 4, seed=1, epoch=0)
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(s.input_ids[0] for b in first for s in b) == list(range(10))
    assert first == training_data.make_batches(samples, 4, seed=1, epoch=0)
    assert first != training_data.make_batches(samples, 4, seed=1, epoch=1)


def test_collate_pads_right_and_masks_padding() -> None:
    batch = [
        training_data.Sample([5, 6, 7], [IGNORE_INDEX, 6, 7]),
        training_data.Sample([8], [IGNORE_INDEX]),
    ]
    tensors = training_data.collate(batch, pad_id=0)
    assert tensors["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert tensors["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    assert tensors["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


# --- Real SmolLM2-135M-Instruct ------------------------------------------------------------
