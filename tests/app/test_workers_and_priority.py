"""The workers at GET /api/v1/workers and on the admin's workers page (English and Chinese),
a project's priority set through the API and the project page, and the job form's GPU count
with its estimate per GPU."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, delete
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.models import Evaluation, Export, Job, JobStatus, WorkerRecord
from app.services import workers
from tests.app.pages import csrf
from tests.factories import alpaca_records, create_project, jsonl
from worker.spec.placement import Capacity, queues_for

ZH = {"Accept-Language": "zh-CN"}


def register_two(connection: Connection) -> None:
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        session.execute(delete(WorkerRecord))
        big = Capacity(gpus=2, gpu_name="NVIDIA H100 80GB HBM3", gpu_memory_gb=79.1, four_bit=True)
        workers.register(
            session,
            name="gpu-a:41",
            host="gpu-a",
            capacity=big,
            queues=["training", *queues_for("training", big)],
            models=["qwen2.5-7b-instruct"],
        )
        workers.register(
            session, name="cpu-b:42", host="cpu-b", capacity=Capacity(), queues=[], models=[]
        )
        gone = session.get(WorkerRecord, "cpu-b:42")
        assert gone is not None
        gone.last_seen = utcnow() - timedelta(hours=1)
        session.commit()


def test_the_workers_api_lists_capacity_queues_models_and_who_is_online(
    api: httpx.Client, connection: Connection
) -> None:
    register_two(connection)
    listed = api.get("/workers").json()
    assert [w["name"] for w in listed] == ["gpu-a:41", "cpu-b:42"]  # online first
    gpu, cpu = listed
    assert gpu["online"] and not cpu["online"]
    assert gpu["capacity"] == {
        "gpus": 2,
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "gpu_memory_gb": 79.1,
        "four_bit": True,
        "cpu_threads": 1,
        "cuda": True,
        "memory_class": 80,
    }
    assert "training.gpu-80g-x2-4bit" in gpu["queues"]
    assert gpu["models"] == ["qwen2.5-7b-instruct"] and gpu["running_jobs"] == []


def test_the_workers_page_in_english_and_chinese(
    browser: TestClient, connection: Connection
) -> None:
    register_two(connection)
    page = browser.get("/admin/workers")
    assert page.status_code == 200
    assert 'href="/admin/workers"' in page.text
    assert "2 × NVIDIA H100 80GB HBM3 (79 GB), 4-bit" in page.text
    assert "training.gpu-80g-x2-4bit" in page.text and "qwen2.5-7b-instruct" in page.text
    zh = browser.get("/admin/workers", headers=ZH).text
    for chinese in ("工作节点", "在线", "离线", "支持 4 位量化", "仅 CPU"):
        assert chinese in zh, chinese


def test_an_admin_sets_a_projects_priority_through_the_api(api: httpx.Client) -> None:
    project = create_project(api)
    assert project["priority"] == 0
    changed = api.patch(f"/projects/{project['id']}", json={"priority": 7})
    assert changed.status_code == 200 and changed.json()["priority"] == 7
    assert api.get(f"/projects/{project['id']}").json()["priority"] == 7
    refused = api.patch(f"/projects/{project['id']}", json={"priority": 1000})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "priority"


def test_an_admin_sets_a_projects_priority_on_its_page(browser: TestClient) -> None:
    made = browser.post(
        "/projects",
        data={"name": "priority", "csrf_token": csrf(browser.get("/projects").text)},
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text[:500]
    where = made.headers["location"]
    page = browser.get(where)
    assert "Priority 0" in page.text
    sent = browser.post(
        f"{where}/priority",
        data={"priority": "-3", "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    assert "Priority -3" in browser.get(where).text
    wrong = browser.post(
        f"{where}/priority", data={"priority": "high", "csrf_token": csrf(page.text)}, headers=ZH
    )
    assert wrong.status_code == 422
    assert "优先级必须是 -100 到 100 之间的整数" in wrong.text
    assert "优先级 -3" in wrong.text


def project_with_data(browser: TestClient) -> tuple[str, str]:
    """A project made on its page with data imported through the upload form: its id and the
    job form's dataset choice ("<dataset id>@<version>")."""
    page = browser.get("/projects")
    made = browser.post(
        "/projects",
        data={"name": "多卡", "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text[:500]
    project_id = made.headers["location"].rsplit("/", 1)[1]
    staged = browser.post(
        f"/projects/{project_id}/uploads",
        files={"file": ("train.jsonl", jsonl(alpaca_records(40)), "application/octet-stream")},
        headers={"X-CSRF-Token": csrf(page.text)},
        follow_redirects=False,
    )
    assert staged.status_code == 303, staged.text[:500]
    upload_page = browser.get(staged.headers["location"])
    imported = browser.post(
        staged.headers["location"] + "/import",
        data={"name": "数据", "csrf_token": csrf(upload_page.text)},
        follow_redirects=False,
    )
    assert imported.status_code == 303, imported.text[:500]
    version = re.search(
        r'<option value="([0-9a-f-]+@\d+)"', browser.get(f"/projects/{project_id}").text
    )
    assert version
    return project_id, version.group(1)


def test_the_job_form_asks_for_gpus_and_its_estimate_gives_each_gpus_share(
    browser: TestClient, connection: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.core.config import get_settings

    # Workers with NVIDIA GPUs (the test cluster's are CPUs): the form's estimate is a GPU's.
    monkeypatch.setattr(get_settings(), "worker_cuda", True)
    project_id, dataset = project_with_data(browser)
    page = browser.get(f"/projects/{project_id}")
    assert 'name="gpus"' in page.text and 'placeholder="auto"' in page.text
    form = {
        "dataset_id": dataset,
        "base_model": "llama-3.1-8b-instruct",
        "method": "lora",
        "csrf_token": csrf(page.text),
    }
    one = browser.post(f"/projects/{project_id}/estimate", data=form)
    assert one.status_code == 200 and 'data-testid="estimate-memory"' in one.text
    assert "estimate-gpus" not in one.text
    assert re.search(r"tokens/s\)(, with gradient checkpointing)?\.</p>", one.text), one.text
    # In Chinese the sentence ends with a Chinese full stop, not an English one.
    zh = browser.post(
        f"/projects/{project_id}/estimate", data=form, headers={"Accept-Language": "zh-CN"}
    )
    assert zh.status_code == 200 and re.search(r"）[^<.]*。</p>", zh.text), zh.text
    two = browser.post(f"/projects/{project_id}/estimate", data={**form, "gpus": "2"})
    assert two.status_code == 200, two.text
    said = re.search(r'data-testid="estimate-gpus">([^<]+)<', two.text)
    assert said and said.group(1).startswith("On 2 GPUs: the memory above is each GPU"), two.text
    # 40 short samples, four a step: each GPU's share is small next to what they exchange.
    assert "2 GPUs are hardly faster than one here" in two.text
    # The speed-up itself is the estimate's model (tests/worker/test_distributed.py).
    assert re.search(r"about \d+\.\d× as fast as on one", said.group(1)), said.group(1)
    zh = browser.post(f"/projects/{project_id}/estimate", data={**form, "gpus": "2"}, headers=ZH)
    assert "在 2 块 GPU 上" in zh.text and "On 2 GPUs" not in zh.text

    refused = browser.post(
        f"/projects/{project_id}/jobs", data={**form, "gpus": "0", "max_steps": "3"}
    )
    assert refused.status_code == 422
    assert "gpus" in refused.text and 'value="0"' in refused.text
    started = browser.post(
        f"/projects/{project_id}/jobs",
        data={**form, "gpus": "2", "max_steps": "3"},
        follow_redirects=False,
    )
    assert started.status_code == 303, started.text[:2000]
    job_id = uuid.UUID(started.headers["location"].rsplit("/", 1)[1])
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        job = session.get(Job, job_id)
        assert job is not None and job.config["gpus"] == 2


def test_a_queued_evaluation_and_export_say_when_no_online_worker_can_take_them(
    browser: TestClient, connection: Connection
) -> None:
    project_id, dataset = project_with_data(browser)
    page = browser.get(f"/projects/{project_id}")
    started = browser.post(
        f"/projects/{project_id}/jobs",
        data={
            "dataset_id": dataset,
            "base_model": "smollm2-135m-instruct",
            "max_steps": "3",
            "csrf_token": csrf(page.text),
        },
        follow_redirects=False,
    )
    assert started.status_code == 303, started.text[:2000]
    job_id = uuid.UUID(started.headers["location"].rsplit("/", 1)[1])
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        session.execute(delete(WorkerRecord))  # nobody online
        job = session.get(Job, job_id)
        assert job is not None
        job.status = JobStatus.succeeded
        export = Export(job_id=job.id, kind="adapter", status="queued", queue=job.queue)
        evaluation = Evaluation(
            project_id=job.project_id,
            job_id=job.id,
            dataset_version_id=job.dataset_version_id,
            split="test",
            candidates=[],
            settings={},
            status="queued",
            queue=job.queue,
        )
        session.add_all([export, evaluation])
        session.commit()
        export_id, evaluation_id, queue = export.id, evaluation.id, job.queue

    said = "No worker is online: the {} starts when a worker that has a CPU starts."
    exports = browser.get(f"/jobs/{job_id}/exports").text
    assert said.format("export") in exports and 'data-testid="export-waiting"' in exports
    assert "工作节点启动后，导出就会开始" in browser.get(f"/jobs/{job_id}/exports", headers=ZH).text
    evaluation_page = browser.get(f"/evaluations/{evaluation_id}").text
    assert 'data-testid="waiting-reason"' in evaluation_page
    assert said.format("evaluation") in evaluation_page
    zh = browser.get(f"/evaluations/{evaluation_id}", headers=ZH).text
    assert "工作节点启动后，评估就会开始" in zh
    api = {"Accept": "application/json"}
    read = browser.get(f"/api/v1/exports/{export_id}", headers=api).json()
    assert read["waiting_reason"] == said.format("export")
    read = browser.get(f"/api/v1/evaluations/{evaluation_id}", headers=api).json()
    assert read["waiting_reason"] == said.format("evaluation")

    # A worker that consumes the job's queue comes online: nothing to explain any more.
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        workers.register(
            session, name="w:1", host="w", capacity=Capacity(), queues=[queue], models=[]
        )
        session.commit()
    assert browser.get(f"/api/v1/exports/{export_id}", headers=api).json()["waiting_reason"] is None
    read = browser.get(f"/api/v1/evaluations/{evaluation_id}", headers=api).json()
    assert read["waiting_reason"] is None
    assert "waiting for a free worker" in browser.get(f"/jobs/{job_id}/exports").text
