"""The routing table: which model family and version serves each phase.

Written by :mod:`migrainemamba.release.selection`, checked inside the bento by
:mod:`migrainemamba.release.packaging`, loaded by the service. One definition of its format:

A JSON file (``ROUTING_TABLE_PATH``) with one entry per phase of
``features.PHASES``::

    {
      "1-14":  {"model": "foundation", "version": "3", "path": "foundation/3"},
      "15-30": {"model": "foundation", "version": "3", "path": "foundation/3"},
      "31+":   {"model": "foundation", "version": "3", "path": "foundation/3"}
    }

``path`` is relative to the JSON file's folder (or absolute) and handed to the
loader of the model family ``model`` (:mod:`migrainemamba.models.registry`;
``register_family`` adds one; a loader returns any object with ``predict(ForecastBatch)``). The
same (model, version, path) is loaded once even when it serves several phases.
A table that misses a phase, names an unknown model or a missing path stops
the service with a message saying so.

Without a routing table (tests, the embedded default) every phase is served
by :class:`~migrainemamba.models.baselines.RunningBaseRate`, the person's
running onset rate shrunk toward their self-reported frequency: a real model,
version ``"builtin"``, that gives no per-trigger explanation. Readiness lists
what serves each phase.

"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from migrainemamba.features import PHASES
from migrainemamba.models import registry
from migrainemamba.models.base import ForecastModel
from migrainemamba.models.baselines import RunningBaseRate
from migrainemamba.models.registry import ModelLoader

log = logging.getLogger(__name__)

BUILTIN_VERSION = "builtin"


@dataclass(frozen=True)
class Route:
    phase: str
    model_name: str
    model_version: str
    model: ForecastModel
    path: str | None = None

    @property
    def explains(self) -> bool:
        return callable(getattr(self.model, "explain", None))


def builtin_routes() -> dict[str, Route]:
    model = RunningBaseRate()
    return {phase: Route(phase, model.name, BUILTIN_VERSION, model) for phase in PHASES}


def load_routing_table(
    path: Path, loaders: Mapping[str, ModelLoader] | None = None
) -> dict[str, Route]:
    """Read and load a routing table (format in the module docstring); ``loaders`` defaults to
    every servable family of the registry."""
    known = registry.loaders() if loaders is None else loaders
    if not path.is_file():
        raise FileNotFoundError(
            f"routing table {path} does not exist; write it or unset ROUTING_TABLE_PATH"
        )
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"routing table {path}: not valid JSON ({exc})") from exc
    if not isinstance(table, dict):
        raise ValueError(f"routing table {path}: expected an object {{phase: entry}}")  # noqa: TRY004
    missing = [p for p in PHASES if p not in table]
    unknown = sorted(set(table) - set(PHASES))
    if missing or unknown:
        raise ValueError(
            f"routing table {path}: phases missing {missing}, unknown {unknown}; phases are {list(PHASES)}"
        )
    loaded: dict[tuple[str, str, str | None], ForecastModel] = {}
    routes = {}
    for phase in PHASES:
        entry = table[phase]
        if not isinstance(entry, dict) or not {"model", "version"} <= set(entry):
            raise ValueError(
                f"routing table {path}: phase {phase!r} needs {{'model', 'version'[, 'path']}}, got {entry!r}"
            )
        name, version, rel = str(entry["model"]), str(entry["version"]), entry.get("path")
        if name not in known:
            raise ValueError(
                f"routing table {path}: phase {phase!r}: no loader for model {name!r}; known: {sorted(known)}"
            )
        model_path = None if rel is None else (path.parent / rel).resolve()
        key = (name, version, None if model_path is None else str(model_path))
        if key not in loaded:
            loaded[key] = known[name](model_path)
            log.info("routing: loaded %s version %s from %s", name, version, model_path)
        routes[phase] = Route(phase, name, version, loaded[key], key[2])
    return routes
