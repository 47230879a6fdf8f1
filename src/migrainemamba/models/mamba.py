"""Mamba (selective state-space) encoder for the temporal model, in pure PyTorch.

Parameter names and shapes follow mamba-ssm's `Mamba` block (`in_proj`, `conv1d`, `x_proj`,
`dt_proj`, `A_log`, `D`, `out_proj`), so one checkpoint serves this CPU path and mamba-ssm's
CUDA kernels. The kernels are used only when `mamba_ssm` imports AND the tensors are on CUDA;
`mamba_ssm` is imported lazily, never when this module is imported (docs/architecture.md, Machine notes: it fails to
import without its compiled CUDA extension).

Shapes: B batch, L sequence length (days), F input features, D d_model, E d_inner = expand * D,
N d_state, R dt_rank, K d_conv.

The CPU selective scan is a custom autograd.Function (`selective_scan`): one in-place recurrence
over time in the forward, one in the backward, everything else batched. Autograd never sees a
per-step slice, so the backward does not allocate a full-size gradient per step (docs/architecture.md, Machine notes).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

logger = logging.getLogger(__name__)

SsmState = tuple[torch.Tensor, torch.Tensor]  # (conv_state (B, E, K), ssm_state (B, E, N))

# ----------------------------------------------------------------------------------------------
# Optional mamba-ssm kernels: resolved on first use on a CUDA tensor, one flag for the module.

_KERNELS_AVAILABLE: bool | None = None  # None = not tried yet
_selective_scan_fn = None
_causal_conv1d_fn = None
_fallback_reported = False


def kernels_available() -> bool:
    """True if mamba-ssm's selective-scan CUDA kernel imports (tried once, then cached)."""
    global _KERNELS_AVAILABLE, _selective_scan_fn, _causal_conv1d_fn
    if _KERNELS_AVAILABLE is None:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except ImportError:
            _KERNELS_AVAILABLE = False
        else:
            _selective_scan_fn = selective_scan_fn
            try:
                from causal_conv1d import causal_conv1d_fn
            except ImportError:
                causal_conv1d_fn = None
            _causal_conv1d_fn = causal_conv1d_fn
            _KERNELS_AVAILABLE = True
    return _KERNELS_AVAILABLE


def _use_kernels(x: torch.Tensor) -> bool:
    """Dispatch: kernels only on CUDA and only if they import; report the fallback once."""
    global _fallback_reported
    if x.is_cuda and kernels_available():
        return True
    if not _fallback_reported:
        _fallback_reported = True
        if x.is_cuda:
            warnings.warn(
                "mamba-ssm CUDA kernels are not importable: using the slower pure-PyTorch "
                "selective scan on CUDA. Install the `gpu` extra (mamba-ssm, causal-conv1d) "
                "to use them.",
                stacklevel=3,
            )
        else:
            logger.debug("Mamba on CPU: using the pure-PyTorch selective scan.")
    return False


# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class MambaConfig:
    n_features: int  # F: input features per day (the encoder adds one for the observed-mask)
    d_model: int = 64  # D
    n_layers: int = 2
    d_state: int = 16  # N
    d_conv: int = 4  # K
    expand: int = 2  # E = expand * D
    dt_rank: int | str = "auto"  # R; "auto" -> ceil(d_model / 16), resolved at construction
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init: str = "random"  # "random" | "constant" (mamba-ssm's dt_proj.weight init)
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False  # in_proj / out_proj bias, as mamba-ssm
    norm_eps: float = 1e-5  # RMSNorm epsilon
    dropout: float = 0.0
    bidirectional: bool = False

    def __post_init__(self) -> None:
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        for name in ("n_features", "d_model", "n_layers", "d_state", "d_conv", "expand", "dt_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MambaConfig.{name} must be a positive int, got {value!r}")
        if not 0.0 < self.dt_min <= self.dt_max:
            raise ValueError(
                f"MambaConfig needs 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}"
            )
        if self.dt_init not in ("random", "constant"):
            raise ValueError(
                f"MambaConfig.dt_init must be 'random' or 'constant', got {self.dt_init!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MambaConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MambaConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(
                f"Unknown MambaConfig keys {sorted(unknown)}: the checkpoint or config was written "
                "by another version of migrainemamba.models.mamba."
            )
        return cls(**d)


# ----------------------------------------------------------------------------------------------
# Selective scan (pure PyTorch)


