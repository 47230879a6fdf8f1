"""What is left to learn: the oracle's edge over the served forecast, taken apart (simulated data).

The oracle knows every parameter of a person and the true past. Between it and the models lie:
- the person's trigger sensitivities;
- the person's dynamics: whether their onsets follow a premonitory state (prodrome-prone) and
  whether their attacks cluster (bursty), both person-specific in the simulator;
- the person's attack frequency, which the models know only from what they told at onboarding
  and from their diary;
- what no diary holds: the true past on unlogged days, the exact generative story.

Diary-Bayes references (``evaluation.diary_bayes``) leave these out one by one and learn them
from the person's logged days as an exact Bayesian would (``_learned``) or not at all (the
prior's weights, ``_prior``). Runs (``RUNS``):
- ``sensitivities_unknown``: the personalize stage's reference;
- ``person_unknown_true_past``: the dynamics unknown too;
- ``person_unknown``: and the symptoms of unlogged days unknown;
- ``nothing_known``: and the frequency unknown: drawn from the cohort's bands, weighted by what
  the person told. Knowing the generative story and nothing about the person beyond what the
  models see, it is the best any model trained on these diaries could do;
- ``nothing_known_diary_exposures``: and the known-timing triggers read from the diary's
  features, not the true exposures (the true cycle, usual sleep, caffeine habit, unlogged days);
- ``nothing_known_diary_exposures_usual_propensity``: and the same-day exposures' chances each
  morning are the person's usual ones, not the oracle's (from the latent exposure processes).

Scored per phase on held-out people's test days beside the evaluate stage's models, paired
intervals over people::

    .venv/bin/python -m migrainemamba.experiments.oracle_decomposition [n_users=300] [n_draws=256] [runs=a,b]

Default-story cohorts only (the references model no scenario terms). The references are cached
in ``data/experiments`` (``references_only`` computes them before the pipeline's models exist);
the scores go to ``data/experiments/oracle_decomposition_<people>x<draws>.json``, the plots beside.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

from migrainemamba.config import load_config, resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.evaluation.diary_bayes import prepared_cohort_reference
from migrainemamba.evaluation.harness import score_predictions
from migrainemamba.evaluation.plots import plot_scores
from migrainemamba.runtime import configure_entry_point
from migrainemamba.split import make_split

log = logging.getLogger(__name__)

PHASES = ("1-14", "15-30", "31+")
MODELS = ("base_rate", "foundation", "temporal")
METRICS = ("within_person_risk_corr", "brier_skill")
# reference runs: name -> (dynamics known, symptoms of logged days only, frequency known, true exposures,
# each morning's same-day exposure chances known)
RUNS = {
    "sensitivities_unknown": (True, False, True, True, True),  # the personalize stage's reference
    "person_unknown_true_past": (False, False, True, True, True),
    "person_unknown": (False, True, True, True, True),
    "nothing_known": (False, True, False, True, True),
    "nothing_known_diary_exposures": (False, True, False, False, True),
    "nothing_known_diary_exposures_usual_propensity": (False, True, False, False, False),
}
# forecast column -> suffix of the scored model's name
FORECASTS = {"p_reference": "learned", "p_reference_unlearned": "prior"}


def held_out_people(split: pl.DataFrame, n_users: int, seed: int) -> list[str]:
    """A seeded sample of cold-start test people with scorable days in every phase."""
    people = (
        split.filter(pl.col("cold_start") & (pl.col("split") == "test") & pl.col("scorable"))
        .group_by("user_id")
        .agg(pl.col("phase").n_unique().alias("phases"))
        .filter(pl.col("phases") == len(PHASES))["user_id"]
        .sort()
    )
    return people.sample(min(n_users, people.len()), seed=seed).sort().to_list()


def reference_rows(
    cfg: Any, cohort: PreparedCohort, features: pl.DataFrame, chosen: list[str], n_draws: int, seed: int, cache: Path, runs: list[str]
) -> dict[str, pl.DataFrame]:
    """Every reference run's forecasts for ``chosen``, cached in ``cache`` (they take minutes and
    need no model: they can run before the pipeline's models exist)."""
    told = dict(cohort.users.select("user_id", "attacks_per_month").iter_rows())
    data_cfg = to_dict(cfg.data)
    refs = {}
    for name in runs:
        dynamics_known, diary_only, frequency_known, true_exposures, propensity_known = RUNS[name]
        path = cache / f"reference_{name}_{len(chosen)}x{n_draws}.parquet"
        if not path.exists():
            ref = prepared_cohort_reference(
                data_cfg, cohort.truth_days, chosen, n_draws, seed, dynamics_known, diary_only,
                None if frequency_known else told, None if true_exposures else features, not propensity_known,
            )
            ref.write_parquet(path)
        refs[name] = pl.read_parquet(path)
    return refs


