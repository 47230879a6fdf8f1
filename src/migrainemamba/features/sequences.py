"""Diary sequences for the temporal (Mamba) model.

:func:`build_sequence_data` lays every user's diary on the same calendar grid
as :func:`~migrainemamba.features.daily.build_features` and stores one row per
user-day in concatenated arrays, with CSR-style ``offsets`` (user ``i`` owns
rows ``offsets[i]:offsets[i + 1]``). Memory is O(total days); windows are cut
on demand.

The window for forecasting day D (row ``r``) is the L calendar days D−L..D−1
(left-padded before the user's first day) plus D's morning fields, so the
information rule of docs/architecture.md §1 holds by construction: nothing from D's day
fields, D's outcome or later rows enters ``x``.

Per-day inputs (``value_columns``): every morning, day and outcome field of the
contract, symptoms one-hot, booleans 0/1, and a ``<field>_missing`` flag for
every nullable field. Numeric fields are standardised with
:class:`SequenceStats` (fitted on the data passed in, or given so that training
stats are reused at serving); null values become 0 (the mean) after that.
Days without a diary row have ``observed = False`` and all-zero values, which
must never be read as data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from migrainemamba.data.schema import (
    DAILY_LOG_COLUMNS,
    DAILY_LOGS_SCHEMA,
    DAY_FIELDS,
    MORNING_FIELDS,
    OUTCOME_FIELDS,
    SYMPTOMS,
)
from migrainemamba.features.daily import (
    COLLECT_ENGINE,
    calendar_grid,
    check_unique,
    label_columns,
    normalize_daily_logs,
    normalize_users,
)

__all__ = [
    "MORNING_COLUMNS",
    "STATIC_COLUMNS",
    "VALUE_COLUMNS",
    "SequenceData",
    "SequenceStats",
    "SequenceWindows",
    "build_sequence_data",
]

_NULLABLE = tuple(c.name for c in DAILY_LOG_COLUMNS if c.nullable)
_SEVERITY_FIELDS = ("migraine_severity", "migraine_duration_hours")


def _field_expr(field: str) -> pl.Expr:
    col = pl.col(field)
    if field in _SEVERITY_FIELDS:
        # no attack → severity and duration 0 (the contract leaves them null)
        col = pl.when(pl.col("migraine_occurred") == False).then(0.0).otherwise(col)
    return col


def _field_inputs(field: str) -> list[tuple[str, pl.Expr, bool]]:
    """(column name, raw Float64 expression, is_binary) for one contract field."""
    col = _field_expr(field)
    if field == "symptoms":
        return [(f"symptom_{s}", col.list.contains(s).cast(pl.Float64), True) for s in SYMPTOMS]
    return [(field, col.cast(pl.Float64), DAILY_LOGS_SCHEMA[field] == pl.Boolean)]


def _missing_flag(field: str) -> tuple[str, pl.Expr, bool]:
    return (f"{field}_missing", _field_expr(field).is_null().cast(pl.Float64), True)


def _value_inputs() -> list[tuple[str, pl.Expr, bool]]:
    fields = (*MORNING_FIELDS, *DAY_FIELDS, *OUTCOME_FIELDS)
    return [item for f in fields for item in _field_inputs(f)] + [
        _missing_flag(f) for f in _NULLABLE
    ]


def _morning_inputs() -> list[tuple[str, pl.Expr, bool]]:
    # D may have no row yet: every morning field gets a missing flag
    return [item for f in MORNING_FIELDS for item in _field_inputs(f)] + [
        _missing_flag(f) for f in MORNING_FIELDS
    ]


def _static_inputs() -> list[tuple[str, pl.Expr, bool]]:
    return [
        ("age", pl.col("age").cast(pl.Float64), False),
        ("gender_female", (pl.col("gender") == "F").cast(pl.Float64), True),
        ("gender_male", (pl.col("gender") == "M").cast(pl.Float64), True),
        (
            "bmi",
            pl.col("weight_kg") / (pl.col("height_cm") * pl.col("height_cm")) * 10_000.0,
            False,
        ),
        ("attacks_per_month", pl.col("attacks_per_month").cast(pl.Float64), False),
        ("has_menstrual_cycle", pl.col("has_menstrual_cycle").cast(pl.Float64), True),
    ]


VALUE_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in _value_inputs())
MORNING_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in _morning_inputs())
STATIC_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in _static_inputs())


@dataclass(frozen=True)
class SequenceStats:
    """Standardisation (x − mean) / std per input column; binary columns keep 0/1."""

    columns: tuple[str, ...]
    mean: np.ndarray  # (C,) float64
    std: np.ndarray  # (C,) float64

    def __post_init__(self) -> None:
        if len(self.columns) != len(self.mean) or len(self.columns) != len(self.std):
            raise ValueError("SequenceStats: columns, mean and std must have the same length")

    @classmethod
    def fit(cls, days: pl.DataFrame, users: pl.DataFrame) -> SequenceStats:
        """Fit on observed diary days (raw value columns) and the user table (raw static columns)."""
        columns, means, stds = [], [], []
        for frame, inputs in ((days, _value_inputs()), (users, _static_inputs())):
            numeric = [name for name, _, binary in inputs if not binary]
            moments = (
                frame.select(
                    *[pl.col(c).mean().alias(f"m_{c}") for c in numeric],
                    *[pl.col(c).std(ddof=0).alias(f"s_{c}") for c in numeric],
                ).row(0, named=True)
                if frame.height
                else {}
            )
            for name, _, binary in inputs:
                mean = 0.0 if binary else moments.get(f"m_{name}")
                std = 1.0 if binary else moments.get(f"s_{name}")
                columns.append(name)
                means.append(0.0 if mean is None else float(mean))
                stds.append(1.0 if std is None or not std > 1e-12 else float(std))
        return cls(tuple(columns), np.asarray(means), np.asarray(stds))

    def lookup(self, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std for ``names``; ``<field>_missing`` flags are binary (0, 1)."""
        index = {c: i for i, c in enumerate(self.columns)}
        missing = [n for n in names if n not in index and not n.endswith("_missing")]
        if missing:
            raise ValueError(
                f"SequenceStats has no entry for {missing}; refit the stats on data "
                "built by this version of migrainemamba.features.sequences"
            )
        mean = np.array([self.mean[index[n]] if n in index else 0.0 for n in names])
        std = np.array([self.std[index[n]] if n in index else 1.0 for n in names])
        return mean, std


