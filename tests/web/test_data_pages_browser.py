"""The data step in a real browser: a spreadsheet-style CSV in Chinese goes through upload
(with a progress bar), the column mapping, import with a split, statistics, the records, a
preview with the loss tokens marked, and a cleaning step that makes a new version."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.web.conftest import upload_file


def faq_csv(n: int) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(["客户问题", "标准回复", "类别"])
    for i in range(n):
        writer.writerow(
            [f"我的订单 {i % 30} 什么时候发货？", f"您好，订单 {i % 30} 将在三天内发货。", "物流"]
        )
    return buf.getvalue().encode("utf-8")


def test_csv_is_mapped_imported_described_previewed_and_cleaned(page: Page, tmp_path: Path) -> None:
    page.goto("/projects")
    page.get_by_label("Name").fill("客服 support")
    page.get_by_role("button", name="Create project").click()
    project_url = page.url

    path = tmp_path / "faq.csv"
    path.write_bytes(faq_csv(60))  # 30 distinct questions, each twice
    upload_file(page, path)
    expect(page.get_by_test_id("sample")).to_contain_text("我的订单 0 什么时候发货？")

    mapping = page.get_by_test_id("mapping")
    mapping.get_by_label("Prompt / question").select_option("客户问题")
    mapping.get_by_label("Answer / completion").select_option("标准回复")
    page.get_by_label("Test %").fill("10")
    page.get_by_label("Validation %").fill("0")
    page.get_by_role("button", name="Validate and import").click()

    expect(page).to_have_url(re.compile(r"/datasets/[0-9a-f-]+\?version=1$"))
    expect(page.get_by_test_id("split-counts")).to_contain_text("train 54")
    expect(page.get_by_test_id("split-counts")).to_contain_text("test 6")
    expect(page.get_by_test_id("warnings")).to_contain_text("duplicate")
    expect(page.get_by_test_id("length-chart").locator("rect").first).to_be_attached()
    expect(page.get_by_test_id("records")).to_contain_text("什么时候发货")

    # Token statistics with a model's tokenizer.
    page.get_by_test_id("tokenizer-form").get_by_label("Count in").select_option("qwen3")
    page.get_by_test_id("tokenizer-form").get_by_role("button", name="Show").click()
    expect(page.get_by_test_id("stats-unit")).to_contain_text("tokens")

    # The preview marks the answer's tokens, which carry the loss.
    page.get_by_test_id("records").get_by_role("link", name="preview").first.click()
    preview = page.get_by_test_id("preview")
    expect(preview.locator("mark.loss").first).to_contain_text("发货")
    expect(preview).to_contain_text("什么时候发货？")
    page.get_by_label("Max sequence length").fill("16")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_test_id("preview").locator("del.truncated").first).to_be_attached()

    # Cleaning makes v2 without the duplicates; v1 stays.
    page.goto(project_url)
    page.get_by_test_id("datasets").get_by_role("link").first.click()
    page.get_by_test_id("clean-form").get_by_role("button", name="Make a cleaned version").click()
    expect(page).to_have_url(re.compile(r"\?version=2$"))
    expect(page.get_by_test_id("lineage")).to_contain_text("30 duplicates removed")
    expect(page.get_by_test_id("versions")).to_contain_text("v1")


def test_a_bad_file_shows_located_errors_a_download_and_the_drop_choice(
    page: Page, tmp_path: Path
) -> None:
    page.goto("/projects")
    page.get_by_label("Name").fill("bad data")
    page.get_by_role("button", name="Create project").click()
    lines = [
        '{"instruction": "问题一", "input": "", "output": "回答一"}',
        '{"instruction": "问题二", "input": "", "output": ""}',
        '{"instruction": "问题三", "input": "", "output": "回答三"}',
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    upload_file(page, path)
    page.get_by_role("button", name="Validate and import").click()
    error = page.get_by_test_id("import-error")
    expect(error).to_contain_text("line 2")
    expect(error.locator("td").nth(1)).to_contain_text("output")
    expect(page.get_by_test_id("errors-download")).to_be_visible()

    page.get_by_test_id("drop-invalid").check()
    page.get_by_role("button", name="Validate and import").click()
    expect(page.get_by_test_id("lineage")).to_contain_text("1 invalid rows dropped")
