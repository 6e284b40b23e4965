"""Statistics of human review results: win rate, rubric ratings, agreement and disagreements.

Pure functions over ``RatingRow`` values (at most one per item and reviewer), stdlib and numpy
only, so the web process and the CLI can summarise a campaign without torch or a database.
Every result is built of dicts, lists, strings, ints, floats and None, ready for JSON.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

CHOICES = ("a", "b", "tie", "both_bad")
Z95 = 1.959963984540054
# Beyond this many degrees of freedom Student's t and the normal quantile agree to ~1e-5, and
# the incomplete beta's continued fraction would need thousands of terms.
NORMAL_DF = 100_000
_STANDARD_NORMAL = NormalDist()


@dataclass(frozen=True)
class RatingRow:
    """One reviewer's blind rating of one item: a preference, rubric scores, or both."""

    item: int
    reviewer: str
    choice: str | None
    scores: dict[str, dict[str, int]] = field(default_factory=dict)


# ---------------------------------------------------------------- intervals


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion; (0.0, 1.0) when there are no trials.

    With p = successes / n: centre = (p + z²/2n) / (1 + z²/n) and
    half-width = z · sqrt(p(1 − p)/n + z²/4n²) / (1 + z²/n); the bounds are centre ∓ half.
    """
    if n == 0:
        return (0.0, 1.0)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"Wilson interval needs 0 <= successes <= n, got {successes} of {n}.")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # At 0 or n successes the bound is exactly 0 or 1 in theory; rounding leaves it a hair off.
    low = 0.0 if successes == 0 else centre - half
    high = 1.0 if successes == n else centre + half
    return (low, high)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny = 1e-300
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 10_000):
        # Even step, then odd step, of the fraction's terms d_2m and d_2m+1.
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            step = c * d
            result *= step
        if abs(step - 1.0) < 1e-15:
            break
    return result


def _regularised_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b), for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    # The fraction converges fast only below this point; above it use I_x(a,b) = 1 − I_1−x(b,a).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def _student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t: 1 − ½·I_{df/(df+t²)}(df/2, ½) when t >= 0, mirrored below."""
    tail = 0.5 * _regularised_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: int) -> float:
    """The t with P(T <= t) = p for Student's t with ``df`` degrees of freedom.

    Computed, not tabled: the CDF comes from the regularised incomplete beta function and is
    inverted by bisection; beyond NORMAL_DF degrees of freedom the normal quantile is used.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"A quantile needs 0 < p < 1, got {p}.")
    if df < 1:
        raise ValueError(f"Student's t needs at least one degree of freedom, got {df}.")
    if df > NORMAL_DF:
        return _STANDARD_NORMAL.inv_cdf(p)
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while _student_t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if _student_t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


def mean_interval(values: Sequence[float], z: float = 1.96) -> dict[str, Any]:
    """Mean with a Student's t interval: mean ± t(df = n − 1) · sd / √n.

    ``z`` names the confidence level as a normal quantile (1.96 → 95%); the t quantile is taken
    at the same one-sided probability Φ(z), so small samples get their wider interval. ``sd``
    is the sample standard deviation (n − 1 in the denominator). One value: low = high = mean
    and sd 0.0; no values: None for everything but n.
    """
    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0, "sd": None}
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    if n == 1:
        return {"mean": mean, "low": mean, "high": mean, "n": 1, "sd": 0.0}
    sd = float(array.std(ddof=1))
    half = student_t_quantile(_STANDARD_NORMAL.cdf(z), n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n, "sd": sd}


# ---------------------------------------------------------------- agreement coefficients


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's κ of two raters: (p_o − p_e) / (1 − p_e), None when undefined.

    p_o is the share of items where both gave the same label; p_e = Σ_k p1_k · p2_k with p1_k
    and p2_k each rater's share of label k. Undefined with no items or when p_e = 1.
    """
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(1 for first, second in pairs if first == second) / n
    first_counts = Counter(first for first, _ in pairs)
    second_counts = Counter(second for _, second in pairs)
    expected = sum(count * second_counts[label] for label, count in first_counts.items()) / n**2
    if math.isclose(expected, 1.0):
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(item_labels: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' κ for any number of raters per item, None when undefined.

    Items with fewer than two labels are ignored. Per item P_i = Σ_j n_ij(n_ij − 1) /
    (n_i(n_i − 1)); p_j is label j's share of all ratings of the used items, P_e = Σ_j p_j²;
    κ = (P̄ − P_e) / (1 − P_e) with P̄ the mean of P_i. Undefined with no usable items or when
    P_e = 1 (everyone always gave one label).
    """
    totals: Counter[str] = Counter()
    agreements: list[float] = []
    for labels in item_labels:
        n_i = len(labels)
        if n_i < 2:
            continue
        counts = Counter(labels)
        totals.update(counts)
        agreements.append(sum(c * (c - 1) for c in counts.values()) / (n_i * (n_i - 1)))
    if not agreements:
        return None
    n_ratings = sum(totals.values())
    expected = sum((count / n_ratings) ** 2 for count in totals.values())
    if math.isclose(expected, 1.0):
        return None
    return (sum(agreements) / len(agreements) - expected) / (1.0 - expected)


def krippendorff_alpha(
    units: Sequence[Sequence[float | str | None]], level: Literal["nominal", "interval"]
) -> float | None:
    """Krippendorff's α from the coincidence matrix, None when undefined.

    None entries are missing values; units with fewer than two values are ignored. A unit with
    m values adds 1/(m − 1) to o_ck for each ordered pair of its values (c, k) from different
    coders; n_c = Σ_k o_ck and n = Σ_c n_c. Then α = 1 − (n − 1) · Σ o_ck δ²_ck /
    Σ n_c n_k δ²_ck, with δ² = [c ≠ k] (nominal) or (c − k)² (interval). Undefined when no unit
    is pairable or all values are equal (no expected disagreement).
    """
    if level not in ("nominal", "interval"):
        raise ValueError(
            f"Krippendorff's alpha level must be 'nominal' or 'interval', not {level!r}."
        )
    pairable = [
        [v for v in unit if v is not None]
        for unit in units
        if sum(v is not None for v in unit) >= 2
    ]
    index: dict[Hashable, int] = {}
    for unit in pairable:
        for value in unit:
            index.setdefault(value, len(index))
    if not index:
        return None
    coincidences = np.zeros((len(index), len(index)))
    for unit in pairable:
        counts = Counter(index[value] for value in unit)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                # Pairs of values from different coders: a value never pairs with itself.
                coincidences[c, k] += n_c * (n_k - (c == k)) / (len(unit) - 1)
    if level == "nominal":
        delta = 1.0 - np.eye(len(index))
    else:
        numbers = np.array([_as_number(value) for value in index])
        delta = (numbers[:, None] - numbers[None, :]) ** 2
    marginals = coincidences.sum(axis=1)
    n = marginals.sum()
    expected = float((np.outer(marginals, marginals) * delta).sum())
    if expected == 0.0:
        return None
    return float(1.0 - (n - 1) * (coincidences * delta).sum() / expected)


def _as_number(value: Hashable) -> float:
    """A value of an interval-level unit as a float, or a clear error."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(
            f"Interval-level alpha needs numbers, got {value!r}; use level='nominal' for labels."
        ) from None


