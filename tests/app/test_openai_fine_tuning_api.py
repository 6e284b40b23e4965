"""The OpenAI fine-tuning API in this process: the official `openai` client over FastAPI's
TestClient (no worker): files checked line by line, jobs made, read, listed, paused, resumed
and cancelled, and what is refused, each error in OpenAI's error object."""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from app.models import Job, MetricPoint, OpenAIJob, User
from app.services.accounts import credentials
from app.services.openai_compat import jobs as openai_jobs
from tests.conftest import ADMIN_EMAIL
from tests.factories import QA, chat, jsonl

TRAIN = jsonl([chat(q, a) for q, a in QA * 2])


@pytest.fixture
def token(connection: Connection) -> str:
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        admin = session.scalar(select(User).where(User.email == ADMIN_EMAIL))
        assert admin is not None
        scopes = ["read", "write", "admin"]
        _, secret = credentials.create_token(
            session, user=admin, name="openai", scopes=scopes, granted=set(scopes)
        )
        session.commit()
    return secret


@pytest.fixture
def client(client: TestClient, token: str) -> openai.OpenAI:  # type: ignore[override]
    """The official client, its requests answered by the app in this process."""
    return openai.OpenAI(
        base_url=str(client.base_url.join("/v1")),
        api_key=token,
        http_client=client,
        max_retries=0,
    )


def upload(client: openai.OpenAI, content: bytes, name: str = "train.jsonl") -> Any:
    return client.files.create(file=(name, io.BytesIO(content)), purpose="fine-tune")


def tiny(**extra: Any) -> dict[str, Any]:
    return {"tunelab_config": {"max_steps": 1, "max_seq_length": 64, **extra}}


def test_a_file_round_trips_and_shows_as_an_upload_of_the_api_project(
    client: openai.OpenAI,
) -> None:
    sent = upload(client, TRAIN)
    assert sent.id.startswith("file-") and sent.purpose == "fine-tune"
    assert sent.status == "processed" and sent.bytes == len(TRAIN)
    assert client.files.retrieve(sent.id).filename == "train.jsonl"
    assert client.files.content(sent.id).content == TRAIN
    assert sent.id in [f.id for f in client.files.list()]
    api = client._client  # the TestClient
    headers = {"Authorization": f"Bearer {client.api_key}"}
    projects = api.get("/api/v1/projects", params={"limit": 200}, headers=headers).json()
    project = next(p for p in projects["items"] if p["name"] == "API")
    uploads = api.get(f"/api/v1/projects/{project['id']}/uploads", headers=headers).json()
    assert "train.jsonl" in [u["filename"] for u in uploads["items"]]
    deleted = client.files.delete(sent.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(sent.id)


def test_a_bad_line_is_named_with_its_field_in_openais_error_object(
    client: openai.OpenAI,
) -> None:
    good = chat("Hi", "Hello")
    bad = {"messages": [{"role": "human", "content": "Hi"}, {"role": "assistant"}]}
    weighted = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello", "weight": 2},
        ]
    }
    with pytest.raises(openai.BadRequestError) as caught:
        upload(client, jsonl([good, bad, good, weighted]))
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "file" and error["code"] == "invalid_file_format"
    assert error["message"].startswith("train.jsonl is not valid: line 2: ")
    located = {(e["line"], e["field"]) for e in error["errors"]}
    assert {(2, "messages[0].role"), (2, "messages[1].content"), (4, "messages[1].weight")} <= (
        located
    )
    with pytest.raises(openai.BadRequestError) as caught:
        upload(client, b'{"messages": [}\n')
    assert caught.value.body["errors"][0]["line"] == 1  # type: ignore[index]


def test_chat_with_weights_and_tools_and_preference_pairs_are_accepted(
    client: openai.OpenAI,
) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    record = {
        "tools": tools,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
                "weight": 0,
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "assistant", "content": "Sunny.", "weight": 1},
        ],
    }
    assert upload(client, jsonl([record])).status == "processed"
    pair = {
        "input": {"messages": [{"role": "user", "content": "Hi"}]},
        "preferred_output": [{"role": "assistant", "content": "Hello!"}],
        "non_preferred_output": [{"role": "assistant", "content": "What."}],
    }
    assert upload(client, jsonl([pair]), "pairs.jsonl").status == "processed"
    with pytest.raises(openai.BadRequestError) as caught:
        upload(client, jsonl([{**pair, "preferred_output": []}]), "pairs.jsonl")
    assert caught.value.body["errors"][0]["field"] == "preferred_output"  # type: ignore[index]


