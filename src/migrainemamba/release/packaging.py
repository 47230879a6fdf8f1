"""Packaging for the ``package`` stage: champions -> routing table -> BentoML model store -> bento.

1. :mod:`migrainemamba.release.selection` picks a champion per phase, sets the MLflow
   ``champion`` aliases and writes ``data/serving/`` (``routing.json`` with the
   champions' folders copied beside it, ``selection.json``). The development
   server reads that routing table (README, "Serving").
2. Each champion with files is imported into the BentoML model store
   (``BENTOML_HOME``, default ``<repo>/bentoml_home``, gitignored) as
   ``<registered model name>:<registry version>``, e.g.
   ``migrainemamba-foundation:5``, its folder under the model's ``<family>/``,
   labelled with its MLflow model URI, run and tree hash. The built-in base rate
   has no files and is not imported.
3. ``routing.bento.json``: the same routes with paths into the bento's own
   ``models/`` folder (relative to the table, so they hold wherever the bento is
   unpacked); the bento's ``ROUTING_TABLE_PATH`` points at it (bentofile.yaml).
4. The bento is built offline (``lock_packages: false``) from ``bentofile.yaml``
   with the champions added to its ``models``, in a staging folder holding
   exactly the files the bentofile includes (the package sources, README, the
   two JSON files above), whatever else lies in the working tree. The build
   also generates the bento's Dockerfile (``env/docker/Dockerfile``).
5. The built bento is checked: its routing table loads from inside the bento,
   each model's files hash as the evaluated ones, the Dockerfile exists.

``metrics/package.json`` gets the bento tag, path and size, the models and the
route per phase.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from migrainemamba.features import PHASES
from migrainemamba.release.routing import load_routing_table
from migrainemamba.release.selection import (
    SELECTION_FILE,
    ModelRef,
    Selection,
    tree_sha256,
)

log = logging.getLogger(__name__)

STAGE = "package"
BENTO_ROUTING_FILE = "routing.bento.json"
# where the bento routing table sits inside the bento's src/ (bentofile.yaml `include`)
BENTO_ROUTING_RELPATH = Path("data/serving") / BENTO_ROUTING_FILE
BENTO_SERVING_FILES = (BENTO_ROUTING_FILE, SELECTION_FILE)
DOCKERFILE = Path("env/docker/Dockerfile")
IMAGE_BENTO_PATH = "/home/bentoml/bento"  # BentoML's BENTO_PATH inside the image
# never walked when staging the build context (large, or not source): top-level folders of the
# repository, and folder names anywhere (hidden folders are skipped too)
_SKIP_TOP = {"data", "bentoml_home", "mlartifacts", "mlruns", "venv"}
_SKIP_ANY = {"__pycache__", "node_modules"}


# ------------------------------------------------------------- BentoML home


def use_bentoml_home(path: Path) -> Path:
    """Point BentoML at ``path`` (must happen before BentoML first resolves its home)."""
    home = Path(path).resolve()
    os.environ["BENTOML_HOME"] = str(home)
    if "bentoml" in sys.modules:
        from bentoml._internal.configuration.containers import BentoMLContainer

        current = Path(BentoMLContainer.bentoml_home.get()).resolve()
        if current != home:
            raise RuntimeError(
                f"BentoML already uses {current} as its home in this process; package in a fresh "
                f"process (python pipelines/package.py) or set BENTOML_HOME={home} before starting"
            )
    home.mkdir(parents=True, exist_ok=True)
    return home


# ------------------------------------------------------------- model store


def bento_model_name(ref: ModelRef) -> str:
    return ref.registered_model_name or f"migrainemamba-{ref.name}"


def bento_model_tag(ref: ModelRef) -> str:
    return f"{bento_model_name(ref)}:{ref.version}"


def import_champion(ref: ModelRef, phases: Sequence[str]) -> str:
    """Copy a champion's folder into the BentoML model store (idempotent); returns its tag."""
    import bentoml
    from bentoml.exceptions import NotFound

    assert ref.model_dir is not None and ref.sha256 is not None
    tag = bento_model_tag(ref)
    try:
        existing = bentoml.models.get(tag)
    except NotFound:
        existing = None
    if existing is not None:
        if existing.info.labels.get("sha256") != ref.sha256:
            raise ValueError(
                f"BentoML model {tag} is already in the store with other files; "
                f"remove it (bentoml models delete {tag}) or retrain under a new version"
            )
        log.info("model store: %s already imported", tag)
        return tag
    labels = {
        "family": ref.name,
        "sha256": ref.sha256,
        "phases": ",".join(phases),
        "mlflow_model_uri": ref.model_uri or "",
        "mlflow_run_id": ref.run_id or "",
    }
    with bentoml.models.create(
        tag, labels=labels, metadata={"source": str(ref.model_dir)}
    ) as model:
        shutil.copytree(
            ref.model_dir, Path(model.path) / ref.name, ignore=shutil.ignore_patterns("__pycache__")
        )
    log.info("model store: imported %s from %s", tag, ref.model_dir)
    return tag


