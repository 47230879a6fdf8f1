"""The clinical library: monthly summary, ICHD-3 overuse rules, preventive before/after, MIDAS/HIT-6."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from migrainemamba.clinical.overuse import check_overuse
from migrainemamba.clinical.questionnaires import (
    QuestionnaireError,
    score_hit6,
    score_midas,
    score_stored,
)
from migrainemamba.clinical.summary import monthly_summary, preventive_effect
from migrainemamba.data.schema import (
    DAILY_LOGS_SCHEMA,
    MEDICATIONS_SCHEMA,
)

UID = "u1"
FIRST_MONTH = date(2024, 1, 1)


def _month(k: int) -> date:
    y, m = divmod(FIRST_MONTH.month - 1 + k, 12)
    return date(FIRST_MONTH.year + y, m + 1, 1)


def _days_of(month: date) -> list[date]:
    out, d = [], month
    while d.month == month.month:
        out.append(d)
        d += timedelta(days=1)
    return out


def diary(
    n_months: int,
    migraine_days: int,
    doses: dict[str, list[int]] | None = None,
    logged_share: float = 1.0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``n_months`` calendar months from Jan 2024, each: migraine on its first ``migraine_days``
    days, and per class the day-of-month indices (0-based) with one acute intake."""
    logs, meds = [], []
    for k in range(n_months):
        days = _days_of(_month(k))
        n_logged = round(len(days) * logged_share)
        for i, d in enumerate(days[:n_logged]):
            logs.append({"user_id": UID, "date": d, "migraine_occurred": i < migraine_days})
        for cls, indices in (doses or {}).items():
            for i in indices:
                meds.append(
                    {
                        "user_id": UID,
                        "date": days[i],
                        "time": None,
                        "name": cls,
                        "medication_class": cls,
                        "purpose": "acute",
                        "dose_mg": None,
                        "relief_2h": 2,
                    }
                )
    log_frame = (
        pl.DataFrame(logs)
        .with_columns(
            pl.lit(None, dtype=t).alias(c)
            for c, t in DAILY_LOGS_SCHEMA.items()
            if c not in ("user_id", "date", "migraine_occurred")
        )
        .select(list(DAILY_LOGS_SCHEMA))
        .cast(DAILY_LOGS_SCHEMA)
    )  # type: ignore[arg-type]
    med_frame = pl.DataFrame(meds, schema=MEDICATIONS_SCHEMA)
    return log_frame, med_frame


def check(logs: pl.DataFrame, meds: pl.DataFrame):
    return check_overuse(monthly_summary(logs, meds), UID)


# ---------------------------------------------------------------- summary


def test_monthly_summary_counts_days_attacks_treatment_and_relief():
    logs, meds = diary(1, migraine_days=0)
    # migraine on Jan 3-4 (one attack) and Jan 10 (another); triptan on Jan 3, simple on Jan 20
    logs = logs.with_columns(
        pl.col("date")
        .is_in([date(2024, 1, 3), date(2024, 1, 4), date(2024, 1, 10)])
        .alias("migraine_occurred")
    )
    meds = pl.DataFrame(
        [
            {
                "user_id": UID,
                "date": date(2024, 1, 3),
                "time": "08:00",
                "name": "sumatriptan",
                "medication_class": "triptan",
                "purpose": "acute",
                "dose_mg": 50.0,
                "relief_2h": 3,
            },
            {
                "user_id": UID,
                "date": date(2024, 1, 3),
                "time": "14:00",
                "name": "sumatriptan",
                "medication_class": "triptan",
                "purpose": "acute",
                "dose_mg": 50.0,
                "relief_2h": 1,
            },
            {
                "user_id": UID,
                "date": date(2024, 1, 20),
                "time": None,
                "name": "ibuprofen",
                "medication_class": "simple_analgesic",
                "purpose": "acute",
                "dose_mg": 400.0,
                "relief_2h": None,
            },
            {
                "user_id": UID,
                "date": date(2024, 2, 2),
                "time": None,
                "name": "propranolol",
                "medication_class": "beta_blocker",
                "purpose": "preventive",
                "dose_mg": 80.0,
                "relief_2h": None,
            },
        ],
        schema=MEDICATIONS_SCHEMA,
    )
    jan, feb = monthly_summary(logs, meds).to_dicts()
    assert jan["month"] == date(2024, 1, 1) and jan["days_logged"] == 31 and jan["coverage"] == 1.0
    assert (jan["migraine_days"], jan["headache_days"], jan["acute_medication_days"]) == (3, 4, 2)
    assert (
        jan["days_triptan"],
        jan["days_simple_analgesic"],
        jan["ichd_days"],
        jan["ichd_classes_used"],
    ) == (1, 1, 2, 2)
    assert (jan["attacks"], jan["attacks_treated"]) == (2, 1)
    assert jan["mean_relief_2h"] == pytest.approx(2.0)  # intakes on migraine days only: (3 + 1) / 2
    # a preventive dose is a logged day but not a headache or acute-medication day
    assert (
        feb["days_logged"],
        feb["days_in_month"],
        feb["headache_days"],
        feb["acute_medication_days"],
    ) == (1, 29, 0, 0)


