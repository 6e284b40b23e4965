from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.core.db import get_sessionmaker
from app.models import Dataset, DatasetVersion
from tests.factories import alpaca_records, alpaca_zh_demo, create_project, jsonl, upload


def dataset_rows() -> int:
    with get_sessionmaker()() as session:
        return session.scalar(select(func.count()).select_from(Dataset)) or 0


def leftover_uploads() -> list[str]:
    """Partial or temporary files; a refused upload's own file is kept in `staged/` (with its
    errors, for download and a retry) and is not a leftover."""
    folder = Path(os.environ["TUNELAB_DATA_DIR"]) / "uploads"
    return sorted(p.name for p in folder.glob("*") if p.name != "staged") if folder.exists() else []


@pytest.fixture
def project(api: httpx.Client) -> dict:
    return create_project(api)


def test_upload_of_fifty_chinese_alpaca_records_is_accepted(
    api: httpx.Client, project: dict
) -> None:
    content = json.dumps(alpaca_zh_demo(50), ensure_ascii=False, indent=2).encode()
    response = upload(api, project["id"], content, filename="alpaca_zh_demo.json")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["records"] == 50
    assert body["format"] == "alpaca"
    assert body["versions"][0]["stats"]["answer"]["max"] > 0
    listed = api.get(f"/projects/{project['id']}/datasets").json()
    assert [d["id"] for d in listed["items"]] == [body["id"]]


def test_chat_format_upload_is_detected(api: httpx.Client, project: dict) -> None:
    records = [
        {
            "messages": [
                {"role": "user", "content": "你好"},
                {"role": "assistant", "content": "你好！"},
            ]
        }
    ] * 3
    response = upload(api, project["id"], jsonl(records))
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "chat"


def _assert_refused(response: httpx.Response, before: int, status: int = 422) -> dict:
    assert response.status_code == status, response.text
    assert dataset_rows() == before, "no dataset row may be written for a bad file"
    assert leftover_uploads() == [], "nothing of a bad upload may stay on disk"
    return response.json()


def test_upload_reports_line_of_invalid_json(api: httpx.Client, project: dict) -> None:
    lines = jsonl(alpaca_records(10)).decode().splitlines()
    lines[6] = '{"instruction": "broken", "output": '
    before = dataset_rows()
    body = _assert_refused(upload(api, project["id"], "\n".join(lines).encode()), before)
    assert body["errors"][0]["line"] == 7
    assert "line 7" in body["detail"]


def test_upload_reports_line_and_field_of_record_without_output(
    api: httpx.Client, project: dict
) -> None:
    records: list[dict] = alpaca_records(5)
    del records[3]["output"]
    before = dataset_rows()
    body = _assert_refused(upload(api, project["id"], jsonl(records)), before)
    assert body["errors"][0]["line"] == 4
    assert body["errors"][0]["field"] == "output"


def test_every_bad_line_is_reported_with_the_total(api: httpx.Client, project: dict) -> None:
    records: list[dict] = alpaca_records(300)
    for r in records:
        r["output"] = ""
    body = _assert_refused(upload(api, project["id"], jsonl(records)), dataset_rows())
    assert body["error_count"] == 300
    assert len(body["errors"]) == 200


def test_empty_file_is_refused(api: httpx.Client, project: dict) -> None:
    body = _assert_refused(upload(api, project["id"], b""), dataset_rows())
    assert "empty" in body["detail"]


def test_binary_file_is_refused(api: httpx.Client, project: dict) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20
    body = _assert_refused(upload(api, project["id"], png, filename="photo.jsonl"), dataset_rows())
    assert body["errors"][0]["line"] == 1


def test_file_over_the_size_cap_is_refused_with_413(api: httpx.Client, project: dict) -> None:
    cap = int(os.environ["TUNELAB_UPLOAD_MAX_BYTES"])
    big = jsonl(alpaca_records(1)) * (cap // 60 + 10)
    assert len(big) > cap
    body = _assert_refused(upload(api, project["id"], big), dataset_rows(), status=413)
    assert "limit" in body["detail"]


def test_upload_without_a_file_field_is_refused(api: httpx.Client, project: dict) -> None:
    response = api.post(f"/projects/{project['id']}/datasets", data={"name": "x"})
    assert response.status_code in (415, 422)


def test_upload_to_unknown_project_is_404(api: httpx.Client) -> None:
    response = upload(api, "00000000-0000-0000-0000-000000000000", jsonl(alpaca_records(2)))
    assert response.status_code == 404
    assert leftover_uploads() == []


def test_same_file_twice_is_one_version(api: httpx.Client, project: dict) -> None:
    content = jsonl(alpaca_records(4))
    first = upload(api, project["id"], content).json()
    again = upload(api, project["id"], content, dataset_id=first["id"])
    assert again.status_code == 201
    assert again.json()["version_id"] == first["version_id"]
    newer = upload(api, project["id"], jsonl(alpaca_records(5)), dataset_id=first["id"]).json()
    assert newer["version"] == 2
    with get_sessionmaker()() as session:
        count = session.scalar(
            select(func.count())
            .select_from(DatasetVersion)
            .where(DatasetVersion.dataset_id == first["id"])
        )
    assert count == 2


def test_unknown_format_override_is_refused(api: httpx.Client, project: dict) -> None:
    body = _assert_refused(
        upload(api, project["id"], jsonl(alpaca_records(2)), format="csv-ish"), dataset_rows()
    )
    assert body["errors"][0]["field"] == "format"
