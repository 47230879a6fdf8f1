"""Forecast features for one user-day (docs/architecture.md §1), for training and serving.

One function, :func:`build_features`, turns the two contract tables (§2) into
one row per user per *calendar* day with the model inputs
(:data:`FEATURE_COLUMNS`) and the onset labels. The training stage calls it on
a whole cohort; the service calls it on one user's rows from the database
(plus ``forecast_dates`` for "today"). Both give identical values, because
every feature is computed within a user only.

Information rule for the forecast of day D: only rows dated before D plus the
morning fields (``MORNING_FIELDS``) of D's own row. D's day fields, D's
outcome and anything dated later never change D's features.

Calendar grid: each user's days run from their first to their last date
(logged dates and requested forecast dates). Days without a row stay on the
grid with ``logged = False`` and null values, so "yesterday" is always D−1.
Every grid day is kept in the output (consumers select rows with ``scorable``
for training and with ``forecast_dates`` for serving).

Implementation notes: the frame is sorted by (user_id, date) and each user's
grid is contiguous, so a calendar lag of k days is a row shift of k masked by
``_t >= k`` (``_t`` = days since the user's first grid day). Windowed sums are
differences of per-user cumulative sums, so unlogged (null) days are ignored
and values for one user do not depend on the other users in the frame.
"""

from __future__ import annotations

import polars as pl

from migrainemamba.data.schema import (
    DAILY_LOGS_SCHEMA,
    DEFAULT_CYCLE_LENGTH_DAYS,
    MORNING_FIELDS,
    SYMPTOMS,
    USERS_SCHEMA,
)

__all__ = [
    "ATTACK_SYMPTOMS",
    "FEATURE_COLUMNS",
    "FEATURE_DESCRIPTIONS",
    "KEY_COLUMNS",
    "LABEL_COLUMNS",
    "PHASES",
    "PRODROME_SYMPTOMS",
    "build_features",
    "calendar_grid",
    "check_unique",
    "label_columns",
    "normalize_daily_logs",
    "normalize_users",
    "phase_of",
]

# Symptoms of the attack itself; every other contract symptom is a prodrome
# (premonitory) symptom that may precede an attack by up to 48 h.
ATTACK_SYMPTOMS: tuple[str, ...] = ("nausea", "aura")
PRODROME_SYMPTOMS: tuple[str, ...] = tuple(s for s in SYMPTOMS if s not in ATTACK_SYMPTOMS)

PHASES: tuple[str, ...] = ("1-14", "15-30", "31+")

# Tunable constants (kept here so training and serving agree).
USUAL_WINDOW_LOGGED_DAYS = 14  # "usual" sleep / caffeine habit: last 14 logged days
DAYS_SINCE_ATTACK_CAP = 60
HEAVY_DRINKING_DRINKS = 5
ONSET_RATE_PRIOR_DAYS = 30.0  # weight k of the self-reported rate, in scorable days
# The personal baseline moves only every BASELINE_BLOCK_LOGGED_DAYS logged days. A
# rate updated daily jumps after every attack and decays until the next, so
# within a person the attack days sit at its lows (a finite-sequence selection
# effect, as in the "hot hand" bias): on the simulator a daily running rate
# scores within-person AUC ~0.19 though it carries no day-to-day information.
BASELINE_PRIOR_DAYS = 60.0
BASELINE_BLOCK_LOGGED_DAYS = 14
DEFAULT_ATTACKS_PER_MONTH = 3.0  # prior when the self-report is missing
PERIMENSTRUAL_BEFORE = 2  # days before a (predicted) period start
PERIMENSTRUAL_AFTER = 3  # days after it
# The person's warning-sign record: how their own past onsets followed their premonitory
# symptoms. Premonitory symptoms warn of attacks in some people and not in others (29% of a
# population, 66-87% of clinic patients report them: docs/clinical_sources.md), so how much a
# symptom says depends on the person's record. A "warning" for day D: at least WARNING_COUNTS[i]
# prodrome symptoms logged on D-1 or D-2. The rates are shrunk by pseudo-counts (no record: the
# neutral value). Through the person's first BASELINE_BLOCK_LOGGED_DAYS logged days the record is
# held at its empty value, then updated daily: updated daily from day 1, a record with nothing in
# it still moved from day to day and cost within-person risk correlation in days 1-14.
# docs/experiments/prodrome_record.md has the measurements.
WARNING_COUNTS: tuple[int, ...] = (1, 2)
WARNING_RECORD_PSEUDO_ONSETS = 1.0  # pseudo-onsets after a warning / among onsets
WARNING_RECORD_PSEUDO_DAYS = 8.0  # pseudo-days in the onset rates (1 in 8 ~ the cohort's rate)
WARNING_RATE_PSEUDO_DAYS = 4.0  # pseudo-days in the share of days after a warning (1 in 4)
WARNING_RECORD_COLUMNS: tuple[str, ...] = tuple(
    f"prodrome_record_{name}_{k}plus" for k in WARNING_COUNTS for name in ("lift", "sensitivity", "warning_rate", "hits")
)

