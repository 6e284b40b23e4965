"""The import rules of docs/architecture.md, checked on the source (every import, including
those inside functions) and on what importing really loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ("worker.training", "worker.evaluation", "worker.serving", "worker.deploy")
# The one place the web side runs the engine: `tunelab train`, on the user's own machine.
WEB_MAY_RUN_THE_ENGINE = {"app.cli.train": ("worker.training",)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules_under(*packages: str) -> dict[str, set[str]]:
    out = {}
    for package in packages:
        for path in (ROOT / package.replace(".", "/")).rglob("*.py"):
            out[module_name(path)] = imports_of(path)
    return out


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_web_imports_only_the_spec_from_worker() -> None:
    problems = []
    for module, imported in modules_under("app").items():
        allowed = ("worker.spec", *WEB_MAY_RUN_THE_ENGINE.get(module, ()))
        for name in imported:
            if within(name, "worker") and name != "worker" and not within(name, *allowed):
                problems.append(f"{module} imports {name}")
    assert problems == [], "the web may import worker.spec only"


def test_the_engine_and_the_spec_import_no_web_database_or_queue_code() -> None:
    # The model server (worker.serving) is an HTTP app of its own, so FastAPI is allowed there.
    forbidden = ("app", "sqlalchemy", "celery", "kombu", "worker.tasks")
    problems = [
        f"{module} imports {name}"
        for module, imported in modules_under(*ENGINE, "worker.spec").items()
        for name in imported
        if within(name, *forbidden)
        or (within(name, "fastapi", "starlette") and not within(module, "worker.serving"))
    ]
    assert problems == []


def test_the_spec_imports_no_engine_code() -> None:
    problems = [
        f"{module} imports {name}"
        for module, imported in modules_under("worker.spec").items()
        for name in imported
        if within(name, *ENGINE, "torch", "transformers", "peft")
    ]
    assert problems == [], "worker.spec is the torch-free vocabulary both sides share"


def test_the_dataset_library_touches_no_database() -> None:
    forbidden = ("sqlalchemy", "app.models", "app.services", "app.core.db", "app.api", "torch")
    problems = [
        f"{module} imports {name}"
        for module, imported in modules_under("app.datasets").items()
        for name in imported
        if within(name, *forbidden)
    ]
    assert problems == []


def test_no_page_imports_an_api_route_module() -> None:
    problems = [
        f"{module} imports {name}"
        for module, imported in modules_under("app.web").items()
        for name in imported
        if within(name, "app.api.routes")
    ]
    assert problems == []


def test_the_celery_tasks_import_one_another_without_cycles() -> None:
    graph = {
        module: {n for n in imported if within(n, "worker.tasks") and n != module}
        for module, imported in modules_under("worker.tasks").items()
    }
    graph = {m: {n for n in deps if n in graph} for m, deps in graph.items()}
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in visiting, "import cycle: " + " -> ".join([*path, module])
        if module in done:
            return
        visiting.add(module)
        for dep in graph[module]:
            visit(dep, [*path, module])
        visiting.discard(module)
        done.add(module)

    for module in graph:
        visit(module, [])


def modules_loaded_by(statement: str) -> set[str]:
    """Every module a fresh interpreter holds after ``statement``, by full name."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def modules_after_import(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after ``statement``."""
    return {name.split(".")[0] for name in modules_loaded_by(statement)}


def test_the_web_app_never_imports_torch_or_transformers() -> None:
    loaded = modules_after_import("import app.main, app.cli, app.services.queue")
    assert not loaded & {"torch", "transformers", "peft"}


def test_the_command_line_starts_without_the_service_layer() -> None:
    # Every `tunelab` command loads app.cli; the service layer (the database, the queue, the
    # web app) took a second of each start, data commands and --help included. A command that
    # needs it imports it when it runs.
    loaded = modules_loaded_by("import app.cli")
    assert not {name for name in loaded if name.startswith(("app.services", "app.api", "app.web"))}
    assert not {name.split(".")[0] for name in loaded} & {
        "sqlalchemy",
        "celery",
        "fastapi",
        "torch",
    }


def test_the_training_engine_imports_no_web_database_or_queue_code() -> None:
    loaded = modules_after_import("import worker.training.engine, worker.training.models")
    assert "torch" in loaded
    assert not loaded & {"app", "fastapi", "starlette", "sqlalchemy", "celery", "kombu"}


def test_the_spec_loads_without_torch() -> None:
    spec = sorted(
        module_name(p) for p in (ROOT / "worker" / "spec").rglob("*.py") if p.name != "__main__.py"
    )
    loaded = modules_after_import("import " + ", ".join(spec))
    assert not loaded & {"torch", "transformers", "peft", "app", "sqlalchemy", "celery"}
