"""Fresh databases for store tests: a SQLite file, or a new database on the PostgreSQL server of this machine
(ARBITER_TEST_POSTGRES names the server; the tests skip, saying why, where none answers)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

POSTGRES = os.environ.get("ARBITER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def fresh_database(kind: str, folder: Path) -> Iterator[str]:
    """The URL of an empty database of `kind` ('sqlite' or 'postgresql'), dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'annotations.sqlite'}"
        return
    import psycopg

    name = f"arbiter_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {POSTGRES}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
