"""The trigger-evidence experiment's estimators: profile likelihood, NPMLE, posterior tail."""

import numpy as np

from migrainemamba.experiments.trigger_evidence import GRID, npmle, posterior_above, profile_log_lik
from migrainemamba.features.retrospective import TRIGGER_NAMES
from migrainemamba.models.bayes_logistic import fit_laplace
from migrainemamba.models.trigger_map import MapPrior, MapRows


def _rows(seed: int = 0, n_users: int = 3, n_days: int = 120) -> MapRows:
    rng = np.random.default_rng(seed)
    n_trig = len(TRIGGER_NAMES)
    group = np.repeat(np.arange(n_users), n_days)
    exposures = (rng.random((len(group), n_trig)) < 0.3).astype(float)
    y = (rng.random(len(group)) < 0.1).astype(float)
    return MapRows(np.array([f"u{i}" for i in range(n_users)]), group, exposures, y, np.tile(np.arange(n_days), n_users), np.full(n_users, -2.0))


def test_profile_log_lik_is_the_likelihood_change_of_one_log_or():
    rows = _rows()
    k = 1 + len(TRIGGER_NAMES)
    prior = MapPrior(np.zeros(k), np.full(k, 0.25))
    ll = profile_log_lik(rows, prior)
    assert ll.shape == (3, len(TRIGGER_NAMES), len(GRID))
    # direct: person 1, trigger 4, grid value 0.7 against grid value 0.0 (the mode's other terms cancel)
    design = rows.design_rows()
    post = fit_laplace(design, prior.mean, prior.var)
    mine = design.group == 1
    x, y = design.x[mine], design.y[mine]

    def loglik(b4: float) -> float:
        coef = post.mean[1].copy()
        coef[1 + 4] = b4
        eta = design.offset[mine] + x @ coef
        return float((y * eta - np.logaddexp(0.0, eta)).sum())

    g07, g0 = np.flatnonzero(np.isclose(GRID, 0.7))[0], np.flatnonzero(GRID == 0.0)[0]
    assert np.isclose(ll[1, 4, g07] - ll[1, 4, g0], loglik(0.7) - loglik(0.0), atol=1e-9)


def test_npmle_recovers_a_spike_and_slab_and_the_posterior_separates_people():
    rng = np.random.default_rng(1)
    n = 4000
    slab = rng.random(n) < 0.4
    beta = np.where(slab, 1.0, 0.0)
    estimate = beta + rng.normal(0.0, 0.35, n)
    log_lik = -0.5 * (GRID[None, :] - estimate[:, None]) ** 2 / 0.35**2
    weights = npmle(log_lik)
    assert abs(weights[GRID > 0.5].sum() - 0.4) < 0.05
    assert abs(weights[np.abs(GRID) < 0.25].sum() - 0.6) < 0.05
    p = posterior_above(log_lik[:, None, :], weights[None, :], 0.5)[:, 0]
    called = p >= 0.8
    assert called.sum() > 0.2 * n
    assert slab[called].mean() >= 0.8  # calibrated: calls at P >= 0.8 are true at least 80% of the time


def test_posterior_above_without_evidence_is_the_prior_share():
    weights = np.zeros(len(GRID))
    weights[GRID == 0.0] = 0.7
    weights[np.isclose(GRID, 0.6)] = 0.3
    flat = np.zeros((5, 1, len(GRID)))
    assert np.allclose(posterior_above(flat, weights[None, :], 0.25), 0.3)
