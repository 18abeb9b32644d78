"""Alembic's entry: run against the engine the store opened (arbiter.annotation.database puts it in attributes)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from arbiter.annotation.tables import Base

config = context.config
engine = config.attributes.get("engine")
if not engine:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic was given neither an engine (attributes['engine']) nor sqlalchemy.url")
    engine = create_engine(url)

with engine.begin() as connection:
    # render_as_batch: SQLite alters a table by copying it, which Alembic's batch mode does.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
