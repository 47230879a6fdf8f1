"""DVC stage `temporal_experiments`: window variant + label efficiency -> data/experiments/temporal/."""

from migrainemamba.pipeline import run_stage
from migrainemamba.stages.temporal_experiments import run

if __name__ == "__main__":
    run_stage("temporal_experiments", run)
