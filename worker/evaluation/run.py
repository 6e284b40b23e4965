"""One evaluation: several models answer the same held-out prompts, then everything is scored.

A library like the training engine: no database or Celery. The worker task hands it the
candidates (the prompting baseline and fine-tuned models), the test examples and the decoding
settings, and gets back every answer with its per-example scores, each model's metrics with
95% intervals, and each model's paired difference against the baseline.

Candidates that share a base model share one loaded copy: the baseline runs on the plain
model, then each adapter is attached, run and detached again, so a Llama-3-8B comparison loads
8B weights once.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from worker.evaluation.generation import (
    Backend,
    DecodingSettings,
    Generation,
    generate_batched,
    reference_nll,
)
from worker.spec import metrics
from worker.spec.errors import TrainingCancelled, TrainingError
from worker.spec.formatting import Message, ensure_chat_template
from worker.training import models

Kind = Literal["base", "job", "checkpoint"]


class EvalCallbacks(Protocol):
    def on_progress(self, phase: str, key: str, done: int, total: int) -> None: ...

    def on_event(self, level: str, message: str) -> None: ...

    def should_stop(self) -> bool: ...


class _Quiet:
    def on_progress(self, phase: str, key: str, done: int, total: int) -> None:
        pass

    def on_event(self, level: str, message: str) -> None:
        pass

    def should_stop(self) -> bool:
        return False


@dataclass(frozen=True)
class Candidate:
    """A model to evaluate: a base model with a prompt, or a base with trained weights."""

    key: str
    label: str
    base_model: str
    kind: Kind = "base"
    # A PEFT adapter folder, or a full fine-tuned model folder when ``full_model``.
    weights_dir: Path | None = None
    full_model: bool = False
    quantization: str | None = None  # "nf4" for QLoRA adapters, evaluated on the same base
    # For a training checkpoint (``kind="checkpoint"``): the run's config, which rebuilds the
    # adapter its ``trainable.safetensors`` was saved from.
    train_config: dict[str, Any] | None = None
    system_prompt: str | None = None
    k_shot: int = 0
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False


@dataclass(frozen=True)
class Example:
    """A test example: the conversation up to the answer, and the reference answer."""

    messages: list[Message]
    reference: str

    @property
    def prompt(self) -> str:
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else ""


@dataclass
class ModelRun:
    key: str
    answers: list[Generation]
    nll: list[float] | None
    nll_tokens: list[int] | None
    seconds: float


@dataclass
class EvalOutcome:
    examples: list[Example]
    runs: dict[str, ModelRun]
    reports: dict[str, metrics.Report]
    deltas: dict[str, dict[str, metrics.Interval]] = field(default_factory=dict)

    def summary(
        self, *, baseline: str | None, subject: str | None, primary_metric: str
    ) -> dict[str, Any]:
        """The JSON kept on the evaluation row: metrics with intervals, differences, speed."""
        first = next(iter(self.reports.values()))
        return {
            "n": first.n,
            "language": first.language,
            "bleu_tokenizer": first.bleu_tokenizer,
            "baseline": baseline,
            "subject": subject,
            "primary_metric": primary_metric,
            "models": {k: _intervals(r.metrics) for k, r in self.reports.items()},
            "deltas": {k: _intervals(d) for k, d in self.deltas.items()},
            "generation": {
                k: {
                    "seconds": round(run.seconds, 2),
                    "new_tokens": sum(a.new_tokens for a in run.answers),
                    "truncated": sum(a.finish_reason == "length" for a in run.answers),
                    "tokens_per_second": round(
                        sum(a.new_tokens for a in run.answers) / max(run.seconds, 1e-9), 1
                    ),
                }
                for k, run in self.runs.items()
            },
        }

    def per_example_scores(self, index: int) -> dict[str, dict[str, float]]:
        scores: dict[str, dict[str, float]] = {}
        for key, report in self.reports.items():
            values = {name: float(array[index]) for name, array in report.per_example.items()}
            if report.nll_stats is not None and report.nll_stats[index, 1] > 0:
                nll, tokens = report.nll_stats[index]
                values["perplexity"] = float(min(1e12, torch.tensor(nll / tokens).exp().item()))
            scores[key] = values
        return scores


def _intervals(values: dict[str, metrics.Interval]) -> dict[str, dict[str, float]]:
    return {
        name: {"value": i.value, "low": i.low, "high": i.high, "n": i.n}
        for name, i in values.items()
    }


def examples_from_records(records: Sequence[dict[str, Any]]) -> list[Example]:
    """Each chat record's last assistant turn is the reference; the turns before, the prompt."""
    examples = []
    for record in records:
        messages = list(record.get("messages") or [])
        last = max(
            (i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None
        )
        if last is None or last == 0:
            continue
        prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:last]]
        examples.append(Example(messages=prompt, reference=str(messages[last]["content"])))
    return examples