PLOTTED = (
    "foundation", "temporal", "nothing_known_prior", "nothing_known_learned", "nothing_known_diary_exposures_learned",
    "person_unknown_learned", "sensitivities_unknown_learned",
)


def plot_decomposition(scores: dict[str, Any], out_dir: Path, tag: str) -> list[Path]:
    """Within-person risk correlation and Brier skill per phase of the models and the main
    references, with 95% intervals (``evaluation.plots.plot_scores``)."""
    shown = {"cold_start": {phase: {m: v for m, v in models.items() if m in PLOTTED} for phase, models in scores.items()}}
    paths = []
    for metric in METRICS:
        path = out_dir / f"oracle_decomposition_{metric}_{tag}.png"
        plot_scores(shown, path, metric=metric, population="cold_start")
        paths.append(path)
    return paths


def decomposition(predictions: pl.DataFrame, refs: dict[str, pl.DataFrame], n_boot: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The table (per phase: each model's scores and paired differences) and the raw scores."""
    chosen = next(iter(refs.values()))["user_id"].unique().implode()
    sub = predictions.filter(pl.col("model").is_in(list(MODELS)) & pl.col("user_id").is_in(chosen))
    frames = [sub]
    base = sub.filter(pl.col("model") == "foundation").drop("p")
    for run, ref in refs.items():
        for column, suffix in FORECASTS.items():
            part = base.join(ref.select("user_id", "date", p=pl.col(column)), on=["user_id", "date"], how="inner")
            frames.append(part.with_columns(model=pl.lit(f"{run}_{suffix}")).select(sub.columns))
    scores = score_predictions(pl.concat(frames), n_boot, seed, phases=list(PHASES))["cold_start"]
    table: dict[str, Any] = {}
    for phase in PHASES:
        models = scores[phase]
        row: dict[str, Any] = {"oracle_risk_corr": models["foundation"].get("oracle_within_person_risk_corr")}
        for model, s in models.items():
            row[model] = {m: s.get(m) for m in METRICS}
            for other in ("foundation", "temporal", "nothing_known_prior"):
                for metric in METRICS:
                    key = f"{metric}_minus_{other}"
                    for suffix in ("", "_lo", "_hi"):
                        if key + suffix in s:
                            row[model][key + suffix] = s[key + suffix]
        row["n_users"] = models["foundation"].get("n_users")
        table[phase] = row
    return table, scores


def main(argv: list[str]) -> None:
    configure_entry_point()
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    n_users, n_draws = int(args.get("n_users", 300)), int(args.get("n_draws", 256))
    runs = args["runs"].split(",") if "runs" in args else list(RUNS)
    cfg = load_config([a for a in argv if "=" in a and a.split("=", 1)[0] not in ("n_users", "n_draws", "runs")])
    cohort = PreparedCohort.read(resolve_path(cfg.paths.prepared))
    if cohort.truth_days is None:
        raise SystemExit("oracle_decomposition needs simulated data (truth tables)")
    features = pl.read_parquet(resolve_path(cfg.paths.features) / "features.parquet")
    chosen = held_out_people(make_split(features, to_dict(cfg.split)), n_users, seed=0)
    log.info("references for %d held-out people, %d draws each", len(chosen), n_draws)
    out = Path(resolve_path(cfg.paths.data_dir)) / "experiments" / f"oracle_decomposition_{len(chosen)}x{n_draws}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    refs = reference_rows(cfg, cohort, features, chosen, n_draws, 0, out.parent, runs)
    seconds = time.perf_counter() - started
    predictions = resolve_path(cfg.paths.predictions) / "test.parquet"
    if "references_only" in argv or not predictions.exists():
        log.info("references written (%.0f s); scores need the evaluate stage's %s", seconds, predictions)
        return
    truth = cohort.truth_days.select("user_id", "date", "p_oracle", "p_true")
    scored = pl.read_parquet(predictions).join(truth, on=["user_id", "date"], how="left")
    table, scores = decomposition(scored, refs, n_boot=200, seed=0)
    plots = plot_decomposition(scores, out.parent, f"{len(chosen)}x{n_draws}")
    result = {"n_users": len(chosen), "n_draws": n_draws, "reference_seconds": round(seconds, 1), "phases": table}
    out.write_text(json.dumps(result, indent=2, default=float))
    for phase, row in table.items():
        corr = {m: round(v["within_person_risk_corr"], 4) for m, v in row.items() if isinstance(v, dict) and v.get("within_person_risk_corr") is not None}
        print(phase, "oracle", round(row["oracle_risk_corr"] or float("nan"), 4), corr)
    log.info("wrote %s and %s", out, ", ".join(str(p) for p in plots))


if __name__ == "__main__":
    main(sys.argv[1:])
