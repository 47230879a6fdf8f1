"""DVC stage `evaluate`: score every model family on held-out days -> data/evaluation/, metrics/evaluate.json."""

from migrainemamba.pipeline import run_stage
from migrainemamba.stages.evaluate import run

if __name__ == "__main__":
    run_stage("evaluate", run)
