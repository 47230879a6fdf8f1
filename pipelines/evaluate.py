"""DVC stage `evaluate`: score every model family on held-out days -> metrics/evaluate.json."""

from migrainemamba.evaluation.stage import run_evaluate
from migrainemamba.pipeline import run_stage

if __name__ == "__main__":
    run_stage("evaluate", run_evaluate)