def test_a_job_is_a_tunelab_job_with_openais_fields(
    client: openai.OpenAI, connection: Connection
) -> None:
    training = upload(client, TRAIN)
    validation = upload(client, jsonl([chat(*QA[0])]), "valid.jsonl")
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=training.id,
        validation_file=validation.id,
        suffix="support-bot",
        seed=7,
        hyperparameters={"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 0.5},
        metadata={"team": "support"},
        extra_body=tiny(),
    )
    assert job.id.startswith("ftjob-") and job.object == "fine_tuning.job"
    assert job.status == "queued" and job.model == "smollm2-135m-instruct"
    assert job.training_file == training.id and job.validation_file == validation.id
    assert job.fine_tuned_model is None and job.result_files == []
    assert job.integrations == [] and job.seed == 7 and job.metadata == {"team": "support"}
    assert job.hyperparameters.batch_size == 2
    assert job.hyperparameters.learning_rate_multiplier == 0.5
    assert job.method is not None and job.method.type == "supervised"
    extra = job.model_extra or {}
    tunelab_job = uuid.UUID(extra["tunelab"]["job_id"])
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        row = session.get(Job, tunelab_job)
        openai_row = session.get(OpenAIJob, tunelab_job)
        assert row is not None and openai_row is not None
        # The multiplier times tunelab's own rate for LoRA on a small model (8e-4 on the
        # test cluster's CPU workers).
        assert row.config["learning_rate"] == pytest.approx(0.5 * 8e-4)
        assert row.config["seed"] == 7 and row.config["batch_size"] == 2
        assert (
            openai_row.fine_tuned_model
            == f"ft:smollm2-135m-instruct:admin:support-bot:{tunelab_job.hex[:12]}"
        )
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id
    listed = client.fine_tuning.jobs.list(limit=50, extra_query={"metadata[team]": "support"})
    assert [j.id for j in listed.data] == [job.id]
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert any("OpenAI-compatible API" in m for m in messages)
    assert any("learning rate 0.0004" in m for m in messages)


def test_pause_resume_and_cancel_a_waiting_job(client: openai.OpenAI) -> None:
    training = upload(client, TRAIN)
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct", training_file=training.id, extra_body=tiny()
    )
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.resume(job.id)
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.pause(job.id)
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []


def test_refusals_name_the_param(client: openai.OpenAI) -> None:
    training = upload(client, TRAIN)
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=training.id)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == "model" and body["code"] == "model_not_available"
    assert "smollm2-135m-instruct" in body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="no such model!", training_file=training.id)
    assert caught.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            model="smollm2-135m-instruct",
            training_file=training.id,
            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}},
        )
    assert caught.value.body["param"] == "method.type"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as caught_missing:
        client.fine_tuning.jobs.create(
            model="smollm2-135m-instruct", training_file=f"file-{uuid.uuid4().hex}"
        )
    assert caught_missing.value.body["param"] == "training_file"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            model="smollm2-135m-instruct",
            training_file=training.id,
            hyperparameters={"batch_size": 300},
        )
    assert caught.value.body["param"] == "hyperparameters.batch_size"  # type: ignore[index]


def test_learning_rate_multiplier_maps_onto_tunelabs_own_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.core.config import get_settings

    # On CPU workers (the test cluster's) auto's CPU rule: 8e-4 for LoRA under 3B.
    assert openai_jobs.base_learning_rate("smollm2-135m-instruct", "lora") == 8e-4
    monkeypatch.setattr(get_settings(), "worker_cuda", True)  # GPU workers from here on
    assert openai_jobs.base_learning_rate("smollm2-135m-instruct", "lora") == 2e-4
    assert openai_jobs.base_learning_rate("smollm2-135m-instruct", "ia3") == 3e-3
    request = openai_jobs.JobRequest(
        model="smollm2-135m-instruct",
        training_file="file-x",
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"learning_rate_multiplier": 2}},
        },
    )
    config, shown, _ = openai_jobs.training_config(request)
    assert config["learning_rate"] == pytest.approx(4e-4)
    assert shown["supervised"]["hyperparameters"]["learning_rate_multiplier"] == 2
    # The README's example: 1.8 on a LoRA job on qwen2.5-1.5b-instruct trains at 3.6e-4.
    assert 1.8 * openai_jobs.base_learning_rate("qwen2.5-1.5b-instruct", "lora") == pytest.approx(
        3.6e-4
    )
    auto = openai_jobs.JobRequest(model="smollm2-135m-instruct", training_file="file-x")
    assert openai_jobs.training_config(auto)[0]["learning_rate"] == "auto"


