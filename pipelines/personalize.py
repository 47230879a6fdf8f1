"""DVC stage `personalize`: the personal model, its prequential evaluation and the trigger maps."""

import os

# Before LightGBM loads OpenMP: idle threads sleep instead of spinning (see pipelines/foundation.py).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from migrainemamba.pipeline import run_stage
from migrainemamba.stages.personalize import run

if __name__ == "__main__":
    run_stage("personalize", run)
