"""No Docker engine runs here, so docker-compose.yml's tunelab services are started by hand,
from the commands and environment the file gives them, against this machine's Postgres and
Redis (the hosts `postgres` and `redis` mapped to loopback, a fresh database): the one-shot
migration completes, the web service answers, and the CPU worker registers with its queues."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text

from tests.conftest import PG_SERVER, REDIS_URL
from tests.live import free_port, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


def services() -> dict[str, Any]:
    # PyYAML resolves the file's anchors and merge keys (x-tunelab-env) as Compose does.
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]


def argv(service: dict[str, Any], port: int) -> list[str]:
    """The service's command with this Python's tunelab, published on ``port``."""
    command = service["command"]
    words = shlex.split(command) if isinstance(command, str) else list(command)
    assert words[0] == "tunelab", words
    out = [sys.executable, "-m", "app.cli", *words[1:]]
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if flag in out:
            out[out.index(flag) + 1] = value
    return out


def environment(service: dict[str, Any], local: dict[str, str]) -> dict[str, str]:
    """The service's environment, with what names the compose network's hosts, its secret and
    its volume replaced by this machine's (``local``)."""
    declared = {k: "" if v is None else str(v) for k, v in service["environment"].items()}
    for name in local:
        assert name in declared, f"the compose file no longer sets {name}"
    keep = {k: v for k, v in os.environ.items() if not k.startswith("TUNELAB_")}
    return {**keep, **declared, **local}


def test_the_compose_services_start_from_their_own_commands(tmp_path: Path) -> None:
    name = f"tunelab_compose_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    local = {
        "TUNELAB_DATABASE_URL": f"{PG_SERVER}/{name}",
        "TUNELAB_BROKER_URL": REDIS_URL,
        "TUNELAB_DATA_DIR": str(tmp_path / "data"),
        "TUNELAB_SECRET_KEY": secrets.token_hex(32),
        "TUNELAB_DEFAULT_QUEUE": f"compose-{uuid.uuid4().hex[:8]}",
    }
    declared = services()
    port = free_port()
    started: list[subprocess.Popen[bytes]] = []
    try:
        migrate = subprocess.run(
            argv(declared["migrate"], port),
            env=environment(declared["migrate"], local),
            capture_output=True,
            timeout=120,
        )
        assert migrate.returncode == 0, migrate.stderr.decode()[-2000:]

        def start(service: str) -> subprocess.Popen[bytes]:
            log = (tmp_path / f"{service}.log").open("ab")
            proc = subprocess.Popen(
                argv(declared[service], port),
                env=environment(declared[service], local),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            started.append(proc)
            return proc

        web = start("web")

        def answers() -> bool:
            assert web.poll() is None, (tmp_path / "web.log").read_text()[-2000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, 60, what="the web service")
        assert httpx.get(f"http://127.0.0.1:{port}/login", timeout=10).status_code == 200

        worker = start("worker-cpu")
        engine = create_engine(local["TUNELAB_DATABASE_URL"])

        def registered() -> Any:
            assert worker.poll() is None, (tmp_path / "worker-cpu.log").read_text()[-2000:]
            with engine.connect() as conn:
                return conn.execute(
                    text("select name, queues, capacity from workers where stopped_at is null")
                ).first()

        row = wait_for(registered, 90, what="the CPU worker to register")
        engine.dispose()
        queue = local["TUNELAB_DEFAULT_QUEUE"]
        assert row.name == f"cpu:{worker.pid}"
        assert row.queues == [queue, f"{queue}.cpu"]
        assert row.capacity["gpus"] == 0
    finally:
        for proc in started:
            proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
