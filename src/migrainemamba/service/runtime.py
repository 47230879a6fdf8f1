"""What one service process holds: engine and sessions, the forecaster, the token key, the weather provider.

Built lazily (:meth:`Runtime.start`, called by the app's lifespan and by the
first request), so creating the app has no side effects: importing the
BentoML service module touches no database and loads no model.

Start-up order: load the routing table (a broken table stops the service with
its error), resolve the token key, then migrate the database. A database that
is unreachable at start-up does not stop the process: readiness reports it
and migration is retried on the next readiness check or request.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from migrainemamba.service.db import database_status, make_engine, make_sessionmaker, migrate
from migrainemamba.service.forecasting import Forecaster
from migrainemamba.service.security import resolve_secret
from migrainemamba.service.settings import Settings
from migrainemamba.service.weather import PressureProvider, provider_from_settings

log = logging.getLogger(__name__)


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

    def start(self) -> None:
        if self._started and self._migrated:
            return
        with self._lock:
            if not self._started:
                if self._forecaster is None:
                    self._forecaster = Forecaster.from_settings(self.settings)
                if self._weather is None:
                    self._weather = provider_from_settings(self.settings)
                self._secret = resolve_secret(self.settings)
                self._engine = make_engine(self.settings.database_url)
                self._sessions = make_sessionmaker(self._engine)
                self._started = True
            if not self._migrated:
                self._migrate()

    def _migrate(self) -> None:
        assert self._engine is not None
        try:
            migrate(self._engine)
        except SQLAlchemyError as exc:
            log.error("database migration failed (will retry): %s", exc)
            return
        self._migrated = True

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
        database = database_status(self.engine)
        models = self.forecaster.status()
        return {
            "ready": bool(database["ok"] and models["ok"]),
            "database": database,
            "models": models,
        }

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        close = getattr(self._weather, "close", None)
        if callable(close):
            close()
