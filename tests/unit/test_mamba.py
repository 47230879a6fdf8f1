"""Tests for the pure-PyTorch Mamba encoder (migrainemamba.models.mamba).

Tolerances: float32 outputs are compared with atol=1e-5 (observed differences are ~1e-8 to
1e-7); float64 with the defaults of torch.testing / gradcheck.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from migrainemamba.models.mamba import (
    MambaConfig,
    MambaEncoder,
    MambaMixer,
    kernels_available,
    load_checkpoint,
    save_checkpoint,
    selective_scan,
)

ATOL = 1e-5  # float32 parity / step-vs-forward tolerance
MIXER_KEYS = {
    "in_proj.weight",
    "conv1d.weight",
    "conv1d.bias",
    "x_proj.weight",
    "dt_proj.weight",
    "dt_proj.bias",
    "A_log",
    "D",
    "out_proj.weight",
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _config(**overrides) -> MambaConfig:
    base = {"n_features": 5, "d_model": 16, "n_layers": 2, "d_state": 8, "d_conv": 4, "expand": 2}
    return MambaConfig(**{**base, **overrides})


def _random_mask(B: int, L: int, p_missing: float = 0.3) -> torch.Tensor:
    return torch.rand(B, L) > p_missing  # (B, L) bool, False = missing day


def _perturb_missing(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    noise = torch.randn_like(x) * 100
    noise[0, ~mask[0]] = float("nan")  # NaNs in missing days must not leak either
    return torch.where(mask.unsqueeze(-1), x, noise)


# --- config & parameters ----------------------------------------------------------------------


def test_config_auto_dt_rank_and_round_trip():
    cfg = MambaConfig(n_features=3, d_model=40)
    assert cfg.dt_rank == 3  # ceil(40 / 16)
    assert MambaConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Unknown MambaConfig keys"):
        MambaConfig.from_dict({**cfg.to_dict(), "nope": 1})
    with pytest.raises(ValueError, match="d_model"):
        MambaConfig(n_features=3, d_model=0)


def test_mixer_parameter_names_and_shapes_match_mamba_ssm():
    m = MambaMixer(d_model=16, d_state=8, d_conv=4, expand=2)  # d_inner 32, dt_rank 1
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "in_proj.weight": (64, 16),
        "conv1d.weight": (32, 1, 4),
        "conv1d.bias": (32,),
        "x_proj.weight": (1 + 16, 32),
        "dt_proj.weight": (32, 1),
        "dt_proj.bias": (32,),
        "A_log": (32, 8),
        "D": (32,),
        "out_proj.weight": (16, 32),
    }
    # mamba-ssm init: A = -(1..N), D = 1, softplus(dt bias) in [dt_min, dt_max]
    torch.testing.assert_close(-torch.exp(m.A_log[0]), -torch.arange(1, 9, dtype=torch.float32))
    assert torch.all(m.D == 1)
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001


# --- selective scan ---------------------------------------------------------------------------


def _scan_loop(u, delta, A, B, C):
    # straightforward sequential reference
    h = torch.zeros(u.shape[0], u.shape[2], A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(u.shape[1]):
        h = (
            torch.exp(delta[:, t, :, None] * A) * h
            + (delta[:, t] * u[:, t])[..., None] * B[:, t, None]
        )
        ys.append((h * C[:, t, None]).sum(-1))
    return torch.stack(ys, 1)


@pytest.mark.parametrize("L", [1, 2, 9])
def test_selective_scan_forward_and_gradcheck(L):
    b, e, n = 3, 5, 4
    args = [
        torch.randn(b, L, e, dtype=torch.double),
        torch.rand(b, L, e, dtype=torch.double),
        -torch.rand(e, n, dtype=torch.double) * 2,
        torch.randn(b, L, n, dtype=torch.double),
        torch.randn(b, L, n, dtype=torch.double),
    ]
    torch.testing.assert_close(selective_scan(*args), _scan_loop(*args))
    args = [a.requires_grad_() for a in args]
    assert torch.autograd.gradcheck(selective_scan, args)


# --- parity with mambapy (independent pure-PyTorch reference) ----------------------------------


def test_mixer_matches_mambapy_block_both_ways():
    from mambapy.mamba import MambaBlock
    from mambapy.mamba import MambaConfig as PyConfig

    # mambapy's MambaBlock has exactly mamba-ssm's names: no prefix mapping needed.
    ours = MambaMixer(d_model=16, d_state=8, d_conv=4, expand=2)
    ref = MambaBlock(PyConfig(d_model=16, n_layers=1, d_state=8, d_conv=4, expand_factor=2))
    assert set(ref.state_dict()) == set(ours.state_dict()) == MIXER_KEYS

    x = torch.randn(4, 30, 16)
    ref.load_state_dict(ours.state_dict(), strict=True)  # ours -> mambapy
    torch.testing.assert_close(ours(x), ref(x), atol=ATOL, rtol=0)

    torch.manual_seed(1)
    ref2 = MambaBlock(PyConfig(d_model=16, n_layers=1, d_state=8, d_conv=4, expand_factor=2))
    ours.load_state_dict(ref2.state_dict(), strict=True)  # mambapy -> ours
    torch.testing.assert_close(ours(x), ref2(x), atol=ATOL, rtol=0)

    # mambapy's recurrent step (cache = (h, last d_conv-1 inputs)) agrees with ours too
    cache = (None, torch.zeros(4, 32, 3))
    state = ours.allocate_state(4)
    for x_t in x[:, :5].unbind(1):
        y_ref, cache = ref2.step(x_t, cache)
        y, state = ours.step(x_t, state)
        torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=0)


def test_encoder_layers_match_mambapy_residual_stack():
    from mambapy.mamba import Mamba
    from mambapy.mamba import MambaConfig as PyConfig

    # our encoder.layers[i].{norm, mixer} == mambapy Mamba.layers[i].{norm, mixer}
    enc = MambaEncoder(_config(n_layers=2))
    ref = Mamba(PyConfig(d_model=16, n_layers=2, d_state=8, d_conv=4, expand_factor=2))
    ref.layers.load_state_dict(enc.layers.state_dict(), strict=True)
    enc.layers.load_state_dict(ref.layers.state_dict(), strict=True)
    h = torch.randn(3, 20, 16)
    ours = h
    for layer in enc.layers:
        ours = layer(ours)
    torch.testing.assert_close(ours, ref(h), atol=ATOL, rtol=0)


# --- parity with mamba-ssm's CUDA kernels (GPU machines only) ----------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or not kernels_available(),
    reason="needs CUDA and mamba-ssm's compiled kernels (pip install '.[gpu]')",
)
def test_mixer_matches_mamba_ssm_cuda_kernels():
    from mamba_ssm import Mamba

    ref = Mamba(d_model=64, d_state=16, d_conv=4, expand=2).cuda()
    ours = MambaMixer(d_model=64, d_state=16, d_conv=4, expand=2)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(8, 90, 64, device="cuda")
    y_ref = ref(x)
    # float32 CUDA kernel vs CPU reference path: tolerance 1e-4 (different summation order)
    torch.testing.assert_close(ours(x.cpu()), y_ref.cpu(), atol=1e-4, rtol=1e-3)
    ours.cuda()
    torch.testing.assert_close(ours(x), y_ref, atol=1e-4, rtol=1e-3)  # our kernel dispatch
    ours.use_kernels = False
    torch.testing.assert_close(ours(x), y_ref, atol=1e-4, rtol=1e-3)  # PyTorch path on CUDA


# --- recurrent step == full causal forward -----------------------------------------------------


def test_mixer_step_equals_forward():
    m = MambaMixer(d_model=16, d_state=8, d_conv=3, expand=2)
    x = torch.randn(4, 25, 16)
    with torch.no_grad():
        y_full = m(x)
        state = m.allocate_state(4)
        ys = []
        for x_t in x.unbind(1):
            y_t, state = m.step(x_t, state)
            ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y_full, atol=ATOL, rtol=0)
    assert state[0].shape == (4, 32, 3) and state[1].shape == (4, 32, 8)


@pytest.mark.parametrize("with_mask", [False, True])
def test_causal_encoder_step_equals_forward(with_mask):
    enc = MambaEncoder(_config(n_layers=3)).eval()
    x = torch.randn(4, 21, 5)
    mask = _random_mask(4, 21) if with_mask else None
    with torch.no_grad():
        y_full = enc(x, mask)
        state = enc.allocate_state(4)
        ys = []
        for t in range(21):
            y_t, state = enc.step(x[:, t], None if mask is None else mask[:, t], state)
            ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y_full, atol=ATOL, rtol=0)


def test_bidirectional_encoder_refuses_step():
    enc = MambaEncoder(_config(bidirectional=True))
    with pytest.raises(RuntimeError, match="causal"):
        enc.allocate_state(2)


# --- checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
def test_checkpoint_round_trip(tmp_path, bidirectional):
    enc = MambaEncoder(_config(bidirectional=bidirectional, dropout=0.1)).eval()
    path = tmp_path / "encoder.pt"
    save_checkpoint(enc, path)
    x, mask = torch.randn(3, 12, 5), _random_mask(3, 12)

    loaded = load_checkpoint(path)  # weights_only=True inside
    assert loaded.config == enc.config
    assert not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, mask), enc(x, mask), atol=0, rtol=0)


def test_checkpoint_loads_in_a_fresh_process_without_importing_mamba_ssm(tmp_path):
    enc = MambaEncoder(_config()).eval()
    save_checkpoint(enc, tmp_path / "encoder.pt")
    x, mask = torch.randn(2, 10, 5), _random_mask(2, 10)
    with torch.no_grad():
        expected = enc(x, mask)
    torch.save({"x": x, "mask": mask}, tmp_path / "inputs.pt")
    code = f"""
