"""Evaluations through the API and the real Celery worker, on a tiny random model: queued
after a job, on demand (k-shot baseline, checkpoints), the report with its verdict, samples,
exports, and the errors a bad request gets."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import (
    QA,
    chat,
    create_project,
    import_upload,
    jsonl,
    stage,
    start_job,
    tiny_config,
    wait_for_status,
)
from tests.live import api_client, wait_for

RECORDS = [chat(f"{q} ({i})", a) for i in range(10) for q, a in QA]


def wait_for_evaluation(api: httpx.Client, evaluation_id: str, timeout: float = 240) -> dict:
    def check() -> dict[str, Any] | None:
        evaluation = api.get(f"/evaluations/{evaluation_id}").json()
        finished = evaluation["status"] in ("succeeded", "failed", "cancelled")
        return evaluation if finished else None

    return wait_for(check, timeout, what=f"evaluation {evaluation_id} to finish")


NOT_MET = ["rougeL >= 0.99", "perplexity improves on baseline by >= 0.5", "human win rate >= 60%"]
MET = ["perplexity improves on baseline by >= 0.1", "bleu >= 0"]


def train_and_evaluate(api: httpx.Client, tiny_model: Path, criteria: list[str]) -> dict[str, Any]:
    """A project with ``criteria``, a dataset with a 20% test split, and a job that
    checkpoints and queues its own evaluation, waited for."""
    project = create_project(
        api, name="评测", system_prompt="Answer in one word.", success_criteria=criteria
    )
    upload = stage(api, project["id"], jsonl(RECORDS))
    dataset = import_upload(
        api, upload["id"], split={"validation": 0.1, "test": 0.2, "seed": 1}
    ).json()
    config = tiny_config(tiny_model, checkpoint_every=6, max_steps=12)
    job = start_job(api, project["id"], dataset["id"], config, evaluate=True)
    done = wait_for_status(api, job["id"])
    assert done["status"] == "succeeded", done["error"]
    found = wait_for(
        lambda: api.get("/evaluations", params={"job_id": job["id"]}).json()["items"],
        60,
        what="the job's automatic evaluation",
    )
    evaluation = wait_for_evaluation(api, found[0]["id"])
    return {"project": project, "dataset": dataset, "job": done, "evaluation": evaluation}


@pytest.fixture(scope="module")
def trained(cluster: object, admin_token: str, tiny_model: Path) -> dict[str, Any]:
    """Evaluated, with criteria the tiny model cannot meet (and a human one)."""
    with api_client(cluster.url, admin_token) as api:
        return train_and_evaluate(api, tiny_model, NOT_MET)


def test_a_succeeded_job_is_evaluated_against_its_prompting_baseline(
    trained: dict[str, Any],
) -> None:
    evaluation = trained["evaluation"]
    assert evaluation["status"] == "succeeded", evaluation["error"]
    keys = [c["key"] for c in evaluation["candidates"]]
    assert keys == ["baseline", f"job-{trained['job']['id'][:8]}"]
    assert evaluation["candidates"][0]["system_prompt"] == "Answer in one word."
    results = evaluation["results"]
    assert results["n"] == 8  # 20% of 40 records
    assert results["baseline"] == "baseline" and results["subject"] == keys[1]
    for key in keys:
        metrics = results["models"][key]
        assert set(metrics) >= {"bleu", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1"}
        for interval in metrics.values():
            assert interval["low"] <= interval["value"] <= interval["high"]
    delta = results["deltas"][keys[1]]["perplexity"]
    assert delta["low"] <= delta["value"] <= delta["high"]
    # The same decoding for both, recorded with the results: greedy, an automatic length.
    assert results["decoding"]["temperature"] == 0.0
    assert results["decoding"]["max_new_tokens"] >= 16


def test_the_report_gives_the_verdict_on_each_criterion(
    api: httpx.Client, trained: dict[str, Any]
) -> None:
    report = api.get(f"/projects/{trained['project']['id']}/report").json()
    assert report["evaluation"]["id"] == trained["evaluation"]["id"]
    rouge, perplexity, human = report["verdict"]
    assert rouge["status"] == "not_met" and rouge["margin"] < 0
    assert "short by" in rouge["explanation"]
    # 12 steps on repeated answers make the references much likelier than the base does.
    assert perplexity["status"] == "met", perplexity
    assert human["status"] == "pending"
    assert report["verdict_summary"]["status"] == "not_met"
    assert [e["id"] for e in report["history"]] == [trained["evaluation"]["id"]]


def test_samples_are_searchable_and_worst_first(api: httpx.Client, trained: dict[str, Any]) -> None:
    eid = trained["evaluation"]["id"]
    page = api.get(f"/evaluations/{eid}/samples", params={"limit": 100}).json()
    assert page["total"] == 8
    deltas = [s["delta"] for s in page["items"]]
    assert deltas == sorted(deltas)
    first = page["items"][0]
    assert set(first["outputs"]) == {c["key"] for c in trained["evaluation"]["candidates"]}
    assert first["reference"] in {a for _, a in QA}
    word = first["prompt"].split("(")[1].rstrip(")")
    found = api.get(f"/evaluations/{eid}/samples", params={"q": f"({word})"}).json()
    assert found["total"] >= 1 and all(f"({word})" in s["prompt"] for s in found["items"])
    worse = api.get(f"/evaluations/{eid}/samples", params={"show": "worse"}).json()
    assert all(s["delta"] < 0 for s in worse["items"])
    assert api.get(f"/evaluations/{eid}/samples", params={"show": "bogus"}).status_code == 422


def test_exports_hold_every_sample(api: httpx.Client, trained: dict[str, Any]) -> None:
    eid = trained["evaluation"]["id"]
    document = api.get(f"/evaluations/{eid}/export", params={"format": "json"}).json()
    assert len(document["samples"]) == 8
    assert document["evaluation"]["verdict"][0]["status"] == "not_met"
    response = api.get(f"/evaluations/{eid}/export", params={"format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert len(rows) == 9
    assert rows[0][:3] == ["position", "prompt", "reference"]
    assert "baseline: rougeL" in rows[0] and rows[0][-1] == "delta"


def test_on_demand_evaluation_of_a_k_shot_baseline_and_a_checkpoint(
    api: httpx.Client, trained: dict[str, Any]
) -> None:
    job = trained["job"]
    response = api.post(
        "/evaluations",
        json={
            "project_id": trained["project"]["id"],
            "job_id": job["id"],
            "baseline_k_shot": 2,
            "models": [{"kind": "checkpoint", "job_id": job["id"], "checkpoint": "checkpoint-6"}],
            "max_samples": 3,
            "decoding": {"max_new_tokens": 4},
        },
    )
    assert response.status_code == 201, response.text
    evaluation = wait_for_evaluation(api, response.json()["id"])
    assert evaluation["status"] == "succeeded", evaluation["error"]
    labels = [c["label"] for c in evaluation["candidates"]]
    assert "2-shot" in labels[0] and labels[2].startswith("Checkpoint 6")
    assert evaluation["results"]["n"] == 3
    assert evaluation["results"]["decoding"]["max_new_tokens"] == 4
    assert set(evaluation["results"]["deltas"]) == {c["key"] for c in evaluation["candidates"][1:]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "models"),
        ({"models": [{"kind": "base"}]}, "models.0.base_model"),
        ({"models": [{"kind": "job"}]}, "models.0.job_id"),
        ({"split": "nonsense", "models": [{"kind": "base", "base_model": "x"}]}, "split"),
        ({"models": [{"kind": "base", "base_model": "x"}]}, "dataset_id"),
        ({"decoding": {"temperature": -1}, "models": []}, "decoding.temperature"),
    ],
)
def test_a_bad_evaluation_request_names_the_field(
    api: httpx.Client, trained: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    response = api.post("/evaluations", json={"project_id": trained["project"]["id"], **body})
    assert response.status_code == 422, response.text
    fields = [e["field"] for e in response.json()["errors"]]
    assert any(f.endswith(field) for f in fields), fields


def test_a_missing_checkpoint_is_refused_with_the_ones_there_are(
    api: httpx.Client, trained: dict[str, Any]
) -> None:
    job = trained["job"]
    response = api.post(
        "/evaluations",
        json={
            "project_id": trained["project"]["id"],
            "models": [{"kind": "checkpoint", "job_id": job["id"], "checkpoint": "checkpoint-99"}],
        },
    )
    assert response.status_code == 422
    assert "checkpoint-12" in response.text


def test_an_empty_test_split_is_refused(api: httpx.Client, trained: dict[str, Any]) -> None:
    project = trained["project"]
    upload = stage(api, project["id"], jsonl(RECORDS[:10]))
    dataset = import_upload(api, upload["id"], split={"validation": 0, "test": 0}).json()
    response = api.post(
        "/evaluations",
        json={
            "project_id": project["id"],
            "dataset_id": dataset["id"],
            "models": [{"kind": "job", "job_id": trained["job"]["id"]}],
        },
    )
    assert response.status_code == 422
    assert "split=all" in response.json()["detail"]


def test_unreadable_success_criteria_are_refused_with_their_line(api: httpx.Client) -> None:
    response = api.post(
        "/projects",
        json={"name": "x", "success_criteria": ["rougeL >= 0.4", "bleurt is great"]},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "success_criteria.1"


def test_a_project_whose_criteria_are_met_says_met(api: httpx.Client, tiny_model: Path) -> None:
    trained = train_and_evaluate(api, tiny_model, MET)
    report = api.get(f"/projects/{trained['project']['id']}/report").json()
    assert [v["status"] for v in report["verdict"]] == ["met", "met"], report["verdict"]
    assert report["verdict_summary"]["status"] == "met"
    assert all(v["margin"] >= 0 for v in report["verdict"])


def test_a_trainer_outside_the_project_gets_404_everywhere(
    api: httpx.Client, cluster: object, trained: dict[str, Any]
) -> None:
    import os
    import uuid

    from tests.live import cli_token

    email = f"outsider-{uuid.uuid4().hex[:6]}@tunelab.test"
    api.post("/users", json={"email": email, "role": "trainer", "password": "long enough pw"})
    token = cli_token(email, dict(os.environ), scopes="read,write")
    eid, pid = trained["evaluation"]["id"], trained["project"]["id"]
    with httpx.Client(
        base_url=cluster.url,  # type: ignore[attr-defined]
        headers={"Authorization": f"Bearer {token}"},
    ) as other:
        for path in (
            f"/api/v1/evaluations/{eid}",
            f"/api/v1/evaluations/{eid}/samples",
            f"/api/v1/evaluations/{eid}/export?format=csv",
            f"/api/v1/projects/{pid}/report",
            f"/evaluations/{eid}",
            f"/projects/{pid}/report",
        ):
            assert other.get(path).status_code == 404, path
        assert other.post(f"/api/v1/evaluations/{eid}/cancel").status_code == 404
        refused = other.post(
            "/api/v1/evaluations", json={"project_id": pid, "job_id": trained["job"]["id"]}
        )
        assert refused.status_code == 404
        assert other.get("/api/v1/evaluations").json()["total"] == 0
