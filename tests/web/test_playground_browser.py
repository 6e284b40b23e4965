"""Deploy from the browser and chat in the playground: the base model and the fine-tuned
adapter answer the same message side by side, streamed; the message goes to a review
campaign; undeploy frees the worker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.api.test_evaluations_api import NOT_MET, train_and_evaluate
from tests.live import LiveServer, api_client, wait_for


@pytest.fixture(scope="module")
def trained(cluster: LiveServer, admin_token: str, tiny_model: Path) -> dict[str, Any]:
    with api_client(cluster.url, admin_token) as api:
        trained = train_and_evaluate(api, tiny_model, NOT_MET)
        campaign = api.post(
            "/review-campaigns",
            json={
                "project_id": trained["project"]["id"],
                "evaluation_id": trained["evaluation"]["id"],
                "name": "playground prompts",
                "open": False,
            },
        )
        assert campaign.status_code == 201, campaign.text
        return {**trained, "campaign": campaign.json()}


def test_deploy_chat_side_by_side_send_to_review_and_undeploy(
    page: Page, trained: dict[str, Any], cluster: LiveServer, admin_token: str
) -> None:
    project = trained["project"]
    page.goto(f"/projects/{project['id']}")
    page.get_by_test_id("deployments-link").click()
    page.get_by_label("Name").fill("play")
    page.get_by_role("button", name="Deploy").click()
    expect(page).to_have_url(re.compile(r"/deployments/[0-9a-f-]+$"))
    expect(page.get_by_test_id("deployment-status")).to_have_text("running", timeout=120_000)

    expect(page.get_by_test_id("pane-left").locator(".pane-title")).to_have_text("play/base")
    expect(page.get_by_test_id("pane-right").locator(".pane-title")).to_contain_text("play/job-")
    page.get_by_label("Longest answer").fill("8")
    page.get_by_label("Message").fill("天空是什么颜色的？")
    page.get_by_test_id("send").click()
    for side in ("left", "right"):
        answer = page.get_by_test_id(f"pane-{side}").get_by_test_id("answer")
        expect(answer).to_have_attribute("data-done", "true", timeout=60_000)
        assert answer.inner_text().strip()

    page.get_by_test_id("send-to-review").click()
    expect(page.get_by_test_id("playground-status")).to_have_text("sent to the review campaign")
    with api_client(cluster.url, admin_token) as api:
        campaign = api.get(f"/review-campaigns/{trained['campaign']['id']}").json()
        assert campaign["items"] == trained["campaign"]["items"] + 1

        page.goto(f"/projects/{project['id']}/deployments")
        page.get_by_role("button", name="Undeploy").click()
        deployment = api.get("/deployments", params={"project_id": project["id"]}).json()["items"][
            0
        ]
        wait_for(
            lambda: api.get(f"/deployments/{deployment['id']}").json()["status"] == "stopped",
            60,
            what="the deployment to stop",
        )
