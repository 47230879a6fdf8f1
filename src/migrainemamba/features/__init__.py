"""Forecast features (tabular, for LightGBM); diary sequences for the sequence models live in
:mod:`migrainemamba.features.sequences` (imported on its own: it needs torch, the service does not).

Training stages and the service compute features with these same functions.
"""

from migrainemamba.features.daily import (
    FEATURE_COLUMNS,
    FEATURE_DESCRIPTIONS,
    KEY_COLUMNS,
    LABEL_COLUMNS,
    PHASES,
    PRODROME_SYMPTOMS,
    build_features,
    calendar_grid,
    phase_of,
)

__all__ = [
    "FEATURE_COLUMNS",
    "FEATURE_DESCRIPTIONS",
    "KEY_COLUMNS",
    "LABEL_COLUMNS",
    "PHASES",
    "PRODROME_SYMPTOMS",
    "build_features",
    "calendar_grid",
    "phase_of",
]
