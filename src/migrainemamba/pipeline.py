"""Shared plumbing for the thin stage entry points in ``pipelines/``."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from migrainemamba.config import load_config
from migrainemamba.runtime import configure_entry_point

log = logging.getLogger(__name__)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=float) + "\n")


def run_stage(stage: str, body: Callable[[DictConfig], dict[str, Any]]) -> None:
    """Entry point: configure the process, compose the config from argv overrides, run.

    Errors become a one-line message and exit code 1 (the traceback at debug level).
    """
    configure_entry_point()
    try:
        cfg = load_config(sys.argv[1:])
        metrics = body(cfg)
    except Exception as exc:  # entry point: turn any failure into an exit code
        log.debug("stage %s failed", stage, exc_info=True)
        log.error("stage %s failed: %s: %s", stage, type(exc).__name__, exc)
        sys.exit(1)
    log.info("stage %s done: %s", stage, json.dumps(metrics, default=float)[:2000])
