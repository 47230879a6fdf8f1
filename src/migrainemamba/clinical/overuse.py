"""The ICHD-3 medication-overuse check (8.2 Medication-overuse headache) on the monthly summary.

ICHD-3 8.2: headache on >= 15 days/month in a person with a pre-existing
headache disorder, and regular overuse for > 3 months of acute medication:

- 8.2.1 ergotamine, 8.2.2 triptans, 8.2.4 opioids, 8.2.5 combination analgesics:
  >= 10 days/month of that class;
- 8.2.3 simple analgesics (paracetamol, aspirin, other NSAIDs): >= 15 days/month;
- 8.2.6 several classes not individually overused: >= 10 days/month of any of
  the classes above combined (two or more of them used);
- 8.2.8 other medication (here: gepants, ditans, other acute drugs): >= 10
  days/month. Gepants and ditans postdate ICHD-3 (2018); the rule is applied to
  them by its letter, and the warning names it so a clinician can judge.

How the months are read (choices, stated so they can be checked):

- A month is *assessable* when at least ``min_coverage`` of its days are logged;
  counts are of logged days, never extrapolated, so gaps can only hide overuse.
- "> 3 months" = the headache criterion and the rule hold in at least
  ``min_months`` (4) consecutive assessable calendar months; an unassessable or
  missing month breaks the run.
- Warning levels: ``overuse`` (ICHD-3 criteria met), ``watch`` (a rule and the
  headache criterion hold in the latest assessable month, for 1-3 months so far),
  ``none``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any, Literal

import polars as pl

from migrainemamba.clinical.summary import ICHD_CLASSES

HEADACHE_DAYS_MIN = 15
MIN_MONTHS = 4  # "> 3 months"
MIN_COVERAGE = 2 / 3

Level = Literal["none", "watch", "overuse"]


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    column: str  # monthly summary column counted
    threshold: int


RULES: tuple[Rule, ...] = (
    Rule("8.2.1", "ergotamine overuse", "days_ergot", 10),
    Rule("8.2.2", "triptan overuse", "days_triptan", 10),
    Rule("8.2.3", "simple analgesic overuse", "days_simple_analgesic", 15),
    Rule("8.2.4", "opioid overuse", "days_opioid", 10),
    Rule("8.2.5", "combination-analgesic overuse", "days_combination_analgesic", 10),
    Rule("8.2.6", "overuse of multiple drug classes not individually overused", "ichd_days", 10),
    Rule("8.2.8", "overuse of other medication (gepants, ditans, other)", "other_acute_days", 10),
)
SINGLE_CLASS_RULES = tuple(r for r in RULES if r.code not in ("8.2.6", "8.2.8"))
assert {r.column.removeprefix("days_") for r in SINGLE_CLASS_RULES} == set(ICHD_CLASSES)


@dataclass
class RuleMet:
    code: str
    name: str
    threshold: int
    months: list[date]  # the consecutive months of the longest qualifying run
    days_per_month: list[int]


@dataclass
class OveruseResult:
    user_id: str
    level: Level
    rules: list[RuleMet] = field(default_factory=list)  # overuse: the rules met; watch: the current ones
    months_assessed: int = 0
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _month_index(d: date) -> int:
    return d.year * 12 + d.month - 1


def _month_rule_met(row: dict[str, Any], rule: Rule) -> bool:
    if row["headache_days"] < HEADACHE_DAYS_MIN or row[rule.column] < rule.threshold:
        return False
    if rule.code == "8.2.6":  # only when no single class is overused and >= 2 classes are used
        return row["ichd_classes_used"] >= 2 and not any(
            row[r.column] >= r.threshold for r in SINGLE_CLASS_RULES
        )
    return True


def _runs(rows: list[dict[str, Any]], rule: Rule) -> list[list[dict[str, Any]]]:
    """Runs of consecutive calendar months (all assessable) in which ``rule`` is met."""
    runs: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    for row in rows:
        consecutive = bool(current) and _month_index(row["month"]) == _month_index(current[-1]["month"]) + 1
        if _month_rule_met(row, rule):
            current = current + [row] if consecutive else [row]
        else:
            current = []
        if current:
            if len(current) == 1:
                runs.append(current)
            else:
                runs[-1] = current
    return runs


def _describe(rule: RuleMet, label: str) -> str:
    months = f"{rule.months[0]:%b %Y}" if len(rule.months) == 1 else f"{rule.months[0]:%b %Y}-{rule.months[-1]:%b %Y}"
    days = ", ".join(str(d) for d in rule.days_per_month)
    return (
        f"{label} (ICHD-3 {rule.code}, {rule.name}): >= {rule.threshold} days/month for "
        f"{len(rule.months)} consecutive month(s), {months} ({days} days), with >= {HEADACHE_DAYS_MIN} "
        f"headache days/month"
    )


def check_overuse(
    summary: pl.DataFrame, user_id: str, min_months: int = MIN_MONTHS, min_coverage: float = MIN_COVERAGE
) -> OveruseResult:
    """The ICHD-3 check for one user over their monthly summary (``summary.monthly_summary``)."""
    rows = (
        summary.filter((pl.col("user_id") == user_id) & (pl.col("coverage") >= min_coverage))
        .sort("month")
        .to_dicts()
    )
    result = OveruseResult(user_id=user_id, level="none", months_assessed=len(rows))
    if not rows:
        result.message = "no month with enough diary days to assess medication overuse"
        return result
    met, current = [], []
    latest = rows[-1]["month"]
    for rule in RULES:
        runs = _runs(rows, rule)
        if not runs:
            continue
        longest = max(runs, key=len)
        as_met = RuleMet(rule.code, rule.name, rule.threshold, [r["month"] for r in longest], [int(r[rule.column]) for r in longest])
        if len(longest) >= min_months:
            met.append(as_met)
        elif runs[-1][-1]["month"] == latest:
            last = runs[-1]
            current.append(
                RuleMet(rule.code, rule.name, rule.threshold, [r["month"] for r in last], [int(r[rule.column]) for r in last])
            )
    if met:
        result.level, result.rules = "overuse", met
        result.message = "; ".join(_describe(r, "Medication-overuse headache criteria met") for r in met)
    elif current:
        result.level, result.rules = "watch", current
        result.message = "; ".join(_describe(r, "Watch: acute medication at the overuse threshold") for r in current)
    else:
        result.message = "no ICHD-3 medication-overuse rule met"
    return result


def check_cohort(summary: pl.DataFrame, min_months: int = MIN_MONTHS, min_coverage: float = MIN_COVERAGE) -> pl.DataFrame:
    """``check_overuse`` for every user of a summary: (user_id, level, rules, months_assessed)."""
    results = [
        check_overuse(part, uid, min_months, min_coverage)
        for (uid,), part in summary.partition_by("user_id", as_dict=True).items()
    ]
    return pl.DataFrame(
        {
            "user_id": [r.user_id for r in results],
            "level": [r.level for r in results],
            "rules": [",".join(m.code for m in r.rules) for r in results],
            "months_assessed": [r.months_assessed for r in results],
        },
        schema={"user_id": pl.String, "level": pl.String, "rules": pl.String, "months_assessed": pl.Int64},
    )
