"""Experiments: one-off measurements that read the pipeline's outputs and write their results
under ``data/experiments/`` (each module's docstring says how to run it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from migrainemamba.config import resolve_path


def save_result(cfg: Any, name: str, result: dict[str, Any]) -> Path:
    """Write an experiment's result to ``data/experiments/<name>.json`` and print it."""
    path = resolve_path(cfg.paths.data_dir) / "experiments" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1) + "\n"
    path.write_text(text)
    print(text, end="")
    return path
