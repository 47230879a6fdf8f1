"""Every DVC stage's deps cover every package module its entry imports, directly or not.

A stage whose code changes without its deps saying so would not rerun: its outputs would silently
go stale (the foundation once missed ``features/triggers.py``). Each stage's params must name
config files that exist and keys they hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.architecture.imports import ROOT, closure, imports_of, modules

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def entry_of(stage: dict) -> Path:
    script = stage["cmd"].split()[1]
    return ROOT / script


def uncovered(stage: dict) -> list[str]:
    deps = [(ROOT / d).resolve() for d in stage["deps"]]
    files = {modules()[m] for m in closure(imports_of(entry_of(stage)))}
    return sorted(
        str(f.relative_to(ROOT)) for f in files if not any(f == d or d in f.parents for d in deps)
    )


@pytest.mark.parametrize("name", sorted(DVC))
def test_deps_cover_every_imported_module(name: str) -> None:
    stage = DVC[name]
    assert str(entry_of(stage).relative_to(ROOT)) in stage["deps"], f"{name}: its entry is not a dep"
    missing = uncovered(stage)
    assert not missing, f"stage {name}: deps miss modules its entry imports: {missing}"


@pytest.mark.parametrize("name", sorted(DVC))
def test_params_name_existing_files_and_keys(name: str) -> None:
    for entry in DVC[name].get("params", []):
        for path, keys in (entry.items() if isinstance(entry, dict) else [(entry, None)]):
            config = yaml.safe_load((ROOT / path).read_text())
            for key in keys or []:
                node = config
                for part in key.split("."):
                    assert isinstance(node, dict) and part in node, f"{name}: {path} has no {key!r}"
                    node = node[part]


def test_the_checker_sees_a_missing_module() -> None:
    """Dropping one imported package from a stage's deps makes the check fail (a test of the test)."""
    stage = dict(DVC["foundation"])
    stage["deps"] = [d for d in stage["deps"] if d != "src/migrainemamba/features"]
    assert "src/migrainemamba/features/triggers.py" in uncovered(stage)


def test_stages_have_one_home() -> None:
    """pipelines/<stage>.py calls migrainemamba.stages.<stage>.run, for every DVC stage."""
    for name, stage in DVC.items():
        assert entry_of(stage) == ROOT / "pipelines" / f"{name}.py"
        assert f"migrainemamba.stages.{name}" in imports_of(entry_of(stage)), name
