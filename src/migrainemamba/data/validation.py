"""Validation of diary tables against the data contract (docs/architecture.md §2).

Everything here is generated from ``migrainemamba.data.schema``; no column is
restated. A table goes through three steps:

1. **Column check** (:func:`check_columns`): a missing *or unknown* column stops
   with :class:`DataContractError` naming the source and the column(s). Unknown
   columns are an error by choice — the contract says "column names exactly as
   below", and a silently ignored ``stress`` next to a missing ``stress_level``
   is the typo we want to catch. In-memory callers that carry extra columns on
   purpose (the simulator's ground truth) pass ``allow_extra=True``; the extra
   columns are then dropped from the valid output.
2. **Parsing** (:func:`_parse_column`): each column is brought to its contract
   dtype. Input may be strings (CSV, read with every column as text) or already
   typed (Parquet, in-memory frames). Values that do not parse become a row-level
   reason, e.g. ``date: '2024-13-45' is not an ISO date``, never a crash.
   Strings are stripped; an empty string is null. Integers accept ``"3"`` and
   ``"3.0"`` (spreadsheet exports) but not ``"3.5"``. Booleans accept
   true/false, 1/0, yes/no in any case. ``symptoms`` is a JSON list of strings
   (``["fatigue","nausea"]``); ``[]``, an empty cell or null means no symptoms.
   Dates are ``YYYY-MM-DD``; a Parquet datetime at midnight is taken as its date.
3. **Rules** via dataframely: a ``dy.Schema`` is generated from the contract
   columns (nullability, min/max, no NaN/inf, allowed values for ``gender`` and
   ``symptoms``, primary key ``user_id`` / ``user_id+date``) and
   ``Schema.filter`` evaluates every rule on every row. Its per-rule failure
   table is turned into readable reasons. Daily logs are also checked against
   the valid user ids (not expressible as a static dataframely rule, so a plain
   polars expression). Parsing is ours, not dataframely's ``filter(cast=True)``:
   a lenient polars cast cannot read yes/no booleans, JSON lists or ``"3.0"``
   integers, and its failure says only "dtype", not which value was wrong.

Quarantine policy:

- A row is quarantined if anything is wrong with it; its ``reason`` lists *all*
  problems found, one per column at most (parse error first, then the first
  failing rule), in contract column order, joined by ``"; "``, followed by the
  duplicate-key reason.
- Duplicates (same ``user_id``, or same ``user_id+date``): *every* copy is
  quarantined, since we cannot know which one is right. The key is judged as
  given, over all rows, including copies that are bad for other reasons. Rows
  whose key did not parse are not counted as duplicates.
- ``row_number`` is the 1-based data row in the source (the header is not
  counted, so in a plain CSV the file line is ``row_number + 1``).
- ``user_id`` and ``date`` are the values as given, as strings; ``raw`` is the
  whole input row as a JSON object. Users rows have ``date`` null.
- Valid rows keep their input order; valid + quarantined = input rows.

Logs of a user whose users row was quarantined are quarantined too (``user_id:
'u1' is not a known user``), since features need the user's row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import dataframely as dy
import polars as pl

from migrainemamba.data.schema import (
    DAILY_LOG_COLUMNS,
    GENDERS,
    MEDICATION_CLASSES,
    MEDICATION_COLUMNS,
    MEDICATION_PURPOSES,
    SYMPTOMS,
    USER_COLUMNS,
    Column,
)

TableKind = Literal["users", "daily_logs", "medications"]

TABLE_COLUMNS: dict[str, tuple[Column, ...]] = {
    "users": USER_COLUMNS,
    "daily_logs": DAILY_LOG_COLUMNS,
    "medications": MEDICATION_COLUMNS,
}
# Medications have none: two intakes of the same drug on one day are two real rows.
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "users": ("user_id",),
    "daily_logs": ("user_id", "date"),
    "medications": (),
}
# Categorical string columns and their allowed values (for list columns: of each element).
ALLOWED_VALUES: dict[str, tuple[str, ...]] = {
    "gender": GENDERS,
    "symptoms": SYMPTOMS,
    "medication_class": MEDICATION_CLASSES,
    "purpose": MEDICATION_PURPOSES,
}
BOOL_WORDS: dict[str, bool] = {
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
}

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "table": pl.String(),
    "row_number": pl.Int64(),
    "user_id": pl.String(),
    "date": pl.String(),
    "reason": pl.String(),
    "raw": pl.String(),
}

_ROW = "_source_row"  # 1-based input row, carried through the dataframely check
_ERR = "_parse_error__"  # prefix: per-column parse reason
_MSG = "_rule_error__"  # prefix: per-column rule reason
_DUP = "_duplicate"
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"
_JSON_STRING_LIST = r'^\[\s*(?:"[^"\\]*"\s*(?:,\s*"[^"\\]*"\s*)*)?\]$'


class DataContractError(ValueError):
    """A table cannot be validated at all (unreadable, wrong columns)."""


@dataclass(frozen=True)
class PreparedData:
    """Contract-typed tables plus the quarantine report of the rows left out."""

    users: pl.DataFrame
    daily_logs: pl.DataFrame
    quarantine: pl.DataFrame
    medications: pl.DataFrame | None = None  # only when a medications table was given


# ----------------------------------------------------------------------------- columns


def check_columns(
    columns: Sequence[str], kind: TableKind, source: str, *, allow_extra: bool = False
) -> None:
    """Raise :class:`DataContractError` if ``columns`` miss contract columns or add others."""
    if kind not in TABLE_COLUMNS:
        raise DataContractError(
            f"unknown table kind {kind!r}; expected one of {list(TABLE_COLUMNS)}"
        )
    expected = [c.name for c in TABLE_COLUMNS[kind]]
    missing = [c for c in expected if c not in columns]
    extra = [] if allow_extra else [c for c in columns if c not in expected]
    problems = []
    if missing:
        problems.append(f"missing required column(s) {', '.join(map(repr, missing))}")
    if extra:
        problems.append(f"unknown column(s) {', '.join(map(repr, extra))}")
    if problems:
        raise DataContractError(
            f"{source}: {' and '.join(problems)}. A {kind} table must have exactly the "
            f"columns {', '.join(expected)} (docs/architecture.md §2); rename or remove columns to match."
        )


# ----------------------------------------------------------------------------- parsing


def _as_text(expr: pl.Expr) -> pl.Expr:
    """Stripped text; empty means null."""
    text = expr.cast(pl.String).str.strip_chars()
    return pl.when(text.str.len_chars() > 0).then(text)


def _parse_column(col: Column, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """(value cast to the contract dtype, parse reason or null) for input of ``dtype``."""
    name, target = col.name, col.dtype
    src = pl.col(name)
    if dtype == target:
        if isinstance(target, pl.List):  # an empty cell is an empty list
            return src.fill_null(pl.lit([], dtype=target)), pl.lit(None, pl.String)
        return src, pl.lit(None, pl.String)

    if isinstance(target, pl.List):
        if isinstance(dtype, pl.List | pl.Null):
            value = src.cast(target, strict=False).fill_null(pl.lit([], dtype=target))
            return value, pl.lit(None, pl.String)
        text = _as_text(src)
        ok = text.str.contains(_JSON_STRING_LIST)
        value = pl.when(ok).then(text).str.json_decode(target)
        value = pl.when(text.is_null()).then(pl.lit([], dtype=target)).otherwise(value)
        return value, _reason_if(
            name, text, value, f"is not a JSON list of strings like {_example_list(col)}"
        )

    if target == pl.Date() and isinstance(dtype, pl.Datetime):
        midnight = src.dt.truncate("1d") == src
        text = pl.when(midnight).then(src.dt.strftime("%Y-%m-%d")).otherwise(src.cast(pl.String))
    else:
        text = _as_text(src)

    if target == pl.String():
        return text, pl.lit(None, pl.String)
    if target == pl.Boolean():
        value = text.str.to_lowercase().replace_strict(
            BOOL_WORDS, default=None, return_dtype=pl.Boolean
        )
        return value, _reason_if(name, text, value, "is not a boolean (true/false, 1/0, yes/no)")
    if target == pl.Date():
        value = pl.when(text.str.contains(_ISO_DATE)).then(
            text.str.to_date("%Y-%m-%d", strict=False)
        )
        return value, _reason_if(name, text, value, "is not an ISO date (YYYY-MM-DD)")
    if target.is_integer():
        as_float = text.cast(pl.Float64, strict=False)
        integral = as_float.is_finite() & (as_float == as_float.round())
        value = text.cast(target, strict=False).fill_null(
            pl.when(integral).then(as_float).cast(target, strict=False)
        )
        return value, _reason_if(name, text, value, "is not an integer")
    if target.is_float():
        value = text.cast(target, strict=False)
        return value, _reason_if(name, text, value, "is not a number")
    raise NotImplementedError(f"no parser for contract dtype {target} of column {name!r}")


def _reason_if(name: str, text: pl.Expr, value: pl.Expr, problem: str) -> pl.Expr:
    """``"<name>: '<text>' <problem>"`` where a given value did not parse, else null."""
    return pl.when(text.is_not_null() & value.is_null()).then(
        pl.format("{}: '{}' {}", pl.lit(name), text, pl.lit(problem))
    )


def _example_list(col: Column) -> str:
    examples = ALLOWED_VALUES.get(col.name, ("a", "b"))[:2]
    return "[" + ",".join(f'"{v}"' for v in examples) + "]"


# ----------------------------------------------------------------------------- rules


def _dy_column(col: Column, primary_key: bool) -> dy.Column:
    """The dataframely column for a contract column (nullability, range, allowed values)."""
    nullable = col.nullable and not primary_key
    allowed = ALLOWED_VALUES.get(col.name)
    check = {"allowed": lambda e: e.is_in(allowed)} if allowed is not None else None
    target = col.dtype
    if target == pl.String():
        return dy.String(
            nullable=nullable, primary_key=primary_key, check=check, regex=col.pattern
        )
    if target == pl.Boolean():
        return dy.Bool(nullable=nullable, primary_key=primary_key)
    if target == pl.Date():
        return dy.Date(nullable=nullable, primary_key=primary_key)
    if target == pl.Int64():
        return dy.Int64(nullable=nullable, primary_key=primary_key, min=col.min, max=col.max)
    if target == pl.Float64():
        return dy.Float64(nullable=nullable, primary_key=primary_key, min=col.min, max=col.max)
    if target == pl.List(pl.String()):
        return dy.List(dy.String(nullable=False, check=check), nullable=nullable)
    raise NotImplementedError(f"no dataframely column for dtype {target} of column {col.name!r}")


def _build_dy_schema(kind: TableKind) -> type[dy.Schema]:
    keys = PRIMARY_KEYS[kind]
    members: dict[str, dy.Column] = {
        c.name: _dy_column(c, primary_key=c.name in keys) for c in TABLE_COLUMNS[kind]
    }
    members[_ROW] = dy.Int64(nullable=False)
    name = "".join(part.title() for part in kind.split("_")) + "ContractSchema"
    return type(name, (dy.Schema,), members)


DY_SCHEMAS: dict[str, type[dy.Schema]] = {kind: _build_dy_schema(kind) for kind in TABLE_COLUMNS}


def _bounds(col: Column) -> str:
    lo, hi = col.min, col.max
    if lo is not None and hi is not None:
        return f"outside {lo:g}..{hi:g}"
    return f"below {lo:g}" if lo is not None else f"above {hi:g}"


def _rule_message(col: Column, rule: str) -> pl.Expr:
    """Readable reason for the failure of dataframely rule ``rule`` on ``col``."""
    value = pl.col(col.name)
    text = value.cast(pl.String) if not isinstance(col.dtype, pl.List) else None
    if rule == "nullability":
        return pl.lit(f"{col.name}: missing (required)")
    if rule in ("min", "max"):
        return pl.format("{}: {} is " + _bounds(col), pl.lit(col.name), text)
    if rule in ("nan", "inf"):
        return pl.format("{}: {} is not a finite number", pl.lit(col.name), text)
    if rule == "regex":
        return pl.format("{}: '{}' does not match " + (col.pattern or ""), pl.lit(col.name), text)
    if rule == "check__allowed":
        allowed = "/".join(ALLOWED_VALUES[col.name])
        return pl.format("{}: '{}' is not one of " + allowed, pl.lit(col.name), text)
    if rule == "inner_check__allowed":
        unknown = value.list.eval(
            pl.element().filter(~pl.element().is_in(ALLOWED_VALUES[col.name]))
        ).list.unique(maintain_order=True)
        noun = f"unknown {col.name.removesuffix('s')}"  # "symptoms: unknown symptom 'x'"
        return pl.format("{}: {} '{}'", pl.lit(col.name), pl.lit(noun), unknown.list.join("', '"))
    return pl.lit(f"{col.name}: fails rule '{rule}'")


# Reported before range rules: NaN also fails "max", but "not a finite number" is the news.
_FIRST_RULES: tuple[str, ...] = ("nullability", "nan", "inf")


def _rule_messages(details: pl.DataFrame, kind: TableKind) -> pl.DataFrame:
    """Per failing row: one rule reason per column (first failing rule) and the duplicate flag."""
    columns = TABLE_COLUMNS[kind]
    rule_names = [c for c in details.columns if c == "primary_key" or "|" in c]
    exprs = []
    for col in columns:
        rules = [r.split("|", 1)[1] for r in rule_names if r.split("|", 1)[0] == col.name]
        rules.sort(key=lambda r: _FIRST_RULES.index(r) if r in _FIRST_RULES else len(_FIRST_RULES))
        messages = [
            pl.when(pl.col(f"{col.name}|{rule}") == "invalid").then(_rule_message(col, rule))
            for rule in rules
        ]
        exprs.append(
            (pl.coalesce(messages) if messages else pl.lit(None, pl.String)).alias(_MSG + col.name)
        )
    keys = list(PRIMARY_KEYS[kind])
    duplicate = (
        (pl.col("primary_key") == "invalid") & pl.all_horizontal(pl.col(keys).is_not_null())
        if "primary_key" in details.columns
        else pl.lit(False)
    )
    exprs.append(duplicate.alias(_DUP))
    return details.select(pl.col(_ROW), *exprs)


# ----------------------------------------------------------------------------- validate


def _validate(
    df: pl.DataFrame,
    kind: TableKind,
    *,
    valid_user_ids: Iterable[str] | None,
    source: str,
    allow_extra: bool,
    row_rules: Sequence[tuple[pl.Expr, str]] = (),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    check_columns(df.columns, kind, source, allow_extra=allow_extra)
    columns = TABLE_COLUMNS[kind]
    names = [c.name for c in columns]
    raw = df.select(names).with_row_index(_ROW, offset=1).with_columns(pl.col(_ROW).cast(pl.Int64))

    parse_exprs = []
    for col in columns:
        value, reason = _parse_column(col, raw.schema[col.name])
        parse_exprs += [value.alias(col.name), reason.alias(_ERR + col.name)]
    parsed = raw.select(pl.col(_ROW), *parse_exprs)

    good, failure = DY_SCHEMAS[kind].filter(parsed.select(_ROW, *names))
    messages = _rule_messages(failure.details(), kind)

    checked = parsed.join(messages, on=_ROW, how="left", maintain_order="left")
    if valid_user_ids is not None:
        known = pl.Series("known", list(valid_user_ids), dtype=pl.String)
        unknown_user = pl.when(pl.col("user_id").is_not_null() & ~pl.col("user_id").is_in(known))
        checked = checked.with_columns(
            pl.coalesce(
                pl.col(_MSG + "user_id"),
                unknown_user.then(
                    pl.format("user_id: '{}' is not a known user", pl.col("user_id"))
                ),
            ).alias(_MSG + "user_id")
        )
    duplicate_reason = "duplicate " + "+".join(PRIMARY_KEYS[kind])
    reasons = [pl.coalesce(pl.col(_ERR + n), pl.col(_MSG + n)) for n in names]
    reasons.append(pl.when(pl.col(_DUP).fill_null(False)).then(pl.lit(duplicate_reason)))
    reasons += [pl.when(bad.fill_null(False)).then(pl.lit(reason)) for bad, reason in row_rules]
    checked = checked.select(
        pl.col(_ROW),
        pl.concat_list(reasons).list.drop_nulls().list.join("; ").alias("reason"),
    ).filter(pl.col("reason") != "")

    bad_rows = checked.get_column(_ROW)
    valid = good.filter(~pl.col(_ROW).is_in(bad_rows)).select(names)

    has_date = "date" in names
    quarantine = (
        raw.join(checked, on=_ROW, how="inner", maintain_order="left")
        .select(
            pl.lit(kind).alias("table"),
            pl.col(_ROW).alias("row_number"),
            pl.col("user_id").cast(pl.String),
            (pl.col("date").cast(pl.String) if has_date else pl.lit(None, pl.String)).alias("date"),
            pl.col("reason"),
            pl.struct(names).struct.json_encode().alias("raw"),
        )
        .cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]
    )
    return valid, quarantine


def validate_users(
    df: pl.DataFrame, *, source: str = "users table", allow_extra: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a users table into (valid rows typed to USERS_SCHEMA, quarantine report).

    Raises :class:`DataContractError` if columns are missing (or unknown, unless
    ``allow_extra``). ``source`` names the table in error messages.
    """
    return _validate(df, "users", valid_user_ids=None, source=source, allow_extra=allow_extra)