def test_an_attack_over_a_month_boundary_counts_in_the_month_it_starts():
    logs, meds = diary(2, migraine_days=0)
    logs = logs.with_columns(
        pl.col("date").is_in([date(2024, 1, 31), date(2024, 2, 1)]).alias("migraine_occurred")
    )
    jan, feb = monthly_summary(logs, meds).to_dicts()
    assert (jan["attacks"], feb["attacks"], jan["migraine_days"], feb["migraine_days"]) == (
        1,
        0,
        1,
        1,
    )


# ----------------------------------------------------------- ICHD-3 rules

TEN_DAY_CLASSES = [
    ("ergot", "8.2.1"),
    ("triptan", "8.2.2"),
    ("opioid", "8.2.4"),
    ("combination_analgesic", "8.2.5"),
    ("gepant", "8.2.8"),
]


@pytest.mark.parametrize(("cls", "code"), TEN_DAY_CLASSES)
def test_ten_day_classes_at_and_just_below_the_threshold(cls, code):
    # 15 migraine days a month; the drug on days 0..n-1 (migraine days)
    at = check(*diary(4, 15, {cls: list(range(10))}))
    assert at.level == "overuse" and [r.code for r in at.rules] == [code]
    assert at.rules[0].days_per_month == [10, 10, 10, 10] and code in at.message
    below = check(*diary(4, 15, {cls: list(range(9))}))
    assert below.level == "none" and below.rules == []


def test_simple_analgesics_need_fifteen_days():
    at = check(*diary(4, 15, {"simple_analgesic": list(range(15))}))
    assert at.level == "overuse" and [r.code for r in at.rules] == ["8.2.3"]
    below = check(*diary(4, 15, {"simple_analgesic": list(range(14))}))
    assert below.level == "none"  # 14 days: below 8.2.3, and a single class is not 8.2.6


def test_several_classes_combined():
    # triptan on 5 days and simple analgesic on 5 other days: 10 days, neither class overused
    at = check(*diary(4, 15, {"triptan": list(range(5)), "simple_analgesic": list(range(5, 10))}))
    assert at.level == "overuse" and [r.code for r in at.rules] == ["8.2.6"]
    below = check(*diary(4, 15, {"triptan": list(range(5)), "simple_analgesic": list(range(5, 9))}))
    assert below.level == "none"
    # the same 10 days with both classes: 10 medication days, combined rule met
    same_days = check(
        *diary(4, 15, {"triptan": list(range(10)), "simple_analgesic": list(range(10))})
    )
    assert [r.code for r in same_days.rules] == ["8.2.2"]  # triptans alone are overused: not 8.2.6
    overlap = check(*diary(4, 15, {"opioid": list(range(6)), "simple_analgesic": list(range(6))}))
    assert overlap.level == "none"  # 6 days of both: 6 medication days


def test_headache_days_criterion():
    # 14 migraine days and triptans only on those days: 14 headache days
    below = check(*diary(4, 14, {"triptan": list(range(10))}))
    assert below.level == "none"
    # medicated non-migraine days are headache days: 10 migraine + 5 other medicated = 15
    at = check(*diary(4, 10, {"triptan": list(range(5, 15))}))
    assert at.level == "overuse" and [r.code for r in at.rules] == ["8.2.2"]


def test_more_than_three_months_and_unbroken_runs():
    three = check(*diary(3, 15, {"triptan": list(range(10))}))
    assert (
        three.level == "watch"
        and three.rules[0].code == "8.2.2"
        and len(three.rules[0].months) == 3
    )
    logs, meds = diary(5, 15, {"triptan": list(range(10))})
    # month 3 (March) barely logged: not assessable, so Jan-Feb and Apr-May are two short runs
    march = (pl.col("date") >= date(2024, 3, 1)) & (pl.col("date") <= date(2024, 3, 31))
    sparse = logs.filter(~march | (pl.col("date").dt.day() <= 10))
    result = check(sparse, meds)
    assert result.level == "watch" and result.months_assessed == 4
    assert check(logs, meds).level == "overuse"


def test_months_with_too_few_logged_days_are_not_assessed():
    logs, meds = diary(4, 15, {"triptan": list(range(10))}, logged_share=0.6)
    result = check(logs, meds)
    assert result.level == "none" and result.months_assessed == 0


# ---------------------------------------------------------- preventives


