"""Measurement: the ICHD-3 overuse check against the simulator's over-users, on the default cohort.

Simulates the default configuration (``configs/data/synthetic.yaml``, 16,000 people unless
``--users``), runs the monthly summary and the check, and writes the flag rates among the
simulated over-users and among the others to benchmarks/results/clinical_overuse.json.
Run: .venv/bin/python benchmarks/clinical_overuse.py [--users N] [--seed S]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from migrainemamba.clinical.agreement import overuse_agreement
from migrainemamba.config import load_config, to_dict
from migrainemamba.data.simulator import SimulatorConfig, simulate_cohort
from migrainemamba.pipeline import write_json
from migrainemamba.runtime import configure_entry_point

RESULTS = Path(__file__).parent / "results" / "clinical_overuse.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    configure_entry_point()
    data = to_dict(load_config().data)
    if args.users is not None:
        data["n_users"] = args.users
    if args.seed is not None:
        data["seed"] = args.seed
    started = time.perf_counter()
    cohort = simulate_cohort(SimulatorConfig.from_dict(data))
    simulated = time.perf_counter()
    result = overuse_agreement(cohort.daily_logs, cohort.medications, cohort.truth_medication_users)
    checked = time.perf_counter()
    result.update(
        n_users=data["n_users"],
        seed=data["seed"],
        simulate_seconds=round(simulated - started, 1),
        summary_and_check_seconds=round(checked - simulated, 1),
    )
    write_json(RESULTS, result)


if __name__ == "__main__":
    main()
