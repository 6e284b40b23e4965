"""Schemathesis drives every operation in /openapi.json with generated input, as an admin;
no input may produce a server error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_SERVER, PG_URL
from tests.live import LiveServer, cli_token, free_port, start_server, tunelab

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server on a database of its own: the fuzzer changes roles, revokes tokens and deletes
    projects at random, and none of it may reach the other tests' accounts."""
    database = f"{PG_URL}_fuzz"
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    name = database.rsplit("/", 1)[1]
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    env = {**os.environ, "TUNELAB_DATABASE_URL": database, "TUNELAB_DATA_DIR": str(tmp_path)}
    subprocess.run(tunelab("db", "upgrade"), env=env, check=True, capture_output=True)
    server = start_server(
        port=free_port(), env=env, log=tmp_path / "server.log", extra_args=["--no-worker"]
    )
    try:
        yield server
    finally:
        server.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_generated_requests_never_get_a_5xx(own_server: LiveServer) -> None:
    cluster = own_server
    email = "fuzzer@tunelab.test"
    env = dict(own_server.env)
    subprocess.run(
        tunelab("user", "create", "--admin", "--email", email, "--no-password"),
        env=env,
        check=True,
        capture_output=True,
    )
    admin_token = cli_token(email, env, scopes="read,write,admin")
    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    result = subprocess.run(
        [
            cli,
            "run",
            f"{cluster.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {admin_token}",
            "--checks",
            "not_a_server_error",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "15",
            "--seed",
            "7",
            "--request-timeout",
            "30",
            # Starting jobs is left out: a fuzzed job would keep the shared test worker busy.
            "--exclude-operation-id",
            "create_job_api_v1_jobs_post",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
