"""Every queued job reaches a final state whatever process dies: the embedded worker killed,
`tunelab serve` stopped or killed, the broker down or restarted without its data, a worker
frozen past its lease. Real processes over loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_EMAIL
from tests.factories import (
    alpaca_records,
    create_dataset,
    create_project,
    start_job,
    tiny_config,
    wait_for_status,
)
from tests.live import (
    LiveServer,
    api_client,
    cli_token,
    embedded_api,
    embedded_env,
    free_port,
    start_server,
    start_worker,
    wait_for,
)

# Real processes started by the tests themselves.
pytestmark = pytest.mark.e2e


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return not (state.exists() and state.read_text().split()[2] == "Z")


def events(api: httpx.Client, job_id: str) -> list[str]:
    return [e["message"] for e in api.get(f"/jobs/{job_id}/events").json()]


def running_job(api: httpx.Client, tiny_model: Path, steps: int = 60) -> dict:
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(8))
    job = start_job(api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=steps))
    wait_for(
        lambda: api.get(f"/jobs/{job['id']}").json()["current_step"] >= 1,
        120,
        what="the job to train a step",
    )
    return job


# --- Embedded mode: the worker of `tunelab serve` ------------------------------------------


def test_a_killed_embedded_worker_is_restarted_and_its_job_finishes(
    tmp_path: Path, tiny_model: Path
) -> None:
    data = tmp_path / "data"
    env = embedded_env(data)
    server = start_server(port=free_port(), env=env, log=tmp_path / "serve.log")
    try:
        with embedded_api(server, env) as api:
            job = running_job(api, tiny_model)
            (worker,) = children(server.process.pid)
            os.kill(worker, signal.SIGKILL)
            done = wait_for_status(api, job["id"], timeout=300)
            assert done["status"] == "succeeded", f"{done['error']}\n{server.tail()}"
            assert done["attempts"] == 2
            assert any(
                m.startswith("the worker was killed by signal 9; re-queued")
                for m in events(api, job["id"])
            )
            (restarted,) = children(server.process.pid)
            assert restarted != worker
        assert "restarting it in 1 s" in server.log.read_text()
    finally:
        server.stop()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_serve_leaves_no_worker_behind_and_the_job_trains_once(
    tmp_path: Path, tiny_model: Path, how: signal.Signals
) -> None:
    """SIGTERM: serve stops its worker (which hands the job back) before it exits. SIGKILL:
    the kernel stops the worker. Either way the next start trains the job to the end, once."""
    data, port = tmp_path / "data", free_port()
    env = embedded_env(data)
    first = start_server(port=port, env=env, log=tmp_path / "first.log")
    with embedded_api(first, env) as api:
        job = running_job(api, tiny_model)
    (worker,) = children(first.process.pid)
    first.process.send_signal(how)
    first.process.wait(timeout=60)
    try:
        wait_for(lambda: not alive(worker), 60, what="the worker to stop with serve")
    except AssertionError:
        # Seen once in a full run on the loaded CI machine, never alone: Celery's SIGUSR1
        # writes every thread's stack to the log, so the failure says where the worker hangs.
        os.kill(worker, signal.SIGUSR1)
        time.sleep(3)
        state = Path(f"/proc/{worker}/status")
        raise AssertionError(
            f"the worker outlived serve by 60 s\n"
            f"{state.read_text() if state.exists() else ''}\n{first.tail(200)}"
        ) from None
    first.stop()

    second = start_server(port=port, env=env, log=tmp_path / "second.log")
    try:
        with embedded_api(second, env) as api:
            done = wait_for_status(api, job["id"], timeout=300)
            assert done["status"] == "succeeded", f"{done['error']}\n{second.tail()}"
            said = events(api, job["id"])
            assert said.count("Succeeded") == 1
            assert sum(m.startswith("Started on worker") for m in said) == 2, said
            points = api.get(f"/jobs/{job['id']}/metrics", params={"name": "loss"}).json()
            assert [p["step"] for p in points] == list(range(1, 61))
    finally:
        second.stop()


# --- Cluster mode with a broker of the test's own -------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A Redis of this test's own, on a free port, keeping nothing on disk (as a restart
    that loses its data would)."""
    port = free_port()
    state: dict[str, object] = {"port": port, "url": f"redis://127.0.0.1:{port}/0"}

    def start() -> None:
        proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
        )
        state["process"] = proc
        wait_for(
            lambda: (
                subprocess.run(
                    ["redis-cli", "-p", str(port), "ping"], capture_output=True
                ).returncode
                == 0
            ),
            20,
            what="the test's Redis",
        )

    def stop() -> None:
        proc = state["process"]
        assert isinstance(proc, subprocess.Popen)
        proc.kill()
        proc.wait()

    state["start"], state["stop"] = start, stop
    start()
    yield state
    stop()


def cluster_env(broker: dict[str, object]) -> dict[str, str]:
    return {
        **os.environ,
        "TUNELAB_BROKER_URL": str(broker["url"]),
        "TUNELAB_DEFAULT_QUEUE": f"delivery-{uuid.uuid4().hex[:8]}",
        "TUNELAB_REOFFER_SECONDS": "2",
    }


