"""Benchmark: simulate 10,000 users x 365 days and build their features (issue: foundation).

Writes benchmarks/results/data.json. Targets: each well under a minute on 2 cores.
Run: .venv/bin/python benchmarks/bench_data.py [--users N] [--days D]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

from migrainemamba.config import load_config, to_dict
from migrainemamba.data.simulator import SimulatorConfig, simulate_cohort
from migrainemamba.features import build_features
from migrainemamba.features.sequences import build_sequence_data
from migrainemamba.pipeline import write_json
from migrainemamba.runtime import configure_entry_point

RESULTS = Path(__file__).parent / "results" / "data.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    configure_entry_point()
    data = to_dict(load_config().data) | {"n_users": args.users, "n_days": args.days}
    # full diaries (no drop-out), so features are built for every one of the user-days
    data["diary"] = data["diary"] | {"retained_at_day_90": 0.9999}

    started = time.perf_counter()
    cohort = simulate_cohort(SimulatorConfig.from_dict(data), progress=True)
    simulated = time.perf_counter()
    features = build_features(cohort.users, cohort.daily_logs)
    featured = time.perf_counter()
    build_sequence_data(cohort.users, cohort.daily_logs)
    sequenced = time.perf_counter()

    figures = {
        "users": args.users,
        "days": args.days,
        "simulated_user_days": cohort.truth_days.height,
        "logged_rows": cohort.daily_logs.height,
        "feature_rows": features.height,
        "simulate_seconds": round(simulated - started, 2),
        "features_seconds": round(featured - simulated, 2),
        "sequences_seconds": round(sequenced - featured, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    write_json(RESULTS, figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
