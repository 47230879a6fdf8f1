"""Service settings: one pydantic-settings class, read from the environment and ``.env``.

Every variable is listed with its default in ``.env.example`` at the repository
root. Nothing is read at import time: entry points call ``Settings()``; tests
build ``Settings(database_url=..., secret_key=...)`` directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from migrainemamba.config import repo_root

# HS256 keys shorter than this are guessable offline from one token (RFC 7518 asks >= 256 bits)
MIN_SECRET_LENGTH = 32


def default_database_url() -> str:
    """The embedded default: SQLite under ``<repo>/data/service/`` (absolute, so cwd never matters)."""
    return f"sqlite:///{repo_root() / 'data' / 'service' / 'migrainemamba.db'}"


def normalize_database_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` use psycopg 3 (the installed driver), not psycopg2."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


class Settings(BaseSettings):
    """All service configuration. Environment variables are the upper-case field names."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = Field(
        default_factory=default_database_url,
        description="SQLAlchemy URL; SQLite file by default, postgresql://user@host/db in production",
    )
    auto_migrate: bool = Field(
        True, description="run `alembic upgrade head` when the service starts (in the background)"
    )
    # Every wait on the database is bounded, so a slow or vanished database gives a fast 503.
    database_connect_timeout_seconds: int = Field(
        2, ge=2, le=60, description="opening a connection (psycopg's minimum is 2 s)"
    )
    database_statement_timeout_seconds: float = Field(
        5.0, gt=0, le=300, description="one statement or lock wait (PostgreSQL), busy wait (SQLite)"
    )
    database_pool_timeout_seconds: float = Field(
        1.0, gt=0, le=60, description="waiting for a free connection of the pool"
    )
    migration_retry_seconds: float = Field(
        2.0, gt=0, le=300, description="pause between migration attempts while the database is down"
    )

    secret_key: SecretStr | None = Field(
        None,
        description="HMAC key for access tokens; when unset, a random key is created once in secret_key_file",
    )
    secret_key_file: Path = Field(
        default_factory=lambda: repo_root() / "data" / "service" / "secret.key"
    )
    token_ttl_days: int = Field(365, ge=1, le=3650)
    operator_token: SecretStr | None = Field(
        None,
        description="bearer token that shows readiness details at /ready (unset: only ready true/false)",
    )

    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed by CORS (empty: none)"
    )

    # risk levels of a forecast probability p (a *daily onset* probability, so small):
    # p < low: minimal; low <= p < moderate: low; moderate <= p < high: moderate; p >= high: high
    # defaults: 3 attacks a month is a base rate of ~0.10, i.e. "low" on an ordinary day
    low_risk_threshold: float = Field(0.10, gt=0, lt=1)
    moderate_risk_threshold: float = Field(0.20, gt=0, lt=1)
    high_risk_threshold: float = Field(0.35, gt=0, lt=1)

    routing_table_path: Path | None = Field(
        None,
        description="routing JSON {phase: {model, version, path}}; unset: every phase -> built-in base rate",
    )
    timezone: str = Field(
        "UTC", description="IANA zone that defines 'today' for forecasts and date checks"
    )

    weather_api_key: SecretStr | None = Field(
        None, description="OpenWeatherMap key; unset: no pressure lookups"
    )
    weather_url: str = "https://api.openweathermap.org/data/2.5/weather"
    weather_timeout_seconds: float = Field(2.0, gt=0, le=30)
    weather_cache_seconds: float = Field(1800.0, ge=0)

    max_body_bytes: int = Field(
        256 * 1024, ge=1024, le=64 * 1024 * 1024, description="largest request body accepted (413 above)"
    )

    insights_window_days: int = Field(
        30, ge=7, le=365, description="recent days the insights aggregate over"
    )

    @field_validator("database_url")
    @classmethod
    def _normalize_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("secret_key", "operator_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and 0 < len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"{info.field_name.upper()} must be at least {MIN_SECRET_LENGTH} characters "
                f"(got {len(value.get_secret_value())}); e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"TIMEZONE {value!r} is not an IANA time zone (e.g. UTC, Europe/Oslo)"
            ) from exc
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> Self:
        if not self.low_risk_threshold < self.moderate_risk_threshold < self.high_risk_threshold:
            raise ValueError(
                "risk thresholds must satisfy LOW_RISK_THRESHOLD < MODERATE_RISK_THRESHOLD < "
                f"HIGH_RISK_THRESHOLD, got {self.low_risk_threshold}, {self.moderate_risk_threshold}, "
                f"{self.high_risk_threshold}"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def risk_level(self, probability: float) -> str:
        """``minimal``, ``low``, ``moderate`` or ``high`` (see the thresholds above)."""
        if probability >= self.high_risk_threshold:
            return "high"
        if probability >= self.moderate_risk_threshold:
            return "moderate"
        if probability >= self.low_risk_threshold:
            return "low"
        return "minimal"

    def predicts_attack(self, probability: float) -> bool:
        """A forecast 'says attack' when its risk level is moderate or high (used for was_correct)."""
        return probability >= self.moderate_risk_threshold


# Process-level variables the service also reads, besides the Settings fields.
_PROCESS_KEYS = frozenset({"MIGRAINEMAMBA_ROOT", "BENTOML_HOME"})


def without_service_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` without any variable the service reads.

    For child servers started by tests and benchmarks, so the parent's settings never leak in.
    """
    keys = {name.upper() for name in Settings.model_fields} | _PROCESS_KEYS
    return {k: v for k, v in environ.items() if k.upper() not in keys}
