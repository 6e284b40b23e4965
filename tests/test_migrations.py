"""The migrations and the models must describe exactly the same schema, on both backends."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

import app.models  # noqa: F401
from app.core.db import Base, get_engine, make_engine
from app.core.migrate import upgrade


def _diff(engine_url_or_engine: object) -> list[object]:
    engine = (
        engine_url_or_engine
        if not isinstance(engine_url_or_engine, str)
        else make_engine(engine_url_or_engine)
    )
    with engine.connect() as conn:  # type: ignore[attr-defined]
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def test_migrations_produce_exactly_the_models_schema_on_postgres() -> None:
    # conftest migrated this run's database with `tunelab db upgrade`.
    assert _diff(get_engine()) == []


def test_migrations_produce_exactly_the_models_schema_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    with engine.begin() as conn:
        upgrade(connection=conn)
    assert _diff(engine) == []
    assert set(inspect(engine).get_table_names()) >= set(Base.metadata.tables)


def test_downgrade_to_base_removes_every_table(tmp_path: Path) -> None:
    from alembic import command

    from app.core.migrate import alembic_config

    engine = create_engine(f"sqlite:///{tmp_path / 'down.db'}")
    with engine.begin() as conn:
        upgrade(connection=conn)
        command.downgrade(alembic_config(conn), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
