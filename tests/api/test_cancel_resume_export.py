"""Cancel is a cancel: a real `celery worker` stops a running tiny-model job before its next
step, the job ends `cancelled` with a checkpoint of the step it reached, and that checkpoint
can be exported ("export what was trained") and resumed."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.models import Job
from tests.factories import (
    alpaca_records,
    create_dataset,
    create_project,
    start_job,
    tiny_config,
    wait_for_status,
)
from tests.live import wait_for

pytestmark = pytest.mark.e2e


def test_a_cancelled_job_stops_within_a_step_keeps_a_checkpoint_and_exports_and_resumes_it(
    api: httpx.Client, tiny_model: Path
) -> None:
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(16))
    # Checkpoints every 1,000 steps: the only one before step 1,000 is the cancel's own.
    config = tiny_config(tiny_model, max_steps=1_000, checkpoint_every=1_000)
    job = start_job(api, project["id"], dataset["id"], config)
    wait_for(
        lambda: api.get(f"/jobs/{job['id']}").json()["current_step"] >= 3,
        120,
        interval=0.1,
        what="the job to train a few steps",
    )
    asked = api.post(f"/jobs/{job['id']}/cancel")
    assert asked.status_code == 200, asked.text
    step_when_asked = asked.json()["current_step"]

    done = wait_for_status(api, job["id"], timeout=30)
    assert done["status"] == "cancelled", done["error"]
    assert done["error"] is None
    # At most the step in flight when the cancel was committed finishes.
    assert step_when_asked <= done["current_step"] <= step_when_asked + 1
    stopped_at = done["current_step"]
    assert done["checkpoint"] == f"checkpoint-{stopped_at}"
    folder = get_settings().runs_dir / job["id"] / "checkpoints" / done["checkpoint"]
    assert (folder / "trainable.safetensors").is_file()
    messages = [e["message"] for e in api.get(f"/jobs/{job['id']}/events").json()]
    assert f"Checkpoint saved at step {stopped_at}" in messages
    assert messages[-1] == "Cancelled"

    # "Export what was trained": the checkpoint becomes an adapter on the worker.
    made = api.post(f"/jobs/{job['id']}/exports", json={"kind": "adapter"})
    assert made.status_code == 201, made.text

    def export_done() -> dict | None:
        export = api.get(f"/exports/{made.json()['id']}").json()
        return export if export["status"] in ("succeeded", "failed") else None

    export = wait_for(export_done, 180, what="the export of the checkpoint")
    assert export["status"] == "succeeded", export["error"]
    assert export["progress"] == {}
    assert "adapter_model.safetensors" in export["files"]
    archive = api.get(f"/exports/{export['id']}/download")
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        names = tar.getnames()
        card = tar.extractfile(next(n for n in names if n.endswith("README.md")))
        assert card is not None and f"checkpoint-{stopped_at}" in card.read().decode()
    assert any(n.endswith("adapter_config.json") for n in names)

    # Resume: queued again, and the worker carries on from the checkpoint's step.
    resumed = api.post(f"/jobs/{job['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] in ("queued", "running")
    wait_for(
        lambda: api.get(f"/jobs/{job['id']}").json()["current_step"] > stopped_at,
        120,
        interval=0.1,
        what="the resumed job to train past its checkpoint",
    )
    events = api.get(f"/jobs/{job['id']}/events").json()
    carried_on = next(e for e in events if e["message"].startswith("Resuming from the checkpoint"))
    assert carried_on["data"]["step"] == stopped_at
    losses = api.get(f"/jobs/{job['id']}/metrics", params={"name": "loss"}).json()
    assert [p["step"] for p in losses][:stopped_at] == list(range(1, stopped_at + 1))
    assert api.post(f"/jobs/{job['id']}/cancel").status_code == 200
    assert wait_for_status(api, job["id"], timeout=30)["status"] == "cancelled"

    # A failed job with a checkpoint offers the same (its failure is written as a worker
    # writes one: the status and the error).
    with get_sessionmaker()() as session:
        session.execute(
            update(Job)
            .where(Job.id == uuid.UUID(job["id"]))
            .values(status="failed", error="The loss became nan at step 9; lower the rate.")
        )
        session.commit()
    failed = api.get(f"/jobs/{job['id']}").json()
    assert failed["status"] == "failed" and failed["checkpoint"].startswith("checkpoint-")
    again = api.post(f"/jobs/{job['id']}/resume")
    assert again.status_code == 200 and again.json()["error"] is None
    api.post(f"/jobs/{job['id']}/cancel")
    assert wait_for_status(api, job["id"], timeout=60)["status"] == "cancelled"


def test_resume_and_export_are_refused_without_a_checkpoint(
    api: httpx.Client, tiny_model: Path
) -> None:
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(8))
    busy = start_job(api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=1_000))
    waiting = start_job(api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=2))
    # The one worker is busy with the first job: the second waits, and says behind what.
    assert api.get(f"/jobs/{waiting['id']}").json()["jobs_ahead"] >= 1
    cancelled = api.post(f"/jobs/{waiting['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["checkpoint"] is None
    refused = api.post(f"/jobs/{waiting['id']}/resume")
    assert refused.status_code == 409 and "checkpoint" in refused.json()["detail"]
    refused = api.post(f"/jobs/{waiting['id']}/exports", json={"kind": "adapter"})
    assert refused.status_code == 409 and "checkpoint" in refused.json()["detail"]
    assert api.post(f"/jobs/{busy['id']}/resume").status_code == 409  # it is not stopped
    api.post(f"/jobs/{busy['id']}/cancel")
    wait_for_status(api, busy["id"], timeout=30)