def few_shot_turns(pool: Sequence[Example], k: int, seed: int) -> list[Message]:
    """``k`` examples drawn from the training split, as user/assistant turns to prepend."""
    if k <= 0 or not pool:
        return []
    usable = [e for e in pool if e.prompt]
    chosen = random.Random(seed).sample(usable, min(k, len(usable)))
    turns: list[Message] = []
    for example in chosen:
        turns.append({"role": "user", "content": example.prompt})
        turns.append({"role": "assistant", "content": example.reference})
    return turns


def evaluate(
    candidates: Sequence[Candidate],
    examples: Sequence[Example],
    decoding: DecodingSettings,
    *,
    model_cache_dir: Path,
    allow_downloads: bool = False,
    baseline: str | None = None,
    few_shot_pool: Sequence[Example] = (),
    language: str | None = None,
    callbacks: EvalCallbacks | None = None,
    resamples: int = 1000,
    backend: Backend = "transformers",
) -> EvalOutcome:
    """Generate with every candidate, score against the references, compare with ``baseline``.

    ``backend="vllm"`` generates the answers of prompt-only candidates with vLLM (adapters
    and checkpoints still go through transformers); likelihoods always use transformers.

    Raises TrainingError with a message for the person who asked, TrainingCancelled when
    ``callbacks.should_stop()`` turns true between batches.
    """
    callbacks = callbacks or _Quiet()
    if not examples:
        raise TrainingError("There are no test examples to evaluate on.")
    if not candidates:
        raise TrainingError("There is no model to evaluate.")
    references = [e.reference for e in examples]
    runs: dict[str, ModelRun] = {}
    plan = _Plan(
        examples, decoding, model_cache_dir, allow_downloads, few_shot_pool, callbacks, backend
    )
    try:
        for group in _by_base_model(candidates):
            runs.update(_run_group(group, plan))
    except (TrainingError, TrainingCancelled):
        raise
    except torch.cuda.OutOfMemoryError as exc:
        raise TrainingError(
            "The GPU ran out of memory while evaluating; lower max_new_tokens or evaluate "
            "fewer models at once."
        ) from exc
    except Exception as exc:
        raise TrainingError(f"Evaluation failed ({type(exc).__name__}: {exc}).") from exc

    callbacks.on_progress("scoring", "", 0, len(runs))
    lang = language or metrics.corpus_language(references)
    reports = {}
    for key in [c.key for c in candidates]:
        run = runs[key]
        reports[key] = metrics.score(
            [a.text for a in run.answers],
            references,
            language=lang,
            reference_nll=run.nll,
            reference_tokens=run.nll_tokens,
            resamples=resamples,
            seed=decoding.seed,
        )
    deltas = {}
    if baseline is not None:
        for key, report in reports.items():
            if key != baseline:
                deltas[key] = metrics.compare(
                    report, reports[baseline], resamples=resamples, seed=decoding.seed
                )
    callbacks.on_progress("scoring", "", len(runs), len(runs))
    return EvalOutcome(list(examples), runs, reports, deltas)


