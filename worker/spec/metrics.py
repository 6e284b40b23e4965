"""Text-generation metrics with bootstrap confidence intervals, Chinese-aware.

Torch-free and web-free (sacrebleu and numpy only), so the web process can score and compare
runs without loading a model.

Scales follow the libraries people compare against: BLEU is 0-100 like sacreBLEU's; ROUGE,
exact match and token F1 are 0-1 like rouge-score's and SQuAD's.

CJK handling:
- BLEU uses sacreBLEU's ``zh`` tokenizer for Chinese. Japanese and Korean would want
  ``ja-mecab`` / ``ko-mecab``; those need MeCab dictionaries that are not installed here, so
  they fall back to sacreBLEU's ``char`` tokenizer (every character a token, Latin included).
- ROUGE and token F1 treat each CJK character as a token. rouge-score keeps only ``[a-z0-9]``
  runs, so on Chinese it sees no tokens at all and scores 0; our tokenizer is rouge-score's
  plus one token per Han / kana / hangul character, so on text without CJK it is rouge-score's
  exactly. Stemming is off by default, as in rouge-score.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
from sacrebleu.metrics.bleu import BLEU

# Han (with extensions and compatibility ideographs), kana (with half-width katakana), hangul.
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_KANA = "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_HANGUL = "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
_CJK_CHAR = f"[{_HAN}{_KANA}{_HANGUL}]"
_HAN_RE = re.compile(f"[{_HAN}]")
_KANA_RE = re.compile(f"[{_KANA}]")
_HANGUL_RE = re.compile(f"[{_HANGUL}]")
_CJK_RE = re.compile(_CJK_CHAR)
# rouge-score's tokens are maximal [a-z0-9] runs of the lowercased text; adding single CJK
# characters as an alternative leaves non-CJK text tokenised exactly as rouge-score does.
_ROUGE_TOKEN_RE = re.compile(f"[a-z0-9]+|{_CJK_CHAR}")
_F1_TOKEN_RE = re.compile(f"{_CJK_CHAR}|[^\\s{_HAN}{_KANA}{_HANGUL}]+")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_WHITESPACE_RE = re.compile(r"\s+")
_ASCII_PUNCTUATION = frozenset(string.punctuation)

# A text is CJK when at least this share of its letters and digits are CJK characters. One
# Chinese character carries about as much as a short English word, so a Chinese sentence with
# a few English terms in it ("用Python写一个爬虫") still counts as Chinese.
CJK_SHARE = 0.3

MEAN_METRICS = ("rouge1", "rouge2", "rougeL", "exact_match", "token_f1")
BLEU_ORDER = 4

# How people read each metric's name (pages, model cards), in the order they are shown.
METRIC_TITLES = {
    "bleu": "BLEU",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "exact_match": "Exact match",
    "token_f1": "Token F1",
    "perplexity": "Perplexity",
}


class _BootstrapOptions(TypedDict):
    resamples: int
    seed: int
    alpha: float


@dataclass(frozen=True)
class Interval:
    """A point value with its bootstrap confidence interval over ``n`` examples."""

    value: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Report:
    """Scores of one model's predictions on a set of references."""

    n: int
    language: str
    bleu_tokenizer: str
    metrics: dict[str, Interval]
    per_example: dict[str, np.ndarray]
    # Per-example BLEU sufficient statistics: hyp_len, ref_len, 4 matched, 4 total n-grams.
    bleu_stats: np.ndarray
    references: tuple[str, ...] = field(repr=False)
    # Per-example summed NLL and token count of the references, when perplexity was given.
    nll_stats: np.ndarray | None = None


# --- Language -------------------------------------------------------------------------------


def detect_language(text: str) -> str:
    """``zh``, ``ja`` or ``ko`` when the text is mostly CJK, else ``other``."""
    alnum = sum(1 for ch in text if ch.isalnum())
    cjk = len(_CJK_RE.findall(text))
    if alnum == 0 or cjk / alnum < CJK_SHARE:
        return "other"
    hangul = len(_HANGUL_RE.findall(text))
    kana = len(_KANA_RE.findall(text))
    if hangul * 2 > cjk:
        return "ko"
    # Japanese mixes kanji with kana; Chinese text has essentially none.
    if kana * 10 >= cjk:
        return "ja"
    return "zh" if _HAN_RE.search(text) else "other"


def corpus_language(texts: Sequence[str]) -> str:
    """The most common per-text language; ties go to the CJK language."""
    counts = Counter(detect_language(text) for text in texts)
    if not counts:
        return "other"
    return max(counts, key=lambda lang: (counts[lang], lang != "other"))


