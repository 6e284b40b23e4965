"""Run Alembic migrations from code, wherever tunelab is installed."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from app.core.paths import MIGRATIONS_DIR


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(revision: str = "head", connection: Connection | None = None) -> None:
    """Bring the database to ``revision``; safe to run on every start."""
    command.upgrade(alembic_config(connection), revision)
