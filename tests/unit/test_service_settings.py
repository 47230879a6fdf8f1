"""Settings from the environment / .env, risk levels, tokens, and the BentoML service wrapper."""

from __future__ import annotations

import importlib
import os
import stat
import sys
from datetime import timedelta

import pytest
from pydantic import ValidationError

from migrainemamba.service.security import (
    InvalidToken,
    create_access_token,
    resolve_secret,
    verify_access_token,
)
from migrainemamba.service.settings import Settings
from tests.unit.test_service_support import make_settings

ENV_KEYS = (
    "DATABASE_URL",
    "SECRET_KEY",
    "CORS_ORIGINS",
    "LOW_RISK_THRESHOLD",
    "MODERATE_RISK_THRESHOLD",
    "HIGH_RISK_THRESHOLD",
    "ROUTING_TABLE_PATH",
    "WEATHER_API_KEY",
    "SECRET_KEY_FILE",
)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return monkeypatch


def test_defaults_embedded_sqlite_and_builtin_routing(clean_env):
    settings = Settings()
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith(
        "migrainemamba.db"
    )
    assert os.path.isabs(settings.database_url.removeprefix("sqlite:///"))
    assert settings.routing_table_path is None and settings.weather_api_key is None
    assert settings.cors_origins == []


def test_environment_variables(clean_env):
    clean_env.setenv("DATABASE_URL", "postgresql://postgres@db:5432/mm")
    clean_env.setenv("CORS_ORIGINS", "https://a.example, http://localhost:3000")
    clean_env.setenv("LOW_RISK_THRESHOLD", "0.02")
    clean_env.setenv("SECRET_KEY", "s3cret-long-enough-0123456789abcdef")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://postgres@db:5432/mm"
    assert settings.cors_origins == ["https://a.example", "http://localhost:3000"]
    assert settings.low_risk_threshold == 0.02
    assert settings.secret_key is not None and settings.secret_key.get_secret_value() == "s3cret-long-enough-0123456789abcdef"
    assert "s3cret-long-enough-0123456789abcdef" not in repr(settings)


def test_dotenv_file(clean_env, tmp_path):
    (tmp_path / ".env").write_text(
        "DATABASE_URL=sqlite:////tmp/from-dotenv.db\nHIGH_RISK_THRESHOLD=0.5\n"
    )
    settings = Settings()
    assert (
        settings.database_url == "sqlite:////tmp/from-dotenv.db"
        and settings.high_risk_threshold == 0.5
    )


def test_thresholds_must_be_ordered(clean_env):
    clean_env.setenv("MODERATE_RISK_THRESHOLD", "0.05")
    with pytest.raises(ValidationError, match="LOW_RISK_THRESHOLD < MODERATE_RISK_THRESHOLD"):
        Settings()


def test_env_example_lists_every_setting():
    from migrainemamba.config import repo_root

    text = (repo_root() / ".env.example").read_text()
    for name in Settings.model_fields:
        assert name.upper() in text, name


@pytest.mark.parametrize(
    ("p", "level"),
    [
        (0.0, "minimal"),
        (0.099, "minimal"),
        (0.1, "low"),
        (0.2, "moderate"),
        (0.35, "high"),
        (1.0, "high"),
    ],
)
def test_risk_levels(tmp_path, p, level):
    settings = make_settings(tmp_path)
    assert settings.risk_level(p) == level
    assert settings.predicts_attack(p) == (level in {"moderate", "high"})


def test_tokens_roundtrip_and_reject_tampering():
    secret = "a-secret-key-for-tests-0123456789abcdef"
    token = create_access_token("user-1", secret, timedelta(days=1))
    assert verify_access_token(token, secret) == "user-1"
    with pytest.raises(InvalidToken):
        verify_access_token(token[:-2] + ("AA" if not token.endswith("AA") else "BB"), secret)
    with pytest.raises(InvalidToken):
        verify_access_token(create_access_token("user-1", secret, timedelta(seconds=-1)), secret)


def test_missing_secret_key_creates_one_private_key_file(tmp_path):
    settings = make_settings(
        tmp_path, secret_key=None, secret_key_file=tmp_path / "keys" / "secret.key"
    )
    first = resolve_secret(settings)
    assert len(first) >= 32 and resolve_secret(settings) == first
    assert stat.S_IMODE((tmp_path / "keys" / "secret.key").stat().st_mode) == 0o600


def test_bentoml_service_mounts_the_api_under_api_v1(clean_env, tmp_path):
    from starlette.testclient import TestClient

    clean_env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'bento.db'}")
    clean_env.setenv("SECRET_KEY", "bento-test-secret-key-0123456789abcdef")
    sys.modules.pop("migrainemamba.service.service", None)
    module = importlib.import_module("migrainemamba.service.service")
    assert not (tmp_path / "bento.db").exists()  # importing the service touches no database
    with TestClient(module.MigraineMamba.to_asgi()) as client:
        assert client.get("/api/v1/health").json() == {"status": "ok"}
        # migration runs in the background: readiness is true once it is done (not a race to win)
        assert module.app.state.runtime.wait_migrated(30)
        assert client.get("/readyz").status_code == 200
        assert client.get("/api/v1/ready").json()["ready"] is True
        docs = client.get("/api/v1/docs")
        assert docs.status_code == 200 and "/api/v1/docs-static/swagger-ui-bundle.js" in docs.text
        assert client.get("/api/v1/docs-static/swagger-ui-bundle.js").status_code == 200
        assert "/users/onboarding" in client.get("/api/v1/openapi.json").json()["paths"]
        created = client.post(
            "/api/v1/users/onboarding",
            json={
                "gender": "X",
                "age": 30,
                "height_cm": 170.0,
                "weight_kg": 70.0,
                "attacks_per_month": 1.0,
                "has_menstrual_cycle": False,
            },
        )
        assert created.status_code == 201
    sys.modules.pop("migrainemamba.service.service", None)
