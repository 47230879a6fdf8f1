"""DVC stage `robustness` (opt-in): every scenario through the stages -> data/robustness/scores.parquet."""

from migrainemamba.pipeline import run_stage
from migrainemamba.stages.robustness import run

if __name__ == "__main__":
    run_stage("robustness", run)
