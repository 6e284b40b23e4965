"""Many clients at once: every request answered, none blocked behind a database call on the
event loop or a pool that waits on itself. Real servers over loopback, both modes."""

from __future__ import annotations

import asyncio
import http.client
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_EMAIL
from tests.live import LiveServer, cli_token, embedded_env, free_port, start_server

# Real processes started by the tests themselves.
pytestmark = pytest.mark.e2e

CLIENTS = 200
# Deliberately small, so 200 clients queue for threads and connections: with the old
# arrangement 16 concurrent requests already exhausted the pool while the event loop sat
# blocked in it.
TIGHT = {"TUNELAB_WEB_THREADS": "8", "TUNELAB_DB_POOL_SIZE": "2", "TUNELAB_DB_POOL_TIMEOUT": "20"}


async def _flood(url: str, token: str, clients: int) -> tuple[list[int], list[float]]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as c:

        async def one(i: int) -> tuple[int, float]:
            started = time.perf_counter()
            # A list endpoint (authentication, a count and a page) and the health check mixed.
            path = "/api/v1/projects?limit=5" if i % 4 else "/healthz"
            response = await c.get(path)
            return response.status_code, time.perf_counter() - started

        results = await asyncio.gather(*(one(i) for i in range(clients)))
    return [s for s, _ in results], [t for _, t in results]


def _check(url: str, token: str, mode: str) -> None:
    started = time.perf_counter()
    statuses, latencies = asyncio.run(_flood(url, token, CLIENTS))
    wall = time.perf_counter() - started
    latencies.sort()
    p50 = statistics.median(latencies)
    p95 = latencies[int(0.95 * len(latencies)) - 1]
    print(
        f"{mode}: {CLIENTS} concurrent requests in {wall:.2f} s, p50 {p50:.3f} s, p95 {p95:.3f} s"
    )
    assert statuses == [200] * CLIENTS, sorted(set(statuses))
    # Still answering afterwards (the old server never answered again past 20 clients).
    assert httpx.get(url + "/healthz", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def tight_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {**os.environ, **TIGHT}
    server = start_server(
        port=free_port(),
        env=env,
        log=tmp_path_factory.mktemp("load") / "server.log",
        extra_args=["--no-worker"],
    )
    try:
        yield server
    finally:
        server.stop()


def test_two_hundred_concurrent_requests_are_all_answered_in_cluster_mode(
    tight_cluster: LiveServer, postgres_database: str
) -> None:
    token = cli_token(ADMIN_EMAIL, dict(os.environ))
    _check(tight_cluster.url, token, "cluster (Postgres)")
    assert "event loop" not in tight_cluster.log.read_text(errors="replace")


def test_two_hundred_concurrent_requests_are_all_answered_in_embedded_mode(
    tmp_path: Path,
) -> None:

    env = {**embedded_env(tmp_path / "data"), **TIGHT}
    server = start_server(
        port=free_port(), env=env, log=tmp_path / "server.log", extra_args=["--no-worker"]
    )
    try:
        token = cli_token("admin@localhost", env)
        _check(server.url, token, "embedded (SQLite)")
    finally:
        server.stop()


def test_an_idle_kept_alive_connection_outlives_uvicorns_five_seconds(
    tight_cluster: LiveServer,
) -> None:
    # A busy client may leave a kept-alive connection idle for seconds before its next
    # request; had the server closed it (uvicorn's default: 5 s), that request fails.
    host, port = tight_cluster.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        sockets = []
        for idle in (6, 0):
            conn.request("GET", "/healthz")
            answer = conn.getresponse()
            assert answer.status == 200 and answer.read() == b'{"status":"ok"}'
            assert not answer.will_close
            sockets.append(conn.sock)
            time.sleep(idle)
        assert sockets[0] is sockets[1]  # one connection both times (closed, it would raise)
    finally:
        conn.close()
