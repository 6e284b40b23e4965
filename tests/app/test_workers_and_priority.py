"""The workers at GET /api/v1/workers and on the admin's workers page (English and Chinese),
and a project's priority set through the API and the project page."""

from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Connection, delete
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.models import WorkerRecord
from app.services import workers
from tests.app.pages import csrf
from tests.factories import create_project
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
