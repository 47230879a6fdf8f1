"""DVC stage `prepare`: simulate or import the cohort -> data/prepared/, metrics/prepare.json."""

from migrainemamba.data.stage import run_prepare
from migrainemamba.pipeline import run_stage

if __name__ == "__main__":
    run_stage("prepare", run_prepare)
