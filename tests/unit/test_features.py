"""Forecast features and diary sequences (docs/architecture.md §1): leakage, labels, values, serving."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

from migrainemamba.data.schema import (
    DAILY_LOG_COLUMNS,
    DAILY_LOGS_SCHEMA,
    DAY_FIELDS,
    GENDERS,
    MORNING_FIELDS,
    OUTCOME_FIELDS,
    SYMPTOMS,
    USER_COLUMNS,
    USERS_SCHEMA,
)
from migrainemamba.features import (
    FEATURE_COLUMNS,
    FEATURE_DESCRIPTIONS,
    LABEL_COLUMNS,
    build_features,
    phase_of,
)
from migrainemamba.features.daily import (
    BASELINE_BLOCK_LOGGED_DAYS,
    WARNING_RATE_PSEUDO_DAYS,
    WARNING_RECORD_PSEUDO_DAYS,
    WARNING_RECORD_PSEUDO_ONSETS,
)
from migrainemamba.features.sequences import (
    MORNING_COLUMNS,
    VALUE_COLUMNS,
    SequenceData,
    SequenceWindows,
    build_sequence_data,
)

START = dt.date(2024, 3, 1)
KEYS = ["user_id", "date"]


# ----------------------------------------------------------------------------- helpers


def _day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


def _random_day(rng: np.random.Generator, user_id: str, date: dt.date) -> dict:
    """One contract-valid diary row without an outcome."""
    return {
        "user_id": user_id,
        "date": date,
        "sleep_hours": round(float(rng.uniform(3.0, 10.0)), 1),
        "sleep_quality_good": bool(rng.random() < 0.7),
        "stress_level": int(rng.integers(1, 11)),
        "skipped_meals": int(rng.integers(0, 4)),
        "had_snack": bool(rng.random() < 0.5),
        "alcohol_drinks": int(rng.choice([0, 0, 0, 1, 2, 6])),
        "caffeine_drinks": int(rng.integers(0, 6)),
        "water_glasses": int(rng.integers(0, 12)),
        "bright_light_exposure": bool(rng.random() < 0.3),
        "screen_time_hours": round(float(rng.uniform(0.0, 12.0)), 1),
        "menstruating": None if rng.random() < 0.05 else bool(rng.random() < 0.15),
        "barometric_pressure_hpa": None
        if rng.random() < 0.1
        else round(float(rng.normal(1013.0, 8.0)), 1),
        "symptoms": [s for s in SYMPTOMS if rng.random() < 0.1],
        "migraine_occurred": False,
        "migraine_severity": None,
        "migraine_duration_hours": None,
    }


def _attack(row: dict, rng: np.random.Generator) -> None:
    row["migraine_occurred"] = True
    row["migraine_severity"] = int(rng.integers(1, 11))
    row["migraine_duration_hours"] = round(float(rng.uniform(4.0, 72.0)), 1)


def _randomize(row: dict, rng: np.random.Generator, fields: tuple[str, ...]) -> dict:
    """``row`` with ``fields`` redrawn (outcome fields flip the attack)."""
    new = _random_day(rng, row["user_id"], row["date"])
    out = dict(row)
    for f in fields:
        out[f] = new[f]
    if set(OUTCOME_FIELDS) <= set(fields):
        if not row["migraine_occurred"]:
            _attack(out, rng)
        else:
            out["migraine_occurred"] = None if rng.random() < 0.5 else False
            out["migraine_severity"] = out["migraine_duration_hours"] = None
    return out


def make_cohort(n_users: int = 20, n_days: int = 60, seed: int = 0):
    """A contract-valid cohort with diary gaps and attacks of 1-3 days."""
    rng = np.random.default_rng(seed)
    users, logs = [], []
    for u in range(n_users):
        uid = f"u{u:03d}"
        cycle = bool(rng.random() < 0.6)
        users.append(
            {
                "user_id": uid,
                "gender": str(rng.choice(GENDERS)),
                "age": int(rng.integers(16, 80)),
                "height_cm": float(rng.uniform(150, 200)),
                "weight_kg": float(rng.uniform(45, 120)),
                "location_city": None,
                "attacks_per_month": float(rng.uniform(0, 12)),
                "has_menstrual_cycle": cycle,
                "cycle_start_day": _day(int(rng.integers(-20, 40))) if cycle else None,
                "cycle_length_days": int(rng.integers(24, 35)) if rng.random() < 0.7 else None,
            }
        )
        first = int(rng.integers(0, 10))  # users start on different dates
        attack_left = 0
        for i in range(first, first + n_days):
            if rng.random() < 0.12:  # a gap in the diary
                attack_left = max(attack_left - 1, 0)
                continue
            row = _random_day(rng, uid, _day(i))
            if attack_left == 0 and rng.random() < 0.1:
                attack_left = int(rng.integers(1, 4))
            if attack_left > 0:
                _attack(row, rng)
                attack_left -= 1
            elif rng.random() < 0.04:
                row["migraine_occurred"] = None  # not reported
            logs.append(row)
    users_df = pl.DataFrame(users, schema=USERS_SCHEMA)
    logs_df = pl.DataFrame(logs, schema=DAILY_LOGS_SCHEMA)
    _assert_contract(users_df, logs_df)
    return users_df, logs_df


def _assert_contract(users: pl.DataFrame, logs: pl.DataFrame) -> None:
    for table, columns in ((users, USER_COLUMNS), (logs, DAILY_LOG_COLUMNS)):
        for c in columns:
            s = table.get_column(c.name)
            if not c.nullable:
                assert s.null_count() == 0, c.name
            if c.min is not None and s.drop_nulls().len():
                assert s.min() >= c.min and s.max() <= c.max, c.name
    assert logs.select(pl.struct(KEYS).is_duplicated().any()).item() is False


def _rows(logs: pl.DataFrame) -> list[dict]:
    return logs.to_dicts()


def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=DAILY_LOGS_SCHEMA).sort(KEYS)


def _pick_days(logs: pl.DataFrame, seed: int, logged: bool = True) -> dict[str, dt.date]:
    """One forecast day D per user, strictly inside the user's diary span."""
    rng = np.random.default_rng(seed)
    picks = {}
    for (uid,), g in logs.sort(KEYS).group_by("user_id", maintain_order=True):
        dates = g.get_column("date").to_list()
        if logged:
            candidates = dates[3:-3]
        else:
            have = set(dates)
            span = (dates[-1] - dates[0]).days
            candidates = [
                d for k in range(3, span - 3) if (d := dates[0] + dt.timedelta(days=k)) not in have
            ]
        if candidates:
            picks[uid] = candidates[int(rng.integers(len(candidates)))]
    return picks


