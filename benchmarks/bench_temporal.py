"""CPU latency and throughput of the temporal model's serving forms.

- full pass: one user's forecast = one forward pass over the window of L days (the default
  bidirectional window model; a causal encoder of the same size for comparison), batch 1;
- recurrent step: one day read by the causal model's step mode (per-user state carried), batch 1,
  and replaying L days from an empty state (what a state rebuild costs);
- batch throughput: forecasts per second for batches of windows;
- end to end: ``forecast_user`` of the trained model (diary rows -> sequence features ->
  forecast, plus the foundation offset when the model has one), if data/models/temporal exists.

Architecture as configs/pretrain/default.yaml (weights do not change the cost). One torch thread.
Writes benchmarks/results/temporal.json. Run: python benchmarks/bench_temporal.py [--reps 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from migrainemamba.config import load_config, resolve_path, to_dict
from migrainemamba.models.sequence_heads import OnsetClassifier, SequenceModelConfig

OUT = Path(__file__).parent / "results" / "temporal.json"
LENGTHS = (14, 30, 90, 365)


def _median_ms(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 4)


def _inputs(cfg: SequenceModelConfig, batch: int, length: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, length, cfg.n_features, generator=g)
    mask = torch.rand(batch, length, generator=g) > 0.1
    return x, mask, torch.randn(batch, cfg.n_morning, generator=g), torch.randn(batch, cfg.n_static, generator=g)


@torch.no_grad()
def bench_length(bidir: OnsetClassifier, causal: OnsetClassifier, base: SequenceModelConfig, L: int, reps: int, batch: int) -> dict:
    x, mask, morning, static = _inputs(base, 1, L)
    full_bidir = _median_ms(lambda: bidir(x, mask, morning, static), reps)
    full_causal = _median_ms(lambda: causal(x, mask, morning, static), reps)
    _, state = causal.step(x[:, 0], mask[:, 0], causal.allocate_state(1))

    def one_step() -> None:  # read one more day, then forecast: the per-day serving cost
        h_t, _ = causal.step(x[:, -1], mask[:, -1], state)
        causal.head(h_t, morning, static)

    def replay() -> None:  # rebuild a user's state from L days
        s = causal.allocate_state(1)
        for t in range(L):
            h_t, s = causal.step(x[:, t], mask[:, t], s)
        causal.head(h_t, morning, static)

    xb, mb, mob, sb = _inputs(base, batch, L)
    batch_ms = _median_ms(lambda: bidir(xb, mb, mob, sb), max(3, reps // 10))
    return {
        "L": L,
        "full_pass_bidirectional_ms": full_bidir,
        "full_pass_causal_ms": full_causal,
        "recurrent_step_ms": _median_ms(one_step, reps),
        "recurrent_replay_L_days_ms": _median_ms(replay, max(3, reps // 5)),
        "batch_forecasts_per_s": round(batch / (batch_ms / 1000), 1),
        "full_pass_ms_per_day": round(full_bidir / L, 5),
    }


def bench_encoders(base: SequenceModelConfig, reps: int, throughput_batch: int) -> list[dict]:
    bidir = OnsetClassifier(base).eval()
    causal = OnsetClassifier(SequenceModelConfig.from_dict(base.to_dict() | {"bidirectional": False})).eval()
    rows = []
    for L in LENGTHS:
        rows.append(bench_length(bidir, causal, base, L, reps, throughput_batch))
        print(rows[-1], flush=True)
    return rows


def linear_fit(rows: list[dict], key: str) -> dict:
    """Least-squares cost = a + b * L and the worst relative residual (linear growth check)."""
    L = np.array([r["L"] for r in rows], float)
    y = np.array([r[key] for r in rows], float)
    b, a = np.polyfit(L, y, 1)
    pred = a + b * L
    return {"intercept_ms": round(a, 4), "ms_per_day": round(b, 5), "max_rel_residual": round(float(np.max(np.abs(y - pred) / y)), 3)}


def bench_end_to_end(reps: int) -> dict | None:
    model_dir = resolve_path("data/models/temporal")
    if not (model_dir / "model.pt").is_file() or not resolve_path("data/prepared/daily_logs.parquet").is_file():
        return None
    import polars as pl

    from migrainemamba.models.temporal import TemporalModel

    model = TemporalModel.load(model_dir)
    logs = pl.read_parquet(resolve_path("data/prepared/daily_logs.parquet"))
    users = pl.read_parquet(resolve_path("data/prepared/users.parquet"))
    counts = logs.group_by("user_id").len().sort("len", descending=True)
    user_id = counts["user_id"][0]
    diary = logs.filter(pl.col("user_id") == user_id)
    person = users.filter(pl.col("user_id") == user_id)
    date = diary["date"].max()
    ms = _median_ms(lambda: model.forecast_user(person, diary, date), max(5, reps // 3))
    return {
        "forecast_user_ms": ms,
        "diary_rows": diary.height,
        "window_days": model.config.window_days,
        "offset_model": model.offset_model is not None,
    }


def main(reps: int, throughput_batch: int) -> dict:
    torch.set_num_threads(1)
    base = SequenceModelConfig.from_dict(to_dict(load_config().pretrain.model))
    rows = bench_encoders(base, reps, throughput_batch)
    report = {
        "what": "median CPU milliseconds, batch 1 unless stated; weights random (cost only)",
        "architecture": base.to_dict(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "throughput_batch": throughput_batch,
        "results": rows,
        "linear_in_L": {
            key: linear_fit(rows, key)
            for key in ("full_pass_bidirectional_ms", "full_pass_causal_ms", "recurrent_replay_L_days_ms")
        },
        "end_to_end": bench_end_to_end(reps),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    print(json.dumps(main(args.reps, args.batch)["linear_in_L"], indent=2))
