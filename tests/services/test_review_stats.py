"""Statistics of human review results, checked against hand-computed and published values."""

from __future__ import annotations

import json
import math

import pytest

from app.services.reviews.stats import (
    RatingRow,
    agreement,
    cohen_kappa,
    disagreements,
    fleiss_kappa,
    krippendorff_alpha,
    mean_interval,
    per_reviewer,
    ratings,
    student_t_quantile,
    summarise,
    wilson_interval,
    win_rate,
)

# Fleiss (1971) as reproduced on Wikipedia ("Fleiss' kappa", worked example): 10 items, 14
# raters each, counts per category 1..5. Published: P̄ = 0.378, P_e = 0.213, κ = 0.210.
FLEISS_COUNTS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]

# Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011), the example with missing
# data: 4 observers (rows) x 12 units (columns). Published: nominal α = 0.743, interval 0.849.
NA = None  # a missing value
KRIPPENDORFF_OBSERVERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NA, NA, NA],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NA, 3],
    [NA, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NA],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NA],
]
KRIPPENDORFF_UNITS = [list(unit) for unit in zip(*KRIPPENDORFF_OBSERVERS, strict=True)]


def vote(item: int, reviewer: str, choice: str | None, **scores: dict[str, int]) -> RatingRow:
    """A rating row; keyword arguments are per-model rubric scores."""
    return RatingRow(item=item, reviewer=reviewer, choice=choice, scores=dict(scores))


# ---------------------------------------------------------------- Wilson interval


def test_wilson_interval_of_7_of_10() -> None:
    low, high = wilson_interval(7, 10)
    assert (round(low, 4), round(high, 4)) == (0.3968, 0.8922)


def test_wilson_interval_of_0_of_10_starts_at_zero() -> None:
    # p = 0: centre = half = (z²/20) / (1 + z²/10) = 0.19207 / 1.38415 = 0.13876.
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert round(high, 4) == 0.2775


def test_wilson_interval_of_10_of_10_ends_at_one() -> None:
    low, high = wilson_interval(10, 10)
    assert round(low, 4) == 0.7225
    assert high == 1.0


def test_wilson_interval_without_trials_is_everything() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_refuses_more_successes_than_trials() -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


# ---------------------------------------------------------------- t interval


@pytest.mark.parametrize(
    ("df", "quantile"),
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423), (1000, 1.9623)],
)
def test_student_t_quantile_matches_the_two_sided_95_percent_table(
    df: int, quantile: float
) -> None:
    assert round(student_t_quantile(0.975, df), 4) == quantile


def test_student_t_quantile_is_symmetric_and_normal_for_huge_df() -> None:
    assert student_t_quantile(0.025, 4) == pytest.approx(-student_t_quantile(0.975, 4))
    assert student_t_quantile(0.975, 10**6) == pytest.approx(1.959964, abs=1e-6)


def test_student_t_quantile_refuses_probabilities_outside_0_1() -> None:
    with pytest.raises(ValueError, match="0 < p < 1"):
        student_t_quantile(1.0, 4)


def test_mean_interval_uses_t_with_n_minus_1_degrees_of_freedom() -> None:
    # mean 4.0; sd = sqrt((0 + 1 + 1 + 0 + 0) / 4) = 0.7071; t(4) = 2.7764;
    # half-width = 2.7764 * 0.7071 / sqrt(5) = 0.8780.
    result = mean_interval([4, 5, 3, 4, 4])
    assert result["mean"] == 4.0
    assert result["n"] == 5
    assert round(result["sd"], 4) == 0.7071
    assert round(result["high"] - result["mean"], 4) == 0.8780
    assert round(result["mean"] - result["low"], 4) == 0.8780


def test_mean_interval_of_one_value_is_that_value() -> None:
    assert mean_interval([3]) == {"mean": 3.0, "low": 3.0, "high": 3.0, "n": 1, "sd": 0.0}


def test_mean_interval_of_no_values_is_none() -> None:
    assert mean_interval([]) == {"mean": None, "low": None, "high": None, "n": 0, "sd": None}


# ---------------------------------------------------------------- Fleiss' kappa


def test_fleiss_kappa_reproduces_fleiss_1971_example() -> None:
    items = [[str(j) for j, count in enumerate(row) for _ in range(count)] for row in FLEISS_COUNTS]
    assert round(fleiss_kappa(items) or 0.0, 3) == 0.210


