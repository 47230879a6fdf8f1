"""DVC stage `package`: champion per phase -> data/serving/, BentoML store, bento -> metrics/package.json."""

from migrainemamba.packaging import run_package
from migrainemamba.pipeline import run_stage

if __name__ == "__main__":
    run_stage("package", run_package)
