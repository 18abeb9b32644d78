"""Opening the store: SQLite in a file by default (nothing to install), PostgreSQL for production and replicas.
The schema belongs to Alembic: `upgrade` brings a database to the newest revision, `downgrade` steps back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def database_url(url: str) -> str:
    """Expands '~' in SQLite paths and picks the psycopg 3 driver for plain postgresql:// URLs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        parsed = parsed.set(database=str(path))
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def open_engine(url: str, writer: bool = True) -> Engine:
    """An engine for the store. On SQLite, a writer's transactions take the write lock when they begin; a reader's
    (writer=False) do not, so reading (authentication, statistics, export) never waits behind a writer in WAL
    mode. On PostgreSQL both are the same."""
    url = database_url(url)
    if not is_sqlite(url):
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _sqlite_connect(connection: Any, _: object) -> None:
        connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below), not the driver
        cursor = connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    # Writers take the lock when the transaction starts: a deferred transaction that reads and then writes can
    # fail with 'database is locked' when another writer got there in between.
    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def contended(exc: OperationalError) -> bool:
    """A deadlock or serialization failure (PostgreSQL), which the same transaction run again resolves."""
    return getattr(exc.orig, "sqlstate", None) in {"40P01", "40001"}


def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    command.downgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()