def bento_routing_table(table: Mapping[str, Any], routes: Mapping[str, ModelRef]) -> dict[str, Any]:
    """The routing table as the bento holds it: paths into ``<bento>/models/<name>/<version>/<family>``."""
    up = "../" * (
        len(BENTO_ROUTING_RELPATH.parent.parts) + 1
    )  # from src/data/serving to the bento root
    out: dict[str, Any] = {}
    for phase in PHASES:
        entry = dict(table[phase])
        ref = routes[phase]
        if not ref.builtin:
            entry["path"] = f"{up}models/{bento_model_name(ref)}/{ref.version}/{ref.name}"
        out[phase] = entry
    return out


# ------------------------------------------------------------------- build


def read_bentofile(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"bentofile {path} not found (serve.bentofile)")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or not config.get("service"):
        raise ValueError(f"bentofile {path}: expected a mapping with a 'service' entry")
    return config


def _matching_files(root: Path, include: Sequence[str], exclude: Sequence[str]) -> list[Path]:
    import pathspec

    inc = pathspec.PathSpec.from_lines("gitwildmatch", include)
    exc = pathspec.PathSpec.from_lines("gitwildmatch", exclude)
    found = []
    for folder, dirs, files in os.walk(root):
        top = Path(folder) == root
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in _SKIP_ANY and not d.startswith(".") and not (top and d in _SKIP_TOP)
        )
        for name in sorted(files):
            rel = (Path(folder) / name).relative_to(root).as_posix()
            if inc.match_file(rel) and not exc.match_file(rel):
                found.append(Path(rel))
    return found


def stage_build_context(
    staging: Path,
    source_root: Path,
    bentofile: Mapping[str, Any],
    serving_files: Mapping[str, Path],
) -> Path:
    """A fresh folder with the bentofile and exactly the files it includes.

    Sources come from ``source_root`` (``data/`` is never taken from there);
    ``serving_files`` maps paths inside the bento's src (e.g.
    ``data/serving/routing.bento.json``) to the files to put there.
    """
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    include = list(bentofile.get("include") or ["**"])
    exclude = list(bentofile.get("exclude") or [])
    for rel in _matching_files(source_root, include, exclude):
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source_root / rel, staging / rel)
    for rel, src in serving_files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, staging / rel)
    (staging / "bentofile.yaml").write_text(yaml.safe_dump(dict(bentofile), sort_keys=False))
    return staging


def build_bento(staging: Path) -> Any:
    """``bentoml build`` of the staged context (offline: the bentofile sets lock_packages false)."""
    import bentoml

    return bentoml.bentos.build_bentofile(str(staging / "bentofile.yaml"), build_ctx=str(staging))


def export_bento(tag: str, out_dir: Path) -> tuple[Path, Path]:
    """``bentoml export``: the archive that travels (models included), and it unpacked beside it.

    The unpacked folder has the layout of ``/home/bentoml/bento`` in the image
    (``bentoml containerize`` assembles the same: the bento plus ``models/``), so
    ``bentoml serve <folder>`` runs what a container would.
    """
    import bentoml

    if out_dir.exists():  # only the latest build's export is kept (every bento stays in the store)
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    archive = Path(bentoml.export_bento(tag, str(out_dir)))
    unpacked = out_dir / archive.name.removesuffix(".bento")
    if unpacked.exists():
        shutil.rmtree(unpacked)
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    return archive, unpacked


