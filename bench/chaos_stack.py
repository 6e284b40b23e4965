"""The processes bench/chaos.py starts, breaks and stops: a Postgres cluster and a Redis of its
own (never the machine's shared ones), `tunelab serve`, Celery workers, and the API calls the
scenarios share. Everything started here is stopped by ``Stack.close``."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.factories import alpaca_records, jsonl
from tests.live import (
    LiveServer,
    cli_token,
    free_port,
    start_server,
    tunelab,
    wait_for,
)

FINISHED = {"succeeded", "failed", "cancelled"}


def pg_bin(name: str) -> str:
    """A PostgreSQL server program (initdb, pg_ctl): Debian keeps them off the PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"chaos: {name} not found (install the PostgreSQL server)")
    return path


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and the server refuse to run as root; the package's postgres user runs them.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PgCluster:
    """A throwaway Postgres cluster on a port of its own (initdb + pg_ctl), trust auth on
    loopback, fsync off: it lives as long as the bench."""

    def __init__(
        self, root: Path, *, settings: dict[str, str] | None = None, hba: str | None = None
    ) -> None:
        """``settings``: more server settings (``-c name=value``); ``hba``: pg_hba.conf's
        text instead of initdb's (it must let ``postgres`` in over TCP from 127.0.0.1)."""
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        self.log = root / "postgres.log"
        self.settings = settings or {}
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        subprocess.run(
            _as_postgres(
                [
                    pg_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
        )
        if hba is not None:
            (self.data / "pg_hba.conf").write_text(hba)
        self.start()
        subprocess.run(
            [
                pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-q",
                "-c",
                "CREATE DATABASE tunelab",
            ],
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/tunelab"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=400 -c synchronous_commit=off"
        )
        for name, value in self.settings.items():
            options += f" -c {name}={value}"
        subprocess.run(
            _as_postgres(
                [
                    pg_bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres([pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
        )


class Redis:
    """A Redis of the bench's own that keeps nothing on disk, so a restart loses every
    message, as a broker that lost its data does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: (
                subprocess.run(
                    ["redis-cli", "-p", str(self.port), "ping"], capture_output=True
                ).returncode
                == 0
            ),
            30,
            what="the bench's Redis",
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Stack:
    """tunelab on a database and broker of the bench's own: a web server and workers that
    the scenarios kill and restart."""

    root: Path
    env: dict[str, str]
    pg: PgCluster | None
    redis: Redis
    model: Path
    token: str = ""
    server: LiveServer | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[Any] = field(default_factory=list)
    _worker_count: int = 0

    @classmethod
    def create(
        cls,
        root: Path | None = None,
        *,
        database_url: str | None = None,
        lease_seconds: float = 5,
        token: str | None = None,
        model: Path | None = None,
    ) -> Stack:
        """Start Redis (and Postgres unless ``database_url`` names a migrated database),
        migrate, make an admin, build the tiny model. A test passes its own migrated database,
        an admin ``token`` on it and its tiny ``model``, which saves a minute of start-up."""
        root = root or Path(tempfile.mkdtemp(prefix="tunelab-chaos-"))
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)  # the postgres user reaches its cluster below
        redis = Redis(root)
        pg = None
        try:
            if database_url is None:
                pg = PgCluster(root / "pg")
                database_url = pg.url
            return cls._create(root, redis, pg, database_url, lease_seconds, token, model)
        except BaseException:
            redis.stop()
            if pg is not None:
                pg.stop("immediate")
            raise

    @classmethod
    def _create(
        cls,
        root: Path,
        redis: Redis,
        pg: PgCluster | None,
        database_url: str,
        lease_seconds: float,
        token: str | None,
        model: Path | None,
    ) -> Stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUNELAB_")}
        env.update(
            {
                "TUNELAB_DATABASE_URL": database_url,
                "TUNELAB_BROKER_URL": redis.url,
                "TUNELAB_DATA_DIR": str(root / "data"),
                "TUNELAB_DEFAULT_QUEUE": f"chaos-{uuid.uuid4().hex[:8]}",
                "TUNELAB_HEARTBEAT_SECONDS": "1",
                "TUNELAB_LEASE_SECONDS": str(lease_seconds),
                "TUNELAB_REOFFER_SECONDS": "2",
                "TUNELAB_ALLOW_HUB_DOWNLOADS": "false",
                "TUNELAB_WORKER_CUDA": "false",
                "TUNELAB_UPLOAD_MAX_BYTES": str(8 * 1024 * 1024),
                "TUNELAB_MODEL_DIRS": str(root),
                "TUNELAB_DB_POOL_TIMEOUT": "10",
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": "1",
                "CUDA_VISIBLE_DEVICES": "",
            }
        )
        if os.environ.get("TUNELAB_MODELS_DIR"):
            env["TUNELAB_MODELS_DIR"] = os.environ["TUNELAB_MODELS_DIR"]
        if model is not None:
            env["TUNELAB_MODEL_DIRS"] = f"{root}:{model.parent}"
        if token is not None and model is not None:
            return cls(root=root, env=env, pg=pg, redis=redis, model=model, token=token)
        subprocess.run(tunelab("db", "upgrade"), env=env, check=True, capture_output=True)
        email = f"chaos-{uuid.uuid4().hex[:8]}@bench.test"
        subprocess.run(
            tunelab("user", "create", "--admin", "--email", email, "--password", "chaos bench pw"),
            env=env,
            check=True,
            capture_output=True,
        )
        from tests.factories_models import build_tiny_model

        stack = cls(root=root, env=env, pg=pg, redis=redis, model=build_tiny_model(root / "tiny"))
        stack.token = cli_token(email, env, scopes="read,write,admin")
        return stack

    # --- processes ---------------------------------------------------------------------

    def start_server(self, *, worker: bool = False) -> LiveServer:
        self.server = start_server(
            port=free_port(),
            env=self.env,
            log=self.root / "server.log",
            extra_args=["--worker" if worker else "--no-worker"],
        )
        return self.server

    def stop_server(self, sig: int = signal.SIGTERM) -> None:
        if self.server is not None:
            self.server.stop(sig, timeout=60)
            self.server = None

    def start_worker(self) -> subprocess.Popen[bytes]:
        self._worker_count += 1
        handle = (self.root / f"worker-{self._worker_count}.log").open("ab")
        self._logs.append(handle)
        proc = subprocess.Popen(
            tunelab("worker"), env=self.env, stdout=handle, stderr=subprocess.STDOUT
        )
        self.workers.append(proc)
        return proc

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers = [p for p in self.workers if p.poll() is None]

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        self.workers = [p for p in self.workers if p.poll() is None]
        return self.workers

    def close(self) -> None:
        self.stop_server()
        self.stop_workers()
        self.redis.stop()
        if self.pg is not None:
            self.pg.stop("immediate")
        for handle in self._logs:
            handle.close()

    # --- the API -------------------------------------------------------------------------

    def api(self, timeout: float = 60) -> httpx.Client:
        assert self.server is not None
        return httpx.Client(
            base_url=self.server.url + "/api/v1",
            timeout=timeout,
            headers={"Authorization": f"Bearer {self.token}"},
        )

    def config(self, steps: int, **overrides: Any) -> dict[str, Any]:
        return {
            "base_model": str(self.model),
            "method": "lora",
            "max_steps": steps,
            "learning_rate": 5e-3,
            "batch_size": 4,
            "max_seq_length": 64,
            "lora_r": 8,
            "checkpoint_every": 4,
            **overrides,
        }


def project_with_data(api: httpx.Client, records: int = 16) -> tuple[str, str]:
    """A project and a dataset of small alpaca records (half Chinese): their ids."""
    project = api.post("/projects", json={"name": "混沌 chaos bench"})
    assert project.status_code == 201, project.text
    pid = project.json()["id"]
    dataset = api.post(
        f"/projects/{pid}/datasets",
        files={"file": ("train.jsonl", jsonl(alpaca_records(records)), "application/jsonl")},
    )
    assert dataset.status_code == 201, dataset.text
    return pid, dataset.json()["id"]


def queue_job(api: httpx.Client, project: str, dataset: str, config: dict[str, Any]) -> str:
    response = api.post(
        "/jobs",
        json={"project_id": project, "dataset_id": dataset, "config": config, "evaluate": False},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def wait_all(
    api: httpx.Client, path: str, ids: list[str], timeout: float, done: set[str] = FINISHED
) -> dict[str, dict[str, Any]]:
    """Poll ``path/{id}`` until every row is in ``done``; the rows by id."""
    rows: dict[str, dict[str, Any]] = {}

    def check() -> bool:
        for item in ids:
            if item not in rows:
                row = api.get(f"{path}/{item}").json()
                if row["status"] in done:
                    rows[item] = row
        return len(rows) == len(ids)

    wait_for(check, timeout, interval=1.0, what=f"{len(ids)} rows of {path} to finish")
    return rows


def job_record(api: httpx.Client, job_id: str) -> dict[str, Any]:
    """What the checks read of a finished job: its row, events, loss points, checkpoints."""
    job = api.get(f"/jobs/{job_id}").json()
    events = [e["message"] for e in api.get(f"/jobs/{job_id}/events").json()]
    loss = api.get(f"/jobs/{job_id}/metrics", params={"name": "loss"}).json()
    return {"job": job, "events": events, "loss": [(p["step"], p["value"]) for p in loss]}


def training_once(record: dict[str, Any]) -> list[str]:
    """The faults of one job that should have trained exactly once to the end: problems in
    words, none when it did."""
    job, events, loss = record["job"], record["events"], record["loss"]
    problems = []
    if job["status"] != "succeeded":
        problems.append(f"status {job['status']}: {job['error']}")
    if events.count("Succeeded") != 1:
        problems.append(f"{events.count('Succeeded')} 'Succeeded' events")
    starts = sum(m.startswith("Started on worker") for m in events)
    if starts != job["attempts"]:
        problems.append(f"{starts} starts for {job['attempts']} attempts")
    steps = [s for s, _ in loss]
    if len(steps) != len(set(steps)):
        problems.append("duplicate metric points")
    total = job["config"]["max_steps"]
    if sorted(set(steps)) != list(range(1, total + 1)):
        problems.append(f"missing metric points ({len(set(steps))} of {total})")
    return problems


def pid_of(worker: str | None) -> int | None:
    """The process id in a lease's worker name (host:pid)."""
    if not worker or ":" not in worker:
        return None
    try:
        return int(worker.rsplit(":", 1)[1])
    except ValueError:
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, ensure_ascii=False), flush=True)


def timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.monotonic()
    result = fn()
    result["seconds"] = round(time.monotonic() - started, 1)
    return result
