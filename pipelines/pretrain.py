"""DVC stage `pretrain`: self-supervised diary encoder -> data/models/pretrain/, metrics/pretrain.json."""

from migrainemamba.pipeline import run_stage
from migrainemamba.stages.pretrain import run

if __name__ == "__main__":
    run_stage("pretrain", run)
