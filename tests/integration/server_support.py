"""Helpers of the real-server tests (no tests here): `bentoml serve` on loopback, a private PostgreSQL.

Servers run in their own session (process group) and are always stopped by
PID; the private PostgreSQL instance runs from the system's binaries in a tmp
folder, as the ``postgres`` user when the tests run as root (initdb refuses root).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from migrainemamba.service.settings import without_service_settings

BIN = Path(sys.executable).parent
SERVICE = "migrainemamba.service.service:MigraineMamba"
SECRET = "fault-test-secret-key-0123456789abcdef-0123"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    env = without_service_settings(os.environ)
    env.update(BENTOML_DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true", DVC_NO_ANALYTICS="1")
    env.update(SECRET_KEY=SECRET, TIMEZONE="UTC")
    env.update(extra)
    return env


@dataclass
class Server:
    proc: subprocess.Popen
    base: str
    log: Path

    @property
    def api(self) -> str:
        return f"{self.base}/api/v1"

    def log_tail(self) -> str:
        return self.log.read_text()[-4000:] if self.log.is_file() else ""


def start_server(work: Path, database_url: str, name: str = "server", **extra: str) -> Server:
    """``bentoml serve`` of the service on a free 127.0.0.1 port (not waited for)."""
    port = free_port()
    log = work / f"{name}.log"
    env = server_env(DATABASE_URL=database_url, BENTOML_HOME=str(work / "bentoml_home"), **extra)
    with log.open("a") as out:
        proc = subprocess.Popen(
            [str(BIN / "bentoml"), "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(proc, f"http://127.0.0.1:{port}", log)


def wait_for(server: Server, path: str, timeout: float = 90.0) -> float:
    """Seconds until ``path`` answers 200; raises with the server log otherwise."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited ({server.proc.returncode}):\n{server.log_tail()}")
        try:
            if httpx.get(server.base + path, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{path} not 200 within {timeout} s:\n{server.log_tail()}")


def stop_server(server: Server, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL) to the server's own process group, by its PID, then to its workers.

    BentoML's workers run in sessions of their own: a SIGKILL to the server's group leaves them
    running (orphaned, still holding the port), so they are found before and stopped by PID.
    """
    if server.proc.poll() is not None:
        return
    try:
        workers = psutil.Process(server.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    os.killpg(server.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
    for worker in workers:
        try:
            worker.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(workers, timeout=10)


@contextmanager
def running_server(work: Path, database_url: str, name: str = "server", **extra: str) -> Iterator[Server]:
    server = start_server(work, database_url, name, **extra)
    try:
        wait_for(server, "/readyz")
        yield server
    finally:
        stop_server(server)


# ------------------------------------------------------- private PostgreSQL


def pg_available() -> bool:
    return (PG_BIN / "initdb").is_file() and (PG_BIN / "pg_ctl").is_file() and (
        os.geteuid() != 0 or shutil.which("runuser") is not None
    )


@dataclass
class PrivatePostgres:
    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-o", options, "-l", str(self.folder / "pg.log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh PostgreSQL cluster on a free port (trust auth), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="mm_pg_", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    pg = PrivatePostgres(folder, free_port())
    try:
        pg._run("initdb", "-D", str(folder / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
        pg.start()
        yield pg
    finally:
        try:
            pg.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(folder, ignore_errors=True)
