"""Typed view of ``configs/data/synthetic.yaml``."""

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
    medications: dict[str, Any] = field(default_factory=dict)  # empty: no medication table

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> SimulatorConfig:
        """Build from the plain dict of the Hydra `data` group (source: synthetic)."""
        triggers = tuple(
            TriggerSpec(name=name, **{k: spec[k] for k in TriggerSpec.__dataclass_fields__ if k != "name"})
            for name, spec in cfg["triggers"].items()
        )
        unknown_timing = [t.name for t in triggers if t.timing not in ("known", "same_day")]
        if unknown_timing:
            raise ValueError(f"triggers {unknown_timing}: timing must be 'known' or 'same_day'")
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
            medications=dict(cfg.get("medications") or {}),
        )

    def trigger(self, name: str) -> TriggerSpec:
        return next(t for t in self.triggers if t.name == name)
