"""Jobs through the API, trained by a real `celery worker` process on Postgres and Redis."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
import uuid
import zipfile
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.models import Job
from app.services import jobs as jobs_service
from app.services import leases
from tests.api.test_security import make_user, token_for
from tests.factories import (
    alpaca_records,
    create_dataset,
    create_project,
    start_job,
    tiny_config,
    wait_for_status,
)
from tests.live import LiveServer, start_worker, wait_for


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


def test_many_polls_of_one_job_at_once_are_each_answered_with_what_came_after_them(
    api: httpx.Client, project_and_data: tuple[str, str], tiny_model: Path, cluster: LiveServer
) -> None:
    """Concurrent status reads of one job share database loads (app.core.coalesce); none may
    be answered with a job as it was before the request was sent, and a user who may not see
    the job is not answered with another user's read of it."""
    project_id, dataset_id = project_and_data
    job = start_job(api, project_id, dataset_id, tiny_config(tiny_model, max_steps=1))
    assert wait_for_status(api, job["id"])["status"] == "succeeded"
    outsider = token_for(cluster, make_user(api, "trainer")["email"])
    factory = get_sessionmaker()

    path = f"/api/v1/jobs/{job['id']}"
    committed: list[tuple[float, int]] = [(0.0, 0)]  # (when the commit had returned, step)
    seen: list[tuple[float, int]] = []  # (when the request was sent, the step it showed)
    refused: list[int] = []

    def write(step: int) -> None:
        with factory() as session:  # a worker's progress, written while the polls go on
            session.execute(
                update(Job).where(Job.id == uuid.UUID(job["id"])).values(current_step=step)
            )
            session.commit()

    async def rounds() -> None:
        headers = {"Authorization": api.headers["Authorization"]}
        done = False
        async with (
            httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=60) as c,
            httpx.AsyncClient(
                base_url=cluster.url, headers={"Authorization": f"Bearer {outsider}"}, timeout=60
            ) as other,
        ):

            async def poll(client: httpx.AsyncClient) -> None:
                while not done:
                    sent = time.monotonic()
                    answer = await client.get(path)
                    if client is other:
                        refused.append(answer.status_code)
                    else:
                        assert answer.status_code == 200, answer.text
                        seen.append((sent, answer.json()["current_step"]))

            pollers = [asyncio.ensure_future(poll(other if i % 5 == 0 else c)) for i in range(40)]
            # At least 60 writes, and on until 200 reads have overlapped them: how many reads
            # a write takes depends on the machine's load (CI runs trainings beside this).
            deadline = time.monotonic() + 120
            step = 0
            while step < 60 or (len(seen) <= 200 and time.monotonic() < deadline):
                step += 1
                await asyncio.to_thread(write, step)
                committed.append((time.monotonic(), step))
                await asyncio.sleep(0.005)
            done = True
            await asyncio.gather(*pollers)

    asyncio.run(rounds())
    assert refused and set(refused) == {404}
    assert len(seen) > 200
    for sent, step in seen:
        newest = max(s for t, s in committed if t <= sent)
        assert step >= newest, f"a request sent after step {newest} was written showed {step}"


def test_unknown_job_is_404(api: httpx.Client) -> None:
    assert api.get(f"/jobs/{uuid.uuid4()}").status_code == 404
    assert api.post(f"/jobs/{uuid.uuid4()}/cancel").status_code == 404


def test_a_job_whose_worker_stops_mid_run_resumes_from_its_checkpoint(
    api: httpx.Client, cluster: LiveServer, tiny_model: Path
) -> None:
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(40))  # 2 of them validate
    config = tiny_config(tiny_model, max_steps=60, checkpoint_every=4, eval_every=10)
    job = start_job(api, project["id"], dataset["id"], config)
    wait_for(
        lambda: api.get(f"/jobs/{job['id']}").json()["current_step"] >= 10,
        120,
        interval=0.1,
        what="the job to train past a checkpoint",
    )
    live = api.get(f"/jobs/{job['id']}").json()
    assert live["eta_seconds"] is not None and live["epoch"] > 0
    assert live["tokens_per_second"] > 0

    # Warm shutdown, as a deploy or Ctrl+C does: the worker hands the job back at its next
    # step. A new worker then takes it from the queue (and serves the rest of the session).
    worker = cluster.children[0]
    try:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        stopped = api.get(f"/jobs/{job['id']}").json()
        assert stopped["status"] == "queued" and stopped["current_step"] < 60
    finally:
        cluster.children[0] = start_worker(
            env=dict(os.environ), log=cluster.log.with_name("worker-after-resume.log")
        )
    done = wait_for_status(api, job["id"], timeout=300)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2 and done["current_step"] == 60

    events = api.get(f"/jobs/{job['id']}/events").json()
    handed_back = next(e for e in events if "handed back" in e["message"])
    resumed = next(e for e in events if e["message"].startswith("Resuming from the checkpoint"))
    resumed_at = resumed["data"]["step"]
    assert resumed_at >= 8 and resumed_at % 4 == 0
    assert resumed_at <= stopped["current_step"]

    losses = api.get(f"/jobs/{job['id']}/metrics", params={"name": "loss"}).json()
    assert [p["step"] for p in losses] == list(range(1, 61)), "each step exactly once"
    # The first attempt's points up to the checkpoint stay; every later step was (re)written
    # by the resumed attempt. A restart from step 1 would have rewritten them all.
    handed_back_at = datetime.fromisoformat(handed_back["created_at"])
    for point in losses:
        before = datetime.fromisoformat(point["created_at"]) < handed_back_at
        assert before == (point["step"] <= resumed_at), point
    validation = api.get(f"/jobs/{job['id']}/metrics", params={"name": "val_loss"}).json()
    assert [p["step"] for p in validation] == list(range(10, 61, 10))
    assert done["result"]["best_step"] in {p["step"] for p in validation}
    assert done["eta_seconds"] is None, "live progress is for running jobs"
    kept = get_settings().runs_dir / job["id"] / "checkpoints"
    assert sorted(p.name for p in kept.iterdir()) == ["checkpoint-56", "checkpoint-60"]


def test_a_resumed_step_overwrites_its_points_and_a_lost_lease_writes_none(
    db_session: Session, tiny_model: Path, api: httpx.Client
) -> None:
    from worker.tasks.runtime import Lease, LeaseLost

    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(8))
    job = start_job(api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=2))
    wait_for_status(api, job["id"])
    job_id = uuid.UUID(job["id"])
    lease = Lease(leases.JOB, job_id)

    def step(loss: float) -> None:
        lease.write(
            lambda s: jobs_service.record_step(
                s, job_id=job_id, step=2, total_steps=2, values={"loss": loss}
            )
        )

    with get_sessionmaker()() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(status="running", worker=lease.worker)
        )
        session.commit()
    step(9.0)  # the worker holding the job, resuming it: its point replaces the old one
    with get_sessionmaker()() as session:
        session.execute(update(Job).where(Job.id == job_id).values(worker="another"))
        session.commit()
    with pytest.raises(LeaseLost):
        step(5.0)  # it lost the job meanwhile: nothing is written, and it stops
    assert lease.lost and lease.should_stop()
    with get_sessionmaker()() as session:  # as it was, so no reaper re-runs it
        session.execute(update(Job).where(Job.id == job_id).values(status="succeeded"))
        session.commit()
    points = jobs_service.list_metrics(db_session, job_id=job_id, name="loss")
    assert [(p.step, p.value) for p in points][-1] == (2, 9.0)
    assert [p.step for p in points] == [1, 2]
