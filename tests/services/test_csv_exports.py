"""Every CSV tunelab writes keeps a cell such as `=HYPERLINK(...)` from running as a formula in
a spreadsheet: the one writer (app/core/csv_cells.py) and the files written through it. The
exports read their rows from Postgres, each test in a rolled-back transaction."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from app.core.csv_cells import safe_cell, safe_writer
from app.datasets.parsing import validate_file
from app.models import (
    DatasetUpload,
    DatasetVersion,
    EvalSample,
    Evaluation,
    Project,
    Rating,
    ReviewAssignment,
    ReviewCampaign,
    ReviewItem,
    User,
)
from app.services import evaluations
from app.services.datasets.imports import write_errors_csv
from app.services.evaluations.export import csv_rows
from app.services.reviews import results as review_results
from tests.services.rows import first_version

FORMULA = '=HYPERLINK("http://x","y")'
NEUTRAL = "'" + FORMULA
BOM = "\ufeff"


def rows_of(text: str) -> list[list[str]]:
    assert text.startswith(BOM), "a byte order mark, so that Excel reads the Chinese right"
    return list(csv.reader(io.StringIO(text.removeprefix(BOM))))


def assert_no_cell_starts_a_formula(rows: list[list[str]]) -> None:
    for row in rows:
        for cell in row:
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), row
            assert not cell.startswith("-") or cell.replace(".", "").lstrip("-").isdigit(), row


# --- The writer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell", [FORMULA, "+1+cmd|'/c calc'!A1", "-2+3", "@SUM(A1:A9)", "\t=1", "\r=1", "-", "="]
)
def test_a_cell_that_could_start_a_formula_gets_a_leading_quote(cell: str) -> None:
    assert safe_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["-0.25", "+3", "1e-5", "-1E+10", "-.5", "+3.", -3, 0.5, None])
def test_plain_numbers_stay_numbers(cell: object) -> None:
    assert safe_cell(cell) == cell


@pytest.mark.parametrize(
    "cell", ["把这句话翻译成英文。", "a = b", "'=already neutral", "", 'say "hi"']
)
def test_other_text_is_left_as_it_is(cell: str) -> None:
    assert safe_cell(cell) == cell


def test_copying_neutralised_rows_through_the_writer_again_changes_nothing() -> None:
    rows: list[list[object]] = [
        [FORMULA, "-0.25", "你好", "@x", 7],
        ["-", "+3", "", "=1+1", "a\nb"],
    ]
    once = io.StringIO()
    safe_writer(once).writerows(rows)
    twice = io.StringIO()
    safe_writer(twice).writerows(csv.reader(io.StringIO(once.getvalue())))
    assert twice.getvalue() == once.getvalue()
    assert next(csv.reader(io.StringIO(once.getvalue()))) == [NEUTRAL, "-0.25", "你好", "'@x", "7"]


# --- The files written through it ----------------------------------------------------------------


def test_the_errors_file_of_a_mapping_naming_a_formula_column_is_neutralised(
    tmp_path: Path,
) -> None:
    src = tmp_path / "qa.csv"
    src.write_text("question,answer\n你好,hello\n", encoding="utf-8")
    errors = tmp_path / "errors.csv"
    report = validate_file(
        src,
        format="columns",
        mapping={"prompt": FORMULA, "completion": "answer"},
        errors_file=errors,
    )
    assert report.errors[0].field == FORMULA  # the report itself keeps the name as given
    rows = rows_of(errors.read_text(encoding="utf-8"))
    assert rows[0] == ["line", "field", "message"]
    assert rows[1][:2] == ["1", NEUTRAL]
    assert_no_cell_starts_a_formula(rows)


def test_the_errors_file_merged_from_several_workers_is_neutralised_once(tmp_path: Path) -> None:
    src = tmp_path / "records.jsonl"
    records = [{FORMULA: "" if i % 2 else "问题", "answer": "答案"} for i in range(400)]
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    errors = tmp_path / "errors.csv"
    report = validate_file(
        src,
        format="columns",
        mapping={"prompt": FORMULA, "completion": "answer"},
        errors_file=errors,
        workers=2,  # each worker writes a part, copied into one file through the writer again
    )
    assert report.error_count == 200
    rows = rows_of(errors.read_text(encoding="utf-8"))
    assert len(rows) == 201
    assert {row[1] for row in rows[1:]} == {NEUTRAL}
    assert_no_cell_starts_a_formula(rows)


def test_the_listed_errors_of_an_upload_are_written_neutralised(tmp_path: Path) -> None:
    upload = DatasetUpload(
        errors=[
            {"line": 3, "field": FORMULA, "message": "`=1+1` 是空的"},
            {"line": None, "field": None, "message": "@everyone"},
        ]
    )
    dest = tmp_path / "errors.csv"
    write_errors_csv(upload, dest)
    rows = rows_of(dest.read_text(encoding="utf-8"))
    assert rows == [
        ["line", "field", "message"],
        ["3", NEUTRAL, "`=1+1` 是空的"],
        ["", "", "'@everyone"],
    ]


@pytest.fixture
def project(db_session: Session) -> Project:
    project = Project(name="客服助手")
    db_session.add(project)
    db_session.flush()
    return project


@pytest.fixture
def version(db_session: Session, project: Project) -> DatasetVersion:
    return first_version(db_session, project)


def test_the_evaluation_csv_neutralises_a_model_answer_that_starts_a_formula(
    db_session: Session, project: Project, version: DatasetVersion
) -> None:
    evaluation = Evaluation(
        project_id=project.id,
        dataset_version_id=version.id,
        candidates=[{"key": "base"}, {"key": "tuned"}],
    )
    db_session.add(evaluation)
    db_session.flush()
    db_session.add(
        EvalSample(
            evaluation_id=evaluation.id,
            position=0,
            messages=[{"role": "user", "content": "-3 加 5 等于几？"}],
            prompt="-3 加 5 等于几？",
            reference="2",
            outputs={"base": FORMULA, "tuned": "2"},
            scores={"base": {"exact_match": 0.0}, "tuned": {"exact_match": 1.0}},
            delta=-1.0,
        )
    )
    db_session.flush()
    samples = evaluations.all_samples(db_session, evaluation_id=evaluation.id)
    rows = rows_of("".join(csv_rows(evaluation, samples)))
    assert rows[0][:4] == ["position", "prompt", "reference", "base: answer"]
    assert rows[1] == ["0", "'-3 加 5 等于几？", "2", NEUTRAL, "0", "2", "1", "-1"]
    assert_no_cell_starts_a_formula(rows)


def test_the_review_ratings_csv_neutralises_a_model_answer_that_starts_a_formula(
    db_session: Session, project: Project
) -> None:
    reviewer = User(email="reviewer@tunelab.test", role="reviewer")
    campaign = ReviewCampaign(
        project_id=project.id,
        name="盲评",
        criteria=["accuracy"],
        model_a={"label": "@base"},
        model_b={"label": "tuned"},
    )
    db_session.add_all([reviewer, campaign])
    db_session.flush()
    item = ReviewItem(
        campaign_id=campaign.id, position=1, prompt="你好", answer_a=FORMULA, answer_b="你好！"
    )
    db_session.add(item)
    db_session.flush()
    assignment = ReviewAssignment(
        campaign_id=campaign.id, reviewer_id=reviewer.id, item_id=item.id, sequence=1
    )
    db_session.add(assignment)
    db_session.flush()
    db_session.add(
        Rating(
            assignment_id=assignment.id,
            campaign_id=campaign.id,
            item_id=item.id,
            reviewer_id=reviewer.id,
            choice="b",
            scores={"a": {"accuracy": 1}, "b": {"accuracy": 5}},
            comment="+1 for B",
        )
    )
    db_session.flush()
    export = review_results.export_rows(db_session, campaign=campaign)
    rows = rows_of("".join(review_results.csv_lines(export, list(campaign.criteria))))
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["answer_a"] == NEUTRAL
    assert (row["model_a"], row["comment"], row["answer_b"]) == ("'@base", "'+1 for B", "你好！")
    assert (row["a: accuracy"], row["b: accuracy"]) == ("1", "5")
    assert_no_cell_starts_a_formula(rows)