def _bleu_tokenizer(language: str) -> str:
    if language == "zh":
        return "zh"
    if language in ("ja", "ko"):
        name = f"{language}-mecab"
        try:
            BLEU(tokenize=name)
        except (ImportError, RuntimeError):
            return "char"
        return name
    return "13a"


def _normalise_language(language: str | None, references: Sequence[str]) -> str:
    if language is None:
        return corpus_language(references)
    base = language.split("-")[0].split("_")[0].lower()
    return base if base in ("zh", "ja", "ko") else "other"


# --- Per-example metrics --------------------------------------------------------------------


def rouge_tokens(text: str, *, stem: bool = False) -> list[str]:
    """rouge-score's tokens, plus one token per CJK character."""
    tokens = _ROUGE_TOKEN_RE.findall(text.lower())
    if stem:
        stemmer = _porter_stemmer()
        # rouge-score stems only words longer than three characters.
        tokens = [stemmer.stem(t) if len(t) > 3 else t for t in tokens]
    return tokens


_STEMMER: list[Any] = []


def _porter_stemmer() -> Any:
    if not _STEMMER:
        from nltk.stem import porter  # only when stemming is asked for: nltk is slow to import

        _STEMMER.append(porter.PorterStemmer())
    return _STEMMER[0]


def _f_measure(overlap: int, predicted: int, target: int) -> float:
    # rouge-score's arithmetic, step for step, so values agree to the last bit.
    precision = overlap / max(predicted, 1)
    recall = overlap / max(target, 1)
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _rouge_n(target: list[str], prediction: list[str], n: int) -> float:
    target_ngrams = Counter(tuple(target[i : i + n]) for i in range(len(target) - n + 1))
    predicted_ngrams = Counter(tuple(prediction[i : i + n]) for i in range(len(prediction) - n + 1))
    overlap = sum((target_ngrams & predicted_ngrams).values())
    return _f_measure(overlap, sum(predicted_ngrams.values()), sum(target_ngrams.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004).

    Character-level Chinese makes sequences long; the textbook DP is O(len(a)·len(b)) Python
    steps, this is O(len(b)) big-integer operations.
    """
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def _rouge_l(target: list[str], prediction: list[str]) -> float:
    if not target or not prediction:
        return 0.0
    lcs = lcs_length(target, prediction)
    precision = lcs / len(prediction)
    recall = lcs / len(target)
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def rouge(prediction: str, reference: str, *, stem: bool = False) -> dict[str, float]:
    """ROUGE-1/2/L F1 as rouge-score computes them, with CJK scored by characters."""
    target = rouge_tokens(reference, stem=stem)
    predicted = rouge_tokens(prediction, stem=stem)
    return {
        "rouge1": _rouge_n(target, predicted, 1),
        "rouge2": _rouge_n(target, predicted, 2),
        "rougeL": _rouge_l(target, predicted),
    }


def normalise_for_match(text: str) -> str:
    """NFKC (full-width → half-width), casefold, strip, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _WHITESPACE_RE.sub(" ", text).strip()


def exact_match(prediction: str, reference: str) -> float:
    return float(normalise_for_match(prediction) == normalise_for_match(reference))


def f1_tokens(text: str) -> list[str]:
    """SQuAD's answer normalisation, then words, with each CJK character its own token.

    Beyond SQuAD: NFKC first, and Unicode punctuation (，。！) goes along with ASCII's.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(
        " " if ch in _ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P") else ch
        for ch in text
    )
    text = _ARTICLES_RE.sub(" ", text)
    return _F1_TOKEN_RE.findall(text)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1; two empty answers agree fully."""
    predicted = f1_tokens(prediction)
    target = f1_tokens(reference)
    if not predicted or not target:
        return float(predicted == target)
    common = sum((Counter(predicted) & Counter(target)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(target)
    return 2 * precision * recall / (precision + recall)


# --- Corpus BLEU from sufficient statistics -------------------------------------------------


def bleu_from_stats(totals: np.ndarray) -> np.ndarray:
    """Corpus BLEU (sacreBLEU's default: exp smoothing, no effective order), vectorised.

    ``totals`` has shape (..., 10): hyp_len, ref_len, matched 1-4-grams, total 1-4-grams, each
    summed over a corpus (or a bootstrap resample of one). Same arithmetic as
    ``BLEU.compute_bleu``, so full-corpus values equal ``sacrebleu.corpus_bleu``'s.
    """
    totals = np.asarray(totals, dtype=np.float64)
    sys_len, ref_len = totals[..., 0], totals[..., 1]
    correct = totals[..., 2 : 2 + BLEU_ORDER]
    total = totals[..., 2 + BLEU_ORDER : 2 + 2 * BLEU_ORDER]
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(
            sys_len < ref_len,
            np.where(sys_len > 0, np.exp(1 - ref_len / sys_len), 0.0),
            1.0,
        )
        # mteval's smoothing: the k-th order with no match gets 1 / (2^k · total).
        missing = correct == 0
        smooth = np.cumprod(np.where(missing, 2.0, 1.0), axis=-1)
        precision = np.where(missing, 100.0 / (smooth * total), 100.0 * correct / total)
        score = bp * np.exp(np.log(precision).sum(axis=-1) / BLEU_ORDER)
    # sacreBLEU scores 0 when nothing matches or an order has no n-grams at all.
    zero = (correct.sum(axis=-1) == 0) | (total == 0).any(axis=-1)
    return np.where(zero, 0.0, score)


def _mean_of(n: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda totals: totals[..., 0] / n


def _perplexity_from_stats(totals: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.exp(totals[..., 0] / totals[..., 1])


# --- Bootstrap ------------------------------------------------------------------------------


def _as_stats(data: Any) -> np.ndarray:
    stats = np.asarray(data, dtype=np.float64)
    if stats.ndim == 1:
        stats = stats[:, None]
    if stats.ndim != 2 or stats.shape[0] == 0:
        raise ValueError(
            "bootstrap needs one value (or one row of statistics) per example, and at least "
            f"one example; got an array of shape {stats.shape}"
        )
    return stats


def _resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """How often each example is drawn in each resample: shape (resamples, n).

    Summing statistics is then one matrix product, instead of gathering a
    (resamples, n, k) array.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    draws += np.arange(resamples)[:, None] * n
    counts = np.bincount(draws.ravel(), minlength=resamples * n)
    return counts.reshape(resamples, n).astype(np.float64)


def _interval(point: float, samples: np.ndarray, n: int, alpha: float) -> Interval:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    low, high = np.nanquantile(samples, [alpha / 2, 1 - alpha / 2])
    return Interval(value=float(point), low=float(low), high=float(high), n=n)


def bootstrap_ci(
    data: Any,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """Percentile bootstrap interval of a metric over examples.

    ``data`` is one value per example (the metric is their mean), or one row of additive
    statistics per example with ``statistic`` turning summed rows (shape (..., k)) into the
    metric — corpus BLEU (``bleu_from_stats``) and perplexity are recomputed per resample
    from their sums this way, never averaged per example.
    """
    stats = _as_stats(data)
    n = stats.shape[0]
    metric = statistic or _mean_of(n)
    counts = _resample_counts(n, resamples, seed)
    point = metric(stats.sum(axis=0))
    return _interval(float(point), metric(counts @ stats), n, alpha)


def paired_difference_ci(
    a: Any,
    b: Any,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """Interval of metric(a) − metric(b) for two models scored on the same examples.

    Each resample draws the same example indices for both models, so the variation shared by
    both (hard examples are hard for both) cancels out of the difference.
    """
    stats_a, stats_b = _as_stats(a), _as_stats(b)
    if stats_a.shape != stats_b.shape:
        raise ValueError(
            "paired comparison needs both models scored on the same examples; got "
            f"{stats_a.shape[0]} and {stats_b.shape[0]} examples"
        )
    n = stats_a.shape[0]
    metric = statistic or _mean_of(n)
    counts = _resample_counts(n, resamples, seed)
    point = metric(stats_a.sum(axis=0)) - metric(stats_b.sum(axis=0))
    samples = metric(counts @ stats_a) - metric(counts @ stats_b)
    return _interval(float(point), samples, n, alpha)


def perplexity(
    nll_sums: Sequence[float],
    token_counts: Sequence[int],
    *,
    resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """Corpus perplexity exp(Σ NLL / Σ tokens) of the references, with its bootstrap CI.

    The model computes each example's summed negative log-likelihood (nats) and token count.
    """
    stats = _perplexity_stats(nll_sums, token_counts)
    return bootstrap_ci(stats, _perplexity_from_stats, resamples=resamples, seed=seed, alpha=alpha)


def _perplexity_stats(nll_sums: Sequence[float], token_counts: Sequence[int]) -> np.ndarray:
    nll = np.asarray(nll_sums, dtype=np.float64)
    tokens = np.asarray(token_counts, dtype=np.float64)
    if nll.shape != tokens.shape or nll.ndim != 1:
        raise ValueError(
            f"perplexity needs one NLL sum and one token count per example; got {nll.size} "
            f"NLL sums and {tokens.size} token counts"
        )
    if (tokens < 0).any() or tokens.sum() <= 0:
        raise ValueError("token counts must be non-negative with at least one token in all")
    if not np.isfinite(nll).all():
        raise ValueError("NLL sums must be finite numbers")
    return np.stack([nll, tokens], axis=1)


# --- Entry points ---------------------------------------------------------------------------


def score(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    language: str | None = None,
    reference_nll: Sequence[float] | None = None,
    reference_tokens: Sequence[int] | None = None,
    stem: bool = False,
    resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Report:
    """Score predictions against one reference each; ``language`` None detects it."""
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions for {len(references)} references; "
            "each example needs exactly one of each"
        )
    if not references:
        raise ValueError("nothing to score: no examples")
    lang = _normalise_language(language, references)
    tokenizer = _bleu_tokenizer(lang)
    sentence_bleu = BLEU(tokenize=tokenizer, effective_order=True)

    per_example: dict[str, list[float]] = {name: [] for name in ("bleu", *MEAN_METRICS)}
    bleu_rows = []
    for prediction, reference in zip(predictions, references, strict=True):
        result = sentence_bleu.sentence_score(prediction, [reference])
        per_example["bleu"].append(result.score)
        bleu_rows.append([result.sys_len, result.ref_len, *result.counts, *result.totals])
        for name, value in rouge(prediction, reference, stem=stem).items():
            per_example[name].append(value)
        per_example["exact_match"].append(exact_match(prediction, reference))
        per_example["token_f1"].append(token_f1(prediction, reference))
    arrays = {name: np.asarray(values) for name, values in per_example.items()}
    bleu_stats = np.asarray(bleu_rows, dtype=np.float64)

    options = _BootstrapOptions(resamples=resamples, seed=seed, alpha=alpha)
    metrics = {"bleu": bootstrap_ci(bleu_stats, bleu_from_stats, **options)}
    metrics.update({name: bootstrap_ci(arrays[name], **options) for name in MEAN_METRICS})

    nll_stats = None
    if (reference_nll is None) != (reference_tokens is None):
        raise ValueError("perplexity needs both reference_nll and reference_tokens")
    if reference_nll is not None and reference_tokens is not None:
        nll_stats = _perplexity_stats(reference_nll, reference_tokens)
        if nll_stats.shape[0] != len(references):
            raise ValueError(
                f"got NLL for {nll_stats.shape[0]} references, but there are {len(references)}"
            )
        metrics["perplexity"] = bootstrap_ci(nll_stats, _perplexity_from_stats, **options)

    return Report(
        n=len(references),
        language=lang,
        bleu_tokenizer=tokenizer,
        metrics=metrics,
        per_example=arrays,
        bleu_stats=bleu_stats,
        references=tuple(references),
        nll_stats=nll_stats,
    )


def compare(
    report_a: Report,
    report_b: Report,
    *,
    resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Interval]:
    """Per metric, A − B with a paired bootstrap interval (an interval above 0: A is better).

    For perplexity lower is better, so there a negative difference favours A.
    """
    if report_a.references != report_b.references:
        raise ValueError(
            "the two reports were scored on different references; a paired comparison needs "
            "both models evaluated on the same examples in the same order"
        )
    if report_a.bleu_tokenizer != report_b.bleu_tokenizer:
        raise ValueError(
            f"BLEU was tokenised differently ({report_a.bleu_tokenizer!r} vs "
            f"{report_b.bleu_tokenizer!r}); score both with the same language"
        )
    options = _BootstrapOptions(resamples=resamples, seed=seed, alpha=alpha)
    deltas = {
        "bleu": paired_difference_ci(
            report_a.bleu_stats, report_b.bleu_stats, bleu_from_stats, **options
        )
    }
    for name in MEAN_METRICS:
        deltas[name] = paired_difference_ci(
            report_a.per_example[name], report_b.per_example[name], **options
        )
    if report_a.nll_stats is not None and report_b.nll_stats is not None:
        deltas["perplexity"] = paired_difference_ci(
            report_a.nll_stats, report_b.nll_stats, _perplexity_from_stats, **options
        )
    return deltas


__all__ = [
    "Interval",
    "Report",
    "bleu_from_stats",
    "bootstrap_ci",
    "compare",
    "corpus_language",
    "detect_language",
    "exact_match",
    "lcs_length",
    "paired_difference_ci",
    "perplexity",
    "rouge",
    "rouge_tokens",
    "score",
    "token_f1",
]
