"""The CLI speaks the terminal's language (issue 15): with ``LANG=zh_CN.UTF-8`` the human
messages of `tunelab data`, `train`, `export`/`deploy` and `eval` are Chinese; without it they
stay English. JSON output is the same in both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.cli.evaluations import render
from app.core.i18n import using_locale
from app.services.evaluations.candidates import default_label
from tests.factories import alpaca_records, jsonl


def tunelab(*args: str, lang: str = "zh_CN.UTF-8") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES")}
    env.pop("TUNELAB_LANGUAGE", None)
    env.update(LANG=lang, TUNELAB_TOKEN="not-a-real-token", TUNELAB_URL="http://127.0.0.1:9")
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_data_validate_stats_and_split_speak_chinese(tmp_path: Path) -> None:
    records = alpaca_records(40)
    records[3]["output"] = ""
    path = tmp_path / "data.jsonl"
    path.write_bytes(jsonl(records))

    bad = tunelab("data", "validate", str(path), "--quiet")
    assert bad.returncode == 1
    assert "第 4 行" in bad.stdout and "条有效的 alpaca 记录" in bad.stdout, bad.stdout
    assert "valid alpaca record" not in bad.stdout
    english = tunelab("data", "validate", str(path), "--quiet", lang="C.UTF-8")
    assert "line 4" in english.stdout and "39 valid alpaca records" in english.stdout

    stats = tunelab("data", "stats", str(path), "--quiet", "--drop-invalid")
    assert stats.returncode == 0, stats.stderr
    assert "39 条记录，平均" in stats.stdout and "长度（字符）" in stats.stdout, stats.stdout
    assert "  提示" in stats.stdout and "语言：" in stats.stdout
    assert "records" not in stats.stdout and "Languages" not in stats.stdout

    split = tunelab(
        "data", "split", str(path), "--quiet", "--drop-invalid", "--out", str(tmp_path / "out")
    )
    assert split.returncode == 0, split.stderr
    assert "39 条记录：训练" in split.stdout and "验证" in split.stdout, split.stdout

    missing = tunelab("data", "validate", str(tmp_path / "nope.jsonl"))
    assert "文件不存在" in missing.stderr
    # The JSON report is for programs: the same in every language.
    as_json = tunelab("data", "validate", str(path), "--quiet", "--json")
    assert json.loads(as_json.stdout)["records"] == 39


def test_train_export_and_eval_errors_speak_chinese(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("base_model: smollm2-135m-instruct\n", encoding="utf-8")
    train = tunelab("train", str(config), "--quiet")
    assert train.returncode == 2
    assert "没有训练数据" in train.stderr and "no training data" not in train.stderr

    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("x", encoding="utf-8")
    export = tunelab("export", "0" * 8, "--adapter", str(full))
    assert export.returncode == 2
    assert "已存在，且不是空文件夹" in export.stderr, export.stderr

    checkpoint = tunelab("eval", "run", "--checkpoint", "no-colon")
    assert checkpoint.returncode == 2 and "请写成 JOB_ID:checkpoint-N" in checkpoint.stderr

    no_project = tunelab("eval", "run")
    assert no_project.returncode == 2 and "请指定项目" in no_project.stderr


def test_an_evaluation_reads_in_chinese() -> None:
    base = {"key": "baseline", "kind": "base", "base_model": "smollm2-135m-instruct", "k_shot": 0}
    evaluation = {
        "id": "e1",
        "status": "succeeded",
        "split": "test",
        "candidates": [{**base, "label": default_label(base)}],
        "results": {
            "n": 5,
            "decoding": {"temperature": 0, "max_new_tokens": 64},
            "models": {"baseline": {"rougeL": {"value": 0.5, "low": 0.4, "high": 0.6}}},
        },
    }
    verdict = [{"status": "met", "criterion": "rougeL >= 0.4", "explanation": "0.5 ≥ 0.4"}]
    summary = {"status": "met", "met": 1, "not_met": 0}
    with using_locale("zh_CN"):
        text = render(evaluation, verdict, summary)
    assert text.startswith("评估 e1 · 已成功 · test 集，5 个样例 · 贪心解码"), text
    assert "✔ 达成" in text and "结论：达成（1 项达成）" in text
    assert "基础模型 + 提示（" in text and "，零示例）" in text
    english = render(evaluation, verdict, summary)
    assert "✔ met" in english and "verdict: met (1 met)" in english
    assert default_label(base) in english and default_label(base).startswith("Base model +")
