"""DVC stage `features`: forecast features + sequence arrays -> data/features/, metrics/features.json."""

from migrainemamba.pipeline import run_stage
from migrainemamba.stages.features import run

if __name__ == "__main__":
    run_stage("features", run)
