"""Embedded mode: `tunelab serve` with no settings at all — SQLite, an embedded broker, and a
worker process of its own — as the README's first command starts it."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.factories import (
    alpaca_records,
    create_dataset,
    create_project,
    import_upload,
    jsonl,
    stage,
    start_job,
    tiny_config,
    upload,
    wait_for_status,
)
from tests.live import embedded_api, embedded_env, free_port, start_server, wait_for

# Real processes started by the tests themselves.
pytestmark = pytest.mark.e2e


def test_embedded_serve_trains_a_job_end_to_end_on_sqlite(tmp_path: Path, tiny_model: Path) -> None:
    data = tmp_path / "data"
    server = start_server(port=free_port(), env=embedded_env(data), log=tmp_path / "serve.log")
    try:
        with embedded_api(server, embedded_env(data)) as api:
            project = create_project(api)
            dataset = create_dataset(api, project["id"], alpaca_records(8))
            job = start_job(api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=4))
            done = wait_for_status(api, job["id"])
            assert done["status"] == "succeeded", f"{done['error']}\n{server.tail()}"
    finally:
        server.stop()
    # Ctrl-C (SIGINT, what stop() sends) ends serve quietly: no traceback, exit status 0.
    assert server.process.returncode == 0, server.tail()
    assert "Traceback" not in server.log.read_text()
    assert (data / "tunelab.db").is_file() and (data / "broker.db").is_file()
    with sqlite3.connect(data / "tunelab.db") as db:
        steps = db.execute("select count(*) from metric_points where name = 'loss'").fetchone()[0]
    assert steps == 4


def test_embedded_serve_evaluates_a_finished_job_and_searches_its_chinese_answers(
    tmp_path: Path, tiny_model: Path
) -> None:
    data = tmp_path / "data"
    server = start_server(port=free_port(), env=embedded_env(data), log=tmp_path / "serve.log")
    try:
        with embedded_api(server, embedded_env(data)) as api:
            project = create_project(api, success_criteria=["rougeL >= 0.5"])
            staged = stage(api, project["id"], jsonl(alpaca_records(20)))
            dataset = import_upload(api, staged["id"], split={"validation": 0, "test": 0.25}).json()
            config = tiny_config(tiny_model, max_steps=4)
            job = start_job(api, project["id"], dataset["id"], config, evaluate=True)
            assert wait_for_status(api, job["id"])["status"] == "succeeded", server.tail()

            def finished() -> dict | None:
                items = api.get("/evaluations", params={"job_id": job["id"]}).json()["items"]
                done = items and items[0]["status"] in ("succeeded", "failed")
                return items[0] if done else None

            evaluation = wait_for(finished, 180, what="the evaluation")
            assert evaluation["status"] == "succeeded", f"{evaluation['error']}\n{server.tail()}"
            assert evaluation["results"]["n"] == 5
            # Chinese text is searchable on SQLite too (JSON columns would escape it).
            found = api.get(
                f"/evaluations/{evaluation['id']}/samples", params={"q": "翻译成中文"}
            ).json()
            assert found["total"] >= 1
            assert all("翻译成中文" in s["prompt"] for s in found["items"])
    finally:
        server.stop()


def test_embedded_import_keeps_errors_and_a_retry_drops_invalid_rows(tmp_path: Path) -> None:
    """The upload's progress and errors are written in their own transactions while the import
    runs: on SQLite that must not lock the import out."""
    data = tmp_path / "data"
    env = embedded_env(data)
    server = start_server(
        port=free_port(), env=env, log=tmp_path / "serve.log", extra_args=["--no-worker"]
    )
    try:
        with embedded_api(server, env) as api:
            project = create_project(api)
            records: list[dict] = alpaca_records(30)
            records[3]["output"] = ""
            refused = upload(api, project["id"], jsonl(records))
            assert refused.status_code == 422, refused.text
            upload_id = refused.json()["upload_id"]
            assert api.get(f"/uploads/{upload_id}").json()["status"] == "invalid"
            retried = api.post(f"/uploads/{upload_id}/import", json={"drop_invalid": True})
            assert retried.status_code == 201, f"{retried.text}\n{server.tail()}"
            assert retried.json()["versions"][0]["dropped_invalid"] == 1
    finally:
        server.stop()


def test_a_job_queued_when_serve_stops_runs_after_it_starts_again(
    tmp_path: Path, tiny_model: Path
) -> None:
    data, port = tmp_path / "data", free_port()
    env = embedded_env(data)
    # First start without a worker, so the job is certain to be waiting when tunelab stops.
    first = start_server(port=port, env=env, log=tmp_path / "first.log", extra_args=["--no-worker"])
    try:
        with embedded_api(first, env) as api:
            project = create_project(api)
            dataset = create_dataset(api, project["id"], alpaca_records(8))
            job = start_job(api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=3))
    finally:
        first.stop(sig=signal.SIGINT)
    assert job["status"] == "queued"

    second = start_server(port=port, env=env, log=tmp_path / "second.log")
    try:
        with embedded_api(second, env) as api:
            done = wait_for_status(api, job["id"])
            assert done["status"] == "succeeded", f"{done['error']}\n{second.tail()}"
    finally:
        second.stop()


def test_a_job_cut_off_mid_run_is_resumed_by_the_next_start(
    tmp_path: Path, tiny_model: Path
) -> None:
    data, port = tmp_path / "data", free_port()
    env = embedded_env(data)
    first = start_server(port=port, env=env, log=tmp_path / "first.log")
    try:
        with embedded_api(first, env) as api:
            project = create_project(api)
            dataset = create_dataset(api, project["id"], alpaca_records(8))
            job = start_job(
                api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=40)
            )
            wait_for(
                lambda: api.get(f"/jobs/{job['id']}").json()["current_step"] >= 1,
                120,
                what="the job to train a step",
            )
    finally:
        # SIGKILL leaves no chance to clean up: the job row still says running.
        subprocess.run(["pkill", "-9", "-P", str(first.process.pid)], check=False)
        first.stop(sig=signal.SIGKILL)

    second = start_server(port=port, env=env, log=tmp_path / "second.log")
    try:
        with embedded_api(second, env) as api:
            done = wait_for_status(api, job["id"], timeout=300)
            assert done["status"] == "succeeded", f"{done['error']}\n{second.tail()}"
            assert done["attempts"] == 2
            messages = [e["message"] for e in api.get(f"/jobs/{job['id']}/events").json()]
            assert any("re-queued" in m for m in messages)
    finally:
        second.stop()


def test_stopping_serve_hands_a_running_job_back_to_the_queue(
    tmp_path: Path, tiny_model: Path
) -> None:

    data, port = tmp_path / "data", free_port()
    env = embedded_env(data)
    first = start_server(port=port, env=env, log=tmp_path / "first.log")
    try:
        with embedded_api(first, env) as api:
            project = create_project(api)
            dataset = create_dataset(api, project["id"], alpaca_records(8))
            job = start_job(
                api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=40)
            )
            wait_for(
                lambda: api.get(f"/jobs/{job['id']}").json()["current_step"] >= 1,
                120,
                what="the job to train a step",
            )
    finally:
        first.stop(sig=signal.SIGINT)  # Ctrl+C
    with sqlite3.connect(data / "tunelab.db") as db:
        status = db.execute("select status from jobs").fetchone()[0]
    assert status == "queued", "a stopped worker gives its job back at once"

    second = start_server(port=port, env=env, log=tmp_path / "second.log")
    try:
        with embedded_api(second, env) as api:
            done = wait_for_status(api, job["id"], timeout=300)
            assert done["status"] == "succeeded", f"{done['error']}\n{second.tail()}"
            messages = [e["message"] for e in api.get(f"/jobs/{job['id']}/events").json()]
            assert any("handed back" in m for m in messages)
    finally:
        second.stop()


def test_tunelab_db_upgrade_creates_the_sqlite_schema(tmp_path: Path) -> None:
    env = embedded_env(tmp_path / "data")
    subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], env=env, check=True)
    with sqlite3.connect(tmp_path / "data" / "tunelab.db") as db:
        tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
    assert {
        "projects",
        "datasets",
        "dataset_versions",
        "jobs",
        "job_events",
        "metric_points",
        "artifacts",
    } <= tables


def test_first_start_prints_a_one_time_login_link_for_a_local_admin(tmp_path: Path) -> None:
    import re

    import httpx

    env = embedded_env(tmp_path / "data")
    server = start_server(
        port=free_port(), env=env, log=tmp_path / "serve.log", extra_args=["--no-worker"]
    )
    try:
        log = server.log.read_text()
        for _ in range(50):  # the box follows uvicorn's start-up lines
            if "└" in log:
                break
            time.sleep(0.1)
            log = server.log.read_text()
        link = re.search(r"http://127\.0\.0\.1:\d+/login/link/[\w-]+", log)
        assert link, server.tail()
        # The last thing printed at start, in a box, after the server says it is running;
        # only the requests the server answers come after it.
        box = log[log.rindex("┌") : log.rindex("┘") + 1]
        assert link.group(0) in box, log
        assert log.index("Uvicorn running") < log.rindex("┌"), log
        after = log[log.rindex("┘") + 1 :].split("\n")
        assert all(not line.strip() or '"GET /' in line for line in after), log
        with httpx.Client() as browser:
            first = browser.get(link.group(0), follow_redirects=False)
            # No password yet: the account page, where one is set.
            assert first.status_code == 303
            assert first.headers["location"] == "/account?welcome=1#password"
            assert browser.get(server.url + "/projects").status_code == 200
        again = httpx.get(link.group(0), follow_redirects=False)
        assert again.status_code == 401, "the link works once"
    finally:
        server.stop()
    restarted = start_server(
        port=free_port(), env=env, log=tmp_path / "again.log", extra_args=["--no-worker"]
    )
    restarted.stop()
    assert "/login/link/" not in (tmp_path / "again.log").read_text(), "only on the first start"


def test_serves_own_worker_starts_without_a_banner() -> None:
    """serve's worker (started with --parent-pid) asks Celery for no start-up banner, which
    would otherwise print below the first-start box; a worker started by hand keeps it."""
    from app.cli.serve import worker_command

    assert "--quiet" in worker_command("training", "WARNING", quiet=True)
    assert "--quiet" not in worker_command("training")
