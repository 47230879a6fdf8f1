"""Per-person Bayesian logistic regression with an offset, for many people at once.

For person ``u`` and labelled day ``r``::

    logit p_r = offset_r + x_r . b_u,      b_u ~ N(prior_mean, diag(prior_var))

The posterior of each ``b_u`` is approximated by Laplace (mode and inverse
Hessian at the mode). Everything is vectorised over people: rows are a flat
array with a ``group`` index (person), posteriors are ``(U, K)`` means and
``(U, K, K)`` covariances. The same functions serve a cohort (the stage) and a
batch of one (the service), so both compute the same numbers.

Three operations (docs/architecture.md, the personalized model):

- :func:`fit_laplace`: the full refit (Newton-Raphson to the posterior mode).
- :func:`online_update`: one new labelled day, cheap (O(K^2) per person): the
  previous Laplace posterior is the prior and the new day's exact likelihood is
  added; the mode of that surrogate is found by a 1-D Newton solve (it lies on
  the line ``m + c S x``), the covariance by a rank-one (Sherman-Morrison) update.
  It differs from a full refit only by the change of the old days' curvature
  as the mode moves (second order; measured in the tests).
- :func:`empirical_bayes`: the prior variances that maximise the Laplace
  marginal likelihood of a training cohort (MacKay's fixed point), so the
  prior's strength is estimated, not set by hand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

MIN_PRIOR_VAR = 1e-6  # floor: a prior variance of 0 would make the precision infinite
MAX_PRIOR_VAR = 25.0  # ceiling: log-odds deviations beyond +-10 are not plausible


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


@dataclass
class Rows:
    """Labelled rows of many people: design ``x`` (n, K), ``offset`` (n,), 0/1 ``y`` (n,), ``group`` (n,)."""

    x: np.ndarray
    offset: np.ndarray
    y: np.ndarray
    group: np.ndarray  # person index 0..n_groups-1
    n_groups: int

    def __post_init__(self) -> None:
        n = len(self.y)
        if self.x.shape[0] != n or len(self.offset) != n or len(self.group) != n:
            raise ValueError(f"Rows: x {self.x.shape}, offset {len(self.offset)}, group {len(self.group)}, y {n} disagree")

    def subset(self, mask: np.ndarray) -> Rows:
        return Rows(self.x[mask], self.offset[mask], self.y[mask], self.group[mask], self.n_groups)


@dataclass
class Posterior:
    """Gaussian posteriors of ``U`` people: ``mean`` (U, K), ``cov`` (U, K, K)."""

    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def prior(cls, n_groups: int, prior_mean: np.ndarray, prior_var: np.ndarray) -> Posterior:
        return cls(
            np.tile(np.asarray(prior_mean, float), (n_groups, 1)),
            np.tile(np.diag(np.asarray(prior_var, float)), (n_groups, 1, 1)),
        )

    def take(self, index: np.ndarray) -> Posterior:
        return Posterior(self.mean[index].copy(), self.cov[index].copy())

    def put(self, index: np.ndarray, other: Posterior) -> None:
        self.mean[index] = other.mean
        self.cov[index] = other.cov

    def sd(self) -> np.ndarray:
        return np.sqrt(np.maximum(np.diagonal(self.cov, axis1=1, axis2=2), 0.0))


def _group_matrix(group: np.ndarray, n_groups: int) -> sp.csr_matrix:
    n = len(group)
    return sp.csr_matrix((np.ones(n), (group, np.arange(n))), shape=(n_groups, n))


def data_terms(rows: Rows, mean: np.ndarray, members: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per person at ``mean``: log likelihood (U,), gradient (U, K) and Hessian (U, K, K) of -log lik."""
    eta = rows.offset + np.einsum("rk,rk->r", rows.x, mean[rows.group])
    p = sigmoid(eta)
    w = p * (1.0 - p)
    # log sigmoid(+-eta), stable
    loglik = rows.y * eta - np.logaddexp(0.0, eta)
    if rows.n_groups == 1:  # one person (the service): dense products, no sparse overhead
        return (
            np.array([loglik.sum()]),
            (rows.x.T @ (p - rows.y))[None, :],
            (rows.x.T @ (rows.x * w[:, None]))[None, :, :],
        )
    g = members if members is not None else _group_matrix(rows.group, rows.n_groups)
    ll = np.asarray(g @ loglik).ravel()
    grad = np.asarray(g @ (rows.x * (p - rows.y)[:, None]))
    k = rows.x.shape[1]
    hess = np.empty((rows.n_groups, k, k))
    for j in range(k):
        # only rows where x_j != 0 contribute to row j of the Hessian (indicators are sparse)
        nz = np.flatnonzero(rows.x[:, j])
        if len(nz) == len(rows.y):
            hess[:, j, :] = np.asarray(g @ (rows.x * (w * rows.x[:, j])[:, None]))
        else:
            part = sp.csr_matrix((np.ones(len(nz)), (rows.group[nz], np.arange(len(nz)))), shape=(rows.n_groups, len(nz)))
            hess[:, j, :] = np.asarray(part @ (rows.x[nz] * (w[nz] * rows.x[nz, j])[:, None]))
    return ll, grad, hess


