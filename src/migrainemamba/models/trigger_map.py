"""Each person's trigger map: per trigger, log OR with an interval, the evidence, a class.

Retrospective: the map as of day ``h`` of a person's diary uses their labelled days among
the first ``h`` logged days, with the exposures of ``features.retrospective`` (which may
read the onset day's own day fields). Two methods, one output schema:

- ``personal``: a Bayesian logistic regression per person over all triggers together
  (their own level plus one log OR per trigger), Gaussian prior whose centre and spread per
  trigger are estimated across the training cohort by empirical Bayes; Laplace posterior:
  the interval is mean +- z sd.
- ``n_of_1``: each trigger tested alone per person (as N1-Headache does): the 2x2 table
  exposed / not exposed x onset / no onset, log OR with the Haldane correction (0.5 per
  cell) and the Wald interval mean +- z se.

Class rule (the same for both; docs/architecture.md): ``trigger`` when the interval lies
above 0 and at least ``min_onsets_exposed`` onsets followed exposure; ``protective`` when it
lies below 0 with at least ``min_exposed`` exposed days; ``no_association`` when it lies
within +-log(``no_association_or``) (rules out that strong an effect either way);
otherwise ``not_enough_data``. Its false-"trigger" rate is measured on the simulator
(``evaluation.trigger_recovery``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import polars as pl

from migrainemamba.features.retrospective import TRIGGER_NAMES, retrospective_exposures
from migrainemamba.models.bayes_logistic import Rows, empirical_bayes, fit_laplace

log = logging.getLogger(__name__)

CLASSES = ("trigger", "protective", "no_association", "not_enough_data")
MAP_FILE = "trigger_map.json"  # in the personal model's folder: the map prior and class rule it serves
MAP_COLUMNS = ("user_id", "horizon_days", "method", "trigger", "log_or", "lo", "hi", "n_exposed", "n_onsets_exposed", "class")
RATE_CLIP = (1e-3, 0.9)


@dataclass
class ClassRule:
    z: float = 1.0  # chosen on training people: precision and false-'trigger' rate targets at 90 days (see the stage)
    min_onsets_exposed: int = 2
    min_exposed: int = 5
    no_association_or: float = 2.0

    def classify(self, frame: pl.DataFrame) -> pl.DataFrame:
        bound = float(np.log(self.no_association_or))
        return frame.with_columns(
            pl.when((pl.col("lo") > 0) & (pl.col("n_onsets_exposed") >= self.min_onsets_exposed))
            .then(pl.lit("trigger"))
            .when((pl.col("hi") < 0) & (pl.col("n_exposed") >= self.min_exposed))
            .then(pl.lit("protective"))
            .when((pl.col("lo") > -bound) & (pl.col("hi") < bound) & (pl.col("n_exposed") >= self.min_exposed))
            .then(pl.lit("no_association"))
            .otherwise(pl.lit("not_enough_data"))
            .alias("class")
        )


@dataclass
class MapRows:
    """Labelled rows of many people for the map: exposures (n, T), onset, person, days logged before."""

    user_ids: np.ndarray
    group: np.ndarray
    exposures: np.ndarray
    y: np.ndarray
    days_logged_before: np.ndarray
    level_offset: np.ndarray  # (U,) logit of the person's self-reported rate (the start of their level)

    @classmethod
    def build(cls, features: pl.DataFrame, daily_logs: pl.DataFrame) -> MapRows:
        labelled = features.filter(pl.col("onset").is_not_null()).sort("user_id", "date")
        expo = retrospective_exposures(labelled, daily_logs)
        users, group = np.unique(labelled["user_id"].to_numpy(), return_inverse=True)
        first_rate = (
            labelled.group_by("user_id", maintain_order=True).agg(pl.col("personal_baseline_rate").first())["personal_baseline_rate"].to_numpy()
        )
        rate = np.clip(first_rate, *RATE_CLIP)
        return cls(
            users,
            group,
            expo.select(TRIGGER_NAMES).to_numpy(),
            labelled["onset"].cast(pl.Float64).to_numpy(),
            labelled["days_logged_before"].to_numpy(),
            np.log(rate) - np.log1p(-rate),
        )

    def upto(self, horizon: int, users: np.ndarray | None = None) -> MapRows:
        """Rows among each person's first ``horizon`` logged days (optionally only ``users``)."""
        keep = self.days_logged_before < horizon
        if users is not None:
            keep &= np.isin(self.group, np.flatnonzero(np.isin(self.user_ids, users)))
        kept_users, group = np.unique(self.group[keep], return_inverse=True)
        return MapRows(
            self.user_ids[kept_users], group, self.exposures[keep], self.y[keep], self.days_logged_before[keep], self.level_offset[kept_users]
        )

    def design_rows(self) -> Rows:
        x = np.hstack([np.ones((len(self.y), 1)), self.exposures])
        return Rows(x, self.level_offset[self.group], self.y, self.group, len(self.user_ids))

    def evidence(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per person and trigger: exposed days, onsets after exposure, unexposed days, onsets unexposed."""
        n = len(self.user_ids)

        def per_user(values: np.ndarray) -> np.ndarray:
            return np.stack([np.bincount(self.group, values[:, j], n) for j in range(values.shape[1])], axis=1)

        exposed = per_user(self.exposures)
        onsets_exposed = per_user(self.exposures * self.y[:, None])
        days = np.bincount(self.group, minlength=n)[:, None]
        onsets = np.bincount(self.group, self.y, n)[:, None]
        return exposed, onsets_exposed, days - exposed, onsets - onsets_exposed


@dataclass
class MapPrior:
    """The personal map's prior, estimated on the training cohort: level first, then TRIGGER_NAMES."""

    mean: np.ndarray
    var: np.ndarray

    def as_dict(self) -> dict[str, dict[str, float]]:
        names = ("level", *TRIGGER_NAMES)
        return {n: {"mean": float(m), "sd": float(np.sqrt(v))} for n, m, v in zip(names, self.mean, self.var)}


def save_map_setup(directory: str | Path, prior: MapPrior, rule: ClassRule) -> Path:
    """The map's prior and class rule, stored beside the personal model (the service reads them)."""
    path = Path(directory) / MAP_FILE
    names = ["level", *TRIGGER_NAMES]
    payload = {
        "terms": names,
        "mean": [float(v) for v in prior.mean],
        "var": [float(v) for v in prior.var],
        "rule": {f.name: getattr(rule, f.name) for f in fields(rule)},
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def load_map_setup(directory: str | Path) -> tuple[MapPrior, ClassRule] | None:
    """:func:`save_map_setup`'s prior and rule, or None when the folder has none."""
    path = Path(directory) / MAP_FILE
    if not path.is_file():
        return None
    payload = json.loads(path.read_text())
    if payload["terms"] != ["level", *TRIGGER_NAMES]:
        raise ValueError(f"{path}: map terms {payload['terms']} are not this code's level + {list(TRIGGER_NAMES)}")
    return MapPrior(np.array(payload["mean"], float), np.array(payload["var"], float)), ClassRule(**payload["rule"])


def estimate_map_prior(train: MapRows, centre: str = "population", init_sd: float = 0.3, max_iter: int = 60) -> MapPrior:
    """Empirical Bayes on the training cohort: the spread of each trigger's log OR across
    people, and (``centre="population"``) its cohort mean; ``"zero"`` keeps the centre at no effect."""
    if centre not in ("population", "zero"):
        raise ValueError(f"trigger_map.centre must be 'population' or 'zero', got {centre!r}")
    k = 1 + len(TRIGGER_NAMES)
    estimate = np.ones(k, bool) if centre == "population" else np.r_[True, np.zeros(k - 1, bool)]
    eb = empirical_bayes(train.design_rows(), np.zeros(k), np.full(k, init_sd**2), max_iter=max_iter, estimate_mean=estimate)
    return MapPrior(eb.prior_mean, eb.prior_var)


def _frame(rows: MapRows, horizon: int, method: str, log_or: np.ndarray, sd: np.ndarray, z: float) -> pl.DataFrame:
    exposed, onsets_exposed, _, _ = rows.evidence()
    n_users, n_trig = log_or.shape
    return pl.DataFrame(
        {
            "user_id": np.repeat(rows.user_ids.astype(str), n_trig),
            "horizon_days": np.full(n_users * n_trig, horizon, dtype=np.int64),
            "method": [method] * (n_users * n_trig),
            "trigger": np.tile(np.array(TRIGGER_NAMES), n_users),
            "log_or": log_or.ravel(),
            "lo": (log_or - z * sd).ravel(),
            "hi": (log_or + z * sd).ravel(),
            "n_exposed": exposed.ravel().astype(np.int64),
            "n_onsets_exposed": onsets_exposed.ravel().astype(np.int64),
        }
    )


def personal_map(rows: MapRows, prior: MapPrior, horizon: int, rule: ClassRule) -> pl.DataFrame:
    post = fit_laplace(rows.design_rows(), prior.mean, prior.var)
    return rule.classify(_frame(rows, horizon, "personal", post.mean[:, 1:], post.sd()[:, 1:], rule.z))


def n_of_1_map(rows: MapRows, horizon: int, rule: ClassRule) -> pl.DataFrame:
    exposed, onsets_exposed, unexposed, onsets_unexposed = rows.evidence()
    # Haldane: 0.5 added to every cell of the 2x2 table
    a, b = onsets_exposed + 0.5, exposed - onsets_exposed + 0.5
    c, d = onsets_unexposed + 0.5, unexposed - onsets_unexposed + 0.5
    log_or = np.log(a) + np.log(d) - np.log(b) - np.log(c)
    se = np.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
    return rule.classify(_frame(rows, horizon, "n_of_1", log_or, se, rule.z))


def trigger_maps(rows: MapRows, prior: MapPrior, horizons: tuple[int, ...], rule: ClassRule, logged_days: dict[str, int]) -> pl.DataFrame:
    """Both methods' maps at each horizon, for people who logged at least that many days."""
    frames = []
    for horizon in horizons:
        reached = np.array([u for u in rows.user_ids if logged_days.get(str(u), 0) >= horizon])
        if len(reached) == 0:
            continue
        at = rows.upto(horizon, reached)
        frames += [personal_map(at, prior, horizon, rule), n_of_1_map(at, horizon, rule)]
    if not frames:
        return pl.DataFrame(schema={c: pl.String for c in MAP_COLUMNS})
    return pl.concat(frames).select(MAP_COLUMNS)
