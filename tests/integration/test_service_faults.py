"""Faults against the real server (`bentoml serve` subprocess on 127.0.0.1): the database hangs,
stops and comes back, the server is killed mid-write, and many clients write one person at once.

- Hung database: a listener that accepts connections and never answers. ``/livez``
  answers at once (< 1 s) throughout; readiness and routes answer 503 within 3 s.
- Stopped database (a private PostgreSQL cluster, skipped without its binaries):
  503 while it is down, recovery when it is back, nothing stored lost.
- kill -9 during 4 concurrent writers (SQLite): in the database it leaves (what a
  restarted server reads) every acknowledged write is present and every stored day
  agrees with its user's counters.
- 20 concurrent outcome PUTs alternating attack / no attack, and 20 concurrent
  submits of distinct dates, on SQLite and on PostgreSQL: every row is consistent
  and ``days_logged`` / ``current_phase`` are exact.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from migrainemamba.features import phase_of
from migrainemamba.service import crud
from migrainemamba.service.db import make_engine, make_sessionmaker
from tests.integration.server_support import (
    pg_available,
    private_postgres,
    start_server,
    stop_server,
    wait_for,
)
from tests.unit.test_service_support import PROFILE

pytestmark = pytest.mark.integration

LIVE_WITHIN_S = 1.0
UNAVAILABLE_WITHIN_S = 3.0


def _today() -> date:
    return datetime.now(UTC).date()


def _onboard(api: str) -> tuple[str, dict[str, str]]:
    profile = {**PROFILE, "cycle_start_day": (_today() - timedelta(days=10)).isoformat()}
    response = httpx.post(f"{api}/users/onboarding", json=profile, timeout=30)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["user"]["user_id"], {"Authorization": f"Bearer {body['access_token']}"}


def _timed(method: str, url: str, **kwargs: Any) -> tuple[int, float]:
    started = time.monotonic()
    try:
        status = httpx.request(method, url, timeout=30, **kwargs).status_code
    except httpx.TransportError:
        status = -1
    return status, time.monotonic() - started


# ------------------------------------------------------------ hung database


class HungListener:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte (a hung database)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The hung-database, SQLite and private-PostgreSQL servers, started together (start-up is
    most of these tests' time: each is left loading once it listens); each test waits for its own."""
    work = tmp_path_factory.mktemp("faults")
    hung = HungListener()
    with ExitStack() as stack:  # unwound in reverse: the servers, then PostgreSQL, then the listener
        stack.callback(hung.close)
        pg = stack.enter_context(private_postgres()) if pg_available() else None
        urls = {"hung": f"postgresql://postgres@127.0.0.1:{hung.port}/mm", "sqlite": f"sqlite:///{work / 'service.db'}"}
        if pg is not None:
            urls["pg_server"] = pg.url
        started = {}
        for key, url in urls.items():
            started[key] = start_server(work, url, key.removesuffix("_server"))
            stack.callback(stop_server, started[key])
        yield {"work": work, "hung_listener": hung, "pg": pg, **started}


def test_hung_database_live_at_once_ready_and_routes_503_fast(servers):
    hung, server = servers["hung_listener"], servers["hung"]
    wait_for(server, "/livez")
    for _ in range(5):  # while migration attempts hang on the listener
        status, seconds = _timed("GET", f"{server.base}/livez")
        assert status == 200 and seconds < LIVE_WITHIN_S, (status, seconds)
    checks = [
        ("GET", f"{server.base}/readyz", {}),
        ("GET", f"{server.api}/ready", {}),
        ("POST", f"{server.api}/users/onboarding", {"json": PROFILE}),
    ]
    for method, url, kwargs in checks:
        status, seconds = _timed(method, url, **kwargs)
        assert status == 503 and seconds < UNAVAILABLE_WITHIN_S, (url, status, seconds)
    assert len(hung.held) >= 1, "the server never tried the database"
    status, seconds = _timed("GET", f"{server.base}/livez")
    assert status == 200 and seconds < LIVE_WITHIN_S


# ---------------------------------------------------- concurrency, both backends


def _concurrent_outcomes_stay_consistent(api: str, rounds: int = 3) -> None:
    user_id, headers = _onboard(api)
    day = (_today() - timedelta(days=1)).isoformat()
    attack = {"migraine_occurred": True, "migraine_severity": 5, "migraine_duration_hours": 3.0}
    calm = {"migraine_occurred": False}
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client, ThreadPoolExecutor(20) as pool:
        for _ in range(rounds):
            bodies = [attack if i % 2 else calm for i in range(20)]
            statuses = list(pool.map(lambda b: client.put(f"/logs/outcome/{user_id}/{day}", json=b).status_code, bodies))
            assert statuses == [200] * 20, statuses
            row = client.get(f"/logs/history/{user_id}").json()["logs"][0]
            if row["migraine_occurred"]:
                assert (row["migraine_severity"], row["migraine_duration_hours"]) == (5, 3.0), row
            else:
                assert (row["migraine_severity"], row["migraine_duration_hours"]) == (None, None), row
        # a severity sent for a day stored as "no attack" is refused, not merged
        client.put(f"/logs/outcome/{user_id}/{day}", json=calm)
        refused = client.post("/logs/submit", json={"user_id": user_id, "date": day, "migraine_severity": 8})
        assert refused.status_code == 409 and refused.json()["detail"][0]["loc"] == ["body", "migraine_severity"]


