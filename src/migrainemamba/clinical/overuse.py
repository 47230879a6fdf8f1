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
    rules: list[RuleMet] = field(
        default_factory=list
    )  # overuse: the rules met; watch: the current ones
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


def _month_rules(row: dict[str, Any]) -> list[Rule]:
    return [rule for rule in RULES if _month_rule_met(row, rule)]


def _overuse_runs(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Runs of consecutive (assessable) calendar months in which some overuse rule is met.

    Any rule counts toward the run: a person whose triptan days dip below 10 in a month
    in which triptans and analgesics together reach 10 (8.2.6) is still overusing regularly.
    """
    runs: list[list[dict[str, Any]]] = []
    for row in rows:
        if not _month_rules(row):
            continue
        if (
            runs
            and _month_index(row["month"]) == _month_index(runs[-1][-1]["month"]) + 1
            and _month_rules(runs[-1][-1])
        ):
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


def _rules_in(run: list[dict[str, Any]]) -> list[RuleMet]:
    """Each rule met in the run, with the months it held and its days then."""
    met = []
    for rule in RULES:
        months = [r for r in run if _month_rule_met(r, rule)]
        if months:
            met.append(
                RuleMet(
                    rule.code,
                    rule.name,
                    rule.threshold,
                    [r["month"] for r in months],
                    [int(r[rule.column]) for r in months],
                )
            )
    return met


def _describe(run: list[dict[str, Any]], rules: list[RuleMet], label: str) -> str:
    first, last = run[0]["month"], run[-1]["month"]
    span = f"{first:%b %Y}" if first == last else f"{first:%b %Y}-{last:%b %Y}"
    parts = [
        f"ICHD-3 {r.code} {r.name} (>= {r.threshold} days/month: "
        + ", ".join(f"{m:%b %Y} {d} days" for m, d in zip(r.months, r.days_per_month, strict=True))
        + ")"
        for r in rules
    ]
    return (
        f"{label} for {len(run)} consecutive month(s), {span}, with >= {HEADACHE_DAYS_MIN} headache "
        f"days/month: " + "; ".join(parts)
    )


def check_overuse(
    summary: pl.DataFrame,
    user_id: str,
    min_months: int = MIN_MONTHS,
    min_coverage: float = MIN_COVERAGE,
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
    runs = _overuse_runs(rows)
    long_runs = [run for run in runs if len(run) >= min_months]
    if long_runs:
        run = max(long_runs, key=len)
        result.level, result.rules = "overuse", _rules_in(run)
        result.message = _describe(run, result.rules, "Medication-overuse headache criteria met")
    elif runs and runs[-1][-1]["month"] == rows[-1]["month"]:
        run = runs[-1]
        result.level, result.rules = "watch", _rules_in(run)
        result.message = _describe(
            run, result.rules, "Watch: acute medication at an overuse threshold"
        )
    else:
        result.message = "no ICHD-3 medication-overuse rule met"
    return result


def check_cohort(
    summary: pl.DataFrame, min_months: int = MIN_MONTHS, min_coverage: float = MIN_COVERAGE
) -> pl.DataFrame:
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
        schema={
            "user_id": pl.String,
            "level": pl.String,
            "rules": pl.String,
            "months_assessed": pl.Int64,
        },
    )
