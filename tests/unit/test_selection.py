"""Model selection: the rule on hand-made scores, the routing table it writes, the registry aliases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from migrainemamba.features import PHASES
from migrainemamba.models.baselines import RunningBaseRate
from migrainemamba.release.packaging import (
    BENTO_ROUTING_RELPATH,
    bento_routing_table,
    stage_build_context,
)
from migrainemamba.release.routing import load_routing_table
from migrainemamba.release.selection import (
    CHAMPION_ALIAS,
    Candidate,
    ModelRef,
    SelectionRule,
    available_candidates,
    choose_champion,
    find_registered_version,
    phase_alias,
    resolve_model,
    run_selection,
    select_champions,
    set_champion_aliases,
    tree_sha256,
    write_serving_dir,
)

ORDER = ["base_rate", "foundation", "temporal"]
RULE = SelectionRule(tie_tolerance=0.002, paired_interval=True)


def _score(value, lo=None, hi=None, **extra):
    out = {"brier_skill": value, "n_users": 100.0, "n_days": 1000.0, **extra}
    if lo is not None:
        out["brier_skill_lo"], out["brier_skill_hi"] = lo, hi
    return out


# ------------------------------------------------------------------ the rule


def test_clear_winner_is_champion():
    scores = {"base_rate": _score(0.0), "foundation": _score(0.03), "temporal": _score(0.01)}
    choice = choose_champion("1-14", scores, ORDER, RULE)
    assert (choice.champion, choice.best) == ("foundation", "foundation")
    assert set(choice.scores) == set(ORDER)


def test_within_tolerance_the_simpler_model_wins():
    scores = {"base_rate": _score(0.0), "foundation": _score(0.030), "temporal": _score(0.0315)}
    choice = choose_champion("31+", scores, ORDER, RULE)
    assert (choice.champion, choice.best) == ("foundation", "temporal")
    assert "simpler" in choice.reason


def test_exact_tie_goes_to_the_simplest():
    scores = {"base_rate": _score(0.0), "foundation": _score(0.0), "temporal": _score(0.0)}
    assert choose_champion("1-14", scores, ORDER, RULE).champion == "base_rate"
    strict = SelectionRule(tie_tolerance=0.0, paired_interval=False)
    assert choose_champion("1-14", scores, ORDER, strict).champion == "base_rate"


def test_paired_interval_including_zero_is_a_tie():
    foundation = _score(
        0.02, brier_skill_minus_base_rate_lo=-0.001, brier_skill_minus_base_rate_hi=0.04
    )
    scores = {"base_rate": _score(0.0), "foundation": foundation}
    assert choose_champion("15-30", scores, ORDER, RULE).champion == "base_rate"
    # interval above 0: the complex model has earned its place
    foundation.update(brier_skill_minus_base_rate_lo=0.004)
    choice = choose_champion("15-30", scores, ORDER, RULE)
    assert choice.champion == "foundation"
    assert "beats base_rate" in choice.reason and "excludes 0" in choice.reason
    assert choice.scores["foundation"]["brier_skill_minus_base_rate_lo"] == 0.004
    # the interval is only consulted when asked to
    foundation.update(brier_skill_minus_base_rate_lo=-0.001)
    no_ci = SelectionRule(tie_tolerance=0.002, paired_interval=False)
    assert choose_champion("15-30", scores, ORDER, no_ci).champion == "foundation"


def test_lower_is_better_metric():
    rule = SelectionRule(metric="brier", greater_is_better=False, tie_tolerance=0.0005)
    scores = {
        "base_rate": {"brier": 0.090},
        "foundation": {"brier": 0.085},
        "temporal": {"brier": 0.0848},
    }
    # temporal is best, but within 0.0005 of foundation: foundation
    assert choose_champion("1-14", scores, ORDER, rule).champion == "foundation"
    scores["temporal"]["brier"] = 0.080
    assert choose_champion("1-14", scores, ORDER, rule).champion == "temporal"


def test_candidates_without_a_finite_score_are_ignored_and_none_left_is_an_error():
    scores = {"base_rate": _score(float("nan")), "foundation": _score(0.01), "temporal": {}}
    assert choose_champion("1-14", scores, ORDER, RULE).champion == "foundation"
    with pytest.raises(ValueError, match="no candidate"):
        choose_champion("1-14", {"prior_logistic": _score(0.1)}, ORDER, RULE)


def test_order_decides_simplicity_not_alphabet():
    scores = {"base_rate": _score(0.0), "foundation": _score(0.0101), "temporal": _score(0.01)}
    assert choose_champion("1-14", scores, ["temporal", "foundation"], RULE).champion == "temporal"
    assert (
        choose_champion("1-14", scores, ["foundation", "temporal"], RULE).champion == "foundation"
    )


# ----------------------------------------------------------- availability


def _model_dir(tmp_path: Path, name: str, content: str = "trees") -> Path:
    folder = tmp_path / "models" / name
    folder.mkdir(parents=True)
    (folder / "booster.txt").write_text(content)
    (folder / "meta.json").write_text('{"a": 1}')
    return folder


def _report(phase_scores: dict) -> dict:
    return {"scores": {"cold_start": phase_scores, "all": phase_scores}}


def test_available_candidates_need_a_loader_a_score_and_files(tmp_path):
    candidates = [
        Candidate("base_rate"),
        Candidate("foundation", _model_dir(tmp_path, "foundation")),
        Candidate("temporal", tmp_path / "models" / "temporal"),  # not trained yet
        Candidate("gru", _model_dir(tmp_path, "gru")),
    ]
    scores = {"1-14": {"base_rate": {}, "foundation": {}, "temporal": {}, "gru": {}}}
    usable, skipped = available_candidates(
        candidates, scores, loaders={"base_rate", "foundation", "temporal"}
    )
    assert [c.name for c in usable] == ["base_rate", "foundation"]
    assert set(skipped) == {"temporal", "gru"}
    assert "no saved model" in skipped["temporal"] and "no loader" in skipped["gru"]
    unscored, why = available_candidates(
        [Candidate("foundation", _model_dir(tmp_path, "f2"))], {"1-14": {"base_rate": {}}}
    )
    assert unscored == [] and "not scored" in why["foundation"]


def test_select_champions_per_phase_and_population(tmp_path):
    report = _report(
        {
            "1-14": {"base_rate": _score(0.0), "foundation": _score(0.03)},
            "15-30": {"base_rate": _score(0.0), "foundation": _score(0.001)},
            "31+": {"base_rate": _score(0.0), "foundation": _score(0.02)},
        }
    )
    candidates = [Candidate("base_rate"), Candidate("foundation", _model_dir(tmp_path, "f"))]
    choices, skipped = select_champions(report, candidates, RULE)
    assert {p: c.champion for p, c in choices.items()} == {
        "1-14": "foundation",
        "15-30": "base_rate",
        "31+": "foundation",
    }
    assert skipped == {}
    with pytest.raises(ValueError, match="population"):
        select_champions(report, candidates, SelectionRule(population="nobody"))


def test_rule_from_config_section():
    rule = SelectionRule.from_dict(
        {"metric": "auc", "tie_tolerance": 0.01, "candidates": [], "population": "all"}
    )
    assert (rule.metric, rule.tie_tolerance, rule.population) == ("auc", 0.01, "all")
    with pytest.raises(ValueError):
        SelectionRule(tie_tolerance=-1)
    with pytest.raises(ValueError, match="name"):
        Candidate.from_dict({"model_dir": "x"})


# ---------------------------------------------------------- routing table


def test_tree_hash_depends_on_content_not_location(tmp_path):
    a = _model_dir(tmp_path / "a", "m")
    b = _model_dir(tmp_path / "b", "m")
    assert tree_sha256(a) == tree_sha256(b)
    (b / "booster.txt").write_text("other trees")
    assert tree_sha256(a) != tree_sha256(b)


def test_without_registry_versions_are_local_hashes(tmp_path):
    folder = _model_dir(tmp_path, "foundation")
    ref = resolve_model(Candidate("foundation", folder, "migrainemamba-foundation"), client=None)
    assert ref.version == f"local-{tree_sha256(folder)[:12]}" and ref.model_uri is None
    assert resolve_model(Candidate("base_rate"), None) == ModelRef("base_rate", "builtin")


class _PathLoader:
    def __init__(self):
        self.paths = []

    def __call__(self, path):
        self.paths.append(path)
        return RunningBaseRate()


def test_serving_dir_is_self_contained_and_loads(tmp_path):
    folder = _model_dir(tmp_path, "foundation")
    ref = ModelRef(
        "foundation", "7", folder, "migrainemamba-foundation", "run1", tree_sha256(folder)
    )
    builtin = ModelRef("base_rate", "builtin")
    routes = {"1-14": ref, "15-30": builtin, "31+": ref}
    serving = tmp_path / "serving"
    (serving / "stale").mkdir(parents=True)  # an older selection's leftovers are removed
    table = write_serving_dir(serving, routes, {"rule": "r"})
    assert table == json.loads((serving / "routing.json").read_text())
    assert table["1-14"] == {
        "model": "foundation",
        "version": "7",
        "path": "foundation/7",
        "registered_model": "migrainemamba-foundation",
        "model_uri": "models:/migrainemamba-foundation/7",
    }
    assert table["15-30"] == {"model": "base_rate", "version": "builtin"}
    assert not (serving / "stale").exists()
    assert tree_sha256(serving / "foundation" / "7") == ref.sha256
    assert json.loads((serving / "selection.json").read_text()) == {"rule": "r"}
    # the service reads it: each model loaded once, from the copy
    loader = _PathLoader()
    loaded = load_routing_table(
        serving / "routing.json",
        loaders={"foundation": loader, "base_rate": lambda p: RunningBaseRate()},
    )
    assert loader.paths == [(serving / "foundation" / "7").resolve()]
    assert [(r.model_name, r.model_version) for r in loaded.values()] == [
        ("foundation", "7"),
        ("base_rate", "builtin"),
        ("foundation", "7"),
    ]
    with pytest.raises(ValueError, match="phases"):
        write_serving_dir(serving, {"1-14": ref}, None)


def test_run_selection_writes_the_record(tmp_path):
    report = _report({p: {"base_rate": _score(0.0), "foundation": _score(0.03)} for p in PHASES})
    candidates = [
        Candidate("base_rate"),
        Candidate("foundation", _model_dir(tmp_path, "foundation")),
        Candidate("temporal", tmp_path / "nothing"),
    ]
    selection = run_selection(report, candidates, RULE, tmp_path / "serving")
    record = json.loads((tmp_path / "serving" / "selection.json").read_text())
    assert {p: record["phases"][p]["champion"] for p in PHASES} == dict.fromkeys(
        PHASES, "foundation"
    )
    assert record["rule"]["metric"] == "brier_skill" and "simplest" in record["rule"]["description"]
    assert "temporal" in record["skipped"]
    assert selection.aliases == {}  # no registry: no aliases


# ---------------------------------------------------------- bento layout


def test_bento_routing_points_into_the_bento_models_folder(tmp_path):
    folder = _model_dir(tmp_path, "foundation")
    ref = ModelRef("foundation", "5", folder, "migrainemamba-foundation", None, tree_sha256(folder))
    routes = {"1-14": ref, "15-30": ModelRef("base_rate", "builtin"), "31+": ref}
    table = write_serving_dir(tmp_path / "serving", routes)
    bento = bento_routing_table(table, routes)
    # lay the files out as a bento is unpacked: src/<routing>, models/<name>/<version>/<family>
    root = tmp_path / "bento"
    (root / "src" / BENTO_ROUTING_RELPATH).parent.mkdir(parents=True)
    (root / "src" / BENTO_ROUTING_RELPATH).write_text(json.dumps(bento))
    model_home = root / "models" / "migrainemamba-foundation" / "5" / "foundation"
    model_home.parent.mkdir(parents=True)
    (model_home.parent / "model.yaml").write_text("name: x\n")
    shutil.copytree(folder, model_home)
    loader = _PathLoader()
    load_routing_table(
        root / "src" / BENTO_ROUTING_RELPATH,
        loaders={"foundation": loader, "base_rate": lambda p: RunningBaseRate()},
    )
    assert loader.paths == [model_home.resolve()]
    assert bento["15-30"] == {"model": "base_rate", "version": "builtin"}


def test_staged_build_context_holds_exactly_the_included_files(tmp_path):
    source = tmp_path / "repo"
    for rel in [
        "README.md",
        "src/pkg/a.py",
        "src/pkg/data/b.py",
        "src/pkg/__pycache__/a.pyc",
        "notes.txt",
        "data/serving/routing.bento.json",
        ".hidden/README.md",
    ]:
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text("x")
    serving = tmp_path / "made.json"
    serving.write_text("{}")
    bentofile = {
        "service": "pkg:Svc",
        "include": ["/README.md", "/src/pkg/**/*.py", "/data/serving/routing.bento.json"],
        "exclude": ["**/__pycache__/"],
    }
    staged = stage_build_context(
        tmp_path / "stage", source, bentofile, {"data/serving/routing.bento.json": serving}
    )
    files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "bentofile.yaml",
        "data/serving/routing.bento.json",
        "src/pkg/a.py",
        "src/pkg/data/b.py",
    ]


# ------------------------------------------------------------ MLflow registry


@pytest.fixture
def registry(tmp_path, mlflow_sqlite_store, monkeypatch):
    import mlflow

    # set_tracking_uri also exports MLFLOW_TRACKING_URI; left behind, it would send a later stage
    # run in this process to the repository's mlflow.db (tracking.tracking_uri): monkeypatch's
    # record of it removes it again after the test
    previous = mlflow.get_tracking_uri()
    uri = mlflow_sqlite_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(previous)


def _register(client, name: str, folder: Path) -> str:
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    return str(client.create_model_version(name, source=str(folder)).version)


def _aliases(client) -> dict[str, str]:
    aliases = client.get_registered_model("migrainemamba-foundation").aliases or {}
    return {k: str(v) for k, v in aliases.items()}


def test_registry_version_is_found_by_content_and_aliases_follow_the_routes(tmp_path, registry):
    old = _model_dir(tmp_path / "v1", "artifacts/foundation", "old trees")
    new = _model_dir(tmp_path / "v2", "artifacts/foundation", "new trees")
    v1 = _register(registry, "migrainemamba-foundation", old.parent.parent)
    v2 = _register(registry, "migrainemamba-foundation", new.parent.parent)
    evaluated = _model_dir(tmp_path / "eval", "foundation", "old trees")
    found = find_registered_version(registry, "migrainemamba-foundation", tree_sha256(evaluated))
    assert found is not None and str(found.version) == v1

    ref = resolve_model(Candidate("foundation", evaluated, "migrainemamba-foundation"), registry)
    assert (ref.version, ref.model_uri) == (v1, f"models:/migrainemamba-foundation/{v1}")
    builtin = ModelRef("base_rate", "builtin")
    set_champion_aliases(
        registry, {"1-14": ref, "15-30": builtin, "31+": ref}, ["migrainemamba-foundation"]
    )
    aliases = _aliases(registry)
    assert aliases == {CHAMPION_ALIAS: v1, phase_alias("1-14"): v1, phase_alias("31+"): v1}
    assert phase_alias("31+") == "champion-p31plus"

    # a new selection: version 2 serves 31+ only; the rest of the aliases go
    ref2 = ModelRef("foundation", v2, new, "migrainemamba-foundation", None, tree_sha256(new))
    set_champion_aliases(
        registry, {"1-14": builtin, "15-30": builtin, "31+": ref2}, ["migrainemamba-foundation"]
    )
    assert _aliases(registry) == {CHAMPION_ALIAS: v2, phase_alias("31+"): v2}
    # nothing served from the registry: no champion left
    set_champion_aliases(registry, dict.fromkeys(PHASES, builtin), ["migrainemamba-foundation"])
    assert _aliases(registry) == {}
    assert v2 != v1
