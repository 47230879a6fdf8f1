"""Engine, sessions, migrations and the ``SessionDep`` dependency.

SQLite is the embedded default (a file; foreign keys switched on per
connection), PostgreSQL is used through ``DATABASE_URL``. The schema is only
ever created by Alembic (``migrate``), never by ``metadata.create_all``, so
tests exercise the same migrations as production.

One request is one transaction (docs/architecture.md, serving):

- Every wait is bounded: connect (``connect_timeout``), statement and lock waits
  (PostgreSQL ``statement_timeout`` / ``lock_timeout``, SQLite's busy timeout) and
  pool checkout, so a slow or vanished database becomes a fast 503.
- SQLite: pysqlite's own transaction handling is switched off and SQLAlchemy
  emits ``BEGIN`` itself (SQLAlchemy's documented "Serializable isolation /
  Savepoints / Transactional DDL" recipe). Without it ``begin_nested()`` is no
  real SAVEPOINT and its ``RELEASE`` commits half a request.
- A request that may write (any method but GET/HEAD/OPTIONS) is a *writer*:
  on SQLite its transaction starts with ``BEGIN IMMEDIATE`` (one writer at a
  time, waiting at most the busy timeout; no read-then-upgrade deadlock); on
  PostgreSQL it locks the row of the user it acts for (``deps.authorize``), so
  the writes of one person are serialised and counters computed in the same
  transaction are exact.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import Depends, Request
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

ALEMBIC_DIR = Path(__file__).resolve().parent / "alembic"
# any constant: serialises concurrent `upgrade head` of several workers on PostgreSQL
_MIGRATION_LOCK_KEY = 7_021_184_535


# execution option of a connection whose transaction may write (see the module docstring)
WRITER = "migrainemamba_writer"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# enough connections for the thread pool of one worker under load (pool checkout is bounded)
POOL_SIZE, MAX_OVERFLOW = 10, 20


class DatabaseNotReady(Exception):
    """The database has not been migrated yet (unreachable at start-up, or migration pending)."""


def make_engine(
    url: str,
    *,
    connect_timeout: int = 2,
    statement_timeout: float = 5.0,
    pool_timeout: float = 1.0,
) -> Engine:
    """An engine for ``url`` with bounded waits; for a SQLite file, its folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": statement_timeout},
            pool_size=POOL_SIZE,
            max_overflow=MAX_OVERFLOW,
            pool_timeout=pool_timeout,
        )
        _sqlite_transactions(
            engine,
            file_backed=bool(parsed.database) and parsed.database != ":memory:",
            writer_wait=statement_timeout,
        )
        return engine
    ms = int(statement_timeout * 1000)
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_timeout=pool_timeout,
        connect_args={
            "connect_timeout": connect_timeout,
            "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
            # a peer that vanished without closing is noticed within seconds, not hours
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "tcp_user_timeout": ms,
        },
    )


def _sqlite_transactions(engine: Engine, file_backed: bool, writer_wait: float) -> None:
    """SQLAlchemy's pysqlite recipe: real BEGIN / SAVEPOINT; writers begin IMMEDIATE.

    Writers of one process also queue on a lock before ``BEGIN IMMEDIATE``: SQLite's own busy
    wait polls with growing sleeps and starves some writers under load (measured: 3 of 944
    writes of 16 concurrent clients waited out 5 s), a lock wakes the next writer at once.
    Other processes (workers) still meet at SQLite's lock. Both waits are bounded.
    """
    writers = threading.Lock()
    held = "migrainemamba_writer_lock"

    def _release(connection: Connection) -> None:
        if connection.info.pop(held, False):
            writers.release()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite emits no BEGIN of its own
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if file_backed:  # readers never block the writer, nor the writer them
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if not connection.get_execution_options().get(WRITER, False):
            connection.exec_driver_sql("BEGIN")
            return
        if not writers.acquire(timeout=writer_wait):
            raise OperationalError("BEGIN IMMEDIATE", None, TimeoutError(f"no write turn within {writer_wait} s"))
        connection.info[held] = True
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except Exception:
            _release(connection)
            raise

    event.listen(engine, "commit", _release)
    event.listen(engine, "rollback", _release)

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:  # a connection dropped mid-write
        if record is not None and record.info.pop(held, False):
            writers.release()


def begin_writer(session: Session) -> None:
    """Start ``session``'s transaction as a writer (call before its first statement).

    A session that has read already is rolled back first (its reads are retaken
    under the writer's lock): on SQLite a reader cannot safely become a writer.
    """
    if session.in_transaction():
        session.rollback()
    session.info[WRITER] = True
    session.connection(execution_options={WRITER: True})


def is_writer(session: Session) -> bool:
    return bool(session.info.get(WRITER, False))


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
    """One session (one transaction) per request, from the app's runtime (``runtime.Runtime``).

    503 (``DatabaseNotReady``) at once while the database is not migrated; a
    request that may write begins as a writer (module docstring).
    """
    runtime = request.app.state.runtime
    runtime.require_database()
    with runtime.sessions() as session:
        if request.method not in SAFE_METHODS:
            begin_writer(session)
        yield session


SessionDep = Annotated[Session, Depends(get_db)]
