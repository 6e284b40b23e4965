"""The broker URL of docs/deploy.md, for real: a Redis with TLS only (no plain-text port) and
an ACL user, its certificate signed by a CA of the test's own; tunelab's Celery app sends a
job's message through `rediss://user:password@host/0?ssl_cert_reqs=required&ssl_ca_certs=…`,
and refuses a broker whose certificate that CA did not sign."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.live import free_port, wait_for
from tests.tls import make_ca_and_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl"),
]

PASSWORD = "broker-secret-" + uuid.uuid4().hex[:8]


def tls_client(port: int, certs: Path) -> redis.Redis:
    """A client of the test's broker as its own user, trusting its CA."""
    return redis.Redis(
        host="localhost",
        port=port,
        username="tunelab",
        password=PASSWORD,
        ssl=True,
        ssl_ca_certs=str(certs / "broker-ca.pem"),
    )


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    certs = tmp_path / "certs"
    make_ca_and_server(certs, "broker")
    make_ca_and_server(certs, "other")
    port = free_port()
    config = tmp_path / "redis.conf"
    config.write_text(
        "\n".join(
            [
                "port 0",
                f"tls-port {port}",
                "bind 127.0.0.1",
                f"tls-cert-file {certs / 'broker.crt'}",
                f"tls-key-file {certs / 'broker.key'}",
                f"tls-ca-cert-file {certs / 'broker-ca.pem'}",
                "tls-auth-clients optional",
                'save ""',
                f"dir {tmp_path}",
                "user default off",
                f"user tunelab on >{PASSWORD} ~* &* +@all",
                "",
            ]
        )
    )
    proc = subprocess.Popen(["redis-server", str(config)], stdout=subprocess.DEVNULL)
    client = tls_client(port, certs)

    def up() -> bool:
        assert proc.poll() is None, "redis-server with TLS did not start"
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    wait_for(up, 20, what="Redis with TLS")
    try:
        yield port, certs
    finally:
        client.close()
        proc.kill()
        proc.wait()


SEND = """
from app.core.broker import celery_app
celery_app.send_task(
    "tunelab.train_job", args=["00000000-0000-0000-0000-000000000000"], queue={queue!r},
    retry=True, retry_policy={{"max_retries": 1, "interval_start": 0, "interval_step": 0.2}},
)
"""


def send_through(url: str, queue: str) -> subprocess.CompletedProcess[str]:
    """Send a job's message as the web process does, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-c", SEND.format(queue=queue)],
        env={**os.environ, "TUNELAB_BROKER_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_job_message_travels_over_tls_with_an_acl_user(tls_broker: tuple[int, Path]) -> None:
    port, certs = tls_broker
    queue = f"tls-{uuid.uuid4().hex[:8]}.gpu-24g"
    url = (
        f"rediss://tunelab:{PASSWORD}@localhost:{port}/0"
        f"?ssl_cert_reqs=required&ssl_ca_certs={certs / 'broker-ca.pem'}"
    )
    sent = send_through(url, queue)
    assert sent.returncode == 0, sent.stderr[-2000:]
    client = tls_client(port, certs)
    assert client.llen(queue) == 1

    # A CA that did not sign the broker's certificate: refused, nothing sent.
    refused = send_through(url.replace("broker-ca.pem", "other-ca.pem"), queue)
    assert refused.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    assert client.llen(queue) == 1
    client.close()
