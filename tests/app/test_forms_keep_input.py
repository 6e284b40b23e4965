"""Errors never lose the user's input (issue 15): every HTML form of the product, sent a bad
value, answers 4xx with the page again, the input as typed and the message beside it.

The forms are enumerated from the app's own routes: a new POST page without a case here (or a
reason it has no typed input) fails ``test_every_form_has_a_case``. Creation forms also carry a
hidden token, so back-and-resubmit answers with the object already created.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from app.main import app
from app.models import (
    CampaignReviewer,
    CampaignStatus,
    Evaluation,
    Job,
    JobStatus,
    Project,
    ReviewAssignment,
    ReviewCampaign,
    ReviewItem,
    User,
)
from app.services.accounts import credentials
from app.web import auth_pages, data_pages, deploy_pages, evaluation_pages, pages, review_pages
from tests.app.pages import csrf
from tests.conftest import ADMIN_EMAIL
from tests.factories import alpaca_records, jsonl

CRITERION = "微调后的模型要比直接提示基础模型回答得更好"


@dataclass
class World:
    """Rows the forms act on, made inside the test's transaction."""

    project: str = ""
    upload: str = ""
    dataset: str = ""
    evaluation: str = ""
    campaign: str = ""
    review_campaign: str = ""
    user: str = ""
    ids: dict[str, str] = field(default_factory=dict)


