"""Chinese and English pages: the browser's Accept-Language, the header switch (a cookie), the
account's setting (first of all), and API errors with a translated message beside the field."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from app.core.i18n import LOCALE_COOKIE
from app.models import User
from tests.app.pages import csrf
from tests.conftest import ADMIN_EMAIL

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}


def test_without_a_language_the_pages_are_english(browser: TestClient) -> None:
    page = browser.get("/projects")
    assert page.status_code == 200
    assert '<html lang="en">' in page.text
    assert "New project" in page.text and "Create project" in page.text


def test_the_browsers_chinese_gives_chinese_pages(browser: TestClient) -> None:
    page = browser.get("/projects", headers=ZH)
    assert page.status_code == 200
    assert '<html lang="zh-CN">' in page.text
    assert "新建项目" in page.text and "创建项目" in page.text and "成功标准，每行一条" in page.text
    assert "New project" not in page.text
    # The switch offers the other language, named in itself.
    assert 'data-testid="language-en"' in page.text and ">English<" in page.text


def test_the_login_page_follows_the_browser_too(client: TestClient) -> None:
    page = client.get("/login", headers=ZH)
    assert '<html lang="zh-CN">' in page.text
    assert "登录" in page.text and "密码" in page.text


def test_the_header_switch_sets_a_cookie_that_beats_the_browser(browser: TestClient) -> None:
    page = browser.get("/projects", headers=ZH)
    switched = browser.post(
        "/language",
        data={"locale": "en", "next": "/projects", "csrf_token": csrf(page.text)},
        headers=ZH,
        follow_redirects=False,
    )
    assert switched.status_code == 303
    assert switched.headers["location"] == "/projects"
    assert browser.cookies.get(LOCALE_COOKIE) == "en"
    again = browser.get("/projects", headers=ZH)
    assert '<html lang="en">' in again.text and "New project" in again.text
    # And back to Chinese, for a browser that asks for English.
    browser.post("/language", data={"locale": "zh_CN", "next": "/projects"})
    assert "新建项目" in browser.get("/projects", headers={"Accept-Language": "en"}).text


def test_the_switch_only_goes_to_this_site(client: TestClient) -> None:
    switched = client.post(
        "/language", data={"locale": "zh_CN", "next": "//evil.example/"}, follow_redirects=False
    )
    assert switched.headers["location"] == "/"


def test_the_accounts_setting_beats_the_cookie_and_the_browser(
    browser: TestClient, connection: Connection
) -> None:
    account = browser.get("/account")
    assert 'data-testid="account-language"' in account.text
    saved = browser.post(
        "/account/language",
        data={"locale": "zh_CN", "csrf_token": csrf(account.text)},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        admin = session.scalar(select(User).where(User.email == ADMIN_EMAIL))
        assert admin is not None and admin.locale == "zh_CN"
    browser.cookies.set(LOCALE_COOKIE, "en")
    page = browser.get("/account", headers={"Accept-Language": "en"})
    assert '<html lang="zh-CN">' in page.text and "我的账户" in page.text
    # Back to "the browser's language": the setting is cleared.
    browser.post("/account/language", data={"locale": "", "csrf_token": csrf(page.text)})
    browser.cookies.delete(LOCALE_COOKIE)
    assert "Your account" in browser.get("/account", headers={"Accept-Language": "en"}).text


def test_a_form_error_reads_in_chinese_and_in_plain_words(browser: TestClient) -> None:
    page = browser.get("/projects", headers=ZH)
    refused = browser.post(
        "/projects",
        data={"name": "", "csrf_token": csrf(page.text)},
        headers=ZH,
    )
    assert refused.status_code == 422
    assert "请至少输入 1 个字符。" in refused.text
    assert "String should have" not in refused.text


def test_an_api_error_keeps_its_field_and_adds_a_translated_message(api: httpx.Client) -> None:
    refused = api.post("/projects", json={"name": ""}, headers=ZH)
    assert refused.status_code == 422
    body = refused.json()
    assert body["errors"][0]["field"] == "name"
    assert body["errors"][0]["message"] == "请至少输入 1 个字符。"
    assert body["message"] == "名称：请至少输入 1 个字符。"
    assert body["code"] == "invalid_input"
    english = api.post("/projects", json={"name": ""}).json()
    assert english["errors"][0]["field"] == "name"
    assert english["message"].startswith("Name: String should have at least 1 character")


def test_a_job_config_error_names_the_setting_not_the_api_field(api: httpx.Client) -> None:
    from tests.factories import create_project

    project = create_project(api)
    refused = api.post(
        "/jobs",
        json={
            "project_id": project["id"],
            "dataset_id": project["id"],
            "config": {"base_model": "smollm2-135m-instruct", "max_seq_length": 2},
        },
        headers=ZH,
    )
    assert refused.status_code in (404, 422)
    body = refused.json()
    assert body["message"] and "config." not in body["message"]


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/projects", "新建项目"),
        ("/account", "API 令牌"),
        ("/reviews", "我的评审"),
        ("/admin/users", "新建用户"),
        ("/admin/models", "模型权限"),
        ("/admin/audit", "审计日志"),
    ],
)
def test_every_page_renders_in_chinese(browser: TestClient, path: str, words: str) -> None:
    page = browser.get(path, headers=ZH)
    assert page.status_code == 200, page.text
    assert '<html lang="zh-CN">' in page.text and words in page.text


def test_a_project_page_in_chinese_with_dates_in_chinese(browser: TestClient) -> None:
    form = browser.get("/projects", headers=ZH)
    created = browser.post(
        "/projects",
        data={
            "name": "客服助手",
            "success_criteria": "rougeL >= 0.40",
            "csrf_token": csrf(form.text),
        },
        follow_redirects=False,
    )
    assert created.status_code == 303, created.text
    page = browser.get(created.headers["location"], headers=ZH)
    assert page.status_code == 200, page.text
    assert (
        "客服助手" in page.text and "成员" in page.text and "上传数据后即可开始训练。" in page.text
    )
    # The upload script's words come from the page, in its language.
    assert 'data-say-uploading="正在上传：{done} / {total}"' in page.text
    listing = browser.get("/projects", headers=ZH)
    assert re.search(r"\d{4}年\d{1,2}月\d{1,2}日 \d\d:\d\d", listing.text)


def test_a_chinese_criterion_is_refused_in_chinese_with_the_input_kept(
    browser: TestClient,
) -> None:
    criterion = "微调后的模型要比直接提示基础模型回答得更好"
    form = browser.get("/projects", headers=ZH)
    refused = browser.post(
        "/projects",
        data={"name": "客服助手", "success_criteria": criterion, "csrf_token": csrf(form.text)},
        headers=ZH,
    )
    assert refused.status_code == 422
    assert f"第 1 条成功标准：无法理解“{criterion}”" in refused.text or (
        f"无法理解“{criterion}”" in refused.text
    )
    assert "could not read" not in refused.text
    assert "成功标准" in refused.text  # the field's label, not success_criteria.0


def test_a_failed_login_says_so_in_chinese(client: TestClient) -> None:
    form = client.get("/login", headers=ZH)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token
    refused = client.post(
        "/login",
        data={"email": "nobody@tunelab.test", "password": "wrong password", "csrf_token": token[1]},
        headers=ZH,
    )
    assert refused.status_code in (401, 403)
    assert "电子邮箱或密码错误" in refused.text
