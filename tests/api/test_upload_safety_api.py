"""Hostile uploads through the API, real HTTP against the cluster server: a zip-bomb workbook
is refused before it is unpacked and leaves nothing behind; a formula in a column name comes
back from errors.csv as text, not as a formula."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import httpx
import pytest

from tests.api.test_datasets_api import dataset_rows, leftover_uploads
from tests.factories import create_project, upload
from tests.zip_bombs import bomb_workbook

FORMULA = '=HYPERLINK("http://x","y")'


@pytest.fixture
def project(api: httpx.Client) -> dict:
    return create_project(api)


def staged_files() -> set[str]:
    folder = Path(os.environ["TUNELAB_DATA_DIR"]) / "uploads" / "staged"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_zip_bomb_workbook_upload_is_refused_and_leaves_nothing(
    api: httpx.Client, project: dict, tmp_path: Path
) -> None:
    bomb = bomb_workbook(tmp_path).read_bytes()  # some 70 KB, 50 MB of rows unpacked
    before, staged = dataset_rows(), staged_files()
    response = upload(api, project["id"], bomb, filename="客户问答.xlsx")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"] == [{"line": 1, "field": None, "message": body["errors"][0]["message"]}]
    message = body["errors"][0]["message"]
    assert "this workbook is packed far more tightly than real spreadsheets are" in message
    assert "export the sheet as CSV" in message
    assert "客户问答.xlsx cannot be read" in body["detail"]
    assert dataset_rows() == before, "no dataset row for a refused file"
    assert leftover_uploads() == [], "no partial or temporary file"
    assert staged_files() == staged, "nothing kept for a retry: no choice could make it readable"


def test_errors_csv_of_a_mapping_naming_a_formula_column_holds_it_as_text(
    api: httpx.Client, project: dict
) -> None:
    refused = upload(
        api,
        project["id"],
        "问题,答案\n北京是哪个国家的首都？,中国。\n".encode(),
        filename="faq.csv",
        mapping=json.dumps({"prompt": FORMULA, "completion": "答案"}, ensure_ascii=False),
    )
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["errors"][0]["field"] == FORMULA  # the API answer is JSON: left as given
    table = api.get(f"/uploads/{body['upload_id']}/errors.csv")
    assert table.status_code == 200
    assert table.content.startswith("\ufeff".encode()), "Excel needs the BOM for Chinese"
    rows = list(csv.reader(io.StringIO(table.content.decode("utf-8-sig"))))
    assert rows[0] == ["line", "field", "message"]
    assert rows[1][:2] == ["1", "'" + FORMULA]
    assert "问题" in rows[1][2]
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)
