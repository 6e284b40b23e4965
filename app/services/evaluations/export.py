"""An evaluation as a download: JSON with everything, or CSV with one row per example."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import orjson

from app.core.csv_cells import safe_writer
from app.models import EvalSample, Evaluation
from app.schemas.evaluation import EvalSampleRead, EvaluationRead

METRIC_ORDER = ("bleu", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1", "perplexity")


def json_document(read: EvaluationRead, samples: list[EvalSample]) -> bytes:
    """The evaluation (settings, results, verdict) and every sample, in one JSON document."""
    return orjson.dumps(
        {
            "evaluation": read.model_dump(mode="json"),
            "samples": [EvalSampleRead.model_validate(s).model_dump(mode="json") for s in samples],
        },
        option=orjson.OPT_INDENT_2,
    )


def csv_rows(evaluation: Evaluation, samples: list[EvalSample]) -> Iterator[str]:
    """CSV lines: per example its prompt, reference, each model's answer and scores."""
    keys = [c["key"] for c in evaluation.candidates]
    metrics = [m for m in METRIC_ORDER if any(m in (s.scores.get(keys[0]) or {}) for s in samples)]
    header = ["position", "prompt", "reference"]
    for key in keys:
        header.append(f"{key}: answer")
        header.extend(f"{key}: {m}" for m in metrics)
    header.append("delta")
    buffer = io.StringIO()
    writer = safe_writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    # A byte-order mark so spreadsheet programs read the Chinese text as UTF-8.
    yield "\ufeff"
    writer.writerow(header)
    yield flush()
    for sample in samples:
        row: list[Any] = [sample.position, sample.prompt, sample.reference]
        for key in keys:
            row.append(sample.outputs.get(key, ""))
            scores = sample.scores.get(key) or {}
            row.extend(_number(scores.get(m)) for m in metrics)
        row.append(_number(sample.delta))
        writer.writerow(row)
        yield flush()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
