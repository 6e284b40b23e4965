"""Exports through the API and the worker: merged and adapter exports of a LoRA job,
downloads with range requests, and a prefix-tuning job that can only export its adapter."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import httpx

from tests.factories import (
    alpaca_records,
    create_dataset,
    create_project,
    start_job,
    tiny_config,
    wait_for_status,
)
from tests.live import wait_for


def wait_for_export(api: httpx.Client, export_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        export = api.get(f"/exports/{export_id}").json()
        return export if export["status"] in ("succeeded", "failed") else None

    return wait_for(check, 120, what=f"export {export_id}")


def trained_job(api: httpx.Client, tiny_model: Path, **overrides: Any) -> dict[str, Any]:
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(12))
    job = start_job(
        api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=3, **overrides)
    )
    done = wait_for_status(api, job["id"])
    assert done["status"] == "succeeded", done["error"]
    return done


def test_a_lora_job_exports_merged_and_as_an_adapter(api: httpx.Client, tiny_model: Path) -> None:
    job = trained_job(api, tiny_model)
    merged = api.post(f"/jobs/{job['id']}/exports", json={"kind": "merged"})
    assert merged.status_code == 201, merged.text
    adapter = api.post(f"/jobs/{job['id']}/exports", json={"kind": "adapter"}).json()
    merged_done = wait_for_export(api, merged.json()["id"])
    adapter_done = wait_for_export(api, adapter["id"])
    assert merged_done["status"] == "succeeded", merged_done["error"]
    assert merged_done["verification"]["passed"] is True
    assert "model.safetensors" in merged_done["files"] and "README.md" in merged_done["files"]
    assert adapter_done["status"] == "succeeded", adapter_done["error"]
    assert "adapter_model.safetensors" in adapter_done["files"]
    assert [e["id"] for e in api.get(f"/jobs/{job['id']}/exports").json()] == [
        adapter["id"],
        merged_done["id"],
    ]

    url = f"/exports/{merged_done['id']}/download"
    whole = api.get(url)
    assert whole.status_code == 200 and whole.headers["content-type"] == "application/x-tar"
    assert int(whole.headers["content-length"]) == merged_done["size_bytes"]
    part = api.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole.content[100:200]
    with tarfile.open(fileobj=io.BytesIO(whole.content)) as tar:
        names = tar.getnames()
        card = tar.extractfile(next(n for n in names if n.endswith("README.md")))
        assert card is not None
        text = card.read().decode()
    assert any(n.endswith("/model.safetensors") for n in names)
    assert "vllm serve" in text and "Check" in text


def test_a_prefix_tuning_job_exports_only_its_adapter_and_says_why(
    api: httpx.Client, tiny_model: Path
) -> None:
    job = trained_job(api, tiny_model, method="prefix_tuning", num_virtual_tokens=4, lora_r="auto")
    refused = api.post(f"/jobs/{job['id']}/exports", json={"kind": "merged"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "kind"
    assert "virtual tokens" in refused.json()["detail"]
    export = wait_for_export(
        api, api.post(f"/jobs/{job['id']}/exports", json={"kind": "adapter"}).json()["id"]
    )
    assert export["status"] == "succeeded", export["error"]
    assert export["note"].startswith("Not merged: prefix-tuning")


def test_an_unfinished_job_has_nothing_to_export(api: httpx.Client, tiny_model: Path) -> None:
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(4))
    job = start_job(api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=2))
    api.post(f"/jobs/{job['id']}/cancel")
    assert api.post(f"/jobs/{job['id']}/exports", json={"kind": "adapter"}).status_code == 409
    assert api.post(f"/jobs/{job['id']}/exports", json={"kind": "zip"}).status_code == 422


def test_tunelab_export_writes_a_folder_that_transformers_loads(
    api: httpx.Client, tiny_model: Path, tmp_path: Path, cluster: Any, admin_token: str
) -> None:
    import os
    import subprocess

    from transformers import AutoModelForCausalLM

    from tests.live import tunelab

    job = trained_job(api, tiny_model)
    env = {**os.environ, "TUNELAB_URL": cluster.url, "TUNELAB_TOKEN": admin_token}
    target = tmp_path / "merged"
    done = subprocess.run(
        tunelab("export", job["id"], "--merged", str(target)),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "merged model written to" in done.stdout
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in target.iterdir()}
    AutoModelForCausalLM.from_pretrained(str(target))
    again = subprocess.run(
        tunelab("export", job["id"], "--adapter", str(target)),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "not an empty folder" in again.stderr
