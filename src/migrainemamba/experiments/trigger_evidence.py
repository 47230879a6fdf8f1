"""How sure can a trigger map be? Per-trigger nonparametric empirical Bayes on the diary.

Issue 10 asks the map's ``trigger`` class for precision 0.8 at 90 days. The stage's map uses a
Gaussian prior per trigger; the simulator's truth is "a share of people are sensitive, the others
not at all", which a Gaussian cannot say. This experiment lets the data choose the shape of the
prior instead, without assuming our story:

1. *Profile likelihood* per person and trigger on a grid of log ORs: the person's labelled days
   (the map's rows, ``models.trigger_map.MapRows``) with that trigger's log OR set to each grid
   value and every other term at the stage map's posterior mode.
2. *NPMLE* (Kiefer-Wolfowitz): per trigger, the prior weights on the grid that maximise the
   training people's marginal likelihood (EM), at the rule horizon.
3. Each held-out person's posterior on the grid, and P(log OR > ``delta``): the probability that
   the trigger raises their odds by more than exp(``delta``).

Scored against ``truth_users`` per horizon: precision and recall of calling ``trigger`` at
P >= threshold (with at least ``min_onsets_exposed`` onsets after exposure, as the stage's
rule), and a reliability table (mean probability against the share of true triggers)::

    .venv/bin/python -m migrainemamba.experiments.trigger_evidence [delta ...]

Writes ``data/experiments/trigger_evidence.json`` and ``trigger_evidence.png`` there.
Results: docs/experiments/trigger_evidence.md.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from tqdm.auto import tqdm

from migrainemamba.config import load_config, resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.evaluation.trigger_recovery import truth_pairs
from migrainemamba.features.retrospective import TRIGGER_NAMES
from migrainemamba.models.bayes_logistic import fit_laplace
from migrainemamba.models.trigger_map import MapPrior, MapRows, estimate_map_prior
from migrainemamba.runtime import configure_entry_point
from migrainemamba.split import make_split

log = logging.getLogger(__name__)

GRID = np.round(np.arange(-2.0, 2.0 + 1e-9, 0.1), 10)  # log OR; contains 0 exactly
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
RELIABILITY_BINS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0 + 1e-9)


def profile_log_lik(rows: MapRows, prior: MapPrior, grid: np.ndarray = GRID) -> np.ndarray:
    """(U, T, G): each person's log likelihood with trigger t's log OR at grid value g, the other
    terms at their posterior mode under ``prior``; relative to the mode (0 where never exposed)."""
    design = rows.design_rows()
    post = fit_laplace(design, prior.mean, prior.var)
    eta = design.offset + np.einsum("rk,rk->r", design.x, post.mean[design.group])
    at_mode = design.y * eta - np.logaddexp(0.0, eta)
    n_users, n_trig = len(rows.user_ids), rows.exposures.shape[1]
    out = np.zeros((n_users, n_trig, len(grid)))
    for j in range(n_trig):
        exposed = np.flatnonzero(rows.exposures[:, j])  # only exposed days depend on this log OR
        person = design.group[exposed]
        moved = eta[exposed, None] + grid[None, :] - post.mean[person, 1 + j][:, None]
        change = design.y[exposed, None] * moved - np.logaddexp(0.0, moved) - at_mode[exposed, None]
        for g in range(len(grid)):
            out[:, j, g] = np.bincount(person, change[:, g], n_users)
    return out


def npmle(log_lik: np.ndarray, n_iter: int = 3000, tol: float = 1e-10) -> np.ndarray:
    """Kiefer-Wolfowitz NPMLE of a prior on the grid from (U, G) log likelihoods, by EM."""
    lik = np.exp(log_lik - log_lik.max(axis=1, keepdims=True))
    weights = np.full(lik.shape[1], 1.0 / lik.shape[1])
    for _ in range(n_iter):
        post = lik * weights
        post /= post.sum(axis=1, keepdims=True)
        new = post.mean(axis=0)
        if np.abs(new - weights).max() < tol:
            return new
        weights = new
    return weights


def posterior_above(log_lik: np.ndarray, weights: np.ndarray, delta: float, grid: np.ndarray = GRID) -> np.ndarray:
    """P(log OR > delta | the person's diary) from (U, T, G) log likelihoods and (T, G) priors."""
    post = np.exp(log_lik - log_lik.max(axis=2, keepdims=True)) * weights[None]
    post /= post.sum(axis=2, keepdims=True)
    return post[:, :, grid > delta].sum(axis=2)


def score(prob: np.ndarray, rows: MapRows, truth: pl.DataFrame, min_onsets_exposed: int) -> dict[str, Any]:
    """Precision and recall at each threshold, and the reliability table, against the truth."""
    _, onsets_exposed, _, _ = rows.evidence()
    names = [t for t in TRIGGER_NAMES if f"{t}_sensitive" in truth.columns]
    frame = pl.DataFrame(
        {
            "user_id": np.repeat(rows.user_ids.astype(str), len(TRIGGER_NAMES)),
            "trigger": np.tile(np.array(TRIGGER_NAMES), len(rows.user_ids)),
            "p": prob.ravel(),
            "onsets_exposed": onsets_exposed.ravel(),
        }
    ).join(truth_pairs(truth, names), on=["user_id", "trigger"], how="left")
    true = (frame["sensitive"].fill_null(False) & (frame["true_log_or"].fill_null(0.0) > 0)).to_numpy()
    p, enough = frame["p"].to_numpy(), frame["onsets_exposed"].to_numpy() >= min_onsets_exposed
    calls = {}
    for thr in THRESHOLDS:
        called = enough & (p >= thr)
        calls[str(thr)] = {
            "n_called": int(called.sum()),
            "precision": float((called & true).sum() / called.sum()) if called.any() else None,
            "recall": float((called & true).sum() / max(true.sum(), 1)),
            "mean_probability": float(p[called].mean()) if called.any() else None,
        }
    reliability = []
    for lo, hi in itertools.pairwise(RELIABILITY_BINS):
        inside = enough & (p >= lo) & (p < hi)
        if inside.any():
            reliability.append({"bin": [lo, min(hi, 1.0)], "n": int(inside.sum()), "mean_probability": float(p[inside].mean()), "share_true": float(true[inside].mean())})
    return {"n_users": len(rows.user_ids), "n_true_triggers": int(true.sum()), "calls": calls, "reliability": reliability}


def plot(results: dict[str, Any], path: Path) -> Path:
    deltas = list(results["by_delta"])
    fig, axes = plt.subplots(1, len(deltas), figsize=(4.2 * len(deltas), 4), squeeze=False)
    for ax, delta in zip(axes[0], deltas):
        for horizon, scored in results["by_delta"][delta].items():
            rel = scored["reliability"]
            ax.plot([r["mean_probability"] for r in rel], [r["share_true"] for r in rel], "o-", label=f"{horizon} days")
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set(title=f"P(log OR > {delta}): reliability", xlabel="mean probability in bin", ylabel="share true triggers", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(deltas: tuple[float, ...] = (0.05, 0.15, 0.25)) -> dict[str, Any]:
    cfg = load_config(["tracking.enabled=false"])
    pc = to_dict(cfg.personal)["trigger_map"]
    cohort = PreparedCohort.read(resolve_path(cfg.paths.prepared))
    if cohort.truth_users is None:
        raise ValueError("trigger_evidence needs a simulated cohort (truth_users)")
    split = make_split(pl.read_parquet(resolve_path(cfg.paths.features) / "features.parquet"), to_dict(cfg.split))
    logged = dict(split.group_by("user_id").agg(pl.col("logged").sum()).iter_rows())
    rows = MapRows.build(split, cohort.daily_logs)
    train = split.filter((pl.col("split") == "train") & ~pl.col("cold_start"))["user_id"].unique().to_numpy()
    held_out = split.filter(pl.col("cold_start"))["user_id"].unique().to_numpy()  # as the stage scores its maps
    prior = estimate_map_prior(rows.upto(10**9, train), centre=pc["centre"])  # the stage's Gaussian map prior

    def reached(users: np.ndarray, horizon: int) -> MapRows:
        return rows.upto(horizon, np.array([u for u in users if logged.get(str(u), 0) >= horizon]))

    rule_horizon = int(pc["rule_horizon"])
    train_ll = profile_log_lik(reached(train, rule_horizon), prior)
    weights = np.stack([npmle(train_ll[:, j]) for j in range(len(TRIGGER_NAMES))])
    results: dict[str, Any] = {
        "grid": GRID.tolist(),
        "fitted_on": f"training people with >= {rule_horizon} days logged, their first {rule_horizon}",
        "prior": {name: {"share_above_0.2": float(w[GRID > 0.2].sum()), "share_at_0": float(w[GRID == 0].sum()), "mean": float(w @ GRID)} for name, w in zip(TRIGGER_NAMES, weights)},
        "by_delta": {},
    }
    held: dict[int, tuple[MapRows, np.ndarray]] = {}
    for horizon in tqdm([int(h) for h in pc["horizons"]], desc="horizons"):
        at = reached(held_out, horizon)
        held[horizon] = (at, profile_log_lik(at, prior))
    for delta in deltas:
        results["by_delta"][str(delta)] = {
            str(h): score(posterior_above(ll, weights, delta), at, cohort.truth_users, int(pc["min_onsets_exposed"])) for h, (at, ll) in held.items()
        }
    out = resolve_path(cfg.paths.data_dir) / "experiments"
    out.mkdir(parents=True, exist_ok=True)
    (out / "trigger_evidence.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "trigger_evidence.png")
    return results


def main(argv: list[str]) -> None:
    configure_entry_point()
    deltas = tuple(float(a) for a in argv) or (0.05, 0.15, 0.25)
    results = run(deltas)
    for delta, by_h in results["by_delta"].items():
        for horizon, scored in by_h.items():
            cells = " | ".join(
                f"p>={thr}: P {c['precision'] if c['precision'] is not None else float('nan'):.2f} R {c['recall']:.3f} n {c['n_called']}"
                for thr, c in scored["calls"].items()
            )
            print(f"delta {delta} {horizon:>3}d ({scored['n_users']} people): {cells}")


if __name__ == "__main__":
    main(sys.argv[1:])
