"""Success criteria written in plain words: parsing them and judging an evaluation against them.

A project's ``success_criteria`` are lines like ``rougeL >= 0.40``, ``bleu improves on baseline
by >= 2`` or ``human win rate >= 60%``. Thresholds are stored on the metric's own scale (BLEU
0-100, ROUGE / exact match / token F1 0-1, perplexity as is), so a ``%`` is divided by 100 only
where the metric is a share. Improvements are always "positive = better": for perplexity that
is baseline minus subject.

Torch-free and web-free (stdlib only), so the API can validate criteria and pages can render
verdicts without the worker's dependencies.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

Kind = Literal["absolute", "improvement", "human"]

METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1", "perplexity")
# Metrics on a 0-1 scale: a "%" means a share and is divided by 100.
FRACTION_METRICS = frozenset({"rouge1", "rouge2", "rougeL", "exact_match", "token_f1"})
LOWER_IS_BETTER = frozenset({"perplexity"})
_UPPER_BOUND = {"bleu": 100.0, **dict.fromkeys(FRACTION_METRICS, 1.0)}

# Keys are names with case, whitespace, "-" and "_" removed (see ``metric_key``).
METRIC_ALIASES: dict[str, str] = {
    "rougel": "rougeL",
    "rouge1": "rouge1",
    "rouge2": "rouge2",
    "bleu": "bleu",
    "sacrebleu": "bleu",
    "exactmatch": "exact_match",
    "em": "exact_match",
    "accuracy": "exact_match",
    "tokenf1": "token_f1",
    "f1": "token_f1",
    "perplexity": "perplexity",
    "ppl": "perplexity",
    # Chinese names a Chinese-speaking domain expert is likely to write.
    "准确率": "exact_match",
    "精确匹配": "exact_match",
    "困惑度": "perplexity",
}

_EXAMPLES = 'write it like "rougeL >= 0.40" or "rougeL improves on baseline by >= 0.05"'
_METRIC_LIST = ", ".join(METRICS)

# Comparison words, longest first so "no less than" wins over "less than".
_WORD_OPS = {
    "no less than": ">=",
    "no more than": "<=",
    "at least": ">=",
    "at most": "<=",
    "more than": ">",
    "less than": "<",
    "不少于": ">=",
    "不低于": ">=",
    "不超过": "<=",
    "不高于": "<=",
    "至少": ">=",
    "至多": "<=",
    "最多": "<=",
    "超过": ">",
    "大于": ">",
    "高于": ">",
    "小于": "<",
    "低于": "<",
}
_SYMBOL_OPS = {">=": ">=", "<=": "<=", "==": "==", "=": "==", ">": ">", "<": "<"}
# NFKC folds full-width ＞＜＝ and digits, but not these relation signs.
_SIGN_FOLD = {"≥": ">=", "≤": "<=", "≧": ">=", "≦": "<=", "⩾": ">=", "⩽": "<="}

_OP_ALTERNATIVES = "|".join(
    re.escape(op) for op in sorted([*_WORD_OPS, *_SYMBOL_OPS], key=len, reverse=True)
)
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_AMOUNT = rf"(?P<num>{_NUMBER})\s*(?P<pct>%)?"
_COMPARISON_RE = re.compile(rf"^(?:(?P<op>{_OP_ALTERNATIVES})\s*)?{_AMOUNT}$", re.I)
_ABSOLUTE_RE = re.compile(rf"^(?P<metric>.+?)\s*(?P<op>{_OP_ALTERNATIVES})\s*{_AMOUNT}$", re.I)
_HUMAN_AMOUNT_RE = re.compile(rf"(?P<op>{_OP_ALTERNATIVES})\s*{_AMOUNT}", re.I)
_IMPROVEMENT_RE = re.compile(
    r"^(?P<metric>.+?)\s+(?:improves\s+(?:on|over|upon)|beats|(?:is\s+)?better\s+than)"
    r"\s+(?:the\s+)?baseline(?:\s+by\b\s*(?P<rest>.*))?$",
    re.I,
)
_IMPROVEMENT_ZH_RE = re.compile(
    r"^(?P<metric>.+?)\s*比\s*(?:基线|baseline)(?:模型)?\s*"
    r"(?P<verb>提高了?|提升了?|高出|高了?|改善了?|降低了?|低了?|好)?\s*(?P<rest>.*)$",
    re.I,
)
_FILLER_RE = re.compile(r"\s+(?:is|should\s+be|must\s+be)$", re.I)
_HUMAN_MEASURES = (
    ("win rate", ("win rate", "winrate", "胜率")),
    ("preference", ("preference", "prefer", "偏好")),
    ("rating", ("rating", "评分", "打分")),
)
_HUMAN_WORDS = ("win rate", "winrate", "rating", "preference", "人工", "胜率", "评分", "偏好")


class CriterionError(ValueError):
    """A success criterion that cannot be read; the message says what to write instead."""


@dataclass(frozen=True)
class Criterion:
    """One parsed success criterion; ``threshold`` is on the metric's own scale."""

    text: str
    kind: Kind
    metric: str | None
    op: str
    threshold: float
    human_measure: str | None = None