def token(page: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', page)
    assert found, "no form token on the page"
    return found.group(1)


@pytest.fixture
def world(browser: TestClient, connection: Connection) -> World:
    """A project with a staged upload, an imported dataset, a finished evaluation, a draft
    campaign and an open one with an item in the admin's queue."""
    page = browser.get("/projects")
    made = browser.post(
        "/projects",
        data={"name": "表单测试", "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    project_id = made.headers["location"].rsplit("/", 1)[1]
    records = jsonl(alpaca_records(40))
    staged = browser.post(
        f"/projects/{project_id}/uploads",
        files={"file": ("train.jsonl", records, "application/octet-stream")},
        headers={"X-CSRF-Token": csrf(page.text)},
        follow_redirects=False,
    )
    assert staged.status_code == 303, staged.text
    upload_id = staged.headers["location"].rsplit("/", 1)[1]
    second = browser.post(
        f"/projects/{project_id}/uploads",
        files={"file": ("more.jsonl", records, "application/octet-stream")},
        headers={"X-CSRF-Token": csrf(page.text)},
        follow_redirects=False,
    )
    upload_page = browser.get(second.headers["location"])
    imported = browser.post(
        second.headers["location"] + "/import",
        data={"name": "客服数据", "csrf_token": csrf(upload_page.text)},
        follow_redirects=False,
    )
    assert imported.status_code == 303, imported.text
    dataset_id = imported.headers["location"].split("/")[2].split("?")[0]
    project_page = browser.get(f"/projects/{project_id}")
    version = re.search(r'<option value="([0-9a-f-]+@\d+)"', project_page.text)
    assert version
    started = browser.post(
        f"/projects/{project_id}/jobs",
        data={
            "dataset_id": version.group(1),
            "base_model": "smollm2-135m-instruct",
            "method": "lora",
            "max_steps": "3",
            "csrf_token": csrf(project_page.text),
        },
        follow_redirects=False,
    )
    assert started.status_code == 303, started.text[:2000]
    job_id = uuid.UUID(started.headers["location"].rsplit("/", 1)[1])
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        admin = session.scalar(select(User).where(User.email == ADMIN_EMAIL))
        assert admin is not None
        project = session.get(Project, uuid.UUID(project_id))
        assert project is not None
        job = session.get(Job, job_id)
        assert job is not None
        job.status = JobStatus.succeeded  # as the worker leaves it: something to deploy
        from app.models import Dataset

        dataset = session.get(Dataset, uuid.UUID(dataset_id))
        assert dataset is not None
        evaluation = Evaluation(
            project_id=project.id,
            dataset_version_id=dataset.versions[-1].id,
            split="test",
            candidates=[{"key": "base", "label": "@base"}],
            settings={},
            status="succeeded",
            queue="training",
            progress={},
            results={
                "n": 2,
                "models": {},
                "decoding": {"temperature": 0, "max_new_tokens": 64},
                "bleu_tokenizer": "zh",
            },
        )
        draft = ReviewCampaign(
            project_id=project.id,
            name="草稿",
            criteria=["accuracy"],
            model_a={"label": "@base"},
            model_b={"label": "tuned"},
        )
        opened = ReviewCampaign(
            project_id=project.id,
            name="盲评",
            criteria=["accuracy"],
            model_a={"label": "@base"},
            model_b={"label": "tuned"},
            status=CampaignStatus.open,
        )
        session.add_all([evaluation, draft, opened])
        session.flush()
        item = ReviewItem(
            campaign_id=opened.id, position=1, prompt="你好", answer_a="甲", answer_b="乙"
        )
        session.add_all([item, CampaignReviewer(campaign_id=opened.id, user_id=admin.id)])
        session.flush()
        session.add(
            ReviewAssignment(
                campaign_id=opened.id, reviewer_id=admin.id, item_id=item.id, sequence=1
            )
        )
        other = User(email="someone@tunelab.test", role="trainer")
        session.add(other)
        session.commit()
        return World(
            project=project_id,
            upload=upload_id,
            dataset=f"{dataset_id}/versions/{dataset.versions[-1].number}",
            evaluation=str(evaluation.id),
            campaign=str(draft.id),
            review_campaign=str(opened.id),
            user=str(other.id),
        )


@dataclass
class Case:
    """Open ``page``, send ``action`` with ``data``; the answer is 4xx and shows ``kept``."""

    page: Callable[[World], str]
    action: Callable[[World], str]
    data: dict[str, str]
    kept: list[str]
    files: dict[str, Any] | None = None


CASES: dict[str, Case] = {
    "/projects": Case(
        page=lambda w: "/projects",
        action=lambda w: "/projects",
        data={"name": "客服助手", "domain": "客服", "success_criteria": CRITERION},
        kept=["客服助手", CRITERION],
    ),
    "/projects/{project_id}/members": Case(
        page=lambda w: f"/projects/{w.project}",
        action=lambda w: f"/projects/{w.project}/members",
        data={"email": "nobody-here@tunelab.test"},
        kept=["nobody-here@tunelab.test"],
    ),
    "/projects/{project_id}/priority": Case(
        page=lambda w: f"/projects/{w.project}",
        action=lambda w: f"/projects/{w.project}/priority",
        data={"priority": "1000"},
        kept=['value="1000"'],
    ),
    "/projects/{project_id}/jobs": Case(
        page=lambda w: f"/projects/{w.project}",
        action=lambda w: f"/projects/{w.project}/jobs",
        data={"dataset_id": "", "base_model": "smollm2-135m-instruct", "max_steps": "7"},
        kept=["smollm2-135m-instruct"],
    ),
    "/projects/{project_id}/uploads": Case(
        page=lambda w: f"/projects/{w.project}",
        action=lambda w: f"/projects/{w.project}/uploads",
        data={},
        # A browser cannot fill a file input again; the page names the file and what is wrong.
        kept=["upload limit"],
        files={"file": ("大.jsonl", b"x" * (2 * 1024 * 1024 + 10), "application/octet-stream")},
    ),
    "/uploads/{upload_id}/import": Case(
        page=lambda w: f"/uploads/{w.upload}",
        action=lambda w: f"/uploads/{w.upload}/import",
        data={"name": "数据一", "validation": "95", "test": "5"},
        kept=["数据一", 'value="95"'],
    ),
    "/datasets/{dataset_id}/versions/{number}/{action}": Case(
        page=lambda w: f"/datasets/{w.dataset.split('/')[0]}",
        action=lambda w: f"/datasets/{w.dataset}/split",
        data={"validation": "80", "test": "70", "seed": "12345"},
        kept=['value="80"', 'value="70"', 'value="12345"'],
    ),
    "/projects/{project_id}/evaluations": Case(
        page=lambda w: f"/projects/{w.project}/report",
        action=lambda w: f"/projects/{w.project}/evaluations",
        data={"job_id": "", "dataset": "nonsense@1", "base_model": "我的基础模型"},
        kept=["我的基础模型"],
    ),
    "/evaluations/{evaluation_id}/campaigns": Case(
        page=lambda w: f"/evaluations/{w.evaluation}",
        action=lambda w: f"/evaluations/{w.evaluation}/campaigns",
        data={
            "name": "第一轮盲评",
            "criteria": "准确\n语气",
            "reviewers_per_item": "两个",
            "instructions": "请仔细看",
        },
        kept=["第一轮盲评", "准确\n语气", "两个", "请仔细看"],
    ),
    "/campaigns/{campaign_id}/{action}": Case(
        page=lambda w: f"/campaigns/{w.campaign}",
        action=lambda w: f"/campaigns/{w.campaign}/reviewers",
        data={"email": "not-a-user@tunelab.test"},
        kept=["not-a-user@tunelab.test"],
    ),
    "/reviews/{campaign_id}/{sequence}": Case(
        page=lambda w: f"/reviews/{w.review_campaign}/1",
        action=lambda w: f"/reviews/{w.review_campaign}/1",
        data={"choice": "sideways", "comment": "左边的更好，但是有错别字"},
        kept=["左边的更好，但是有错别字"],
    ),
    "/projects/{project_id}/deployments": Case(
        page=lambda w: f"/projects/{w.project}/deployments",
        action=lambda w: f"/projects/{w.project}/deployments",
        data={"name": "Not A Valid Name!"},
        kept=["Not A Valid Name!"],
    ),
    "/login": Case(
        page=lambda w: "/login",
        action=lambda w: "/login",
        data={"email": "wer@tunelab.test", "password": "wrong password"},
        kept=["wer@tunelab.test"],
    ),
    "/account/language": Case(
        page=lambda w: "/account",
        action=lambda w: "/account/language",
        data={"locale": "klingon"},
        kept=[],
    ),
    "/account/tokens": Case(
        page=lambda w: "/account",
        action=lambda w: "/account/tokens",
        data={"name": "持续集成", "expires_days": "三十", "scopes": "write"},
        kept=["持续集成", "三十"],
    ),
    "/account/password": Case(
        page=lambda w: "/account",
        action=lambda w: "/account/password",
        data={"new_password": "短", "repeat_password": "短"},
        # Passwords are never sent back into a page: the message names the field to retype.
        kept=['data-error-for="current_password"'],
    ),
    "/admin/invites": Case(
        page=lambda w: "/admin/users",
        action=lambda w: "/admin/invites",
        data={"email": "新人@例子", "role": "reviewer", "days": "365"},
        kept=["新人@例子", 'value="365"', 'data-error-for="days"'],
    ),
    "/admin/users": Case(
        page=lambda w: "/admin/users",
        action=lambda w: "/admin/users",
        data={"email": "新同事@例子", "role": "reviewer", "password": "short"},
        kept=["新同事@例子", 'value="reviewer" selected'],
    ),
    "/admin/users/{user_id}/role": Case(
        page=lambda w: "/admin/users",
        action=lambda w: f"/admin/users/{w.user}/role",
        data={"role": "emperor"},
        kept=[],
    ),
    "/admin/models": Case(
        page=lambda w: "/admin/models",
        action=lambda w: "/admin/models",
        data={"model": "   ", "trust_remote_code": "1"},
        kept=['value="1" checked'],
    ),
}

# POST pages with no typed input: buttons (their refusals are tested where they live), the
# job form's live estimate (a fragment, not a submission), the header's language switch (any
# value falls back to a language it has) and the guided path's hide/show button.
NO_TYPED_INPUT = {
    "/projects/{project_id}/estimate",
    "/jobs/{job_id}/exports",
    "/jobs/{job_id}/cancel",
    "/jobs/{job_id}/resume",
    "/uploads/{upload_id}/delete",
    "/evaluations/{evaluation_id}/cancel",
    "/deployments/{deployment_id}/stop",
    "/logout",
    "/language",
    "/guide",
    "/account/tokens/{token_id}/revoke",
}

# Known gaps, each with the reason; the case still runs and must fail (strict xfail).
KNOWN_GAPS: dict[str, str] = {}

PAGE_MODULES = (pages, data_pages, evaluation_pages, review_pages, deploy_pages, auth_pages)


def form_routes() -> set[str]:
    return {
        route.path
        for module in PAGE_MODULES
        for route in module.router.routes
        if isinstance(route, APIRoute) and "POST" in route.methods
    }


def test_every_form_has_a_case() -> None:
    routes = form_routes()
    assert routes - NO_TYPED_INPUT - set(CASES) == set(), "a form without a bad-input case"
    assert set(CASES) | NO_TYPED_INPUT <= routes, "a case for a form that no longer exists"
    # Every page module of the app is looked at.
    web = {r.endpoint.__module__ for r in app.router.routes if isinstance(r, APIRoute)}
    assert {m for m in web if m.startswith("app.web.")} <= {m.__name__ for m in PAGE_MODULES}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=pytest.mark.xfail(reason=KNOWN_GAPS[p], strict=True))
        if p in KNOWN_GAPS
        else p
        for p in CASES
    ],
)
def test_a_bad_value_answers_4xx_with_the_input_kept(
    browser: TestClient, world: World, path: str
) -> None:
    case = CASES[path]
    if path == "/login":
        browser.cookies.delete("tunelab_session")
    page = browser.get(case.page(world))
    assert page.status_code == 200, page.text
    data = {**case.data, "csrf_token": csrf(page.text)}
    answer = browser.post(
        case.action(world),
        data=data,
        files=case.files,
        headers={"X-CSRF-Token": data["csrf_token"]},
        follow_redirects=False,
    )
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:2000])
    assert 'role="alert"' in answer.text, "no message on the page"
    for value in case.kept:
        assert value in answer.text or html.escape(value) in answer.text, value


