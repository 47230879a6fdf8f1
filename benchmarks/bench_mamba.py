"""Time forward+backward of the Mamba stack on CPU: our scan vs mambapy's parallel scan.

B=256, d_model=64 (d_inner 128, d_state 16), 2 layers, L in 14/30/90; same weights for both.
Writes benchmarks/results/mamba.json. Run: python benchmarks/bench_mamba.py [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from migrainemamba.models.mamba import MambaConfig, MambaEncoder

OUT = Path(__file__).parent / "results" / "mamba.json"


def _time_fwd_bwd(layers: torch.nn.Module, h: torch.Tensor, reps: int) -> list[float]:
    times = []
    for _ in range(reps + 1):  # first run is warm-up
        x = h.detach().requires_grad_()
        t0 = time.perf_counter()
        y = x
        for layer in layers:
            y = layer(y)
        y.square().mean().backward()
        times.append(time.perf_counter() - t0)
        layers.zero_grad(set_to_none=True)
    return times[1:]


def main(reps: int, lengths: tuple[int, ...], batch: int, d_model: int, n_layers: int) -> dict:
    from mambapy.mamba import Mamba
    from mambapy.mamba import MambaConfig as PyConfig

    torch.manual_seed(0)
    enc = MambaEncoder(MambaConfig(n_features=8, d_model=d_model, n_layers=n_layers))
    ref = Mamba(PyConfig(d_model=d_model, n_layers=n_layers))  # pscan=True
    ref.layers.load_state_dict(enc.layers.state_dict(), strict=True)
    results = []
    for L in lengths:
        h = torch.randn(batch, L, d_model)
        ours = _time_fwd_bwd(enc.layers, h, reps)
        theirs = _time_fwd_bwd(ref.layers, h, reps)
        results.append(
            {
                "L": L,
                "ours_s": round(statistics.median(ours), 4),
                "mambapy_pscan_s": round(statistics.median(theirs), 4),
            }
        )
        print(results[-1], flush=True)
    report = {
        "what": "median seconds of one forward+backward of the residual Mamba stack",
        "batch": batch,
        "d_model": d_model,
        "n_layers": n_layers,
        "d_state": 16,
        "reps": reps,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "results": results,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--lengths", type=int, nargs="+", default=[14, 30, 90])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    a = parser.parse_args()
    main(a.reps, tuple(a.lengths), a.batch, a.d_model, a.n_layers)