# ---------------------------------------------------------------- campaign results


def _check_rows(rows: Sequence[RatingRow]) -> None:
    """Refuse unknown choices and a second rating of one item by one reviewer."""
    seen: set[tuple[int, str]] = set()
    for row in rows:
        if row.choice is not None and row.choice not in CHOICES:
            raise ValueError(
                f"Reviewer {row.reviewer!r} gave item {row.item} the choice {row.choice!r}; "
                f"expected one of {', '.join(CHOICES)} or none."
            )
        key = (row.item, row.reviewer)
        if key in seen:
            raise ValueError(
                f"Reviewer {row.reviewer!r} rated item {row.item} twice; "
                "keep one rating per item and reviewer."
            )
        seen.add(key)


def _by_item(rows: Sequence[RatingRow]) -> dict[int, list[RatingRow]]:
    """Rows grouped by item, items in ascending order."""
    groups: dict[int, list[RatingRow]] = defaultdict(list)
    for row in rows:
        groups[row.item].append(row)
    return dict(sorted(groups.items()))


def _choice_counts(rows: Sequence[RatingRow]) -> dict[str, int]:
    """How many rows chose each of a, b, tie and both_bad."""
    counts = Counter(row.choice for row in rows if row.choice is not None)
    return {choice: counts[choice] for choice in CHOICES}


