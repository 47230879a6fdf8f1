"""The real-server tests' start helper: a port taken between picking and binding it is retried on
another; another failure, or another process listening on the port, is never taken for a start."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from tests.integration import server_support
from tests.integration.server_support import (
    ServerExited,
    start_listening,
    stop_process,
    wait_listening,
)

pytestmark = pytest.mark.integration

# listens on argv[1] until stopped; taken, it exits with Python's "[Errno 98] Address already in use"
LISTENER = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(120)"


def _listener(port: int) -> list[str]:
    return [sys.executable, "-c", LISTENER, str(port)]


def test_a_server_whose_port_was_taken_starts_on_another(tmp_path, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()  # it answers connections: only the server's own socket may count
        busy = taken.getsockname()[1]
        picks = iter([busy])
        free_port = server_support.free_port
        monkeypatch.setattr(server_support, "free_port", lambda: next(picks, None) or free_port())
        log = tmp_path / "listener.log"
        proc, port = start_listening(_listener, log, dict(os.environ), timeout=30)
        try:
            assert port != busy and proc.poll() is None
            assert log.read_text().lower().count(server_support.ADDRESS_IN_USE) == 1  # the first start
            assert wait_listening("127.0.0.1", port, 5, proc) < 1
        finally:
            stop_process(proc)
    assert proc.poll() is not None


def test_any_other_failure_to_start_is_raised_at_once(tmp_path):
    starts = []

    def failing(port: int) -> list[str]:
        starts.append(port)
        return [sys.executable, "-c", "raise SystemExit('no database configured')"]

    with pytest.raises(ServerExited, match="no database configured"):
        start_listening(failing, tmp_path / "failing.log", dict(os.environ), timeout=30)
    assert len(starts) == 1


@pytest.mark.skipif(not server_support.pg_available(), reason="needs PostgreSQL's initdb and pg_ctl")
def test_a_private_postgres_whose_port_was_taken_starts_on_another(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy])
        free_port = server_support.free_port
        monkeypatch.setattr(server_support, "free_port", lambda: next(picks, None) or free_port())
        with server_support.private_postgres() as pg:
            assert pg.port != busy
            with socket.create_connection(("127.0.0.1", pg.port), timeout=5):
                pass  # the cluster listens on the port it reports