class _SelectiveScan(torch.autograd.Function):
    """h_t = exp(delta_t A) * h_{t-1} + delta_t u_t B_t ;  y_t = h_t . C_t   (h_{-1} = 0).

    Works time-major so each step's slice is contiguous. The two loops run outside autograd
    (in-place on preallocated buffers); all the rest is batched elementwise ops and bmm.
    Saves h and exp(delta A) for the backward: 2 * L*B*E*N floats per mixer.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        # u, delta: (B, L, E); A: (E, N); B, C: (B, L, N)
        u, delta, B, C = (t.transpose(0, 1).contiguous() for t in (u, delta, B, C))  # (L, B, *)
        L, Bt, E = u.shape
        N = A.shape[1]
        dA = (delta.unsqueeze(-1) * A).exp_()  # (L, B, E, N)
        hs = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # (L, B, E, N): delta u B, scanned in place
        for t in range(1, L):
            hs[t].addcmul_(dA[t], hs[t - 1])  # h_t = dA_t * h_{t-1} + dBu_t
        y = torch.bmm(hs.view(L * Bt, E, N), C.view(L * Bt, N, 1)).view(L, Bt, E)
        ctx.save_for_backward(u, delta, A, B, C, hs, dA)
        return y.transpose(0, 1)  # (B, L, E)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        u, delta, A, B, C, hs, dA = ctx.saved_tensors
        L, Bt, E = u.shape
        N = A.shape[1]
        gy = gy.transpose(0, 1).contiguous()  # (L, B, E)
        gC = torch.bmm(gy.view(L * Bt, 1, E), hs.view(L * Bt, E, N)).view(L, Bt, N)
        G = gy.unsqueeze(-1) * C.unsqueeze(2)  # (L, B, E, N): dLoss/dh_t, local part
        for t in range(L - 2, -1, -1):
            G[t].addcmul_(dA[t + 1], G[t + 1])  # + what flows back from h_{t+1}
        # now G_t = dLoss/dh_t = dLoss/d(dBu_t)
        du = delta * u  # (L, B, E)
        g_du = torch.bmm(G.view(L * Bt, E, N), B.view(L * Bt, N, 1)).view(L, Bt, E)
        gB = torch.bmm(du.view(L * Bt, 1, E), G.view(L * Bt, E, N)).view(L, Bt, N)
        gz = G[1:].mul_(hs[:-1]).mul_(dA[1:]).view(-1, E, N)  # dLoss/d(delta_t A), t >= 1; h_{-1}=0
        gA = torch.einsum("ken,ke->en", gz, delta[1:].reshape(-1, E))
        gdelta = g_du * u
        gdelta[1:] += gz.mul_(A).sum(-1).view(L - 1, Bt, E)
        gu = g_du * delta
        return (
            gu.transpose(0, 1),
            gdelta.transpose(0, 1),
            gA,
            gB.transpose(0, 1),
            gC.transpose(0, 1),
        )


def selective_scan(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """Mamba's selective scan without the D skip and z gate, batch-major.

    u, delta (B, L, E) (delta already softplus'ed), A (E, N), B, C (B, L, N) -> y (B, L, E).
    """
    return _SelectiveScan.apply(u, delta, A, B, C)


# ----------------------------------------------------------------------------------------------
# Mixer: one selective SSM block (mamba-ssm's `Mamba`)


class MambaMixer(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_kernels: bool = True,
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.use_kernels = use_kernels  # False forces the PyTorch path (parity tests)
        E, N, R = self.d_inner, d_state, self.dt_rank

        self.in_proj = nn.Linear(d_model, 2 * E, bias=bias)
        self.conv1d = nn.Conv1d(
            E, E, kernel_size=d_conv, groups=E, padding=d_conv - 1, bias=conv_bias
        )
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.out_proj = nn.Linear(E, d_model, bias=bias)

        # mamba-ssm's dt init: weight ~ U(-R^-0.5, R^-0.5) * dt_scale, bias = softplus^-1(dt),
        # dt log-uniform in [dt_min, dt_max] floored at dt_init_floor
        dt_init_std = R**-0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        dt = torch.exp(
            torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_dt)
        self.dt_proj.bias._no_reinit = True

        # S4D-real init: A = -(1..N) for every channel, stored as log(-A)
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1).contiguous()  # (E, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(E))  # skip connection
        self.D._no_weight_decay = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, L, D) -> (B, L, D); causal in L
        L = x.shape[1]
        if self.use_kernels and _use_kernels(x):
            return self._forward_kernels(x)
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, E) each
        u = self.conv1d(u.transpose(1, 2))[..., :L]  # (B, E, L): causal depthwise conv
        u = F.silu(u).transpose(1, 2)  # (B, L, E)
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))  # (B, L, E)
        dtype = torch.promote_types(x.dtype, torch.float32)  # scan in >= fp32, as mamba-ssm
        A = -torch.exp(self.A_log.to(dtype))  # (E, N)
        y = selective_scan(u.to(dtype), dt.to(dtype), A, B.to(dtype), C.to(dtype)).to(x.dtype)
        y = y + u * self.D  # (B, L, E)
        y = y * F.silu(z)
        return self.out_proj(y)  # (B, L, D)

    def _forward_kernels(self, x: torch.Tensor) -> torch.Tensor:
        # mamba-ssm's Mamba.forward without inference_params / mamba_inner_fn, channel-major
        L = x.shape[1]
        u, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (B, E, L) each
        if _causal_conv1d_fn is not None:
            u = _causal_conv1d_fn(
                x=u.contiguous(),
                weight=self.conv1d.weight.squeeze(1),
                bias=self.conv1d.bias,
                activation="silu",
            )
        else:
            u = F.silu(self.conv1d(u)[..., :L])
        x_dbl = self.x_proj(u.transpose(1, 2))  # (B, L, R + 2N)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (B, E, L); bias+softplus in kernel
        y = _selective_scan_fn(
            u,
            dt,
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )  # (B, E, L)
        return self.out_proj(y.transpose(1, 2))  # (B, L, D)

    # --- recurrent mode (serving) -------------------------------------------------------------

    def allocate_state(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> SsmState:
        """Zero state = the state before the first step (same shapes as mamba-ssm's cache)."""
        device = device if device is not None else self.A_log.device
        dtype = dtype if dtype is not None else self.in_proj.weight.dtype
        conv_state = torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype)
        ssm_state = torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=dtype)
        return conv_state, ssm_state

    def step(self, x_t: torch.Tensor, state: SsmState) -> tuple[torch.Tensor, SsmState]:
        """One time step: x_t (B, D) -> y_t (B, D). Returns a new state (no in-place update)."""
        conv_state, ssm_state = state  # (B, E, K), (B, E, N)
        u, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B, E) each
        conv_state = torch.cat([conv_state[..., 1:], u.unsqueeze(-1)], dim=-1)  # (B, E, K)
        u = (conv_state * self.conv1d.weight.squeeze(1)).sum(-1)  # (B, E)
        if self.conv1d.bias is not None:
            u = u + self.conv1d.bias
        u = F.silu(u)
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))  # (B, E)
        A = -torch.exp(self.A_log.to(ssm_state.dtype))  # (E, N)
        dA = torch.exp(dt.unsqueeze(-1) * A)  # (B, E, N)
        ssm_state = dA * ssm_state + (dt * u).unsqueeze(-1) * B.unsqueeze(1)  # (B, E, N)
        y = torch.bmm(ssm_state, C.unsqueeze(-1)).squeeze(-1) + u * self.D  # (B, E)
        y = y * F.silu(z)
        return self.out_proj(y), (conv_state, ssm_state)  # (B, D)


