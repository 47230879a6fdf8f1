"""What one service process holds: engine and sessions, the forecaster, the token key, the weather provider.

Built lazily (:meth:`Runtime.start`, called by the app's lifespan and by the
first request), so creating the app has no side effects: importing the
BentoML service module touches no database and loads no model.

Start-up order: load the routing table (a broken table stops the service with
its error), resolve the token key, then migrate the database *in a background
thread*, retried every ``MIGRATION_RETRY_SECONDS`` until it succeeds. Start-up
itself never touches the database, so liveness answers at once whatever the
database does; until the migration succeeded, readiness is false and every
route that needs the database answers 503 at once (``require_database``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from migrainemamba.service.db import (
    DatabaseNotReady,
    database_status,
    make_engine,
    make_sessionmaker,
    migrate,
)
from migrainemamba.service.forecasting import Forecaster
from migrainemamba.service.security import resolve_secret
from migrainemamba.service.settings import Settings
from migrainemamba.service.weather import PressureProvider, provider_from_settings

log = logging.getLogger(__name__)

# readiness answers within this, however slow the database (BentoML probes /readyz often)
READINESS_WAIT_SECONDS = 1.5


class Runtime:
    def __init__(
        self,
        settings: Settings,
        forecaster: Forecaster | None = None,
        weather: PressureProvider | None = None,
    ) -> None:
        self.settings = settings
        self._forecaster = forecaster
        self._weather = weather
        self._lock = threading.Lock()
        self._started = False
        self._migrated = not settings.auto_migrate
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._secret = ""
        self._closed = threading.Event()
        self._migrator: threading.Thread | None = None
        self._first_attempt = threading.Event()
        self._probe: threading.Thread | None = None
        self._probe_result: dict[str, Any] = {}

    def start(self) -> None:
        """Build what the process holds (no database I/O) and start the background migration."""
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            if self._forecaster is None:
                self._forecaster = Forecaster.from_settings(self.settings)
            if self._weather is None:
                self._weather = provider_from_settings(self.settings)
            self._secret = resolve_secret(self.settings)
            self._engine = make_engine(
                self.settings.database_url,
                connect_timeout=self.settings.database_connect_timeout_seconds,
                statement_timeout=self.settings.database_statement_timeout_seconds,
                pool_timeout=self.settings.database_pool_timeout_seconds,
            )
            self._sessions = make_sessionmaker(self._engine)
            self._started = True
            if not self._migrated:
                self._migrator = threading.Thread(
                    target=self._migrate_until_done, name="migrate", daemon=True
                )
                self._migrator.start()

    def _migrate_until_done(self) -> None:
        assert self._engine is not None
        while not self._closed.is_set():
            try:
                migrate(self._engine)
            except SQLAlchemyError as exc:
                self._first_attempt.set()
                log.error(
                    "database migration failed, retrying in %.0f s: %s",
                    self.settings.migration_retry_seconds,
                    str(exc).splitlines()[0],
                )
                self._closed.wait(self.settings.migration_retry_seconds)
                continue
            self._migrated = True
            self._first_attempt.set()
            return

    @property
    def migrated(self) -> bool:
        return self._migrated

    def wait_migrated(self, timeout: float) -> bool:
        """Block until the first migration attempt is over (tests, scripts): True if migrated."""
        self.start()
        if not self._migrated:
            self._first_attempt.wait(timeout)
        return self._migrated

    def require_database(self) -> None:
        """Raise :class:`DatabaseNotReady` (a 503) unless the database is migrated."""
        self.start()
        if not self._migrated:
            # requests that arrive during the first attempt wait for it (bounded by its timeouts)
            self._first_attempt.wait(self.settings.database_connect_timeout_seconds + 0.5)
        if not self._migrated:
            raise DatabaseNotReady(
                "database not ready: migrations have not run yet (database unreachable?)"
            )

    @property
    def engine(self) -> Engine:
        self.start()
        assert self._engine is not None
        return self._engine

    @property
    def sessions(self) -> sessionmaker[Session]:
        self.start()
        assert self._sessions is not None
        return self._sessions

    @property
    def forecaster(self) -> Forecaster:
        self.start()
        assert self._forecaster is not None
        return self._forecaster

    @property
    def weather(self) -> PressureProvider | None:
        self.start()
        return self._weather

    @property
    def secret(self) -> str:
        self.start()
        return self._secret

    def readiness(self) -> dict[str, Any]:
        """Database reachable and migrated; every phase routed to a loaded model."""
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
            return {
                "ready": False,
                "database": {"ok": False},
                "models": {"ok": False, "error": str(exc)},
            }
        database = self._database_status()
        if database["ok"] and not self._migrated:
            database.update(ok=False, error="migration still running")
        models = self.forecaster.status()
        return {
            "ready": bool(database["ok"] and models["ok"]),
            "database": database,
            "models": models,
        }

    def _database_status(self) -> dict[str, Any]:
        """``database_status``, but answered within ``READINESS_WAIT_SECONDS`` whatever the database
        does: the probe runs in its own thread (one at a time) and a late probe reads as not ready."""
        with self._lock:
            if self._probe is None or not self._probe.is_alive():
                result: dict[str, Any] = {}
                self._probe_result = result
                self._probe = threading.Thread(
                    target=lambda: result.update(database_status(self.engine)),
                    name="readiness-probe",
                    daemon=True,
                )
                self._probe.start()
            probe, result = self._probe, self._probe_result
        probe.join(READINESS_WAIT_SECONDS)
        if probe.is_alive() or not result:
            return {"backend": self.engine.dialect.name, "ok": False,
                    "error": f"no answer from the database within {READINESS_WAIT_SECONDS} s"}
        return dict(result)

    def close(self) -> None:
        self._closed.set()
        if self._migrator is not None:
            self._migrator.join(self.settings.database_connect_timeout_seconds + 1)
        if self._engine is not None:
            self._engine.dispose()
        close = getattr(self._weather, "close", None)
        if callable(close):
            close()