def metric_key(name: str) -> str | None:
    """The metric key for a name such as ``Rouge-L`` or ``exact match``, or None."""
    folded = re.sub(r"[\s\-_]+", "", unicodedata.normalize("NFKC", name).lower())
    if folded not in METRIC_ALIASES and folded.endswith("score"):
        folded = folded.removesuffix("score")
    return METRIC_ALIASES.get(folded)


# --- Parsing --------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text)
    for sign, op in _SIGN_FOLD.items():
        folded = folded.replace(sign, op)
    return re.sub(r"\s+", " ", folded).strip().rstrip(".。;；").strip()


def _unreadable(text: str) -> CriterionError:
    return CriterionError(f'could not read "{text}": {_EXAMPLES}; metrics: {_METRIC_LIST}')


def _resolve_metric(name: str, text: str) -> str:
    name = _FILLER_RE.sub("", name.strip())
    key = metric_key(name)
    if key is not None:
        return key
    if any(sign in name for sign in "<>="):
        raise CriterionError(f'could not read "{text}": write one criterion per line')
    by_lower = {metric.lower(): metric for metric in METRICS}
    hint = difflib.get_close_matches(name.lower(), by_lower, n=1)
    suggestion = f" (did you mean {by_lower[hint[0]]}?)" if hint else ""
    raise CriterionError(
        f'unknown metric "{name}" in "{text}": use one of {_METRIC_LIST}{suggestion}'
    )


def _scale(metric: str, number: float, percent: bool, *, improvement: bool, text: str) -> float:
    """The threshold on the metric's scale, refusing numbers the metric can never reach."""
    if percent and metric == "bleu":
        raise CriterionError(
            f'"{text}": BLEU is already on a 0–100 scale, so write the number without "%" '
            '(e.g. "bleu >= 20")'
        )
    if percent and metric == "perplexity":
        raise CriterionError(
            f'"{text}": perplexity is not a percentage; write a plain number '
            '(e.g. "perplexity <= 12")'
        )
    value = number / 100 if percent else number
    if value < 0:
        what = "an improvement" if improvement else f"a {metric} threshold"
        raise CriterionError(f'"{text}": {what} must be 0 or more, not {number:g}')
    bound = _UPPER_BOUND.get(metric)
    if bound is not None and value > bound:
        if bound == 100:
            fix = "BLEU tops out at 100"
        elif percent:
            fix = "a share tops out at 100%"
        else:
            fix = f"write {number / 100:g} or {number:g}%"
        raise CriterionError(f'"{text}": {metric} is on a 0–{bound:g} scale; {fix}')
    return value


def _parse_human(text: str, normal: str) -> Criterion:
    lowered = normal.lower()
    measure = next(
        (name for name, words in _HUMAN_MEASURES if any(w in lowered for w in words)), "review"
    )
    # Without a number the criterion stays as words for reviewers; a win rate or preference
    # then defaults to "more often than not".
    op, threshold = (">", 0.5) if measure in ("win rate", "preference") else (">=", 0.0)
    found = _HUMAN_AMOUNT_RE.search(lowered)
    if found:
        op = _op(found["op"])
        number, percent = float(found["num"]), found["pct"] is not None
        threshold = number
        if measure == "rating" and percent:
            raise CriterionError(
                f'"{text}": a rating is on the reviewers\' scale (such as 1–5), not a percentage'
            )
        if measure in ("win rate", "preference"):
            if percent:
                threshold = number / 100
            if not 0 <= threshold <= 1:
                raise CriterionError(
                    f'"{text}": a {measure} is a share between 0 and 1; write '
                    f"{number / 100:g} or {number:g}%"
                )
    return Criterion(text, "human", None, op, threshold, measure)


def _op(word: str | None, default: str = ">=") -> str:
    if word is None:
        return default
    return _WORD_OPS.get(word.lower()) or _SYMBOL_OPS[word]


