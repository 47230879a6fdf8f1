"""The DDP test's command (no tests here): the pretrain and the temporal stage, one after the other,
in one process per rank. ``python -m tests.integration.ddp_stages <Hydra overrides>``; with
``trainer=cpu_ddp`` Lightning re-executes this command for rank 1 at rank 0's first fit."""

from __future__ import annotations

import sys

from migrainemamba import distributed
from migrainemamba.config import load_config
from migrainemamba.runtime import configure_entry_point
from migrainemamba.stages import pretrain, temporal


def main() -> None:
    configure_entry_point()
    cfg = load_config(sys.argv[1:])
    with distributed.ranks():  # the stages end with a barrier; the run ends once every rank is done
        pretrain.run(cfg)
        temporal.run(cfg)


if __name__ == "__main__":
    main()
