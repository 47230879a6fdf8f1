"""Benchmark: the real server under 16 concurrent clients on loopback (issue: serving).

Starts `bentoml serve migrainemamba.service.service:MigraineMamba` (one worker, as
`make serve`) on a free 127.0.0.1 port with a tmp SQLite database and the packaged
routing table (data/serving/routing.json, else the built-in base rate), onboards
--users simulated people with --days days of diary each, then measures with
--concurrency closed-loop clients (each sends its next request when the last answers):

- `predictions_new_<N>d`: each user's first GET /api/v1/predictions/{user_id} of the day
  (features, model, explanation, stored), for the users with an N-day diary (--diaries);
- `predictions`: repeated GET /api/v1/predictions/{user_id} (the stored forecast,
  checked against its inputs' fingerprint), round-robin over the users;
- `healthz`: GET /healthz of the same server (BentoML's own route: the floor);

p50 / p99 latency and requests per second each, and predictions / healthz ratios.
The clients run on the same cores as the server (2 here): figures are for the pair.
Bounded by --requests per phase and --max-seconds per phase.
Writes benchmarks/results/serve.json.
Run: .venv/bin/python benchmarks/bench_serve.py [--users 16] [--diaries 40 365] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl

from migrainemamba.config import load_config, repo_root, to_dict
from migrainemamba.data.schema import USER_COLUMNS
from migrainemamba.data.simulator import SimulatorConfig, simulate_cohort
from migrainemamba.runtime import configure_entry_point
from migrainemamba.service.settings import without_service_settings

RESULTS = Path(__file__).parent / "results" / "serve.json"
SERVICE = "migrainemamba.service.service:MigraineMamba"
OPERATOR_TOKEN = "benchmark-operator-token-0123456789abcdef"
SEED_RETRIES = [0]  # submits answered 503 (writer wait bounded) and retried while seeding


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(work: Path, routing: Path | None, port: int) -> subprocess.Popen:
    env = without_service_settings(os.environ)
    env |= {
        "DATABASE_URL": f"sqlite:///{work / 'service.db'}",
        "SECRET_KEY": "benchmark-secret-key-0123456789abcdef0123",
        "OPERATOR_TOKEN": OPERATOR_TOKEN,
        "TIMEZONE": "UTC",
        "BENTOML_HOME": str(work / "bentoml_home"),
        "BENTOML_DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    if routing is not None:
        env["ROUTING_TABLE_PATH"] = str(routing)
    bentoml = Path(sys.executable).parent / "bentoml"
    log = (work / "server.log").open("w")
    return subprocess.Popen(
        [str(bentoml), "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(proc: subprocess.Popen, base: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready in {timeout} s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own process group (start_new_session)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _plain(row: dict[str, Any], skip: tuple[str, ...]) -> dict[str, Any]:
    return {
        k: (v.isoformat() if isinstance(v, date) else v)
        for k, v in row.items()
        if k not in skip and v is not None
    }


async def run_closed_loop(
    client: httpx.AsyncClient,
    make_request: Callable[[int], tuple[str, dict[str, str]]],
    total: int,
    concurrency: int,
    max_seconds: float,
) -> dict[str, Any]:
    """``total`` GETs from ``concurrency`` clients (stops early after ``max_seconds``)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(total))
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker() -> None:
        for i in counter:
            if time.perf_counter() > deadline:
                return
            url, headers = make_request(i)
            t0 = time.perf_counter()
            response = await client.get(url, headers=headers)
            latencies.append(time.perf_counter() - t0)
            if response.status_code != 200:
                key = str(response.status_code)
                errors[key] = errors.get(key, 0) + 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(wall, 2),
        "rps": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