def _improvement(text: str, metric_name: str, rest: str | None, verb: str = "") -> Criterion:
    metric = _resolve_metric(metric_name, text)
    lower_better = metric in LOWER_IS_BETTER
    # Chinese says the direction ("higher"/"lower") where English says "improves".
    if verb.startswith(("降低", "低")) and not lower_better:
        raise CriterionError(f'"{text}": a lower {metric} is worse; write "{metric} 比基线提高 …"')
    if verb.startswith(("提高", "高")) and lower_better:
        raise CriterionError(
            f'"{text}": a lower perplexity is better; write "perplexity 比基线降低 …"'
        )
    if not rest:
        return Criterion(text, "improvement", metric, ">", 0.0)
    found = _COMPARISON_RE.match(rest)
    if found is None:
        raise CriterionError(
            f'could not read the amount "{rest}" in "{text}": write it like '
            f'"{metric} improves on baseline by >= 0.05"'
        )
    number, percent = float(found["num"]), found["pct"] is not None
    threshold = _scale(metric, number, percent, improvement=True, text=text)
    return Criterion(text, "improvement", metric, _op(found["op"]), threshold)


def parse_criterion(text: str) -> Criterion:
    """Read one success criterion; raise ``CriterionError`` saying what to write instead."""
    normal = _normalise(text)
    if not normal:
        raise CriterionError(f"the criterion is empty: {_EXAMPLES}")
    lowered = normal.lower()
    if lowered.startswith("human") or any(word in lowered for word in _HUMAN_WORDS):
        return _parse_human(text, normal)
    found = _IMPROVEMENT_RE.match(normal) or _IMPROVEMENT_ZH_RE.match(normal)
    if found is not None:
        verb = found.groupdict().get("verb") or ""
        return _improvement(text, found["metric"], found["rest"], verb)
    if "baseline" in lowered or "基线" in lowered:
        raise _unreadable(text.strip())
    found = _ABSOLUTE_RE.match(normal)
    if found is None:
        raise _unreadable(text.strip())
    metric = _resolve_metric(found["metric"], text)
    number, percent = float(found["num"]), found["pct"] is not None
    threshold = _scale(metric, number, percent, improvement=False, text=text)
    return Criterion(text, "absolute", metric, _op(found["op"]), threshold)


def check_criteria(texts: Sequence[str]) -> list[tuple[int, str]]:
    """(index, message) for each criterion that cannot be read."""
    problems = []
    for index, text in enumerate(texts):
        try:
            parse_criterion(text)
        except CriterionError as error:
            problems.append((index, str(error)))
    return problems


# --- Verdicts -------------------------------------------------------------------------------

_PRETTY = {">=": "≥", "<=": "≤", ">": ">", "<": "<", "==": "="}
_NEGATED = {">=": "<", "<=": ">", ">": "≤", "<": "≥", "==": "≠"}


def _holds(value: float, op: str, threshold: float) -> bool:
    if op == "==":
        return math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12)
    return {
        ">=": value >= threshold,
        ">": value > threshold,
        "<=": value <= threshold,
        "<": value < threshold,
    }[op]


def _margin(value: float, op: str, threshold: float) -> float:
    """Signed distance in the criterion's good direction: positive means room to spare."""
    if op in (">=", ">"):
        return value - threshold
    if op in ("<=", "<"):
        return threshold - value
    return -abs(value - threshold)


def _fmt(metric: str, number: float) -> str:
    return f"{number:.3f}" if metric in FRACTION_METRICS else f"{number:.2f}"


def _finite(number: Any) -> float | None:
    if isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number):
        return float(number)
    return None


def _read(entry: Any) -> tuple[float, list[float] | None] | None:
    """(value, [low, high] or None) from a stored metric, or None when it is absent."""
    if isinstance(entry, Mapping):
        value = _finite(entry.get("value"))
        low, high = _finite(entry.get("low")), _finite(entry.get("high"))
    else:
        value, low, high = _finite(entry), None, None
    if value is None:
        return None
    return value, ([low, high] if low is not None and high is not None else None)


def _base(text: str, criterion: Criterion | None, status: str, explanation: str) -> dict[str, Any]:
    return {
        "criterion": text,
        "status": status,
        "kind": criterion.kind if criterion else None,
        "metric": criterion.metric if criterion else None,
        "model": None,
        "value": None,
        "threshold": criterion.threshold if criterion else None,
        "op": criterion.op if criterion else None,
        "interval": None,
        "margin": None,
        "confident": None,
        "explanation": explanation,
    }


