"""Typed view of ``configs/data/synthetic.yaml`` and its scenario (``configs/data/scenario/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class TriggerSpec:
    name: str
    definition: str
    timing: Literal["known", "same_day"]
    log_or: float
    sd: float
    prevalence: float
    source: str
    # A trigger that acts only when all these other exposures are present (an
    # interaction); its indicator is their logical AND. Empty: an exposure of its own.
    all_of: tuple[str, ...] = ()
    # Person-specific lag: each sensitive person's indicator is shifted further into
    # the past by one of these many days (drawn with `extra_lag_probs`).
    extra_lag_days: tuple[int, ...] = ()
    extra_lag_probs: tuple[float, ...] = ()


_TRIGGER_REQUIRED = ("definition", "timing", "log_or", "sd", "prevalence", "source")


@dataclass(frozen=True)
class DriftSpec:
    """Slowly drifting personal susceptibility: a stationary AR(1) added to the baseline log-odds."""

    sd: float  # stationary sd in log-odds
    rho: float  # day-to-day autocorrelation (time constant 1 / (1 - rho) days)


@dataclass(frozen=True)
class RefractorySpec:
    """Onset log-odds lowered after an attack, decaying with the days since its last day."""

    share: float  # share of people with a refractory period
    log_or: float  # mean log-odds the day after an attack ends (negative)
    sd: float
    decay_days: float


@dataclass(frozen=True)
class ReverseCausationSpec:
    """Exposures react to attacks: less alcohol and more sleep in the days after one."""

    window_days: int  # days after the last attack day on which the person is careful
    alcohol_abstain_prob: float  # P(no alcohol at all) on such a day
    extra_sleep_hours: float  # added to the night after each such day (and after the attack day)
    extra_sleep_prob: float


@dataclass(frozen=True)
class ReportingSpec:
    """Outcome-dependent diary gaps and under-reporting (the diary only: the truth is unchanged)."""

    attack_day_skip_prob: float  # an attack day goes unlogged with this extra probability
    attack_recorded_as_none_prob: float  # a logged attack day is recorded as "no migraine"


@dataclass(frozen=True)
class ScenarioSpec:
    name: str = "default"
    rationale: str = ""
    drift: DriftSpec | None = None
    refractory: RefractorySpec | None = None
    reverse_causation: ReverseCausationSpec | None = None
    reporting: ReportingSpec | None = None

    @classmethod
    def from_dict(cls, cfg: dict[str, Any] | ScenarioSpec | None) -> ScenarioSpec:
        if isinstance(cfg, ScenarioSpec):
            return cfg
        if not cfg:
            return cls()
        parts = {"drift": DriftSpec, "refractory": RefractorySpec,
                 "reverse_causation": ReverseCausationSpec, "reporting": ReportingSpec}
        unknown = set(cfg) - set(parts) - {"name", "rationale"}
        if unknown:
            raise ValueError(f"data.scenario: unknown keys {sorted(unknown)}; expected {sorted(parts)}")
        built = {}
        for key, spec_cls in parts.items():
            raw = cfg.get(key)
            if raw is None:
                continue
            try:
                built[key] = spec_cls(**raw)
            except TypeError as exc:
                raise ValueError(f"data.scenario.{key}: {exc}") from exc
        return cls(name=str(cfg.get("name", "default")), rationale=str(cfg.get("rationale", "")), **built)


def _trigger(name: str, spec: dict[str, Any]) -> TriggerSpec:
    missing = [k for k in _TRIGGER_REQUIRED if k not in spec]
    if missing:
        raise ValueError(f"triggers.{name}: missing {missing}")
    lags = tuple(int(v) for v in spec.get("extra_lag_days") or ())
    probs = tuple(float(v) for v in spec.get("extra_lag_probs") or ())
    if len(lags) != len(probs) or (probs and abs(sum(probs) - 1.0) > 1e-6) or any(v < 0 for v in lags):
        raise ValueError(f"triggers.{name}: extra_lag_days and extra_lag_probs must pair up, "
                         f"lags >= 0, probabilities summing to 1 (got {lags}, {probs})")
    return TriggerSpec(name=name, **{k: spec[k] for k in _TRIGGER_REQUIRED},
                       all_of=tuple(spec.get("all_of") or ()), extra_lag_days=lags, extra_lag_probs=probs)


@dataclass(frozen=True)
class SimulatorConfig:
    seed: int
    n_users: int
    n_days: int
    start_date: str
    enrol_window_days: int
    people: dict[str, Any]
    frequency: dict[str, Any]
    prodrome: dict[str, Any]
    triggers: tuple[TriggerSpec, ...]
    diary: dict[str, Any]
    scenario: ScenarioSpec = field(default_factory=ScenarioSpec)
    medications: dict[str, Any] = field(default_factory=dict)  # empty: no medication table

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> SimulatorConfig:
        """Build from the plain dict of the Hydra `data` group (source: synthetic).

        A trigger set to null (``triggers.heavy_alcohol: null`` in a scenario) is left out.
        """
        triggers = tuple(_trigger(name, spec) for name, spec in cfg["triggers"].items() if spec is not None)
        unknown_timing = [t.name for t in triggers if t.timing not in ("known", "same_day")]
        if unknown_timing:
            raise ValueError(f"triggers {unknown_timing}: timing must be 'known' or 'same_day'")
        # the oracle marginalises same-day triggers one by one: composites and lags must be known
        bad = [t.name for t in triggers if t.timing == "same_day" and (t.all_of or t.extra_lag_days)]
        if bad:
            raise ValueError(f"triggers {bad}: all_of / extra_lag_days need timing 'known'")
        shares = sum(b["share"] for b in cfg["frequency"]["bands"])
        if abs(shares - 1.0) > 0.02:
            raise ValueError(f"frequency.bands: shares sum to {shares:.3f}, expected 1")
        return cls(
            seed=int(cfg["seed"]),
            n_users=int(cfg["n_users"]),
            n_days=int(cfg["n_days"]),
            start_date=str(cfg["start_date"]),
            enrol_window_days=int(cfg["enrol_window_days"]),
            people=dict(cfg["people"]),
            frequency=dict(cfg["frequency"]),
            prodrome=dict(cfg["prodrome"]),
            triggers=triggers,
            diary=dict(cfg["diary"]),
            scenario=ScenarioSpec.from_dict(cfg.get("scenario")),
            medications=dict(cfg.get("medications") or {}),
        )

    def trigger(self, name: str) -> TriggerSpec:
        return next(t for t in self.triggers if t.name == name)