def fit_laplace(
    rows: Rows,
    prior_mean: np.ndarray,
    prior_var: np.ndarray,
    init: np.ndarray | None = None,
    max_iter: int = 50,
    tol: float = 1e-9,
) -> Posterior:
    """Laplace posterior of every person (people without rows get the prior).

    Newton-Raphson on the log posterior, from ``init`` (U, K) or the prior mean;
    stops when no coordinate moves by more than ``tol``.
    """
    prior_mean = np.broadcast_to(np.asarray(prior_mean, float), (rows.n_groups, len(prior_var)))
    precision = 1.0 / np.clip(np.asarray(prior_var, float), MIN_PRIOR_VAR, None)
    mean = np.array(init if init is not None else prior_mean, dtype=float, copy=True)
    members = _group_matrix(rows.group, rows.n_groups)
    eye = np.eye(len(precision))
    for iteration in range(max_iter):
        _, grad, hess = data_terms(rows, mean, members)
        grad = grad + (mean - prior_mean) * precision
        hess = hess + eye * precision
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        mean = mean - step
        if np.max(np.abs(step), initial=0.0) < tol:
            break
    else:
        log.warning("fit_laplace: %d Newton steps without convergence (last max step %.2e)", max_iter, np.abs(step).max())
    _, _, hess = data_terms(rows, mean, members)
    cov = np.linalg.inv(hess + eye * precision)
    return Posterior(mean, 0.5 * (cov + np.swapaxes(cov, 1, 2)))


def online_update(post: Posterior, x: np.ndarray, offset: np.ndarray, y: np.ndarray, n_newton: int = 8) -> Posterior:
    """Posterior of each person after one more labelled day (x (U, K), offset (U,), y (U,)).

    The previous posterior N(m, S) is the prior; the new day's likelihood is exact.
    The mode is m + c S x with scalar c solving c = y - sigmoid(offset + x.m + v c),
    v = x' S x (1-D Newton, monotone); the covariance is the rank-one update with the
    curvature at that mode.
    """
    sx = np.einsum("ukl,ul->uk", post.cov, x)
    v = np.einsum("uk,uk->u", x, sx)
    eta0 = offset + np.einsum("uk,uk->u", x, post.mean)
    c = np.zeros_like(v)
    for _ in range(n_newton):
        p = sigmoid(eta0 + v * c)
        f = c - (y - p)
        c = c - f / (1.0 + v * p * (1.0 - p))
    p = sigmoid(eta0 + v * c)
    w = p * (1.0 - p)
    mean = post.mean + c[:, None] * sx
    cov = post.cov - (w / (1.0 + w * v))[:, None, None] * sx[:, :, None] * sx[:, None, :]
    return Posterior(mean, cov)