def test_a_chinese_criterion_is_refused_beside_its_field_with_the_form_kept(
    browser: TestClient,
) -> None:
    page = browser.get("/projects", headers={"Accept-Language": "zh-CN"})
    refused = browser.post(
        "/projects",
        data={
            "name": "客服助手",
            "success_criteria": CRITERION,
            "csrf_token": csrf(page.text),
            "form_token": token(page.text),
        },
        headers={"Accept-Language": "zh-CN"},
    )
    assert refused.status_code == 422
    beside = re.search(r'data-error-for="success_criteria">([^<]+)<', refused.text)
    assert beside and CRITERION in beside.group(1), refused.text
    assert f">{CRITERION}</textarea>" in refused.text
    assert 'value="客服助手"' in refused.text
    # The same token as the form had: the corrected submission is the one that counts.
    assert token(refused.text) == token(page.text)


def count(connection: Connection, model: Any) -> int:
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_back_and_resubmit_does_not_make_a_second_project(
    browser: TestClient, connection: Connection
) -> None:
    page = browser.get("/projects")
    data = {"name": "只一个", "csrf_token": csrf(page.text), "form_token": token(page.text)}
    before = count(connection, Project)
    first = browser.post("/projects", data=data, follow_redirects=False)
    again = browser.post("/projects", data=data, follow_redirects=False)
    assert first.status_code == again.status_code == 303
    assert again.headers["location"] == first.headers["location"]
    assert count(connection, Project) == before + 1
    # A fresh form is a new submission.
    fresh = browser.get("/projects")
    other = browser.post(
        "/projects",
        data={"name": "只一个", "csrf_token": csrf(fresh.text), "form_token": token(fresh.text)},
        follow_redirects=False,
    )
    assert other.headers["location"] != first.headers["location"]


