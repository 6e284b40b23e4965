"""The guided path (issue 15): from the projects page a new user is led through goal → data →
model and method → train → check → use, the current step computed from the project's real
state, each step explained in the reader's language; experts hide it and every page stays
reachable."""

from __future__ import annotations

import re
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from app.models import Deployment, Evaluation, Job, JobStatus
from app.services.accounts import credentials
from app.services.accounts import users as accounts
from tests.app.pages import csrf
from tests.factories import alpaca_records, jsonl

ZH = {"Accept-Language": "zh-CN"}
STEPS = ["goal", "data", "model", "train", "check", "use"]


def current_step(page: str) -> str:
    found = re.search(r'data-testid="guide-current" data-step="([a-z]*)"', page)
    assert found, "no guided path on the page"
    return found.group(1)


def new_user(client: TestClient, connection: Connection, email: str) -> None:
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        user = accounts.create_user(session, email=email, role="trainer")
        cookie = credentials.start_session(session, user=user, ip="127.0.0.1", user_agent="t")
        session.commit()
    client.cookies.set("tunelab_session", cookie)
    client.headers["Accept"] = "text/html"


def change(connection: Connection, action: object) -> None:
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        action(session)  # type: ignore[operator]
        session.commit()


def test_a_new_user_is_led_from_the_goal_to_a_model_in_use(
    client: TestClient, connection: Connection
) -> None:
    new_user(client, connection, "newcomer@tunelab.test")
    listing = client.get("/projects")
    assert current_step(listing.text) == "goal"
    assert 'href="/projects#new" data-testid="guide-next"' in listing.text
    assert [m for m in re.findall(r'data-step="([a-z]+)"', listing.text) if m][:6] == STEPS

    made = client.post(
        "/projects",
        data={
            "name": "退货客服",
            "task_description": "回答关于退货政策的问题",
            "csrf_token": csrf(listing.text),
        },
        follow_redirects=False,
    )
    url = made.headers["location"]
    project_id = uuid.UUID(url.rsplit("/", 1)[1])
    page = client.get(url)
    assert current_step(page.text) == "data"
    assert f'href="{url}#datasets" data-testid="guide-next"' in page.text

    staged = client.post(
        f"{url}/uploads",
        files={"file": ("train.jsonl", jsonl(alpaca_records(40)), "application/octet-stream")},
        headers={"X-CSRF-Token": csrf(page.text)},
        follow_redirects=False,
    )
    upload = client.get(staged.headers["location"])
    client.post(
        staged.headers["location"] + "/import",
        data={"csrf_token": csrf(upload.text)},
        follow_redirects=False,
    )
    page = client.get(url)
    assert current_step(page.text) == "model"

    dataset = re.search(r'<option value="([0-9a-f-]+@\d+)"', page.text)
    assert dataset
    started = client.post(
        f"{url}/jobs",
        data={
            "dataset_id": dataset.group(1),
            "base_model": "smollm2-135m-instruct",
            "method": "lora",
            "max_steps": "3",
            "csrf_token": csrf(page.text),
        },
        follow_redirects=False,
    )
    assert started.status_code == 303, started.text[:1000]
    job_url = started.headers["location"]
    page = client.get(url)
    assert current_step(page.text) == "train"
    assert f'href="{job_url}" data-testid="guide-next"' in page.text

    def finish_job(session: Session) -> None:
        job = session.scalar(select(Job).where(Job.project_id == project_id))
        assert job is not None
        job.status = JobStatus.succeeded

    change(connection, finish_job)
    assert current_step(client.get(url).text) == "check"

    def evaluate(session: Session) -> None:
        job = session.scalar(select(Job).where(Job.project_id == project_id))
        assert job is not None
        session.add(
            Evaluation(
                project_id=project_id,
                dataset_version_id=job.dataset_version_id,
                job_id=job.id,
                candidates=[],
                settings={},
                status="succeeded",
                queue="training",
                progress={},
                results={},
            )
        )

    change(connection, evaluate)
    page = client.get(url)
    assert current_step(page.text) == "use"
    assert f'href="{url}/deployments" data-testid="guide-next"' in page.text

    def deploy(session: Session) -> None:
        session.add(
            Deployment(
                project_id=project_id,
                name="returns-bot",
                base_model="smollm2-135m-instruct",
                api_key="x",
            )
        )

    change(connection, deploy)
    page = client.get(url)
    assert current_step(page.text) == ""  # every step done
    assert page.text.count('class="step done"') == 6


def test_each_step_is_explained_in_chinese_too(client: TestClient, connection: Connection) -> None:
    new_user(client, connection, "xinren@tunelab.test")
    listing = client.get("/projects", headers=ZH)
    assert "引导" in listing.text
    made = client.post(
        "/projects",
        data={"name": "合同审查", "csrf_token": csrf(listing.text)},
        follow_redirects=False,
    )
    project_id = made.headers["location"].rsplit("/", 1)[1]
    # No task and no criterion yet: the goal is still the current step.
    page = client.get(made.headers["location"], headers=ZH)
    assert current_step(page.text) == "goal"
    api = client.get(f"/api/v1/projects/{project_id}/guide", headers=ZH)
    assert api.status_code == 200, api.text
    steps = api.json()
    assert [s["key"] for s in steps] == STEPS
    assert [s["current"] for s in steps] == [True] + [False] * 5
    assert all(re.search(r"[\u4e00-\u9fff]", s["title"] + s["explanation"]) for s in steps)
    english = client.get(f"/api/v1/projects/{project_id}/guide").json()
    assert english[1]["title"] == "Data" and "test split" in english[1]["explanation"]


def test_experts_hide_the_guide_and_every_page_stays_reachable(
    client: TestClient, connection: Connection
) -> None:
    new_user(client, connection, "expert@tunelab.test")
    listing = client.get("/projects")
    made = client.post(
        "/projects",
        data={"name": "expert", "csrf_token": csrf(listing.text)},
        follow_redirects=False,
    )
    url = made.headers["location"]
    page = client.get(url)
    hidden = client.post(
        "/guide",
        data={"show": "off", "next": url, "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    assert hidden.status_code == 303 and hidden.headers["location"] == url
    page = client.get(url)
    assert 'data-testid="guide"' not in page.text
    assert 'data-testid="show-guide"' in page.text
    for path in (url, f"{url}/report", f"{url}/deployments", "/projects", "/account"):
        assert client.get(path).status_code == 200, path
    client.post("/guide", data={"show": "on", "next": url, "csrf_token": csrf(page.text)})
    assert 'data-testid="guide"' in client.get(url).text


def test_the_guide_is_only_for_projects_one_may_see(
    client: TestClient, connection: Connection
) -> None:
    new_user(client, connection, "outsider@tunelab.test")
    assert client.get(f"/api/v1/projects/{uuid.uuid4()}/guide").status_code == 404