def test_fleiss_kappa_of_perfect_agreement_is_one() -> None:
    assert fleiss_kappa([["a", "a", "a"], ["b", "b", "b"], ["tie", "tie"]]) == 1.0


def test_fleiss_kappa_handles_items_with_different_numbers_of_raters() -> None:
    # P_1 = (2*1 + 1*0) / (3*2) = 1/3, P_2 = 0, P̄ = 1/6; p_a = 3/5, p_b = 2/5, P_e = 13/25;
    # κ = (1/6 - 13/25) / (12/25) = -53/72 = -0.7361.
    assert fleiss_kappa([["a", "a", "b"], ["a", "b"]]) == pytest.approx(-53 / 72)


def test_fleiss_kappa_ignores_items_with_a_single_rater() -> None:
    assert fleiss_kappa([["a", "a", "b"], ["a", "b"], ["b"]]) == pytest.approx(-53 / 72)


def test_fleiss_kappa_is_none_when_only_one_label_was_ever_used() -> None:
    assert fleiss_kappa([["a", "a"], ["a", "a", "a"]]) is None


def test_fleiss_kappa_is_none_without_usable_items() -> None:
    assert fleiss_kappa([["a"], []]) is None


# ---------------------------------------------------------------- Cohen's kappa


def test_cohen_kappa_of_a_2x2_table() -> None:
    #              B yes  B no
    #   A yes        20     5     A yes = 25/50 = 0.5
    #   A no         10    15     B yes = 30/50 = 0.6
    # p_o = (20 + 15) / 50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; κ = (0.7 - 0.5) / 0.5 = 0.4.
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_cohen_kappa_is_none_without_items_or_when_both_always_give_one_label() -> None:
    assert cohen_kappa([]) is None
    assert cohen_kappa([("a", "a"), ("a", "a")]) is None


# ---------------------------------------------------------------- Krippendorff's alpha


def test_krippendorff_alpha_nominal_reproduces_the_2011_example() -> None:
    assert round(krippendorff_alpha(KRIPPENDORFF_UNITS, "nominal") or 0.0, 3) == 0.743


def test_krippendorff_alpha_interval_reproduces_the_2011_example() -> None:
    assert round(krippendorff_alpha(KRIPPENDORFF_UNITS, "interval") or 0.0, 3) == 0.849


def test_krippendorff_alpha_ignores_units_with_fewer_than_two_values() -> None:
    pairable = [[v for v in unit if v is not None] for unit in KRIPPENDORFF_UNITS]
    pairable = [unit for unit in pairable if len(unit) >= 2]
    assert krippendorff_alpha(pairable, "nominal") == krippendorff_alpha(
        KRIPPENDORFF_UNITS, "nominal"
    )


def test_krippendorff_alpha_is_none_without_variation_or_pairable_units() -> None:
    assert krippendorff_alpha([[3, 3], [3, 3, 3]], "interval") is None
    assert krippendorff_alpha([[1], [2]], "nominal") is None


def test_krippendorff_alpha_interval_refuses_labels() -> None:
    with pytest.raises(ValueError, match="level='nominal'"):
        krippendorff_alpha([["a", "b"], ["a", "a"]], "interval")


def test_krippendorff_alpha_refuses_an_unknown_level() -> None:
    with pytest.raises(ValueError, match="'nominal' or 'interval'"):
        krippendorff_alpha([[1, 2]], "ordinal")  # type: ignore[arg-type]


# ---------------------------------------------------------------- campaign results


def test_win_rate_leaves_ties_and_both_bad_out_of_the_rate() -> None:
    rows = [
        vote(1, "ann", "b"),
        vote(2, "ann", "b"),
        vote(3, "ann", "b"),
        vote(4, "ann", "a"),
        vote(5, "ann", "tie"),
        vote(6, "ann", "tie"),
        vote(7, "ann", "both_bad"),
        vote(8, "ann", None, a={"clarity": 3}),
    ]
    result = win_rate(rows)
    assert {k: result[k] for k in ("a", "b", "tie", "both_bad", "n")} == {
        "a": 1,
        "b": 3,
        "tie": 2,
        "both_bad": 1,
        "n": 7,
    }
    assert result["win_rate"] == 0.75  # 3 / (3 + 1)
    assert (result["low"], result["high"]) == wilson_interval(3, 4)
    assert result["win_rate_ties_half"] == pytest.approx(4 / 6)  # (3 + 0.5*2) / (3 + 1 + 2)


