"""The chaos bench's shortened version (bench/chaos.py, size "ci"): 3 worker SIGKILLs
mid-training, a broker restart that loses every message, 30 API clients for 10 s, and the
hostile-file corpus, against real processes (`tunelab serve`, Celery workers, a Redis of the
bench's own, this run's Postgres database). Speed is reported by the bench, never asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import run
from bench.chaos_stack import Stack

pytestmark = pytest.mark.e2e


def test_the_shortened_chaos_bench_loses_nothing(
    postgres_database: str, admin_token: str, tiny_model: Path, tmp_path: Path
) -> None:
    stack = Stack.create(
        tmp_path / "chaos", database_url=postgres_database, token=admin_token, model=tiny_model
    )
    try:
        results = {r["scenario"]: r for r in run(["1", "4", "6", "7"], "ci", stack)}
    finally:
        stack.close()
    for result in results.values():
        assert "error" not in result, result

    kills = results["worker_sigkill"]
    assert kills["kills"] == 3 and kills["kills_missed"] == 0, kills
    assert kills["succeeded_once"] == kills["jobs"], kills["problems"]
    assert kills["max_loss_diff"] <= 1e-6
    assert kills["duplicate_or_missing_points"] == 0

    broker = results["broker_restart"]
    assert broker["succeeded"] == broker["jobs"] == 6, broker["problems"]
    assert broker["ran_twice"] == 0

    load = results["load"]
    cluster = load["modes"]["cluster"]
    assert cluster["errors"] == {}, cluster
    assert cluster["uploads_accepted"] > 0 and cluster["uploads_missing"] == 0

    hostile = results["hostile_files"]
    assert hostile["escaped"] == []
    for sent in hostile["files"]:
        if sent["expected"] == "refused":
            assert sent["refused"] and sent["bytes_left"] == 0, sent
            assert sent["detail"], "the refusal says what is wrong"
        else:
            assert sent["status"] == 201 and sent.get("safe", True), sent
