"""Engine, sessions, migrations and the ``SessionDep`` dependency.

SQLite is the embedded default (a file; foreign keys switched on per
connection), PostgreSQL is used through ``DATABASE_URL``. The schema is only
ever created by Alembic (``migrate``), never by ``metadata.create_all``, so
tests exercise the same migrations as production.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import Depends, Request
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

ALEMBIC_DIR = Path(__file__).resolve().parent / "alembic"
# any constant: serialises concurrent `upgrade head` of several workers on PostgreSQL
_MIGRATION_LOCK_KEY = 7_021_184_535


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for a SQLite file, its folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration pointing at the packaged migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` on ``engine`` (locked on PostgreSQL against parallel workers)."""
    cfg = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
    log.info("database migrated to %s", revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def database_status(engine: Engine) -> dict[str, Any]:
    """Readiness of the database: reachable, and migrated to the head revision."""
    status: dict[str, Any] = {"backend": engine.dialect.name, "head": head_revision()}
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            status["revision"] = MigrationContext.configure(connection).get_current_revision()
    except Exception as exc:  # noqa: BLE001 - any driver error means "not ready"
        status.update(ok=False, error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        return status
    status["ok"] = status["revision"] == status["head"]
    if not status["ok"]:
        status["error"] = (
            f"database at revision {status['revision']}, code expects {status['head']}: run migrations"
        )
    return status


def get_db(request: Request) -> Iterator[Session]:
    """One session per request, from the app's runtime (see ``app.Runtime``)."""
    runtime = request.app.state.runtime
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]