def validate_daily_logs(
    df: pl.DataFrame,
    valid_user_ids: Iterable[str],
    *,
    source: str = "daily_logs table",
    allow_extra: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a daily-logs table into (valid rows typed to DAILY_LOGS_SCHEMA, quarantine).

    Rows whose ``user_id`` is not in ``valid_user_ids`` are quarantined.
    """
    return _validate(
        df, "daily_logs", valid_user_ids=valid_user_ids, source=source, allow_extra=allow_extra
    )


def validate_medications(
    df: pl.DataFrame,
    valid_user_ids: Iterable[str],
    *,
    source: str = "medications table",
    allow_extra: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a medications table into (valid rows typed to MEDICATIONS_SCHEMA, quarantine).

    Rows of unknown users are quarantined; so is relief reported for a preventive dose.
    """
    return _validate(
        df,
        "medications",
        valid_user_ids=valid_user_ids,
        source=source,
        allow_extra=allow_extra,
        row_rules=MEDICATION_ROW_RULES,
    )


# Rules across columns of one row: (true where the row is bad, reason).
MEDICATION_ROW_RULES: tuple[tuple[pl.Expr, str], ...] = (
    (
        (pl.col("purpose") == "preventive") & pl.col("relief_2h").is_not_null(),
        "relief_2h: given for a preventive dose (relief is rated for acute intakes only)",
    ),
)


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


def validate_cohort(
    users_df: pl.DataFrame, logs_df: pl.DataFrame, *, allow_extra: bool = False
) -> PreparedData:
    """Validate in-memory users and logs (users first, then logs against valid users)."""
    users, users_q = validate_users(users_df, source="users table", allow_extra=allow_extra)
    logs, logs_q = validate_daily_logs(
        logs_df,
        users.get_column("user_id"),
        source="daily_logs table",
        allow_extra=allow_extra,
    )
    return PreparedData(
        users=users, daily_logs=logs, quarantine=pl.concat([users_q, logs_q], how="vertical")
    )


__all__ = [
    "ALLOWED_VALUES",
    "BOOL_WORDS",
    "DY_SCHEMAS",
    "QUARANTINE_SCHEMA",
    "DataContractError",
    "PreparedData",
    "check_columns",
    "empty_quarantine",
    "validate_cohort",
    "validate_daily_logs",
    "validate_medications",
    "validate_users",
]
