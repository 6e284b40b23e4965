"""What a running evaluation reports with each heartbeat: the stage, items done of the total,
and an ETA from the stage's pace so far (worker.tasks.evaluation.EvalReporter)."""

from __future__ import annotations

import time
import uuid

from app.services import leases
from worker.tasks.evaluation import EvalReporter
from worker.tasks.runtime import Lease


def test_progress_counts_items_and_gives_an_eta_once_items_are_done() -> None:
    lease = Lease(leases.EVALUATION, uuid.uuid4())
    reporter = EvalReporter(lease)
    assert lease.progress is not None
    assert lease.progress()["progress"]["phase"] == "loading"

    reporter.on_progress("generating", "tuned", 0, 40)
    first = lease.progress()["progress"]
    assert (first["done"], first["total"]) == (0, 40) and "eta_seconds" not in first
    time.sleep(0.2)
    reporter.on_progress("generating", "tuned", 10, 40)
    live = lease.progress()["progress"]
    assert (live["phase"], live["model"], live["done"], live["total"]) == (
        "generating",
        "tuned",
        10,
        40,
    )
    # 10 items in about 0.2 s: the other 30 take about three times as long.
    assert 0.4 <= live["eta_seconds"] <= 3.0

    reporter.on_progress("generating", "baseline", 0, 40)  # the next model starts its own pace
    assert "eta_seconds" not in lease.progress()["progress"]
    reporter.on_progress("generating", "baseline", 40, 40)
    assert "eta_seconds" not in lease.progress()["progress"], "nothing is left"