def test_win_rate_counts_each_reviewers_vote() -> None:
    rows = [vote(1, "ann", "b"), vote(1, "bob", "b"), vote(1, "cy", "a")]
    result = win_rate(rows)
    assert (result["a"], result["b"], result["n"]) == (1, 2, 3)
    assert result["win_rate"] == pytest.approx(2 / 3)


def test_win_rate_is_none_without_decisive_votes() -> None:
    result = win_rate([vote(1, "ann", "both_bad")])
    assert (result["win_rate"], result["low"], result["high"]) == (None, None, None)
    assert result["win_rate_ties_half"] is None
    assert win_rate([vote(1, "ann", "tie")])["win_rate_ties_half"] == 0.5


def test_ratings_give_an_interval_per_model_and_criterion_and_overall() -> None:
    rows = [
        vote(1, "ann", None, a={"clarity": 4, "accuracy": 2}, b={"clarity": 5, "accuracy": 4}),
        vote(2, "ann", None, a={"clarity": 4}, b={"clarity": 3, "accuracy": 5}),
    ]
    result = ratings(rows)
    assert sorted(result) == ["a", "b"]
    assert result["a"]["criteria"]["clarity"]["mean"] == 4.0
    assert result["a"]["criteria"]["clarity"]["n"] == 2
    assert result["a"]["criteria"]["accuracy"] == mean_interval([2])
    # Overall: each rating's mean over its criteria, a: (4+2)/2 = 3 and 4; b: 4.5 and 4.
    assert result["a"]["overall"] == mean_interval([3.0, 4.0])
    assert result["b"]["overall"]["mean"] == 4.25


def test_agreement_on_choices_of_two_reviewers_includes_cohen_kappa() -> None:
    rows = [
        vote(1, "ann", "a"),
        vote(1, "bob", "a"),
        vote(2, "ann", "b"),
        vote(2, "bob", "b"),
        vote(3, "ann", "a"),
        vote(3, "bob", "b"),
        vote(4, "ann", "tie"),
        vote(4, "bob", "tie"),
        vote(5, "ann", "a"),  # a single vote: not used
    ]
    choice = agreement(rows)["choice"]
    assert choice["items"] == 4
    # Cohen: p_o = 3/4; ann a2 b1 tie1, bob a1 b2 tie1: p_e = (2+2+1)/16; κ = 7/11.
    assert choice["cohen_kappa"] == pytest.approx(7 / 11)
    # Fleiss: P̄ = 3/4; p = (3/8, 3/8, 2/8): P_e = 22/64; κ = (48/64 - 22/64) / (42/64) = 13/21.
    assert choice["fleiss_kappa"] == pytest.approx(13 / 21)
    # Krippendorff: one disagreeing unit gives Σ o δ = 2; Σ n_c n_k δ = 64 - 22 = 42;
    # α = 1 - 7 * 2 / 42 = 2/3.
    assert choice["krippendorff_alpha"] == pytest.approx(2 / 3)


def test_agreement_has_no_cohen_kappa_with_three_reviewers() -> None:
    rows = [
        vote(1, "ann", "a"),
        vote(1, "bob", "a"),
        vote(2, "ann", "b"),
        vote(2, "cy", "b"),
    ]
    choice = agreement(rows)["choice"]
    assert choice["cohen_kappa"] is None
    assert choice["items"] == 2


def test_agreement_on_ratings_is_interval_alpha_per_criterion_over_item_model_units() -> None:
    rows = [
        vote(1, "ann", None, a={"clarity": 4}, b={"clarity": 2}),
        vote(1, "bob", None, a={"clarity": 4}, b={"clarity": 2}),
        vote(2, "ann", None, a={"clarity": 5}),
        vote(2, "bob", None, a={"clarity": 4}),
    ]
    result = agreement(rows)
    # Units [4, 4], [2, 2], [5, 4]: n_4 = 3, n_2 = 2, n_5 = 1, n = 6; Σ o δ² = 2 * 1²;
    # Σ n_c n_k δ² = 2 * (3*2*4 + 3*1*1 + 2*1*9) = 90; α = 1 - 5 * 2 / 90 = 8/9.
    assert result["ratings"] == {"clarity": pytest.approx(8 / 9)}
    assert result["choice"]["items"] == 0
    assert result["choice"]["fleiss_kappa"] is None