def _features_at(features: pl.DataFrame, picks: dict[str, dt.date]) -> pl.DataFrame:
    keys = pl.DataFrame({"user_id": list(picks), "date": list(picks.values())})
    return keys.join(features, on=KEYS, how="left").select(KEYS + list(FEATURE_COLUMNS))


@pytest.fixture(scope="module")
def cohort():
    return make_cohort()


@pytest.fixture(scope="module")
def features(cohort):
    users, logs = cohort
    return build_features(users, logs)


# ----------------------------------------------------------------------------- contract


def test_output_columns_and_grid(cohort, features):
    _, logs = cohort
    assert list(FEATURE_COLUMNS) == list(FEATURE_DESCRIPTIONS)
    assert not set(FEATURE_COLUMNS) & {"user_id", "date", "logged", "phase", *LABEL_COLUMNS}
    assert features.columns[:8] == [
        "user_id", "date", "logged", "forecast", "phase", "attack_running", "scorable", "onset",
    ]  # fmt: skip
    assert features.columns[8:] == list(FEATURE_COLUMNS)
    assert all(features.schema[c] == pl.Float64 for c in FEATURE_COLUMNS)
    # one row per calendar day from first to last logged date, logged rows = diary rows
    span = logs.group_by("user_id").agg(
        ((pl.col("date").max() - pl.col("date").min()).dt.total_days() + 1).alias("n")
    )
    got = features.group_by("user_id").len()
    assert span.join(got, on="user_id").filter(pl.col("n") != pl.col("len")).height == 0
    assert features.get_column("logged").sum() == logs.height
    assert features.select(pl.struct(KEYS).is_duplicated().any()).item() is False
    assert features.equals(features.sort(KEYS))


def test_phase_of():
    assert [phase_of(n) for n in (1, 14, 15, 30, 31, 400)] == [
        "1-14", "1-14", "15-30", "15-30", "31+", "31+",
    ]  # fmt: skip


def test_phase_column_follows_days_logged(features):
    expected = [phase_of(int(n) + 1) for n in features.get_column("days_logged_before")]
    assert features.get_column("phase").to_list() == expected


