"""Accounts without a terminal and the guided path, in a real browser: an admin invites by
link, the invitee opens it, sets a password, logs in with it and is led by the guide."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Page, expect

from tests.live import LiveServer
from tests.web.conftest import login


def test_an_invitee_sets_a_password_logs_in_and_is_guided(
    page: Page, browser: Browser, cluster: LiveServer
) -> None:
    page.goto("/admin/users")
    invite = page.get_by_test_id("invite-form")
    invite.get_by_label("E-mail").fill("invitee@tunelab.test")
    invite.get_by_label("Role").select_option("trainer")
    invite.get_by_role("button", name="Make an invitation link").click()
    link = page.get_by_test_id("invite-link").locator("code").inner_text()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/login/link/[\w-]+", link), link

    context = browser.new_context(base_url=cluster.url, locale="zh-CN")
    invitee = context.new_page()
    invitee.set_default_timeout(20_000)
    invitee.goto(link)
    expect(invitee).to_have_url(re.compile(r"/account\?welcome=1#password$"))
    expect(invitee.get_by_test_id("welcome")).to_be_visible()
    form = invitee.get_by_test_id("password-form")
    # Two different passwords: refused beside the field, nothing saved.
    form.get_by_label("新密码（至少 10 个字符）").fill("我的新密码 first")
    form.get_by_label("再输入一次新密码").fill("我的新密码 other")
    form.get_by_role("button", name="保存密码").click()
    expect(invitee.locator('[data-error-for="repeat_password"]')).to_contain_text("不一致")
    form = invitee.get_by_test_id("password-form")
    form.get_by_label("新密码（至少 10 个字符）").fill("我的新密码 first")
    form.get_by_label("再输入一次新密码").fill("我的新密码 first")
    form.get_by_role("button", name="保存密码").click()
    expect(invitee.get_by_test_id("password-saved")).to_be_visible()
    context.close()

    # The link is spent; the password works.
    again = browser.new_context(base_url=cluster.url)
    spent = again.new_page()
    spent.goto(link)
    expect(spent.get_by_role("alert")).to_contain_text("not valid any more")
    again.close()
    guided, _ = login(browser, cluster.url, "invitee@tunelab.test", "我的新密码 first")
    expect(guided).to_have_url(re.compile(r"/projects$"))

    # A new user is led by the guide: the goal first, its action the new project form.
    guide = guided.get_by_test_id("guide")
    expect(guide.locator('[aria-current="step"]')).to_contain_text("Goal")
    guided.get_by_test_id("guide-next").click()
    expect(guided).to_have_url(re.compile(r"/projects#new$"))
    guided.get_by_label("Name").fill("退货问答")
    guided.get_by_label("Task description").fill("回答关于退货政策的问题")
    guided.get_by_role("button", name="Create project").click()
    expect(guided.get_by_test_id("guide-current")).to_have_attribute("data-step", "data")
    expect(guided.get_by_test_id("guide-next")).to_have_text(re.compile("Upload data"))

    # Experts hide it; the page is the same without it.
    guided.get_by_test_id("hide-guide").click()
    expect(guided.get_by_test_id("guide")).to_have_count(0)
    expect(guided.get_by_test_id("show-guide")).to_be_visible()
    expect(guided.get_by_role("heading", level=1)).to_have_text("退货问答")
    guided.context.close()