async def seed(
    client: httpx.AsyncClient, cohort, days: int, today: date, concurrency: int
) -> list[tuple[str, dict[str, str]]]:
    """Onboard every simulated person and log their first ``days`` days, ending yesterday."""
    owners: list[tuple[str, dict[str, str]]] = []
    semaphore = asyncio.Semaphore(concurrency)

    async def one(user: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        async with semaphore:
            profile = _plain(user, ("user_id",))
            if "cycle_start_day" in profile:
                profile["cycle_start_day"] = (today - timedelta(days=days + 10)).isoformat()
            r = await client.post("/api/v1/users/onboarding", json=profile)
            r.raise_for_status()
            body = r.json()
            user_id = body["user"]["user_id"]
            headers = {"Authorization": f"Bearer {body['access_token']}"}
            for k, row in enumerate(rows):
                day = today - timedelta(days=days - k)
                payload = _plain(row, ("user_id", "date")) | {
                    "user_id": user_id,
                    "date": day.isoformat(),
                }
                for _attempt in range(20):  # 503 = no write turn within the bounded wait: retry
                    r = await client.post("/api/v1/logs/submit", json=payload, headers=headers)
                    if r.status_code != 503:
                        break
                    SEED_RETRIES[0] += 1
                    await asyncio.sleep(0.2)
                r.raise_for_status()
            owners.append((user_id, headers))

    logs = cohort.daily_logs.sort("user_id", "date")
    jobs = []
    for user in cohort.users.iter_rows(named=True):
        rows = logs.filter(pl.col("user_id") == user["user_id"]).head(days).to_dicts()
        jobs.append(one({c.name: user[c.name] for c in USER_COLUMNS}, rows))
    await asyncio.gather(*jobs)
    return owners


async def bench(args: argparse.Namespace, base: str) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        started = time.perf_counter()
        groups: dict[int, list[tuple[str, dict[str, str]]]] = {}
        for days in args.diaries:
            data = to_dict(load_config().data) | {"n_users": args.users, "n_days": days, "seed": 3}
            data["diary"] = data["diary"] | {"retained_at_day_90": 0.9999}
            cohort = simulate_cohort(SimulatorConfig.from_dict(data))
            groups[days] = await seed(client, cohort, days, today, args.concurrency)
        seeded = time.perf_counter() - started
        owners = [o for group in groups.values() for o in group]

        def prediction(i: int) -> tuple[str, dict[str, str]]:
            user_id, headers = owners[i % len(owners)]
            return f"/api/v1/predictions/{user_id}", headers

        def healthz(i: int) -> tuple[str, dict[str, str]]:
            return "/healthz", {}

        first: dict[str, dict[str, Any]] = {}
        for days, group in groups.items():

            def first_forecast(i: int, group=group) -> tuple[str, dict[str, str]]:
                user_id, headers = group[i % len(group)]
                return f"/api/v1/predictions/{user_id}", headers

            first[f"predictions_new_{days}d"] = await run_closed_loop(
                client, first_forecast, len(group), args.concurrency, args.max_seconds
            )
        await run_closed_loop(
            client, prediction, 200, args.concurrency, args.max_seconds
        )  # warm-up
        stored = await run_closed_loop(
            client, prediction, args.requests, args.concurrency, args.max_seconds
        )
        await run_closed_loop(client, healthz, 200, args.concurrency, args.max_seconds)  # warm-up
        health = await run_closed_loop(
            client, healthz, args.requests, args.concurrency, args.max_seconds
        )
        operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        ready = (await client.get("/api/v1/ready", headers=operator)).json()
    return {
        "seed_seconds": round(seeded, 1),
        "seed_submits_retried_after_503": SEED_RETRIES[0],
        **first,
        "predictions": stored,
        "healthz": health,
        "ratio_predictions_to_healthz": {
            "rps": round(stored["rps"] / health["rps"], 3),
            "p50": round(stored["p50_ms"] / health["p50_ms"], 2),
            "p99": round(stored["p99_ms"] / health["p99_ms"], 2),
        },
        "targets": {
            "stored_rps_at_least_half_of_healthz": stored["rps"] >= 0.5 * health["rps"],
            "stored_p99_at_most_twice_healthz": stored["p99_ms"] <= 2 * health["p99_ms"],
        },
        "routes": {p: f"{r['model']}:{r['version']}" for p, r in ready["models"]["routes"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=16, help="users per diary length")
    parser.add_argument(
        "--diaries", type=int, nargs="+", default=[40, 365], help="diary days per user before today (one group each)"
    )
    parser.add_argument("--requests", type=int, default=3000, help="per measured phase")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per measured phase")
    parser.add_argument(
        "--routing",
        type=Path,
        default=repo_root() / "data" / "serving" / "routing.json",
        help="routing table (default: the packaged one; missing: built-in base rate)",
    )
    args = parser.parse_args()
    configure_entry_point()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    routing = args.routing.resolve() if args.routing.is_file() else None
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        work = Path(tmp)
        port = free_port()
        proc = start_server(work, routing, port)
        base = f"http://127.0.0.1:{port}"
        try:
            started = time.perf_counter()
            wait_ready(proc, base, work / "server.log")
            startup = time.perf_counter() - started
            figures = asyncio.run(bench(args, base))
        finally:
            stop_server(proc)
    result = {
        "users_per_diary_length": args.users,
        "diary_days": args.diaries,
        "concurrency": args.concurrency,
        "server": "bentoml serve, 1 worker, SQLite, 127.0.0.1",
        "routing_table": str(routing) if routing else "built-in base rate",
        "server_start_seconds": round(startup, 1),
        **figures,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
