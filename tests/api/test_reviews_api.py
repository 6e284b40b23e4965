"""Review campaigns through the API: blind assignments, idempotent ratings, results counted
in the verdict, typed prompts answered by the worker, exports, and what reviewers may reach."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_evaluations_api import train_and_evaluate
from tests.live import LiveServer, api_client, cli_token, wait_for

CRITERIA = ["human win rate >= 60%", "mean human rating >= 2"]


def reviewer(api: httpx.Client, cluster: LiveServer, name: str) -> tuple[dict, httpx.Client]:
    email = f"{name}-{os.urandom(3).hex()}@tunelab.test"
    user = api.post(
        "/users", json={"email": email, "role": "reviewer", "password": "long enough pw"}
    )
    assert user.status_code == 201, user.text
    token = cli_token(email, dict(os.environ), scopes="read,write")
    client = api_client(cluster.url, token, timeout=30)
    return user.json(), client


@pytest.fixture(scope="module")
def setup(cluster: LiveServer, admin_token: str, tiny_model: Path) -> dict[str, Any]:
    with api_client(cluster.url, admin_token) as api:
        trained = train_and_evaluate(api, tiny_model, CRITERIA)
        alice, alice_api = reviewer(api, cluster, "alice")
        bob, bob_api = reviewer(api, cluster, "bob")
        created = api.post(
            "/review-campaigns",
            json={
                "project_id": trained["project"]["id"],
                "evaluation_id": trained["evaluation"]["id"],
                "name": "盲评 round 1",
                "criteria": ["accuracy", "style"],
                "reviewers_per_item": 2,
                "reviewers": [alice["email"], bob["email"]],
            },
        )
        assert created.status_code == 201, created.text
        return {
            **trained,
            "campaign": created.json(),
            "alice": alice_api,
            "bob": bob_api,
        }


def test_each_item_goes_to_k_reviewers_in_their_own_order(
    api: httpx.Client, setup: dict[str, Any]
) -> None:
    campaign = setup["campaign"]
    assert campaign["status"] == "open"
    assert campaign["items"] == 8 and campaign["assignments"] == 16
    queues = {}
    for name in ("alice", "bob"):
        client = setup[name]
        mine = client.get("/reviews").json()
        assert [c["total"] for c in mine] == [8] and mine[0]["next_sequence"] == 1
        queues[name] = [
            client.get(f"/reviews/{campaign['id']}/items/{n}").json() for n in range(1, 9)
        ]
    # The same eight prompts, in a different order, and never a model's name.
    assert sorted(i["prompt"] for i in queues["alice"]) == sorted(
        i["prompt"] for i in queues["bob"]
    )
    assert [i["prompt"] for i in queues["alice"]] != [i["prompt"] for i in queues["bob"]]
    labels = [c["label"] for c in setup["evaluation"]["candidates"]]
    for item in queues["alice"]:
        text = json.dumps(item)
        assert not any(label in text for label in labels)
        assert "model" not in item and "answer_a" not in text


def test_a_rating_saved_twice_is_one_rating(api: httpx.Client, setup: dict[str, Any]) -> None:
    campaign, alice = setup["campaign"], setup["alice"]
    body = {"choice": "left", "scores": {"left": {"accuracy": 4, "style": 5}}, "comment": "好"}
    first = alice.put(f"/reviews/{campaign['id']}/items/1/rating", json=body)
    again = alice.put(f"/reviews/{campaign['id']}/items/1/rating", json=body)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["revision"] == 2 and again.json()["choice"] == "left"
    assert again.json()["scores"] == {"left": {"accuracy": 4, "style": 5}}
    state = api.get(f"/review-campaigns/{campaign['id']}").json()
    assert state["ratings"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scores": {"left": {"accuracy": 6}}}, "scores.left.accuracy"),
        ({"scores": {"left": {"humour": 3}}}, "scores.left.humour"),
        ({"choice": "middle"}, "choice"),
        ({"scores": {"middle": {"accuracy": 3}}}, "scores"),
    ],
)
def test_a_bad_rating_names_the_field_and_changes_nothing(
    api: httpx.Client, setup: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    campaign, bob = setup["campaign"], setup["bob"]
    response = bob.put(f"/reviews/{campaign['id']}/items/8/rating", json=body)
    assert response.status_code == 422, response.text
    assert any(e["field"].startswith(field) for e in response.json()["errors"])
    assert bob.get(f"/reviews/{campaign['id']}/items/8").json()["revision"] == 0


def test_results_count_wins_and_fill_the_human_criteria(
    api: httpx.Client, setup: dict[str, Any]
) -> None:
    campaign = setup["campaign"]
    # Both reviewers prefer the fine-tuned model (B) everywhere, whichever side it was on.
    for name in ("alice", "bob"):
        client = setup[name]
        for n in range(1, 9):
            item = client.get(f"/reviews/{campaign['id']}/items/{n}").json()
            # Find the side of model B from the answers as the evaluation stored them.
            samples = api.get(
                f"/evaluations/{setup['evaluation']['id']}/samples",
                params={"q": item["prompt"], "limit": 1},
            ).json()["items"]
            subject = setup["evaluation"]["results"]["subject"]
            side = "left" if samples[0]["outputs"][subject] == item["left"] else "right"
            if item["left"] == item["right"]:
                side = "left"
            saved = client.put(
                f"/reviews/{campaign['id']}/items/{n}/rating",
                json={"choice": side, "scores": {side: {"accuracy": 3, "style": 3}}},
            )
            assert saved.status_code == 200, saved.text
    results = api.get(f"/review-campaigns/{campaign['id']}/results").json()
    win = results["win_rate"]
    assert win["n"] == 16 and win["b"] + win["a"] == 16
    assert win["b"] >= 14  # identical answers may count for A
    assert 0 <= win["low"] <= win["win_rate"] <= win["high"] <= 1
    assert results["agreement"]["choice"]["items"] == 8
    assert sorted(r["ratings"] for r in results["reviewers"]) == [8, 8]
    report = api.get(f"/projects/{setup['project']['id']}/report").json()
    statuses = {v["criterion"]: v["status"] for v in report["verdict"]}
    assert statuses["human win rate >= 60%"] == "met", report["verdict"]
    assert statuses["mean human rating >= 2"] == "met", report["verdict"]
    assert "still open" in report["verdict"][0]["explanation"]


def test_exports_have_one_row_per_rating(api: httpx.Client, setup: dict[str, Any]) -> None:
    campaign = setup["campaign"]
    csv_text = api.get(
        f"/review-campaigns/{campaign['id']}/export", params={"format": "csv"}
    ).content.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(rows) == 16 and set(rows[0]) >= {"reviewer", "choice", "a: accuracy", "b: style"}
    lines = api.get(
        f"/review-campaigns/{campaign['id']}/export", params={"format": "jsonl"}
    ).text.splitlines()
    assert len(lines) == 16 and json.loads(lines[0])["model_a_shown_on"] in ("left", "right")


def test_a_reviewer_reaches_only_their_own_campaign_items(
    api: httpx.Client, cluster: LiveServer, setup: dict[str, Any]
) -> None:
    campaign = setup["campaign"]
    _, carol_api = reviewer(api, cluster, "carol")
    assert carol_api.get("/reviews").json() == []
    assert carol_api.get(f"/reviews/{campaign['id']}/items/1").status_code == 404
    put = carol_api.put(f"/reviews/{campaign['id']}/items/1/rating", json={"choice": "tie"})
    assert put.status_code == 404
    alice = setup["alice"]
    assert alice.get(f"/reviews/{campaign['id']}/items/99").status_code == 404
    for path in (
        f"/review-campaigns/{campaign['id']}",
        f"/review-campaigns/{campaign['id']}/results",
        f"/evaluations/{setup['evaluation']['id']}",
        f"/projects/{setup['project']['id']}",
        f"/jobs/{setup['job']['id']}",
    ):
        assert alice.get(path).status_code in (403, 404), path
    assert alice.get("/users").status_code == 403
    assert alice.post("/review-campaigns", json={}).status_code in (403, 422)


def test_typed_prompts_are_answered_by_both_models_then_assigned(
    api: httpx.Client, setup: dict[str, Any]
) -> None:
    campaign = setup["campaign"]
    added = api.post(
        f"/review-campaigns/{campaign['id']}/prompts",
        json={"prompts": ["What colour is grass?", "  "]},
    )
    assert added.status_code == 200, added.text
    assert added.json()["items"] == 9

    def answered() -> dict | None:
        state = api.get(f"/review-campaigns/{campaign['id']}").json()
        return state if state["items_answering"] == 0 and state["assignments"] == 18 else None

    wait_for(answered, 120, what="the typed prompt's answers")
    queue = [setup["alice"].get(f"/reviews/{campaign['id']}/items/{n}").json() for n in (9,)]
    assert queue[0]["prompt"] == "What colour is grass?" and queue[0]["reference"] is None
    assert queue[0]["left"] and queue[0]["right"] is not None


def test_a_closed_campaign_takes_no_more_ratings(api: httpx.Client, setup: dict[str, Any]) -> None:
    campaign = setup["campaign"]
    closed = api.post(f"/review-campaigns/{campaign['id']}/close")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    refused = setup["alice"].put(
        f"/reviews/{campaign['id']}/items/1/rating", json={"choice": "tie"}
    )
    assert refused.status_code == 409
    report = api.get(f"/projects/{setup['project']['id']}/report").json()
    assert "still open" not in report["verdict"][0]["explanation"]


def test_a_campaign_needs_two_models_and_known_reviewers(
    api: httpx.Client, setup: dict[str, Any]
) -> None:
    base = {
        "project_id": setup["project"]["id"],
        "evaluation_id": setup["evaluation"]["id"],
        "name": "x",
    }
    missing = api.post("/review-campaigns", json={**base, "reviewers": ["nobody@tunelab.test"]})
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "reviewers.0"
    same = api.post(
        "/review-campaigns",
        json={**base, "model_a": "baseline", "model_b": "baseline", "open": False},
    )
    assert same.status_code == 422 and same.json()["errors"][0]["field"] == "model_b"
