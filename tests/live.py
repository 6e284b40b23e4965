"""Starting and stopping real tunelab processes for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    check: Callable[[], T | None], timeout: float, interval: float = 0.5, what: str = "condition"
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # the server's environment
    _handles: list[IO[Any]] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 45) -> None:
        # Longer than serve's own grace for its worker's warm shutdown (30 s,
        # app/cli/supervisor.py): killed sooner, serve would take its worker down mid-hand-back
        # on a loaded machine, and the job would stay "running" until the next start.
        for proc in [self.process, *self.children]:
            _stop(proc, sig, timeout)
        for handle in self._handles:
            handle.close()

    def tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tunelab(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def start_server(
    *,
    port: int,
    env: dict[str, str],
    log: Path,
    extra_args: list[str] | None = None,
    timeout: float = 90,
) -> LiveServer:
    handle = log.open("ab")
    proc = subprocess.Popen(
        tunelab("serve", "--host", "127.0.0.1", "--port", str(port), *(extra_args or [])),
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(
        url=f"http://127.0.0.1:{port}", process=proc, log=log, env=env, _handles=[handle]
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"tunelab serve exited early:\n{server.tail()}")
        try:
            return httpx.get(server.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout, what="tunelab serve to answer")
    return server


def start_worker(*, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(tunelab("worker"), env=env, stdout=handle, stderr=subprocess.STDOUT)


def cli_token(email: str, env: dict[str, str], scopes: str = "read,write") -> str:
    """An API token for ``email`` from `tunelab token create`."""
    out = subprocess.run(
        tunelab("token", "create", "--user", email, "--scopes", scopes, "--name", "tests"),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def embedded_api(server: LiveServer, env: dict[str, str]) -> httpx.Client:
    """A client for an embedded server, as the local admin its first start created."""
    token = cli_token("admin@localhost", env, scopes="read,write,admin")
    return httpx.Client(
        base_url=server.url + "/api/v1", timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def embedded_env(data_dir: Path) -> dict[str, str]:
    """The environment of a fresh machine: no database or broker settings at all."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TUNELAB_DATABASE_URL", "TUNELAB_BROKER_URL")
    }
    env["TUNELAB_DATA_DIR"] = str(data_dir)
    return env


def api_client(server_url: str, token: str, *, timeout: float = 60) -> httpx.Client:
    """An httpx client for ``/api/v1`` of a running server, sending ``token``."""
    return httpx.Client(
        base_url=server_url + "/api/v1",
        timeout=timeout,
        headers={"Authorization": f"Bearer {token}"},
    )
