"""Boundaries of DESIGN.md that code review alone would let slip."""

from __future__ import annotations

import subprocess
import sys


def modules_after_import(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


def test_the_web_app_never_imports_torch_or_transformers() -> None:
    loaded = modules_after_import("import app.main, app.cli, app.services.queue")
    assert not loaded & {"torch", "transformers", "peft"}


def test_the_training_engine_imports_no_web_database_or_queue_code() -> None:
    loaded = modules_after_import("import worker.training.engine, worker.training.models")
    assert "torch" in loaded
    assert not loaded & {"app", "fastapi", "starlette", "sqlalchemy", "celery", "kombu"}
