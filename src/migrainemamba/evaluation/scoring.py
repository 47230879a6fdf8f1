"""Per-model, per-phase scores with bootstrap 95% intervals over users (docs/architecture.md §4).

Every score is a function of per-user sums (or per-user AUCs), so one bootstrap
replicate is a vector of user weights (how often each user was drawn) and all
replicates are computed at once; only the pooled AUC needs a pass over rows,
done in O(n) on a pre-sorted order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from migrainemamba.metrics import (
    expected_calibration_error,
    per_user_auc,
    pooled_auc,
    uniform_bins,
)

ECE_BINS = 10


@dataclass
class Scored:
    """Forecasts for one model and phase: aligned arrays over scored user-days."""

    user: np.ndarray  # user index 0..n_users-1
    y: np.ndarray  # bool onset
    p: np.ndarray  # forecast
    p_ref: np.ndarray  # reference forecast for Brier skill (running base rate)
    p_oracle: np.ndarray | None = None  # simulator's ceiling, when known
    p_true: np.ndarray | None = None  # simulator's generating probability, when known


def weighted_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray, user: np.ndarray | None = None) -> np.ndarray:
    """ROC AUC for each row of `weights`; ties count one half.

    `weights` is (R, n), one weight per row of `y`, or, with `user` (n,) mapping rows to
    users, (R, n_users), one weight per user (never expanded to (R, n): that is GBs).
    """
    order = np.argsort(p, kind="mergesort")
    ps, ys = p[order], y[order].astype(bool)
    group = np.cumsum(np.r_[True, ps[1:] != ps[:-1]]) - 1
    n_groups = group[-1] + 1
    columns = order if user is None else np.asarray(user)[order]
    out = np.empty(weights.shape[0])
    for r in range(weights.shape[0]):
        w = weights[r, columns]
        neg = np.bincount(group, w * ~ys, n_groups)
        pos = np.bincount(group, w * ys, n_groups)
        below = np.cumsum(neg) - neg
        total = pos.sum() * neg.sum()
        out[r] = ((pos * (below + 0.5 * neg)).sum() / total) if total > 0 else np.nan
    return out


def _per_user_sums(user: np.ndarray, values: np.ndarray, n_users: int) -> np.ndarray:
    return np.bincount(user, values, n_users)


def _bin_sums(user: np.ndarray, p: np.ndarray, y: np.ndarray, n_users: int) -> tuple[np.ndarray, ...]:
    bins = uniform_bins(p, ECE_BINS)
    key = user * ECE_BINS + bins
    size = n_users * ECE_BINS
    shape = (n_users, ECE_BINS)
    return (
        np.bincount(key, minlength=size).reshape(shape).astype(float),
        np.bincount(key, p, size).reshape(shape),
        np.bincount(key, y.astype(float), size).reshape(shape),
    )


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _truth_scores(s: Scored, p: np.ndarray, weights: np.ndarray, n_users: int) -> dict[str, np.ndarray]:
    """Against the simulator's true onset probability (no outcome noise, no selection effect).

    ``within_person_risk_corr``: correlation, pooled over people, of each person's day-to-day
    deviations of the forecast's log-odds and of the true log-odds from their own means: how well
    a forecast tracks which of a person's days are riskier. ``risk_mse``: mean squared error to
    the true probability.
    """
    count = _per_user_sums(s.user, np.ones(len(p)), n_users)
    safe = np.maximum(count, 1)
    lp, lt = _logit(p), _logit(s.p_true)
    lp = lp - (_per_user_sums(s.user, lp, n_users) / safe)[s.user]
    lt = lt - (_per_user_sums(s.user, lt, n_users) / safe)[s.user]
    sxy = weights @ _per_user_sums(s.user, lp * lt, n_users)
    sxx = weights @ _per_user_sums(s.user, lp * lp, n_users)
    syy = weights @ _per_user_sums(s.user, lt * lt, n_users)
    mse = weights @ _per_user_sums(s.user, (p - s.p_true) ** 2, n_users) / (weights @ count)
    return {"within_person_risk_corr": sxy / np.sqrt(np.maximum(sxx * syy, 1e-300)), "risk_mse": mse}


def _scores(s: Scored, p: np.ndarray, weights: np.ndarray, n_users: int) -> dict[str, np.ndarray]:
    """Scores of forecast `p` for each weight vector over users (R, n_users)."""
    y = s.y.astype(float)
    n = weights @ _per_user_sums(s.user, np.ones_like(y), n_users)
    sq = weights @ _per_user_sums(s.user, (p - y) ** 2, n_users)
    sq_ref = weights @ _per_user_sums(s.user, (s.p_ref - y) ** 2, n_users)
    _, sum_p, sum_y = _bin_sums(s.user, p, s.y, n_users)
    ece = np.abs(weights @ sum_p - weights @ sum_y).sum(axis=1) / n
    user_auc = per_user_auc(s.user, s.y, p).sort("user_id")
    auc_by_user = np.full(n_users, np.nan)
    auc_by_user[user_auc["user_id"].to_numpy()] = user_auc["auc"].fill_null(np.nan).to_numpy()
    has = ~np.isnan(auc_by_user)
    wp = (weights[:, has] @ auc_by_user[has]) / np.maximum(weights[:, has].sum(axis=1), 1e-12)
    scores = {
        "auc": weighted_auc(s.y, p, weights, s.user),
        "within_person_auc": wp,
        "brier": sq / n,
        "brier_skill": 1 - sq / sq_ref,
        "ece": ece,
    }
    if s.p_true is not None:
        scores |= _truth_scores(s, p, weights, n_users)
    return scores


def _user_weights(s: Scored, n_boot: int, seed: int) -> tuple[np.ndarray, int]:
    """(1 + n_boot, n_users) weights: all users once (row 0), then ``n_boot`` seeded resamples."""
    n_users = int(s.user.max()) + 1
    rng = np.random.default_rng(seed)
    present = np.unique(s.user)
    draws = rng.choice(present, size=(n_boot, len(present)), replace=True)
    boot = np.stack([np.bincount(d, minlength=n_users) for d in draws]).astype(float)
    full = np.zeros((1, n_users))
    full[0, present] = 1.0
    return np.vstack([full, boot]), n_users


def oracle_replicates(s: Scored, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """The oracle's scores on the days of ``s`` (same resamples as ``bootstrap_replicates``)."""
    if s.p_oracle is None:
        raise ValueError("oracle_replicates: the scored days carry no p_oracle")
    weights, n_users = _user_weights(s, n_boot, seed)
    return {f"oracle_{name}": values for name, values in _scores(s, s.p_oracle, weights, n_users).items()}


