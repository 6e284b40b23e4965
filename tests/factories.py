"""Builders for test rows and files. They go through the public API, like a user would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.live import wait_for

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FINISHED = {"succeeded", "failed", "cancelled"}


# Four questions a tiny model learns to answer within a few dozen steps.
QA = [
    ("What colour is the sky?", "Blue."),
    ("What is two plus two?", "Four."),
    ("What is the capital of France?", "Paris."),
    ("What is the opposite of hot?", "Cold."),
]


def chat(question: str, answer: str) -> dict[str, Any]:
    """One user question and its answer as a chat record."""
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def alpaca_records(n: int, *, start: int = 0) -> list[dict[str, str]]:
    """Small repetitive records a tiny model learns quickly, half of them Chinese."""
    out = []
    for i in range(start, start + n):
        if i % 2:
            out.append(
                {"instruction": f"把数字 {i} 翻译成中文", "input": "", "output": f"数字是 {i}。"}
            )
        else:
            out.append({"instruction": f"Repeat the number {i}", "input": "", "output": f"{i}"})
    return out


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def alpaca_zh_demo(n: int) -> list[dict[str, Any]]:
    path = SHARED_DATA / "llamafactory-demo" / "alpaca_zh_demo.json"
    return json.loads(path.read_text(encoding="utf-8"))[:n]


def create_project(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {
        "name": "客服助手 support bot",
        "system_prompt": "You are a helpful assistant.",
        **fields,
    }
    response = api.post("/projects", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def upload(
    api: httpx.Client,
    project_id: str,
    content: bytes,
    filename: str = "train.jsonl",
    **fields: str,
) -> httpx.Response:
    return api.post(
        f"/projects/{project_id}/datasets",
        files={"file": (filename, content, "application/octet-stream")},
        data=fields,
    )


def stage(
    api: httpx.Client, project_id: str, content: bytes, filename: str = "train.jsonl"
) -> dict[str, Any]:
    """Send a file to the upload step (before any import choices); returns the upload."""
    response = api.post(
        f"/projects/{project_id}/uploads",
        files={"file": (filename, content, "application/octet-stream")},
    )
    assert response.status_code == 201, response.text
    return response.json()


def import_upload(api: httpx.Client, upload_id: str, **body: Any) -> httpx.Response:
    return api.post(f"/uploads/{upload_id}/import", json=body)


def create_dataset(api: httpx.Client, project_id: str, records: list[dict[str, Any]]) -> dict:
    response = upload(api, project_id, jsonl(records))
    assert response.status_code == 201, response.text
    return response.json()


def tiny_config(model: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "base_model": str(model),
        "method": "lora",
        "max_steps": 12,
        "learning_rate": 5e-3,
        "batch_size": 4,
        "max_seq_length": 64,
        "lora_r": 8,
        **overrides,
    }


def start_job(
    api: httpx.Client, project_id: str, dataset_id: str, config: dict, *, evaluate: bool = False
) -> dict:
    """Queue a job. Its evaluation afterwards is off unless asked for: most tests are about
    training, and the one worker would otherwise spend their time evaluating."""
    response = api.post(
        "/jobs",
        json={
            "project_id": project_id,
            "dataset_id": dataset_id,
            "config": config,
            "evaluate": evaluate,
        },
    )
    assert response.status_code == 201, response.text
    return response.json()


def wait_for_status(
    api: httpx.Client, job_id: str, statuses: set[str] | None = None, timeout: float = 180
) -> dict[str, Any]:
    wanted = statuses or FINISHED

    def check() -> dict[str, Any] | None:
        job = api.get(f"/jobs/{job_id}").json()
        return job if job["status"] in wanted else None

    return wait_for(check, timeout, what=f"job {job_id} to reach {sorted(wanted)}")
