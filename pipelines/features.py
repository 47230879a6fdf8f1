"""DVC stage `features`: forecast features + sequence arrays -> data/features/, metrics/features.json."""

from migrainemamba.features.stage import run_features
from migrainemamba.pipeline import run_stage

if __name__ == "__main__":
    run_stage("features", run_features)
