"""The one registry of model families: how each is made ready, for the evaluation and the service.

A family is either *loaded* from the folder its stage saved (``load(path)``; the service's routing
table names the folder) or, for the cheap baselines, *fitted* at evaluation time on the training
split (``fit(train, cfg)``). ``model_dir_key`` names the config key of the folder the pipeline
writes, so the evaluation finds it without knowing each stage. Heavy libraries (lightgbm, torch)
are imported inside the loaders, on use: the service never imports torch unless a torch model is
routed (docs/architecture.md, "Layers").

A new family registers with :func:`register_family` (see docs/architecture.md, "Adding a model
family").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrainemamba.models.base import ForecastBatch, ForecastModel
from migrainemamba.models.baselines import RunningBaseRate

ModelLoader = Callable[[Path | None], ForecastModel]
ModelFitter = Callable[[ForecastBatch, Any], ForecastModel]


@dataclass(frozen=True)
class ModelFamily:
    name: str
    load: ModelLoader | None = None  # from a saved folder (None: fitted at evaluation time only)
    fit: ModelFitter | None = None  # fitted on the training split, from the composed config
    model_dir_key: str | None = None  # config key of the folder its stage writes
    needs_files: bool = True  # False: the loader builds the model from nothing (base rate)

    @property
    def servable(self) -> bool:
        return self.load is not None


def _needs_path(name: str, path: Path | None) -> Path:
    if path is None:
        raise ValueError(f"model {name!r} needs a 'path' (the folder its stage saved)")
    return path


def _load_base_rate(path: Path | None) -> ForecastModel:
    return RunningBaseRate()


def _load_foundation(path: Path | None) -> ForecastModel:
    from migrainemamba.models.foundation import FoundationModel  # lightgbm, mlflow: on use

    return FoundationModel.load(_needs_path("foundation", path))


def _load_sequence_model(name: str) -> ModelLoader:
    def load(path: Path | None) -> ForecastModel:
        from migrainemamba.models.temporal import TemporalModel  # torch + lightning: on use

        return TemporalModel.load(_needs_path(name, path))

    return load


def _load_personal(path: Path | None) -> ForecastModel:
    from migrainemamba.models.personal import PersonalModel  # lightgbm (its offset): on use

    return PersonalModel.load(_needs_path("personal", path))


def _fit_prior_logistic(train: ForecastBatch, cfg: Any) -> ForecastModel:
    from migrainemamba.config import to_dict
    from migrainemamba.models.prior import PriorLogistic

    model = PriorLogistic(odds_ratios=to_dict(cfg.prior)["odds_ratios"])
    model.fit(train)
    return model


FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        ModelFamily("base_rate", load=_load_base_rate, needs_files=False),
        ModelFamily("prior_logistic", fit=_fit_prior_logistic),
        ModelFamily("foundation", load=_load_foundation, model_dir_key="foundation.model_dir"),
        ModelFamily("temporal", load=_load_sequence_model("temporal"), model_dir_key="temporal.model_dir"),
        ModelFamily("gru", load=_load_sequence_model("gru"), model_dir_key="temporal.gru_dir"),
        ModelFamily("personal", load=_load_personal, model_dir_key="personal.model_dir"),
    )
}


def register_family(family: ModelFamily) -> None:
    """Add (or replace) a family: the evaluation can score it and routing tables can name it."""
    FAMILIES[family.name] = family


def family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise KeyError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def loaders() -> dict[str, ModelLoader]:
    """name -> loader of every family a routing table may name."""
    return {name: f.load for name, f in FAMILIES.items() if f.load is not None}
