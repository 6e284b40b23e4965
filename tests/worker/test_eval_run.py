"""The evaluation library on tiny random models: a prompting baseline against a trained
adapter and one of its checkpoints, scored on the same examples with the same decoding."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import QA, chat, tiny_config
from worker.evaluation.run import (
    Candidate,
    evaluate,
    examples_from_records,
    few_shot_turns,
)
from worker.spec.config import TrainConfig
from worker.spec.decoding import DecodingSettings
from worker.training import train

RECORDS = [chat(q, a) for q, a in QA] * 6


@pytest.fixture(scope="module")
def trained(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An adapter trained for 12 steps, and the checkpoint saved at step 6."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig.model_validate(tiny_config(tiny_model, checkpoint_every=6))
    result = train(
        config,
        records=RECORDS,
        output_dir=out / "adapter",
        model_cache_dir=out / "cache",
        checkpoint_dir=out / "checkpoints",
    )
    return result.adapter_dir, out / "checkpoints" / "checkpoint-6"


def test_examples_take_the_last_answer_as_reference_and_keep_earlier_turns() -> None:
    record = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "你好吗？"},
            {"role": "assistant", "content": "我很好。"},
        ]
    }
    (example,) = examples_from_records([record, {"messages": [{"role": "user", "content": "x"}]}])
    assert example.reference == "我很好。"
    assert example.prompt == "你好吗？"
    assert [m["role"] for m in example.messages] == ["system", "user", "assistant", "user"]


def test_few_shot_turns_are_drawn_from_the_pool_deterministically() -> None:
    pool = examples_from_records([chat(q, a) for q, a in QA])
    first = few_shot_turns(pool, 2, seed=3)
    assert first == few_shot_turns(pool, 2, seed=3)
    assert [t["role"] for t in first] == ["user", "assistant"] * 2
    assert few_shot_turns(pool, 0, seed=3) == []
    assert len(few_shot_turns(pool, 10, seed=3)) == 2 * len(QA)


def test_baseline_adapter_and_checkpoint_are_scored_on_the_same_examples(
    tiny_model: Path, trained: tuple[Path, Path], tmp_path: Path
) -> None:
    adapter, checkpoint = trained
    config = TrainConfig.model_validate(tiny_config(tiny_model)).model_dump(mode="json")
    import json

    saved = json.loads((checkpoint / "state.json").read_text())["config"]
    candidates = [
        Candidate(key="baseline", label="Base", base_model=str(tiny_model), k_shot=1),
        Candidate(
            key="tuned", label="Tuned", base_model=str(tiny_model), kind="job", weights_dir=adapter
        ),
        Candidate(
            key="ckpt",
            label="Step 6",
            base_model=str(tiny_model),
            kind="checkpoint",
            weights_dir=checkpoint,
            train_config=saved or config,
        ),
    ]
    examples = examples_from_records([chat(q, a) for q, a in QA])
    progress: list[tuple[str, str, int, int]] = []

    class Recorder:
        def on_progress(self, phase: str, key: str, done: int, total: int) -> None:
            progress.append((phase, key, done, total))

        def on_event(self, level: str, message: str) -> None:
            pass

        def should_stop(self) -> bool:
            return False

    outcome = evaluate(
        candidates,
        examples,
        DecodingSettings(max_new_tokens=6),
        model_cache_dir=tmp_path,
        baseline="baseline",
        few_shot_pool=examples,
        callbacks=Recorder(),
        resamples=200,
    )
    assert set(outcome.runs) == {"baseline", "tuned", "ckpt"}
    for run in outcome.runs.values():
        assert len(run.answers) == len(QA)
        assert all(a.new_tokens <= 6 for a in run.answers)
    # The trained adapter learned these answers: its references are far likelier.
    assert (
        outcome.reports["tuned"].metrics["perplexity"].value
        < outcome.reports["baseline"].metrics["perplexity"].value
    )
    summary = outcome.summary(baseline="baseline", subject="tuned", primary_metric="rougeL")
    assert set(summary["deltas"]) == {"tuned", "ckpt"}
    delta = summary["deltas"]["tuned"]["perplexity"]
    assert delta["low"] <= delta["value"] <= delta["high"]
    assert summary["generation"]["tuned"]["new_tokens"] > 0
    scores = outcome.per_example_scores(0)
    assert set(scores["tuned"]) >= {"bleu", "rougeL", "exact_match", "token_f1", "perplexity"}
    phases = {(p[0], p[1]) for p in progress}
    assert ("generating", "tuned") in phases and ("likelihood", "ckpt") in phases


def test_an_adapter_removed_after_its_turn_leaves_the_base_model_as_it_was(
    tiny_model: Path, trained: tuple[Path, Path], tmp_path: Path
) -> None:
    adapter, _ = trained
    examples = examples_from_records([chat(q, a) for q, a in QA])
    alone = evaluate(
        [Candidate(key="b", label="Base", base_model=str(tiny_model))],
        examples,
        DecodingSettings(max_new_tokens=5),
        model_cache_dir=tmp_path,
        resamples=50,
    )
    # Same base model twice around an adapter: the second baseline must answer as the first.
    mixed = evaluate(
        [
            Candidate(key="b", label="Base", base_model=str(tiny_model)),
            Candidate(
                key="t", label="Tuned", base_model=str(tiny_model), kind="job", weights_dir=adapter
            ),
            Candidate(key="b2", label="Base again", base_model=str(tiny_model), weights_dir=None),
        ],
        examples,
        DecodingSettings(max_new_tokens=5),
        model_cache_dir=tmp_path,
        resamples=50,
    )
    texts = [a.text for a in alone.runs["b"].answers]
    assert [a.text for a in mixed.runs["b"].answers] == texts
    assert [a.text for a in mixed.runs["b2"].answers] == texts
