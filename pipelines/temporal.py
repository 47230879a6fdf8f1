"""DVC stage `temporal`: fine-tuned temporal model + GRU baseline -> data/models/{temporal,gru}/, metrics/temporal.json."""

from migrainemamba.pipeline import run_stage
from migrainemamba.stages.temporal import run

if __name__ == "__main__":
    run_stage("temporal", run)
