"""The data step through the API: upload → column mapping → import with a split; errors kept
and downloadable; dropping invalid rows as an explicit, recorded choice; versions that are
content-addressed; cleaning and re-splitting into new versions with lineage; records, token
statistics and previews. Real HTTP against the cluster server, real Postgres."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.core.db import get_sessionmaker
from app.models import Dataset, DatasetUpload
from tests.api.test_security import make_user, token_for
from tests.factories import (
    SHARED_DATA,
    alpaca_records,
    create_project,
    import_upload,
    jsonl,
    stage,
    tiny_config,
    upload,
    wait_for_status,
)
from tests.live import LiveServer


def dataset_rows() -> int:
    with get_sessionmaker()() as session:
        return session.scalar(select(func.count()).select_from(Dataset)) or 0


@pytest.fixture
def project(api: httpx.Client) -> dict:
    return create_project(api)


def numbered(n: int) -> list[dict[str, str]]:
    return [
        {
            "instruction": f"第 {i} 个问题：{i} 加 {i} 等于几？",
            "input": "",
            "output": f"等于 {2 * i}。",
        }
        for i in range(n)
    ]


def messages_of(api: httpx.Client, dataset_id: str, number: int, split: str) -> list[list[dict]]:
    page = api.get(
        f"/datasets/{dataset_id}/versions/{number}/records",
        params={"split": split, "limit": 200},
    ).json()
    return [r["messages"] for r in page["items"]]


def test_csv_with_own_columns_goes_through_the_mapping_step(
    api: httpx.Client, project: dict
) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(["问题", "参考答案", "备注"])
    for i in range(40):
        writer.writerow([f"问题 {i}：北京是哪个国家的首都？", f"中国。（{i}）", "x"])
    staged = stage(api, project["id"], ("\ufeff" + buf.getvalue()).encode(), "faq.csv")
    assert staged["container"] == "csv"
    assert staged["columns"] == ["问题", "参考答案", "备注"]
    assert staged["sample"][0]["问题"].startswith("问题 0")
    assert staged["status"] == "staged"

    response = import_upload(
        api, staged["id"], name="FAQ", mapping={"prompt": "问题", "completion": "参考答案"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    version = body["versions"][0]
    assert body["records"] == 40
    assert version["split"]["counts"] == {"train": 36, "validation": 2, "test": 2}
    assert version["lineage"]["operation"] == "upload"
    every = [
        m
        for split in ("train", "validation", "test")
        for m in messages_of(api, body["id"], 1, split)
    ]
    assert [
        {"role": "user", "content": "问题 0：北京是哪个国家的首都？"},
        {"role": "assistant", "content": "中国。（0）"},
    ] in every
    assert api.get(f"/uploads/{staged['id']}").json()["status"] == "imported"


def test_a_mapping_naming_a_missing_column_is_one_clear_error(
    api: httpx.Client, project: dict
) -> None:
    staged = stage(api, project["id"], b"question,answer\nhi,hello\n", "qa.csv")
    before = dataset_rows()
    response = import_upload(
        api, staged["id"], mapping={"prompt": "question", "completion": "reply"}
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert "reply" in body["detail"] and "answer" in body["detail"]
    assert dataset_rows() == before


def test_errors_are_kept_downloadable_and_dropping_invalid_rows_is_recorded(
    api: httpx.Client, project: dict
) -> None:
    records: list[dict] = alpaca_records(300)
    for r in records[:250]:
        r["output"] = ""
    before = dataset_rows()
    refused = upload(api, project["id"], jsonl(records))
    assert refused.status_code == 422
    body = refused.json()
    assert body["error_count"] == 250 and len(body["errors"]) == 200
    assert body["valid_records"] == 50
    assert dataset_rows() == before

    upload_id = body["upload_id"]
    kept = api.get(f"/uploads/{upload_id}").json()
    assert kept["status"] == "invalid" and kept["error_count"] == 250
    table = api.get(f"/uploads/{upload_id}/errors.csv")
    assert table.status_code == 200
    rows = list(csv.reader(io.StringIO(table.content.decode("utf-8-sig"))))
    assert rows[0] == ["line", "field", "message"]
    assert len(rows) == 251, "every error, not only the listed 200"
    assert rows[1][:2] == ["1", "output"]

    retried = import_upload(api, upload_id, drop_invalid=True)
    assert retried.status_code == 201, retried.text
    version = retried.json()["versions"][0]
    assert version["records"] == 50
    assert version["dropped_invalid"] == 250
    assert version["lineage"]["removed"]["invalid"] == 250
    assert version["lineage"]["options"]["drop_invalid"] is True


def test_zero_valid_rows_are_never_accepted_even_when_dropping(
    api: httpx.Client, project: dict
) -> None:
    records = [{"instruction": "x", "input": "", "output": ""}] * 5
    staged = stage(api, project["id"], jsonl(records))
    response = import_upload(api, staged["id"], drop_invalid=True)
    assert response.status_code == 422
    assert response.json()["valid_records"] == 0


def test_same_file_and_choices_are_one_version_and_the_split_is_deterministic(
    api: httpx.Client, project: dict
) -> None:
    content = jsonl(numbered(200))
    first = upload(api, project["id"], content).json()
    assert first["versions"][0]["split"]["counts"] == {"train": 180, "validation": 10, "test": 10}
    again = upload(api, project["id"], content, dataset_id=first["id"]).json()
    assert again["version_id"] == first["version_id"]

    # Another dataset from the same bytes and seed holds exactly the same test records.
    other = upload(api, project["id"], content).json()
    assert messages_of(api, other["id"], 1, "test") == messages_of(api, first["id"], 1, "test")

    reseeded = upload(api, project["id"], content, dataset_id=first["id"], seed="7").json()
    assert reseeded["version"] == 2
    assert messages_of(api, first["id"], 2, "test") != messages_of(api, first["id"], 1, "test")
    everything = sorted(
        json.dumps(m, ensure_ascii=False)
        for split in ("train", "validation", "test")
        for m in messages_of(api, first["id"], 2, split)
    )
    assert len(everything) == len(set(everything)) == 200


def test_separate_validation_and_test_files_are_the_split(api: httpx.Client, project: dict) -> None:
    response = api.post(
        f"/projects/{project['id']}/datasets",
        files={
            "file": ("train.jsonl", jsonl(numbered(30)), "application/octet-stream"),
            "validation_file": ("val.jsonl", jsonl(numbered(4)), "application/octet-stream"),
            "test_file": ("test.jsonl", jsonl(alpaca_records(6)), "application/octet-stream"),
        },
    )
    assert response.status_code == 201, response.text
    version = response.json()["versions"][0]
    assert version["split"]["method"] == "files"
    assert version["split"]["counts"] == {"train": 30, "validation": 4, "test": 6}


def test_cleaning_makes_a_new_version_with_lineage_and_leaves_the_old_one(
    api: httpx.Client, project: dict
) -> None:
    records = numbered(60)
    records += records[:20]  # 20 duplicates, some of them copies of held-out records
    records.append({"instruction": "长" * 3000, "input": "", "output": "好。"})
    dataset = upload(api, project["id"], jsonl(records)).json()
    v1 = dataset["versions"][0]
    assert v1["records"] == 81
    held_out = messages_of(api, dataset["id"], 1, "test")

    response = api.post(
        f"/datasets/{dataset['id']}/versions/1/clean", json={"dedupe": True, "max_chars": 2000}
    )
    assert response.status_code == 201, response.text
    v2 = response.json()
    assert v2["number"] == 2 and v2["parent_id"] == v1["id"]
    assert v2["lineage"]["removed"]["duplicates"] == 20
    assert v2["lineage"]["removed"]["too_long"] == 1
    assert v2["records"] == 60
    unique_held_out = [m for i, m in enumerate(held_out) if m not in held_out[:i]]
    assert messages_of(api, dataset["id"], 2, "test") == unique_held_out
    train = {json.dumps(m) for m in messages_of(api, dataset["id"], 2, "train")}
    assert not train & {json.dumps(m) for m in held_out}, "a test record leaked into train"
    assert api.get(f"/datasets/{dataset['id']}/versions/1").json()["records"] == 81

    nothing = api.post(f"/datasets/{dataset['id']}/versions/2/clean", json={"dedupe": True})
    assert nothing.status_code == 422
    assert "nothing to clean" in nothing.json()["detail"]


def test_resplit_makes_a_new_version(api: httpx.Client, project: dict) -> None:
    dataset = upload(api, project["id"], jsonl(numbered(100))).json()
    response = api.post(
        f"/datasets/{dataset['id']}/versions/1/split", json={"validation": 0.1, "test": 0.2}
    )
    assert response.status_code == 201, response.text
    assert response.json()["split"]["counts"] == {"train": 70, "validation": 10, "test": 20}
    refused = api.post(
        f"/datasets/{dataset['id']}/versions/1/split", json={"validation": 0.6, "test": 0.5}
    )
    assert refused.status_code == 422


def test_records_download_and_preview_as_training_sees_it(api: httpx.Client, project: dict) -> None:
    dataset = upload(api, project["id"], jsonl(numbered(40))).json()
    base = f"/datasets/{dataset['id']}/versions/1"
    page = api.get(f"{base}/records", params={"split": "train", "limit": 5, "offset": 5}).json()
    assert page["total"] == 36 and [r["index"] for r in page["items"]] == [5, 6, 7, 8, 9]

    download = api.get(f"{base}/download", params={"split": "test"})
    assert download.status_code == 200
    assert len(download.content.decode().splitlines()) == 2

    shown = api.get(f"{base}/preview", params={"tokenizer": "qwen3", "index": 3})
    assert shown.status_code == 200, shown.text
    body = shown.json()
    text = "".join(p["text"] for p in body["pieces"])
    answer = "".join(p["text"] for p in body["pieces"] if p["loss"])
    record = api.get(f"{base}/records", params={"offset": 3, "limit": 1}).json()["items"][0]
    assert record["messages"][0]["content"] in text
    assert record["messages"][1]["content"] in answer
    assert record["messages"][0]["content"] not in answer
    assert body["loss_tokens"] > 0 and body["truncated_tokens"] == 0

    cut = api.get(f"{base}/preview", params={"tokenizer": "qwen3", "max_seq_length": 16}).json()
    assert cut["truncated_tokens"] > 0
    assert any(p["truncated"] for p in cut["pieces"])


def test_token_statistics_with_a_tokenizer_are_kept_on_the_version(
    api: httpx.Client, project: dict
) -> None:
    dataset = upload(api, project["id"], jsonl(numbered(30))).json()
    base = f"/datasets/{dataset['id']}/versions/1"
    chars = api.get(f"{base}/stats").json()
    assert chars["unit"] == "characters"
    tokens = api.get(f"{base}/stats", params={"tokenizer": "qwen3", "max_seq_length": 32})
    assert tokens.status_code == 200, tokens.text
    stats = tokens.json()
    assert stats["unit"] == "tokens"
    assert stats["records"] == 30
    assert (
        api.get(f"{base}/stats", params={"tokenizer": "qwen3", "max_seq_length": 32}).json()
        == stats
    )
    names = {t["name"] for t in api.get("/tokenizers").json()}
    assert {"qwen3", "llama-3.2"} <= names
    unknown = api.get(f"{base}/stats", params={"tokenizer": "no-such-tokenizer"})
    assert unknown.status_code in (404, 422)


SHARED_FILES = [
    ("llamafactory-demo/alpaca_en_demo.json", "alpaca"),
    ("llamafactory-demo/alpaca_zh_demo.json", "alpaca"),
    ("llamafactory-demo/identity.json", "alpaca"),
    ("self-instruct/seed_tasks.jsonl", "self_instruct"),
    ("self-instruct/user_oriented_instructions.jsonl", "self_instruct"),
    ("gsm8k/test.jsonl", "prompt_completion"),
    ("samsum-subset/samsum_train_first200.jsonl", "prompt_completion"),
    ("belle-eval-zh/eval_set.jsonl", "prompt_completion"),
]


@pytest.mark.parametrize(("relative", "expected"), SHARED_FILES)
def test_every_shared_dataset_uploads_and_is_detected(
    api: httpx.Client, project: dict, relative: str, expected: str
) -> None:
    path = SHARED_DATA / relative
    staged = stage(api, project["id"], path.read_bytes(), path.name)
    assert staged["detected_format"] == expected
    response = import_upload(api, staged["id"])
    assert response.status_code == 201, response.text
    version = response.json()["versions"][0]
    assert version["format"] == expected
    stats = version["stats"]
    assert stats["records"] == version["records"] > 0
    assert stats["answer"]["max"] > 0 and stats["prompt"]["max"] > 0
    if "zh" in relative:
        assert stats["languages"]["zh"] > 0.8 * stats["records"]


@pytest.fixture
def trainer_api(api: httpx.Client, cluster: LiveServer) -> Iterator[httpx.Client]:
    """A trainer who is not a member of the admin's projects."""
    user = make_user(api, "trainer")
    token = token_for(cluster, user["email"])
    with httpx.Client(
        base_url=f"{cluster.url}/api/v1", headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield client


def test_another_project_cannot_see_or_import_an_upload(
    api: httpx.Client, project: dict, trainer_api: httpx.Client
) -> None:
    staged = stage(api, project["id"], jsonl(numbered(3)))
    assert trainer_api.get(f"/uploads/{staged['id']}").status_code == 404
    assert import_upload(trainer_api, staged["id"]).status_code == 404
    assert trainer_api.get(f"/uploads/{staged['id']}/errors.csv").status_code == 404
    with get_sessionmaker()() as session:
        assert session.get(DatasetUpload, uuid.UUID(staged["id"])) is not None


def test_a_job_points_at_the_version_it_names(
    api: httpx.Client, project: dict, tiny_model: Path
) -> None:
    dataset = upload(api, project["id"], jsonl(numbered(40) + numbered(10))).json()
    cleaned = api.post(f"/datasets/{dataset['id']}/versions/1/clean", json={"dedupe": True})
    assert cleaned.status_code == 201
    config = tiny_config(tiny_model, max_steps=1)
    body = {"project_id": project["id"], "dataset_id": dataset["id"], "config": config}
    newest = api.post("/jobs", json=body).json()
    assert newest["dataset_version_id"] == cleaned.json()["id"]
    first = api.post("/jobs", json={**body, "dataset_version": 1}).json()
    assert first["dataset_version_id"] == dataset["version_id"]
    missing = api.post("/jobs", json={**body, "dataset_version": 9})
    assert missing.status_code == 404
    for job in (newest, first):
        wait_for_status(api, job["id"])


BROKEN = Path(__file__).resolve().parents[1] / "data" / "broken"
REFUSED = sorted(
    p.name
    for p in BROKEN.iterdir()
    if p.name not in ("README.md", "mixed_formats.jsonl")  # mixed formats is a warning
)


@pytest.mark.parametrize("name", REFUSED)
def test_each_broken_file_gets_a_located_error_and_no_dataset(
    api: httpx.Client, project: dict, name: str
) -> None:
    before = dataset_rows()
    response = upload(api, project["id"], (BROKEN / name).read_bytes(), filename=name)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"] and body["errors"][0]["line"], body
    assert dataset_rows() == before
    assert api.get(f"/projects/{project['id']}").status_code == 200  # the server is fine


def test_generated_hostile_files_are_refused_and_the_server_stays_up(
    api: httpx.Client, project: dict
) -> None:
    from openpyxl import Workbook

    bomb = b'{"messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}\n"
    refused = upload(api, project["id"], bomb, filename="bomb.jsonl")
    assert refused.status_code == 422 and refused.json()["errors"][0]["line"] == 1

    book = Workbook()
    sheet = book.active
    sheet.append(["问题", "答案"])
    sheet.append(["一", "甲"])
    sheet.append(["二", "乙"])
    sheet.append(["三", ""])
    sheet.merge_cells("B3:B4")
    buf = io.BytesIO()
    book.save(buf)
    staged = stage(api, project["id"], buf.getvalue(), "merged.xlsx")
    merged = import_upload(api, staged["id"], mapping={"prompt": "问题", "completion": "答案"})
    assert merged.status_code == 422
    assert "B3:B4" in merged.text

    book = Workbook()
    sheet = book.active
    sheet.append(["问题", "答案", "备注"])
    for i in range(25):
        sheet.append([f"问题 {i}", f"答案 {i}", None])
    buf = io.BytesIO()
    book.save(buf)
    staged = stage(api, project["id"], buf.getvalue(), "faq.xlsx")
    assert staged["container"] == "xlsx" and staged["columns"][:2] == ["问题", "答案"]
    imported = import_upload(api, staged["id"], mapping={"prompt": "问题", "completion": "答案"})
    assert imported.status_code == 201, imported.text
    assert imported.json()["records"] == 25


def test_server_start_purges_week_old_uploads_and_frees_cut_off_imports(
    api: httpx.Client, project: dict
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from app.core.config import get_settings
    from app.core.db import utcnow
    from app.services.datasets.imports import purge_stale_uploads

    old = stage(api, project["id"], jsonl(numbered(3)))
    cut_off = stage(api, project["id"], jsonl(numbered(4)))
    with get_sessionmaker()() as session:
        session.execute(
            update(DatasetUpload)
            .where(DatasetUpload.id == uuid.UUID(old["id"]))
            .values(created_at=utcnow() - timedelta(days=8))
        )
        session.execute(
            update(DatasetUpload)
            .where(DatasetUpload.id == uuid.UUID(cut_off["id"]))
            .values(status="validating")
        )
        session.commit()
        purge_stale_uploads(session, settings=get_settings())
        session.commit()
    assert api.get(f"/uploads/{old['id']}").status_code == 404
    assert api.get(f"/uploads/{cut_off['id']}").json()["status"] == "staged"
    assert import_upload(api, cut_off["id"]).status_code == 201
