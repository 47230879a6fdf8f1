"""The `prepare` stage: a cohort in the data contract, from the simulator or real files."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from migrainemamba.config import resolve_path
from migrainemamba.data.io import load_real
from migrainemamba.data.simulator import SimulatorConfig, simulate_cohort
from migrainemamba.data.validation import validate_cohort, validate_medications

log = logging.getLogger(__name__)

TABLES = (
    "users",
    "daily_logs",
    "quarantine",
    "truth_users",
    "truth_days",
    "medications",
    "truth_medication_users",
)


@dataclass
class PreparedCohort:
    users: pl.DataFrame
    daily_logs: pl.DataFrame
    quarantine: pl.DataFrame
    truth_users: pl.DataFrame | None = None  # simulated cohorts only
    truth_days: pl.DataFrame | None = None
    medications: pl.DataFrame | None = None  # simulated, or real when a medications file is given
    truth_medication_users: pl.DataFrame | None = None  # simulated: who overuses which class

    @property
    def simulated(self) -> bool:
        return self.truth_days is not None

    def write(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            table = getattr(self, name)
            path = out_dir / f"{name}.parquet"
            if table is None:
                path.unlink(missing_ok=True)  # no stale truth left from an earlier simulated run
            else:
                table.write_parquet(path)

    @classmethod
    def read(cls, out_dir: Path) -> PreparedCohort:
        def read(name: str) -> pl.DataFrame | None:
            path = out_dir / f"{name}.parquet"
            return pl.read_parquet(path) if path.exists() else None

        tables = {name: read(name) for name in TABLES}
        missing = [n for n in ("users", "daily_logs", "quarantine") if tables[n] is None]
        if missing:
            raise FileNotFoundError(f"{out_dir}: missing {missing}; run the prepare stage first")
        return cls(**tables)  # type: ignore[arg-type]


def prepare_cohort(data_cfg: dict[str, Any], progress: bool = False) -> PreparedCohort:
    """Simulate (``source: synthetic``) or import (``source: real``) and validate a cohort."""
    source = data_cfg.get("source")
    if source == "synthetic":
        cohort = simulate_cohort(SimulatorConfig.from_dict(data_cfg), progress=progress)
        # the simulator's output passes through the same contract check as real data
        checked = validate_cohort(cohort.users, cohort.daily_logs)
        medications, meds_quarantine = validate_medications(
            cohort.medications, checked.users.get_column("user_id")
        )
        broken = pl.concat([checked.quarantine, meds_quarantine])
        if broken.height:
            reasons = broken["reason"].head(5).to_list()
            raise AssertionError(f"simulator wrote {broken.height} rows breaking the contract: {reasons}")
        return PreparedCohort(
            users=checked.users,
            daily_logs=checked.daily_logs,
            quarantine=checked.quarantine,
            truth_users=cohort.truth_users,
            truth_days=cohort.truth_days,
            medications=medications,
            truth_medication_users=cohort.truth_medication_users,
        )
    if source == "real":
        medications_path = data_cfg.get("medications_path")  # optional: a diary may log none
        real = load_real(
            resolve_path(data_cfg["users_path"]),
            resolve_path(data_cfg["daily_logs_path"]),
            resolve_path(medications_path) if medications_path else None,
        )
        if real.quarantine.height:
            log.warning("%d rows quarantined (see quarantine.parquet)", real.quarantine.height)
        return PreparedCohort(
            users=real.users,
            daily_logs=real.daily_logs,
            quarantine=real.quarantine,
            medications=real.medications,
        )
    raise ValueError(f"data.source: {source!r} is not 'synthetic' or 'real'")
