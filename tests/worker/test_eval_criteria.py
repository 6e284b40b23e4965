"""Success criteria: reading them as people write them, and judging evaluations against them."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from worker.spec.criteria import (
    METRIC_ALIASES,
    METRICS,
    Criterion,
    CriterionError,
    check_criteria,
    metric_key,
    parse_criterion,
    summary,
    verdict,
)


def interval(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "low": low, "high": high, "n": 20}


def results(
    subject: dict[str, Any] | None = None,
    deltas: dict[str, Any] | None = None,
    *,
    baseline: bool = True,
) -> dict[str, Any]:
    """An evaluation of a fine-tuned model against the prompted base model."""
    out: dict[str, Any] = {
        "n": 20,
        "baseline": "baseline" if baseline else None,
        "subject": "finetuned",
        "labels": {"baseline": "Base model + prompt (0-shot)", "finetuned": "LoRA job 1a2b3c4d"},
        "models": {
            "baseline": {"rougeL": interval(0.31, 0.27, 0.35)},
            "finetuned": subject if subject is not None else {},
        },
    }
    if baseline:
        out["deltas"] = {"finetuned": deltas or {}}
    return out


def error_of(text: str) -> str:
    with pytest.raises(CriterionError) as caught:
        parse_criterion(text)
    return str(caught.value)


# --- Metric names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("rougeL", "rougeL"),
        ("rouge-l", "rougeL"),
        ("rouge_l", "rougeL"),
        ("rougel", "rougeL"),
        ("Rouge L", "rougeL"),
        ("ROUGE-1", "rouge1"),
        ("rouge 2", "rouge2"),
        ("BLEU", "bleu"),
        ("sacreBLEU", "bleu"),
        ("exact match", "exact_match"),
        ("exact_match", "exact_match"),
        ("EM", "exact_match"),
        ("accuracy", "exact_match"),
        ("token f1", "token_f1"),
        ("token-F1", "token_f1"),
        ("F1", "token_f1"),
        ("perplexity", "perplexity"),
        ("PPL", "perplexity"),
        ("bleu score", "bleu"),
    ],
)
def test_metric_names_ignore_case_spaces_dashes_and_underscores(name: str, key: str) -> None:
    assert metric_key(name) == key


def test_every_alias_points_at_a_stored_metric() -> None:
    assert set(METRIC_ALIASES.values()) == set(METRICS)


def test_an_unknown_name_has_no_metric_key() -> None:
    assert metric_key("meteor") is None


# --- Absolute criteria ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "op", "threshold"),
    [
        ("rougeL >= 0.40", ">=", 0.40),
        ("rougeL > 0.4", ">", 0.4),
        ("perplexity <= 12", "<=", 12.0),
        ("perplexity < 12", "<", 12.0),
        ("rougeL == 0.5", "==", 0.5),
        ("rougeL = 0.5", "==", 0.5),
        ("rougeL ≥ 0.4", ">=", 0.4),
        ("perplexity ≤ 12", "<=", 12.0),
        ("rougeL>=0.4", ">=", 0.4),
        ("rougeL at least 0.4", ">=", 0.4),
        ("rougeL is at least 0.4", ">=", 0.4),
        ("perplexity at most 12", "<=", 12.0),
        ("bleu more than 20", ">", 20.0),
    ],
)
def test_absolute_criterion_reads_every_comparison(text: str, op: str, threshold: float) -> None:
    criterion = parse_criterion(text)
    assert (criterion.kind, criterion.op) == ("absolute", op)
    assert criterion.threshold == pytest.approx(threshold)


def test_absolute_criterion_keeps_the_text_and_resolves_the_alias() -> None:
    assert parse_criterion("Rouge-L >= 0.40") == Criterion(
        text="Rouge-L >= 0.40", kind="absolute", metric="rougeL", op=">=", threshold=0.40
    )


@pytest.mark.parametrize(
    ("text", "threshold"),
    [
        ("exact match >= 60%", 0.60),
        ("rougeL >= 40%", 0.40),
        ("rouge1 > 35 %", 0.35),
        ("token f1 at least 55%", 0.55),
    ],
)
def test_percent_is_a_share_for_zero_to_one_metrics(text: str, threshold: float) -> None:
    assert parse_criterion(text).threshold == pytest.approx(threshold)


def test_bleu_threshold_stays_on_its_0_to_100_scale() -> None:
    assert parse_criterion("bleu > 20").threshold == 20.0


def test_bleu_with_percent_is_refused_because_it_is_already_0_to_100() -> None:
    message = error_of("bleu >= 20%")
    assert "BLEU is already on a 0–100 scale" in message
    assert '"bleu >= 20"' in message


def test_perplexity_with_percent_is_refused() -> None:
    assert "perplexity is not a percentage" in error_of("perplexity <= 12%")


def test_a_share_above_one_without_percent_is_refused_with_both_spellings() -> None:
    message = error_of("rougeL >= 40")
    assert "0–1 scale" in message
    assert "0.4 or 40%" in message


def test_a_share_above_100_percent_is_refused() -> None:
    assert "100%" in error_of("exact match >= 150%")


def test_bleu_above_100_is_refused() -> None:
    assert "tops out at 100" in error_of("bleu >= 120")


def test_negative_absolute_threshold_is_refused() -> None:
    assert "must be 0 or more" in error_of("rougeL >= -0.1")


# --- Improvement criteria -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "rougeL improves on baseline by >= 0.05",
        "rougeL improves over baseline by >= 0.05",
        "rougeL improves on the baseline by at least 0.05",
        "rougeL beats baseline by 0.05",
        "rougeL better than baseline by 5%",
        "rougeL is better than baseline by at least 5 %",
    ],
)
def test_improvement_criterion_reads_every_phrasing(text: str) -> None:
    criterion = parse_criterion(text)
    assert (criterion.kind, criterion.metric, criterion.op) == ("improvement", "rougeL", ">=")
    assert criterion.threshold == pytest.approx(0.05)


def test_improves_on_baseline_alone_means_by_more_than_zero() -> None:
    criterion = parse_criterion("bleu improves on baseline")
    assert (criterion.kind, criterion.op, criterion.threshold) == ("improvement", ">", 0.0)


def test_improvement_keeps_an_explicit_strict_comparison() -> None:
    criterion = parse_criterion("bleu improves on baseline by > 2")
    assert (criterion.op, criterion.threshold) == (">", 2.0)


def test_improvement_threshold_must_not_be_negative() -> None:
    assert "improvement must be 0 or more" in error_of("rougeL improves on baseline by >= -0.05")


def test_improvement_with_an_unreadable_amount_says_which_part() -> None:
    message = error_of("rougeL improves on baseline by a lot")
    assert '"a lot"' in message
    assert "rougeL improves on baseline by >= 0.05" in message


def test_bleu_improvement_with_percent_is_refused() -> None:
    assert "BLEU is already on a 0–100 scale" in error_of("bleu improves on baseline by 5%")


def test_perplexity_improvement_is_parsed_as_a_drop() -> None:
    criterion = parse_criterion("ppl improves on baseline by >= 2")
    assert (criterion.metric, criterion.op, criterion.threshold) == ("perplexity", ">=", 2.0)


# --- Chinese and full-width text ------------------------------------------------------------


def test_chinese_at_least_is_greater_or_equal() -> None:
    criterion = parse_criterion("rougeL 至少 0.40")
    assert (criterion.kind, criterion.op, criterion.threshold) == ("absolute", ">=", 0.40)


@pytest.mark.parametrize("text", ["rougeL 比基线提高至少 0.05", "rougeL 比基线高 0.05"])
def test_chinese_improvement_over_baseline(text: str) -> None:
    criterion = parse_criterion(text)
    assert (criterion.kind, criterion.metric, criterion.op) == ("improvement", "rougeL", ">=")
    assert criterion.threshold == pytest.approx(0.05)


def test_chinese_perplexity_improvement_is_a_lowering() -> None:
    criterion = parse_criterion("困惑度 比基线降低 2")
    assert (criterion.kind, criterion.metric, criterion.threshold) == (
        "improvement",
        "perplexity",
        2.0,
    )


def test_chinese_raising_perplexity_is_refused_as_the_wrong_direction() -> None:
    assert "lower perplexity is better" in error_of("perplexity 比基线提高 2")


def test_full_width_signs_digits_and_percent_are_normalised() -> None:
    criterion = parse_criterion("exact match ＞＝ ６０％")
    assert (criterion.metric, criterion.op) == ("exact_match", ">=")
    assert criterion.threshold == pytest.approx(0.60)


def test_full_width_metric_name_and_less_than() -> None:
    criterion = parse_criterion("ＰＰＬ ＜ １２")
    assert (criterion.metric, criterion.op, criterion.threshold) == ("perplexity", "<", 12.0)


# --- Human criteria -------------------------------------------------------------------------


def test_human_win_rate_percent_is_a_share() -> None:
    criterion = parse_criterion("human win rate >= 60%")
    assert (criterion.kind, criterion.metric, criterion.human_measure) == (
        "human",
        None,
        "win rate",
    )
    assert (criterion.op, criterion.threshold) == (">=", pytest.approx(0.60))


def test_human_rating_keeps_the_reviewers_scale() -> None:
    criterion = parse_criterion("mean human rating >= 4")
    assert (criterion.kind, criterion.human_measure, criterion.threshold) == ("human", "rating", 4)


@pytest.mark.parametrize(
    "text",
    ["Human reviewers approve the tone", "win rate against baseline", "preference for ours"],
)
def test_texts_about_people_are_human_criteria_even_without_numbers(text: str) -> None:
    assert parse_criterion(text).kind == "human"


def test_human_win_rate_without_a_number_defaults_to_more_often_than_not() -> None:
    criterion = parse_criterion("human win rate beats baseline")
    assert (criterion.op, criterion.threshold) == (">", 0.5)


def test_human_rating_as_a_percentage_is_refused() -> None:
    assert "not a percentage" in error_of("mean human rating >= 80%")


def test_human_win_rate_above_one_without_percent_is_refused() -> None:
    assert "0.6 or 60%" in error_of("human win rate >= 60")


# --- Unreadable criteria --------------------------------------------------------------------


def test_unreadable_criterion_says_how_to_write_it_and_lists_metrics() -> None:
    assert error_of("rougeL is good") == (
        'could not read "rougeL is good": write it like "rougeL >= 0.40" or '
        '"rougeL improves on baseline by >= 0.05"; metrics: bleu, rouge1, rouge2, rougeL, '
        "exact_match, token_f1, perplexity"
    )


def test_unknown_metric_is_named_and_the_known_ones_listed() -> None:
    message = error_of("meteor >= 0.3")
    assert 'unknown metric "meteor"' in message
    assert "bleu, rouge1, rouge2, rougeL, exact_match, token_f1, perplexity" in message


def test_misspelt_metric_gets_a_suggestion() -> None:
    assert "did you mean rougeL?" in error_of("rogueL >= 0.4")


def test_two_criteria_on_one_line_are_refused() -> None:
    assert "one criterion per line" in error_of("rougeL >= 0.4 and bleu > 20")


def test_empty_criterion_is_refused() -> None:
    assert "empty" in error_of("   ")


def test_criterion_error_is_a_value_error() -> None:
    assert issubclass(CriterionError, ValueError)


def test_check_criteria_returns_index_and_message_of_each_bad_line() -> None:
    problems = check_criteria(["rougeL >= 0.4", "bleu >= 20%", "human win rate >= 60%", "meh"])
    assert [index for index, _ in problems] == [1, 3]
    assert "BLEU" in problems[0][1]
    assert 'could not read "meh"' in problems[1][1]


def test_check_criteria_is_empty_when_all_read() -> None:
    assert check_criteria(["rougeL >= 0.4", "rougeL 比基线高 0.05"]) == []


# --- Verdicts: absolute ---------------------------------------------------------------------


def test_absolute_criterion_not_met_reports_the_shortfall() -> None:
    [v] = verdict(["rougeL >= 0.40"], results({"rougeL": interval(0.31, 0.27, 0.35)}))
    assert v["status"] == "not_met"
    assert v["margin"] == pytest.approx(-0.09)
    assert v["confident"] is True
    assert v["explanation"] == "not met: rougeL 0.310 < 0.400 (short by 0.090); 95% CI 0.270–0.350"


def test_absolute_criterion_met_with_the_whole_interval_above_is_confident() -> None:
    [v] = verdict(["rougeL >= 0.40"], results({"rougeL": interval(0.43, 0.41, 0.47)}))
    assert (v["status"], v["confident"]) == ("met", True)
    assert v["margin"] == pytest.approx(0.03)
    assert v["explanation"] == "met: rougeL 0.430 ≥ 0.400 (95% CI 0.410–0.470)"


def test_met_but_interval_straddles_the_threshold_is_not_confident() -> None:
    [v] = verdict(["rougeL >= 0.40"], results({"rougeL": interval(0.43, 0.39, 0.47)}))
    assert (v["status"], v["confident"]) == ("met", False)
    assert v["explanation"].endswith("but the 95% interval includes the threshold")


def test_not_met_but_interval_straddles_the_threshold_is_not_confident() -> None:
    [v] = verdict(["rougeL >= 0.40"], results({"rougeL": interval(0.38, 0.33, 0.42)}))
    assert (v["status"], v["confident"]) == ("not_met", False)
    assert "includes the threshold" in v["explanation"]


def test_verdict_carries_model_label_value_threshold_and_interval() -> None:
    [v] = verdict(["bleu > 20"], results({"bleu": interval(22.5, 21.0, 24.0)}))
    assert v == {
        "criterion": "bleu > 20",
        "status": "met",
        "kind": "absolute",
        "metric": "bleu",
        "model": "LoRA job 1a2b3c4d",
        "value": 22.5,
        "threshold": 20.0,
        "op": ">",
        "interval": [21.0, 24.0],
        "margin": 2.5,
        "confident": True,
        "explanation": "met: bleu 22.50 > 20.00 (95% CI 21.00–24.00)",
    }


def test_perplexity_at_most_counts_room_below_the_threshold() -> None:
    [v] = verdict(["perplexity <= 12"], results({"perplexity": interval(13.5, 12.5, 14.5)}))
    assert v["status"] == "not_met"
    assert v["margin"] == pytest.approx(-1.5)
    assert "perplexity 13.50 > 12.00 (short by 1.50)" in v["explanation"]


def test_metric_without_an_interval_has_no_confidence() -> None:
    [v] = verdict(["rougeL >= 0.4"], results({"rougeL": {"value": 0.5}}))
    assert (v["status"], v["interval"], v["confident"]) == ("met", None, None)


# --- Verdicts: improvement ------------------------------------------------------------------


def test_improvement_criterion_uses_the_paired_difference() -> None:
    evaluation = results(
        {"rougeL": interval(0.39, 0.35, 0.43)}, {"rougeL": interval(0.08, 0.06, 0.12)}
    )
    [v] = verdict(["rougeL improves on baseline by >= 0.05"], evaluation)
    assert (v["status"], v["value"], v["interval"], v["confident"]) == (
        "met",
        0.08,
        [0.06, 0.12],
        True,
    )
    assert v["margin"] == pytest.approx(0.03)
    assert v["explanation"].startswith("met: rougeL gain over baseline 0.080 ≥ 0.050")


def test_perplexity_improvement_is_baseline_minus_subject() -> None:
    # Stored delta is subject minus baseline: perplexity fell by 2.5.
    evaluation = results(deltas={"perplexity": interval(-2.5, -3.0, -1.5)})
    [v] = verdict(["perplexity improves on baseline by >= 2"], evaluation)
    assert v["status"] == "met"
    assert v["value"] == 2.5
    assert v["interval"] == [1.5, 3.0]
    assert v["margin"] == pytest.approx(0.5)
    assert v["confident"] is False
    assert "perplexity drop from baseline 2.50 ≥ 2.00" in v["explanation"]


def test_perplexity_rising_fails_an_improvement_criterion() -> None:
    evaluation = results(deltas={"perplexity": interval(1.0, 0.5, 1.5)})
    [v] = verdict(["perplexity improves on baseline"], evaluation)
    assert (v["status"], v["value"], v["confident"]) == ("not_met", -1.0, True)


def test_improvement_without_a_baseline_is_not_measured() -> None:
    evaluation = results({"rougeL": interval(0.5, 0.4, 0.6)}, baseline=False)
    [v] = verdict(["rougeL improves on baseline by >= 0.05"], evaluation)
    assert v["status"] == "not_measured"
    assert "this evaluation has no prompting baseline" in v["explanation"]
    assert (v["value"], v["margin"], v["confident"]) == (None, None, None)


# --- Verdicts: not measured, pending, invalid -----------------------------------------------


def test_no_results_yet_is_not_measured() -> None:
    [v] = verdict(["rougeL >= 0.4"], None)
    assert (v["status"], v["model"], v["confident"]) == ("not_measured", None, None)


def test_missing_metric_is_not_measured_and_named() -> None:
    [v] = verdict(["perplexity <= 12"], results({"rougeL": interval(0.5, 0.4, 0.6)}))
    assert v["status"] == "not_measured"
    assert "perplexity was not measured in this evaluation" in v["explanation"]


def test_human_criterion_waits_for_review_even_with_results() -> None:
    [v] = verdict(["human win rate >= 60%"], results({"rougeL": interval(0.5, 0.4, 0.6)}))
    assert (v["status"], v["kind"], v["metric"]) == ("pending", "human", None)
    assert v["explanation"] == "waits for human review"


def test_unreadable_criterion_is_invalid_with_the_parse_message() -> None:
    [v] = verdict(["rougeL is good"], None)
    assert v["status"] == "invalid"
    assert v["explanation"].startswith('could not read "rougeL is good"')


def test_verdicts_keep_the_order_of_the_criteria() -> None:
    texts = ["human rating >= 4", "bleu > 20", "nonsense", "rougeL >= 0.4"]
    assert [v["criterion"] for v in verdict(texts, None)] == texts


# --- Summary --------------------------------------------------------------------------------


def statuses(*names: str) -> list[dict[str, str]]:
    return [{"status": name} for name in names]


def test_summary_is_met_when_every_judged_criterion_is_met_and_humans_pending() -> None:
    assert summary(statuses("met", "met", "pending")) == {
        "status": "met",
        "met": 2,
        "not_met": 0,
        "pending": 1,
        "not_measured": 0,
        "invalid": 0,
    }


def test_summary_is_not_met_when_any_criterion_is_not_met() -> None:
    assert summary(statuses("met", "not_met", "not_measured", "pending"))["status"] == "not_met"


def test_summary_is_not_measured_when_something_could_not_be_judged() -> None:
    assert summary(statuses("met", "not_measured"))["status"] == "not_measured"
    assert summary(statuses("met", "invalid"))["status"] == "not_measured"


def test_summary_is_pending_when_only_human_review_is_left() -> None:
    assert summary(statuses("pending", "pending"))["status"] == "pending"


def test_summary_of_no_criteria_is_not_measured() -> None:
    assert summary([])["status"] == "not_measured"


def test_summary_of_real_verdicts() -> None:
    evaluation = results({"rougeL": interval(0.45, 0.41, 0.49), "bleu": interval(15, 12, 18)})
    verdicts = verdict(["rougeL >= 0.4", "bleu > 20", "human win rate >= 60%"], evaluation)
    assert summary(verdicts)["status"] == "not_met"


# --- Boundaries -----------------------------------------------------------------------------


def test_criteria_module_loads_without_torch_or_transformers() -> None:
    code = "import sys, worker.spec.criteria; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert not {"torch", "transformers"} & {name.split(".")[0] for name in out.stdout.split()}