def test_duplicate_rows_raise(cohort):
    users, logs = cohort
    with pytest.raises(ValueError, match="duplicate"):
        build_features(users, pl.concat([logs, logs.head(1)]))


# ----------------------------------------------------------------------------- leakage


def _perturb_after(logs: pl.DataFrame, picks: dict, seed: int, mode: str) -> pl.DataFrame:
    """Change D's day/outcome fields and/or rows after D for each picked (user, D)."""
    rng = np.random.default_rng(seed)
    out = []
    for row in _rows(logs):
        d = picks.get(row["user_id"])
        if d is None:
            out.append(row)
        elif row["date"] == d and mode == "same_day":
            out.append(_randomize(row, rng, DAY_FIELDS + OUTCOME_FIELDS))
        elif row["date"] > d and mode == "change_later":
            out.append(_randomize(row, rng, tuple(MORNING_FIELDS + DAY_FIELDS + OUTCOME_FIELDS)))
        elif row["date"] > d and mode == "delete_later":
            continue
        else:
            out.append(row)
    if mode == "add_later":
        have = {(r["user_id"], r["date"]) for r in out}
        for uid, d in picks.items():
            for k in range(1, 25):  # fill the gaps after D and extend past the end
                day = d + dt.timedelta(days=k)
                if (uid, day) not in have and rng.random() < 0.7:
                    row = _random_day(rng, uid, day)
                    if rng.random() < 0.3:
                        _attack(row, rng)
                    out.append(row)
    return _frame(out)


