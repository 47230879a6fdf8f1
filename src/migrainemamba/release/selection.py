"""Model selection: a champion per phase, ``champion`` aliases in the MLflow registry, the routing table.

The rule (``configs/serve/default.yaml``, ``selection``)
-------------------------------------------------------
For each phase (``1-14``, ``15-30``, ``31+``), from the evaluation report
(``data/evaluation/report.json``, population ``cold_start`` by default: people
the models never trained on, as every user of the service is):

1. **Candidates** are the model families listed in ``selection.candidates``
   (simplest first) that the report scores for the phase, that the service can
   load (a family in ``models.registry`` with a loader) and, unless built in, whose
   saved model folder exists. The running personal base rate is a legal, built-in
   champion: it is a real model (the person's own onset rate so far, shrunk
   toward their self-reported frequency) and needs no artifact. The clinical-prior
   logistic baseline is fitted inside the evaluation and never saved, and the GRU
   is the temporal model's ablation: neither is a serving candidate. A family
   not yet trained (e.g. ``temporal`` before its stage exists) is skipped, with
   the reason recorded.
2. **Score**: ``brier_skill``, the Brier skill against each person's own running
   base rate (0 for the base rate itself, higher is better).
3. **Champion**: the *simplest* candidate that is not distinguishable from the
   best-scoring one. A candidate ties with the best when the best beats it by at
   most ``tie_tolerance`` (0.002 by default), or, when the report holds the paired
   bootstrap interval of the difference (``brier_skill_minus_<candidate>_lo``),
   when that 95% interval does not lie above 0. So a more complex model must
   earn its place by a margin and, where measured, significantly.

Outputs
-------
``<serving_dir>/routing.json`` (the format of ``service.forecasting``) with each
champion's model folder copied to ``<serving_dir>/<family>/<version>/``, so the
folder is self-contained; ``<serving_dir>/selection.json``: the rule, every
candidate's score and interval per phase and why the champion won.

Versions are the MLflow registry's: the registered version whose logged
artifacts are byte-identical to the evaluated model folder (matched by a tree
hash). That version gets the alias ``champion`` (and ``champion-p1-14`` etc. per
phase it serves); families that champion nothing lose theirs. Without a
registry match (tracking disabled, model never registered) the version is
``local-<hash>`` and no alias is set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from migrainemamba.features import PHASES
from migrainemamba.release.routing import BUILTIN_VERSION

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
ROUTING_FILE = "routing.json"
SELECTION_FILE = "selection.json"


# ------------------------------------------------------------------ the rule


@dataclass(frozen=True)
class Candidate:
    """A model family that may serve a phase.

    ``model_dir`` is None for a built-in model (no artifact: the base rate).
    """

    name: str
    model_dir: Path | None = None
    registered_model_name: str | None = None

    @property
    def builtin(self) -> bool:
        return self.model_dir is None

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> Candidate:
        unknown = set(entry) - {"name", "model_dir", "registered_model_name"}
        if unknown or "name" not in entry:
            raise ValueError(
                f"selection.candidates: each entry is {{name, model_dir?, registered_model_name?}}, "
                f"got {dict(entry)}"
            )
        model_dir = entry.get("model_dir")
        return cls(
            name=str(entry["name"]),
            model_dir=None if model_dir is None else Path(model_dir),
            registered_model_name=entry.get("registered_model_name"),
        )


@dataclass(frozen=True)
class SelectionRule:
    metric: str = "brier_skill"
    greater_is_better: bool = True
    population: str = "cold_start"
    tie_tolerance: float = 0.002
    paired_interval: bool = True

    def __post_init__(self) -> None:
        if not self.tie_tolerance >= 0:
            raise ValueError(f"selection.tie_tolerance must be >= 0, got {self.tie_tolerance}")

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> SelectionRule:
        names = {"metric", "greater_is_better", "population", "tie_tolerance", "paired_interval"}
        return cls(**{k: v for k, v in section.items() if k in names})

    def describe(self) -> str:
        direction = "higher" if self.greater_is_better else "lower"
        text = (
            f"per phase, the simplest candidate within {self.tie_tolerance:g} of the best "
            f"{self.metric} ({direction} is better, population {self.population!r})"
        )
        if self.paired_interval:
            text += (
                "; also tied when the report's paired 95% interval of the best minus it "
                "does not lie above 0"
            )
        return text


@dataclass
class PhaseChoice:
    """The outcome of the rule for one phase."""

    phase: str
    champion: str
    best: str
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)
    reason: str = ""


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _advantage(rule: SelectionRule, better: float, other: float) -> float:
    """How much ``better`` beats ``other`` on the rule's metric (positive = better)."""
    return better - other if rule.greater_is_better else other - better


