"""The evaluation report and an evaluation's answers in a real browser: the verdict, the
models × metrics table with intervals, filtering answers, and starting an evaluation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.api.test_evaluations_api import NOT_MET, train_and_evaluate
from tests.live import LiveServer, api_client


@pytest.fixture(scope="module")
def evaluated(cluster: LiveServer, admin_token: str, tiny_model: Path) -> dict[str, Any]:
    with api_client(cluster.url, admin_token) as api:
        return train_and_evaluate(api, tiny_model, NOT_MET)


def test_the_report_shows_the_verdict_table_and_chart(
    page: Page, evaluated: dict[str, Any]
) -> None:
    project = evaluated["project"]
    page.goto(f"/projects/{project['id']}")
    page.get_by_test_id("report-link").click()
    expect(page).to_have_url(re.compile(r"/report$"))
    expect(page.get_by_test_id("verdict-summary")).to_have_text("not met")
    statuses = page.get_by_test_id("criterion").evaluate_all(
        "items => items.map(i => i.dataset.status)"
    )
    assert statuses == ["not_met", "met", "pending"]
    expect(page.get_by_test_id("criterion").first).to_contain_text("short by")
    # The status is said once, beside the explanation ("— met met: rougeL …" once read twice).
    for text in page.get_by_test_id("criterion").all_inner_texts():
        assert "met met" not in text and "met: " not in text, text
    expect(page.get_by_test_id("model-row")).to_have_count(2)
    expect(page.get_by_test_id("delta-row")).to_have_count(1)
    expect(page.get_by_test_id("metrics-table")).to_contain_text("ROUGE-L")
    # All seven metrics with their intervals fit a 1280-pixel window: no sideways scrolling
    # that cuts the difference row's last interval at the edge.
    page.set_viewport_size({"width": 1280, "height": 800})
    widths = page.get_by_test_id("metrics-table").evaluate(
        "t => [t.scrollWidth, t.parentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    expect(page.locator("[data-testid=interval-chart] circle")).not_to_have_count(0)
    href = page.get_by_test_id("download-csv").get_attribute("href")
    assert href and href.endswith("format=csv")


def test_answers_can_be_filtered_to_where_fine_tuning_did_worse(
    page: Page, evaluated: dict[str, Any]
) -> None:
    page.goto(f"/evaluations/{evaluated['evaluation']['id']}")
    expect(page.get_by_test_id("sample")).to_have_count(8)
    page.get_by_label("Show").select_option("worse")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"show=worse"))
    for delta in page.get_by_test_id("sample-delta").all_inner_texts():
        assert float(delta.removeprefix("Δ ")) < 0
    page.get_by_label("Show").select_option("all")
    page.get_by_label("search").fill("(3)")
    page.get_by_role("button", name="Filter").click()
    for text in page.locator("[data-testid=sample] .prompt").all_inner_texts():
        assert "(3)" in text


def test_an_evaluation_started_from_the_report_runs_and_shows_results(
    page: Page, evaluated: dict[str, Any], tiny_model: Path
) -> None:
    project = evaluated["project"]
    page.goto(f"/projects/{project['id']}/report")
    # The base-only form's own defaults are a request the server takes: the project's base
    # model filled in (a value, not a placeholder that looks like one) and its newest data.
    base_model = page.get_by_label("Base model (when no job is chosen)")
    expect(base_model).to_have_value(str(tiny_model))
    assert base_model.get_attribute("placeholder") == "a catalog name, a hub id or a model folder"
    page.get_by_label("At most this many test examples").fill("2")
    page.get_by_label("Longest answer, in tokens").fill("3")
    page.get_by_role("button", name="Queue evaluation").click()
    expect(page).to_have_url(re.compile(r"/evaluations/[0-9a-f-]+$"))
    # The page reloads itself when the evaluation is done.
    expect(page.get_by_test_id("status")).to_have_text("succeeded", timeout=120_000)
    expect(page.get_by_test_id("model-row")).to_have_count(1)
    expect(page.get_by_test_id("sample")).to_have_count(2)
