"""DVC stage `pretrain`: self-supervised diary encoder -> data/models/pretrain, metrics/pretrain.json."""

from migrainemamba.models.temporal_stage import run_pretrain
from migrainemamba.pipeline import run_stage

if __name__ == "__main__":
    run_stage("pretrain", run_pretrain)
