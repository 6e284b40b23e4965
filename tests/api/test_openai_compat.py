"""The deploy step's own check: the official `openai` package, pointed at tunelab's base URL
with a tunelab token, lists the models of a deployment, gets a chat completion and a streamed
one from a fine-tuned SmolLM2 adapter, on CPU, served by the Celery worker."""

from __future__ import annotations

import concurrent.futures
import json
from typing import Any

import httpx
import openai
import pytest

from tests.factories import alpaca_zh_demo, create_project, start_job, upload, wait_for_status
from tests.live import LiveServer, wait_for


def wait_for_deployment(
    api: httpx.Client, deployment_id: str, statuses: set[str]
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        deployment = api.get(f"/deployments/{deployment_id}").json()
        return deployment if deployment["status"] in statuses else None

    return wait_for(check, 300, what=f"deployment {deployment_id} to reach {sorted(statuses)}")


@pytest.fixture(scope="module")
def deployed(cluster: LiveServer, admin_token: str) -> Any:
    with httpx.Client(
        base_url=cluster.url + "/api/v1",
        timeout=60,
        headers={"Authorization": f"Bearer {admin_token}"},
    ) as api:
        project = create_project(api, name="客服 deployment")
        content = json.dumps(alpaca_zh_demo(24), ensure_ascii=False).encode()
        dataset = upload(api, project["id"], content, filename="alpaca_zh_demo.json").json()
        config = {
            "base_model": "smollm2-135m-instruct",
            "method": "lora",
            "max_steps": 4,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "max_seq_length": 128,
        }
        job = wait_for_status(
            api, start_job(api, project["id"], dataset["id"], config)["id"], timeout=600
        )
        assert job["status"] == "succeeded", job["error"]
        response = api.post(
            "/deployments",
            json={"project_id": project["id"], "name": "kefu", "job_ids": [job["id"]]},
        )
        assert response.status_code == 201, response.text
        deployment = wait_for_deployment(api, response.json()["id"], {"running", "failed"})
        assert deployment["status"] == "running", deployment["error"]
        try:
            yield {"project": project, "job": job, "deployment": deployment, "api": api}
        finally:
            api.post(f"/deployments/{deployment['id']}/stop")
            wait_for_deployment(api, deployment["id"], {"stopped", "failed"})


def client_for(cluster: LiveServer, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=cluster.url + "/v1", api_key=token, max_retries=0, timeout=300)


def test_the_openai_package_lists_the_deployed_models(
    deployed: dict[str, Any], cluster: LiveServer, admin_token: str
) -> None:
    ids = [m.id for m in client_for(cluster, admin_token).models.list()]
    adapter = f"kefu/job-{deployed['job']['id'][:8]}"
    assert set(ids) >= {"kefu/base", adapter}
    assert deployed["deployment"]["models"] == ["kefu/base", adapter]


def test_a_chat_completion_and_a_streamed_one_from_the_fine_tuned_adapter(
    deployed: dict[str, Any], cluster: LiveServer, admin_token: str
) -> None:
    client = client_for(cluster, admin_token)
    model = f"kefu/job-{deployed['job']['id'][:8]}"
    messages = [{"role": "user", "content": "用一句话介绍一下北京。"}]
    reply = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=24,
        temperature=0,  # type: ignore[arg-type]
    )
    text = reply.choices[0].message.content or ""
    assert text and reply.usage is not None and reply.usage.completion_tokens > 0
    assert reply.choices[0].finish_reason in ("stop", "length")
    streamed = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=24,
        temperature=0,
        stream=True,  # type: ignore[arg-type]
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices]
    assert len(pieces) > 2 and "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)
    base = client.chat.completions.create(
        model="kefu/base",
        messages=messages,
        max_tokens=24,
        temperature=0,  # type: ignore[arg-type]
    )
    assert base.choices[0].message.content  # the base answers too (it may differ)


def test_concurrent_requests_are_all_answered(
    deployed: dict[str, Any], cluster: LiveServer, admin_token: str
) -> None:
    client = client_for(cluster, admin_token)
    model = f"kefu/job-{deployed['job']['id'][:8]}"

    def ask(i: int) -> str:
        reply = client.completions.create(
            model=model, prompt=f"{i} + {i} =", max_tokens=6, temperature=0
        )
        return reply.choices[0].text

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert len(answers) == 8


def test_tokens_and_model_names_follow_tunelab_rules(
    deployed: dict[str, Any], cluster: LiveServer
) -> None:
    with pytest.raises(openai.AuthenticationError):
        client_for(cluster, "tl_not_a_token").models.list()
    api = deployed["api"]
    email = "outsider-openai@tunelab.test"
    api.post("/users", json={"email": email, "role": "trainer", "password": "long enough pw"})
    import os

    from tests.live import cli_token

    outsider = client_for(cluster, cli_token(email, dict(os.environ), scopes="read,write"))
    assert [m.id for m in outsider.models.list()] == []
    with pytest.raises(openai.NotFoundError):
        outsider.chat.completions.create(
            model="kefu/base",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,  # type: ignore[arg-type]
        )


def test_a_deployment_refuses_what_cannot_be_served(deployed: dict[str, Any]) -> None:
    api = deployed["api"]
    taken = api.post(
        "/deployments",
        json={
            "project_id": deployed["project"]["id"],
            "name": "kefu",
            "job_ids": [deployed["job"]["id"]],
        },
    )
    assert taken.status_code == 409
    bad = api.post(
        "/deployments",
        json={
            "project_id": deployed["project"]["id"],
            "name": "Bad Name",
            "job_ids": [deployed["job"]["id"]],
        },
    )
    assert bad.status_code == 422


def test_tunelab_deploy_lists_the_models_and_stops_the_deployment(
    deployed: dict[str, Any], cluster: LiveServer, admin_token: str
) -> None:
    """Last in this file: it undeploys."""
    import os
    import subprocess

    from tests.live import tunelab

    env = {**os.environ, "TUNELAB_URL": cluster.url, "TUNELAB_TOKEN": admin_token}
    listed = subprocess.run(
        tunelab("deploy", "list", "--project", deployed["project"]["id"]),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "kefu" in listed.stdout and "running" in listed.stdout and "kefu/base" in listed.stdout
    stopped = subprocess.run(
        tunelab("deploy", "stop", deployed["deployment"]["id"]),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stopped.returncode == 0, stopped.stderr
    assert "kefu: stopping" in stopped.stdout
    wait_for_deployment(deployed["api"], deployed["deployment"]["id"], {"stopped"})
