"""How much the foundation's forecast grows with the people it learns from (simulated data).

The foundation (``configs/foundation``, unchanged) is fitted on nested shares of the training
people, and on a fresh simulated cohort of the same story many times larger (another seed, every
person's first days as training days, none held out). Each fit forecasts the cohort's test days,
scored beside the served models by the evaluation harness, with paired 95% intervals over
people. Issue 11 asks whether anything in days 15-30 is left to learn; this separates what more
people would teach the same features from what a model on the same people misses::

    .venv/bin/python -m migrainemamba.experiments.training_size [shares=0.125,0.25,0.5] [fresh_users=48000]

Needs the pipeline's outputs (prepare, features, evaluate). Simulated data only (the fresh cohort
is drawn from the simulator). Writes ``data/experiments/training_size.json`` and its plot beside.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from migrainemamba.config import load_config, resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort, prepare_cohort
from migrainemamba.evaluation.harness import score_predictions
from migrainemamba.features import build_features
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.foundation import FoundationConfig, FoundationModel, split_batches
from migrainemamba.runtime import configure_entry_point

log = logging.getLogger(__name__)

PHASES = ("1-14", "15-30", "31+")
SERVED = ("base_rate", "foundation", "temporal", "personal")
METRICS = ("within_person_risk_corr", "brier_skill", "ece")
FRESH_SEED_OFFSET = 104729  # the fresh cohort's seed: data.seed + this (no other stage's offset)


def _fit(cfg: Any, train: ForecastBatch, valid: ForecastBatch) -> FoundationModel:
    model = FoundationModel(FoundationConfig.from_dict(to_dict(cfg.foundation)))
    model.fit(train, valid)
    return model


def share_fits(
    cfg: Any, cohort: PreparedCohort, features: pl.DataFrame, shares: list[float]
) -> tuple[dict[str, tuple[int, FoundationModel]], int]:
    """Foundations on nested random shares of the training people (early stopping on all of the
    validation days, as the stage's), and how many training people there are."""
    train, valid = split_batches(features, cohort, to_dict(cfg.split))
    people = train.targets["user_id"].unique().sort().to_numpy()
    order = np.random.default_rng(0).permutation(people)
    fits = {}
    for share in shares:
        chosen = order[: round(share * len(order))]
        mask = np.isin(train.targets["user_id"].to_numpy(), chosen)
        fits[f"foundation_{len(chosen)}"] = (len(chosen), _fit(cfg, train.subset(mask), valid))
        log.info("share %.3f: %d people fitted", share, len(chosen))
    return fits, len(people)


def fresh_fit(cfg: Any, n_users: int) -> tuple[int, FoundationModel]:
    """A foundation on a fresh simulated cohort: every person's training and validation days."""
    data_cfg = to_dict(cfg.data) | {"n_users": n_users, "seed": int(cfg.data.seed) + FRESH_SEED_OFFSET}
    started = time.perf_counter()
    cohort = prepare_cohort(data_cfg)
    features = build_features(cohort.users, cohort.daily_logs)
    train, valid = split_batches(features, cohort, to_dict(cfg.split) | {"holdout_user_share": 0.0})
    log.info("fresh cohort: %d people simulated in %.0f s", n_users, time.perf_counter() - started)
    return train.targets["user_id"].n_unique(), _fit(cfg, train, valid)


def score(cfg: Any, cohort: PreparedCohort, features: pl.DataFrame, fits: dict[str, tuple[int, FoundationModel]]) -> dict[str, Any]:
    """Every fit's forecasts of the served foundation's test days, scored beside the served models."""
    served = pl.read_parquet(resolve_path(cfg.paths.predictions) / "test.parquet").filter(pl.col("model").is_in(SERVED))
    days = served.filter(pl.col("model") == "foundation")
    batch = ForecastBatch(cohort.users, cohort.daily_logs, days.select("user_id", "date"), precomputed=features)
    frames = [served]
    for name, (_, model) in fits.items():
        frames.append(days.with_columns(p=pl.Series(np.asarray(model.predict(batch), dtype=float)), model=pl.lit(name)).select(served.columns))
    truth = cohort.truth_days.select("user_id", "date", "p_oracle", "p_true")
    return score_predictions(pl.concat(frames).join(truth, on=["user_id", "date"], how="left"), n_boot=200, seed=0, phases=list(PHASES))


def table(scores: dict[str, Any], fits: dict[str, tuple[int, FoundationModel]]) -> dict[str, Any]:
    """Cold-start people's test days: per phase and fit, its scores and its difference to the served foundation."""
    out: dict[str, Any] = {}
    for phase in PHASES:
        models = scores["cold_start"][phase]
        out[phase] = {"oracle_risk_corr": models["foundation"].get("oracle_within_person_risk_corr")}
        for name, (people, _) in fits.items():
            s = models[name]
            row: dict[str, Any] = {"training_people": people}
            for metric in METRICS:
                row[metric] = s[metric]
                for suffix in ("", "_lo", "_hi"):
                    row[f"{metric}_minus_foundation{suffix}"] = s[f"{metric}_minus_foundation{suffix}"]
            out[phase][name] = row
        for name in ("foundation", "temporal"):
            out[phase][name] = {metric: models[name][metric] for metric in METRICS}
    return out


def plot(result: dict[str, Any], served_people: int, path: Path) -> None:
    """Within-person risk correlation against training people (log scale), one line per phase,
    with the served models' as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for phase, rows in result.items():
        fits = sorted((r["training_people"], r["within_person_risk_corr"]) for n, r in rows.items() if isinstance(r, dict) and "training_people" in r)
        line = ax.plot(*zip(*fits, strict=True), marker="o", label=f"days {phase}")[0]
        ax.scatter([served_people], [rows["temporal"]["within_person_risk_corr"]], marker="x", color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("people the foundation learned from (o: foundation fits, x: the temporal model)")
    ax.set_ylabel("within-person risk correlation (test, cold start)")
    ax.set_title("The foundation's forecast against the size of its training cohort")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> None:
    configure_entry_point()
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    shares = [float(s) for s in args.get("shares", "0.125,0.25,0.5").split(",")]
    fresh_users = int(args.get("fresh_users", 48000))
    cfg = load_config(["tracking.enabled=false", *[a for a in argv if a.split("=", 1)[0] not in ("shares", "fresh_users")]])
    cohort = PreparedCohort.read(resolve_path(cfg.paths.prepared))
    if cohort.truth_days is None:
        raise SystemExit("training_size needs simulated data (truth tables)")
    features = pl.read_parquet(resolve_path(cfg.paths.features) / "features.parquet")
    fits, served_people = share_fits(cfg, cohort, features, shares)
    if fresh_users > 0:
        people, model = fresh_fit(cfg, fresh_users)
        fits[f"foundation_fresh_{people}"] = (people, model)
    result = table(score(cfg, cohort, features, fits), fits)
    # the served foundation is the fit on every training person
    for phase in PHASES:
        result[phase]["foundation"]["training_people"] = served_people
    out = resolve_path(cfg.paths.data_dir) / "experiments" / "training_size.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    plot(result, served_people, out.with_suffix(".png"))
    for phase, rows in result.items():
        for name, r in rows.items():
            if isinstance(r, dict) and "within_person_risk_corr_minus_foundation" in r:
                print(
                    f"{phase:6s} {name:24s} people {r['training_people']:6d}  risk corr {r['within_person_risk_corr']:.4f}"
                    f" ({r['within_person_risk_corr_minus_foundation']:+.4f} [{r['within_person_risk_corr_minus_foundation_lo']:+.4f},"
                    f" {r['within_person_risk_corr_minus_foundation_hi']:+.4f}])  Brier skill {r['brier_skill']:.4f}"
                    f" ({r['brier_skill_minus_foundation']:+.4f} [{r['brier_skill_minus_foundation_lo']:+.4f}, {r['brier_skill_minus_foundation_hi']:+.4f}])"
                )
    log.info("wrote %s and its plot", out)


if __name__ == "__main__":
    main(sys.argv[1:])
