"""The database URL of docs/deploy.md, for real: a Postgres cluster of the test's own that
accepts tunelab's account over TLS only, with a SCRAM password, its certificate signed by a CA
of the test's own. Migrations, the CLI, `tunelab serve` and a `tunelab worker` all reach it
through `...?sslmode=verify-full&sslrootcert=ca.pem`; the server's log shows every one of
their connections encrypted. A plain-text connection and a CA that did not sign the server's
certificate are refused before any SQL runs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.chaos_stack import PgCluster, pg_bin
from tests.conftest import REDIS_URL, RUN_ID
from tests.live import (
    api_client,
    cli_token,
    free_port,
    start_server,
    start_worker,
    tunelab,
    wait_for,
)
from tests.tls import make_ca_and_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl"),
    pytest.mark.skipif(
        not any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not shutil.which("initdb"),
        reason="needs the PostgreSQL server programs",
    ),
]

PASSWORD = "db-secret-" + uuid.uuid4().hex[:8]
EMAIL = "tls-admin@tunelab.test"
# docs/deploy.md's pg_hba.conf, on loopback: tunelab's account over TLS with SCRAM, nothing
# in plain text; the superuser (the test's set-up) over TLS without a password.
HBA = """\
local    all       postgres                 trust
hostssl  tunelab   tunelab   127.0.0.1/32   scram-sha-256
hostssl  all       postgres  127.0.0.1/32   trust
hostnossl all      all       0.0.0.0/0      reject
"""


@dataclass
class TlsDatabase:
    cluster: PgCluster
    certs: Path

    def url(self, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        port = self.cluster.port
        return f"postgresql+psycopg://tunelab:{PASSWORD}@localhost:{port}/tunelab?{query}"

    @property
    def verified(self) -> str:
        return self.url(sslmode="verify-full", sslrootcert=str(self.certs / "db-ca.pem"))

    def tls_connections(self) -> list[str]:
        """The server log's lines for tunelab's authorised connections."""
        return [
            line
            for line in self.cluster.log.read_text(errors="replace").splitlines()
            if "connection authorized: user=tunelab" in line
        ]


@pytest.fixture(scope="module")
def tls_database() -> Iterator[TlsDatabase]:
    root = Path(tempfile.mkdtemp(prefix="tunelab-pgtls-"))
    root.chmod(0o755)  # the postgres user reaches its cluster and key below
    certs = root / "certs"
    make_ca_and_server(certs, "db")
    make_ca_and_server(certs, "other")
    certs.chmod(0o755)
    key = certs / "db.key"
    key.chmod(0o600)  # Postgres refuses a key others can read
    if os.geteuid() == 0:
        shutil.chown(key, "postgres")
    cluster = PgCluster(
        root / "pg",
        hba=HBA,
        settings={
            "ssl": "on",
            "ssl_cert_file": str(certs / "db.crt"),
            "ssl_key_file": str(key),
            "password_encryption": "scram-sha-256",
            "log_connections": "on",
        },
    )
    try:
        psql = [pg_bin("psql"), "-h", str(cluster.root), "-p", str(cluster.port), "-U", "postgres"]
        for sql in (
            f"CREATE ROLE tunelab LOGIN PASSWORD '{PASSWORD}'",
            "ALTER DATABASE tunelab OWNER TO tunelab",
            "ALTER SCHEMA public OWNER TO tunelab",
        ):
            database = "tunelab" if "SCHEMA" in sql else "postgres"
            subprocess.run(
                [*psql, "-d", database, "-q", "-c", sql], check=True, capture_output=True
            )
        yield TlsDatabase(cluster, certs)
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(tunelab(*args), env=env, capture_output=True, text=True, timeout=120)


def test_web_worker_and_cli_use_the_database_over_verified_tls(
    tls_database: TlsDatabase, tmp_path: Path
) -> None:
    queue = f"pgtls-{RUN_ID}-{uuid.uuid4().hex[:4]}"
    env = {
        **os.environ,
        "TUNELAB_DATABASE_URL": tls_database.verified,
        "TUNELAB_BROKER_URL": REDIS_URL,
        "TUNELAB_DEFAULT_QUEUE": queue,
        "TUNELAB_DATA_DIR": str(tmp_path / "data"),
    }
    upgraded = cli(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr[-2000:]
    made = cli(env, "user", "create", "--admin", "--email", EMAIL, "--password", "x" * 12)
    assert made.returncode == 0, made.stderr[-2000:]

    worker = start_worker(
        env={**env, "TUNELAB_WORKER_NAME": f"tls-{RUN_ID}", "OMP_NUM_THREADS": "1"},
        log=tmp_path / "worker.log",
    )
    server = start_server(
        port=free_port(), env=env, log=tmp_path / "server.log", extra_args=["--no-worker"]
    )
    try:
        with api_client(server.url, cli_token(EMAIL, env, "read,write,admin")) as api:
            created = api.post("/projects", json={"name": "TLS 项目", "system_prompt": "over TLS"})
            assert created.status_code == 201, created.text
            listed = api.get("/projects").json()
            names = [p["name"] for p in listed.get("items", listed)]
            assert "TLS 项目" in names

            def registered() -> dict | None:
                for w in api.get("/workers").json():
                    if w["name"].startswith(f"tls-{RUN_ID}") and w["online"]:
                        return w
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                return None

            wait_for(registered, 90, what="the worker to register over TLS")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        server.stop()

    connections = tls_database.tls_connections()
    # Migrations, user create, token create, the web and the worker: many connections, each
    # one encrypted (pg_hba.conf has no plain-text way in for tunelab anyway).
    assert len(connections) >= 5, connections
    assert all("SSL enabled" in line for line in connections), connections


def test_plain_text_and_an_unknown_ca_are_refused_before_any_sql(
    tls_database: TlsDatabase, tmp_path: Path
) -> None:
    env = {**os.environ, "TUNELAB_DATA_DIR": str(tmp_path / "data")}

    plain = cli(
        {**env, "TUNELAB_DATABASE_URL": tls_database.url(sslmode="disable")}, "db", "upgrade"
    )
    assert plain.returncode != 0
    assert "no encryption" in plain.stderr, plain.stderr[-2000:]

    other_ca = tls_database.url(
        sslmode="verify-full", sslrootcert=str(tls_database.certs / "other-ca.pem")
    )
    unknown = cli({**env, "TUNELAB_DATABASE_URL": other_ca}, "db", "upgrade")
    assert unknown.returncode != 0
    assert "certificate verify failed" in unknown.stderr, unknown.stderr[-2000:]

    # A wrong password over TLS is refused too (SCRAM, not trust).
    wrong = tls_database.verified.replace(PASSWORD, "not-the-password")
    refused = cli({**env, "TUNELAB_DATABASE_URL": wrong}, "db", "upgrade")
    assert refused.returncode != 0
    assert "password authentication failed" in refused.stderr, refused.stderr[-2000:]
