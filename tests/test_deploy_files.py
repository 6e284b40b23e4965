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


def test_compose_has_database_broker_migration_web_and_gpu_and_cpu_workers() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "web"} <= set(services)
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    workers = {name: s for name, s in services.items() if name.startswith("worker")}
    gpu = [s for s in workers.values() if "deploy" in s]
    assert gpu, "at least one GPU worker service"
    for worker in gpu:
        devices = worker["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
        assert len(devices[0]["device_ids"]) == 1, "one worker process per GPU"
    cpu = [s for s in workers.values() if "deploy" not in s]
    assert cpu, "a CPU worker for evaluation chores"
    for worker in cpu:
        assert worker["environment"]["TUNELAB_WORKER_GPUS"] == "0"


def test_every_tunelab_command_in_compose_is_a_real_entry_point_with_its_settings() -> None:
    verbs = tunelab_verbs()
    parser = build_parser()
    checked = 0
    for name, service in compose()["services"].items():
        if "command" not in service or "build" not in service:  # not a tunelab image
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


def test_a_one_shot_service_migrates_before_web_and_workers_start() -> None:
    services = compose()["services"]
    migrate = services["migrate"]
    assert [argv[1:3] for argv in commands_in(migrate["command"])] == [["db", "upgrade"]]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert commands_in(services["web"]["command"])[0][1] == "serve"
    for name, service in services.items():
        if name == "web" or name.startswith("worker"):
            condition = service["depends_on"]["migrate"]["condition"]
            assert condition == "service_completed_successfully", name


def dockerfile_stages() -> dict[str, list[str]]:
    """The Dockerfile's stages by name, each as its instructions (continuation lines joined)."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    logical = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        logical += line.rstrip().removesuffix("\\") + " "
        if line.rstrip().endswith("\\"):
            continue
        instruction, logical = " ".join(logical.split()), ""
        if instruction.startswith("FROM "):
            words = instruction.split()
            assert len(words) == 4 and words[2] == "AS", f"every stage is named: {instruction}"
            current = stages.setdefault(words[3], [])
        current.append(instruction)
    return stages


def default_command(stage: list[str]) -> list[str]:
    cmd = [i for i in stage if i.startswith("CMD ")]
    assert len(cmd) == 1
    return list(json.loads(cmd[0].removeprefix("CMD ")))


def test_dockerfile_default_commands_are_real_entry_points() -> None:
    stages = dockerfile_stages()
    web, worker = default_command(stages["web"]), default_command(stages["worker"])
    for argv in (web, worker):
        assert argv[0] == "tunelab"
        build_parser().parse_args(argv[1:])
    assert web[1] == "serve" and "--no-worker" in web
    assert worker[1] == "worker"


def test_the_web_image_is_slim_and_the_worker_image_has_the_engine() -> None:
    stages = dockerfile_stages()
    web = " ".join(stages["web"])
    assert stages["web"][0].startswith("FROM python:3.11-slim ")
    assert "requirements/web.txt" in web, "the web's lock: no engine, no torch"
    for other in ("lock.txt", "worker.txt", "gpu.txt", "torch", "[engine]"):
        assert other not in web
    worker = " ".join(stages["worker"])
    assert stages["worker"][0].startswith("FROM pytorch/pytorch:")
    assert "-r requirements/worker.txt" in worker and "-r requirements/gpu.txt" in worker
    for name in ("web", "worker"):
        installs = [i for i in stages[name] if "pip install" in i]
        # tunelab itself from its wheel, never editable: the files it serves are inside it.
        assert any("tunelab-*.whl" in i for i in installs), name
        assert not any(" -e " in i or "--editable" in i for i in installs), name


def test_the_wheel_stage_copies_everything_the_wheel_is_built_from() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    needed = {package.split(".")[0] for package in setuptools["packages"]}
    needed |= set(setuptools["package-dir"].values())
    needed |= {"pyproject.toml", project["project"]["readme"]}
    copied = {
        word.removeprefix("./")
        for instruction in dockerfile_stages()["wheel"]
        if instruction.startswith("COPY ") and "--from=" not in instruction
        for word in instruction.split()[1:-1]
    }
    assert needed <= copied, f"the wheel stage lacks {needed - copied}"


def test_compose_builds_the_web_and_worker_images_from_their_targets() -> None:
    stages = dockerfile_stages()
    services = compose()["services"]
    built = {name: s["build"] for name, s in services.items() if "build" in s}
    workers = {name for name in services if name.startswith("worker")}
    assert set(built) == {"web", "migrate"} | workers
    for name, build in built.items():
        assert build["context"] == "."
        assert build["target"] == ("worker" if name in workers else "web"), name
        assert build["target"] in stages
    assert services["web"]["image"] != services["worker-gpu0"]["image"]
