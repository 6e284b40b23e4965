"""Evaluation metrics: agreement with sacreBLEU / rouge-score, Chinese by hand, bootstrap."""

from __future__ import annotations

import importlib.util
import math
import random
import subprocess
import sys
import time

import numpy as np
import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer

from worker.spec.metrics import (
    bleu_from_stats,
    bootstrap_ci,
    compare,
    corpus_language,
    detect_language,
    exact_match,
    lcs_length,
    paired_difference_ci,
    perplexity,
    rouge,
    score,
    token_f1,
)

ENGLISH_PREDICTIONS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog!",
    "Paris is the capital of France",
    "I don't know the answer, sorry.",
    "Running runners ran; they were running quickly.",
    "",
    "the the the the",
]
ENGLISH_REFERENCES = [
    "The cat is sitting on the mat.",
    "The quick brown fox jumped over the lazy dog.",
    "The capital of France is Paris.",
    "The answer is 42.",
    "The runner runs quickly.",
    "Nothing was said.",
    "The cat ate the mat",
]


# --- Agreement with the reference implementations on English --------------------------------


def test_rouge_equals_rouge_score_on_english() -> None:
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"])
    for prediction, reference in zip(ENGLISH_PREDICTIONS, ENGLISH_REFERENCES, strict=True):
        ours = rouge(prediction, reference)
        theirs = scorer.score(reference, prediction)
        for name in ("rouge1", "rouge2", "rougeL"):
            assert ours[name] == pytest.approx(theirs[name].fmeasure, abs=1e-12)


def test_rouge_with_stemming_equals_rouge_score_with_stemming() -> None:
    scorer = RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    for prediction, reference in zip(ENGLISH_PREDICTIONS, ENGLISH_REFERENCES, strict=True):
        ours = rouge(prediction, reference, stem=True)
        theirs = scorer.score(reference, prediction)
        assert ours["rouge1"] == pytest.approx(theirs["rouge1"].fmeasure, abs=1e-12)
        assert ours["rougeL"] == pytest.approx(theirs["rougeL"].fmeasure, abs=1e-12)


def test_rouge_equals_rouge_score_on_random_english_texts() -> None:
    rng = random.Random(7)
    vocabulary = ["a", "b", "c", "d", "the", "of", "cat", "Dog,", "x9", "--"]
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"])
    for _ in range(300):
        prediction = " ".join(rng.choices(vocabulary, k=rng.randint(0, 30)))
        reference = " ".join(rng.choices(vocabulary, k=rng.randint(0, 30)))
        ours = rouge(prediction, reference)
        theirs = scorer.score(reference, prediction)
        for name in ("rouge1", "rouge2", "rougeL"):
            assert ours[name] == pytest.approx(theirs[name].fmeasure, abs=1e-12)


def test_bit_parallel_lcs_equals_the_textbook_table() -> None:
    rng = random.Random(3)
    for _ in range(300):
        a = rng.choices("abcde", k=rng.randint(0, 80))
        b = rng.choices("abcde", k=rng.randint(0, 80))
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                table[i][j] = (
                    table[i - 1][j - 1] + 1
                    if a[i - 1] == b[j - 1]
                    else max(table[i - 1][j], table[i][j - 1])
                )
        assert lcs_length(a, b) == table[-1][-1]


def test_sentence_and_corpus_bleu_equal_sacrebleu_on_english() -> None:
    report = score(ENGLISH_PREDICTIONS, ENGLISH_REFERENCES)
    assert report.language == "other"
    assert report.bleu_tokenizer == "13a"
    for i, (prediction, reference) in enumerate(
        zip(ENGLISH_PREDICTIONS, ENGLISH_REFERENCES, strict=True)
    ):
        expected = sacrebleu.sentence_bleu(prediction, [reference]).score
        assert report.per_example["bleu"][i] == pytest.approx(expected, abs=1e-9)
    corpus = sacrebleu.corpus_bleu(ENGLISH_PREDICTIONS, [ENGLISH_REFERENCES]).score
    assert report.metrics["bleu"].value == pytest.approx(corpus, abs=1e-9)