def _concurrent_submits_count_exactly(api: str, n: int = 20) -> None:
    user_id, headers = _onboard(api)
    days = [(_today() - timedelta(days=k + 1)).isoformat() for k in range(n)]
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client, ThreadPoolExecutor(n) as pool:
        statuses = list(
            pool.map(
                lambda d: client.post("/logs/submit", json={"user_id": user_id, "date": d, "stress_level": 4}).status_code,
                days,
            )
        )
        assert statuses == [201] * n, statuses
        profile = client.get(f"/users/profile/{user_id}").json()
        assert profile["days_logged"] == n
        assert profile["current_phase"] == phase_of(n + 1)
        assert client.get(f"/logs/history/{user_id}").json()["count"] == n


def test_concurrent_outcomes_and_submits_sqlite(servers):
    server = servers["sqlite"]
    wait_for(server, "/readyz")
    _concurrent_outcomes_stay_consistent(server.api)
    _concurrent_submits_count_exactly(server.api)


# ---------------------------------------------- PostgreSQL stopped and started


@pytest.mark.skipif(not pg_available(), reason="no PostgreSQL binaries (initdb, pg_ctl) to start a private instance")
def test_postgres_concurrency_then_stopped_503_and_recovery(servers):
    pg, server = servers["pg"], servers["pg_server"]
    wait_for(server, "/readyz")
    _concurrent_outcomes_stay_consistent(server.api)
    _concurrent_submits_count_exactly(server.api)
    user_id, headers = _onboard(server.api)
    profile = f"{server.api}/users/profile/{user_id}"
    assert httpx.get(profile, headers=headers, timeout=10).status_code == 200
    pg.stop()
    for _ in range(3):
        status, seconds = _timed("GET", profile, headers=headers)
        assert status == 503 and seconds < UNAVAILABLE_WITHIN_S, (status, seconds)
    status, seconds = _timed("GET", f"{server.base}/livez")
    assert status == 200 and seconds < LIVE_WITHIN_S
    assert _timed("GET", f"{server.base}/readyz")[0] == 503
    pg.start()
    deadline = time.monotonic() + 20
    while (status := _timed("GET", profile, headers=headers)[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert status == 200, "the service did not recover when the database came back"
    assert wait_for(server, "/readyz", timeout=20) >= 0


# --------------------------------------------------- kill -9 during writes


def test_kill_9_during_concurrent_writes_loses_no_acknowledged_write(servers):
    """Runs last: it kills the SQLite server of the module mid-write and checks the database it left."""
    work, server = servers["work"], servers["sqlite"]
    url = f"sqlite:///{work / 'service.db'}"
    acknowledged: dict[str, dict[str, Any]] = {}
    try:
        wait_for(server, "/readyz")
        owners = [_onboard(server.api) for _ in range(4)]
        stop = threading.Event()

        def writer(owner: tuple[str, dict[str, str]]) -> None:
            user_id, headers = owner
            with httpx.Client(base_url=server.api, headers=headers, timeout=10) as client:
                for k in range(1, 700):
                    if stop.is_set():
                        return
                    day = (_today() - timedelta(days=k)).isoformat()
                    attack = k % 3 == 0
                    body = {"user_id": user_id, "date": day, "stress_level": 1 + k % 10, "migraine_occurred": attack}
                    if attack:
                        body["migraine_severity"] = 1 + k % 10
                    try:
                        response = client.post("/logs/submit", json=body)
                    except httpx.TransportError:
                        return
                    if response.status_code in (200, 201):
                        acknowledged[f"{user_id}/{day}"] = body

        threads = [threading.Thread(target=writer, args=(o,)) for o in owners]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 80 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop_server(server, kill=True)  # SIGKILL to the whole server, mid-write
        stop.set()
        for t in threads:
            t.join(timeout=15)
        assert len(acknowledged) >= 80, f"only {len(acknowledged)} writes before the kill"
    finally:
        stop_server(server)

    # the database as the killed server left it (what a restarted server reads)
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            for user_id, _headers in owners:
                rows = crud.all_logs(session, user_id)
                stored = {f"{user_id}/{r.date.isoformat()}": r for r in rows}
                for key, body in acknowledged.items():
                    if key.startswith(user_id):
                        assert key in stored, f"acknowledged write {key} lost"
                        row = stored[key]
                        assert (row.stress_level, row.migraine_occurred) == (body["stress_level"], body["migraine_occurred"])
                        assert row.migraine_severity == body.get("migraine_severity")
                for row in rows:
                    assert row.migraine_occurred or not row.migraine_severity, (row.date, row.migraine_severity)
                user = crud.get_user(session, user_id)
                assert user.days_logged == len(rows), "counter and rows disagree after kill -9"
                assert user.current_phase == phase_of(len(rows) + 1)
    finally:
        engine.dispose()