# ----------------------------------------------------------------------------------------------
# Encoder


class MambaLayer(nn.Module):
    """Pre-norm residual block: h + mixer(norm(h)) (+ reversed-time mixer if bidirectional).

    Bidirectional outputs are SUMMED into the residual (no extra projection); the backward
    mixer has its own parameters (`mixer_bwd`) and runs over the time-reversed sequence.
    Names `norm`, `mixer` match mamba-ssm's `Block` and mambapy's `ResidualBlock`.
    """

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        c = config
        self.norm = nn.RMSNorm(c.d_model, eps=c.norm_eps)
        self.mixer = _make_mixer(c)
        self.mixer_bwd = _make_mixer(c) if c.bidirectional else None
        self.drop = nn.Dropout(c.dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.norm(h)  # (B, L, D)
        y = self.mixer(x)
        if self.mixer_bwd is not None:
            y = y + self.mixer_bwd(x.flip(1)).flip(1)
        return h + self.drop(y)  # (B, L, D)

    def step(self, h_t: torch.Tensor, state: SsmState) -> tuple[torch.Tensor, SsmState]:
        y, state = self.mixer.step(self.norm(h_t), state)  # (B, D)
        return h_t + self.drop(y), state


def _make_mixer(c: MambaConfig) -> MambaMixer:
    return MambaMixer(
        d_model=c.d_model,
        d_state=c.d_state,
        d_conv=c.d_conv,
        expand=c.expand,
        dt_rank=c.dt_rank,
        dt_min=c.dt_min,
        dt_max=c.dt_max,
        dt_init=c.dt_init,
        dt_scale=c.dt_scale,
        dt_init_floor=c.dt_init_floor,
        conv_bias=c.conv_bias,
        bias=c.bias,
    )


class MambaEncoder(nn.Module):
    """(B, L, F) daily features + (B, L) observed-mask -> (B, L, D) per-day representations.

    Missing days (mask False): their inputs are zeroed AND the mask is appended as an input
    feature, before the input projection. So the values stored for a missing day never reach
    the model (NaN included), and the model can still tell "missing" from "observed zero".
    The SSM keeps running over missing days (time still passes); only their content is hidden.
    """

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.config = config
        self.input_proj = nn.Linear(config.n_features + 1, config.d_model)  # +1: mask feature
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(MambaLayer(config) for _ in range(config.n_layers))
        self.norm_f = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        # mamba-ssm's MixerModel init (_init_weights): zero Linear biases except dt_proj's, and
        # rescale out_proj by 1/sqrt(residuals per layer * n_layers) (prenorm residual scaling).
        n_residuals = self.config.n_layers * (2 if self.config.bidirectional else 1)
        for name, module in self.named_modules():
            bias = getattr(module, "bias", None) if isinstance(module, nn.Linear) else None
            if bias is not None and not getattr(bias, "_no_reinit", False):
                nn.init.zeros_(bias)
            if name.endswith("out_proj"):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
                with torch.no_grad():
                    module.weight /= math.sqrt(n_residuals)

    def _embed(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # x: (B, L, F) or (B, F); mask: same leading dims, bool, True = observed
        if mask is None:
            mask = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        if mask.shape != x.shape[:-1]:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} must be x.shape[:-1] = {tuple(x.shape[:-1])}"
            )
        m = mask.to(torch.bool).unsqueeze(-1)
        x = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))  # hide missing days
        return self.drop(self.input_proj(torch.cat([x, m.to(x.dtype)], dim=-1)))  # (..., D)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, F), mask: (B, L) bool or None (all observed)
        if x.dim() != 3 or x.shape[-1] != self.config.n_features:
            raise ValueError(f"x must be (B, L, {self.config.n_features}), got {tuple(x.shape)}")
        h = self._embed(x, mask)  # (B, L, D)
        for layer in self.layers:
            h = layer(h)
        return self.norm_f(h)  # (B, L, D)

    # --- recurrent mode (serving; causal encoders only) ---------------------------------------

    def allocate_state(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> list[SsmState]:
        self._check_causal()
        return [layer.mixer.allocate_state(batch, device, dtype) for layer in self.layers]

    def step(
        self, x_t: torch.Tensor, mask_t: torch.Tensor | None, state: list[SsmState]
    ) -> tuple[torch.Tensor, list[SsmState]]:
        """One day: x_t (B, F), mask_t (B,) bool or None -> (B, D), equal to forward()[:, t]."""
        self._check_causal()
        h = self._embed(x_t, mask_t)  # (B, D)
        new_state = []
        for layer, s in zip(self.layers, state, strict=True):
            h, s = layer.step(h, s)
            new_state.append(s)
        return self.norm_f(h), new_state

    def _check_causal(self) -> None:
        if self.config.bidirectional:
            raise RuntimeError(
                "step() needs a causal encoder: this one is bidirectional (it reads future days). "
                "Use forward() on the whole sequence, or train with bidirectional=False."
            )


# ----------------------------------------------------------------------------------------------
# Checkpoints: the config travels with the weights


def save_checkpoint(model: MambaEncoder, path: str | Path) -> None:
    """Write {"config": dict, "state_dict": ...}; plain types + tensors (weights_only-safe)."""
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"config": model.config.to_dict(), "state_dict": state_dict}, Path(path))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> MambaEncoder:
    """Rebuild a MambaEncoder from its checkpoint file alone (in eval mode)."""
    ckpt = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or not {"config", "state_dict"} <= set(ckpt):
        raise ValueError(
            f"{path} is not a MambaEncoder checkpoint (needs 'config' and 'state_dict')"
        )
    model = MambaEncoder(MambaConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.to(map_location).eval()