def test_back_and_resubmit_does_not_start_a_second_job_or_campaign(
    browser: TestClient, world: World, connection: Connection
) -> None:
    page = browser.get(f"/projects/{world.project}")
    dataset = re.search(r'<option value="([0-9a-f-]+@\d+)"', page.text)
    assert dataset
    form = re.search(r'id="job-form".*?</form>', page.text, re.S)
    assert form
    data = {
        "dataset_id": dataset.group(1),
        "base_model": "smollm2-135m-instruct",
        "method": "lora",
        "max_steps": "3",
        "csrf_token": csrf(page.text),
        "form_token": token(form.group(0)),
    }
    jobs = count(connection, Job)
    first = browser.post(f"/projects/{world.project}/jobs", data=data, follow_redirects=False)
    again = browser.post(f"/projects/{world.project}/jobs", data=data, follow_redirects=False)
    assert first.status_code == 303, first.text[:2000]
    assert again.headers["location"] == first.headers["location"]
    assert count(connection, Job) == jobs + 1

    evaluation = browser.get(f"/evaluations/{world.evaluation}")
    form = re.search(r'data-testid="campaign-form".*?</form>', evaluation.text, re.S)
    assert form
    data = {
        "name": "复查",
        "mode": "rating",
        "criteria": "准确",
        "reviewers": ADMIN_EMAIL,
        "csrf_token": csrf(evaluation.text),
    }
    data["form_token"] = token(form.group(0))
    campaigns = count(connection, ReviewCampaign)
    url = f"/evaluations/{world.evaluation}/campaigns"
    first = browser.post(url, data=data, follow_redirects=False)
    again = browser.post(url, data=data, follow_redirects=False)
    assert first.status_code == 303, first.text[:2000]
    assert again.headers["location"] == first.headers["location"]
    assert count(connection, ReviewCampaign) == campaigns + 1