def choose_champion(
    phase: str,
    phase_scores: Mapping[str, Mapping[str, Any]],
    order: Sequence[str],
    rule: SelectionRule,
) -> PhaseChoice:
    """Apply the rule to one phase's scores (``{model: {metric, metric_lo, ...}}``).

    ``order`` lists the candidate names simplest first; names without a finite
    score are ignored. Raises ``ValueError`` when no candidate has one.
    """
    m = rule.metric
    scored = [(name, _finite(phase_scores.get(name, {}).get(m))) for name in order]
    scored = [(name, value) for name, value in scored if value is not None]
    if not scored:
        raise ValueError(
            f"selection: phase {phase!r}: no candidate among {list(order)} has a finite {m!r} "
            f"in the report; run the evaluation with these models (configs/evaluate/default.yaml)"
        )
    table = {
        name: {
            m: value,
            f"{m}_lo": _finite(phase_scores[name].get(f"{m}_lo")),
            f"{m}_hi": _finite(phase_scores[name].get(f"{m}_hi")),
            "n_users": _finite(phase_scores[name].get("n_users")),
            "n_days": _finite(phase_scores[name].get("n_days")),
            # paired differences to the other candidates, where the report has them
            **{
                key: _finite(v)
                for key, v in phase_scores[name].items()
                if key.startswith(f"{m}_minus_")
                and key.split("_minus_")[1].removesuffix("_lo").removesuffix("_hi") in order
            },
        }
        for name, value in scored
    }
    # the best score; among equal scores the simplest (max keeps the first)
    best, best_value = scored[0]
    for name, value in scored[1:]:
        if _advantage(rule, value, best_value) > 0:
            best, best_value = name, value
    beaten: list[str] = []  # why each simpler candidate does not tie with the best
    for name, value in scored:
        if name == best:
            reason = f"{best} has the best {m} ({best_value:.5f})"
            if beaten:
                reason += "; it beats " + "; ".join(beaten)
            elif len(scored) > 1:
                reason += ", and it is the simplest candidate"
            return PhaseChoice(phase, best, best, table, reason)
        gap = _advantage(rule, best_value, value)
        if gap <= rule.tie_tolerance:
            reason = (
                f"{name} ({value:.5f}) is within tie_tolerance {rule.tie_tolerance:g} of the best, "
                f"{best} ({best_value:.5f}): the simpler model wins"
            )
            return PhaseChoice(phase, name, best, table, reason)
        note = f"{name} ({value:.5f}) by {gap:.5f} > {rule.tie_tolerance:g}"
        if rule.paired_interval:
            lo = _finite(phase_scores[best].get(f"{m}_minus_{name}_lo"))
            hi = _finite(phase_scores[best].get(f"{m}_minus_{name}_hi"))
            if lo is not None and hi is not None:
                # the interval of (best - name) on the "better" side
                low_side = lo if rule.greater_is_better else -hi
                if low_side <= 0:
                    reason = (
                        f"{best} beats {name} by {gap:.5f} on {m}, but the paired 95% interval "
                        f"of the difference [{lo:.5f}, {hi:.5f}] includes 0: the simpler model wins"
                    )
                    return PhaseChoice(phase, name, best, table, reason)
                note += f", paired 95% interval [{lo:.5f}, {hi:.5f}] excludes 0"
        beaten.append(note)
    raise AssertionError("unreachable: the best candidate is in the list")  # pragma: no cover


# ------------------------------------------------------------- availability


def servable_families() -> set[str]:
    """Model names the service can load (its routing-table loaders)."""
    from migrainemamba.models.registry import loaders

    return set(loaders())


def available_candidates(
    candidates: Sequence[Candidate],
    scores: Mapping[str, Mapping[str, Any]],
    loaders: Iterable[str] | None = None,
) -> tuple[list[Candidate], dict[str, str]]:
    """The candidates that can compete, and why the others cannot (name -> reason)."""
    loaders = servable_families() if loaders is None else set(loaders)
    scored_anywhere = {name for phase in scores.values() for name in phase}
    usable, skipped = [], {}
    for candidate in candidates:
        if candidate.name not in loaders:
            skipped[candidate.name] = (
                f"the service has no loader for {candidate.name!r} "
                "(models.registry.register_family)"
            )
        elif candidate.name not in scored_anywhere:
            skipped[candidate.name] = "not scored in the evaluation report"
        elif not candidate.builtin and not _is_model_dir(candidate.model_dir):
            skipped[candidate.name] = f"no saved model in {candidate.model_dir}"
        else:
            usable.append(candidate)
    return usable, skipped


def _is_model_dir(path: Path | None) -> bool:
    return path is not None and path.is_dir() and any(path.iterdir())