def _standardised(
    frame: pl.DataFrame, names: tuple[str, ...], stats: SequenceStats, keep: pl.Expr | None = None
) -> np.ndarray:
    """(rows, len(names)) float32; nulls → 0 after standardising, rows where not ``keep`` → 0."""
    if not names:
        return np.zeros((frame.height, 0), dtype=np.float32)
    mean, std = stats.lookup(names)
    exprs = []
    for name, m, s in zip(names, mean, std, strict=True):
        e = ((pl.col(name) - float(m)) / float(s)).fill_null(0.0).fill_nan(0.0)
        if keep is not None:
            e = pl.when(keep).then(e).otherwise(0.0)
        exprs.append(e.cast(pl.Float32).alias(name))
    return frame.select(exprs).to_numpy(order="c")


@dataclass
class SequenceData:
    """Per-day arrays for all users, concatenated; user ``i`` owns ``offsets[i]:offsets[i+1]``.

    values    (N, F)  float32  standardised per-day inputs, 0 where not observed
    observed  (N,)    bool     a diary row exists for that day
    morning   (N, Fm) float32  that day's morning fields (standardised) and missing flags
    onset     (N,)    bool     an attack starts that day (False where not scorable)
    scorable  (N,)    bool     the day is scored (docs/architecture.md §1)
    dates     (N,)    datetime64[D]
    static    (U, Fs) float32  standardised user-level inputs
    user_ids  (U,)    str
    offsets   (U+1,)  int64
    """

    values: np.ndarray
    observed: np.ndarray
    morning: np.ndarray
    onset: np.ndarray
    scorable: np.ndarray
    dates: np.ndarray
    static: np.ndarray
    user_ids: np.ndarray
    offsets: np.ndarray
    value_columns: tuple[str, ...]
    morning_columns: tuple[str, ...]
    static_columns: tuple[str, ...]
    stats: SequenceStats

    # ------------------------------------------------------------ indexing
    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    def user_of_rows(self, rows: np.ndarray | int) -> np.ndarray:
        """User index of each row."""
        return np.searchsorted(self.offsets, np.asarray(rows), side="right") - 1

    def row_of(self, user_id: str, date: dt.date) -> int:
        """Row index of (user_id, date); ``KeyError`` if it is not on the grid."""
        hits = np.flatnonzero(self.user_ids == user_id)
        if not hits.size:
            raise KeyError(f"user {user_id!r} is not in this SequenceData")
        start, end = self.offsets[hits[0]], self.offsets[hits[0] + 1]
        row = start + (np.datetime64(date, "D") - self.dates[start]).astype(np.int64)
        if not start <= row < end:
            raise KeyError(f"{date} is outside user {user_id!r}'s calendar grid")
        return int(row)

    def scorable_rows(self) -> np.ndarray:
        return np.flatnonzero(self.scorable)

    def keys(self) -> pl.DataFrame:
        """(row, user_id, date) of every row, to join with tabular features or predictions."""
        users = self.user_of_rows(np.arange(self.n_rows))
        return pl.DataFrame(
            {
                "row": np.arange(self.n_rows, dtype=np.int64),
                "user_id": self.user_ids[users],
                "date": self.dates,
            }
        )

    def windows(self, rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batched :meth:`window`: x (B, L, F), mask (B, L), morning (B, Fm)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        starts = self.offsets[self.user_of_rows(rows)]  # (B,)
        idx = rows[:, None] - length + np.arange(length)[None, :]  # (B, L): D−L..D−1
        inside = idx >= starts[:, None]
        safe = np.where(inside, idx, 0)
        mask = inside & self.observed[safe]
        x = np.where(mask[..., None], self.values[safe], np.float32(0.0))
        return x.astype(np.float32, copy=False), mask, self.morning[rows]

    def window(self, row_index: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``length`` calendar days before row D (D−L..D−1) and D's morning vector.

        Returns x (L, F) float32, mask (L,) bool (False before the user's first
        day and on days without a diary row) and morning (Fm,) float32.
        """
        x, mask, morning = self.windows(np.array([row_index]), length)
        return x[0], mask[0], morning[0]

    # ------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write everything (arrays, column names, stats) to one ``.npz`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez(
                fh,
                values=self.values,
                observed=self.observed,
                morning=self.morning,
                onset=self.onset,
                scorable=self.scorable,
                dates=self.dates,
                static=self.static,
                user_ids=self.user_ids.astype(str),
                offsets=self.offsets,
                value_columns=np.array(self.value_columns, dtype=str),
                morning_columns=np.array(self.morning_columns, dtype=str),
                static_columns=np.array(self.static_columns, dtype=str),
                stats_columns=np.array(self.stats.columns, dtype=str),
                stats_mean=self.stats.mean,
                stats_std=self.stats.std,
            )

    @classmethod
    def load(cls, path: str | Path) -> SequenceData:
        with np.load(Path(path), allow_pickle=False) as z:
            return cls(
                values=z["values"],
                observed=z["observed"],
                morning=z["morning"],
                onset=z["onset"],
                scorable=z["scorable"],
                dates=z["dates"],
                static=z["static"],
                user_ids=z["user_ids"],
                offsets=z["offsets"],
                value_columns=tuple(z["value_columns"].tolist()),
                morning_columns=tuple(z["morning_columns"].tolist()),
                static_columns=tuple(z["static_columns"].tolist()),
                stats=SequenceStats(
                    tuple(z["stats_columns"].tolist()), z["stats_mean"], z["stats_std"]
                ),
            )


def build_sequence_data(
    users: pl.DataFrame | pl.LazyFrame,
    daily_logs: pl.DataFrame | pl.LazyFrame,
    forecast_dates: pl.DataFrame | pl.LazyFrame | None = None,
    stats: SequenceStats | None = None,
) -> SequenceData:
    """Sequence arrays for every user with diary rows (or forecast dates).

    ``stats=None`` fits the standardisation on the data passed in (do that on
    the training split only); pass the training stats at serving and for
    validation/test data. ``forecast_dates`` (user_id, date[, MORNING_FIELDS])
    extends the grid to days without a row yet, as in ``build_features``.
    Users are ordered by ``user_id``; users missing from ``users`` get zero
    static inputs.
    """
    logs = normalize_daily_logs(daily_logs)
    check_unique(logs)
    value_inputs, morning_inputs, static_inputs = (
        _value_inputs(),
        _morning_inputs(),
        _static_inputs(),
    )
    grid = (
        calendar_grid(logs, forecast_dates)
        .with_columns(*label_columns())
        .select(
            "user_id",
            "date",
            "logged",
            "scorable",
            pl.col("onset").fill_null(False),
            *[expr.alias(name) for name, expr, _ in value_inputs],
            *[expr.alias(f"_m_{name}") for name, expr, _ in morning_inputs],
        )
        .collect(engine=COLLECT_ENGINE)
    )
    user_ids = grid.get_column("user_id").unique(maintain_order=True)
    user_frame = (
        pl.DataFrame({"user_id": user_ids})
        .lazy()
        .join(normalize_users(users), on="user_id", how="left", maintain_order="left")
        .select("user_id", *[expr.alias(name) for name, expr, _ in static_inputs])
        .collect(engine=COLLECT_ENGINE)
    )
    if stats is None:
        stats = SequenceStats.fit(grid.filter(pl.col("logged")), user_frame)

    observed = pl.col("logged")
    values = _standardised(grid, VALUE_COLUMNS, stats, keep=observed)
    morning_frame = grid.select(pl.col(f"_m_{name}").alias(name) for name in MORNING_COLUMNS)
    morning = _standardised(morning_frame, MORNING_COLUMNS, stats)
    static = _standardised(user_frame, STATIC_COLUMNS, stats)

    lengths = grid.group_by("user_id", maintain_order=True).len().get_column("len").to_numpy()
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return SequenceData(
        values=values,
        observed=grid.get_column("logged").to_numpy(),
        morning=morning,
        onset=grid.get_column("onset").to_numpy(),
        scorable=grid.get_column("scorable").to_numpy(),
        dates=grid.get_column("date").to_numpy().astype("datetime64[D]"),
        static=static,
        user_ids=user_ids.to_numpy().astype(str),
        offsets=offsets,
        value_columns=VALUE_COLUMNS,
        morning_columns=MORNING_COLUMNS,
        static_columns=STATIC_COLUMNS,
        stats=stats,
    )


class SequenceWindows(Dataset):
    """Windows of ``length`` days before each of ``rows`` (row indices into ``seq``).

    Items are dicts of tensors: ``x`` (L, F) float32, ``mask`` (L,) bool,
    ``morning`` (Fm,) float32, ``static`` (Fs,) float32, ``y`` () float32
    (onset, 0 where not scorable), ``scorable`` () bool, ``row`` () int64.
    """

    def __init__(self, seq: SequenceData, rows: np.ndarray, length: int) -> None:
        if length < 1:
            raise ValueError(f"window length must be ≥ 1, got {length}")
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= seq.n_rows):
            raise IndexError(f"rows must lie in [0, {seq.n_rows}); got {rows.min()}..{rows.max()}")
        self.seq = seq
        self.rows = rows
        self.length = length

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """Items ``indices`` stacked along a leading batch dimension (B, ...)."""
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        x, mask, morning = self.seq.windows(rows, self.length)
        users = self.seq.user_of_rows(rows)
        return {
            "x": torch.from_numpy(x),  # (B, L, F)
            "mask": torch.from_numpy(mask),  # (B, L)
            "morning": torch.from_numpy(np.ascontiguousarray(morning)),  # (B, Fm)
            "static": torch.from_numpy(np.ascontiguousarray(self.seq.static[users])),  # (B, Fs)
            "y": torch.from_numpy(self.seq.onset[rows].astype(np.float32)),  # (B,)
            "scorable": torch.from_numpy(self.seq.scorable[rows].copy()),  # (B,)
            "row": torch.from_numpy(rows.copy()),  # (B,)
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.batch(np.array([index])).items()}