def check_bento(bento_dir: Path, routes: Mapping[str, ModelRef]) -> dict[str, Any]:
    """Load an unpacked bento's own routing table from inside it; compare model files; find the Dockerfile."""
    loaded = load_routing_table(bento_dir / "src" / BENTO_ROUTING_RELPATH)
    for phase, route in loaded.items():
        ref = routes[phase]
        if (route.model_name, route.model_version) != (ref.name, ref.version):
            raise RuntimeError(
                f"bento: phase {phase} routes to {route.model_name} {route.model_version}"
            )
        if not ref.builtin and tree_sha256(Path(route.path)) != ref.sha256:  # type: ignore[arg-type]
            raise RuntimeError(
                f"bento: the files of {ref.name}:{ref.version} differ from {ref.model_dir}"
            )
    dockerfile = bento_dir / DOCKERFILE
    if not dockerfile.is_file():
        raise RuntimeError(f"bento: no generated Dockerfile at {dockerfile}")
    expected = f"ROUTING_TABLE_PATH={IMAGE_BENTO_PATH}/src/{BENTO_ROUTING_RELPATH.as_posix()}"
    if expected not in dockerfile.read_text():
        raise RuntimeError(
            f"bento: {dockerfile} does not set {expected} (bentofile.yaml envs must match "
            "where the package stage puts the bento routing table)"
        )
    size = sum(p.stat().st_size for p in bento_dir.rglob("*") if p.is_file())
    return {"dockerfile": str(DOCKERFILE), "bento_size_mb": round(size / 2**20, 3)}


# ------------------------------------------------------------------- stage


def _phases_of(routes: Mapping[str, ModelRef]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for phase in PHASES:
        out.setdefault((routes[phase].name, routes[phase].version), []).append(phase)
    return out


def package(
    selection: Selection,
    serving_dir: Path,
    bentofile_path: Path,
    source_root: Path,
    bentoml_home: Path,
    build: bool = True,
) -> dict[str, Any]:
    """Steps 2-5 of the module docstring for a finished selection; returns the package metrics."""
    routes = selection.routes
    use_bentoml_home(bentoml_home)
    phases = _phases_of(routes)
    models: list[str] = []
    for (name, version), served in phases.items():
        ref = next(r for r in routes.values() if (r.name, r.version) == (name, version))
        if not ref.builtin:
            models.append(import_champion(ref, served))
    bento_table = bento_routing_table(selection.table, routes)
    (serving_dir / BENTO_ROUTING_FILE).write_text(json.dumps(bento_table, indent=2) + "\n")
    metrics: dict[str, Any] = {
        "bentoml_home": str(bentoml_home),
        "models": models,
        "routing": {p: f"{routes[p].name}:{routes[p].version}" for p in PHASES},
    }
    if not build:
        return metrics
    bentofile = read_bentofile(bentofile_path)
    bentofile["models"] = [*(bentofile.get("models") or []), *models]
    bentofile["labels"] = {
        **(bentofile.get("labels") or {}),
        **{
            f"route-{p.replace('+', 'plus')}": f"{routes[p].name}-{routes[p].version}"
            for p in PHASES
        },
    }
    staging = stage_build_context(
        bentoml_home / "build" / str(bentofile.get("name") or "bento"),
        source_root,
        bentofile,
        {
            (BENTO_ROUTING_RELPATH.parent / f).as_posix(): serving_dir / f
            for f in BENTO_SERVING_FILES
        },
    )
    started = time.perf_counter()
    bento = build_bento(staging)
    metrics["build_seconds"] = round(time.perf_counter() - started, 2)
    archive, unpacked = export_bento(str(bento.tag), bentoml_home / "exports")
    metrics.update(check_bento(unpacked, routes))
    metrics.update(
        {
            "bento_tag": str(bento.tag),
            "bento_path": str(bento.path),
            "bento_archive": str(archive),
            "bento_dir": str(unpacked),
            "bento_routing_table": str(unpacked / "src" / BENTO_ROUTING_RELPATH),
        }
    )
    log.info("built bento %s; exported to %s (unpacked: %s)", bento.tag, archive, unpacked)
    return metrics