@pytest.fixture
def own_cluster(
    broker: dict[str, object], tmp_path: Path, postgres_database: str
) -> Iterator[tuple[LiveServer, dict[str, str], httpx.Client]]:
    env = cluster_env(broker)
    server = start_server(
        port=free_port(), env=env, log=tmp_path / "server.log", extra_args=["--no-worker"]
    )
    token = cli_token(ADMIN_EMAIL, env)
    with api_client(server.url, token) as api:
        yield server, env, api
    server.stop()


def test_serve_with_its_own_worker_trains_jobs_in_cluster_mode(
    broker: dict[str, object], tmp_path: Path, tiny_model: Path, postgres_database: str
) -> None:
    """`tunelab serve --worker` on Postgres and Redis: its worker consumes the capacity-class
    queue placement puts jobs on, not only the default queue (it once waited forever)."""
    env = cluster_env(broker)
    server = start_server(
        port=free_port(), env=env, log=tmp_path / "server.log", extra_args=["--worker"]
    )
    try:
        with api_client(server.url, cli_token(ADMIN_EMAIL, env)) as api:
            project = create_project(api)
            dataset = create_dataset(api, project["id"], alpaca_records(8))
            job = start_job(api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=2))
            assert job["queue"] != env["TUNELAB_DEFAULT_QUEUE"]  # a class queue (placement)
            done = wait_for_status(api, job["id"], timeout=180)
            assert done["status"] == "succeeded", f"{done['error']}\n{server.tail()}"
    finally:
        server.stop()


def test_a_job_made_while_the_broker_is_down_runs_once_it_is_back(
    own_cluster: tuple[LiveServer, dict[str, str], httpx.Client],
    broker: dict[str, object],
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    _server, env, api = own_cluster
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(8))
    broker["stop"]()  # type: ignore[operator]
    started = time.monotonic()
    job = start_job(api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=3))
    assert time.monotonic() - started < 15, "the request must not hang on a dead broker"
    assert job["status"] == "queued"
    assert any("could not be reached" in m for m in events(api, job["id"]))
    broker["start"]()  # type: ignore[operator]
    worker = start_worker(env=env, log=tmp_path / "worker.log")
    try:
        done = wait_for_status(api, job["id"], timeout=180)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def test_a_job_whose_message_the_broker_lost_is_offered_again(
    own_cluster: tuple[LiveServer, dict[str, str], httpx.Client],
    broker: dict[str, object],
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    _server, env, api = own_cluster
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(8))
    job = start_job(api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=3))
    # The broker restarts and forgets every message (no persistence), before any worker ran.
    broker["stop"]()  # type: ignore[operator]
    broker["start"]()  # type: ignore[operator]
    worker = start_worker(env=env, log=tmp_path / "worker.log")
    try:
        done = wait_for_status(api, job["id"], timeout=180)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def test_a_worker_frozen_past_its_lease_writes_nothing_once_it_wakes(
    own_cluster: tuple[LiveServer, dict[str, str], httpx.Client],
    tiny_model: Path,
    tmp_path: Path,
) -> None:

    _server, env, api = own_cluster
    # A short lease for these two workers, so the takeover comes quickly.
    env = {**env, "TUNELAB_LEASE_SECONDS": "5"}
    frozen = start_worker(env=env, log=tmp_path / "frozen.log")
    other: subprocess.Popen[bytes] | None = None
    try:
        # Enough steps that the job is far from done when its worker freezes (a step takes
        # about 75 ms here), few enough that the takeover trains the rest quickly.
        job = running_job(api, tiny_model, steps=120)
        frozen.send_signal(signal.SIGSTOP)
        stopped_at = api.get(f"/jobs/{job['id']}").json()["current_step"]
        other = start_worker(env=env, log=tmp_path / "other.log")
        # Past the lease (5 s here) the other worker's reaper re-queues the job and
        # the other worker takes it over from its checkpoint.
        wait_for(
            lambda: api.get(f"/jobs/{job['id']}").json()["attempts"] == 2,
            120,
            what="another worker to take the job over",
        )
        frozen.send_signal(signal.SIGCONT)
        done = wait_for_status(api, job["id"], timeout=300)
        assert done["status"] == "succeeded", done["error"]
        said = events(api, job["id"])
        assert said.count("Succeeded") == 1
        assert any("re-queued (attempt 2)" in m for m in said)
        artifacts = api.get(f"/jobs/{job['id']}/artifacts").json()
        assert len(artifacts) == 1
        wait_for(
            lambda: "'lease lost'" in (tmp_path / "frozen.log").read_text(),
            60,
            what="the woken worker to give the job up",
        )
        assert stopped_at < 120
        # Frozen inside a write, it would have held the row's locks against the reaper; its
        # transactions end after the lease instead (tests/services/test_leases.py shows how).
        assert "transactions left idle 5 s end" in (tmp_path / "frozen.log").read_text()
    finally:
        for proc in (frozen, other):
            if proc is not None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