def select_champions(
    report: Mapping[str, Any],
    candidates: Sequence[Candidate],
    rule: SelectionRule,
    loaders: Iterable[str] | None = None,
) -> tuple[dict[str, PhaseChoice], dict[str, str]]:
    """The champion of every phase, and the candidates left out (with reasons)."""
    try:
        population = report["scores"][rule.population]
    except KeyError as exc:
        raise ValueError(
            f"selection: the evaluation report has no scores for population {rule.population!r}; "
            f"it has {sorted(report.get('scores', {}))}"
        ) from exc
    usable, skipped = available_candidates(candidates, population, loaders)
    order = [c.name for c in usable]
    missing = [p for p in PHASES if p not in population]
    if missing:
        raise ValueError(f"selection: the evaluation report has no scores for phases {missing}")
    choices = {phase: choose_champion(phase, population[phase], order, rule) for phase in PHASES}
    for choice in choices.values():
        log.info("selection %s: %s (%s)", choice.phase, choice.champion, choice.reason)
    return choices, skipped


# ----------------------------------------------------------------- versions


def tree_sha256(directory: Path) -> str:
    """A hash of a folder's files (relative paths and bytes), independent of where it lies."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelRef:
    """One servable model: a family, its version, and where its files are."""

    name: str
    version: str
    model_dir: Path | None = None
    registered_model_name: str | None = None
    run_id: str | None = None
    sha256: str | None = None

    @property
    def builtin(self) -> bool:
        return self.model_dir is None

    @property
    def model_uri(self) -> str | None:
        if self.registered_model_name is None or self.version.startswith("local-"):
            return None
        return f"models:/{self.registered_model_name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model_dir"] = None if self.model_dir is None else str(self.model_dir)
        out["model_uri"] = self.model_uri
        return out


def _mlflow_client(tracking_uri: str):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient()


def find_registered_version(client: Any, registered_name: str, sha256: str) -> Any | None:
    """The registered version whose logged artifacts hold a folder with this tree hash (newest first)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{registered_name}'")
    except MlflowException as exc:
        log.warning("selection: cannot list versions of %s: %s", registered_name, exc)
        return None
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=f"models:/{registered_name}/{version.version}", dst_path=tmp
                    )
                )
            except (MlflowException, OSError) as exc:
                log.warning(
                    "selection: cannot read %s version %s: %s",
                    registered_name,
                    version.version,
                    exc,
                )
                continue
            folders = [local, *(p for p in local.rglob("*") if p.is_dir())]
            if any(tree_sha256(folder) == sha256 for folder in folders):
                return version
    return None


def resolve_model(candidate: Candidate, client: Any | None) -> ModelRef:
    """The version of a candidate's saved model: its MLflow registry version, else ``local-<hash>``."""
    if candidate.builtin:
        return ModelRef(candidate.name, BUILTIN_VERSION)
    assert candidate.model_dir is not None
    sha = tree_sha256(candidate.model_dir)
    if client is not None and candidate.registered_model_name:
        version = find_registered_version(client, candidate.registered_model_name, sha)
        if version is not None:
            return ModelRef(
                candidate.name,
                str(version.version),
                candidate.model_dir,
                candidate.registered_model_name,
                version.run_id,
                sha,
            )
        log.warning(
            "selection: no version of %s in the registry matches %s; using a local version "
            "(no champion alias)",
            candidate.registered_model_name,
            candidate.model_dir,
        )
    return ModelRef(
        candidate.name,
        f"local-{sha[:12]}",
        candidate.model_dir,
        candidate.registered_model_name,
        None,
        sha,
    )


# ------------------------------------------------------------ MLflow aliases


def phase_alias(phase: str) -> str:
    """``champion-p1-14``, ``champion-p15-30``, ``champion-p31plus`` (MLflow alias characters)."""
    return f"{CHAMPION_ALIAS}-p{phase.replace('+', 'plus')}"


def set_champion_aliases(
    client: Any, routes: Mapping[str, ModelRef], registered_names: Iterable[str]
) -> dict[str, dict[str, str]]:
    """Point ``champion`` (and the per-phase aliases) at the serving versions; drop stale ones.

    Returns ``{registered name: {alias: version}}`` as set.
    """
    from mlflow.exceptions import MlflowException

    wanted: dict[str, dict[str, str]] = {}
    for phase, ref in routes.items():
        if ref.model_uri is None or ref.registered_model_name is None:
            continue
        aliases = wanted.setdefault(ref.registered_model_name, {})
        aliases[phase_alias(phase)] = ref.version
        if aliases.get(CHAMPION_ALIAS, ref.version) != ref.version:
            raise ValueError(
                f"selection: two versions of {ref.registered_model_name} would both be champion"
            )
        aliases[CHAMPION_ALIAS] = ref.version
    ours = {CHAMPION_ALIAS, *(phase_alias(p) for p in PHASES)}
    for name in sorted(set(registered_names) | set(wanted)):
        try:
            current = client.get_registered_model(name).aliases or {}
        except MlflowException:
            continue  # never registered: nothing to set or drop
        target = wanted.get(name, {})
        for alias in sorted(ours & set(current)):
            if alias not in target:
                client.delete_registered_model_alias(name, alias)
                log.info("registry: dropped %s@%s", name, alias)
        for alias, version in sorted(target.items()):
            if str(current.get(alias)) != version:
                client.set_registered_model_alias(name, alias, version)
                log.info("registry: %s@%s -> version %s", name, alias, version)
    return wanted


