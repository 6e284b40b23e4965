"""The guided flow in a real browser: Playwright driving Debian's Chromium against a live server."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.factories import alpaca_records, jsonl
from tests.web.conftest import upload_file


def test_expert_creates_a_project_uploads_data_and_watches_a_job_train(
    page: Page, tmp_path: Path, tiny_model: Path
) -> None:
    page.goto("/")
    page.get_by_label("Name").fill("合同审核 contract review")
    page.get_by_label("Domain").fill("法律")
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("合同审核 contract review")

    project_url = page.url
    bad = tmp_path / "bad.jsonl"
    lines = jsonl(alpaca_records(8)).decode().splitlines()
    lines[6] = "{oops"
    bad.write_text("\n".join(lines), encoding="utf-8")
    upload_file(page, bad)
    page.get_by_role("button", name="Validate and import").click()
    error = page.get_by_test_id("import-error")
    expect(error).to_contain_text("line 7")
    expect(error.locator("td").first).to_have_text("7")

    page.goto(project_url)
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl(alpaca_records(12)))
    upload_file(page, good)
    page.get_by_role("button", name="Validate and import").click()
    expect(page.get_by_test_id("split-counts")).to_contain_text("train 10")
    page.goto(project_url)
    expect(page.get_by_test_id("datasets")).to_contain_text("good.jsonl")

    page.get_by_text("Advanced: another model").click()  # a local folder, not the catalog
    page.get_by_test_id("model-custom").fill(str(tiny_model))
    page.get_by_label("Max steps").fill("10")
    page.get_by_label("Learning rate").fill("0.005")
    page.get_by_label("Max sequence length").fill("64")
    page.get_by_role("button", name="Start training").click()

    # The status, progress bar and chart update in place while the job trains.
    expect(page.get_by_test_id("status")).to_have_text("succeeded", timeout=180_000)
    expect(page.locator("progress")).to_have_attribute("aria-valuenow", "100")
    expect(page.get_by_test_id("loss-chart").locator("polyline")).to_have_count(2)  # loss, val_loss
    expect(page.get_by_test_id("artifact-download")).to_be_visible()


def test_bad_job_settings_are_shown_next_to_the_form(page: Page, tiny_model: Path) -> None:
    page.goto("/projects")
    page.get_by_label("Name").fill("settings check")
    page.get_by_role("button", name="Create project").click()
    project_url = page.url
    data = jsonl(alpaca_records(4))
    upload_file(page, {"name": "d.jsonl", "mimeType": "application/json", "buffer": data})
    page.get_by_role("button", name="Validate and import").click()
    expect(page.get_by_test_id("split-counts")).to_be_visible()
    page.goto(project_url)
    page.get_by_text("Advanced: another model").click()  # a local folder, not the catalog
    page.get_by_test_id("model-custom").fill(str(tiny_model))
    page.get_by_label("Learning rate").fill("-1")
    page.get_by_role("button", name="Start training").click()
    errors = page.locator("#job-form > [data-testid=errors]")
    # The setting's name in words; the API's name for it stays in the cell's title.
    expect(errors).to_contain_text("Learning rate")
    expect(errors.locator('[data-field="config.learning_rate"]')).to_be_visible()


def test_the_header_switches_between_english_and_chinese(page: Page) -> None:
    page.goto("/projects")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.get_by_test_id("language-zh_CN").click()
    expect(page).to_have_url(re.compile(r"/projects$"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.get_by_role("heading", name="新建项目")).to_be_visible()
    expect(page.get_by_role("button", name="创建项目")).to_be_visible()
    page.goto("/account")  # the choice is kept (a cookie) from page to page
    expect(page.get_by_role("heading", level=1)).to_have_text("我的账户")
    page.get_by_test_id("language-en").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your account")


def test_model_output_and_names_are_escaped(page: Page) -> None:
    page.goto("/projects")
    page.get_by_label("Name").fill("<script>window.pwned=1</script>")
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("<script>window.pwned=1</script>")
    assert page.evaluate("window.pwned") is None


def test_an_api_token_is_created_shown_once_and_revoked(page: Page) -> None:
    page.goto("/account")
    page.get_by_label("Name").fill("notebook")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_test_id("new-token").locator("code").inner_text()
    assert secret.startswith("tl_")
    page.goto("/account")
    assert secret not in page.content()
    row = page.get_by_test_id("tokens").locator("tr", has_text="notebook").first
    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_test_id("tokens").locator("tr", has_text="notebook").first).to_contain_text(
        "revoked"
    )


def test_admin_sees_logins_in_the_audit_log(page: Page) -> None:
    page.goto("/admin/audit")
    expect(page.get_by_test_id("audit")).to_contain_text("login.succeeded")


def test_api_docs_render_offline_under_the_csp(page: Page) -> None:
    page.goto("/docs")
    expect(page.get_by_text("/api/v1/projects").first).to_be_visible()
