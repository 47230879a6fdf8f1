"""The optional pressure provider, on recorded OpenWeatherMap responses (no network)."""

from __future__ import annotations

import socket

import httpx
import pytest

from migrainemamba.service.weather import OpenWeatherPressure, provider_from_settings
from tests.unit.test_service_support import TODAY, full_day, make_client, make_settings, onboard

URL = "https://api.openweathermap.org/data/2.5/weather"

# recorded responses (current weather API, units=metric)
OSLO_OK = {
    "coord": {"lon": 10.7461, "lat": 59.9127},
    "weather": [{"id": 803, "main": "Clouds", "description": "broken clouds", "icon": "04d"}],
    "base": "stations",
    "main": {
        "temp": 3.2,
        "feels_like": -0.4,
        "temp_min": 2.1,
        "temp_max": 4.0,
        "pressure": 1004,
        "humidity": 81,
        "sea_level": 1004,
        "grnd_level": 995,
    },
    "visibility": 10000,
    "wind": {"speed": 4.1, "deg": 200},
    "clouds": {"all": 75},
    "dt": 1709280000,
    "sys": {"type": 2, "id": 2009047, "country": "NO", "sunrise": 1709274853, "sunset": 1709311816},
    "timezone": 3600,
    "id": 3143244,
    "name": "Oslo",
    "cod": 200,
}
BAD_KEY = {
    "cod": 401,
    "message": "Invalid API key. Please see https://openweathermap.org/faq#error401 for more info.",
}
NOT_FOUND = {"cod": "404", "message": "city not found"}


class Recorder:
    """An httpx transport replaying recorded responses and keeping the requests."""

    def __init__(self, status: int = 200, body: object = OSLO_OK, exc: Exception | None = None):
        self.status, self.body, self.exc = status, body, exc
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.exc is not None:
            raise self.exc
        if isinstance(self.body, str):
            return httpx.Response(self.status, text=self.body)
        return httpx.Response(self.status, json=self.body)


def provider(recorder: Recorder, **kwargs) -> OpenWeatherPressure:
    client = httpx.Client(transport=httpx.MockTransport(recorder))
    values = {"api_key": "k3y", "url": URL, "timeout_seconds": 1.0, "cache_seconds": 600.0}
    values.update(kwargs)
    return OpenWeatherPressure(client=client, **values)


def test_reads_sea_level_pressure_and_sends_city_and_key():
    recorder = Recorder()
    assert provider(recorder).pressure_hpa("Oslo") == 1004.0
    (request,) = recorder.requests
    assert request.url.host == "api.openweathermap.org"
    assert dict(request.url.params) == {"q": "Oslo", "appid": "k3y", "units": "metric"}


def test_successful_lookups_are_cached_per_city():
    now = [0.0]
    recorder = Recorder()
    p = provider(recorder, clock=lambda: now[0])
    assert p.pressure_hpa("Oslo") == p.pressure_hpa(" oslo ") == 1004.0
    assert len(recorder.requests) == 1
    now[0] = 601.0
    p.pressure_hpa("Oslo")
    assert len(recorder.requests) == 2


@pytest.mark.parametrize(
    "recorder",
    [
        Recorder(401, BAD_KEY),
        Recorder(404, NOT_FOUND),
        Recorder(500, "upstream error"),
        Recorder(200, "<html>not json</html>"),
        Recorder(200, {"cod": 200, "name": "Oslo"}),  # no "main"
        Recorder(200, {**OSLO_OK, "main": {"pressure": 42}}),  # outside the contract range
        Recorder(exc=httpx.ReadTimeout("timed out")),
        Recorder(exc=httpx.ConnectError("no route to host")),
    ],
    ids=["401", "404", "500", "not-json", "no-main", "out-of-range", "timeout", "connect-error"],
)
def test_every_failure_falls_back_to_none(recorder):
    assert provider(recorder).pressure_hpa("Oslo") is None


def test_a_server_that_never_answers_times_out_to_none():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)  # accepts the TCP connection, never replies
    try:
        host, port = server.getsockname()
        p = OpenWeatherPressure(
            api_key="k", url=f"http://{host}:{port}/weather", timeout_seconds=0.2, cache_seconds=0
        )
        assert p.pressure_hpa("Oslo") is None
        p.close()
    finally:
        server.close()


def test_no_provider_without_an_api_key(tmp_path):
    assert provider_from_settings(make_settings(tmp_path)) is None
    assert isinstance(
        provider_from_settings(make_settings(tmp_path, weather_api_key="abc")), OpenWeatherPressure
    )


def test_submit_fills_todays_missing_pressure_only(tmp_path):
    recorder = Recorder()
    with make_client(make_settings(tmp_path), weather=provider(recorder)) as client:
        user_id, headers = onboard(client)
        body = full_day(user_id, TODAY)
        del body["barometric_pressure_hpa"]
        today = client.post("/logs/submit", json=body, headers=headers).json()["log"]
        assert today["barometric_pressure_hpa"] == 1004.0
        given = client.post(
            "/logs/submit",
            json=full_day(user_id, TODAY.replace(day=1).replace(month=2)),
            headers=headers,
        )
        assert given.json()["log"]["barometric_pressure_hpa"] == 1013.0  # a value sent is kept
        past = {
            k: v
            for k, v in full_day(user_id, TODAY.replace(month=2, day=2)).items()
            if k != "barometric_pressure_hpa"
        }
        assert (
            client.post("/logs/submit", json=past, headers=headers).json()["log"][
                "barometric_pressure_hpa"
            ]
            is None
        )
        assert len(recorder.requests) == 1  # only for today's row


def test_submit_succeeds_without_pressure_when_the_provider_times_out(tmp_path):
    recorder = Recorder(exc=httpx.ReadTimeout("timed out"))
    with make_client(make_settings(tmp_path), weather=provider(recorder)) as client:
        user_id, headers = onboard(client)
        body = {"user_id": user_id, "date": TODAY.isoformat(), "sleep_hours": 7.0}
        response = client.post("/logs/submit", json=body, headers=headers)
        assert response.status_code == 201
        assert response.json()["log"]["barometric_pressure_hpa"] is None
        assert len(recorder.requests) == 1