def generate_answers(
    candidates: Sequence[Candidate],
    examples: Sequence[Example],
    decoding: DecodingSettings,
    *,
    model_cache_dir: Path,
    allow_downloads: bool = False,
    callbacks: EvalCallbacks | None = None,
) -> dict[str, list[Generation]]:
    """Every candidate's answers to prompts that have no reference (nothing is scored)."""
    plan = _Plan(
        examples,
        decoding,
        model_cache_dir,
        allow_downloads,
        (),
        callbacks or _Quiet(),
        "transformers",
        likelihood=False,
    )
    answers: dict[str, list[Generation]] = {}
    try:
        for group in _by_base_model(candidates):
            answers.update({k: run.answers for k, run in _run_group(group, plan).items()})
    except (TrainingError, TrainingCancelled):
        raise
    except Exception as exc:
        raise TrainingError(f"Answering failed ({type(exc).__name__}: {exc}).") from exc
    return answers


def _by_base_model(candidates: Sequence[Candidate]) -> list[list[Candidate]]:
    """Candidates grouped by the loaded model they run on, prompt-only ones first."""
    groups: dict[tuple[str, str | None, bool], list[Candidate]] = {}
    for c in candidates:
        if c.full_model or _full_checkpoint(c):
            groups[(str(c.weights_dir), None, True)] = [c]
            continue
        groups.setdefault((c.base_model, c.quantization, False), []).append(c)
    return [sorted(g, key=lambda c: c.weights_dir is not None) for g in groups.values()]


@dataclass(frozen=True)
class _Plan:
    """What every candidate of one evaluation runs with."""

    examples: Sequence[Example]
    decoding: DecodingSettings
    model_cache_dir: Path
    allow_downloads: bool
    few_shot_pool: Sequence[Example]
    callbacks: EvalCallbacks
    backend: Backend
    likelihood: bool = True  # False: answers only (prompts without a reference)


def _run_group(group: list[Candidate], plan: _Plan) -> dict[str, ModelRun]:
    callbacks = plan.callbacks
    first = group[0]
    callbacks.on_event("info", f"Loading model '{first.base_model}' …")
    resolved = models.resolve_model(
        first.base_model,
        plan.model_cache_dir,
        plan.allow_downloads,
        notify=lambda m: callbacks.on_event("info", m),
        trust_remote_code=first.trust_remote_code,
        allow_pickle_weights=first.allow_pickle_weights,
    )
    if first.full_model and first.weights_dir is not None:
        resolved = models.ResolvedModel(first.label, first.weights_dir, "folder")
    device, dtype = models.inference_dtype()
    model = models.load_model(
        resolved,
        dtype=dtype,
        device=device,
        trust_remote_code=first.trust_remote_code,
        allow_pickle_weights=first.allow_pickle_weights,
        quantization=first.quantization,
    )
    base_tokenizer = models.load_tokenizer(resolved, trust_remote_code=first.trust_remote_code)
    runs = {}
    try:
        for candidate in group:
            if callbacks.should_stop():
                raise TrainingCancelled("The evaluation was cancelled")
            tokenizer = base_tokenizer
            if candidate.kind == "checkpoint":
                model = _with_checkpoint(model, candidate)
                runs[candidate.key] = _run_one(model, tokenizer, candidate, plan)
                model = _detach(model) if hasattr(model, "peft_config") else model
            elif candidate.weights_dir is not None and not candidate.full_model:
                from peft import PeftModel

                # The tokenizer saved with the adapter carries the chat template it was
                # trained with (a fallback one, for a base model without its own).
                if (candidate.weights_dir / "tokenizer_config.json").is_file():
                    tokenizer = _load_tokenizer(candidate.weights_dir)
                adapted = PeftModel.from_pretrained(model, str(candidate.weights_dir))
                adapted.eval()
                try:
                    runs[candidate.key] = _run_one(adapted, tokenizer, candidate, plan)
                finally:
                    model = _detach(adapted)
            else:
                folder = resolved.path if plan.backend == "vllm" else None
                runs[candidate.key] = _run_one(model, tokenizer, candidate, plan, folder)
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return runs


def _full_checkpoint(candidate: Candidate) -> bool:
    config = candidate.train_config or {}
    return candidate.kind == "checkpoint" and config.get("method") == "full"


