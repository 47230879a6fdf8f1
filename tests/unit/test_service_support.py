"""Shared helpers of the service tests (no tests here): settings on a tmp SQLite file, a fixed 'today'."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from migrainemamba.service.app import create_app
from migrainemamba.service.deps import get_today
from migrainemamba.service.settings import Settings

TODAY = date(2024, 3, 1)
OPERATOR_TOKEN = "operator-token-for-readiness-details-0123"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

PROFILE: dict[str, Any] = {
    "gender": "F",
    "age": 34,
    "height_cm": 170.0,
    "weight_kg": 65.0,
    "location_city": "Oslo",
    "attacks_per_month": 3.0,
    "has_menstrual_cycle": True,
    "cycle_start_day": "2024-02-10",
    "cycle_length_days": 28,
}


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'service.db'}",
        "secret_key": "test-secret-key-with-enough-entropy-0123456789",
        "secret_key_file": tmp_path / "secret.key",
        "operator_token": OPERATOR_TOKEN,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextmanager
def make_client(settings: Settings, today: date = TODAY, **app_kwargs: Any) -> Iterator[TestClient]:
    """A client over ``create_app(settings)`` whose 'today' is ``today`` (lifespan runs)."""
    app = create_app(settings, **app_kwargs)
    app.dependency_overrides[get_today] = lambda: today
    with TestClient(app) as client:
        app.state.runtime.wait_migrated(30)  # migration runs in the background (runtime.Runtime)
        yield client


def onboard(client: TestClient, **overrides: Any) -> tuple[str, dict[str, str]]:
    """Onboard a user; returns (user_id, auth headers)."""
    response = client.post("/users/onboarding", json={**PROFILE, **overrides})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["user"]["user_id"], {"Authorization": f"Bearer {body['access_token']}"}


def full_day(user_id: str, day: date, **values: Any) -> dict[str, Any]:
    """A complete, ordinary diary day (override any field)."""
    body: dict[str, Any] = {
        "user_id": user_id,
        "date": day.isoformat(),
        "sleep_hours": 7.5,
        "sleep_quality_good": True,
        "stress_level": 4,
        "skipped_meals": 0,
        "had_snack": False,
        "alcohol_drinks": 0,
        "caffeine_drinks": 2,
        "water_glasses": 6,
        "bright_light_exposure": False,
        "screen_time_hours": 4.0,
        "menstruating": False,
        "barometric_pressure_hpa": 1013.0,
        "symptoms": [],
        "migraine_occurred": False,
    }
    body.update(values)
    return body


def log_days(
    client: TestClient, headers: dict[str, str], user_id: str, days: int, end: date, **values: Any
) -> None:
    """Log ``days`` ordinary days ending on ``end`` (inclusive)."""
    for k in range(days):
        day = end - timedelta(days=days - 1 - k)
        response = client.post(
            "/logs/submit", json=full_day(user_id, day, **values), headers=headers
        )
        assert response.status_code == 201, response.text