def win_rate(rows: Sequence[RatingRow]) -> dict[str, Any]:
    """Votes per choice and B's win rate over A, one vote per rating.

    win_rate = b / (a + b), ties and both-bad left out, with its Wilson 95% interval
    (low/high); None when no vote was decisive. win_rate_ties_half = (b + ½·tie) /
    (a + b + tie), point only, None when there were only both-bad votes or none.
    """
    _check_rows(rows)
    counts = _choice_counts(rows)
    a, b, tie = counts["a"], counts["b"], counts["tie"]
    result: dict[str, Any] = {**counts, "n": sum(counts.values())}
    if a + b:
        low, high = wilson_interval(b, a + b)
        result.update(win_rate=b / (a + b), low=low, high=high)
    else:
        result.update(win_rate=None, low=None, high=None)
    result["win_rate_ties_half"] = (b + 0.5 * tie) / (a + b + tie) if a + b + tie else None
    return result


def ratings(rows: Sequence[RatingRow]) -> dict[str, Any]:
    """Rubric scores per model: ``{model: {"criteria": {criterion: interval}, "overall": ...}}``.

    Each criterion gets mean_interval of its scores. "overall" is mean_interval of each
    rating's mean over the criteria it scored, so one rating counts once however many
    criteria the rubric has.
    """
    _check_rows(rows)
    scores: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    overall: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        for model, criteria in row.scores.items():
            if not criteria:
                continue
            for criterion, score in criteria.items():
                scores[model][criterion].append(score)
            overall[model].append(sum(criteria.values()) / len(criteria))
    return {
        model: {
            "criteria": {c: mean_interval(v) for c, v in sorted(scores[model].items())},
            "overall": mean_interval(overall[model]),
        }
        for model in sorted(scores)
    }


