"""Browser fixtures: Playwright driving Debian's Chromium, logged in through the login form."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.live import LiveServer

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run `make browser` (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


def login(browser: Browser, base_url: str, email: str, password: str) -> tuple[Page, list[str]]:
    """A new browser context logged in through the login form, and its console errors."""
    context = browser.new_context(base_url=base_url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))
    return page, console_errors


@pytest.fixture
def page(browser: Browser, cluster: LiveServer) -> Iterator[Page]:
    """A browser logged in as the admin through the login form."""
    page, console_errors = login(browser, cluster.url, ADMIN_EMAIL, ADMIN_PASSWORD)
    expect(page).to_have_url(re.compile(r"/projects$"))
    yield page
    page.context.close()
    # Our pages must work under their own Content-Security-Policy.
    assert [e for e in console_errors if "Content Security Policy" in e] == []


def upload_file(page: Page, file: Path | dict) -> None:
    """Send a file with the project page's upload form; lands on its upload page."""
    page.locator("#upload-form input[name=file]").set_input_files(file)  # type: ignore[arg-type]
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page).to_have_url(re.compile(r"/uploads/[0-9a-f-]+$"))
