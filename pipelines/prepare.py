"""DVC stage `prepare`: simulate or import the cohort -> data/prepared/, metrics/prepare.json."""

from migrainemamba.pipeline import run_stage
from migrainemamba.stages.prepare import run

if __name__ == "__main__":
    run_stage("prepare", run)