def agreement(rows: Sequence[RatingRow]) -> dict[str, Any]:
    """Inter-reviewer agreement on choices and on each rubric criterion.

    Choices: Fleiss' κ and nominal Krippendorff's α over the items with at least two votes,
    and Cohen's κ only when exactly two reviewers voted on all those items (else None).
    Ratings: per criterion, interval Krippendorff's α whose units are (item, model) pairs and
    whose values are the reviewers' scores.
    """
    _check_rows(rows)
    votes: dict[int, dict[str, str]] = {}
    criterion_units: dict[str, dict[tuple[int, str], list[int]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for item, item_rows in _by_item(rows).items():
        choices = {row.reviewer: row.choice for row in item_rows if row.choice is not None}
        if len(choices) >= 2:
            votes[item] = choices
        for row in item_rows:
            for model, criteria in row.scores.items():
                for criterion, score in criteria.items():
                    criterion_units[criterion][(item, model)].append(score)
    labels = [list(choices.values()) for choices in votes.values()]
    reviewers = sorted({reviewer for choices in votes.values() for reviewer in choices})
    cohen = None
    if len(reviewers) == 2:
        # Two reviewers in all and two votes per used item: both voted on every one of them.
        first, second = reviewers
        cohen = cohen_kappa([(choices[first], choices[second]) for choices in votes.values()])
    return {
        "choice": {
            "fleiss_kappa": fleiss_kappa(labels),
            "krippendorff_alpha": krippendorff_alpha(labels, "nominal"),
            "cohen_kappa": cohen,
            "items": len(votes),
        },
        "ratings": {
            criterion: krippendorff_alpha(list(units.values()), "interval")
            for criterion, units in sorted(criterion_units.items())
        },
    }


def _normalised_entropy(counts: dict[str, int]) -> float:
    """Entropy of the vote shares over the four choices divided by log 4: 0 unanimous, 1 even."""
    total = sum(counts.values())
    entropy = -sum(c / total * math.log(c / total) for c in counts.values() if c)
    return entropy / math.log(len(CHOICES))


def _score_spread(rows: Sequence[RatingRow]) -> float | None:
    """Mean over (model, criterion) of the population variance of the scores given to it.

    Only (model, criterion) pairs scored by at least two reviewers count; None when none was.
    """
    scores: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row in rows:
        for model, criteria in row.scores.items():
            for criterion, score in criteria.items():
                scores[(model, criterion)].append(score)
    variances = [float(np.var(values)) for values in scores.values() if len(values) >= 2]
    return sum(variances) / len(variances) if variances else None


def disagreements(rows: Sequence[RatingRow], limit: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` items reviewers disagreed on most, among items with at least two ratings.

    When the campaign has choices, disagreement is the normalised entropy of an item's votes
    (H / log 4, over items with two or more votes); in a score-only campaign it is the score
    spread (see _score_spread). Ties go to the item with more votes, then the lower item.
    """
    _check_rows(rows)
    by_choice = any(row.choice is not None for row in rows)
    ranked: list[tuple[tuple[float, int, int], dict[str, Any]]] = []
    for item, item_rows in _by_item(rows).items():
        votes = _choice_counts(item_rows)
        spread = _score_spread(item_rows)
        if by_choice:
            weight = sum(votes.values())
            disagreement = _normalised_entropy(votes) if weight >= 2 else None
        else:
            weight = sum(1 for row in item_rows if any(row.scores.values()))
            disagreement = spread if weight >= 2 else None
        if disagreement is None:
            continue
        entry = {"item": item, "votes": votes, "score_spread": spread, "disagreement": disagreement}
        # Rounded so that equal splits of different sizes tie exactly and fall to the vote count.
        ranked.append(((-round(disagreement, 12), -weight, item), entry))
    ranked.sort(key=lambda pair: pair[0])
    return [entry for _, entry in ranked[: max(limit, 0)]]


def per_reviewer(rows: Sequence[RatingRow]) -> list[dict[str, Any]]:
    """Per reviewer (in id order): ratings given, votes for each choice and mean score given."""
    _check_rows(rows)
    by_reviewer: dict[str, list[RatingRow]] = defaultdict(list)
    for row in rows:
        by_reviewer[row.reviewer].append(row)
    result = []
    for reviewer, reviewer_rows in sorted(by_reviewer.items()):
        given = [s for row in reviewer_rows for c in row.scores.values() for s in c.values()]
        result.append(
            {
                "reviewer": reviewer,
                "ratings": len(reviewer_rows),
                **_choice_counts(reviewer_rows),
                "mean_score": sum(given) / len(given) if given else None,
            }
        )
    return result


def summarise(rows: Sequence[RatingRow]) -> dict[str, Any]:
    """Everything above for one campaign, plus how many ratings and distinct items it has."""
    _check_rows(rows)
    return {
        "win_rate": win_rate(rows),
        "ratings": ratings(rows),
        "agreement": agreement(rows),
        "disagreements": disagreements(rows),
        "reviewers": per_reviewer(rows),
        "ratings_count": len(rows),
        "items_rated": len({row.item for row in rows}),
    }
