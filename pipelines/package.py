"""DVC stage `package`: champion per phase -> data/serving/, BentoML store, bento -> metrics/package.json."""

from migrainemamba.pipeline import run_stage
from migrainemamba.stages.package import run

if __name__ == "__main__":
    run_stage("package", run)
