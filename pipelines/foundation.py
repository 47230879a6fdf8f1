"""DVC stage `foundation`: LightGBM on the clinical prior -> data/models/foundation/, metrics/foundation.json."""

import os

# Before LightGBM (or torch) loads OpenMP: idle threads sleep instead of spinning.
# With the other core busy, spinning made a 2-thread fit ~7x slower (15 s vs 2.2 s).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from migrainemamba.pipeline import run_stage
from migrainemamba.stages.foundation import run

if __name__ == "__main__":
    run_stage("foundation", run)
