"""The data page's small things (issue 15): a test split too small for a verdict is said, with
the number and what to do; counting tokens shows that it is working."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from app.models import User
from app.services.accounts import credentials
from tests.app.pages import csrf
from tests.conftest import ADMIN_EMAIL
from tests.factories import alpaca_records, jsonl

ZH = {"Accept-Language": "zh-CN"}


def dataset_page(client: TestClient, connection: Connection, records: int) -> str:
    """Upload ``records`` examples with the default 5%/5% split; the dataset page's URL."""
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        admin = session.scalar(select(User).where(User.email == ADMIN_EMAIL))
        assert admin is not None
        cookie = credentials.start_session(session, user=admin, ip="127.0.0.1", user_agent="t")
        session.commit()
    client.cookies.set("tunelab_session", cookie)
    client.headers["Accept"] = "text/html"
    page = client.get("/projects")
    made = client.post(
        "/projects", data={"name": "数据", "csrf_token": csrf(page.text)}, follow_redirects=False
    )
    staged = client.post(
        made.headers["location"] + "/uploads",
        files={"file": ("t.jsonl", jsonl(alpaca_records(records)), "application/octet-stream")},
        headers={"X-CSRF-Token": csrf(page.text)},
        follow_redirects=False,
    )
    upload = client.get(staged.headers["location"])
    imported = client.post(
        staged.headers["location"] + "/import",
        data={"csrf_token": csrf(upload.text)},
        follow_redirects=False,
    )
    assert imported.status_code == 303, imported.text[:2000]
    return imported.headers["location"]


def test_ten_test_items_are_called_too_few_with_the_share_that_gives_enough(
    client: TestClient, connection: Connection
) -> None:
    url = dataset_page(client, connection, 200)
    page = client.get(url)
    warning = re.search(r'data-testid="few-test">(.*?)</p>', page.text, re.S)
    assert warning, page.text
    text = " ".join(warning.group(1).split())
    assert "Only 10 test examples" in text and "at least 50" in text
    assert "test share of 25%" in text
    chinese = client.get(url, headers=ZH)
    warning = re.search(r'data-testid="few-test">(.*?)</p>', chinese.text, re.S)
    assert warning and "10" in warning.group(1) and "25%" in warning.group(1)
    assert re.search(r"[\u4e00-\u9fff]", warning.group(1))


def test_a_version_too_small_for_any_share_says_to_add_data(
    client: TestClient, connection: Connection
) -> None:
    page = client.get(dataset_page(client, connection, 40))
    warning = re.search(r'data-testid="few-test">(.*?)</p>', page.text, re.S)
    assert warning and "Add more data" in warning.group(1)


def test_enough_test_items_give_no_warning(client: TestClient, connection: Connection) -> None:
    page = client.get(dataset_page(client, connection, 1100))
    assert 'data-testid="few-test"' not in page.text


def test_counting_tokens_shows_a_spinner_while_it_works(
    client: TestClient, connection: Connection
) -> None:
    page = client.get(dataset_page(client, connection, 40))
    form = re.search(r'<form[^>]*data-testid="tokenizer-form".*?</form>', page.text, re.S)
    assert form
    assert 'hx-indicator="#token-busy"' in form.group(0)
    assert 'id="token-busy" class="htmx-indicator"' in form.group(0)
    assert 'class="spinner"' in form.group(0)
