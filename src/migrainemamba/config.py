"""Configuration: the Hydra tree under ``configs/`` composed with overrides.

Stages use the compose API (no ``@hydra.main``): no working-directory changes,
no timestamped output folders, fixed output paths that DVC can track.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf


def repo_root() -> Path:
    """The project root: $MIGRAINEMAMBA_ROOT, else the checkout this package lives in."""
    env = os.environ.get("MIGRAINEMAMBA_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "configs" / "config.yaml").is_file():
            return parent
    return Path.cwd().resolve()


def config_dir() -> Path:
    return repo_root() / "configs"


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``configs/config.yaml`` with Hydra overrides (``key=value``, ``+debug=tiny``)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def resolve_path(path: str | Path) -> Path:
    """Config paths are relative to the repository root unless absolute."""
    p = Path(path)
    return p if p.is_absolute() else repo_root() / p
