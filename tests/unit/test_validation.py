"""Validation of diary tables and the real-data import path (docs/architecture.md §2)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from migrainemamba.data.io import load_real, read_table, write_table
from migrainemamba.data.schema import (
    DAILY_LOG_COLUMNS,
    DAILY_LOGS_SCHEMA,
    GENDERS,
    SYMPTOMS,
    USER_COLUMNS,
    USERS_SCHEMA,
)
from migrainemamba.data.validation import (
    QUARANTINE_SCHEMA,
    DataContractError,
    validate_cohort,
    validate_daily_logs,
    validate_users,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "diary"


# ----------------------------------------------------------------------------- helpers


def make_users(n: int, seed: int = 0) -> pl.DataFrame:
    """A valid, contract-typed users table."""
    rng = np.random.default_rng(seed)
    menstrual = rng.random(n) < 0.6
    start = [
        dt.date(2024, 1, 1) + dt.timedelta(days=int(d)) if m else None
        for m, d in zip(menstrual, rng.integers(0, 28, n))
    ]
    return pl.DataFrame(
        {
            "user_id": [f"u{i:04d}" for i in range(n)],
            "gender": rng.choice(GENDERS, n).tolist(),
            "age": rng.integers(16, 80, n),
            "height_cm": rng.normal(170, 10, n).round(1),
            "weight_kg": rng.normal(72, 12, n).round(1),
            "location_city": [None if i % 3 == 0 else "Oslo" for i in range(n)],
            "attacks_per_month": rng.uniform(0, 12, n).round(1),
            "has_menstrual_cycle": menstrual,
            "cycle_start_day": start,
            "cycle_length_days": [int(x) if x % 2 else None for x in rng.integers(24, 35, n)],
        },
        schema=USERS_SCHEMA,
    )


def make_logs(users: pl.DataFrame, days: int, seed: int = 1) -> pl.DataFrame:
    """A valid, contract-typed daily-logs table: every user, ``days`` days (some skipped)."""
    rng = np.random.default_rng(seed)
    ids, dates = [], []
    for uid in users["user_id"]:
        for d in range(days):
            if rng.random() < 0.9:  # people skip diary days
                ids.append(uid)
                dates.append(dt.date(2024, 1, 1) + dt.timedelta(days=d))
    n = len(ids)
    occurred = rng.random(n) < 0.1
    reported = rng.random(n) < 0.95
    symptoms = [rng.choice(SYMPTOMS, int(k), replace=False).tolist() for k in rng.integers(0, 3, n)]
    return pl.DataFrame(
        {
            "user_id": ids,
            "date": dates,
            "sleep_hours": rng.uniform(3, 10, n).round(2),
            "sleep_quality_good": rng.random(n) < 0.6,
            "stress_level": rng.integers(1, 11, n),
            "skipped_meals": rng.integers(0, 4, n),
            "had_snack": rng.random(n) < 0.5,
            "alcohol_drinks": rng.poisson(0.5, n),
            "caffeine_drinks": rng.poisson(2, n),
            "water_glasses": rng.poisson(6, n),
            "bright_light_exposure": rng.random(n) < 0.3,
            "screen_time_hours": rng.uniform(0, 12, n),  # full-precision floats on purpose
            "menstruating": [bool(x) if x < 0.9 else None for x in rng.random(n)],
            "barometric_pressure_hpa": [
                float(p) if i % 7 else None for i, p in enumerate(rng.normal(1013, 8, n))
            ],
            "symptoms": symptoms,
            "migraine_occurred": [bool(o) if r else None for o, r in zip(occurred, reported)],
            "migraine_severity": [
                int(s) if o else None for o, s in zip(occurred, rng.integers(1, 11, n))
            ],
            "migraine_duration_hours": [
                float(h) if o else None for o, h in zip(occurred, rng.uniform(2, 72, n))
            ],
        },
        schema=DAILY_LOGS_SCHEMA,
    )


def as_csv_text(df: pl.DataFrame, kind: str, tmp_path: Path) -> pl.DataFrame:
    """What ``read_table`` returns for ``df`` written as CSV (all-string columns)."""
    path = tmp_path / f"{kind}_{id(df)}.csv"
    write_table(df, path)
    return read_table(path, kind)


@pytest.fixture(scope="module")
def users() -> pl.DataFrame:
    return make_users(20)


@pytest.fixture(scope="module")
def logs(users: pl.DataFrame) -> pl.DataFrame:
    return make_logs(users, days=10)


@pytest.fixture()
def logs_text(logs: pl.DataFrame, tmp_path: Path) -> pl.DataFrame:
    return as_csv_text(logs, "daily_logs", tmp_path)


@pytest.fixture()
def users_text(users: pl.DataFrame, tmp_path: Path) -> pl.DataFrame:
    return as_csv_text(users, "users", tmp_path)


def set_cell(df: pl.DataFrame, row: int, column: str, value: str | None) -> pl.DataFrame:
    """``df`` with one (0-based) cell replaced."""
    return df.with_columns(
        pl.when(pl.int_range(pl.len()) == row)
        .then(pl.lit(value, pl.String))
        .otherwise(pl.col(column))
        .alias(column)
    )


# ----------------------------------------------------------------------------- bad rows


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("stress_level", "14", "stress_level: 14 is outside 1..10"),
        ("migraine_severity", "-1", "migraine_severity: -1 is outside 0..10"),
        ("sleep_hours", "seven", "sleep_hours: 'seven' is not a number"),
        ("sleep_hours", "nan", "sleep_hours: NaN is not a finite number"),
        ("skipped_meals", "1.5", "skipped_meals: '1.5' is not an integer"),
        ("barometric_pressure_hpa", "1013,2", "barometric_pressure_hpa: '1013,2' is not a number"),
        ("date", "2024-13-45", "date: '2024-13-45' is not an ISO date (YYYY-MM-DD)"),
        ("date", "05/01/2024", "date: '05/01/2024' is not an ISO date (YYYY-MM-DD)"),
        ("user_id", "u9", "user_id: 'u9' is not a known user"),
        ("symptoms", '["headache"]', "symptoms: unknown symptom 'headache'"),
        ("symptoms", "fatigue", "symptoms: 'fatigue' is not a JSON list of strings"),
        ("had_snack", "maybe", "had_snack: 'maybe' is not a boolean (true/false, 1/0, yes/no)"),
        ("menstruating", "2", "menstruating: '2' is not a boolean"),
        ("sleep_quality_good", None, "sleep_quality_good: missing (required)"),
        ("stress_level", "", "stress_level: missing (required)"),
    ],
)
def test_bad_log_value_is_quarantined_with_reason(
    logs_text: pl.DataFrame, users: pl.DataFrame, column: str, value: str | None, reason: str
) -> None:
    row = 3
    bad = set_cell(logs_text, row, column, value)
    valid, quarantine = validate_daily_logs(bad, users["user_id"])

    assert quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert quarantine.height == 1
    q = quarantine.row(0, named=True)
    assert q["table"] == "daily_logs"
    assert q["row_number"] == row + 1
    assert q["reason"].startswith(reason)
    assert ";" not in q["reason"]  # exactly one problem in this row
    assert q["user_id"] == bad["user_id"][row]
    assert q["date"] == bad["date"][row]
    assert json.loads(q["raw"]) == bad.row(row, named=True)
    assert valid.height == bad.height - 1


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("gender", "Q", "gender: 'Q' is not one of F/M/X"),
        ("age", "200", "age: 200 is outside 10..110"),
        ("age", "thirty", "age: 'thirty' is not an integer"),
        ("age", None, "age: missing (required)"),
        ("has_menstrual_cycle", "maybe", "has_menstrual_cycle: 'maybe' is not a boolean"),
        ("cycle_start_day", "2024-02-30", "cycle_start_day: '2024-02-30' is not an ISO date"),
        ("cycle_length_days", "7", "cycle_length_days: 7 is outside 15..60"),
    ],
)
def test_bad_user_value_is_quarantined_with_reason(
    users_text: pl.DataFrame, column: str, value: str | None, reason: str
) -> None:
    bad = set_cell(users_text, 2, column, value)
    valid, quarantine = validate_users(bad)
    assert quarantine["row_number"].to_list() == [3]
    assert quarantine["reason"][0].startswith(reason)
    assert quarantine["table"][0] == "users"
    assert quarantine["date"][0] is None
    assert valid.height == bad.height - 1


def test_all_problems_of_a_row_are_reported_in_column_order(
    logs_text: pl.DataFrame, users: pl.DataFrame
) -> None:
    bad = set_cell(logs_text, 0, "stress_level", "14")
    bad = set_cell(bad, 0, "user_id", "u9")
    bad = set_cell(bad, 0, "symptoms", '["aura","headache"]')
    _, quarantine = validate_daily_logs(bad, users["user_id"])
    assert quarantine["reason"].to_list() == [
        "user_id: 'u9' is not a known user; "
        + "stress_level: 14 is outside 1..10; "
        + "symptoms: unknown symptom 'headache'"
    ]


def test_every_copy_of_a_duplicate_user_date_is_quarantined(
    logs_text: pl.DataFrame, users: pl.DataFrame
) -> None:
    doubled = pl.concat([logs_text, logs_text.slice(5, 1)])
    valid, quarantine = validate_daily_logs(doubled, users["user_id"])
    assert quarantine["row_number"].to_list() == [6, doubled.height]
    assert quarantine["reason"].to_list() == ["duplicate user_id+date"] * 2
    assert valid.height == doubled.height - 2


def test_every_copy_of_a_duplicate_user_is_quarantined(users_text: pl.DataFrame) -> None:
    doubled = set_cell(users_text, 4, "user_id", users_text["user_id"][1])
    valid, quarantine = validate_users(doubled)
    assert quarantine["row_number"].to_list() == [2, 5]
    assert set(quarantine["reason"]) == {"duplicate user_id"}
    assert users_text["user_id"][1] not in valid["user_id"]


def test_lenient_spellings_parse(users: pl.DataFrame) -> None:
    row = {c.name: None for c in DAILY_LOG_COLUMNS} | {
        "user_id": users["user_id"][0],
        "sleep_hours": " 7 ",
        "stress_level": "3.0",
        "skipped_meals": "0",
        "alcohol_drinks": "0",
        "caffeine_drinks": "2",
        "water_glasses": "5",
        "screen_time_hours": "1e0",
    }
    spellings = [("TRUE", "No", "1", "yes"), ("False", "YES", "0", "no")]
    frame = pl.DataFrame(
        [
            row
            | {
                "date": f"2024-02-0{i + 1}",
                "sleep_quality_good": a,
                "had_snack": b,
                "bright_light_exposure": c,
                "menstruating": d,
                "symptoms": ["", "[ ]"][i],
            }
            for i, (a, b, c, d) in enumerate(spellings)
        ],
        schema={c.name: pl.String for c in DAILY_LOG_COLUMNS},
    )
    valid, quarantine = validate_daily_logs(frame, users["user_id"])
    assert quarantine.is_empty()
    assert valid.schema == pl.Schema(DAILY_LOGS_SCHEMA)
    assert valid["sleep_quality_good"].to_list() == [True, False]
    assert valid["had_snack"].to_list() == [False, True]
    assert valid["bright_light_exposure"].to_list() == [True, False]
    assert valid["menstruating"].to_list() == [True, False]
    assert valid["stress_level"].to_list() == [3, 3]
    assert valid["sleep_hours"].to_list() == [7.0, 7.0]
    assert valid["symptoms"].to_list() == [[], []]


# ----------------------------------------------------------------------------- nothing lost


def test_nothing_valid_is_lost(logs: pl.DataFrame, users: pl.DataFrame, tmp_path: Path) -> None:
    text = as_csv_text(logs, "daily_logs", tmp_path)
    bad_rows = {
        7: ("stress_level", "0"),
        20: ("date", "yesterday"),
        33: ("user_id", "nobody"),
        51: ("symptoms", '["fatigue",'),
        90: ("water_glasses", "-2"),
    }
    for row, (column, value) in bad_rows.items():
        text = set_cell(text, row, column, value)

    valid, quarantine = validate_daily_logs(text, users["user_id"])

    assert valid.height + quarantine.height == text.height
    assert quarantine["row_number"].to_list() == [r + 1 for r in sorted(bad_rows)]
    keep = pl.Series([i not in bad_rows for i in range(logs.height)])
    assert_frame_equal(valid, logs.filter(keep))


def test_load_real_reads_validates_and_reports(tmp_path: Path) -> None:
    data = load_real(FIXTURES / "users.csv", FIXTURES / "daily_logs.csv")

    assert data.users["user_id"].to_list() == ["u1", "u2", "u3"]
    assert data.users.schema == pl.Schema(USERS_SCHEMA)
    assert data.daily_logs.schema == pl.Schema(DAILY_LOGS_SCHEMA)
    assert data.daily_logs.select("user_id", pl.col("date").cast(pl.String)).rows() == [
        ("u1", "2024-01-01"),
        ("u1", "2024-01-02"),
        ("u1", "2024-01-03"),
        ("u3", "2024-01-03"),
    ]
    assert data.daily_logs["symptoms"].to_list() == [[], ["fatigue", "neck_stiffness"], [], []]
    reasons = {
        (t, r): why for t, r, why in data.quarantine.select("table", "row_number", "reason").rows()
    }
    assert reasons == {
        ("users", 4): "gender: 'Q' is not one of F/M/X; duplicate user_id",
        ("users", 5): "duplicate user_id",
        ("daily_logs", 4): "duplicate user_id+date",
        ("daily_logs", 5): "duplicate user_id+date",
        ("daily_logs", 6): "symptoms: unknown symptom 'headache'",
        ("daily_logs", 7): "date: '2024-13-45' is not an ISO date (YYYY-MM-DD)",
        ("daily_logs", 8): "sleep_hours: 'seven' is not a number",
        ("daily_logs", 10): "user_id: 'u4' is not a known user",
        ("daily_logs", 11): "user_id: 'u9' is not a known user",
        ("daily_logs", 12): "stress_level: 14 is outside 1..10",
    }
    assert data.users.height + (data.quarantine["table"] == "users").sum() == 5
    assert data.daily_logs.height + (data.quarantine["table"] == "daily_logs").sum() == 12


# ----------------------------------------------------------------------------- file errors


def test_missing_column_stops_naming_file_and_column(logs: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "daily_logs.csv"
    write_table(logs.drop("stress_level"), path)
    with pytest.raises(DataContractError, match=r"daily_logs\.csv.*missing.*'stress_level'"):
        read_table(path, "daily_logs")


def test_unknown_column_stops_naming_it(users: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    write_table(users.with_columns(favourite_colour=pl.lit("blue")), path)
    with pytest.raises(DataContractError, match=r"users\.parquet.*unknown.*'favourite_colour'"):
        read_table(path, "users")


def test_missing_column_in_memory_is_a_contract_error(users: pl.DataFrame) -> None:
    with pytest.raises(DataContractError, match="'age'"):
        validate_users(users.drop("age"))


@pytest.mark.parametrize("name", ["nowhere.csv", "nowhere.parquet"])
def test_missing_file_stops_naming_it(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataContractError, match=rf"{tmp_path / name}.*not found"):
        read_table(tmp_path / name, "users")


def test_unreadable_file_stops_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DataContractError, match=rf"{path}: cannot read users table"):
        read_table(path, "users")


def test_unsupported_suffix_stops(tmp_path: Path) -> None:
    path = tmp_path / "users.xlsx"
    path.write_bytes(b"")
    with pytest.raises(DataContractError, match="unsupported file type"):
        read_table(path, "users")


# ----------------------------------------------------------------------------- round trip


def test_csv_and_parquet_round_trip_identically(
    users: pl.DataFrame, logs: pl.DataFrame, tmp_path: Path
) -> None:
    results = {}
    for suffix in ("csv", "parquet"):
        write_table(users, tmp_path / f"users.{suffix}")
        write_table(logs, tmp_path / f"daily_logs.{suffix}")
        results[suffix] = load_real(tmp_path / f"users.{suffix}", tmp_path / f"daily_logs.{suffix}")
    for data in results.values():
        assert data.quarantine.is_empty()
        assert_frame_equal(data.users, users)
        assert_frame_equal(data.daily_logs, logs)


def test_typed_parquet_values_are_checked_too(
    users: pl.DataFrame, logs: pl.DataFrame, tmp_path: Path
) -> None:
    # e.g. a pandas export: ints as float (nulls), dates as midnight datetimes
    odd = logs.with_columns(
        pl.when(pl.int_range(pl.len()) == 2)
        .then(14)
        .otherwise(pl.col("stress_level"))
        .cast(pl.Float64)
        .alias("stress_level"),
        pl.col("date").cast(pl.Datetime("us")),
        pl.col("migraine_severity").cast(pl.Int32),
    )
    path = tmp_path / "daily_logs.parquet"
    write_table(odd, path)
    valid, quarantine = validate_daily_logs(read_table(path, "daily_logs"), users["user_id"])
    assert quarantine["reason"].to_list() == ["stress_level: 14 is outside 1..10"]
    assert_frame_equal(valid, logs.filter(pl.int_range(pl.len()) != 2))


# ----------------------------------------------------------------------------- cohort


def test_realistic_cohort_validates_clean(tmp_path: Path) -> None:
    users = make_users(100, seed=3)
    logs = make_logs(users, days=110, seed=4)  # ~10k rows
    assert logs.height > 9_000

    data = validate_cohort(users, logs)  # typed, in memory (the simulator's path)
    assert data.quarantine.is_empty()
    assert_frame_equal(data.daily_logs, logs)

    text = as_csv_text(logs, "daily_logs", tmp_path)  # the same rows as CSV text
    valid, quarantine = validate_daily_logs(text, users["user_id"])
    assert quarantine.is_empty()
    assert_frame_equal(valid, logs)


def test_validate_cohort_extra_columns(users: pl.DataFrame, logs: pl.DataFrame) -> None:
    with_truth = logs.with_columns(p_true=pl.lit(0.1))
    with pytest.raises(DataContractError, match="unknown column.*'p_true'"):
        validate_cohort(users, with_truth)
    data = validate_cohort(users, with_truth, allow_extra=True)
    assert_frame_equal(data.daily_logs, logs)


def test_empty_tables_validate(users: pl.DataFrame) -> None:
    valid, quarantine = validate_daily_logs(
        pl.DataFrame(schema={c.name: pl.String for c in DAILY_LOG_COLUMNS}), users["user_id"]
    )
    assert valid.is_empty() and valid.schema == pl.Schema(DAILY_LOGS_SCHEMA)
    assert quarantine.is_empty() and quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    valid, _ = validate_users(pl.DataFrame(schema={c.name: pl.String for c in USER_COLUMNS}))
    assert valid.schema == pl.Schema(USERS_SCHEMA)
