"""DVC stage `temporal`: fine-tuned temporal model + GRU baseline -> data/models/{temporal,gru}."""

from migrainemamba.models.temporal_stage import run_temporal
from migrainemamba.pipeline import run_stage

if __name__ == "__main__":
    run_stage("temporal", run_temporal)