def bootstrap_replicates(
    s: Scored, n_boot: int, seed: int, oracle: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Each score on all users (index 0) and on ``n_boot`` resamples of users (1..n_boot).

    The resamples depend only on the set of users and the seed, so models scored on
    the same days share them: differences between models are paired. ``oracle``: the
    oracle's replicates on these same days (``oracle_replicates``), computed once and
    shared by every model scored on them; computed here when omitted.
    """
    weights, n_users = _user_weights(s, n_boot, seed)
    replicates = _scores(s, s.p, weights, n_users)
    if s.p_oracle is not None:
        replicates |= oracle if oracle is not None else oracle_replicates(s, n_boot, seed)
        for name in ("auc", "within_person_auc"):
            replicates[f"lift_captured_{name}"] = (replicates[name] - 0.5) / (replicates[f"oracle_{name}"] - 0.5)
    return replicates


def summarize(replicates: dict[str, np.ndarray]) -> dict[str, float]:
    """Point estimate (index 0) and 95% percentile interval of the resamples."""
    out: dict[str, float] = {}
    for name, values in replicates.items():
        out[name] = float(values[0])
        lo, hi = np.nanpercentile(values[1:], [2.5, 97.5])
        out[f"{name}_lo"], out[f"{name}_hi"] = float(lo), float(hi)
    return out


def is_scorable(s: Scored) -> bool:
    return len(s.y) > 0 and bool(s.y.any()) and not bool(s.y.all())


def score_with_intervals(s: Scored, n_boot: int, seed: int) -> dict[str, float]:
    """Point estimates and 95% percentile intervals (bootstrap over users, seeded)."""
    out: dict[str, float] = {"n_days": float(len(s.y)), "n_onsets": float(s.y.sum()), "n_users": float(len(np.unique(s.user)))}
    if not is_scorable(s):
        return out
    out |= summarize(bootstrap_replicates(s, n_boot, seed))
    # the bootstrap's point estimates equal the plain metrics
    assert abs(out["auc"] - pooled_auc(s.y, s.p)) < 1e-9
    assert abs(out["ece"] - expected_calibration_error(s.y, s.p, n_bins=ECE_BINS)) < 1e-9
    return out


def reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> dict[str, list[float]]:
    """Mean forecast vs observed rate per equal-count bin (rare events need equal counts)."""
    edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    used = [b for b in range(len(edges) - 1) if (idx == b).any()]
    return {
        "forecast": [float(p[idx == b].mean()) for b in used],
        "observed": [float(y[idx == b].mean()) for b in used],
        "count": [float((idx == b).sum()) for b in used],
    }