# The in-memory engine ran this plan ~1.7x faster than the streaming default
# (polars 2.1, 10k users x 365 days).
COLLECT_ENGINE = "in-memory"

KEY_COLUMNS: tuple[str, ...] = ("user_id", "date", "logged", "forecast", "phase")
LABEL_COLUMNS: tuple[str, ...] = ("attack_running", "scorable", "onset")

FEATURE_DESCRIPTIONS: dict[str, str] = {
    # morning of D
    "sleep_hours": "hours slept last night",
    "sleep_quality_good": "last night's sleep was good (1) or poor (0)",
    "menstruating": "menstruating this morning",
    "barometric_pressure_hpa": "barometric pressure this morning (hPa)",
    # sleep
    "usual_sleep_hours": "usual sleep: mean hours over the previous 14 logged nights",
    "sleep_deviation_hours": "last night's sleep minus usual sleep (hours)",
    "sleep_debt_3_nights": "sleep debt over the last 3 nights: hours below the usual sleep",
    "poor_sleep_nights_3": "poor-quality nights among the last 3",
    # stress
    "stress_yesterday": "stress level yesterday (1-10)",
    "stress_change_yesterday": "stress yesterday minus the day before (negative = let-down)",
    "stress_letdown_2_days": "largest day-to-day stress drop over the last 2 days",
    "stress_mean_7_days": "mean stress over the last 7 days (logged days only)",
    # intake and habits yesterday
    "alcohol_yesterday": "alcoholic drinks yesterday",
    "heavy_drinking_yesterday": "5 or more alcoholic drinks yesterday",
    "caffeine_yesterday": "caffeinated drinks yesterday",
    "caffeine_habit": "usual caffeine: mean drinks over the previous 14 logged days",
    "caffeine_yesterday_minus_habit": "caffeine yesterday minus usual (negative = withdrawal)",
    "skipped_meals_yesterday": "meals skipped yesterday",
    "snack_yesterday": "had an evening snack yesterday",
    "water_yesterday": "glasses of water yesterday",
    "bright_light_yesterday": "exposed to bright light yesterday",
    "screen_time_yesterday": "screen time yesterday (hours)",
    # menstrual cycle
    "cycle_day": "days since the last (logged or predicted) period start",
    "days_to_next_period": "days until the next predicted period start",
    "perimenstrual": "within 2 days before to 3 days after a period start",
    # weather
    "pressure_change_24h": "pressure change since yesterday morning (hPa)",
    "pressure_change_48h": "pressure change since 2 mornings ago (hPa)",
    # attack history
    "days_since_last_attack": "days since the last attack began (capped at 60)",
    "attacks_last_30_days": "attacks begun in the last 30 days",
    "personal_onset_rate": "personal daily onset rate so far, shrunk toward the self-report",
    "personal_baseline_rate": "personal daily onset rate, shrunk toward the self-report, updated every 14 logged days",
    "attack_days_last_7_days": "days with a migraine in the last 7 days",
    # prodrome yesterday
    **{
        f"prodrome_{s}_yesterday": f"{s.replace('_', ' ')} yesterday (possible prodrome)"
        for s in PRODROME_SYMPTOMS
    },
    "prodrome_count_yesterday": "number of prodrome symptoms yesterday",
    "prodrome_count_2_days_ago": "number of prodrome symptoms 2 days ago",
    # the person's warning-sign record (days before D only)
    **{
        name: text.format(k=k)
        for k in WARNING_COUNTS
        for name, text in (
            (f"prodrome_record_lift_{k}plus", "log of the person's onset rate after a warning ({k}+ prodrome symptoms in the 2 days before) over their onset rate overall, so far"),
            (f"prodrome_record_sensitivity_{k}plus", "share of the person's onsets so far that followed a warning ({k}+ prodrome symptoms)"),
            (f"prodrome_record_warning_rate_{k}plus", "share of the person's scorable days so far that followed a warning ({k}+ prodrome symptoms)"),
            (f"prodrome_record_hits_{k}plus", "the person's onsets so far that followed a warning ({k}+ prodrome symptoms)"),
        )
    },
    # diary
    "logged_yesterday": "diary logged yesterday",
    "days_since_previous_log": "days since the previous diary entry",
    "share_logged_14_days": "share of the last 14 days with a diary entry",
    "days_logged_before": "days logged before today",
    # calendar
    "day_of_week": "day of the week (1 = Monday, 7 = Sunday)",
    # person
    "age": "age (years)",
    "gender_female": "gender female",
    "gender_male": "gender male",
    "bmi": "body-mass index",
    "attacks_per_month": "self-reported attacks per month at onboarding",
    "has_menstrual_cycle": "has a menstrual cycle",
}