def predictive_logit(post: Posterior, x: np.ndarray, offset: np.ndarray, moderated: bool) -> np.ndarray:
    """Forecast log-odds: plug-in ``offset + x.m``, or MacKay's moderated form that
    approximates E[sigmoid] over the posterior, (offset + x.m) / sqrt(1 + pi v / 8)."""
    eta = offset + np.einsum("uk,uk->u", x, post.mean)
    if not moderated:
        return eta
    v = np.einsum("uk,ukl,ul->u", x, post.cov, x)
    return eta / np.sqrt(1.0 + np.pi * v / 8.0)


def log_evidence(rows: Rows, post: Posterior, prior_mean: np.ndarray, prior_var: np.ndarray) -> float:
    """Laplace approximation of the log marginal likelihood, summed over people with rows."""
    ll, _, _ = data_terms(rows, post.mean)
    var = np.clip(np.asarray(prior_var, float), MIN_PRIOR_VAR, None)
    dev = post.mean - prior_mean
    log_prior = -0.5 * (dev**2 / var).sum(axis=1) - 0.5 * np.log(var).sum()
    _, logdet_cov = np.linalg.slogdet(post.cov)
    has = np.bincount(rows.group, minlength=rows.n_groups) > 0
    return float((ll + log_prior + 0.5 * logdet_cov)[has].sum())


@dataclass
class EmpiricalBayes:
    prior_mean: np.ndarray
    prior_var: np.ndarray
    iterations: int
    log_evidence: list[float]


def empirical_bayes(
    rows: Rows,
    prior_mean: np.ndarray,
    init_var: np.ndarray,
    max_iter: int = 60,
    rtol: float = 1e-3,
    estimate_mean: np.ndarray | None = None,
    negligible_var: float = 1e-4,
) -> EmpiricalBayes:
    """Prior variances (and, where ``estimate_mean``, means) maximising the cohort's Laplace
    marginal likelihood (MacKay's fixed point).

    With gamma_uk = 1 - S_ukk / tau_k^2 (how much person u's data determine b_uk),
    tau_k^2 <- sum_u (m_uk - mu_k)^2 / sum_u gamma_uk, iterated with warm-started refits;
    an estimated mean is the average posterior mean. Only people with rows count. Stops when
    no variance above ``negligible_var`` (sd 0.01: no practical spread) changes by more than
    ``rtol`` (relative); variances heading to 0 converge only slowly and do not matter.
    """
    has = np.bincount(rows.group, minlength=rows.n_groups) > 0
    var = np.asarray(init_var, float).copy()
    prior_mean = np.asarray(prior_mean, float).copy()
    free_mean = np.zeros(len(var), bool) if estimate_mean is None else np.asarray(estimate_mean, bool)
    mean = None
    trace: list[float] = []
    for iteration in range(1, max_iter + 1):
        post = fit_laplace(rows, prior_mean, var, init=mean, tol=1e-7)
        mean = post.mean
        trace.append(log_evidence(rows, post, prior_mean, var))
        prior_mean = np.where(free_mean, post.mean[has].mean(axis=0), prior_mean)
        dev2 = ((post.mean - prior_mean) ** 2)[has].sum(axis=0)
        gamma = (1.0 - np.diagonal(post.cov, axis1=1, axis2=2)[has] / var).sum(axis=0)
        new = np.clip(dev2 / np.maximum(gamma, 1e-9), MIN_PRIOR_VAR, MAX_PRIOR_VAR)
        relevant = np.maximum(new, var) > negligible_var
        change = np.max(np.abs(np.log(new) - np.log(var))[relevant], initial=0.0)
        var = new
        if change < rtol:
            break
    log.info("empirical Bayes: prior sd %s after %d iterations (log evidence %.1f)", np.round(np.sqrt(var), 3), iteration, trace[-1])
    return EmpiricalBayes(prior_mean, var, iteration, trace)