def test_disagreements_rank_by_entropy_then_votes_then_item() -> None:
    rows = [
        *(vote(1, r, c) for r, c in [("ann", "a"), ("bob", "b")]),
        *(vote(2, r, c) for r, c in [("ann", "a"), ("bob", "a"), ("cy", "b"), ("di", "b")]),
        *(
            vote(3, r, c)
            for r, c in [("ann", "a"), ("bob", "b"), ("cy", "tie"), ("di", "both_bad")]
        ),
        *(vote(4, r, c) for r, c in [("ann", "a"), ("bob", "a")]),
        vote(5, "ann", "a"),
        *(vote(6, r, c) for r, c in [("ann", "a"), ("bob", "tie")]),
        *(vote(7, r, c) for r, c in [("ann", "b"), ("bob", "tie")]),
    ]
    ranked = disagreements(rows)
    # Entropy / log 4: item 3 even over four choices = 1; two-way even splits = 0.5 (item 2
    # has four votes, items 1, 6, 7 two each); unanimous item 4 = 0; item 5 has one vote.
    assert [entry["item"] for entry in ranked] == [3, 2, 1, 6, 7, 4]
    assert [entry["disagreement"] for entry in ranked] == pytest.approx([1, 0.5, 0.5, 0.5, 0.5, 0])
    assert ranked[1]["votes"] == {"a": 2, "b": 2, "tie": 0, "both_bad": 0}
    assert ranked[1]["score_spread"] is None
    assert [entry["item"] for entry in disagreements(rows, limit=2)] == [3, 2]


def test_disagreements_of_a_score_only_campaign_use_score_variance() -> None:
    rows = [
        vote(10, "ann", None, a={"clarity": 1}, b={"clarity": 3}),
        vote(10, "bob", None, a={"clarity": 5}, b={"clarity": 3}),
        vote(11, "ann", None, a={"clarity": 2}, b={"clarity": 2}),
        vote(11, "bob", None, a={"clarity": 4}, b={"clarity": 2}),
        vote(12, "ann", None, a={"clarity": 1}),
    ]
    ranked = disagreements(rows)
    # Item 10: variances 4 (a: 1, 5) and 0 (b) → 2.0; item 11: 1 and 0 → 0.5; 12: one rating.
    assert [(e["item"], e["disagreement"]) for e in ranked] == [(10, 2.0), (11, 0.5)]
    assert ranked[0]["score_spread"] == 2.0
    assert ranked[0]["votes"] == {"a": 0, "b": 0, "tie": 0, "both_bad": 0}


def test_per_reviewer_counts_choices_and_mean_score() -> None:
    rows = [
        vote(1, "bob", "a", a={"clarity": 2}, b={"clarity": 4}),
        vote(2, "bob", "b", b={"clarity": 5}),
        vote(3, "bob", "b"),
        vote(1, "ann", "tie"),
    ]
    assert per_reviewer(rows) == [
        {
            "reviewer": "ann",
            "ratings": 1,
            "a": 0,
            "b": 0,
            "tie": 1,
            "both_bad": 0,
            "mean_score": None,
        },
        {
            "reviewer": "bob",
            "ratings": 3,
            "a": 1,
            "b": 2,
            "tie": 0,
            "both_bad": 0,
            "mean_score": 11 / 3,
        },
    ]


def test_summarise_an_empty_campaign_does_not_crash() -> None:
    result = summarise([])
    assert result["ratings_count"] == 0
    assert result["items_rated"] == 0
    assert result["win_rate"]["win_rate"] is None
    assert result["ratings"] == {}
    assert result["agreement"]["choice"]["fleiss_kappa"] is None
    assert result["disagreements"] == []
    assert result["reviewers"] == []
    json.dumps(result, allow_nan=False)


def test_summarise_is_plain_json() -> None:
    rows = [
        vote(item, reviewer, choice, a={"clarity": 1 + item % 5}, b={"clarity": 5 - item % 3})
        for item in range(6)
        for reviewer, choice in [("ann", "b"), ("bob", "a" if item % 2 else "b")]
    ]
    result = summarise(rows)
    assert result["ratings_count"] == 12
    assert result["items_rated"] == 6
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert not any(isinstance(v, float) and math.isnan(v) for v in result["win_rate"].values())


def test_an_unknown_choice_is_refused_with_the_item_and_reviewer() -> None:
    with pytest.raises(ValueError, match=r"'ann' gave item 3 the choice 'A'"):
        summarise([vote(3, "ann", "A")])


def test_a_second_rating_of_one_item_by_one_reviewer_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'ann' rated item 3 twice"):
        win_rate([vote(3, "ann", "a"), vote(3, "ann", "b")])
