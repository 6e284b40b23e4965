"""The job pages in a real browser: the model picker, the first "Start training" click, cancel
with its confirmation, what a stopped job offers (resume, export what was trained), the word
that a queued job waits, and the loss chart's step labels."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.factories import (
    alpaca_records,
    create_dataset,
    create_project,
    start_job,
    tiny_config,
    wait_for_status,
)
from tests.live import wait_for

pytestmark = pytest.mark.e2e


def test_the_model_picker_shows_the_catalog_and_the_first_click_after_an_edit_starts_the_job(
    page: Page, api: httpx.Client, tiny_model: Path
) -> None:
    project = create_project(api, name="选模型 picker")
    create_dataset(api, project["id"], alpaca_records(12))
    page.goto(f"/projects/{project['id']}")

    picker = page.get_by_test_id("model-picker")
    expect(picker.get_by_test_id("model-select")).to_have_value("smollm2-135m-instruct")
    picker.get_by_text("Compare the catalog models").click()
    qwen = picker.locator('[data-testid="model-row"][data-model="qwen2.5-0.5b-instruct"]')
    expect(qwen).to_contain_text("Apache-2.0")
    expect(qwen.get_by_test_id("chinese")).to_be_visible()
    smol = picker.locator('[data-testid="model-row"][data-model="smollm2-135m-instruct"]')
    expect(smol.get_by_test_id("chinese")).to_have_count(0)
    expect(smol).to_contain_text("lora")
    expect(smol.get_by_test_id("model-estimate")).not_to_have_text("…", timeout=30_000)

    page.get_by_label("Max sequence length").fill("64")
    page.get_by_label("Learning rate").fill("0.005")
    page.get_by_label("Max steps").fill("2")
    expect(page.get_by_test_id("estimate-time")).to_be_visible(timeout=30_000)
    # A local folder goes under "advanced". Typed, then the button pressed as a person does:
    # the press takes the focus from the field, its change redraws the estimate (here from a
    # catalog model's block to one line) while the button is held down. The first click must
    # start the job.
    picker.get_by_text("Advanced: another model").click()
    picker.get_by_test_id("model-custom").press_sequentially(str(tiny_model))
    button = page.get_by_role("button", name="Start training")
    button.scroll_into_view_if_needed()
    box = button.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.wait_for_timeout(400)
    page.mouse.up()
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]+$"), timeout=15_000)
    expect(page.get_by_test_id("status")).to_have_text("succeeded", timeout=180_000)
    # Two steps: the chart's x axis names each step once.
    ticks = page.get_by_test_id("loss-chart").locator("svg text[text-anchor='middle']")
    assert ticks.all_text_contents() == ["1", "2"]


def test_cancel_asks_first_then_stops_and_offers_resume_and_export(
    page: Page, api: httpx.Client, tiny_model: Path
) -> None:
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(16))
    config = tiny_config(tiny_model, max_steps=1_000, checkpoint_every=1_000)
    job = start_job(api, project["id"], dataset["id"], config)
    waiting = start_job(api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=2))

    page.goto(f"/jobs/{waiting['id']}")
    expect(page.get_by_test_id("queue-wait")).to_contain_text("Waiting behind 1 job")

    page.goto(f"/jobs/{job['id']}")
    expect(page.get_by_test_id("status")).to_have_text("running", timeout=60_000)
    expect(page.get_by_role("heading", name="Export")).to_have_count(0)
    asked: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.get_by_test_id("cancel").click()
    wait_for(lambda: asked, 10, what="the confirmation")
    assert "keeps what it trained" in asked[0]
    page.wait_for_timeout(1_000)
    assert api.get(f"/jobs/{job['id']}").json()["cancel_requested_at"] is None

    # A job stopped before its first step has trained nothing, so keeps no checkpoint: on a
    # busy machine, loading alone can outlast the dialog above.
    wait_for(
        lambda: api.get(f"/jobs/{job['id']}").json()["current_step"] >= 1,
        60,
        what="the first step",
    )
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("status")).to_have_text("cancelled", timeout=30_000)
    stopped = page.get_by_test_id("stopped-with-checkpoint")
    expect(stopped).to_contain_text("checkpoint-")

    stopped.get_by_test_id("export-trained").click()
    expect(page.get_by_test_id("export-row")).to_contain_text("succeeded", timeout=180_000)
    expect(page.get_by_test_id("export-download")).to_be_visible()

    page.get_by_test_id("resume").click()
    expect(page.get_by_test_id("status")).to_have_text(re.compile("queued|running"))
    api.post(f"/jobs/{job['id']}/cancel")
    wait_for_status(api, job["id"], timeout=60)
    wait_for_status(api, waiting["id"], timeout=120)
