"""Where tunelab's page templates, static files and migrations are, however it is installed.

A wheel (``pip install .``, the Docker images) carries the repository's top-level templates/
and static/ inside the app package, as app/_templates and app/_static (pyproject.toml maps
them). A checkout, and the editable install of ``make install``, has only the repository's
folders: the installed location is used when it is there, else the checkout's.
"""

from __future__ import annotations

from pathlib import Path

APP_PACKAGE = Path(__file__).resolve().parents[1]


def _folder(installed: str, in_checkout: str) -> Path:
    inside = APP_PACKAGE / installed
    return inside if inside.is_dir() else APP_PACKAGE.parent / in_checkout


TEMPLATES_DIR = _folder("_templates", "templates")
STATIC_DIR = _folder("_static", "static")
# The translation catalogs (<locale>/LC_MESSAGES/messages.po, compiled to .mo at install): part
# of the app package in the checkout and in the wheel alike.
TRANSLATIONS_DIR = APP_PACKAGE / "translations"
# Alembic's script location (env.py, script.py.mako, versions/): the `migrations` package,
# which the wheel installs next to app and the checkout keeps next to app/. Taken as app's
# sibling rather than looked up by name, so another `migrations` on sys.path is never used.
MIGRATIONS_DIR = APP_PACKAGE.parent / "migrations"