# Exactly the model inputs, in a fixed order. Labels and ids are never here.
FEATURE_COLUMNS: tuple[str, ...] = tuple(FEATURE_DESCRIPTIONS)

assert not set(FEATURE_COLUMNS) & (set(KEY_COLUMNS) | set(LABEL_COLUMNS))


def phase_of(days_logged: int) -> str:
    """Phase of a forecast given the days logged *including* the forecast day.

    ``days_logged = days_logged_before + 1``: 1-14 → "1-14", 15-30 → "15-30",
    more → "31+".
    """
    if days_logged <= 14:
        return PHASES[0]
    if days_logged <= 30:
        return PHASES[1]
    return PHASES[2]


def _phase_expr(days_logged: pl.Expr) -> pl.Expr:
    return (
        pl.when(days_logged <= 14)
        .then(pl.lit(PHASES[0]))
        .when(days_logged <= 30)
        .then(pl.lit(PHASES[1]))
        .otherwise(pl.lit(PHASES[2]))
    )


# self-reported attacks per month as a daily rate: the prior of the personal rates.
# Floored: people who report 0 attacks still have some (on the simulator ~1.5% of
# their days are onsets); a zero prior would make the first forecasts absurdly sure.
MIN_SELF_REPORTED_ATTACKS_PER_MONTH = 0.5
_SELF_REPORT_RATE = (
    pl.col("attacks_per_month").fill_null(DEFAULT_ATTACKS_PER_MONTH).clip(lower_bound=MIN_SELF_REPORTED_ATTACKS_PER_MONTH)
    / 30.0
).clip(0.0, 1.0)


# ---------------------------------------------------------------- inputs


