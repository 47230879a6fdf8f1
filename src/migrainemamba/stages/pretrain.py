"""DVC stage `pretrain`: self-supervised pretraining of the diary encoder -> data/models/pretrain/.

Masked days + next day, labels unused, on windows ending in the training period of every
non-held-out user; early stopping on windows ending in the validation period. The test period and
the held-out (cold-start) users are never read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

import mlflow
import numpy as np
import torch
from omegaconf import DictConfig

from migrainemamba import distributed
from migrainemamba.config import resolve_path, to_dict
from migrainemamba.models.mamba import MambaEncoder, save_checkpoint
from migrainemamba.models.pretrain import (
    PretrainConfig,
    TrainConfig,
    WindowBatches,
    evaluate_pretrain,
    mse_baselines,
    pretrain_encoder,
    pretrain_rows,
)
from migrainemamba.models.sequence_heads import SequenceModelConfig
from migrainemamba.models.temporal_training import (
    ENCODER_FILE,
    PRETRAIN_META,
    lightning_logger,
    load_stage_data,
    trainer_config,
)
from migrainemamba.pipeline import write_json
from migrainemamba.stages.common import finish, seconds_since, tracked

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Every rank of a distributed run (``trainer=cpu_ddp``, ``trainer=gpu``) trains; rank 0 writes."""
    with distributed.ranks():
        return _run(cfg)


def _run(cfg: DictConfig) -> dict[str, Any]:
    pc = cfg.pretrain
    started = time.perf_counter()
    model_cfg = SequenceModelConfig.from_dict(to_dict(pc.model))
    pre_cfg = PretrainConfig.from_dict(to_dict(pc.objective))
    train_cfg = TrainConfig.from_dict(to_dict(pc.train))
    torch.set_num_threads(train_cfg.num_threads)
    data = load_stage_data(cfg)
    loaded = seconds_since(started)
    out = resolve_path(pc.model_dir)
    train_rows, val_rows = data.rows("train"), data.rows("valid")
    params = {"pretrain": to_dict(pc), "split": to_dict(cfg.split)}
    with tracked(cfg, "pretrain", params) as run:  # None on ranks > 0
        module, summary = pretrain_encoder(
            data.seq, train_rows, val_rows, model_cfg, pre_cfg, train_cfg,
            logger=lightning_logger(run, cfg), progress=bool(pc.progress), trainer_cfg=trainer_config(cfg),
        )
        if not distributed.is_global_zero():  # the same weights as rank 0 (checked): nothing to write
            return {"steps": summary["steps"], "world_size": summary["world_size"]}
        val = WindowBatches(data.seq, pretrain_rows(data.seq, val_rows), model_cfg.window_days)
        rng = np.random.default_rng(train_cfg.seed)
        if 0 < train_cfg.val_samples < len(val):
            val = WindowBatches(data.seq, rng.choice(val.rows, train_cfg.val_samples, replace=False), model_cfg.window_days)
        scores = evaluate_pretrain(module, val, train_cfg.batch_size, seed=train_cfg.seed)
        baselines = mse_baselines(data.seq, val.rows, model_cfg.window_days)
        out.mkdir(parents=True, exist_ok=True)
        if isinstance(module.encoder, MambaEncoder):
            save_checkpoint(module.encoder, out / ENCODER_FILE)
        else:
            torch.save({"state_dict": module.encoder.state_dict()}, out / ENCODER_FILE)
        stats = data.seq.stats
        meta = {
            "model": model_cfg.to_dict(),
            "objective": asdict(pre_cfg),
            "train": asdict(train_cfg),
            "stats": {"columns": list(stats.columns), "mean": stats.mean.tolist(), "std": stats.std.tolist()},
            "summary": summary,
            "rows": "windows ending in the training period of non-held-out users (labels unused)",
        }
        write_json(out / PRETRAIN_META, meta)
        metrics = {
            "val_masked_mse": scores["masked_mse"],
            "val_next_mse": scores["next_mse"],
            "val_mean_mse": baselines["mean_mse"],  # predicting the training mean for every value
            "val_persistence_mse": baselines["persistence_mse"],  # predicting D's values = D-1's
            "n_train_windows": summary["n_train_windows"],
            "epochs": summary["epochs"],
            "steps": summary["steps"],
            "world_size": summary["world_size"],
            "data_seconds": loaded,
            "seconds": seconds_since(started),
        }
        finish(cfg, "pretrain", metrics, run)
        if run is not None:
            mlflow.log_dict(meta, "pretrain.json")
            mlflow.log_artifact(str(out / ENCODER_FILE), "encoder")
    log.info("pretrain: %s", metrics)
    return metrics
