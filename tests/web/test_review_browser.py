"""Human review in a real browser: a reviewer grades ten items with the keyboard alone, every
grade lands in Postgres once, and a second reviewer gets the same items in an order of their
own. The owner follows the results on the campaign page."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from tests.api.test_evaluations_api import NOT_MET, train_and_evaluate
from tests.live import LiveServer, api_client, cli_token, wait_for
from tests.web.conftest import login

PASSWORD = "long enough pw"


def make_reviewer(api: httpx.Client, name: str) -> dict[str, Any]:
    email = f"{name}-{uuid.uuid4().hex[:6]}@tunelab.test"
    response = api.post("/users", json={"email": email, "role": "reviewer", "password": PASSWORD})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def campaign(cluster: LiveServer, admin_token: str, tiny_model: Path) -> dict[str, Any]:
    """Eight evaluated examples and two typed prompts: ten items, each for both reviewers."""
    with api_client(cluster.url, admin_token) as api:
        trained = train_and_evaluate(api, tiny_model, NOT_MET)
        alice, bob = make_reviewer(api, "alice"), make_reviewer(api, "bob")
        created = api.post(
            "/review-campaigns",
            json={
                "project_id": trained["project"]["id"],
                "evaluation_id": trained["evaluation"]["id"],
                "name": "盲评",
                "instructions": "Which answer helps the customer more?",
                "criteria": ["accuracy", "style"],
                "reviewers_per_item": 2,
                "reviewers": [alice["email"], bob["email"]],
                "prompts": [
                    "天空是什么颜色的？",
                    "Is **markdown** bold? <img src=x onerror=alert(1)>",
                ],
            },
        ).json()
        wait_for(
            lambda: api.get(f"/review-campaigns/{created['id']}").json()["assignments"] == 20,
            120,
            what="the typed prompts to be answered and assigned",
        )
        return {**trained, "campaign": created, "alice": alice, "bob": bob}


@pytest.fixture
def reviewer_page(
    browser: Browser, cluster: LiveServer, campaign: dict[str, Any]
) -> Iterator[Page]:
    page, errors = login(browser, cluster.url, campaign["alice"]["email"], PASSWORD)
    expect(page).to_have_url(re.compile(r"/reviews$"))
    yield page
    page.context.close()
    # Pages refused on purpose log their status; anything else (a script error, the CSP) fails.
    assert [e for e in errors if not e.startswith("Failed to load resource")] == []


def test_a_reviewer_grades_ten_items_with_the_keyboard_alone(
    reviewer_page: Page, campaign: dict[str, Any], cluster: LiveServer, db_session: Any
) -> None:
    page = reviewer_page
    cid = campaign["campaign"]["id"]
    page.get_by_test_id("continue").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"/reviews/{cid}/1$"))
    for n in range(1, 11):
        expect(page.get_by_test_id("position")).to_have_text(f"{n} of 10")
        # The keys work once review.js has run (it is deferred); a key before that is lost.
        expect(page.locator("#review-form[data-ready=true]")).to_be_attached()
        page.keyboard.press("ArrowRight")  # the right answer is better
        for key in ("4", "3", "5", "5"):  # left accuracy, left style, right accuracy, right style
            page.keyboard.press(key)
        expect(page.get_by_test_id("save-state")).to_have_text("saved")
        page.keyboard.press("n")
        expect(page).to_have_url(re.compile(rf"/reviews/{cid}/({n + 1}|done)$"))
    expect(page.get_by_test_id("done")).to_contain_text("10 of 10")

    # Back to the first item: the grade is shown as given, and "p" goes back.
    page.goto(f"/reviews/{cid}/2")
    expect(page.locator("#review-form[data-ready=true]")).to_be_attached()
    page.keyboard.press("p")
    expect(page).to_have_url(re.compile(rf"/reviews/{cid}/1$"))
    expect(page.locator("input[name=choice][value=right]")).to_be_checked()
    expect(page.locator("input[name='score.left.accuracy'][value='4']")).to_be_checked()

    from app.models import Rating, ReviewAssignment, User

    rows = db_session.execute(
        select(Rating, ReviewAssignment)
        .join(ReviewAssignment, ReviewAssignment.id == Rating.assignment_id)
        .join(User, User.id == Rating.reviewer_id)
        .where(Rating.campaign_id == uuid.UUID(cid), User.email == campaign["alice"]["email"])
    ).all()
    assert len(rows) == 10
    for rating, assignment in rows:
        # "Right is better" is stored as the model that was on the right for this reviewer.
        assert rating.choice == ("a" if assignment.swapped else "b")
        right, left = ("a", "b") if assignment.swapped else ("b", "a")
        assert rating.scores == {
            left: {"accuracy": 4, "style": 3},
            right: {"accuracy": 5, "style": 5},
        }
    assert {a.swapped for _, a in rows} == {True, False}  # sides really are drawn per item


def test_a_second_reviewer_sees_the_same_items_in_their_own_order(
    campaign: dict[str, Any], cluster: LiveServer
) -> None:
    cid = campaign["campaign"]["id"]
    orders = []
    for who in ("alice", "bob"):
        token = cli_token(campaign[who]["email"], dict(os.environ), scopes="read,write")
        with httpx.Client(
            base_url=cluster.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}
        ) as client:
            orders.append(
                [client.get(f"/reviews/{cid}/items/{n}").json()["prompt"] for n in range(1, 11)]
            )
    assert sorted(orders[0]) == sorted(orders[1])
    assert orders[0] != orders[1]


def test_the_review_page_renders_markdown_safely_and_sets_chinese(
    reviewer_page: Page, campaign: dict[str, Any]
) -> None:
    page = reviewer_page
    cid = campaign["campaign"]["id"]
    for n in range(1, 11):
        page.goto(f"/reviews/{cid}/{n}")
        prompt = page.get_by_test_id("prompt")
        if "markdown" in prompt.inner_text():
            expect(prompt.locator("strong")).to_have_text("markdown")
            expect(prompt.locator("img")).to_have_count(0)  # raw HTML is shown as text
            expect(prompt).to_contain_text("<img src=x onerror=alert(1)>")
        if "天空" in prompt.inner_text():
            expect(prompt).to_have_attribute("lang", "zh-Hans")
    # Narrow screens stack the two answers.
    page.set_viewport_size({"width": 500, "height": 900})
    left = page.get_by_test_id("answer-left").bounding_box()
    right = page.get_by_test_id("answer-right").bounding_box()
    assert left and right and right["y"] > left["y"] + left["height"] - 1


def test_the_owner_sees_results_and_the_reviewer_cannot(
    page: Page, reviewer_page: Page, campaign: dict[str, Any]
) -> None:
    cid = campaign["campaign"]["id"]
    page.goto(f"/evaluations/{campaign['evaluation']['id']}")
    page.get_by_role("link", name="盲评").click()
    expect(page).to_have_url(re.compile(rf"/campaigns/{cid}$"))
    expect(page.get_by_test_id("reviewers")).to_contain_text(campaign["alice"]["email"])
    expect(page.get_by_test_id("win-rate")).to_be_visible()
    for path in (
        f"/campaigns/{cid}",
        f"/evaluations/{campaign['evaluation']['id']}",
        f"/projects/{campaign['project']['id']}",
        "/admin/users",
    ):
        response = reviewer_page.goto(path)
        assert response is not None and response.status in (403, 404), path
