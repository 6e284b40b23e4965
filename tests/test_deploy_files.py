"""No Docker engine runs on the build machines, so the cluster files are checked statically:
against the Compose specification's JSON schema, and every command against the real CLI."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from app.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
NEEDED = {"TUNELAB_DATABASE_URL", "TUNELAB_BROKER_URL", "TUNELAB_DATA_DIR", "TUNELAB_SECRET_KEY"}


def compose_schema() -> dict[str, Any]:
    # The Compose specification's schema as shipped by docker-compose 1.29 (installed without
    # its dependencies, for this file only); located, not imported.
    spec = importlib.util.find_spec("compose")
    assert spec and spec.submodule_search_locations, "pip install --no-deps docker-compose==1.29.2"
    path = Path(next(iter(spec.submodule_search_locations))) / "config" / "compose_spec.json"
    return json.loads(path.read_text())


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def tunelab_verbs() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)  # type: ignore[arg-type]


def commands_in(command: list[str] | str) -> list[list[str]]:
    """The tunelab invocations in a service command, including inside `sh -c`."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in argv[2].split("&&")]
    return [argv]


def test_compose_file_follows_the_compose_specification() -> None:
    jsonschema.validate(compose(), compose_schema())


def test_compose_has_database_broker_web_and_gpu_worker() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "web"} <= set(services)
    workers = [s for name, s in services.items() if name.startswith("worker")]
    assert workers, "at least one GPU worker service"
    for worker in workers:
        devices = worker["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
        assert len(devices[0]["device_ids"]) == 1, "one worker process per GPU"


def test_every_tunelab_command_in_compose_is_a_real_entry_point_with_its_settings() -> None:
    verbs = tunelab_verbs()
    parser = build_parser()
    checked = 0
    for name, service in compose()["services"].items():
        if "command" not in service or service.get("image", "").split(":")[0] != "tunelab":
            continue
        for argv in commands_in(service["command"]):
            assert argv[0] == "tunelab", f"{name}: {argv}"
            assert argv[1] in verbs, f"{name}: unknown verb {argv[1]}"
            parser.parse_args(argv[1:])  # exits on unknown options
            checked += 1
        assert set(service["environment"]) >= NEEDED, (
            f"{name} lacks {NEEDED - set(service['environment'])}"
        )
    assert checked >= 3


def test_web_service_migrates_before_serving() -> None:
    web = compose()["services"]["web"]
    steps = [argv[1:3] for argv in commands_in(web["command"])]
    assert steps[0] == ["db", "upgrade"] and steps[-1][0] == "serve"


def test_dockerfile_default_command_is_a_real_entry_point() -> None:
    cmd_line = next(
        line for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("CMD")
    )
    argv = json.loads(cmd_line.removeprefix("CMD").strip())
    assert argv[0] == "tunelab"
    build_parser().parse_args(argv[1:])