def test_corpus_bleu_of_a_resample_equals_sacrebleu_on_those_examples() -> None:
    report = score(ENGLISH_PREDICTIONS, ENGLISH_REFERENCES)
    rng = np.random.default_rng(1)
    for _ in range(20):
        picked = rng.integers(0, len(ENGLISH_REFERENCES), size=len(ENGLISH_REFERENCES))
        ours = bleu_from_stats(report.bleu_stats[picked].sum(axis=0))
        theirs = sacrebleu.corpus_bleu(
            [ENGLISH_PREDICTIONS[i] for i in picked], [[ENGLISH_REFERENCES[i] for i in picked]]
        ).score
        assert float(ours) == pytest.approx(theirs, abs=1e-9)


def test_corpus_bleu_is_zero_when_nothing_matches_like_sacrebleu() -> None:
    report = score(["xyz qqq"], ["the cat sat on the mat"])
    assert report.metrics["bleu"].value == 0.0
    assert sacrebleu.corpus_bleu(["xyz qqq"], [["the cat sat on the mat"]]).score == 0.0


# --- Chinese, worked by hand ------------------------------------------------------------------


def test_plain_rouge_score_gives_zero_on_chinese_but_ours_does_not() -> None:
    # rouge-score keeps only [a-z0-9] runs: a Chinese sentence has no tokens at all.
    theirs = RougeScorer(["rouge1"]).score("今天天气很好", "今天天气不错")
    assert theirs["rouge1"].fmeasure == 0.0
    assert rouge("今天天气不错", "今天天气很好")["rouge1"] > 0.5


def test_chinese_rouge_by_characters_worked_by_hand() -> None:
    # Reference 今天天气很好, prediction 今天天气不错, six characters each.
    # ROUGE-1: reference {今1 天2 气1 很1 好1}, prediction {今1 天2 气1 不1 错1};
    #   overlap 今+天天+气 = 4, P = R = 4/6, F = 2/3.
    # ROUGE-2: bigrams 今天 天天 天气 气很 很好 vs 今天 天天 天气 气不 不错;
    #   overlap 3 of 5 each side, F = 3/5.
    # ROUGE-L: LCS 今天天气 = 4, P = R = 4/6, F = 2/3.
    scores = rouge("今天天气不错", "今天天气很好")
    assert scores["rouge1"] == pytest.approx(2 / 3, abs=1e-12)
    assert scores["rouge2"] == pytest.approx(3 / 5, abs=1e-12)
    assert scores["rougeL"] == pytest.approx(2 / 3, abs=1e-12)


def test_chinese_rouge_recall_when_prediction_is_shorter() -> None:
    # Reference 我们明天去北京 (7), prediction 明天去北京 (5): all 5 characters match,
    # P = 1, R = 5/7, F = 2·(5/7)/(12/7) = 5/6. LCS is also 5, so ROUGE-L is 5/6 too.
    scores = rouge("明天去北京", "我们明天去北京")
    assert scores["rouge1"] == pytest.approx(5 / 6, abs=1e-12)
    assert scores["rougeL"] == pytest.approx(5 / 6, abs=1e-12)


def test_chinese_bleu_with_zh_tokenizer_worked_by_hand() -> None:
    # The zh tokenizer makes every Han character a token, so for
    # 今天天气不错 against 今天天气很好 (6 tokens each, brevity penalty 1):
    #   1-grams 4/6, 2-grams 3/5, 3-grams (今天天 天天气) 2/4, 4-grams (今天天气) 1/3;
    #   BLEU = 100 · (4/6 · 3/5 · 2/4 · 1/3)^(1/4) = 100 · (1/15)^(1/4) ≈ 50.813.
    report = score(["今天天气不错"], ["今天天气很好"])
    assert report.language == "zh"
    assert report.bleu_tokenizer == "zh"
    expected = 100 * (1 / 15) ** 0.25
    assert report.per_example["bleu"][0] == pytest.approx(expected, abs=1e-9)
    assert report.metrics["bleu"].value == pytest.approx(expected, abs=1e-9)
    assert list(report.bleu_stats[0]) == [6, 6, 4, 3, 2, 1, 6, 5, 4, 3]


def test_chinese_bleu_brevity_penalty_worked_by_hand() -> None:
    # 明天去北京 (5 tokens) against 我们明天去北京 (7): every n-gram of the prediction
    # matches (5/5, 4/4, 3/3, 2/2), so BLEU = 100 · BP = 100 · exp(1 − 7/5) ≈ 67.032.
    report = score(["明天去北京"], ["我们明天去北京"])
    assert report.metrics["bleu"].value == pytest.approx(100 * math.exp(-0.4), abs=1e-9)