# ------------------------------------------------------------ routing table


def routing_table(
    routes: Mapping[str, ModelRef], paths: Mapping[str, str | None]
) -> dict[str, Any]:
    """The service's routing JSON; ``paths[phase]`` is each model's path relative to the table."""
    table: dict[str, Any] = {}
    for phase in PHASES:
        ref = routes[phase]
        entry: dict[str, Any] = {"model": ref.name, "version": ref.version}
        if paths.get(phase) is not None:
            entry["path"] = paths[phase]
        if ref.model_uri is not None:
            entry["registered_model"] = ref.registered_model_name
            entry["model_uri"] = ref.model_uri
        table[phase] = entry
    return table


def model_subdir(ref: ModelRef) -> str:
    return f"{ref.name}/{ref.version}"


def write_serving_dir(
    serving_dir: Path,
    routes: Mapping[str, ModelRef],
    record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``routing.json`` (+ ``selection.json``) and copy each served model under ``serving_dir``.

    The folder is replaced as a whole, so it never mixes two selections.
    """
    missing = [p for p in PHASES if p not in routes]
    if missing:
        raise ValueError(f"routing: no model for phases {missing}")
    serving_dir = Path(serving_dir)
    if serving_dir.exists():
        shutil.rmtree(serving_dir)
    serving_dir.mkdir(parents=True)
    paths: dict[str, str | None] = {}
    for phase in PHASES:
        ref = routes[phase]
        if ref.builtin:
            paths[phase] = None
            continue
        assert ref.model_dir is not None
        sub = model_subdir(ref)
        target = serving_dir / sub
        if not target.exists():
            shutil.copytree(ref.model_dir, target, ignore=shutil.ignore_patterns("__pycache__"))
        paths[phase] = sub
    table = routing_table(routes, paths)
    (serving_dir / ROUTING_FILE).write_text(json.dumps(table, indent=2) + "\n")
    if record is not None:
        (serving_dir / SELECTION_FILE).write_text(
            json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
        )
    return table


# ------------------------------------------------------------------- driver


@dataclass
class Selection:
    choices: dict[str, PhaseChoice]
    routes: dict[str, ModelRef]
    skipped: dict[str, str]
    aliases: dict[str, dict[str, str]]
    table: dict[str, Any]

    def record(self, rule: SelectionRule) -> dict[str, Any]:
        """What selection.json holds."""
        return {
            "rule": {**asdict(rule), "description": rule.describe()},
            "phases": {
                phase: {
                    "champion": choice.champion,
                    "version": self.routes[phase].version,
                    "best_score": choice.best,
                    "reason": choice.reason,
                    "scores": choice.scores,
                }
                for phase, choice in self.choices.items()
            },
            "models": {
                f"{r.name}:{r.version}": r.to_dict()
                for r in {(r.name, r.version): r for r in self.routes.values()}.values()
            },
            "skipped": self.skipped,
            "registry_aliases": self.aliases,
        }


def run_selection(
    report: Mapping[str, Any],
    candidates: Sequence[Candidate],
    rule: SelectionRule,
    serving_dir: Path,
    tracking_uri: str | None = None,
    loaders: Iterable[str] | None = None,
) -> Selection:
    """Choose, resolve versions (and set aliases when ``tracking_uri``), write the serving folder."""
    choices, skipped = select_champions(report, candidates, rule, loaders)
    by_name = {c.name: c for c in candidates}
    client = _mlflow_client(tracking_uri) if tracking_uri else None
    refs: dict[str, ModelRef] = {}
    for name in sorted({c.champion for c in choices.values()}):
        refs[name] = resolve_model(by_name[name], client)
    routes = {phase: refs[choice.champion] for phase, choice in choices.items()}
    aliases: dict[str, dict[str, str]] = {}
    if client is not None:
        registered = [c.registered_model_name for c in candidates if c.registered_model_name]
        aliases = set_champion_aliases(client, routes, registered)
    selection = Selection(choices, routes, skipped, aliases, {})
    selection.table = write_serving_dir(serving_dir, routes, selection.record(rule))
    return selection
