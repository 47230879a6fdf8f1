"""MLflow wrapper of the personal model (registered ``migrainemamba-personal``).

Input: ``build_features`` rows of whole diaries (every grid day of each person, up to the
days to forecast); output: each row's prequential personal forecast, as the stage computes it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import polars as pl

from migrainemamba.models.personal import PersonalModel
from migrainemamba.tracking import pinned_requirements

log = logging.getLogger(__name__)


class PersonalPyfunc(mlflow.pyfunc.PythonModel):
    ARTIFACT = "personal"

    def __init__(self) -> None:
        self.model: PersonalModel | None = None

    def load_context(self, context) -> None:
        self.model = PersonalModel.load(context.artifacts[self.ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        if self.model is None:
            self.load_context(context)
        frame = model_input if isinstance(model_input, pl.DataFrame) else pl.from_pandas(model_input)
        out, _ = self.model.forecast_rows(frame)
        return frame.select("user_id", "date").join(out, on=["user_id", "date"], how="left", maintain_order="left")["p"].to_numpy()


def log_personal_model(model_dir: str | Path, registered_name: str) -> None:
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=PersonalPyfunc(),
        artifacts={PersonalPyfunc.ARTIFACT: str(Path(model_dir).resolve())},
        registered_model_name=registered_name,
        pip_requirements=pinned_requirements("mlflow", "lightgbm", "polars", "numpy", "pandas", "pyarrow", "scipy"),
    )
    log.info("logged %s, registered as %r version %s", info.model_uri, registered_name, info.registered_model_version)
