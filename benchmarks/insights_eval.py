"""Insights on a simulated cohort: are each person's true triggers named, how often is a
non-trigger called one, is an injected weekday effect found, and how often does a person
without any pattern get one reported.

- Trigger map (``models.trigger_map``, per person: one user's rows through ``MapRows.build``
  and ``personal_map``, as the service maps one user): prior by empirical Bayes and the
  class rule's z (smallest with false-'trigger' rate <= 5% at 90 days, as the personalize
  stage chooses it) on *training* people; scored on held-out people at 90 logged days
  against ``truth_users``: recall of the ``trigger`` class, share of true triggers among
  the person's top 3 entries, precision, false-'trigger' rate (stated target 5%).
- Patterns (``insights.patterns``, BH at FDR 0.10): power to find an injected Monday
  effect (an attack-free Monday after an attack-free day made an attack day with
  probability p) and an injected mid-cycle effect (people with a cycle), at 90 and 180
  logged days; the share of people with any reported pattern
  when their onsets are shuffled within person (the complete null); and what is reported
  on the unshuffled simulated diaries.

Writes benchmarks/results/insights.json.
Run: PYTHONPATH=src python benchmarks/insights_eval.py [--users 800] [--days 365] [--seed 2026]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from math import comb
from pathlib import Path

import numpy as np
import polars as pl

from migrainemamba.config import load_config, to_dict
from migrainemamba.data.simulator import SimulatorConfig, simulate_cohort
from migrainemamba.evaluation.trigger_recovery import recovery, truth_pairs
from migrainemamba.features import build_features
from migrainemamba.features.retrospective import TRIGGER_NAMES
from migrainemamba.insights.injected_effects import (
    first_logged_days,
    inject_onsets,
    inject_weekday,
    permute_onsets,
)
from migrainemamba.insights.patterns import FDR_LEVEL, discover
from migrainemamba.models.trigger_map import ClassRule, MapRows, estimate_map_prior, personal_map

OUT = Path(__file__).parent / "results" / "insights.json"
HORIZON = 90
TOP = 3
MAX_FALSE_TRIGGER = 0.05


def choose_rule(maps: pl.DataFrame, truth: pl.DataFrame, grid: list[float]) -> tuple[ClassRule, list[dict]]:
    sd = (pl.col("hi") - pl.col("lo")) / 2
    curve, chosen = [], None
    for z in grid:
        rule = ClassRule(z=z)
        rec = recovery(rule.classify(maps.with_columns(lo=pl.col("log_or") - z * sd, hi=pl.col("log_or") + z * sd)), truth)
        row = rec.filter(pl.col("method") == "personal").row(0, named=True)
        curve.append({"z": z, "false_trigger_rate": row["false_trigger_rate"], "precision": row["precision"], "recall": row["recall"]})
        if chosen is None and row["false_trigger_rate"] <= MAX_FALSE_TRIGGER:
            chosen = rule
    return chosen or ClassRule(z=max(grid)), curve


def trigger_naming(cohort, features: pl.DataFrame, logs90: pl.DataFrame, train_ids: set[str]) -> dict:
    rows_all = MapRows.build(features, logs90)
    train = np.array(sorted(u for u in rows_all.user_ids if u in train_ids))
    prior = estimate_map_prior(rows_all.upto(HORIZON, train))
    train_map = personal_map(rows_all.upto(HORIZON, train), prior, HORIZON, ClassRule(z=1.0))
    rule, curve = choose_rule(train_map, cohort.truth_users, [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0])
    held_out = [u for u in rows_all.user_ids if u not in train_ids]
    t0 = time.perf_counter()
    maps = []
    for uid in held_out:  # one person at a time, as the service maps one user
        f = features.filter(pl.col("user_id") == uid)
        rows = MapRows.build(f, logs90.filter(pl.col("user_id") == uid)).upto(HORIZON)
        if len(rows.y):
            maps.append(personal_map(rows, prior, HORIZON, rule))
    seconds = time.perf_counter() - t0
    maps_df = pl.concat(maps)
    truth = truth_pairs(cohort.truth_users, list(TRIGGER_NAMES))
    # the person's entries as the insights list them: 'trigger' class first, then by log OR
    scored = (
        maps_df.join(truth, on=["user_id", "trigger"], how="left")
        .with_columns(true_trigger=pl.col("sensitive") & (pl.col("true_log_or") > 0), _other=pl.col("class") != "trigger")
        .sort("user_id", "_other", "log_or", descending=[False, False, True])
        .with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id"), entries=pl.len().over("user_id"))
    )
    true = scored.filter(pl.col("true_trigger"))
    called = scored.filter(pl.col("class") == "trigger")
    not_sensitive = scored.filter(~pl.col("sensitive"))
    per_user = true.group_by("user_id").agg(
        (pl.col("rank") <= TOP).any().alias("any_top"), pl.len().alias("k"), pl.col("entries").first().alias("n")
    )
    # chance that a random order puts at least one of the person's k true triggers in the top 3
    chance_any = [1 - comb(n - k, TOP) / comb(n, TOP) for n, k in zip(per_user["n"], per_user["k"], strict=True)]
    strongest = true.sort("true_log_or", descending=True).group_by("user_id", maintain_order=True).first()
    exposure_floor = true.filter(pl.col("n_exposed") >= 5)
    return {
        "method": "personal Bayesian map (models.trigger_map.personal_map), one user at a time",
        "horizon_logged_days": HORIZON,
        "train_people": len(train),
        "held_out_people": maps_df["user_id"].n_unique(),
        "rule_z": rule.z,
        "rule_curve_training_people": curve,
        "stated_false_trigger_rate": MAX_FALSE_TRIGGER,
        "true_triggers": true.height,
        "recall_trigger_class": round(float((true["class"] == "trigger").mean()), 4),
        "share_true_triggers_in_top3": round(float((true["rank"] <= TOP).mean()), 4),
        "share_true_triggers_in_top3_with_5plus_exposed_days": round(float((exposure_floor["rank"] <= TOP).mean()), 4)
        if exposure_floor.height
        else None,
        "share_strongest_true_trigger_in_top3": round(float((strongest["rank"] <= TOP).mean()), 4),
        # what a random order of the person's entries would give
        "chance_share_in_top3": round(float((TOP / true["entries"]).mean()), 4),
        "people_with_a_true_trigger_named_in_top3": round(float(per_user["any_top"].mean()), 4),
        "chance_people_with_one_in_top3": round(float(np.mean(chance_any)), 4),
        "called_trigger": called.height,
        "precision_trigger_class": round(float(called["true_trigger"].mean()), 4) if called.height else None,
        "false_trigger_rate": round(float((not_sensitive["class"] == "trigger").mean()), 4),
        "non_sensitive_pairs": not_sensitive.height,
        "seconds_per_person_map": round(seconds / max(len(held_out), 1), 5),
    }


def pattern_power(cohort, days: int, ps: list[float], rng: np.random.Generator, max_people: int) -> list[dict]:
    logs = first_logged_days(cohort.daily_logs, days)
    ids = logs["user_id"].unique(maintain_order=True).to_list()[:max_people]
    out = []
    for p in ps:
        found = judged = other = 0
        for uid in ids:
            user = cohort.users.filter(pl.col("user_id") == uid)
            diary = inject_weekday(logs.filter(pl.col("user_id") == uid), 1, p, rng)
            r = discover(build_features(user, diary), diary, bool(user["has_menstrual_cycle"][0]))
            if not r["enough_data"]:
                continue
            judged += 1
            keys = [x["key"] for x in r["patterns"]]
            found += "monday" in keys
            other += any(k.endswith("day") and k != "monday" for k in keys)
        out.append(
            {
                "logged_days": days,
                "injected_p": p,
                "people_judged": judged,
                "monday_found": round(found / max(judged, 1), 4),
                "another_weekday_reported": round(other / max(judged, 1), 4),
            }
        )
    return out


def cycle_power(cohort, days: int, ps: list[float], rng: np.random.Generator, max_people: int) -> list[dict]:
    """Power to find an injected mid-cycle effect (12-16 days before the next period, away from the
    simulator's own perimenstrual trigger) in people with a cycle."""
    logs = first_logged_days(cohort.daily_logs, days)
    cyclers = cohort.users.filter(pl.col("has_menstrual_cycle"))["user_id"]
    ids = logs.filter(pl.col("user_id").is_in(cyclers.implode()))["user_id"].unique(maintain_order=True).to_list()[:max_people]
    out = []
    for p in ps:
        found = judged = 0
        for uid in ids:
            user = cohort.users.filter(pl.col("user_id") == uid)
            diary = logs.filter(pl.col("user_id") == uid)
            f = build_features(user, diary)
            mid = set(f.filter((pl.col("cycle_day") > 7) & pl.col("days_to_next_period").is_between(12, 16))["date"].to_list())
            injected = inject_onsets(diary, mid.__contains__, p, rng)
            r = discover(build_features(user, injected), injected, True)
            if not r["enough_data"]:
                continue
            judged += 1
            found += any(x["key"] == "mid_cycle" for x in r["patterns"])
        out.append({"logged_days": days, "injected_p": p, "people_judged": judged, "mid_cycle_found": round(found / max(judged, 1), 4)})
    return out


def pattern_null_and_observed(cohort, days: int, rng: np.random.Generator) -> dict:
    logs = first_logged_days(cohort.daily_logs, days)
    features = build_features(cohort.users, logs)
    judged = with_any_null = with_any_real = 0
    kinds: Counter[str] = Counter()
    tried = []
    t0 = time.perf_counter()
    for uid in logs["user_id"].unique(maintain_order=True).to_list():
        user = cohort.users.filter(pl.col("user_id") == uid)
        f = features.filter(pl.col("user_id") == uid)
        diary = logs.filter(pl.col("user_id") == uid)
        cycle = bool(user["has_menstrual_cycle"][0])
        real = discover(f, diary, cycle)
        if not real["enough_data"]:
            continue
        judged += 1
        tried.append(real["patterns_tried"])
        with_any_real += bool(real["patterns"])
        kinds.update(p["kind"] for p in real["patterns"])
        null = discover(permute_onsets(f, rng), diary, cycle)
        with_any_null += bool(null["patterns"])
    return {
        "logged_days": days,
        "people_judged": judged,
        "people_too_little_data": logs["user_id"].n_unique() - judged,
        "mean_patterns_tried": round(float(np.mean(tried)), 2) if tried else None,
        "null_share_with_any_pattern": round(with_any_null / max(judged, 1), 4),
        "stated_fdr_level": FDR_LEVEL,
        "simulated_share_with_any_pattern": round(with_any_real / max(judged, 1), 4),
        "simulated_patterns_by_kind": dict(kinds),
        "seconds_per_person": round((time.perf_counter() - t0) / max(2 * judged, 1), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=800)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--power-people", type=int, default=150)
    args = parser.parse_args()
    started = time.perf_counter()
    data = to_dict(load_config().data)
    data.update(n_users=args.users, n_days=args.days, seed=args.seed)
    cohort = simulate_cohort(SimulatorConfig.from_dict(data))
    rng = np.random.default_rng(args.seed)
    logs90 = first_logged_days(cohort.daily_logs, HORIZON)
    features90 = build_features(cohort.users, logs90)
    ids = logs90["user_id"].unique().sort().to_list()
    train_ids = set(ids[: len(ids) // 2])
    results = {
        "cohort": {"users": args.users, "calendar_days": args.days, "seed": args.seed, "people_with_90_logged_days": len(ids)},
        "trigger_naming": trigger_naming(cohort, features90, logs90, train_ids),
        "patterns_null_and_observed": [pattern_null_and_observed(cohort, d, rng) for d in (90, 180)],
        "patterns_power_injected_monday": pattern_power(cohort, 90, [0.3, 0.5, 0.8], rng, args.power_people)
        + pattern_power(cohort, 180, [0.3, 0.5, 0.8], rng, args.power_people),
        "patterns_power_injected_mid_cycle": cycle_power(cohort, 90, [0.5, 0.8], rng, args.power_people)
        + cycle_power(cohort, 180, [0.5, 0.8], rng, args.power_people),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0]},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
