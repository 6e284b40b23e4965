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


def test_on_cpu_workers_the_estimate_gives_cpu_minutes_from_the_workers_measurement(
    api: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.core.config import get_settings
    from worker.spec.cpu_time import write_calibration

    # The test cluster's workers are CPUs (TUNELAB_WORKER_CUDA=false); this data folder has
    # no measurement yet, so the estimate says what it assumes.
    monkeypatch.setattr(get_settings(), "data_dir", tmp_path)
    config = {"base_model": "smollm2-135m-instruct", "method": "lora"}
    assumed = api.post("/estimates", json=config).json()
    assert assumed["device"] == "cpu" and assumed["cpu"]["measured"] is False
    assert any("not measured yet" in a for a in assumed["assumptions"])
    # The CPU rules: one pass, the CPU's rate.
    assert assumed["chosen"]["epochs"] == 1.0 and assumed["chosen"]["learning_rate"] == 8e-4
    write_calibration(
        tmp_path,
        {"matmul_gflops": 400.0, "dtype": "bfloat16", "threads": 2, "processor": "Test CPU"},
    )
    measured = api.post("/estimates", json=config).json()
    assert measured["cpu"]["measured"] is True and measured["cpu"]["processor"] == "Test CPU"
    assert measured["seconds"] < assumed["seconds"]
    # Naming a GPU asks what it would take there: the GPU's rules and time.
    on_gpu = api.post("/estimates", json={**config, "gpu": "H100"}).json()
    assert on_gpu["device"] == "gpu" and on_gpu["chosen"]["epochs"] == 2.0  # 1,000 assumed
    assert on_gpu["seconds"] < measured["seconds"]