def test_chinese_corpus_bleu_sums_statistics_before_combining() -> None:
    # Example 1 as above: matches 4,3,2,1 of 6,5,4,3. Example 2, 我喜欢猫 vs 我喜欢狗:
    # matches 3,2,1,0 of 4,3,2,1. Corpus: 7/10, 5/8, 3/6, 1/4, equal lengths (BP 1):
    # BLEU = 100 · (7/10 · 5/8 · 3/6 · 1/4)^(1/4) — not the mean of the sentence scores.
    predictions, references = ["今天天气不错", "我喜欢猫"], ["今天天气很好", "我喜欢狗"]
    report = score(predictions, references)
    expected = 100 * (7 / 10 * 5 / 8 * 3 / 6 * 1 / 4) ** 0.25
    assert report.metrics["bleu"].value == pytest.approx(expected, abs=1e-9)
    theirs = sacrebleu.corpus_bleu(predictions, [references], tokenize="zh").score
    assert report.metrics["bleu"].value == pytest.approx(theirs, abs=1e-9)


def test_chinese_token_f1_counts_characters_and_drops_punctuation() -> None:
    # 北京是中国的首都。 → 8 characters (the full stop dropped); 首都是北京 → 5.
    # Common: 北 京 是 首 都 = 5; P = 5/8, R = 5/5, F1 = 2·(5/8)/(13/8) = 10/13.
    assert token_f1("北京是中国的首都。", "首都是北京") == pytest.approx(10 / 13, abs=1e-12)


def test_token_f1_follows_squad_on_english() -> None:
    # After dropping "the" and punctuation: [cat, sat] vs [cat, sat, down] → P 1, R 2/3.
    assert token_f1("The cat sat.", "the cat sat down") == pytest.approx(0.8, abs=1e-12)
    assert token_f1("", "") == 1.0
    assert token_f1("something", "") == 0.0


def test_mixed_chinese_and_english_tokens() -> None:
    # 用Python写爬虫 → 用 python 写 爬 虫; against 用python写代码 → 用 python 写 代 码.
    # Overlap 3 of 5 each side.
    assert rouge("用Python写爬虫", "用python写代码")["rouge1"] == pytest.approx(3 / 5)
    assert token_f1("用Python写爬虫", "用python写代码") == pytest.approx(3 / 5)


def test_exact_match_normalises_width_case_and_whitespace() -> None:
    assert exact_match("  ＨＥＬＬＯ   World ", "hello world") == 1.0
    assert exact_match("答案：４２", "答案:42") == 1.0
    assert exact_match("hello world", "hello, world") == 0.0


def test_language_is_detected_per_text() -> None:
    assert detect_language("今天天气很好") == "zh"
    assert detect_language("用Python写一个爬虫") == "zh"
    assert detect_language("今日はいい天気ですね") == "ja"
    assert detect_language("오늘 날씨가 좋네요") == "ko"
    assert detect_language("The weather is nice today") == "other"
    assert detect_language("The word 猫 means cat in Chinese") == "other"
    assert detect_language("") == "other"
    assert corpus_language(["今天天气很好", "hello", "北京"]) == "zh"


def test_japanese_bleu_falls_back_to_characters_without_mecab() -> None:
    report = score(["今日はいい天気"], ["今日はいい天気です"], language="ja")
    if importlib.util.find_spec("MeCab") is None:
        assert report.bleu_tokenizer == "char"
    else:
        assert report.bleu_tokenizer in ("ja-mecab", "char")
    assert report.metrics["bleu"].value > 0


# --- Bootstrap ------------------------------------------------------------------------------


def test_bootstrap_interval_contains_the_point_value() -> None:
    values = np.random.default_rng(0).random(300)
    interval = bootstrap_ci(values)
    assert interval.value == pytest.approx(values.mean())
    assert interval.low <= interval.value <= interval.high
    assert interval.n == 300


def test_bootstrap_interval_narrows_with_more_examples() -> None:
    rng = np.random.default_rng(0)
    small = bootstrap_ci(rng.integers(0, 2, 50))
    large = bootstrap_ci(rng.integers(0, 2, 5000))
    assert (large.high - large.low) < (small.high - small.low) / 5


def test_bootstrap_is_deterministic_per_seed() -> None:
    values = np.random.default_rng(0).random(200)
    assert bootstrap_ci(values, seed=1) == bootstrap_ci(values, seed=1)
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)