@pytest.mark.parametrize("mode", ["same_day", "change_later", "delete_later", "add_later"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_leakage_from_day_fields_outcome_or_later_rows(cohort, features, mode, seed):
    users, logs = cohort
    picks = _pick_days(logs, seed)
    perturbed = _perturb_after(logs, picks, seed + 100, mode)
    assert not perturbed.equals(logs.sort(KEYS))
    after = build_features(users, perturbed)
    assert_frame_equal(_features_at(after, picks), _features_at(features, picks), check_exact=True)


def test_no_leakage_when_d_has_no_row_yet(cohort, features):
    """A diary row added on an unlogged day D (morning unknown) leaves D's features alone."""
    users, logs = cohort
    picks = _pick_days(logs, seed=4, logged=False)
    assert len(picks) >= 10
    rng = np.random.default_rng(4)
    extra = []
    for uid, d in picks.items():
        row = _random_day(rng, uid, d)
        row.update({f: None for f in MORNING_FIELDS})
        _attack(row, rng)
        extra.append(row)
    after = build_features(users, _frame(_rows(logs) + extra))
    assert_frame_equal(_features_at(after, picks), _features_at(features, picks), check_exact=True)


def test_changing_morning_fields_of_d_does_change_features(cohort, features):
    """Positive control: the comparison above does see changes in what D may use."""
    users, logs = cohort
    picks = _pick_days(logs, seed=5)
    rows = []
    for row in _rows(logs):
        if picks.get(row["user_id"]) == row["date"]:
            row = dict(row, sleep_hours=row["sleep_hours"] + 1.5, barometric_pressure_hpa=950.0)
        rows.append(row)
    after = _features_at(build_features(users, _frame(rows)), picks)
    before = _features_at(features, picks)
    assert (after["sleep_hours"] - before["sleep_hours"]).to_list() == pytest.approx(
        [1.5] * len(picks)
    )
    assert (after["barometric_pressure_hpa"] == 950.0).all()
    assert not after.equals(before)


# ----------------------------------------------------------------------------- labels


def _hand_user(days: dict[int, dict], user_id: str = "h1") -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i, overrides in sorted(days.items()):
        row = _random_day(rng, user_id, _day(i))
        row.update(overrides)
        if row.get("migraine_occurred"):
            row.setdefault("migraine_severity", 5)
        rows.append(row)
    return _frame(rows)


def _hand_users(user_id: str = "h1", **overrides) -> pl.DataFrame:
    row = {
        "user_id": user_id,
        "gender": "F",
        "age": 30,
        "height_cm": 170.0,
        "weight_kg": 65.0,
        "location_city": None,
        "attacks_per_month": 3.0,
        "has_menstrual_cycle": False,
        "cycle_start_day": None,
        "cycle_length_days": None,
    }
    row.update(overrides)
    return pl.DataFrame([row], schema=USERS_SCHEMA)


def test_labels_on_a_hand_built_diary():
    # day:        0  1  2  3  4  5  6(gap) 7  8  9(null) 10 11 12 13
    migraine = {0: False, 1: False, 2: True, 3: True, 4: False, 5: False,
                7: True, 8: False, 9: None, 10: True, 11: False, 12: False, 13: True}  # fmt: skip
    logs = _hand_user({i: {"migraine_occurred": m} for i, m in migraine.items()})
    f = build_features(_hand_users(), logs).with_columns(
        (pl.col("date") - START).dt.total_days().alias("day")
    )
    by_day = {r["day"]: r for r in f.to_dicts()}
    running = {3, 4, 8, 11}
    scorable = {1, 2, 5, 12, 13}
    onsets = {2, 13}
    for day in range(14):
        r = by_day[day]
        assert r["attack_running"] == (day in running), day
        assert r["scorable"] == (day in scorable), day
        assert r["onset"] == ((day in onsets) if day in scorable else None), day
    assert by_day[6]["logged"] is False
    # history features use attack starts (an attack after a gap still counts)
    assert by_day[10]["days_since_last_attack"] == 3  # attack began on day 7
    assert by_day[14 - 1]["attack_days_last_7_days"] == 2  # days 7 and 10 in 6..12
    assert by_day[13]["attacks_last_30_days"] == 3  # starts on days 2, 7, 10
    # running onset rate: onsets / scorable days before D, shrunk toward 3/month
    k, prior = 30.0, 3.0 / 30.0
    assert by_day[13]["personal_onset_rate"] == pytest.approx((1 + k * prior) / (4 + k))
    assert by_day[0]["personal_onset_rate"] == pytest.approx(prior)
    assert by_day[0]["days_since_last_attack"] == 60


# ----------------------------------------------------------------------------- values


def test_stress_and_rolling_means_ignore_missing_days():
    stress = {0: 3, 1: 8, 2: 2, 4: 6, 5: 5}  # day 3 unlogged
    f = build_features(
        _hand_users(), _hand_user({i: {"stress_level": s} for i, s in stress.items()})
    )
    by_day = {(r["date"] - START).days: r for r in f.to_dicts()}
    assert by_day[2]["stress_yesterday"] == 8
    assert by_day[2]["stress_change_yesterday"] == 5
    assert by_day[2]["stress_letdown_2_days"] == 0
    assert by_day[3]["stress_change_yesterday"] == -6
    assert by_day[3]["stress_letdown_2_days"] == 6
    assert by_day[4]["stress_yesterday"] is None  # yesterday not logged
    assert by_day[4]["stress_change_yesterday"] is None
    assert by_day[4]["stress_letdown_2_days"] == 6  # the drop from day 1 to day 2
    assert by_day[5]["stress_letdown_2_days"] is None  # both day-to-day changes unknown
    assert by_day[5]["stress_mean_7_days"] == pytest.approx((3 + 8 + 2 + 6) / 4)
    assert by_day[0]["stress_mean_7_days"] is None
    assert by_day[5]["logged_yesterday"] == 1 and by_day[4]["logged_yesterday"] == 0
    assert by_day[5]["days_since_previous_log"] == 1
    assert by_day[4]["days_since_previous_log"] == 2
    assert by_day[5]["share_logged_14_days"] == pytest.approx(4 / 5)
    assert by_day[5]["days_logged_before"] == 4
    assert by_day[0]["days_logged_before"] == 0


def test_sleep_debt_and_usual_sleep():
    hours = {0: 8.0, 1: 8.0, 2: 8.0, 3: 8.0, 4: 8.0, 5: 6.0, 6: 5.0, 7: 7.0}
    good = {5: False, 6: False}
    f = build_features(
        _hand_users(),
        _hand_user(
            {
                i: {"sleep_hours": h, "sleep_quality_good": good.get(i, True)}
                for i, h in hours.items()
            }
        ),
    )
    r = {(x["date"] - START).days: x for x in f.to_dicts()}[7]
    usual = (8.0 * 5 + 6.0 + 5.0) / 7
    assert r["usual_sleep_hours"] == pytest.approx(usual)
    assert r["sleep_deviation_hours"] == pytest.approx(7.0 - usual)
    # each night against the usual sleep before that night
    usual_5, usual_6 = 8.0, (8.0 * 5 + 6.0) / 6
    assert r["sleep_debt_3_nights"] == pytest.approx((usual_5 - 6) + (usual_6 - 5) + (usual - 7))
    assert r["poor_sleep_nights_3"] == 2
    assert r["sleep_hours"] == 7.0


def test_usual_values_use_the_last_14_logged_days():
    # caffeine 10 on days 0-5, then 2 on days 6-20 except day 12 (unlogged)
    days = {i: {"caffeine_drinks": 10 if i < 6 else 2} for i in range(21) if i != 12}
    days[20] = {"caffeine_drinks": 0}
    fc = pl.DataFrame({"user_id": ["h1"], "date": [_day(21)]})  # forecast for tomorrow
    f = build_features(_hand_users(), _hand_user(days), forecast_dates=fc)
    by_day = {(x["date"] - START).days: x for x in f.to_dicts()}
    # day 21: the last 14 logged days before it are 6..20 without 12 (caffeine 2, 2, ..., 0)
    assert by_day[21]["caffeine_habit"] == pytest.approx((13 * 2 + 0) / 14)
    assert by_day[21]["caffeine_yesterday"] == 0
    assert by_day[21]["caffeine_yesterday_minus_habit"] == pytest.approx(-26 / 14)
    # day 7: days 0-6 logged → (6 * 10 + 2) / 7
    assert by_day[7]["caffeine_habit"] == pytest.approx(62 / 7)


def test_cycle_day_and_perimenstrual():
    users = pl.concat(
        [
            _hand_users(
                "c1", has_menstrual_cycle=True, cycle_start_day=_day(5), cycle_length_days=28
            ),
            _hand_users("c2", has_menstrual_cycle=False),
            _hand_users("c3", has_menstrual_cycle=True, cycle_start_day=None),
        ]
    )
    menstruating = {i: {"menstruating": i in (15, 16, 17)} for i in range(20)}
    logs = pl.concat([_hand_user(menstruating, uid) for uid in ("c1", "c2", "c3")])
    f = build_features(users, logs)
    get = {(r["user_id"], (r["date"] - START).days): r for r in f.to_dicts()}
    # c1 from the users table: start on day 5, 28-day cycle (day 0 ↔ cycle day 23)
    assert get["c1", 0]["cycle_day"] == 23
    assert get["c1", 0]["days_to_next_period"] == 5
    assert [get["c1", d]["perimenstrual"] for d in (2, 3, 5, 8, 9)] == [0, 1, 1, 1, 0]
    # a logged start (menstruating after a non-menstruating day) re-anchors the cycle
    assert get["c1", 14]["cycle_day"] == 9
    assert get["c1", 15]["cycle_day"] == 0
    assert get["c1", 17]["cycle_day"] == 2 and get["c1", 17]["perimenstrual"] == 1
    # no cycle → null; cycle without a known start → null until a start is logged
    assert get["c2", 15]["cycle_day"] is None and get["c2", 15]["perimenstrual"] is None
    assert get["c3", 14]["cycle_day"] is None
    assert get["c3", 16]["cycle_day"] == 1


def test_pressure_change_prodrome_and_intake():
    days = {
        0: {"barometric_pressure_hpa": 1010.0, "symptoms": ["fatigue", "yawning", "nausea"]},
        1: {"barometric_pressure_hpa": 1004.0, "symptoms": ["neck_stiffness"],
            "alcohol_drinks": 6, "had_snack": False},
        2: {"barometric_pressure_hpa": 1000.0, "symptoms": []},
        4: {"barometric_pressure_hpa": 995.0, "symptoms": []},
    }  # fmt: skip
    f = build_features(_hand_users(), _hand_user(days))
    by_day = {(x["date"] - START).days: x for x in f.to_dicts()}
    assert by_day[2]["pressure_change_24h"] == pytest.approx(-4.0)
    assert by_day[2]["pressure_change_48h"] == pytest.approx(-10.0)
    assert by_day[4]["pressure_change_24h"] is None  # day 3 not logged
    assert by_day[4]["pressure_change_48h"] == pytest.approx(-5.0)
    assert by_day[1]["prodrome_fatigue_yesterday"] == 1
    assert by_day[1]["prodrome_neck_stiffness_yesterday"] == 0
    assert by_day[1]["prodrome_count_yesterday"] == 2  # nausea is not a prodrome
    assert by_day[2]["prodrome_count_2_days_ago"] == 2
    assert by_day[2]["prodrome_count_yesterday"] == 1
    assert by_day[4]["prodrome_count_yesterday"] is None
    assert by_day[2]["alcohol_yesterday"] == 6 and by_day[2]["heavy_drinking_yesterday"] == 1
    assert by_day[2]["snack_yesterday"] == 0
    assert by_day[4]["alcohol_yesterday"] is None


def test_warning_sign_record_counts_only_days_before_d():
    # warnings (2 prodrome symptoms) on days 0, 5, 10 and 20; the onsets on days 1, 6 and 21
    # follow three of them; day 11 (after the one on day 10) has no attack
    warned = {0, 5, 10, 20}
    onsets = {1, 6, 21}
    days = {
        i: {"symptoms": ["fatigue", "yawning"] if i in warned else [], "migraine_occurred": i in onsets}
        for i in range(30)
    }
    f = build_features(_hand_users(), _hand_user(days))
    by_day = {(x["date"] - START).days: x for x in f.to_dicts()}
    one, pseudo_days = WARNING_RECORD_PSEUDO_ONSETS, WARNING_RECORD_PSEUDO_DAYS
    # the first block of logged days holds the empty record: neutral lift, no warned onsets
    for d in range(BASELINE_BLOCK_LOGGED_DAYS):
        assert by_day[d]["prodrome_record_hits_2plus"] == 0, d
        assert by_day[d]["prodrome_record_lift_2plus"] == pytest.approx(0.0), d
    # then it is updated daily from the days before D: day 21's own onset counts from day 22 on
    assert by_day[BASELINE_BLOCK_LOGGED_DAYS]["prodrome_record_hits_2plus"] == 2
    assert by_day[21]["prodrome_record_hits_2plus"] == 2
    assert by_day[22]["prodrome_record_hits_2plus"] == 3
    r = by_day[29]
    scorable_before = sum(1 for d in range(29) if by_day[d]["scorable"])
    warned_scorable = sum(1 for d in range(29) if by_day[d]["scorable"] and ({d - 1, d - 2} & warned))
    assert r["prodrome_record_sensitivity_2plus"] == pytest.approx((3 + one) / (3 + 2 * one))
    lift = np.log((3 + one) / (warned_scorable + pseudo_days)) - np.log((3 + one) / (scorable_before + pseudo_days))
    assert r["prodrome_record_lift_2plus"] == pytest.approx(lift)
    assert r["prodrome_record_lift_2plus"] > 0  # this person's warnings are followed by attacks
    assert r["prodrome_record_warning_rate_2plus"] == pytest.approx(
        (warned_scorable + one) / (scorable_before + WARNING_RATE_PSEUDO_DAYS)
    )
    assert r["prodrome_record_hits_1plus"] == 3  # a 2-symptom warning is a 1+ warning too


def test_warning_signs_that_never_precede_attacks_lower_the_lift():
    warned = set(range(0, 60, 4))
    onsets = {d for d in range(60) if d % 4 == 3}  # always the day before a warning, never after it
    days = {i: {"symptoms": ["fatigue", "yawning"] if i in warned else [], "migraine_occurred": i in onsets} for i in range(60)}
    f = build_features(_hand_users(), _hand_user(days))
    last = f.sort("date").row(-1, named=True)
    assert last["prodrome_record_hits_2plus"] == 0
    assert last["prodrome_record_lift_2plus"] < 0


# ----------------------------------------------------------------------------- serving


def test_forecast_date_equals_a_morning_only_row(cohort):
    users, logs = cohort
    rng = np.random.default_rng(9)
    last = logs.group_by("user_id").agg(pl.col("date").max())
    # tomorrow for half the users, three days later (a gap) for the others
    fc = last.with_columns(
        (pl.col("date") + pl.duration(days=pl.Series(rng.choice([1, 3], last.height)))).alias(
            "date"
        ),
        pl.Series("sleep_hours", rng.uniform(4, 9, last.height)),
        pl.Series("sleep_quality_good", rng.random(last.height) < 0.5),
        pl.Series("menstruating", [None, True] * (last.height // 2)),
        pl.Series("barometric_pressure_hpa", rng.normal(1013, 5, last.height)),
    ).sort("user_id")
    served = build_features(users, logs, forecast_dates=fc)
    morning_rows = fc.select(
        *[
            pl.col(c).cast(t) if c in fc.columns else pl.lit(None, t).alias(c)
            for c, t in DAILY_LOGS_SCHEMA.items()
        ]
    )
    logged = build_features(users, pl.concat([logs, morning_rows]))
    keys = fc.select(KEYS)
    a = keys.join(served, on=KEYS, how="left")
    b = keys.join(logged, on=KEYS, how="left")
    assert a.get_column("forecast").all() and not a.get_column("logged").any()
    assert a.get_column("phase").to_list() == b.get_column("phase").to_list()
    assert_frame_equal(a.select(FEATURE_COLUMNS), b.select(FEATURE_COLUMNS), check_exact=True)
    # a forecast without morning values equals a row whose morning fields are all null
    bare = build_features(users, logs, forecast_dates=keys)
    null_rows = morning_rows.with_columns(
        pl.lit(None, DAILY_LOGS_SCHEMA[c]).alias(c) for c in MORNING_FIELDS
    )
    nulled = build_features(users, pl.concat([logs, null_rows]))
    assert_frame_equal(
        keys.join(bare, on=KEYS, how="left").select(FEATURE_COLUMNS),
        keys.join(nulled, on=KEYS, how="left").select(FEATURE_COLUMNS),
        check_exact=True,
    )


def test_forecast_for_a_new_user_without_diary(cohort):
    users, logs = cohort
    fc = pl.DataFrame({"user_id": ["u000"], "date": [dt.date(2030, 1, 1)]})
    f = build_features(users.head(1), logs.clear(), forecast_dates=fc)
    assert f.height == 1 and f["phase"][0] == "1-14" and f["days_logged_before"][0] == 0
    assert f["age"][0] == users["age"][0]


def test_one_user_alone_equals_that_user_in_the_cohort(cohort, features):
    users, logs = cohort
    for uid in ("u000", "u007", "u019"):
        alone = build_features(
            users.filter(pl.col("user_id") == uid), logs.filter(pl.col("user_id") == uid)
        )
        assert_frame_equal(alone, features.filter(pl.col("user_id") == uid), check_exact=True)


def test_string_dates_and_json_symptoms_are_accepted(cohort, features):
    users, logs = cohort
    as_text = logs.with_columns(
        pl.col("date").dt.to_string(),
        pl.col("symptoms").map_elements(
            lambda s: str(list(s)).replace("'", '"'), return_dtype=pl.String
        ),
    )
    assert_frame_equal(build_features(users, as_text), features, check_exact=True)


# ----------------------------------------------------------------------------- sequences


@pytest.fixture(scope="module")
def seq(cohort):
    users, logs = cohort
    return build_sequence_data(users, logs)


def test_sequence_layout(cohort, seq, features):
    users, _ = cohort
    n = features.height
    assert seq.values.shape == (n, len(VALUE_COLUMNS)) and seq.values.dtype == np.float32
    assert seq.morning.shape == (n, len(MORNING_COLUMNS))
    assert seq.offsets[0] == 0 and seq.offsets[-1] == n and len(seq.user_ids) == users.height
    # same grid and labels as the tabular features
    assert seq.keys().select(KEYS).equals(features.select(KEYS))
    assert np.array_equal(seq.observed, features["logged"].to_numpy())
    assert np.array_equal(seq.scorable, features["scorable"].to_numpy())
    assert np.array_equal(seq.onset, features["onset"].fill_null(False).to_numpy())
    assert not seq.values[~seq.observed].any()  # missing days are all zeros
    # numeric inputs are standardised over observed days
    col = VALUE_COLUMNS.index("stress_level")
    assert seq.values[seq.observed, col].mean() == pytest.approx(0.0, abs=1e-5)
    assert seq.values[seq.observed, col].std() == pytest.approx(1.0, abs=1e-4)
    assert set(np.unique(seq.values[:, VALUE_COLUMNS.index("symptom_aura")])) <= {0.0, 1.0}


def test_window_covers_the_days_before_d(seq):
    row = int(seq.offsets[3]) + 4  # the fifth day of user 3
    x, mask, morning = seq.window(row, 10)
    assert x.shape == (10, len(VALUE_COLUMNS)) and mask.shape == (10,)
    assert not mask[:6].any() and not x[:6].any()  # left-padded before the first day
    assert np.array_equal(mask[6:], seq.observed[row - 4 : row])
    assert np.array_equal(x[6:][mask[6:]], seq.values[row - 4 : row][seq.observed[row - 4 : row]])
    assert np.array_equal(morning, seq.morning[row])
    xb, mb, _ = seq.windows(np.array([row, row + 1]), 10)
    assert np.array_equal(xb[0], x) and np.array_equal(mb[0], mask)


@pytest.mark.parametrize("mode", ["same_day", "change_later", "delete_later", "add_later"])
def test_sequence_windows_do_not_leak(cohort, seq, mode):
    users, logs = cohort
    picks = _pick_days(logs, seed=11)
    after = build_sequence_data(users, _perturb_after(logs, picks, 7, mode), stats=seq.stats)
    for uid, d in picks.items():
        a, b = seq.window(seq.row_of(uid, d), 21), after.window(after.row_of(uid, d), 21)
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y), (uid, d, mode)


def test_sequence_morning_is_ds_morning_only(cohort, seq):
    users, logs = cohort
    picks = _pick_days(logs, seed=12)
    rows = [
        dict(r, sleep_hours=1.0) if picks.get(r["user_id"]) == r["date"] else r for r in _rows(logs)
    ]
    after = build_sequence_data(users, _frame(rows), stats=seq.stats)
    for uid, d in picks.items():
        (xa, ma, mora), (xb, mb, morb) = (s.window(s.row_of(uid, d), 14) for s in (seq, after))
        assert np.array_equal(xa, xb) and np.array_equal(ma, mb)
        assert not np.array_equal(mora, morb)


def test_sequence_serving_equivalence_with_training_stats(cohort, seq):
    users, logs = cohort
    uid = "u005"
    alone = build_sequence_data(
        users.filter(pl.col("user_id") == uid),
        logs.filter(pl.col("user_id") == uid),
        stats=seq.stats,
    )
    i = int(np.flatnonzero(seq.user_ids == uid)[0])
    lo, hi = seq.offsets[i], seq.offsets[i + 1]
    assert np.array_equal(alone.values, seq.values[lo:hi])
    assert np.array_equal(alone.morning, seq.morning[lo:hi])
    assert np.array_equal(alone.static[0], seq.static[i])
    for r in (0, 5, hi - lo - 1):
        for a, b in zip(alone.window(r, 30), seq.window(lo + r, 30), strict=True):
            assert np.array_equal(a, b)


def test_sequence_forecast_row_for_today(cohort, seq):
    users, logs = cohort
    uid = "u002"
    last = logs.filter(pl.col("user_id") == uid)["date"].max()
    fc = pl.DataFrame(
        {"user_id": [uid], "date": [last + dt.timedelta(days=1)], "sleep_hours": [6.5]}
    )
    s = build_sequence_data(users, logs, forecast_dates=fc, stats=seq.stats)
    row = s.row_of(uid, last + dt.timedelta(days=1))
    assert not s.observed[row]
    _, mask, morning = s.window(row, 7)
    assert mask[-1] == s.observed[row - 1]
    assert morning[MORNING_COLUMNS.index("sleep_hours_missing")] == 0
    assert morning[MORNING_COLUMNS.index("barometric_pressure_hpa_missing")] == 1
    (mean,), (std,) = seq.stats.lookup(("sleep_hours",))
    assert morning[MORNING_COLUMNS.index("sleep_hours")] == pytest.approx((6.5 - mean) / std)


def test_sequence_save_load_and_dataset(seq, tmp_path):
    path = tmp_path / "seq.npz"
    seq.save(path)
    loaded = SequenceData.load(path)
    arrays = ("values", "observed", "morning", "onset", "scorable", "dates", "static", "offsets")
    for name in arrays:
        assert np.array_equal(getattr(loaded, name), getattr(seq, name)), name
    assert list(loaded.user_ids) == list(seq.user_ids)
    assert loaded.value_columns == seq.value_columns and loaded.stats.columns == seq.stats.columns
    assert np.array_equal(loaded.stats.mean, seq.stats.mean)

    rows = loaded.scorable_rows()
    ds = SequenceWindows(loaded, rows, length=14)
    item = ds[3]
    assert item["x"].shape == (14, len(VALUE_COLUMNS)) and item["x"].dtype == torch.float32
    assert item["mask"].dtype == torch.bool and item["scorable"].item() is True
    assert item["y"].item() == float(loaded.onset[rows[3]])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch["x"].shape == (8, 14, len(VALUE_COLUMNS))
    assert torch.equal(batch["x"][3], item["x"])