def _with_checkpoint(model: Any, candidate: Candidate) -> Any:
    """The model with a training checkpoint's trainable weights: the adapter is rebuilt from
    the run's config and filled by name, as the engine saved it."""
    from safetensors.torch import load_file

    from worker.spec.config import TrainConfig
    from worker.training.adapters import build_peft_config
    from worker.training.checkpoints import WEIGHTS_FILE

    if candidate.weights_dir is None or candidate.train_config is None:
        raise TrainingError(f"{candidate.label}: the checkpoint's folder or config is missing.")
    weights = load_file(str(candidate.weights_dir / WEIGHTS_FILE))
    config = TrainConfig.model_validate(candidate.train_config)
    peft_config = build_peft_config(config, model)
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    device = next(model.parameters()).device
    missing = set(weights) - {name for name, _ in model.named_parameters()}
    if missing:
        raise TrainingError(
            f"{candidate.label}: the checkpoint does not fit this model "
            f"({len(missing)} weights have no place, e.g. {sorted(missing)[0]})."
        )
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in weights.items():
            params[name].copy_(value.to(device=device, dtype=params[name].dtype))
    model.eval()
    return model


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _detach(adapted: Any) -> Any:
    """The base model back without the adapter, for the next candidate of the group."""
    if (
        getattr(adapted, "peft_config", None)
        and next(iter(adapted.peft_config.values())).is_prompt_learning
    ):
        return adapted.get_base_model()  # prompt learning never touched the base's modules
    return adapted.unload()


def _run_one(
    model: Any, tokenizer: Any, candidate: Candidate, plan: _Plan, vllm_folder: Path | None = None
) -> ModelRun:
    """One candidate's answers and reference likelihoods; with ``vllm_folder`` the answers
    come from vLLM loading that folder."""
    examples, decoding, callbacks = plan.examples, plan.decoding, plan.callbacks
    few_shot_pool = plan.few_shot_pool
    ensure_chat_template(tokenizer)
    shots = few_shot_turns(few_shot_pool, candidate.k_shot, decoding.seed)
    prompts = [shots + list(e.messages) for e in examples]
    callbacks.on_event("info", f"Generating answers with {candidate.label}")

    def progress(done: int, total: int) -> None:
        callbacks.on_progress("generating", candidate.key, done, total)
        if callbacks.should_stop():
            raise TrainingCancelled("The evaluation was cancelled")

    _seed(decoding.seed)
    started = time.perf_counter()
    answers = generate_batched(
        str(vllm_folder) if vllm_folder is not None else model,
        tokenizer,
        prompts,
        decoding,
        system_prompt=candidate.system_prompt,
        progress=progress,
        backend="vllm" if vllm_folder is not None else "transformers",
    )
    seconds = time.perf_counter() - started
    if not plan.likelihood:
        return ModelRun(candidate.key, answers, None, None, seconds)
    callbacks.on_progress("likelihood", candidate.key, 0, len(examples))
    likelihoods = reference_nll(
        model,
        tokenizer,
        prompts,
        [e.reference for e in examples],
        system_prompt=candidate.system_prompt,
    )
    callbacks.on_progress("likelihood", candidate.key, len(examples), len(examples))
    usable = all(r.tokens > 0 for r in likelihoods)
    return ModelRun(
        candidate.key,
        answers,
        [r.nll for r in likelihoods] if usable else None,
        [r.tokens for r in likelihoods] if usable else None,
        seconds,
    )


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def auto_max_new_tokens(tokenizer: Any, references: Sequence[str]) -> int:
    """Room for the longest typical answer: 1.25 x the 95th percentile reference, 16–1024."""
    lengths = sorted(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references)
    if not lengths:
        return 256
    p95 = lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))]
    return max(16, min(1024, int(p95 * 1.25) + 8))


def tokenizer_for(candidate: Candidate, model_cache_dir: Path, allow_downloads: bool) -> Any:
    """The tokenizer a candidate answers with, without loading its weights."""
    if (
        candidate.weights_dir is not None
        and (candidate.weights_dir / "tokenizer_config.json").is_file()
    ):
        return _load_tokenizer(candidate.weights_dir)
    resolved = models.resolve_model(
        candidate.base_model,
        model_cache_dir,
        allow_downloads,
        trust_remote_code=candidate.trust_remote_code,
        allow_pickle_weights=candidate.allow_pickle_weights,
    )
    return models.load_tokenizer(resolved, trust_remote_code=candidate.trust_remote_code)
