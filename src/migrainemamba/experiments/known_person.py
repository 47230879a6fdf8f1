"""What knowing one attribute of a person would add to the foundation's forecast (simulated data).

The simulator draws, per person, whether their premonitory symptoms come from a latent state that
raises the next days' risk (``truth_users.prodrome_prone``) and whether their attacks cluster
(``bursty``). The foundation cannot know either: it learns one response to symptoms and to recent
attacks for everyone. This experiment gives it each attribute as if known: the foundation's effect
(its log-odds minus its log-odds with the effect's features reset, ``models.personal.
effect_log_odds``) is re-weighted per truth group, ``logit + w_group * effect``, the group weights
fitted by logistic regression with the foundation's log-odds as offset on training rows; then
test days of days-logged 31+ are scored with the harness (paired 95% intervals over people)::

    .venv/bin/python -m migrainemamba.experiments.known_person

An upper bound for what learning that attribute from the diary could add (a learner must infer
it from the person's own days, the bound is handed it). Needs the prepare, features and foundation
stages' outputs. Writes ``data/experiments/known_person.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from migrainemamba.config import load_config, resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.evaluation.harness import score_predictions
from migrainemamba.experiments import save_result
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.baselines import RunningBaseRate
from migrainemamba.models.bayes_logistic import Rows, fit_laplace, sigmoid
from migrainemamba.models.foundation import FoundationModel
from migrainemamba.models.personal import effect_log_odds
from migrainemamba.runtime import configure_entry_point
from migrainemamba.split import make_split

# attribute of truth_users -> the foundation effect it changes
ATTRIBUTES = {"prodrome_prone": "prodrome", "bursty": "recent_attacks"}
METRICS = ("within_person_risk_corr", "brier_skill", "ece")
WEAK_PRIOR_VAR = 100.0  # the group weights are fitted, not shrunk


def group_weights(logit: np.ndarray, effect: np.ndarray, member: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(w_member, w_other): the weights on ``effect`` in and outside the group (``member``, bool)
    that maximise the likelihood of ``y`` under ``logit + w * effect``."""
    x = np.column_stack([effect * member, effect * ~member])
    post = fit_laplace(Rows(x, logit, y, np.zeros(len(y), int), 1), np.zeros(2), np.full(2, WEAK_PRIOR_VAR))
    return post.mean[0]


def run(cfg: Any) -> dict[str, Any]:
    cohort = PreparedCohort.read(resolve_path(cfg.paths.prepared))
    if cohort.truth_users is None:
        raise ValueError("known_person: needs a simulated cohort (truth_users)")
    features = pl.read_parquet(resolve_path(cfg.paths.features) / "features.parquet")
    split = make_split(features, to_dict(cfg.split))
    foundation = FoundationModel.load(resolve_path(cfg.paths.models) / "foundation")
    rows = split.filter(pl.col("scorable") & (pl.col("phase") == "31+")).join(
        cohort.truth_users.select("user_id", *ATTRIBUTES), on="user_id", how="left"
    )
    logit = np.asarray(foundation.logit(rows), float)
    y = rows["onset"].cast(pl.Float64).to_numpy()
    train = ((rows["split"] == "train") & ~rows["cold_start"]).to_numpy()
    test = (rows["split"] == "test").to_numpy()
    forecasts = {"foundation": logit}
    weights: dict[str, list[float]] = {}
    known_all = logit.copy()
    for attribute, effect_name in ATTRIBUTES.items():
        effect = effect_log_odds(foundation, rows, effect_name, logit)
        member = rows[attribute].fill_null(False).to_numpy()
        w = group_weights(logit[train], effect[train], member[train], y[train])
        weights[attribute] = [round(float(v), 4) for v in w]
        shift = effect * np.where(member, w[0], w[1])
        forecasts[f"knows_{attribute}"] = logit + shift
        known_all = known_all + shift
    forecasts["knows_both"] = known_all
    targets = rows.filter(pl.Series(test))
    base = RunningBaseRate().predict(ForecastBatch(cohort.users, cohort.daily_logs, targets.select("user_id", "date"), precomputed=split))
    keys = targets.select("user_id", "date", "cold_start", "phase", y=pl.col("onset").cast(pl.Boolean))
    preds = pl.concat(
        [keys.with_columns(model=pl.lit("base_rate"), p=pl.Series(np.asarray(base, float)))]
        + [keys.with_columns(model=pl.lit(name), p=pl.Series(sigmoid(lg[test]))) for name, lg in forecasts.items()]
    ).join(cohort.truth_days.select("user_id", "date", "p_oracle", "p_true"), on=["user_id", "date"], how="left")
    scores = score_predictions(preds, int(cfg.evaluate.n_boot), 0, phases=["31+"])["all"]["31+"]
    table = {}
    for name in forecasts:
        s = scores[name]
        row = {m: round(s[m], 4) for m in METRICS}
        if name != "foundation":
            row |= {f"{m}_minus_foundation": [round(s[f"{m}_minus_foundation{q}"], 4) for q in ("", "_lo", "_hi")] for m in METRICS}
        table[name] = row
    return {"group_weights (member, other)": weights, "test_days_31plus": table}


def main() -> None:
    configure_entry_point()
    cfg = load_config(["tracking.enabled=false"])
    result = run(cfg)
    save_result(cfg, "known_person", result)


if __name__ == "__main__":
    main()
