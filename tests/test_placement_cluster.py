"""Placement with three real `tunelab worker` processes on Postgres and Redis, each declaring
a different capacity through the environment (they all train on this machine's CPU): a job
lands only on a worker whose capacity class fits it, a job no worker can run waits and says
why, one no worker could ever run is refused, a project of higher priority goes first, and a
stopped worker's job finishes on another."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_EMAIL, REDIS_URL, RUN_ID
from tests.factories import (
    alpaca_records,
    create_dataset,
    create_project,
    start_job,
    tiny_config,
    wait_for_status,
)
from tests.live import api_client, cli_token, free_port, start_server, tunelab, wait_for

pytestmark = pytest.mark.e2e

# name: (GPUs, GB per GPU, 4-bit)
WORKERS = {"small": (1, 16, False), "mid": (1, 24, True), "big": (2, 80, True)}


def job_request(api: httpx.Client, project: str, dataset: str, config: dict) -> httpx.Response:
    return api.post(
        "/jobs",
        json={"project_id": project, "dataset_id": dataset, "config": config, "evaluate": False},
    )


def running(api: httpx.Client, job_id: str) -> dict | None:
    job = api.get(f"/jobs/{job_id}").json()
    return job if job["status"] == "running" and job["current_step"] >= 1 else None


@pytest.fixture(scope="module")
def placed(
    tmp_path_factory: pytest.TempPathFactory, postgres_database: str
) -> Iterator[tuple[httpx.Client, dict[str, subprocess.Popen[bytes]]]]:
    logs = tmp_path_factory.mktemp("placement")
    queue = f"placement-{RUN_ID}-{uuid.uuid4().hex[:4]}"
    env = {
        **os.environ,
        "TUNELAB_DEFAULT_QUEUE": queue,
        # The web places jobs for GPU workers; the workers declare their GPUs below.
        "TUNELAB_WORKER_CUDA": "true",
        "TUNELAB_MAX_GPU_MEMORY_GB": "160",
        "TUNELAB_REOFFER_SECONDS": "3",
    }
    workers = {}
    for name, (gpus, memory, four_bit) in WORKERS.items():
        worker_env = {
            **env,
            "TUNELAB_WORKER_NAME": name,
            "TUNELAB_WORKER_GPUS": str(gpus),
            "TUNELAB_WORKER_GPU_MEMORY_GB": str(memory),
            "TUNELAB_WORKER_GPU_NAME": f"Declared {memory}GB",
            "TUNELAB_WORKER_4BIT": str(four_bit).lower(),
            "OMP_NUM_THREADS": "1",
        }
        handle = (logs / f"{name}.log").open("ab")
        workers[name] = subprocess.Popen(
            tunelab("worker", "--loglevel", "WARNING"),
            env=worker_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    server = start_server(
        port=free_port(), env=env, log=logs / "server.log", extra_args=["--no-worker"]
    )
    try:
        with api_client(server.url, cli_token(ADMIN_EMAIL, env, "read,write,admin")) as api:
            yield api, workers
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.stop()
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"*{queue}*"):
            client.delete(key)
        client.close()


def online_workers(api: httpx.Client) -> dict[str, dict]:
    return {
        w["name"].split(":")[0]: w
        for w in api.get("/workers").json()
        if w["online"] and w["name"].split(":")[0] in WORKERS
    }


def test_jobs_land_where_they_fit_priorities_go_first_and_a_stopped_workers_job_moves(
    placed: tuple[httpx.Client, dict[str, subprocess.Popen[bytes]]], tiny_model: Path
) -> None:
    api, processes = placed
    seen = wait_for(
        lambda: online_workers(api) if len(online_workers(api)) == 3 else None,
        90,
        what="the three workers to register",
    )
    small, mid, big = seen["small"], seen["mid"], seen["big"]
    assert small["capacity"]["gpus"] == 1 and small["capacity"]["memory_class"] == 16
    assert big["capacity"]["four_bit"] and big["capacity"]["gpus"] == 2
    assert not any("gpu-24g" in q for q in small["queues"])
    assert any(q.endswith(".gpu-80g-x2-4bit") for q in big["queues"])
    assert not any(q.endswith("-4bit") for q in small["queues"])

    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(8))

    # A 14B model's LoRA needs a 32 GB card: the 80 GB worker alone has one.
    fourteen_b = start_job(
        api, project["id"], dataset["id"], {"base_model": "qwen2.5-14b-instruct", "method": "lora"}
    )
    assert fourteen_b["queue"].endswith(".gpu-32g")
    assert fourteen_b["queue"] in big["queues"]
    assert fourteen_b["queue"] not in small["queues"] + mid["queues"]
    # Its weights are not here (offline): it fails, on the one worker that could have run it.
    ended = wait_for_status(api, fourteen_b["id"], timeout=60)
    assert ended["worker"].split(":")[0] == "big", ended

    # Full fine-tuning of 7B needs ~128 GB on one card: accepted, and it says why it waits.
    huge = start_job(
        api, project["id"], dataset["id"], {"base_model": "qwen2.5-7b-instruct", "method": "full"}
    )
    assert huge["status"] == "queued" and huge["queue"].endswith(".gpu-141g")
    assert huge["waiting_reason"].startswith("No online worker can run this job: it needs one GPU")
    events = [e["message"] for e in api.get(f"/jobs/{huge['id']}/events").json()]
    assert any(m.startswith("No online worker can run this job yet") for m in events)
    # 14B in full needs ~250 GB per GPU: beyond this installation's maximum, refused.
    refused = job_request(
        api, project["id"], dataset["id"], {"base_model": "qwen2.5-14b-instruct", "method": "full"}
    )
    assert refused.status_code == 422, refused.text
    assert "at most 160 GB" in refused.json()["detail"]

    # Every worker busy with a job that runs until it is cancelled.
    blockers = [
        start_job(api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=5000))
        for _ in range(3)
    ]
    held = [wait_for(lambda j=j: running(api, j["id"]), 90, what="a blocker") for j in blockers]
    assert {j["worker"].split(":")[0] for j in held} == {"small", "mid", "big"}
    by_worker = {j["worker"].split(":")[0]: j for j in held}

    # Queued behind them: three jobs of a project of priority 0, then one of priority 10.
    low = create_project(api, name="low")
    low_data = create_dataset(api, low["id"], alpaca_records(8))
    high = create_project(api, name="high")
    assert api.patch(f"/projects/{high['id']}", json={"priority": 10}).json()["priority"] == 10
    high_data = create_dataset(api, high["id"], alpaca_records(8))
    lows = [
        start_job(api, low["id"], low_data["id"], tiny_config(tiny_model, max_steps=4))
        for _ in range(3)
    ]
    urgent = start_job(
        api,
        high["id"],
        high_data["id"],
        tiny_config(tiny_model, max_steps=150, checkpoint_every=20),
    )

    # The first worker to be free takes the job of priority 10, though it was queued last.
    api.post(f"/jobs/{by_worker['small']['id']}/cancel")
    taken = wait_for(lambda: running(api, urgent["id"]), 60, what="the urgent job to start")
    assert taken["worker"].split(":")[0] == "small"
    assert all(api.get(f"/jobs/{j['id']}").json()["status"] == "queued" for j in lows)

    # Stopping that worker hands its job back; the next free worker carries it to the end.
    processes["small"].send_signal(signal.SIGTERM)
    processes["small"].wait(timeout=60)
    back = api.get(f"/jobs/{urgent['id']}").json()
    assert back["status"] in ("queued", "running"), back
    api.post(f"/jobs/{by_worker['mid']['id']}/cancel")
    done = wait_for_status(api, urgent["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    assert done["worker"].split(":")[0] == "mid" and done["attempts"] == 2
    said = [e["message"] for e in api.get(f"/jobs/{urgent['id']}/events").json()]
    assert any("is shutting down; handed back to the queue" in m for m in said), said

    api.post(f"/jobs/{by_worker['big']['id']}/cancel")
    for job in lows:
        assert wait_for_status(api, job["id"], timeout=120)["status"] == "succeeded"
    gone = {w["name"].split(":")[0]: w for w in api.get("/workers").json()}
    assert not gone["small"]["online"] and gone["small"]["stopped_at"] is not None
    assert api.post(f"/jobs/{huge['id']}/cancel").json()["status"] == "cancelled"
