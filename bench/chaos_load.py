"""Scenario 6 of bench/chaos.py: many API clients at once over a realistic mix, in cluster
mode (Postgres, Redis) and embedded mode (SQLite), then the job status route's requests/s
against a bare FastAPI endpoint (bench/chaos_bare.py) in the same run."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.chaos_stack import Stack, project_with_data, queue_job
from tests.factories import alpaca_records, jsonl
from tests.live import LiveServer, cli_token, free_port, start_server, wait_for

MB = 1024 * 1024


def upload_body() -> bytes:
    """About 1 MB of alpaca records, half Chinese."""
    records: list[dict[str, str]] = []
    body = b""
    while len(body) < MB:
        records += alpaca_records(500, start=len(records))
        body = jsonl(records)
    return body


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _flood(
    base: str,
    token: str,
    targets: dict[str, Any],
    *,
    clients: int,
    seconds: float,
    uploads: bool,
) -> dict[str, Any]:
    """``clients`` clients, each sending one request after another until ``seconds`` pass."""
    job, project = targets["job"], targets["project"]
    mix: list[tuple[str, str, int]] = [
        ("GET", "/api/v1/projects", 10),
        ("GET", "/api/v1/jobs", 10),
        ("GET", f"/api/v1/jobs/{job}", 30),
        ("GET", f"/api/v1/jobs/{job}/metrics", 15),
        ("GET", f"/api/v1/jobs/{job}/events", 10),
        ("GET", f"/api/v1/projects/{project}/datasets", 8),
        ("GET", f"/jobs/{job}/live", 10),
        ("GET", f"/jobs/{job}", 5),
    ]
    if uploads:
        mix.append(("UPLOAD", f"/api/v1/projects/{project}/datasets", 2))
    choices = [(m, p) for m, p, _ in mix]
    weights = [w for _, _, w in mix]
    body = upload_body()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    accepted: list[str] = []
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, timeout=60, limits=limits, headers={"Authorization": f"Bearer {token}"}
    ) as client:

        async def one(rng: random.Random) -> None:
            while time.monotonic() < stop_at:
                method, path = rng.choices(choices, weights)[0]
                started = time.monotonic()
                try:
                    if method == "UPLOAD":
                        response = await client.post(
                            path, files={"file": ("负载 load.jsonl", body, "application/jsonl")}
                        )
                    else:
                        response = await client.get(path)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                    errors[key] = errors.get(key, 0) + 1
                    continue
                latencies.append(time.monotonic() - started)
                if response.status_code >= 400:
                    key = f"{response.status_code} {method} {path.split('/')[-1]}"
                    errors[key] = errors.get(key, 0) + 1
                elif method == "UPLOAD":
                    accepted.append(response.json()["id"])

        began = time.monotonic()
        await asyncio.gather(*(one(random.Random(i)) for i in range(clients)))
        elapsed = time.monotonic() - began
        missing = 0
        for dataset in accepted:
            if (await client.get(f"/api/v1/datasets/{dataset}")).status_code != 200:
                missing += 1
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "errors": errors,
        "p50_ms": round(1000 * _percentile(latencies, 0.50), 1),
        "p95_ms": round(1000 * _percentile(latencies, 0.95), 1),
        "p99_ms": round(1000 * _percentile(latencies, 0.99), 1),
        "uploads_accepted": len(accepted),
        "uploads_missing": missing,
    }


async def _rate(url: str, headers: dict[str, str], *, clients: int, seconds: float) -> float:
    """Requests per second of GETs of one URL by ``clients`` clients (successes only)."""
    done = 0
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as client:

        async def one() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                try:
                    response = await client.get(url)
                except httpx.ReadError:
                    # A kept-alive connection the server closed after 5 s idle (uvicorn's
                    # keep-alive timeout), reused by the pool in the same instant: not a
                    # success, and no reason to stop counting (both apps see it).
                    continue
                if response.status_code == 200:
                    done += 1

        began = time.monotonic()
        await asyncio.gather(*(one() for _ in range(clients)))
        return done / (time.monotonic() - began)


def _targets(api: httpx.Client, stack: Stack) -> dict[str, str]:
    project, dataset = project_with_data(api)
    return {"project": project, "job": queue_job(api, project, dataset, stack.config(4))}


def _embedded(stack: Stack) -> tuple[LiveServer, str]:
    """`tunelab serve` in embedded mode (SQLite, no broker) on a data folder of its own."""
    env = {
        k: v
        for k, v in stack.env.items()
        if k not in ("TUNELAB_DATABASE_URL", "TUNELAB_BROKER_URL")
    }
    env["TUNELAB_DATA_DIR"] = str(stack.root / "embedded")
    server = start_server(
        port=free_port(), env=env, log=stack.root / "embedded.log", extra_args=["--no-worker"]
    )
    return server, cli_token("admin@localhost", env, scopes="read,write,admin")


def load(
    stack: Stack,
    *,
    clients: int = 200,
    seconds: float = 60,
    uploads: bool = True,
    embedded: bool = True,
    compare_seconds: float = 10,
) -> dict[str, Any]:
    if stack.server is None:
        stack.start_server()
    assert stack.server is not None
    modes: dict[str, dict[str, Any]] = {}
    with stack.api() as api:
        targets = _targets(api, stack)
    modes["cluster"] = asyncio.run(
        _flood(
            stack.server.url,
            stack.token,
            targets,
            clients=clients,
            seconds=seconds,
            uploads=uploads,
        )
    )
    auth = {"Authorization": f"Bearer {stack.token}"}
    job_url = f"{stack.server.url}/api/v1/jobs/{targets['job']}"
    job_rps, bare_rps, round_ratios, cpu_ms = _compare(
        job_url,
        auth,
        clients=min(clients, 50),
        seconds=compare_seconds,
        server_pid=stack.server.process.pid,
    )
    if embedded:
        server, token = _embedded(stack)
        try:
            with httpx.Client(
                base_url=server.url + "/api/v1",
                timeout=60,
                headers={"Authorization": f"Bearer {token}"},
            ) as api:
                local = _targets(api, stack)
            modes["embedded"] = asyncio.run(
                _flood(server.url, token, local, clients=clients, seconds=seconds, uploads=uploads)
            )
        finally:
            server.stop()
    ratio = job_rps / bare_rps if bare_rps else 0.0
    errors = sum(sum(m["errors"].values()) for m in modes.values())
    missing = sum(m["uploads_missing"] for m in modes.values())
    parts = [
        f"{name}: {m['rps']} req/s, p50/p95/p99 {m['p50_ms']}/{m['p95_ms']}/{m['p99_ms']} ms, "
        f"{sum(m['errors'].values())} errors"
        for name, m in modes.items()
    ]
    return {
        "scenario": "load",
        "clients": clients,
        "load_seconds": seconds,
        "modes": modes,
        "job_status_rps": round(job_rps, 1),
        "bare_fastapi_rps": round(bare_rps, 1),
        "ratio": round(ratio, 2),
        "round_ratios": round_ratios,
        "server_cpu_ms_per_request": cpu_ms,
        "ok": errors == 0 and missing == 0 and ratio >= 0.5,
        "summary": f"{clients} clients x {seconds:.0f} s; "
        + "; ".join(parts)
        + f"; job status {job_rps:.0f} req/s = {ratio:.2f}x bare FastAPI ({bare_rps:.0f}), "
        + f"server CPU {cpu_ms['job']} ms/request against {cpu_ms['bare']}",
    }


COMPARE_ROUNDS = 5


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _compare(
    job_url: str, auth: dict[str, str], *, clients: int, seconds: float, server_pid: int
) -> tuple[float, float, list[float], dict[str, float]]:
    """Requests/s of the job status route and of a bare FastAPI route, measured in turns
    (``COMPARE_ROUNDS`` rounds of each, alternating, ``seconds`` in all for each side): a
    machine whose speed drifts during the run (a shared host) moves both alike. Returns both
    rates over all rounds, each round's ratio, and each server's CPU milliseconds per request.

    The load client runs in this process on the same cores and costs more CPU per request
    than either server, so the rate ratio says as much about the client as about the route;
    the CPU per request is the route's own cost."""
    bare_port = free_port()
    bare = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.chaos_bare:app",
            "--port",
            str(bare_port),
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).resolve().parents[1],
    )
    job_rates: list[float] = []
    bare_rates: list[float] = []
    cpu = {"job": 0.0, "bare": 0.0}

    def measured(side: str, pid: int, url: str, headers: dict[str, str], turn: float) -> float:
        before = _cpu_seconds(pid)
        rate = asyncio.run(_rate(url, headers, clients=clients, seconds=turn))
        cpu[side] += _cpu_seconds(pid) - before
        return rate

    try:
        bare_url = f"http://127.0.0.1:{bare_port}/ping"
        wait_for(lambda: _answers(bare_url), 30, what="the bare FastAPI app")
        turn = seconds / COMPARE_ROUNDS
        for _ in range(COMPARE_ROUNDS):
            job_rates.append(measured("job", server_pid, job_url, auth, turn))
            bare_rates.append(measured("bare", bare.pid, bare_url, {}, turn))
    finally:
        bare.terminate()
        bare.wait(timeout=30)
    rounds = [round(j / b, 2) if b else 0.0 for j, b in zip(job_rates, bare_rates, strict=True)]
    turn = seconds / COMPARE_ROUNDS
    cpu_ms = {
        side: round(1000 * cpu[side] / max(1.0, sum(rates) * turn), 2)
        for side, rates in (("job", job_rates), ("bare", bare_rates))
    }
    return sum(job_rates) / len(job_rates), sum(bare_rates) / len(bare_rates), rounds, cpu_ms


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