def test_a_succeeded_job_names_its_model_and_its_results_file(
    client: openai.OpenAI, connection: Connection
) -> None:
    training = upload(client, TRAIN)
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct", training_file=training.id, extra_body=tiny()
    )
    job_id = uuid.UUID(job.id.removeprefix("ftjob-"))
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        row = session.get(Job, job_id)
        assert row is not None
        row.status, row.result, row.total_steps = "succeeded", {"tokens": 123}, 2
        from app.core.db import utcnow

        row.finished_at = utcnow()
        for step, loss in ((1, 2.5), (2, 2.0)):
            session.add(
                MetricPoint(job_id=job_id, step=step, name="loss", value=loss, created_at=utcnow())
            )
        session.commit()
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.trained_tokens == 123
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=2))  # pages through
    steps = [e for e in events if e.type == "metrics"]
    assert [e.message for e in steps] == [
        "Step 2/2: training loss=2.0000",
        "Step 1/2: training loss=2.5000",
    ]
    assert steps[0].data == {"step": 2, "total_steps": 2, "train_loss": 2.0}
    assert len({e.id for e in events}) == len(events) > 2
    assert done.fine_tuned_model and done.fine_tuned_model.startswith("ft:smollm2-135m-instruct:")
    models = {m.id: m for m in client.models.list()}
    assert models[done.fine_tuned_model].owned_by == "admin"
    csv = client.files.content(done.result_files[0]).text.splitlines()
    assert csv[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert csv[1:] == ["1,2.5,,,", "2,2,,,"]
    with pytest.raises(openai.ConflictError) as caught:
        client.chat.completions.create(
            model=done.fine_tuned_model, messages=[{"role": "user", "content": "Hi"}]
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_deployed"
    assert body["deployment_url"].endswith("/deployments")


def test_the_readme_runs_one_script_on_both_services_changing_base_url_and_model() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The OpenAI fine-tuning API", 1)[1].split("\n## ", 1)[0]
    openai_script, tunelab_script = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    changed = [
        (a, b)
        for a, b in zip(openai_script.splitlines(), tunelab_script.splitlines(), strict=True)
        if a != b
    ]
    assert [a.split("=", 1)[0] for a, _ in changed] == ["client ", "MODEL "]
    assert "api.openai.com" in changed[0][0] and "127.0.0.1:8000" in changed[0][1]
    assert "gpt-4o-mini" in changed[1][0] and "qwen2.5-1.5b-instruct" in changed[1][1]


def test_metadata_project_picks_the_project_and_config_errors_name_tunelab_config(
    client: openai.OpenAI,
) -> None:
    api = client._client
    headers = {"Authorization": f"Bearer {client.api_key}"}
    made = api.post("/api/v1/projects", json={"name": "客服 via OpenAI"}, headers=headers).json()
    training = upload(client, TRAIN)
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=training.id,
        metadata={"project": "客服 via OpenAI"},
        extra_body=tiny(),
    )
    assert (job.model_extra or {})["tunelab"]["project_id"] == made["id"]
    datasets = api.get(f"/api/v1/projects/{made['id']}/datasets", headers=headers).json()
    assert [d["records"] for d in datasets["items"]] == [len(QA) * 2]
    with pytest.raises(openai.NotFoundError) as missing:
        client.fine_tuning.jobs.create(
            model="smollm2-135m-instruct",
            training_file=training.id,
            metadata={"project": "no such project"},
        )
    assert missing.value.body["param"] == "metadata.project"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            model="smollm2-135m-instruct",
            training_file=training.id,
            extra_body={"tunelab_config": {"method": "ia3", "lora_r": 8}},
        )
    assert caught.value.body["param"] == "tunelab_config.lora_r"  # type: ignore[index]


def test_answers_name_the_model_as_it_was_asked_for_even_across_chunks() -> None:
    import asyncio

    from app.api.routes.openai_compat import _renamed

    async def chunks() -> Any:
        for piece in (b'data: {"model": "ft-ab/jo', b'b-1", "x": 1}\n\ndata: {"model": ', b'"ft'):
            yield piece
        yield b'-ab/job-1"}\n\ndata: [DONE]\n\n'

    async def collect() -> list[bytes]:
        return [c async for c in _renamed(chunks(), b'"ft-ab/job-1"', b'"ft:m:o::1"')]

    out = asyncio.run(collect())
    assert b"".join(out) == (
        b'data: {"model": "ft:m:o::1", "x": 1}\n\ndata: {"model": "ft:m:o::1"}\n\ndata: [DONE]\n\n'
    )
    assert out[0].endswith(b"\n\n")  # each event goes out as soon as it is whole


def test_a_running_job_estimates_its_finish(client: openai.OpenAI, connection: Connection) -> None:
    import time

    from app.core.db import utcnow

    training = upload(client, TRAIN)
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct", training_file=training.id, extra_body=tiny()
    )
    job_id = uuid.UUID(job.id.removeprefix("ftjob-"))
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        row = session.get(Job, job_id)
        assert row is not None
        row.status, row.current_step, row.total_steps = "running", 1, 10
        session.add(
            MetricPoint(job_id=job_id, step=1, name="eta_seconds", value=120, created_at=utcnow())
        )
        session.commit()
    running = client.fine_tuning.jobs.retrieve(job.id)
    assert running.status == "running" and running.error is None
    assert running.estimated_finish is not None
    assert abs(running.estimated_finish - (time.time() + 120)) < 30