def _as_lazy(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def _date_expr(name: str, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.String:
        return pl.col(name).str.to_date()
    return pl.col(name).cast(pl.Date)


def normalize_daily_logs(daily_logs: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """The contract columns of ``daily_logs`` with contract dtypes, lazily.

    Accepts ISO-date strings for ``date`` and JSON strings for ``symptoms``
    (as stored in CSV files or a database); extra columns are dropped.
    """
    lf = _as_lazy(daily_logs)
    schema = lf.collect_schema()
    missing = [c for c in DAILY_LOGS_SCHEMA if c not in schema]
    if missing:
        raise ValueError(
            f"daily_logs lacks contract columns {missing}; add them (null where unknown), "
            "see migrainemamba.data.schema.DAILY_LOGS_SCHEMA"
        )
    exprs = []
    for name, dtype in DAILY_LOGS_SCHEMA.items():
        if name == "date":
            exprs.append(_date_expr(name, schema[name]))
        elif name == "symptoms" and schema[name] == pl.String:
            exprs.append(pl.col(name).str.json_decode(dtype))
        else:
            exprs.append(pl.col(name).cast(dtype))
    return lf.select(exprs)


def normalize_users(users: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """The contract columns of ``users`` with contract dtypes, lazily."""
    lf = _as_lazy(users)
    schema = lf.collect_schema()
    missing = [c for c in USERS_SCHEMA if c not in schema]
    if missing:
        raise ValueError(
            f"users lacks contract columns {missing}; add them (null where unknown), "
            "see migrainemamba.data.schema.USERS_SCHEMA"
        )
    return lf.select(
        _date_expr(name, schema[name]) if dtype == pl.Date else pl.col(name).cast(dtype)
        for name, dtype in USERS_SCHEMA.items()
    )


def _normalize_forecast_dates(forecast_dates: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    lf = _as_lazy(forecast_dates)
    schema = lf.collect_schema()
    if "user_id" not in schema or "date" not in schema:
        raise ValueError("forecast_dates needs columns user_id and date")
    morning = [c for c in MORNING_FIELDS if c in schema]
    return lf.select(
        pl.col("user_id").cast(pl.String),
        _date_expr("date", schema["date"]),
        *[pl.col(c).cast(DAILY_LOGS_SCHEMA[c]).alias(f"_fc_{c}") for c in morning],
    ).unique(subset=["user_id", "date"], keep="first", maintain_order=True)


def calendar_grid(
    daily_logs: pl.DataFrame | pl.LazyFrame,
    forecast_dates: pl.DataFrame | pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Each user's calendar days joined with their diary rows, sorted by user and date.

    Columns: the contract log columns (null on days without a row), ``logged``
    (a row exists), ``forecast`` (requested in ``forecast_dates``), ``_t``
    (days since the user's first grid day), ``_u`` (integer user key) and
    ``_row`` (row number). ``forecast_dates`` (user_id, date, optionally any
    ``MORNING_FIELDS``) extends the grid; its morning values fill in where the
    diary has no value for that day. Expects unique (user_id, date) diary rows
    (see :func:`check_unique`).
    """
    logs = normalize_daily_logs(daily_logs)
    keys = logs.select("user_id", "date")
    fc = None
    if forecast_dates is not None:
        fc = _normalize_forecast_dates(forecast_dates)
        keys = pl.concat([keys, fc.select("user_id", "date")])
    bounds = (
        keys.drop_nulls()
        .group_by("user_id")
        .agg(pl.col("date").min().alias("_start"), pl.col("date").max().alias("_end"))
    )
    # users in sorted order, each user's days ascending: the grid comes out
    # sorted by (user_id, date) without sorting the long frame
    grid = (
        bounds.sort("user_id")
        .with_columns(pl.date_ranges("_start", "_end").alias("date"))
        .explode("date")
        .with_columns((pl.col("date") - pl.col("_start")).dt.total_days().alias("_t"))
        .drop("_start", "_end")
    )
    grid = grid.join(
        logs.with_columns(pl.lit(True).alias("logged")),
        on=["user_id", "date"],
        how="left",
        maintain_order="left",
    ).with_columns(pl.col("logged").fill_null(False))
    if fc is not None:
        fc_cols = [c for c in fc.collect_schema() if c.startswith("_fc_")]
        grid = (
            grid.join(
                fc.with_columns(pl.lit(True).alias("forecast")),
                on=["user_id", "date"],
                how="left",
                maintain_order="left",
            )
            .with_columns(
                pl.col("forecast").fill_null(False),
                *[
                    pl.coalesce(c.removeprefix("_fc_"), c).alias(c.removeprefix("_fc_"))
                    for c in fc_cols
                ],
            )
            .drop(fc_cols)
        )
    else:
        grid = grid.with_columns(pl.lit(False).alias("forecast"))
    return grid.with_columns(
        # integer user key for window expressions (cheaper than hashing strings)
        (pl.col("_t") == 0).cum_sum().alias("_u"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"),
    )


def check_unique(daily_logs: pl.LazyFrame) -> None:
    """Raise ``ValueError`` if ``daily_logs`` has duplicate (user_id, date) rows."""
    dup = (
        daily_logs.group_by("user_id", "date")
        .len()
        .filter(pl.col("len") > 1)
        .head(3)
        .collect(engine=COLLECT_ENGINE)
    )
    if dup.height:
        raise ValueError(
            "daily_logs has duplicate (user_id, date) rows, e.g. "
            f"{dup.select('user_id', 'date').rows()}; validate the logs first "
            "(migrainemamba.data.validation quarantines duplicates)"
        )


# ---------------------------------------------------------------- helpers
# All helpers assume a frame sorted by (user_id, date) with contiguous days.

_T = pl.col("_t")
_USER = "_u"  # integer user key added by calendar_grid


def _lag(expr: pl.Expr, k: int) -> pl.Expr:
    """``expr`` on calendar day D−k (null before the user's first grid day)."""
    return pl.when(_T >= k).then(expr.shift(k))


def _cum(expr: pl.Expr) -> pl.Expr:
    """Per-user running sum up to and including D, nulls counted as 0."""
    return expr.cast(pl.Float64).fill_null(0.0).cum_sum().over(_USER)


def _window(cum: str, days: int) -> pl.Expr:
    """Sum over calendar days D−days..D−1 from a running-sum column ``cum``."""
    c = pl.col(cum)
    return (_lag(c, 1) - _lag(c, days + 1).fill_null(0.0)).fill_null(0.0)


def _last_upto(expr: pl.Expr) -> pl.Expr:
    """The last non-null value of ``expr`` on a day up to and including D."""
    return expr.forward_fill().over(_USER)


def _with_last_logged_mean(lf: pl.LazyFrame, column: str, n: int, name: str) -> pl.LazyFrame:
    """Add ``name`` = mean of ``column`` over the last ``n`` logged days before D."""
    tmp = f"_{name}_upto"
    means = lf.filter(pl.col(column).is_not_null()).select(
        "_row",
        pl.col(column).cast(pl.Float64).rolling_mean(n, min_samples=1).over(_USER).alias(tmp),
    )
    return (
        lf.join(means, on="_row", how="left", maintain_order="left")
        .with_columns(_lag(_last_upto(pl.col(tmp)), 1).alias(name))
        .drop(tmp)
    )


def label_columns() -> list[pl.Expr]:
    """``attack_running``, ``scorable`` and ``onset`` on a sorted calendar grid.

    attack_running: D−1 is a logged attack day. scorable: D's and D−1's
    ``migraine_occurred`` are reported and no attack is running. onset: an
    attack starts on D (null where not scorable).
    """
    m = pl.col("migraine_occurred")
    m_prev = _lag(m, 1)
    running = m_prev.fill_null(False)
    scorable = m.is_not_null() & m_prev.is_not_null() & ~running
    return [
        running.alias("attack_running"),
        scorable.alias("scorable"),
        pl.when(scorable).then(m & ~m_prev).alias("onset"),
    ]


# ---------------------------------------------------------------- features


def _warning_record(onsets_before: pl.Expr, scorable_before: pl.Expr) -> dict[str, pl.Expr]:
    """The person's warning-sign record from their days before D (``WARNING_COUNTS``), as it
    stands each day (the features hold it at its empty value through the first block)."""
    out: dict[str, pl.Expr] = {}
    one, days, rate_days = WARNING_RECORD_PSEUDO_ONSETS, WARNING_RECORD_PSEUDO_DAYS, WARNING_RATE_PSEUDO_DAYS
    for k in WARNING_COUNTS:
        hits = _lag(pl.col(f"_c_warned_onset_{k}"), 1).fill_null(0.0)
        warned = _lag(pl.col(f"_c_warned_scorable_{k}"), 1).fill_null(0.0)
        rate_after_warning = (hits + one) / (warned + days)
        rate_overall = (onsets_before + one) / (scorable_before + days)
        out[f"prodrome_record_lift_{k}plus"] = rate_after_warning.log() - rate_overall.log()
        out[f"prodrome_record_sensitivity_{k}plus"] = (hits + one) / (onsets_before + 2 * one)
        out[f"prodrome_record_warning_rate_{k}plus"] = (warned + one) / (scorable_before + rate_days)
        out[f"prodrome_record_hits_{k}plus"] = hits
    return out


def _feature_frame(grid: pl.LazyFrame, users: pl.LazyFrame) -> pl.LazyFrame:
    """All features on a sorted calendar grid, computed in explicit stages.

    Each stage materialises the window expressions (``over``) that later
    stages reuse, so each is evaluated once.
    """
    m = pl.col("migraine_occurred")
    stress = pl.col("stress_level").cast(pl.Float64)
    date = pl.col("date")

    # stage 1: per-day flags, labels, person columns
    lf = (
        grid.join(users, on="user_id", how="left", maintain_order="left")
        .with_columns(
            *label_columns(),
            (m & ~_lag(m, 1).fill_null(False)).fill_null(False).alias("_attack_start"),
            _lag(_last_upto(pl.col("menstruating")), 1).alias("_menstruating_before"),
            pl.when(pl.col("symptoms").is_not_null())
            .then(
                pl.sum_horizontal(
                    pl.col("symptoms").list.contains(s).cast(pl.Int64) for s in PRODROME_SYMPTOMS
                )
            )
            .alias("_prodrome_count"),
            (pl.col("sleep_quality_good") == False).alias("_poor_night"),
            pl.col("cycle_length_days").fill_null(DEFAULT_CYCLE_LENGTH_DAYS).alias("_cycle_len"),
        )
        .with_columns(
            # a logged period start: menstruating after a logged non-menstruating day
            (
                pl.col("menstruating").fill_null(False) & (pl.col("_menstruating_before") == False)
            ).alias("_period_start"),
            *(
                ((_lag(pl.col("_prodrome_count"), 1).fill_null(0) >= k) | (_lag(pl.col("_prodrome_count"), 2).fill_null(0) >= k)).alias(
                    f"_warning_{k}"
                )
                for k in WARNING_COUNTS
            ),
        )
    )
    lf = _with_last_logged_mean(lf, "sleep_hours", USUAL_WINDOW_LOGGED_DAYS, "usual_sleep_hours")
    lf = _with_last_logged_mean(lf, "caffeine_drinks", USUAL_WINDOW_LOGGED_DAYS, "caffeine_habit")

    # stage 2: running sums and last-event dates (one window pass each)
    lf = lf.with_columns(
        _cum(pl.col("logged")).alias("_c_logged"),
        _cum(stress).alias("_c_stress"),
        _cum(stress.is_not_null()).alias("_n_stress"),
        _cum(m).alias("_c_attack_day"),
        _cum(pl.col("_attack_start")).alias("_c_attack_start"),
        _cum(pl.col("onset")).alias("_c_onset"),
        _cum(pl.col("scorable")).alias("_c_scorable"),
        *(_cum(pl.col(f"_warning_{k}") & pl.col("onset")).alias(f"_c_warned_onset_{k}") for k in WARNING_COUNTS),
        *(_cum(pl.col(f"_warning_{k}") & pl.col("scorable")).alias(f"_c_warned_scorable_{k}") for k in WARNING_COUNTS),
        _last_upto(pl.when(pl.col("_attack_start")).then(date)).alias("_last_attack"),
        _last_upto(pl.when(pl.col("logged")).then(date)).alias("_last_log"),
        _last_upto(pl.when(pl.col("_period_start")).then(date)).alias("_last_period"),
        (pl.col("usual_sleep_hours") - pl.col("sleep_hours"))
        .clip(lower_bound=0.0)
        .alias("_sleep_short"),
        _lag(stress, 1).alias("_stress_1"),
        _lag(stress, 2).alias("_stress_2"),
        _lag(stress, 3).alias("_stress_3"),
        _lag(pl.col("alcohol_drinks"), 1).alias("_alcohol_1"),
        _lag(pl.col("caffeine_drinks"), 1).alias("_caffeine_1"),
    )

    # stage 3: derived intermediates
    anchor = pl.coalesce("_last_period", "cycle_start_day")
    lf = lf.with_columns(
        _lag(pl.col("_c_logged"), 1).fill_null(0.0).alias("_logged_before"),
        pl.when(pl.col("has_menstrual_cycle"))
        .then((date - anchor).dt.total_days() % pl.col("_cycle_len"))
        .alias("_cycle_day"),
        (pl.col("_stress_2") - pl.col("_stress_1")).alias("_drop_1"),
        (pl.col("_stress_3") - pl.col("_stress_2")).alias("_drop_2"),
        _window("_n_stress", 7).alias("_n_stress_7"),
        (
            (_lag(pl.col("_c_onset"), 1).fill_null(0.0) + BASELINE_PRIOR_DAYS * _SELF_REPORT_RATE)
            / (_lag(pl.col("_c_scorable"), 1).fill_null(0.0) + BASELINE_PRIOR_DAYS)
        ).alias("_baseline_running"),
        *(
            expr.alias(f"_running_{name}")
            for name, expr in _warning_record(
                _lag(pl.col("_c_onset"), 1).fill_null(0.0), _lag(pl.col("_c_scorable"), 1).fill_null(0.0)
            ).items()
        ),
    )

    usual = pl.col("usual_sleep_hours")
    cycle_day = pl.col("_cycle_day")
    cycle_len = pl.col("_cycle_len")
    pressure = pl.col("barometric_pressure_hpa")
    prior = _SELF_REPORT_RATE
    onsets_before = _lag(pl.col("_c_onset"), 1).fill_null(0.0)
    scorable_before = _lag(pl.col("_c_scorable"), 1).fill_null(0.0)

    features: dict[str, pl.Expr] = {
        "sleep_hours": pl.col("sleep_hours"),
        "sleep_quality_good": pl.col("sleep_quality_good"),
        "menstruating": pl.col("menstruating"),
        "barometric_pressure_hpa": pressure,
        "usual_sleep_hours": usual,
        "sleep_deviation_hours": pl.col("sleep_hours") - usual,
        # nights recorded in the rows of D−2, D−1 and D (D's morning is allowed),
        # each against the usual sleep before that night
        "sleep_debt_3_nights": pl.when(usual.is_not_null()).then(
            pl.sum_horizontal(
                pl.col("_sleep_short"),
                _lag(pl.col("_sleep_short"), 1),
                _lag(pl.col("_sleep_short"), 2),
            )
        ),
        "poor_sleep_nights_3": pl.sum_horizontal(
            pl.col("_poor_night"), _lag(pl.col("_poor_night"), 1), _lag(pl.col("_poor_night"), 2)
        ),
        "stress_yesterday": pl.col("_stress_1"),
        "stress_change_yesterday": -pl.col("_drop_1"),
        "stress_letdown_2_days": pl.max_horizontal("_drop_1", "_drop_2").clip(lower_bound=0.0),
        "stress_mean_7_days": pl.when(pl.col("_n_stress_7") > 0).then(
            _window("_c_stress", 7) / pl.col("_n_stress_7")
        ),
        "alcohol_yesterday": pl.col("_alcohol_1"),
        "heavy_drinking_yesterday": pl.col("_alcohol_1") >= HEAVY_DRINKING_DRINKS,
        "caffeine_yesterday": pl.col("_caffeine_1"),
        "caffeine_habit": pl.col("caffeine_habit"),
        "caffeine_yesterday_minus_habit": pl.col("_caffeine_1") - pl.col("caffeine_habit"),
        "skipped_meals_yesterday": _lag(pl.col("skipped_meals"), 1),
        "snack_yesterday": _lag(pl.col("had_snack"), 1),
        "water_yesterday": _lag(pl.col("water_glasses"), 1),
        "bright_light_yesterday": _lag(pl.col("bright_light_exposure"), 1),
        "screen_time_yesterday": _lag(pl.col("screen_time_hours"), 1),
        "cycle_day": cycle_day,
        "days_to_next_period": cycle_len - cycle_day,
        "perimenstrual": (cycle_day >= cycle_len - PERIMENSTRUAL_BEFORE)
        | (cycle_day <= PERIMENSTRUAL_AFTER),
        "pressure_change_24h": pressure - _lag(pressure, 1),
        "pressure_change_48h": pressure - _lag(pressure, 2),
        "days_since_last_attack": (date - _lag(pl.col("_last_attack"), 1))
        .dt.total_days()
        .fill_null(DAYS_SINCE_ATTACK_CAP)
        .clip(upper_bound=DAYS_SINCE_ATTACK_CAP),
        "attacks_last_30_days": _window("_c_attack_start", 30),
        "personal_onset_rate": (onsets_before + ONSET_RATE_PRIOR_DAYS * prior)
        / (scorable_before + ONSET_RATE_PRIOR_DAYS),
        # value on the first grid day of the current block, so it predates every day in it
        "personal_baseline_rate": pl.col("_baseline_running")
        .first()
        .over("user_id", pl.col("_logged_before") // BASELINE_BLOCK_LOGGED_DAYS),
        "attack_days_last_7_days": _window("_c_attack_day", 7),
        **{
            f"prodrome_{s}_yesterday": _lag(pl.col("symptoms").list.contains(s), 1)
            for s in PRODROME_SYMPTOMS
        },
        "prodrome_count_yesterday": _lag(pl.col("_prodrome_count"), 1),
        "prodrome_count_2_days_ago": _lag(pl.col("_prodrome_count"), 2),
        # held at its empty value through the first block of logged days, then updated daily
        **{
            name: pl.when(pl.col("_logged_before") >= BASELINE_BLOCK_LOGGED_DAYS)
            .then(pl.col(f"_running_{name}"))
            .otherwise(pl.col(f"_running_{name}").first().over("user_id"))
            for name in WARNING_RECORD_COLUMNS
        },
        "logged_yesterday": _lag(pl.col("logged"), 1).fill_null(False),
        "days_since_previous_log": (date - _lag(pl.col("_last_log"), 1)).dt.total_days(),
        "share_logged_14_days": pl.when(_T > 0).then(
            _window("_c_logged", 14) / pl.min_horizontal(_T, pl.lit(14))
        ),
        "days_logged_before": pl.col("_logged_before"),
        "day_of_week": date.dt.weekday(),
        "age": pl.col("age"),
        "gender_female": pl.col("gender") == "F",
        "gender_male": pl.col("gender") == "M",
        "bmi": pl.col("weight_kg") / (pl.col("height_cm") * pl.col("height_cm")) * 10_000.0,
        "attacks_per_month": pl.col("attacks_per_month"),
        "has_menstrual_cycle": pl.col("has_menstrual_cycle"),
    }
    assert tuple(features) == FEATURE_COLUMNS, "features and FEATURE_DESCRIPTIONS disagree"
    return lf.select(
        "user_id",
        "date",
        "logged",
        "forecast",
        _phase_expr(pl.col("_logged_before") + 1).alias("phase"),
        *LABEL_COLUMNS,
        *[expr.cast(pl.Float64).alias(name) for name, expr in features.items()],
    )


def build_features(
    users: pl.DataFrame | pl.LazyFrame,
    daily_logs: pl.DataFrame | pl.LazyFrame,
    forecast_dates: pl.DataFrame | pl.LazyFrame | None = None,
) -> pl.DataFrame:
    """Forecast features and onset labels for every user-day on the calendar grid.

    Parameters
    ----------
    users, daily_logs:
        The contract tables (docs/architecture.md §2); validated rows, one per user-date.
    forecast_dates:
        Optional (user_id, date[, MORNING_FIELDS...]) rows to forecast that may
        have no diary row yet (the service's "today"); morning values given here
        are used where the diary has none.

    Returns
    -------
    One row per user per calendar day from the user's first to last date, sorted
    by user and date: ``user_id``, ``date``, ``logged``, ``forecast`` (requested in
    ``forecast_dates``), ``phase``, ``attack_running``, ``scorable``, ``onset``
    and the Float64 :data:`FEATURE_COLUMNS` (which include ``days_logged_before``).
    Train on rows with ``scorable``; serve the rows with ``forecast``.
    """
    logs = normalize_daily_logs(daily_logs)
    check_unique(logs)
    grid = calendar_grid(logs, forecast_dates)
    return _feature_frame(grid, normalize_users(users)).collect(engine=COLLECT_ENGINE)
