"""Test setup: a fresh Postgres database and Redis queue per test process, and live tunelab
processes.

Settings are read from the environment, so they are fixed here, before any test module
imports the app. Postgres and Redis must be running (``.ci/run`` starts them); tests that need
them fail rather than skip when they are not, so CI cannot pass without really using them.

Two tiers (docs/architecture.md, "Tests"): the fast tier (unit tests, the dataset library,
services and the in-process API on real Postgres, the engine on tiny models) and the
end-to-end tier (``e2e``: a subprocess server, a real Celery worker, the browser, SmolLM2).
A test is end-to-end when it uses a live server (the ``cluster`` fixture) or its module says
so; ``make test-fast`` runs the fast tier, ``make test`` both. Every process of
``pytest -n auto`` has its own database, data folder and queue.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

RUN_ID = uuid.uuid4().hex[:8]
PG_SERVER = os.environ.get("TUNELAB_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
PG_URL = f"{PG_SERVER}/tunelab_test_{RUN_ID}"
REDIS_URL = os.environ.get("TUNELAB_TEST_REDIS", "redis://127.0.0.1:6379/11")
DATA_DIR = Path(tempfile.mkdtemp(prefix=f"tunelab-test-{RUN_ID}-"))

os.environ.update(
    {
        "TUNELAB_DATABASE_URL": PG_URL,
        "TUNELAB_BROKER_URL": REDIS_URL,
        "TUNELAB_DATA_DIR": str(DATA_DIR),
        # A queue of this run's own, so two runs on one Redis never take each other's jobs.
        "TUNELAB_DEFAULT_QUEUE": f"training-{RUN_ID}",
        "TUNELAB_HEARTBEAT_SECONDS": "1",
        "TUNELAB_LEASE_SECONDS": "15",
        "TUNELAB_ALLOW_HUB_DOWNLOADS": "false",
        # The test cluster's workers run on this machine's CPU.
        "TUNELAB_WORKER_CUDA": "false",
        "TUNELAB_UPLOAD_MAX_BYTES": str(2 * 1024 * 1024),
        # Tests name base models built under pytest's temporary folders, which live here.
        "TUNELAB_MODEL_DIRS": tempfile.gettempdir(),
        "HF_HUB_OFFLINE": "1",
        # Database work on the web server's event loop raises instead of being logged.
        "TUNELAB_STRICT_EVENT_LOOP": "true",
        "TOKENIZERS_PARALLELISM": "false",
    }
)
# A persistent model cache (e.g. the converted SmolLM2) saves ~30 s per run where it is set.
if os.environ.get("TUNELAB_TEST_MODEL_CACHE"):
    os.environ.setdefault("TUNELAB_MODELS_DIR", os.environ["TUNELAB_TEST_MODEL_CACHE"])

from tests.live import (  # noqa: E402
    LiveServer,
    cli_token,
    free_port,
    start_server,
    start_worker,
    tunelab,
)

ADMIN_EMAIL = "admin@tunelab.test"
# Fixtures that start or reach a live tunelab server: a test using one is end-to-end.
LIVE_FIXTURES = {"cluster"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if LIVE_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker(
            "slow"
        ):
            item.add_marker(pytest.mark.e2e)

    # The longest first: with several processes, the run ends when its last test does. After
    # the slow tests, the files that train models (the engine's and the CLI's, seconds a test),
    # so the many quick files fill in at the end.
    def order(item: pytest.Item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return 1 if item.nodeid.startswith(("tests/worker/", "tests/cli/")) else 2

    items.sort(key=order)


ADMIN_PASSWORD = "correct horse battery"


@pytest.fixture(scope="session", autouse=True)
def postgres_database() -> Iterator[str]:
    """Create this run's database, migrate it with ``tunelab db upgrade``, drop it at the end."""
    import subprocess

    from sqlalchemy import create_engine, text

    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    name = PG_URL.rsplit("/", 1)[1]
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    subprocess.run(tunelab("db", "upgrade"), check=True, capture_output=True)
    subprocess.run(
        tunelab("user", "create", "--admin", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD),
        check=True,
        capture_output=True,
    )
    yield PG_URL
    from app.core.db import get_engine

    get_engine().dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session", autouse=True)
def redis_queue() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield REDIS_URL
    client.delete(os.environ["TUNELAB_DEFAULT_QUEUE"])
    client.close()


@pytest.fixture
def db_session() -> Iterator[object]:
    """A session inside a transaction that is rolled back after the test."""
    from sqlalchemy.orm import Session

    from app.core.db import get_engine

    connection = get_engine().connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        transaction.rollback()
        connection.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-initialised Llama-shaped model folder small enough to train in seconds."""
    from tests.factories_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def cluster() -> Iterator[LiveServer]:
    """tunelab in cluster mode: the web server and a real `celery worker` process, on
    Postgres and Redis, reached over loopback HTTP."""
    logs = DATA_DIR / "logs"
    logs.mkdir(exist_ok=True)
    worker = start_worker(env=dict(os.environ), log=logs / "worker.log")
    server = start_server(
        port=free_port(), env=dict(os.environ), log=logs / "server.log", extra_args=["--no-worker"]
    )
    server.children.append(worker)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def admin_token(postgres_database: str) -> str:
    """An admin API token made with `tunelab token create`."""
    return cli_token(ADMIN_EMAIL, dict(os.environ), scopes="read,write,admin")


@pytest.fixture
def api(cluster: LiveServer, admin_token: str) -> Iterator[object]:
    """An API client authenticated as the admin."""
    import httpx

    with httpx.Client(
        base_url=cluster.url + "/api/v1",
        timeout=60,
        headers={"Authorization": f"Bearer {admin_token}"},
    ) as client:
        yield client


@pytest.fixture
def anonymous(cluster: LiveServer) -> Iterator[object]:
    import httpx

    with httpx.Client(base_url=cluster.url, timeout=60) as client:
        yield client
