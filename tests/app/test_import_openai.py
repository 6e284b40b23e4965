"""`tunelab import-openai` on recorded OpenAI job objects and files (tests/data/openai, written
from OpenAI's API reference), against the app in this process: each job is recreated on an
open model with its hyper-parameters mapped and queued, the report names what has no
equivalent, and every request goes to tunelab (none to OpenAI).

Here rather than in tests/cli: it needs the in-process app of tests/app/conftest.py."""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from app.cli import import_openai
from app.cli.http import Api
from app.models import DatasetVersion, Evaluation, Job, OpenAIJob, User
from app.services.accounts import credentials
from tests.conftest import ADMIN_EMAIL

DATA = Path(__file__).resolve().parents[1] / "data" / "openai"


@pytest.fixture
def api(client: TestClient, connection: Connection) -> Api:  # type: ignore[override]
    """The CLI's client, its requests answered by the app in this process."""
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        admin = session.scalar(select(User).where(User.email == ADMIN_EMAIL))
        assert admin is not None
        _, secret = credentials.create_token(
            session, user=admin, name="import", scopes=["read", "write"], granted={"read", "write"}
        )
        session.commit()
    api = Api(str(client.base_url), secret)
    api.http.close()
    client.headers["Authorization"] = f"Bearer {secret}"
    client.base_url = client.base_url.join("/api/v1")  # as Api's own client has it
    api.http = client
    return api


def run(api: Api, tmp_path: Path, *extra: str) -> tuple[int, list[dict]]:
    report = tmp_path / "report.json"
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    import_openai.add_parser(sub)
    words = ["import-openai", *extra]
    if "--compare" not in extra:
        words += [str(DATA / "jobs.json"), "--files", str(DATA / "files")]
        words += ["--model", "smollm2-135m-instruct", "--report", str(report)]
    status = import_openai.cmd_import_openai(parser.parse_args(words), api)
    return status, json.loads(report.read_text(encoding="utf-8"))


def test_import_recreates_each_job_and_reports_what_has_no_equivalent(
    api: Api, tmp_path: Path, connection: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    hosts: list[str] = []
    api.http.event_hooks["request"].append(lambda r: hosts.append(r.url.host))
    status, reports = run(api, tmp_path, "--eval", str(DATA / "eval_logs.jsonl"))
    by_id = {r["openai_id"]: r for r in reports}
    assert [r["status"] for r in reports] == ["queued", "skipped", "skipped", "failed"]
    assert status == 1  # one job's training file was not saved

    marv = by_id["ftjob-abc123"]
    assert marv["mapped"]["model"] == "gpt-4o-mini-2024-07-18 → smollm2-135m-instruct"
    assert marv["mapped"]["suffix"] == "marv" and marv["mapped"]["seed"] == 42
    missing = "\n".join(marv["no_equivalent"])
    assert "integrations" in missing and "weight" in missing and "tools" in missing
    assert "learning_rate_multiplier" in missing
    assert set(marv["original_scores"]) == {"rougeL", "bleu", "token_f1", "exact_match"}
    assert "DPO" in by_id["ftjob-def456"]["reason"]
    assert "failed" in by_id["ftjob-ghi789"]["reason"]
    assert "file-missing" in by_id["ftjob-jkl012"]["reason"]

    job_id = uuid.UUID(marv["tunelab_id"])
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        job = session.get(Job, job_id)
        row = session.get(OpenAIJob, job_id)
        assert job is not None and row is not None and job.status == "queued"
        assert job.config["base_model"] == "smollm2-135m-instruct"
        assert job.config["epochs"] == 3 and job.config["batch_size"] == 2
        # 1.8 x auto's rate on the test cluster's CPU workers (8e-4 for LoRA under 3B).
        assert job.config["learning_rate"] == pytest.approx(1.8 * 8e-4)
        assert job.config["seed"] == 42
        assert row.request_metadata == {
            "team": "support",
            "openai_job": "ftjob-abc123",
            "openai_model": "ft:gpt-4o-mini-2024-07-18:my-org:marv:AbCdEf12",
        }
        version = session.get(DatasetVersion, job.dataset_version_id)
        assert version is not None
        # Every training record trains; the validation file and this model's two logs (with
        # their references as the answers) are the other splits.
        assert version.split["counts"] == {"train": 4, "validation": 1, "test": 2}
    assert set(hosts) == {"testserver"}
    out = capsys.readouterr().out
    assert "ftjob-abc123 (gpt-4o-mini-2024-07-18): queued" in out
    assert "no equivalent: integrations" in out

    # Once trained and evaluated (here: an evaluation row as the worker leaves it), the
    # original's saved answers and the new model side by side.
    def interval(value: float) -> dict[str, float]:
        return {"value": value, "low": value - 0.1, "high": value + 0.1, "n": 2}

    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.add(
            Evaluation(
                project_id=job.project_id,
                dataset_version_id=job.dataset_version_id,
                split="test",
                job_id=job.id,
                candidates=[],
                settings={},
                status="succeeded",
                queue="training",
                progress={},
                results={
                    "n": 2,
                    "subject": "job",
                    "baseline": "base",
                    "models": {
                        "job": {m: interval(0.5) for m in import_openai.REPORTED_METRICS},
                        "base": {m: interval(0.2) for m in import_openai.REPORTED_METRICS},
                    },
                },
            )
        )
        session.commit()
    status, _ = run(api, tmp_path, "--compare", str(tmp_path / "report.json"))
    out = capsys.readouterr().out
    assert status == 0
    rouge = next(line for line in out.splitlines() if line.strip().startswith("rougeL"))
    original = marv["original_scores"]["rougeL"]
    assert rouge.split() == ["rougeL", f"{original:.3f}", "0.500", "[0.400,", "0.600]", "0.200"]


def test_a_dry_run_maps_and_sends_nothing(api: Api, tmp_path: Path) -> None:
    calls: list[str] = []
    api.http.event_hooks["request"].append(lambda r: calls.append(str(r.url)))
    status, reports = run(api, tmp_path, "--dry-run")
    assert status == 1 and calls == []
    assert [r["status"] for r in reports] == ["dry run", "skipped", "skipped", "failed"]


def test_jobs_file_that_is_not_job_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([{"object": "file", "id": "file-1"}]))
    with pytest.raises(import_openai.CliError, match="no fine-tuning job objects"):
        import_openai.read_jobs(path)
