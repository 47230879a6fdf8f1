"""Optional barometric pressure for a diary day, from OpenWeatherMap's current weather.

Used only when ``WEATHER_API_KEY`` is set, and only to fill
``barometric_pressure_hpa`` of a diary row submitted for *today* that has no
pressure, for a user with a ``location_city``. Every failure (timeout,
network, HTTP error, unexpected body, a value outside the contract range) is
logged and gives ``None``: the diary row is then stored without pressure,
which the contract allows. Successful look-ups are cached per city.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import httpx

from migrainemamba.data.schema import DAILY_LOG_COLUMNS
from migrainemamba.service.settings import Settings

log = logging.getLogger(__name__)

_PRESSURE = next(c for c in DAILY_LOG_COLUMNS if c.name == "barometric_pressure_hpa")


class PressureProvider(Protocol):
    def pressure_hpa(self, city: str) -> float | None:
        """Current sea-level pressure at ``city`` in hPa, or None when unavailable."""
        ...


class OpenWeatherPressure:
    """``GET {url}?q={city}&appid={key}`` -> ``main.pressure`` (hPa, sea level)."""

    def __init__(
        self,
        api_key: str,
        url: str,
        timeout_seconds: float,
        cache_seconds: float,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_key = api_key
        self.url = url
        self.timeout = httpx.Timeout(timeout_seconds)
        self.cache_seconds = cache_seconds
        self.client = client or httpx.Client()
        self.clock = clock
        self._cache: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def pressure_hpa(self, city: str) -> float | None:
        key = city.strip().lower()
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        value = self._fetch(city.strip())
        if value is not None:
            with self._lock:
                self._cache[key] = (now, value)
        return value

    def _fetch(self, city: str) -> float | None:
        try:
            response = self.client.get(
                self.url,
                params={"q": city, "appid": self.api_key, "units": "metric"},
                timeout=self.timeout,
            )
            response.raise_for_status()
            value = float(response.json()["main"]["pressure"])
        except httpx.TimeoutException:
            log.warning(
                "weather: timed out after %.1f s for %r; no pressure", self.timeout.read or 0, city
            )
            return None
        except httpx.HTTPStatusError as exc:
            log.warning("weather: HTTP %s for %r; no pressure", exc.response.status_code, city)
            return None
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("weather: no pressure for %r (%s: %s)", city, type(exc).__name__, exc)
            return None
        low, high = _PRESSURE.min, _PRESSURE.max
        if low is not None and high is not None and not low <= value <= high:
            log.warning(
                "weather: pressure %.1f hPa for %r is outside %g..%g; ignored",
                value,
                city,
                low,
                high,
            )
            return None
        return value

    def close(self) -> None:
        self.client.close()


def provider_from_settings(settings: Settings) -> PressureProvider | None:
    """The OpenWeatherMap provider when WEATHER_API_KEY is set, else None (no look-ups)."""
    if settings.weather_api_key is None or not settings.weather_api_key.get_secret_value():
        return None
    return OpenWeatherPressure(
        api_key=settings.weather_api_key.get_secret_value(),
        url=settings.weather_url,
        timeout_seconds=settings.weather_timeout_seconds,
        cache_seconds=settings.weather_cache_seconds,
    )
