"""Reading and writing contract tables (docs/architecture.md §2) as CSV or Parquet.

The format is chosen by the file suffix: ``.csv`` or ``.parquet`` / ``.pq``.

CSV is read with every column as text so that a bad value becomes a row-level
quarantine reason in :mod:`migrainemamba.data.validation`, not a reader crash;
empty cells are null. Parquet is read with its own types (validation accepts
typed or text columns). Column names must match the contract exactly: a
missing or unknown column raises :class:`DataContractError` naming the file and
the columns (column names are stripped of surrounding whitespace first).

In CSV, list columns (``symptoms``) are JSON lists of strings, e.g.
``["fatigue","nausea"]``; :func:`write_table` writes them that way.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from migrainemamba.data.validation import (
    DataContractError,
    PreparedData,
    TableKind,
    check_columns,
    validate_daily_logs,
    validate_medications,
    validate_users,
)

CSV_SUFFIXES: tuple[str, ...] = (".csv",)
PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise DataContractError(
        f"{path}: unsupported file type {suffix!r}; use one of "
        f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
    )


def read_table(path: str | Path, kind: TableKind) -> pl.DataFrame:
    """Read a ``users`` or ``daily_logs`` table, untyped (CSV: all strings).

    Raises :class:`DataContractError` if the file is missing or unreadable, or if
    its columns differ from the contract. Values are not checked here; pass the
    result to ``validate_users`` / ``validate_daily_logs``.
    """
    path = Path(path)
    fmt = _format(path)
    if not path.is_file():
        raise DataContractError(f"{path}: {kind} file not found (expected a {fmt} file)")
    try:
        if fmt == "csv":
            df = pl.read_csv(path, infer_schema=False, encoding="utf8")
        else:
            df = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        hint = (
            " (for CSV: check for rows with more fields than the header, e.g. unquoted commas)"
            if fmt == "csv"
            else ""
        )
        raise DataContractError(
            f"{path}: cannot read {kind} table as {fmt}{hint}: {type(exc).__name__}: {exc}"
        ) from exc
    df = df.rename({c: c.strip() for c in df.columns if c != c.strip()})
    check_columns(df.columns, kind, str(path))
    return df


def _list_as_json(name: str) -> pl.Expr:
    """A list column as JSON list text; null stays null (an empty CSV cell)."""
    encoded = pl.struct(pl.col(name).alias("v")).struct.json_encode()
    return (
        pl.when(pl.col(name).is_not_null())
        .then(encoded.str.strip_prefix('{"v":').str.strip_suffix("}"))
        .alias(name)
    )


def write_table(df: pl.DataFrame, path: str | Path) -> None:
    """Write a table as CSV or Parquet (by suffix); CSV list columns become JSON lists."""
    path = Path(path)
    fmt = _format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        df.write_parquet(path)
        return
    list_columns = [name for name, dtype in df.schema.items() if isinstance(dtype, pl.List)]
    df.with_columns(_list_as_json(name) for name in list_columns).write_csv(path)


__all__ = ["CSV_SUFFIXES", "PARQUET_SUFFIXES", "read_table", "write_table"]


def load_real(
    users_path: str | Path,
    daily_logs_path: str | Path,
    medications_path: str | Path | None = None,
) -> PreparedData:
    """Read and validate real diary tables (CSV or Parquet) from disk; medications are optional."""
    users_raw = read_table(users_path, "users")
    logs_raw = read_table(daily_logs_path, "daily_logs")
    users, users_q = validate_users(users_raw, source=str(users_path))
    user_ids = users.get_column("user_id")
    logs, logs_q = validate_daily_logs(logs_raw, user_ids, source=str(daily_logs_path))
    quarantines = [users_q, logs_q]
    medications = None
    if medications_path is not None:
        meds_raw = read_table(medications_path, "medications")
        medications, meds_q = validate_medications(meds_raw, user_ids, source=str(medications_path))
        quarantines.append(meds_q)
    return PreparedData(
        users=users,
        daily_logs=logs,
        quarantine=pl.concat(quarantines, how="vertical"),
        medications=medications,
    )
    return PreparedData(
        users=users, daily_logs=logs, quarantine=pl.concat([users_q, logs_q], how="vertical")
    )
