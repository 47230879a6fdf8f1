"""Process-level set-up for entry points (never done on import of the library)."""

from __future__ import annotations

import logging
import os

TELEMETRY_OFF = {
    "BENTOML_DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
}


def configure_entry_point(level: int = logging.INFO) -> None:
    """Telemetry off (tools would call home), and standard logging to stderr."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