def _measurement(
    criterion: Criterion, results: Mapping[str, Any]
) -> tuple[float, list[float] | None] | str:
    """The number the criterion is about, or why there is none."""
    metric = str(criterion.metric)
    subject = results.get("subject")
    if criterion.kind == "improvement":
        deltas = (results.get("deltas") or {}).get(subject)
        if results.get("baseline") is None or not deltas:
            return "not measured: this evaluation has no prompting baseline"
        found = _read(deltas.get(metric))
    else:
        found = _read(((results.get("models") or {}).get(subject) or {}).get(metric))
    if found is None:
        return f"not measured: {metric} was not measured in this evaluation"
    value, interval = found
    if criterion.kind == "improvement" and metric in LOWER_IS_BETTER:
        # Stored deltas are subject minus baseline; a drop in perplexity is the improvement.
        value, interval = -value, (None if interval is None else [-interval[1], -interval[0]])
    return value, interval


def _judge(criterion: Criterion, value: float, interval: list[float] | None) -> dict[str, Any]:
    metric, op, threshold = str(criterion.metric), criterion.op, criterion.threshold
    met = _holds(value, op, threshold)
    # Rounded so that 0.43 - 0.40 reads 0.03 in the API, not 0.029999999999999971.
    margin = round(_margin(value, op, threshold), 12)
    if criterion.kind == "improvement":
        name = f"{metric} {'drop from' if metric in LOWER_IS_BETTER else 'gain over'} baseline"
    else:
        name = metric
    shown = f"{name} {_fmt(metric, value)}"
    limit = _fmt(metric, threshold)
    ci = f"95% CI {_fmt(metric, interval[0])}–{_fmt(metric, interval[1])}" if interval else ""
    if met:
        explanation = f"met: {shown} {_PRETTY[op]} {limit}" + (f" ({ci})" if ci else "")
    else:
        gap = "off" if op == "==" else "short"
        explanation = f"not met: {shown} {_NEGATED[op]} {limit} ({gap} by {_fmt(metric, -margin)})"
        explanation += f"; {ci}" if ci else ""
    # Confident: the verdict would be the same anywhere in the interval.
    confident = None
    if interval is not None:
        confident = all(_holds(end, op, threshold) == met for end in interval)
        if not confident:
            explanation += ", but the 95% interval includes the threshold"
    return {
        "status": "met" if met else "not_met",
        "value": value,
        "interval": interval,
        "margin": margin,
        "confident": confident,
        "explanation": explanation,
    }


def _human(
    entry: dict[str, Any], criterion: Criterion, human: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A human-review criterion, judged on a review campaign's results once there are any:
    the win rate of the fine-tuned model over the baseline, or its mean rating."""
    key = {"win rate": "win_rate", "preference": "win_rate", "rating": "rating"}.get(
        str(criterion.human_measure)
    )
    found = _read((human or {}).get(key)) if key else None
    if found is None:
        entry.update(status="pending", explanation="waits for human review")
        return entry
    named = replace(criterion, metric=f"human {criterion.human_measure}")
    entry.update(_judge(named, *found))
    if not (human or {}).get("final"):
        entry["explanation"] += " (the review campaign is still open)"
    return entry


def _verdict_one(text: str, results: Mapping[str, Any] | None) -> dict[str, Any]:
    try:
        criterion = parse_criterion(text)
    except CriterionError as error:
        return _base(text, None, "invalid", str(error))
    entry = _base(text, criterion, "not_measured", "not measured: no evaluation results yet")
    if results is not None:
        subject = results.get("subject")
        entry["model"] = (results.get("labels") or {}).get(subject, subject)
    if criterion.kind == "human":
        return _human(entry, criterion, (results or {}).get("human"))
    if results is None:
        return entry
    measured = _measurement(criterion, results)
    if isinstance(measured, str):
        entry["explanation"] = measured
        return entry
    entry.update(_judge(criterion, *measured))
    return entry


def verdict(texts: Sequence[str], results: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """One verdict per criterion, in order, on the subject model of ``results``."""
    return [_verdict_one(text, results) for text in texts]


def summary(verdicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Overall status and counts per status of a list of verdicts.

    The status is the first that applies: ``not_met`` when any criterion is not met; ``met``
    when every criterion that is not pending (human review) is met and at least one is;
    ``not_measured`` when some criterion could not be judged (not measured or invalid) or
    there are no criteria; ``pending`` when only human review is left.
    """
    statuses = ("met", "not_met", "pending", "not_measured", "invalid")
    counts = {status: sum(1 for v in verdicts if v["status"] == status) for status in statuses}
    if counts["not_met"]:
        status = "not_met"
    elif counts["met"] and not counts["not_measured"] and not counts["invalid"]:
        status = "met"
    elif counts["not_measured"] or counts["invalid"] or not verdicts:
        status = "not_measured"
    else:
        status = "pending"
    return {"status": status, **counts}
