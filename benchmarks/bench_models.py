"""Benchmark: foundation fit and full evaluation on the default cohort (issue: evaluation harness).

Runs prepare -> features -> foundation -> evaluate on the default configuration in
a temporary directory (tracking off, so nothing lands in the project's MLflow) and
writes the timings to benchmarks/results/models.json. Target: each within about a
minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from migrainemamba.config import load_config
from migrainemamba.pipeline import write_json
from migrainemamba.runtime import configure_entry_point
from migrainemamba.stages.evaluate import run as run_evaluate
from migrainemamba.stages.features import run as run_features
from migrainemamba.stages.foundation import run as run_foundation
from migrainemamba.stages.prepare import run as run_prepare

RESULTS = Path(__file__).parent / "results" / "models.json"


def timed(fn, cfg) -> tuple[float, dict]:
    started = time.perf_counter()
    metrics = fn(cfg)
    return round(time.perf_counter() - started, 2), metrics


def main() -> None:
    configure_entry_point()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            [
                f"paths.prepared={tmp}/prepared", f"paths.features={tmp}/features",
                f"paths.metrics={tmp}/metrics", f"paths.plots={tmp}/plots",
                f"paths.models={tmp}/models", f"paths.predictions={tmp}/predictions",
                f"paths.data_dir={tmp}", "tracking.enabled=false",
                "evaluate.models=[base_rate,prior_logistic,foundation]",
            ]
        )
        prepare_s, _ = timed(run_prepare, cfg)
        features_s, _ = timed(run_features, cfg)
        foundation_s, foundation = timed(run_foundation, cfg)
        evaluate_s, _ = timed(run_evaluate, cfg)
    figures = {
        "users": cfg.data.n_users,
        "prepare_seconds": prepare_s,
        "features_seconds": features_s,
        "foundation_stage_seconds": foundation_s,
        "foundation_fit_seconds": foundation.get("fit_seconds"),
        "foundation_train_rows": foundation.get("n_train"),
        "evaluate_seconds": evaluate_s,
        "evaluate_bootstrap_replicates": cfg.evaluate.n_boot,
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    write_json(RESULTS, figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