def test_preventive_before_and_after():
    logs, _ = diary(6, 0)
    start = date(2024, 4, 1)
    # a migraine every 3rd day before the start (10 per 30 days), every 6th day after (5 per 30)
    logs = logs.with_columns(
        pl.when(pl.col("date") < start)
        .then((pl.col("date") - pl.lit(FIRST_MONTH)).dt.total_days() % 3 == 0)
        .otherwise((pl.col("date") - pl.lit(start)).dt.total_days() % 6 == 0)
        .alias("migraine_occurred")
    )
    meds = pl.DataFrame(
        [
            {
                "user_id": UID,
                "date": start + timedelta(days=k),
                "time": None,
                "name": "topiramate",
                "medication_class": "antiepileptic",
                "purpose": "preventive",
                "dose_mg": 50.0,
                "relief_2h": None,
            }
            for k in range(60)
        ],
        schema=MEDICATIONS_SCHEMA,
    )
    (row,) = preventive_effect(logs, meds).to_dicts()
    assert (
        row["start"] == start and row["days_logged_before"] == 90 and row["days_logged_after"] == 90
    )
    assert row["migraine_days_per_30_before"] == pytest.approx(10.0)
    assert row["migraine_days_per_30_after"] == pytest.approx(5.0)


# -------------------------------------------------------- questionnaires


@pytest.mark.parametrize(
    ("days", "score", "grade"),
    [
        ([0, 0, 0, 0, 0], 0, "I"),
        ([1, 1, 1, 1, 1], 5, "I"),
        ([2, 1, 1, 1, 1], 6, "II"),
        ([2, 2, 2, 2, 2], 10, "II"),
        ([3, 2, 2, 2, 2], 11, "III"),
        ([4, 4, 4, 4, 4], 20, "III"),
        ([5, 4, 4, 4, 4], 21, "IV"),
        ([30, 60, 45, 45, 90], 270, "IV"),
    ],
)
def test_midas_score_and_grade(days, score, grade):
    result = score_midas(days)
    assert (result.score, result.grade) == (score, grade)
    assert score_stored("MIDAS", list(result.answers)) == result


def test_midas_rejects_impossible_answers():
    with pytest.raises(QuestionnaireError, match="missed_work_or_school_days"):
        score_midas([91, 0, 0, 0, 0])
    with pytest.raises(QuestionnaireError) as info:
        score_midas([60, 31, 0, 0, 0])  # days of question 1 are not counted again in 2
    assert info.value.field == "reduced_work_or_school_productivity_days"
    with pytest.raises(QuestionnaireError, match="5 items"):
        score_midas([1, 2, 3])


# never 6, rarely 8, sometimes 10, very often 11, always 13; bands <= 49, 50-55, 56-59, >= 60
HIT6_CASES = [
    (["never"] * 6, 36, "little or no impact"),
    (["rarely"] * 6, 48, "little or no impact"),
    (["sometimes"] * 2 + ["never"] * 3 + ["very_often"], 49, "little or no impact"),
    (["sometimes"] + ["rarely"] * 5, 50, "some impact"),
    (["very_often"] + ["sometimes"] * 3 + ["rarely", "never"], 55, "some impact"),
    (["sometimes"] * 4 + ["rarely"] * 2, 56, "substantial impact"),
    (["sometimes"] * 4 + ["very_often", "rarely"], 59, "substantial impact"),
    (["sometimes"] * 6, 60, "severe impact"),
    (["always"] * 6, 78, "severe impact"),
]


@pytest.mark.parametrize(("answers", "total", "grade"), HIT6_CASES)
def test_hit6_total_and_impact(answers, total, grade):
    result = score_hit6(answers)
    assert (result.score, result.grade) == (total, grade)
    assert score_stored("HIT-6", list(result.answers)) == result


def test_hit6_rejects_unknown_answers():
    with pytest.raises(QuestionnaireError) as info:
        score_hit6(["never"] * 5 + ["often"])
    assert info.value.field == "limits_concentration"


def test_a_run_may_change_rule_from_month_to_month():
    # Jan-Feb triptans on 10 days; Mar-Apr triptans on 6 and simple analgesics on 5 other days
    logs, _ = diary(4, 15)
    _, heavy = diary(2, 15, {"triptan": list(range(10))})
    _, mixed = diary(4, 15, {"triptan": list(range(6)), "simple_analgesic": list(range(6, 11))})
    meds = pl.concat([heavy, mixed.filter(pl.col("date") >= date(2024, 3, 1))])
    result = check(logs, meds)
    assert result.level == "overuse"
    assert {r.code: [m.month for m in r.months] for r in result.rules} == {
        "8.2.2": [1, 2],
        "8.2.6": [3, 4],
    }
    assert "4 consecutive month(s), Jan 2024-Apr 2024" in result.message
