"""DVC stage `robustness` (opt-in): every scenario through the stages -> data/robustness/scores.parquet."""

from migrainemamba.pipeline import run_stage
from migrainemamba.robustness import run_robustness

if __name__ == "__main__":
    run_stage("robustness", run_robustness)
