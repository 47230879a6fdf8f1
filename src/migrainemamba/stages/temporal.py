"""DVC stage `temporal`: fine-tune the pretrained Mamba encoder + onset head, and the GRU baseline.

The temporal model (``data/models/temporal``, registered ``migrainemamba-temporal``) is trained by
default on top of the foundation model (its log-odds are the offset the sequence model corrects;
``temporal.offset: none`` trains a stand-alone sequence model). ``temporal.model`` says how it reads
the diary: causally over the whole history (recurrent serving), starting from the forward half of
the bidirectionally pretrained encoder. The GRU baseline (``data/models/gru``) is trained by the
same code. Model folders hold only what serving loads; the experiments (the window variant, label
efficiency) are the `temporal_experiments` stage's.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from omegaconf import DictConfig

from migrainemamba import distributed
from migrainemamba.config import resolve_path, to_dict
from migrainemamba.models.pretrain import TrainConfig
from migrainemamba.models.sequence_heads import SequenceModelConfig
from migrainemamba.models.temporal_training import (
    encoder_init,
    fit_sequence_model,
    fit_summary,
    load_pretrained,
    load_stage_data,
    register,
    training_data,
    training_offset,
)
from migrainemamba.stages.common import finish, seconds_since, tracked

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Every rank of a distributed run (``trainer=cpu_ddp``, ``trainer=gpu``) trains; rank 0 writes."""
    with distributed.ranks():
        return _run(cfg)


def _run(cfg: DictConfig) -> dict[str, Any]:
    tc = cfg.temporal
    started = time.perf_counter()
    pre_cfg, stats, encoder_state = load_pretrained(resolve_path(tc.pretrained_dir))
    model_cfg = SequenceModelConfig.from_dict(pre_cfg.to_dict() | to_dict(tc.model))
    init_state = encoder_init(pre_cfg, model_cfg, encoder_state)
    train_cfg = TrainConfig.from_dict(to_dict(tc.train))
    torch.set_num_threads(train_cfg.num_threads)
    data = load_stage_data(cfg, stats=stats)
    if tc.offset == "foundation":
        data.offset_model, data.offset = training_offset(cfg, data)
    elif tc.offset not in (None, "none"):
        raise ValueError(f"temporal.offset must be 'foundation' or 'none', got {tc.offset!r}")
    data = training_data(cfg, data)  # the cohort's training people, or a fresh simulated cohort
    timings: dict[str, float] = {"data_seconds": seconds_since(started)}
    train_rows = data.rows("train", scorable=True)
    model_dir, gru_dir = resolve_path(tc.model_dir), resolve_path(tc.gru_dir)
    params = {"temporal": to_dict(tc), "pretrained_model": pre_cfg.to_dict(), "split": to_dict(cfg.split)}
    metrics: dict[str, Any] = {}
    writer = distributed.is_global_zero()  # the other ranks of a distributed run train and discard
    with tracked(cfg, "temporal", params) as run:  # None on ranks > 0
        # the temporal model: pretrained Mamba encoder + onset head
        t = time.perf_counter()
        temporal = fit_sequence_model(
            "temporal", model_cfg, train_cfg, data, train_rows, init_state, cfg, run, "temporal",
            encoder_lr_scale=float(tc.encoder_lr_scale), recalibrate=bool(tc.recalibrate),
        )
        if writer:
            temporal.save(model_dir)
        timings["temporal_seconds"] = seconds_since(t)
        # the GRU baseline: the same reading of the diary, head, losses, early stopping; no pretraining
        t = time.perf_counter()
        gru_cfg = SequenceModelConfig.from_dict(model_cfg.to_dict() | {"encoder": "gru", "gru_hidden": 0} | to_dict(tc.gru.model))
        gru = fit_sequence_model(
            "gru", gru_cfg, TrainConfig.from_dict(to_dict(tc.train) | to_dict(tc.gru.train)), data, train_rows, None, cfg, run, "gru",
            recalibrate=bool(tc.recalibrate),
        )
        if writer:
            gru.save(gru_dir)
        timings["gru_seconds"] = seconds_since(t)
        metrics["temporal"], metrics["gru"] = fit_summary(temporal), fit_summary(gru)
        if run is not None:
            t = time.perf_counter()
            info = register(model_dir, str(tc.registered_model_name))
            log.info("registered %r version %s", str(tc.registered_model_name), info.registered_model_version)
            timings["register_seconds"] = seconds_since(t)
        timings["seconds"] = seconds_since(started)
        metrics |= timings
        finish(cfg, "temporal", metrics, run)
    return metrics
