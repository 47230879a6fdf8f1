"""Forecast features (tabular, for LightGBM) and diary sequences (for the Mamba model).

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
from migrainemamba.features.sequences import (
    MORNING_COLUMNS,
    STATIC_COLUMNS,
    VALUE_COLUMNS,
    SequenceData,
    SequenceStats,
    SequenceWindows,
    build_sequence_data,
)

__all__ = [
    "FEATURE_COLUMNS",
    "FEATURE_DESCRIPTIONS",
    "KEY_COLUMNS",
    "LABEL_COLUMNS",
    "MORNING_COLUMNS",
    "PHASES",
    "PRODROME_SYMPTOMS",
    "STATIC_COLUMNS",
    "VALUE_COLUMNS",
    "SequenceData",
    "SequenceStats",
    "SequenceWindows",
    "build_features",
    "build_sequence_data",
    "calendar_grid",
    "phase_of",
]
