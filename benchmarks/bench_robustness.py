"""Benchmark: the robustness run's time per scenario on this machine (issue 11).

Runs `migrainemamba.stages.robustness.run` with the given Hydra overrides (e.g.
`robustness.n_users=1500`; default: configs/robustness/default.yaml), outputs where the
config says (data/robustness/ by default, so the run's table is kept), and writes the
seconds per scenario and stage, the cohort size and the machine's load to
benchmarks/results/robustness.json.

    python benchmarks/bench_robustness.py robustness.n_users=1500
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from migrainemamba.config import load_config, resolve_path
from migrainemamba.pipeline import write_json
from migrainemamba.runtime import configure_entry_point
from migrainemamba.stages.robustness import run as run_robustness

RESULTS = Path(__file__).parent / "results" / "robustness.json"


def main() -> None:
    configure_entry_point()
    overrides = sys.argv[1:]
    cfg = load_config(overrides)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    metrics = run_robustness(cfg)
    wall = time.perf_counter() - started
    timings = json.loads((resolve_path(str(cfg.robustness.out_dir)) / "timings.json").read_text())
    figures = {
        "overrides": overrides,
        "users_per_scenario": cfg.robustness.n_users,
        "days_per_user": cfg.robustness.n_days,
        "sequence_models": bool(cfg.robustness.sequence_models),
        "models": list(cfg.robustness.models),
        "bootstrap_replicates": cfg.robustness.n_boot,
        "seconds_per_scenario": {s: t["total"] for s, t in timings["timings"].items()},
        "seconds_per_stage": timings["timings"],
        "total_seconds": round(wall, 1),
        "cpus": os.cpu_count(),
        "num_threads": cfg.num_threads,
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
        "headline": metrics,
    }
    write_json(RESULTS, figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
