"""Run plumbing every stage shares: its tracking run, its metrics file, its MLflow metrics.

Exit codes and logging set-up are the entry point's (``migrainemamba.pipeline.run_stage``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig

from migrainemamba.config import resolve_path
from migrainemamba.distributed import is_global_zero
from migrainemamba.pipeline import write_json
from migrainemamba.tracking import flatten, stage_run


@contextmanager
def tracked(cfg: DictConfig, stage: str, params: Mapping[str, Any]) -> Iterator[Any]:
    """The stage's MLflow run (None when ``tracking.enabled`` is false, and on every rank but
    global rank 0 of a distributed run: one run per stage, migrainemamba.distributed)."""
    if not cfg.tracking.enabled or not is_global_zero():
        yield None
        return
    with stage_run(stage, params, cfg.tracking.uri) as run:
        yield run


def seconds_since(started: float) -> float:
    """Wall seconds since ``time.perf_counter()`` read ``started``, for a stage's timings."""
    return round(time.perf_counter() - started, 1)


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Flattened finite numbers of a (nested) metrics dict, in MLflow's key alphabet."""
    out = {}
    for key, value in flatten(metrics).items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[key.replace("+", "plus")] = float(value)
    return out


def finish(cfg: DictConfig, stage: str, metrics: Mapping[str, Any], run: Any = None) -> None:
    """Write ``metrics/<stage>.json`` (the headline numbers ``dvc metrics show`` prints) and log them
    (global rank 0 only: the other ranks of a distributed run write nothing)."""
    if not is_global_zero():
        return
    write_json(resolve_path(cfg.paths.metrics) / f"{stage}.json", dict(metrics))
    if run is not None:
        import mlflow

        mlflow.log_metrics(numeric(metrics))
