"""DVC stage `temporal_experiments`: research runs beside the temporal model, outside model folders.

- the other reading of the diary (``temporal.variant``: by default the DESIGN's bidirectional
  30-day window), fine-tuned like the temporal model, saved to
  ``data/experiments/temporal/<variant name>/`` and scored on validation days against it;
- label efficiency (``temporal.label_efficiency``): a share of the training users' labels,
  pretrained vs from scratch (``data/experiments/temporal/label_efficiency.json``, plot in
  ``plots/temporal_experiments/`` and MLflow).

Neither changes the registered temporal model, so neither changes its registry version.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import mlflow
import numpy as np
import torch
from omegaconf import DictConfig

from migrainemamba import distributed
from migrainemamba.config import resolve_path, to_dict
from migrainemamba.experiments.label_efficiency import label_efficiency, plot_label_efficiency
from migrainemamba.models.pretrain import TrainConfig
from migrainemamba.models.sequence_heads import SequenceModelConfig
from migrainemamba.models.temporal_training import (
    encoder_init,
    fit_sequence_model,
    fit_summary,
    load_pretrained,
    load_stage_data,
    training_offset,
)
from migrainemamba.pipeline import write_json
from migrainemamba.stages.common import finish, seconds_since, tracked

log = logging.getLogger(__name__)

STAGE = "temporal_experiments"


def _valid_loss(model: Any, data: Any) -> float:
    """Mean log loss on every scorable validation day (the variant's comparison with the model)."""
    rows = data.rows("valid", scorable=True)
    p = np.clip(model.predict_rows(data.seq, rows, data.offset), 1e-6, 1 - 1e-6)
    y = data.seq.onset[rows].astype(float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def run(cfg: DictConfig) -> dict[str, Any]:
    """Every rank of a distributed run (``trainer=cpu_ddp``, ``trainer=gpu``) trains; rank 0 writes."""
    with distributed.ranks():
        return _run(cfg)


def _run(cfg: DictConfig) -> dict[str, Any]:
    tc = cfg.temporal
    started = time.perf_counter()
    writer = distributed.is_global_zero()  # the other ranks of a distributed run train and discard
    out = resolve_path(cfg.paths.data_dir) / "experiments" / "temporal"
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    pre_cfg, stats, encoder_state = load_pretrained(resolve_path(tc.pretrained_dir))
    model_cfg = SequenceModelConfig.from_dict(pre_cfg.to_dict() | to_dict(tc.model))
    init_state = encoder_init(pre_cfg, model_cfg, encoder_state)
    torch.set_num_threads(TrainConfig.from_dict(to_dict(tc.train)).num_threads)
    data = load_stage_data(cfg, stats=stats)
    if tc.offset == "foundation":
        data.offset_model, data.offset = training_offset(cfg, data)
    train_rows = data.rows("train", scorable=True)
    params = {"temporal": to_dict(tc), "pretrained_model": pre_cfg.to_dict(), "split": to_dict(cfg.split)}
    metrics: dict[str, Any] = {}
    with tracked(cfg, STAGE, params) as run:
        if tc.variant.enabled:
            t = time.perf_counter()
            variant_cfg = SequenceModelConfig.from_dict(pre_cfg.to_dict() | to_dict(tc.variant.model))
            variant = fit_sequence_model(
                "temporal", variant_cfg, TrainConfig.from_dict(to_dict(tc.train) | to_dict(tc.variant.train)),
                data, train_rows, encoder_init(pre_cfg, variant_cfg, encoder_state), cfg, run,
                f"temporal_{tc.variant.name}",
            )
            name = f"variant_{tc.variant.name}"
            if writer:
                variant.save(out / str(tc.variant.name))
                metrics[f"{name}_valid_logloss"] = round(_valid_loss(variant, data), 5)
                write_json(out / f"{name}.json", fit_summary(variant))
            metrics[f"{name}_seconds"] = seconds_since(t)
        if tc.label_efficiency.enabled:
            t = time.perf_counter()
            results = label_efficiency(cfg, data, model_cfg, init_state, run)
            if not writer:
                return metrics
            figure = plot_label_efficiency(results, resolve_path(cfg.paths.plots) / STAGE / "label_efficiency.png")
            write_json(out / "label_efficiency.json", results)
            for offset, by_fraction in results.items():  # headline: the paired Brier-skill gains
                for fraction, result in by_fraction.items():
                    diff = result["pretrained_minus_scratch"]
                    metrics[f"pretrained_minus_scratch_brier_skill_{offset}_{fraction}"] = diff["brier_skill"]
            metrics["label_efficiency_seconds"] = seconds_since(t)
            if run is not None:
                mlflow.log_artifact(str(figure), "figures")
                mlflow.log_dict(results, "label_efficiency.json")
        metrics["seconds"] = seconds_since(started)
        finish(cfg, STAGE, metrics, run)
    return metrics
