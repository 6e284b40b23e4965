"""`tunelab data validate|stats|split FILE`: the data step on local files, no server."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from tests.factories import SHARED_DATA, alpaca_records, jsonl


def tunelab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "data", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_validate_a_good_file_prints_a_summary_and_exits_0(tmp_path: Path) -> None:
    path = SHARED_DATA / "llamafactory-demo" / "alpaca_zh_demo.json"
    result = tunelab("validate", str(path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["format"] == "alpaca" and report["records"] == 1000


def test_validate_a_bad_file_names_the_line_and_writes_every_error(tmp_path: Path) -> None:
    records: list[dict] = alpaca_records(30)
    for r in records[4:]:
        r["output"] = ""
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jsonl(records))
    errors = tmp_path / "errors.csv"
    result = tunelab("validate", str(path), "--errors-out", str(errors), "--quiet")
    assert result.returncode == 1
    assert "line 5" in result.stdout and "output" in result.stdout
    with errors.open(encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 27  # header + 26 errors

    dropped = tunelab("validate", str(path), "--drop-invalid", "--json", "--quiet")
    assert dropped.returncode == 0
    assert json.loads(dropped.stdout)["records"] == 4


def test_validate_shows_a_progress_bar(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(alpaca_records(2000)))
    result = tunelab("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert "2,000 valid" in result.stdout
    assert "validating" in result.stderr and "100%" in result.stderr


def test_stats_counts_chinese_in_characters_and_tokens(tmp_path: Path) -> None:
    path = SHARED_DATA / "belle-eval-zh" / "eval_set.jsonl"
    chars = tunelab("stats", str(path), "--json", "--quiet")
    assert chars.returncode == 0, chars.stderr
    stats = json.loads(chars.stdout)
    assert stats["unit"] == "characters"
    # 369 of BELLE's questions have no reference answer: left out, with a warning.
    assert stats["records"] == 631
    assert stats["languages"]["zh"] > 600
    assert any("std_answer" in w for w in stats["warnings"])
    tokens = tunelab(
        "stats", str(path), "--tokenizer", "qwen3", "--max-seq-length", "512", "--json", "--quiet"
    )
    assert tokens.returncode == 0, tokens.stderr
    token_stats = json.loads(tokens.stdout)
    assert token_stats["unit"] == "tokens"
    # Qwen's tokenizer packs about 1.3-1.6 Chinese characters into a token.
    assert token_stats["total"]["mean"] < stats["total"]["mean"]
    plain = tunelab("stats", str(path), "--quiet")
    assert plain.returncode == 0 and "631 records" in plain.stdout


def test_split_is_deterministic_and_complete(tmp_path: Path) -> None:
    path = SHARED_DATA / "gsm8k" / "test.jsonl"
    for out in ("a", "b"):
        result = tunelab(
            "split",
            str(path),
            "--validation",
            "0.1",
            "--test",
            "0.1",
            "--seed",
            "3",
            "--out",
            str(tmp_path / out),
            "--quiet",
        )
        assert result.returncode == 0, result.stderr
    for name in ("train", "validation", "test"):
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (
            tmp_path / "b" / f"{name}.jsonl"
        ).read_bytes()
    counts = {
        name: len((tmp_path / "a" / f"{name}.jsonl").read_text().splitlines())
        for name in ("train", "validation", "test")
    }
    assert counts == {"train": 1055, "validation": 132, "test": 132}
    bad = tunelab(
        "split",
        str(path),
        "--validation",
        "0.6",
        "--test",
        "0.5",
        "--out",
        str(tmp_path / "c"),
        "--quiet",
    )
    assert bad.returncode == 2 and "no record" in bad.stderr