def test_a_token_is_only_its_owners(browser: TestClient, connection: Connection) -> None:
    """Another user sending the same token makes their own project, never sees this one."""
    page = browser.get("/projects")
    data = {"name": "我的", "csrf_token": csrf(page.text), "form_token": token(page.text)}
    first = browser.post("/projects", data=data, follow_redirects=False)
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        other = User(email="trainer2@tunelab.test", role="trainer")
        session.add(other)
        session.flush()
        cookie = credentials.start_session(session, user=other, ip="127.0.0.1", user_agent="t")
        session.commit()
    browser.cookies.set("tunelab_session", cookie)
    theirs = browser.get("/projects")
    data["csrf_token"] = csrf(theirs.text)
    answer = browser.post("/projects", data=data, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] != first.headers["location"]


def test_an_error_page_renders_its_header_without_the_database(browser: TestClient) -> None:
    """Issue 15's blank 500: the error page's base.html once read the caller's ORM row after
    the request's session had closed (DetachedInstanceError). It reads a snapshot now."""
    missing = browser.get(f"/projects/{uuid.uuid4()}", headers={"Accept-Language": "zh-CN"})
    assert missing.status_code == 404
    assert ADMIN_EMAIL in missing.text  # the header, with the caller
    assert 'role="alert"' in missing.text and "<html" in missing.text


def test_a_fresh_job_form_leaves_the_run_length_to_auto(browser: TestClient, world: World) -> None:
    """Only the model and the method come filled in: a preset step count would cut or stretch
    what ``auto`` chooses (one pass over the data on a CPU worker)."""
    page = browser.get(f"/projects/{world.project}").text
    form = page[page.index('id="job-form"') :]
    for name in ("max_steps", "epochs", "learning_rate", "batch_size", "max_seq_length"):
        field_html = re.search(rf'<input name="{name}"[^>]*>', form)
        assert field_html, name
        assert 'value=""' in field_html.group(0), field_html.group(0)
    assert 'value="smollm2-135m-instruct" selected' in form
