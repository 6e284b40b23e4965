"""`tunelab eval …`: the evaluation commands against a live server and worker, over HTTP with
an API token, and the table they print."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli.evaluations import MARKS, display_width, results_table
from tests.api.test_evaluations_api import train_and_evaluate
from tests.factories import (
    create_project,
)
from tests.live import api_client, free_port, tunelab

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = ["rougeL >= 0.99", "perplexity improves on baseline by >= 0.5", "human win rate >= 60%"]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tunelab("eval", *args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def env(cluster: Any, admin_token: str) -> dict[str, str]:
    return {**os.environ, "TUNELAB_URL": cluster.url, "TUNELAB_TOKEN": admin_token}


@pytest.fixture(scope="module")
def evaluated(cluster: Any, admin_token: str, tiny_model: Path) -> dict[str, Any]:
    """A project with criteria, a job trained on a 20%-test dataset, and its evaluation."""
    with api_client(cluster.url, admin_token) as api:
        trained = train_and_evaluate(api, tiny_model, CRITERIA)
        assert trained["evaluation"]["status"] == "succeeded", trained["evaluation"]["error"]
        return trained


def assert_verdict_printed(evaluation: dict[str, Any], out: str) -> None:
    """Each criterion on its own line after its mark, and the overall verdict."""
    for v in evaluation["verdict"]:
        line = rf"^  {re.escape(MARKS[v['status']])} +{re.escape(v['criterion'])}: "
        assert re.search(line, out, flags=re.M), (line, out)
    status = evaluation["verdict_summary"]["status"].replace("_", " ")
    assert f"\nverdict: {status} (" in out


def test_run_with_wait_prints_the_id_the_table_and_the_verdict(
    api: httpx.Client, env: dict[str, str], evaluated: dict[str, Any]
) -> None:
    job = evaluated["job"]
    result = cli(
        "run",
        "--job",
        job["id"],
        "--max-samples",
        "3",
        "--max-new-tokens",
        "4",
        "--wait",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    evaluation_id = result.stdout.splitlines()[0]
    evaluation = api.get(f"/evaluations/{evaluation_id}").json()
    assert evaluation["project_id"] == evaluated["project"]["id"]
    assert evaluation["results"]["n"] == 3
    assert "3 examples" in result.stdout and "up to 4 new tokens" in result.stdout
    for candidate in evaluation["candidates"]:
        assert candidate["label"] in result.stdout
    assert result.stdout.count("Δ vs baseline") == 1
    assert_verdict_printed(evaluation, result.stdout)
    assert "human win rate >= 60%: waits for human review" in result.stdout
    assert "succeeded" in result.stderr  # the progress bar's last state


def test_show_prints_values_with_intervals_at_each_metrics_precision(
    env: dict[str, str], evaluated: dict[str, Any]
) -> None:
    evaluation = evaluated["evaluation"]
    result = cli("show", evaluation["id"], env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"evaluation {evaluation['id']} · succeeded · test split, 8 examples")
    baseline_row = next(line for line in out.splitlines() if line.startswith("Base model"))
    fraction = r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]"
    two_places = r"\d+\.\d{2} \[\d+\.\d{2}, \d+\.\d{2}\]"
    assert re.search(rf"^Base model.*?{two_places}  +{fraction}", baseline_row), baseline_row
    delta_row = next(line for line in out.splitlines() if "Δ vs baseline" in line)
    assert re.search(r"[+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", delta_row), delta_row
    assert_verdict_printed(evaluation, out)
    assert re.search(r"✘ not met +rougeL >= 0.99: rougeL 0.\d{3} < 0.990 \(short by", out), out

    raw = cli("show", evaluation["id"], "--json", env=env)
    assert json.loads(raw.stdout)["results"] == evaluation["results"]


def test_report_shows_the_newest_finished_evaluation_and_its_verdict(
    api: httpx.Client, env: dict[str, str], evaluated: dict[str, Any]
) -> None:
    project_id = evaluated["project"]["id"]
    report = api.get(f"/projects/{project_id}/report").json()
    result = cli("report", project_id, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"evaluation {report['evaluation']['id']} · succeeded")
    assert_verdict_printed(report, result.stdout)
    assert json.loads(cli("report", project_id, "--json", env=env).stdout) == report


def test_report_of_a_project_without_evaluations_says_so(
    api: httpx.Client, env: dict[str, str]
) -> None:
    project = create_project(api, name="not evaluated yet", success_criteria=["bleu >= 20"])
    result = cli("report", project["id"], env=env)
    assert result.returncode == 0, result.stderr
    assert "no finished evaluation yet" in result.stdout


def test_list_shows_a_jobs_evaluations(env: dict[str, str], evaluated: dict[str, Any]) -> None:
    result = cli("list", "--job", evaluated["job"]["id"], env=env)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["id", "status", "created", "models"]
    row = next(r for r in rows if r.startswith(evaluated["evaluation"]["id"]))
    assert "succeeded" in row and "Base model + prompt" in row and "Fine-tuned" in row


def test_samples_worse_lists_exactly_the_samples_the_fine_tuned_model_did_worse_on(
    api: httpx.Client, env: dict[str, str], evaluated: dict[str, Any]
) -> None:
    eid = evaluated["evaluation"]["id"]
    worse = api.get(f"/evaluations/{eid}/samples", params={"show": "worse"}).json()
    result = cli("samples", eid, "--show", "worse", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{worse['total']} samples (show=worse")
    shown = re.findall(r"^#(\d+)  Δ rougeL (\S+)$", result.stdout, flags=re.M)
    assert [int(p) for p, _ in shown] == [s["position"] for s in worse["items"]]
    assert all(delta.startswith("-") for _, delta in shown)
    for sample in worse["items"]:
        assert f"reference  {sample['reference']}" in result.stdout

    everything = cli("samples", eid, "--limit", "100", env=env)
    assert everything.stdout.startswith("8 samples") and everything.stdout.count("\n#") == 8


def test_export_writes_the_csv_as_received_and_json_to_stdout(
    env: dict[str, str], evaluated: dict[str, Any], tmp_path: Path
) -> None:
    eid = evaluated["evaluation"]["id"]
    target = tmp_path / "evaluation.csv"
    result = cli("export", eid, "--format", "csv", "-o", str(target), env=env)
    assert result.returncode == 0, result.stderr
    data = target.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")  # the BOM that makes Excel read UTF-8
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert len(rows) == 9 and rows[0][:3] == ["position", "prompt", "reference"]
    assert not list(tmp_path.glob("*.part"))

    document = json.loads(cli("export", eid, env=env).stdout)
    assert len(document["samples"]) == 8


def test_a_refused_request_prints_the_field_and_exits_2(
    env: dict[str, str], evaluated: dict[str, Any]
) -> None:
    result = cli("run", "--project", evaluated["project"]["id"], env=env)
    assert result.returncode == 2
    assert "error: name a finished job" in result.stderr
    assert "  models: give job_id or at least one model" in result.stderr
    assert result.stdout == ""


def test_a_bad_checkpoint_names_the_ones_there_are(
    env: dict[str, str], evaluated: dict[str, Any]
) -> None:
    job_id = evaluated["job"]["id"]
    result = cli("run", "--job", job_id, "--checkpoint", f"{job_id}:99", env=env)
    assert result.returncode == 2
    assert "models.0.checkpoint: " in result.stderr and "checkpoint-99" in result.stderr


def test_an_unknown_evaluation_and_a_finished_cancel_exit_2(
    env: dict[str, str], evaluated: dict[str, Any]
) -> None:
    missing = cli("show", str(uuid.uuid4()), env=env)
    assert missing.returncode == 2 and "not found" in missing.stderr
    cancel = cli("cancel", evaluated["evaluation"]["id"], env=env)
    assert cancel.returncode == 2
    assert "error: the evaluation has already succeeded" in cancel.stderr


def test_no_token_or_a_bad_one_exits_2_saying_how_to_get_one(env: dict[str, str]) -> None:
    without = {k: v for k, v in env.items() if k != "TUNELAB_TOKEN"}
    result = cli("list", env=without)
    assert result.returncode == 2
    assert "no API token" in result.stderr and "tunelab token create" in result.stderr
    bad = cli("list", "--token", "tl_not-a-real-token", env=without)
    assert bad.returncode == 2
    assert "not valid" in bad.stderr and "tunelab token create" in bad.stderr


def test_an_unreachable_server_exits_2_suggesting_tunelab_serve(env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("show", str(uuid.uuid4()), "--url", url, env=env)
    assert result.returncode == 2
    assert f"cannot reach tunelab at {url}: is `tunelab serve` running?" in result.stderr


def test_the_table_lines_up_chinese_labels_by_display_width() -> None:
    interval = {"value": 0.5, "low": 0.25, "high": 0.75, "n": 8}
    bleu = {"value": 12.345, "low": 10.0, "high": 14.5, "n": 8}
    evaluation = {
        "candidates": [
            {"key": "baseline", "label": "基线（提示词）"},
            {"key": "ft", "label": "FT"},
        ],
        "results": {
            "baseline": "baseline",
            "models": {
                "baseline": {"bleu": bleu, "rougeL": interval},
                "ft": {"bleu": bleu, "rougeL": interval},
            },
            "deltas": {"ft": {"bleu": bleu, "rougeL": {**interval, "low": -0.25}}},
        },
    }
    lines = results_table(evaluation)
    rows = [line for line in lines if line.endswith("]")]
    assert len(rows) == 3
    assert rows[0].startswith("基线（提示词）") and "12.35 [10.00, 14.50]" in rows[0]
    assert "0.500 [0.250, 0.750]" in rows[0] and "+0.500 [-0.250, +0.750]" in rows[2]
    # Every cell ends in the same terminal column, whatever the label's script.
    ends = [[display_width(row[: i + 1]) for i, c in enumerate(row) if c == "]"] for row in rows]
    assert ends[0] == ends[1] == ends[2], rows
    assert display_width("基线") == 4 and display_width("e\u0301") == 1
