"""Jobs through the API, trained by a real `celery worker` process on Postgres and Redis."""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

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


@pytest.fixture
def project_and_data(api: httpx.Client) -> tuple[str, str]:
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(16))
    return project["id"], dataset["id"]


def test_lora_job_runs_on_a_worker_and_records_metrics(
    api: httpx.Client, project_and_data: tuple[str, str], tiny_model: Path
) -> None:
    project_id, dataset_id = project_and_data
    job = start_job(api, project_id, dataset_id, tiny_config(tiny_model, max_steps=12))
    assert job["status"] == "queued"
    done = wait_for_status(api, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == 1.0 and done["current_step"] == 12
    assert done["started_at"] and done["finished_at"] and done["worker"]

    losses = api.get(f"/jobs/{job['id']}/metrics", params={"name": "loss"}).json()
    assert [p["step"] for p in losses] == list(range(1, 13))
    assert losses[-1]["value"] < losses[0]["value"]
    names = {p["name"] for p in api.get(f"/jobs/{job['id']}/metrics").json()}
    assert {"loss", "learning_rate", "grad_norm", "tokens_per_second"} <= names

    events = api.get(f"/jobs/{job['id']}/events").json()
    messages = [e["message"] for e in events]
    assert messages[0] == "Job created" and messages[-1] == "Succeeded"
    newer = api.get(f"/jobs/{job['id']}/events", params={"after": events[-2]["id"]}).json()
    assert [e["message"] for e in newer] == ["Succeeded"]

    artifacts = api.get(f"/jobs/{job['id']}/artifacts").json()
    assert [a["kind"] for a in artifacts] == ["adapter"]
    assert "adapter_model.safetensors" in artifacts[0]["files"]
    download = api.get(f"/artifacts/{artifacts[0]['id']}/download")
    assert download.status_code == 200
    assert download.headers["content-disposition"].startswith("attachment")
    names_in_zip = zipfile.ZipFile(io.BytesIO(download.content)).namelist()
    assert "adapter_config.json" in names_in_zip


def test_job_list_filters_by_project_and_status(
    api: httpx.Client, project_and_data: tuple[str, str], tiny_model: Path
) -> None:
    project_id, dataset_id = project_and_data
    job = start_job(api, project_id, dataset_id, tiny_config(tiny_model, max_steps=2))
    wait_for_status(api, job["id"])
    listed = api.get("/jobs", params={"project_id": project_id}).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    none = api.get("/jobs", params={"project_id": project_id, "status": "failed"}).json()
    assert none["total"] == 0
    assert api.get("/jobs", params={"status": "bogus"}).status_code == 422


def test_invalid_config_is_refused_naming_the_field_and_writes_no_job(
    api: httpx.Client, project_and_data: tuple[str, str], tiny_model: Path
) -> None:
    project_id, dataset_id = project_and_data
    with get_sessionmaker()() as session:
        before = session.scalar(select(func.count()).select_from(Job))
    response = api.post(
        "/jobs",
        json={
            "project_id": project_id,
            "dataset_id": dataset_id,
            "config": tiny_config(tiny_model, learning_rate=-1, method="magic"),
        },
    )
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"config.learning_rate", "config.method"} <= fields
    with get_sessionmaker()() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == before


def test_dataset_of_another_project_is_404(
    api: httpx.Client, project_and_data: tuple[str, str], tiny_model: Path
) -> None:
    _, dataset_id = project_and_data
    other = create_project(api, name="other")
    response = api.post(
        "/jobs",
        json={
            "project_id": other["id"],
            "dataset_id": dataset_id,
            "config": tiny_config(tiny_model),
        },
    )
    assert response.status_code == 404


def test_unknown_model_fails_the_job_with_a_readable_error(
    api: httpx.Client, project_and_data: tuple[str, str], tmp_path: Path
) -> None:
    project_id, dataset_id = project_and_data
    config = tiny_config(tmp_path / "no-such-model")
    job = start_job(api, project_id, dataset_id, config)
    done = wait_for_status(api, job["id"])
    assert done["status"] == "failed"
    assert "no-such-model" in done["error"]
    assert "Traceback" not in done["error"]
    assert api.get(f"/jobs/{job['id']}/artifacts").json() == []


def test_cancel_stops_a_running_job_within_seconds_and_a_queued_one_at_once(
    api: httpx.Client, project_and_data: tuple[str, str], tiny_model: Path
) -> None:
    project_id, dataset_id = project_and_data
    long = start_job(api, project_id, dataset_id, tiny_config(tiny_model, max_steps=100_000))
    waiting = start_job(api, project_id, dataset_id, tiny_config(tiny_model, max_steps=2))
    wait_for(
        lambda: api.get(f"/jobs/{long['id']}").json()["current_step"] >= 2,
        120,
        what="the long job to train a few steps",
    )
    # The single worker is busy, so the second job is still waiting: it is cancelled at once.
    cancelled = api.post(f"/jobs/{waiting['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"

    asked = time.monotonic()
    response = api.post(f"/jobs/{long['id']}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested_at"]
    done = wait_for_status(api, long["id"], timeout=30)
    assert done["status"] == "cancelled"
    assert time.monotonic() - asked < 15
    assert api.get(f"/jobs/{long['id']}/artifacts").json() == []

    again = api.post(f"/jobs/{long['id']}/cancel")
    assert again.status_code == 409
    # The cancelled queued job's message is still delivered; the worker must leave it alone.
    time.sleep(2)
    assert api.get(f"/jobs/{waiting['id']}").json()["status"] == "cancelled"


def test_unknown_job_is_404(api: httpx.Client) -> None:
    assert api.get(f"/jobs/{uuid.uuid4()}").status_code == 404
    assert api.post(f"/jobs/{uuid.uuid4()}/cancel").status_code == 404
