"""How much of the oracle's within-person signal the shared features can carry at all.

LightGBM on the foundation's features and offset, fitted to the simulator's probabilities as soft
labels (cross-entropy) instead of the noisy outcomes: an upper reference for any model that reads
only these features, scored on the VALIDATION days beside the foundation model and the oracle
(Brier skill against the running base rate, within-person correlation with the true log-odds)::

    .venv/bin/python -m migrainemamba.experiments.feature_ceiling

Simulated data only (needs truth_days). Writes ``data/experiments/feature_ceiling.json``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from migrainemamba.config import load_config, resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.evaluation.scoring import Scored, bootstrap_replicates, summarize
from migrainemamba.models.baselines import RunningBaseRate
from migrainemamba.models.foundation import (
    FoundationConfig,
    FoundationModel,
    feature_matrix,
    split_batches,
)
from migrainemamba.runtime import configure_entry_point

log = logging.getLogger(__name__)

PHASES = ("all", "15-30", "31+")
ROUNDS = 800
SOFT_PARAMS = {
    "objective": "cross_entropy", "learning_rate": 0.1, "num_leaves": 31, "min_data_in_leaf": 100,
    "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
    "verbose": -1, "seed": 1,
}


def run(n_boot: int = 50) -> dict[str, Any]:
    cfg = load_config(["tracking.enabled=false"])
    cohort = PreparedCohort.read(resolve_path(cfg.paths.prepared))
    if cohort.truth_days is None:
        raise ValueError("feature_ceiling needs a simulated cohort (truth_days)")
    features = pl.read_parquet(resolve_path(cfg.paths.features) / "features.parquet")
    train, valid = split_batches(features, cohort, to_dict(cfg.split))
    config = FoundationConfig.from_dict(to_dict(cfg.foundation))
    truth = cohort.truth_days.select("user_id", "date", "p_true", "p_oracle")

    def rows(batch: Any) -> pl.DataFrame:
        keys = batch.features().select("user_id", "date", "phase")
        return keys.join(truth, on=["user_id", "date"], how="left", maintain_order="left")

    tr, va = rows(train), rows(valid)
    foundation = FoundationModel(config)
    foundation.fit(train, valid)
    x_train = feature_matrix(train.features(), config.exclude_features)
    x_valid = feature_matrix(valid.features(), config.exclude_features)
    off_train, off_valid = foundation.offset(train.features()), foundation.offset(valid.features())
    params = SOFT_PARAMS | {"num_threads": config.num_threads}
    dtrain = lgb.Dataset(x_train, label=tr["p_oracle"].to_numpy(), init_score=off_train)
    dvalid = lgb.Dataset(x_valid, label=va["p_oracle"].to_numpy(), init_score=off_valid, reference=dtrain)
    booster = lgb.train(params, dtrain, ROUNDS, valid_sets=[dvalid], callbacks=[lgb.early_stopping(50, verbose=False)])
    z = booster.predict(x_valid, raw_score=True) + off_valid
    forecasts = {
        "foundation": np.asarray(foundation.predict(valid), dtype=float),
        "feature_ceiling": 1.0 / (1.0 + np.exp(-z)),
        "oracle": va["p_oracle"].to_numpy(),
    }
    users = va["user_id"].to_numpy()
    index = {u: i for i, u in enumerate(np.unique(users))}
    user = np.array([index[u] for u in users])
    y, p_ref, p_true = valid.labels().astype(bool), RunningBaseRate().predict(valid), va["p_true"].to_numpy()
    phase = va["phase"].to_numpy()
    out: dict[str, Any] = {"rounds": booster.best_iteration or ROUNDS, "round_cap": ROUNDS}
    for name in PHASES:
        keep = np.ones(len(y), bool) if name == "all" else phase == name
        out[name] = {}
        for model, p in forecasts.items():
            reps = bootstrap_replicates(Scored(user[keep], y[keep], p[keep], p_ref[keep], p_true=p_true[keep]), n_boot, 0)
            s = summarize({k: reps[k] for k in ("brier_skill", "within_person_risk_corr")})
            out[name][model] = {k: round(v, 4) for k, v in s.items()}
    return out


def main() -> None:
    configure_entry_point()
    result = run()
    cfg = load_config(["tracking.enabled=false"])
    path = resolve_path(cfg.paths.data_dir) / "experiments" / "feature_ceiling.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    for name in PHASES:
        print(name, {m: (v["brier_skill"], v["within_person_risk_corr"]) for m, v in result[name].items()})
    print(f"boosting rounds {result['rounds']} (cap {result['round_cap']}); written {path}")


if __name__ == "__main__":
    main()
