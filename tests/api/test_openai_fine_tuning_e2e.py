"""Issue 18's own check: the official `openai` package, pointed at tunelab, fine-tunes
SmolLM2 through the real server and the real Celery worker (on CPU, two steps), then calls
the fine-tuned model by its `ft:` name; a second job is paused, resumed and cancelled.

Kept cheap on purpose: one training job serves every assertion about a finished job, the
second one never needs to finish. The first call to the model goes through a second web
server started with TUNELAB_AUTO_DEPLOY=1 (sharing the cluster's database and worker), which
deploys it and waits."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.factories import QA, chat, jsonl
from tests.live import LiveServer, free_port, start_server, wait_for

pytestmark = pytest.mark.slow


def client_for(url: str, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def auto_deploying(cluster: LiveServer) -> Iterator[LiveServer]:
    """A second web server on the cluster's database and queue, deploying on first call."""
    env = {**cluster.env, "TUNELAB_AUTO_DEPLOY": "1", "TUNELAB_AUTO_DEPLOY_TIMEOUT": "240"}
    server = start_server(
        port=free_port(),
        env=env,
        log=cluster.log.with_name("server-auto-deploy.log"),
        extra_args=["--no-worker"],
    )
    try:
        yield server
    finally:
        server.stop()


def wait_for_status(
    client: openai.OpenAI, job_id: str, statuses: set[str], timeout: float = 600
) -> Any:
    return wait_for(
        lambda: (
            job if (job := client.fine_tuning.jobs.retrieve(job_id)).status in statuses else None
        ),
        timeout,
        what=f"{job_id} to reach {sorted(statuses)}",
    )


def test_the_openai_client_fine_tunes_smollm2_and_calls_the_result(
    cluster: LiveServer, auto_deploying: LiveServer, admin_token: str
) -> None:
    client = client_for(cluster.url, admin_token)
    tiny = {"tunelab_config": {"max_steps": 2, "batch_size": 2, "max_seq_length": 64}}

    # The error objects: a bad line of a file, and a model that cannot be trained here.
    bad = jsonl([chat(*QA[0]), {"messages": [{"role": "user", "content": "Hi"}]}])
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("bad.jsonl", io.BytesIO(bad)), purpose="fine-tune")
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "file"
    assert error["errors"][0]["line"] == 2 and "line 2" in error["message"]

    training = client.files.create(
        file=("train.jsonl", io.BytesIO(jsonl([chat(q, a) for q, a in QA]))), purpose="fine-tune"
    )
    for unknown in ("gpt-4o-mini", "not-a-model"):
        with pytest.raises(openai.BadRequestError) as caught:
            client.fine_tuning.jobs.create(model=unknown, training_file=training.id)
        assert caught.value.body["param"] == "model"  # type: ignore[index]
    # No preference tuning yet: a DPO job is refused, naming method.type.
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            model="smollm2-135m-instruct",
            training_file=training.id,
            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}},
        )
    assert caught.value.body["param"] == "method.type"  # type: ignore[index]

    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct", training_file=training.id, suffix="e2e", extra_body=tiny
    )
    assert job.status in ("queued", "running") and job.user_provided_suffix == "e2e"  # type: ignore[attr-defined]

    # Events until it succeeded (newest first, as OpenAI lists them).
    deadline = time.monotonic() + 600
    messages: list[str] = []
    while time.monotonic() < deadline:
        events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
        messages = [e.message for e in events if e.type == "message"]
        if any(m.startswith(("Succeeded", "Failed", "Cancelled")) for m in messages):
            break
        time.sleep(1)
    assert messages and messages[0] == "Succeeded", messages
    steps = [e.message for e in events if e.type == "metrics"]
    assert steps[0].startswith("Step 2/2: training loss=") and len(steps) == 2
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.trained_tokens and done.finished_at
    assert done.fine_tuned_model and done.fine_tuned_model.startswith(
        "ft:smollm2-135m-instruct:admin:e2e:"
    )
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [2]
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-2"
    assert checkpoints[0].metrics.train_loss is not None
    results = client.files.content(done.result_files[0]).text.splitlines()
    assert results[0].startswith("step,train_loss") and len(results) == 3
    assert done.fine_tuned_model in [m.id for m in client.models.list()]

    # The second job: paused, resumed, cancelled (it never needs to finish).
    second = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=training.id,
        extra_body={"tunelab_config": {**tiny["tunelab_config"], "max_steps": 50}},
    )
    client.fine_tuning.jobs.pause(second.id)
    assert wait_for_status(client, second.id, {"paused"}, timeout=300).status == "paused"
    assert client.fine_tuning.jobs.resume(second.id).status in ("queued", "running")
    client.fine_tuning.jobs.cancel(second.id)
    assert wait_for_status(client, second.id, {"cancelled"}, timeout=300).status == "cancelled"
    events = [e.message for e in client.fine_tuning.jobs.list_events(second.id, limit=100)]
    assert any(m.startswith("Paused through the API") for m in events)
    assert any(m.startswith("Resumed through the API") for m in events)

    # The model by its name: not deployed here (409 with the link), deployed on first call
    # by the server with TUNELAB_AUTO_DEPLOY=1.
    question = [{"role": "user", "content": QA[0][0]}]
    with pytest.raises(openai.ConflictError) as conflict:
        client.chat.completions.create(model=done.fine_tuned_model, messages=question)  # type: ignore[arg-type]
    assert "/deployments" in conflict.value.body["deployment_url"]  # type: ignore[index]
    auto = client_for(auto_deploying.url, admin_token)
    try:
        reply = auto.chat.completions.create(
            model=done.fine_tuned_model,
            messages=question,  # type: ignore[arg-type]
            max_tokens=8,
            temperature=0,
        )
        text = reply.choices[0].message.content or ""
        assert text and reply.usage is not None and reply.usage.completion_tokens > 0
        assert reply.model == done.fine_tuned_model
        streamed = client.chat.completions.create(
            model=done.fine_tuned_model,
            messages=question,  # type: ignore[arg-type]
            max_tokens=8,
            temperature=0,
            stream=True,
        )
        chunks = list(streamed)
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert "".join(pieces) == text
        assert {c.model for c in chunks} == {done.fine_tuned_model}
    finally:
        stop_deployment(cluster, admin_token, done.model_extra["tunelab"]["project_id"])  # type: ignore[index]


def stop_deployment(cluster: LiveServer, token: str, project_id: str) -> None:
    """The automatic deployment holds the shared worker: stop it before the next test."""
    with httpx.Client(
        base_url=cluster.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as api:
        listed = api.get("/deployments", params={"project_id": project_id}).json()["items"]
        for deployment in listed:
            if deployment["status"] in ("starting", "running"):
                api.post(f"/deployments/{deployment['id']}/stop")
        for deployment in listed:
            wait_for(
                lambda d=deployment: (
                    api.get(f"/deployments/{d['id']}").json()["status"] in ("stopped", "failed")
                ),
                120,
                what="the automatic deployment to stop",
            )