def test_corpus_bleu_interval_contains_corpus_bleu() -> None:
    report = score(ENGLISH_PREDICTIONS * 5, ENGLISH_REFERENCES * 5)
    bleu = report.metrics["bleu"]
    assert bleu.low <= bleu.value <= bleu.high
    assert bleu.low < bleu.high


def test_paired_difference_excludes_zero_when_one_model_is_clearly_better() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(500)
    better = base + 0.05 + rng.normal(0, 0.02, 500)
    interval = paired_difference_ci(better, base)
    assert interval.low > 0
    assert interval.value == pytest.approx(float((better - base).mean()))


def test_paired_difference_of_identical_models_includes_zero() -> None:
    values = np.random.default_rng(0).random(500)
    interval = paired_difference_ci(values, values)
    assert interval.low <= 0 <= interval.high
    assert interval.value == 0


def test_paired_difference_rejects_different_example_counts() -> None:
    with pytest.raises(ValueError, match="same examples"):
        paired_difference_ci(np.ones(3), np.ones(4))


def test_compare_reports_deltas_with_paired_intervals() -> None:
    references = ["今天天气很好", "我喜欢吃苹果", "北京是中国的首都", "明天会下雨吗"] * 25
    good = score(references, references)
    bad = score(["完全不相关的句子"] * 100, references)
    deltas = compare(good, bad)
    assert set(deltas) == {"bleu", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1"}
    assert all(delta.low > 0 for delta in deltas.values())
    same = compare(good, good)
    assert all(delta.low <= 0 <= delta.high for delta in same.values())


def test_compare_refuses_reports_on_different_references() -> None:
    with pytest.raises(ValueError, match="different references"):
        compare(score(["a"], ["a"]), score(["a"], ["b"]))


def test_bootstrap_of_mean_metrics_is_fast() -> None:
    values = np.random.default_rng(0).random(2000)
    start = time.perf_counter()
    bootstrap_ci(values, resamples=1000)
    assert time.perf_counter() - start < 0.5


def test_bootstrap_of_corpus_bleu_is_vectorised_and_fast() -> None:
    rng = np.random.default_rng(0)
    totals = rng.integers(5, 40, size=(2000, 4)).astype(float)
    stats = np.column_stack(
        [totals[:, 0], totals[:, 0] + 2, np.floor(totals * 0.5), totals - np.arange(4)]
    )
    start = time.perf_counter()
    interval = bootstrap_ci(stats, bleu_from_stats, resamples=1000)
    assert time.perf_counter() - start < 1.0
    assert interval.low <= interval.value <= interval.high


# --- Perplexity -----------------------------------------------------------------------------


def test_perplexity_is_exp_of_total_nll_over_total_tokens() -> None:
    interval = perplexity([2.0, 4.0], [1, 3])
    assert interval.value == pytest.approx(math.exp(6 / 4))
    assert interval.low <= interval.value <= interval.high


def test_perplexity_goes_into_the_report_and_the_comparison() -> None:
    refs = ["a b c", "d e f", "g h i"]
    a = score(refs, refs, reference_nll=[3.0, 3.0, 3.0], reference_tokens=[3, 3, 3])
    b = score(refs, refs, reference_nll=[6.0, 6.0, 6.0], reference_tokens=[3, 3, 3])
    assert a.metrics["perplexity"].value == pytest.approx(math.e)
    assert compare(a, b)["perplexity"].value == pytest.approx(math.e - math.e**2)


def test_perplexity_rejects_mismatched_or_empty_counts() -> None:
    with pytest.raises(ValueError, match="one NLL sum and one token count"):
        perplexity([1.0, 2.0], [3])
    with pytest.raises(ValueError, match="at least one token"):
        perplexity([0.0], [0])


# --- Input errors and boundaries ------------------------------------------------------------


def test_score_rejects_unequal_prediction_and_reference_counts() -> None:
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        score(["a", "b"], ["a"])


def test_score_rejects_an_empty_set() -> None:
    with pytest.raises(ValueError, match="no examples"):
        score([], [])


def test_score_needs_both_halves_of_perplexity() -> None:
    with pytest.raises(ValueError, match="both reference_nll and reference_tokens"):
        score(["a"], ["a"], reference_nll=[1.0])


def test_metrics_module_imports_no_torch_or_web_code() -> None:
    code = "import sys, worker.spec.metrics; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    assert not loaded & {"torch", "transformers", "fastapi", "sqlalchemy", "app"}