import sys, torch
from migrainemamba.models.mamba import load_checkpoint
assert "mamba_ssm" not in sys.modules, "mamba_ssm imported at import time"
enc = load_checkpoint({str(tmp_path / "encoder.pt")!r})
inp = torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)
with torch.no_grad():
    torch.save(enc(inp["x"], inp["mask"]), {str(tmp_path / "out.pt")!r})
assert "mamba_ssm" not in sys.modules, "mamba_ssm imported on CPU"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    torch.testing.assert_close(
        torch.load(tmp_path / "out.pt", weights_only=True), expected, atol=0, rtol=0
    )


# --- training path ----------------------------------------------------------------------------


def test_gradients_flow_and_cpu_backward_at_l90_b32():
    enc = MambaEncoder(MambaConfig(n_features=6, d_model=32, n_layers=2))
    x, mask = torch.randn(32, 90, 6), _random_mask(32, 90)
    enc(x, mask).pow(2).mean().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    grads = {n: p.grad.abs().sum().item() for n, p in enc.named_parameters()}
    assert all(v > 0 for k, v in grads.items() if k.endswith(("A_log", "D", "x_proj.weight"))), (
        grads
    )


# --- missing days -----------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
def test_values_of_missing_days_do_not_change_the_output(bidirectional):
    enc = MambaEncoder(_config(bidirectional=bidirectional)).eval()
    x, mask = torch.randn(3, 16, 5), _random_mask(3, 16)
    with torch.no_grad():
        y = enc(x, mask)
        y_perturbed = enc(_perturb_missing(x, mask), mask)
        y_unmasked = enc(x)  # same values read as observed -> different output
    torch.testing.assert_close(y_perturbed, y, atol=0, rtol=0)
    assert not torch.allclose(y_unmasked, y)


# --- causality --------------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
def test_future_dependence(bidirectional):
    enc = MambaEncoder(_config(bidirectional=bidirectional)).eval()
    x = torch.randn(2, 20, 5)
    x2 = x.clone()
    t = 9
    x2[:, t + 1 :] += torch.randn_like(x2[:, t + 1 :])  # change only days after t
    with torch.no_grad():
        y, y2 = enc(x), enc(x2)
    past_changed = (y[:, : t + 1] - y2[:, : t + 1]).abs().max().item()
    if bidirectional:
        assert past_changed > 1e-4  # reads the future
    else:
        assert past_changed == 0.0  # causal: days <= t untouched


def test_cpu_fallback_is_silent():
    # on CPU the PyTorch scan is the normal path: no warning (debug log only)
    m = MambaMixer(d_model=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(torch.randn(2, 5, 8))
