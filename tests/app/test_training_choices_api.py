"""Choosing how to train, before queueing: the catalog, the methods this tunelab's workers can
run, presets, estimates of memory and time, and refusals that name the field."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.factories import alpaca_records, create_dataset, create_project, tiny_config


@pytest.fixture
def project(api: httpx.Client) -> dict:
    return create_project(api)


def test_the_catalog_lists_current_open_families(api: httpx.Client) -> None:
    models = api.get("/models").json()
    families = {m["family"] for m in models}
    assert {"Qwen", "Llama", "Mistral", "Gemma", "GLM", "SmolLM"} <= families
    smol = next(m for m in models if m["name"] == "smollm2-135m-instruct")
    assert smol["context_length"] == 8192 and smol["licence"] == "Apache-2.0"
    assert "lora" in smol["methods"]


def test_methods_say_which_these_workers_cannot_run(api: httpx.Client) -> None:
    methods = {m["name"]: m for m in api.get("/methods").json()}
    assert set(methods) == {"lora", "qlora", "prefix_tuning", "p_tuning", "ia3", "full"}
    assert methods["qlora"]["unavailable"]  # the test workers have no GPU
    assert methods["lora"]["unavailable"] is None
    assert set(api.get("/presets").json()) == {"quick", "balanced", "thorough"}


def test_qlora_is_refused_at_job_creation_without_a_gpu(
    api: httpx.Client, project: dict, tiny_model: Path
) -> None:
    dataset = create_dataset(api, project["id"], alpaca_records(30))
    body = {
        "project_id": project["id"],
        "dataset_id": dataset["id"],
        "config": tiny_config(tiny_model, method="qlora"),
    }
    response = api.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert error["field"] == "config.method" and "GPU" in error["message"]
    assert api.get("/jobs", params={"project_id": project["id"]}).json()["total"] == 0


def test_more_samples_per_step_than_the_training_split_is_refused(
    api: httpx.Client, project: dict, tiny_model: Path
) -> None:
    dataset = create_dataset(api, project["id"], alpaca_records(30))
    config = tiny_config(tiny_model, batch_size=16, gradient_accumulation_steps=4)
    response = api.post(
        "/jobs", json={"project_id": project["id"], "dataset_id": dataset["id"], "config": config}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"].startswith("config.")


def test_an_estimate_of_memory_and_time_before_queueing(api: httpx.Client, project: dict) -> None:
    dataset = create_dataset(api, project["id"], alpaca_records(60))
    same = {
        "base_model": "llama-3.1-8b-instruct",
        "dataset_id": dataset["id"],
        "batch_size": 4,
        "max_seq_length": 512,
    }
    lora = api.post("/estimates", json={**same, "method": "lora"})
    assert lora.status_code == 200, lora.text
    body = lora.json()
    assert body["available"] and body["peak_memory_bytes"] > 14 * 1024**3  # 8B weights in bf16
    assert body["seconds"] > 0 and body["chosen"]
    qlora = api.post("/estimates", json={**same, "method": "qlora"}).json()
    assert qlora["peak_memory_bytes"] < 0.6 * body["peak_memory_bytes"]
    unknown = api.post("/estimates", json={"base_model": "someone/unknown-model"}).json()
    assert unknown["available"] is False and unknown["reason"]
    bad = api.post("/estimates", json={"base_model": "qwen3-0.6b", "learning_rate": -1})
    assert bad.status_code == 422
