"""Helpers of the real-server tests (no tests here): `bentoml serve` on loopback, a private PostgreSQL.

Servers run in their own session (process group) and are always stopped by
PID; the private PostgreSQL instance runs from the system's binaries in a tmp
folder, as the ``postgres`` user when the tests run as root (initdb refuses root).

A server's port is picked free, then bound by the server a few seconds later: under
pytest-xdist another worker's server may take it in between. ``start_listening`` waits
until the server listens on its *own* socket and starts it again on another port when it
exited because the port was taken (``ADDRESS_IN_USE`` in its output).
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
from collections.abc import Callable, Iterator
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
HOST = "127.0.0.1"
LISTEN_TIMEOUT_S = 120.0
# EADDRINUSE as the servers report it: circus (bentoml) "OSError: [Errno 98] Address already in
# use", uvicorn (mlflow) "error while attempting to bind on address ...: address already in use"
ADDRESS_IN_USE = "address already in use"
START_ATTEMPTS = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ServerExited(RuntimeError):
    """The server process exited before it listened."""


def _listens_on(proc: subprocess.Popen, port: int) -> bool:
    """Whether ``proc`` or one of its descendants holds a listening TCP socket on ``port``."""
    try:
        family = [psutil.Process(proc.pid)]
        family += family[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for member in family:
        try:
            sockets = member.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in sockets):
            return True
    return False


def wait_listening(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> float:
    """Seconds until ``host:port`` accepts TCP connections; with ``proc``, on a socket of its own
    (another process on the port does not count) and :class:`ServerExited` as soon as it exits.
    Raises :class:`TimeoutError` after ``timeout`` seconds."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc is not None and proc.poll() is not None:
            raise ServerExited(f"exited with {proc.returncode} before listening on {host}:{port}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            if proc is None or _listens_on(proc, port):
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def start_listening(
    command: Callable[[int], list[str]],
    log: Path,
    env: dict[str, str],
    cwd: Path | None = None,
    timeout: float = LISTEN_TIMEOUT_S,
    attempts: int = START_ATTEMPTS,
) -> tuple[subprocess.Popen, int]:
    """``command(port)`` in a session of its own, output appended to ``log``, on a free ``HOST``
    port; returned (process, port) once it listens there. A start that exits because the port was
    taken meanwhile is retried on another port (module docstring); any other failure stops the
    process and raises with the log's tail."""
    for _ in range(attempts):
        port = free_port()
        argv = command(port)
        offset = log.stat().st_size if log.is_file() else 0
        with log.open("a") as out:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_listening(HOST, port, timeout, proc)
            return proc, port
        except ServerExited as exc:
            with log.open(errors="replace") as out:
                out.seek(offset)
                output = out.read()
            if ADDRESS_IN_USE not in output.lower():
                raise ServerExited(f"{argv[0]} {exc}:\n{output[-4000:]}") from None
        except TimeoutError as exc:
            stop_process(proc)
            raise TimeoutError(f"{exc}:\n{log.read_text(errors='replace')[-4000:]}") from None
    raise ServerExited(f"{attempts} starts, each port taken before the server bound it (see {log})")


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


def start_server(work: Path, database_url: str, name: str = "server", target: str = SERVICE, **extra: str) -> Server:
    """``bentoml serve`` of ``target`` (the service, or a bento's folder) on a free 127.0.0.1 port,
    returned once it listens there (``start_listening``); not waited for until ready (``wait_for``)."""
    log = work / f"{name}.log"
    env = server_env(DATABASE_URL=database_url, BENTOML_HOME=str(work / "bentoml_home"), **extra)

    def command(port: int) -> list[str]:
        return [str(BIN / "bentoml"), "serve", target, "--host", HOST, "--port", str(port)]

    proc, port = start_listening(command, log, env, cwd=work)
    return Server(proc, f"http://{HOST}:{port}", log)


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
    stop_process(server.proc, kill)


def stop_process(proc: subprocess.Popen, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL) to the process's own group (``start_new_session``), by its PID, then
    to its workers.

    BentoML's workers run in sessions of their own: a SIGKILL to the server's group leaves them
    running (orphaned, still holding the port), so they are found before and stopped by PID.
    """
    if proc.poll() is not None:
        return
    try:
        workers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    for worker in workers:
        try:
            worker.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(workers, timeout=10)


@contextmanager
def running_server(
    work: Path, database_url: str, name: str = "server", target: str = SERVICE, ready_timeout: float = 90.0, **extra: str
) -> Iterator[Server]:
    server = start_server(work, database_url, name, target, **extra)
    try:
        wait_for(server, "/readyz", ready_timeout)
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


def _start_on_a_free_port(pg: PrivatePostgres, attempts: int = 5) -> None:
    """Start the cluster, on another free port when the chosen one was taken between picking it
    and binding it (the same race as the servers'; PostgreSQL says so in its log)."""
    for attempt in range(attempts):
        try:
            pg.start()
            return
        except subprocess.CalledProcessError:
            log_file = pg.folder / "pg.log"
            taken = log_file.is_file() and ADDRESS_IN_USE in log_file.read_text().lower()
            if not taken or attempt == attempts - 1:
                raise
            log_file.unlink()
            pg.port = free_port()


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh PostgreSQL cluster on a free port (trust auth), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="mm_pg_", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    pg = PrivatePostgres(folder, free_port())
    try:
        pg._run("initdb", "-D", str(folder / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
        _start_on_a_free_port(pg)
        yield pg
    finally:
        try:
            pg.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(folder, ignore_errors=True)
