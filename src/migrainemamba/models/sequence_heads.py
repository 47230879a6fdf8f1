"""Onset classifiers over diary sequences: an encoder (Mamba or GRU) plus one small head.

Shapes: B batch, L window days, T history days, F per-day inputs, Fm morning inputs of the
forecast day, Fs static (per-user) inputs, D d_model.

Two ways to read a diary (``SequenceModelConfig.window_days``):

- window (``window_days > 0``, docs/architecture.md §5; the pretraining reading): the L calendar days D−L..D−1 before
  the forecast day, read bidirectionally (or causally); the head reads the LAST day's
  representation. One forward pass per forecast.
- history (``window_days == 0``, causal encoders only; the fine-tuned default): the person's whole diary from their first
  day, preceded by one empty day, read causally. Output t is the state after day t−1, so one pass
  forecasts every day at once, and the recurrent ``step`` mode carries a per-user state forward one
  day at a time with the same outputs (serving: O(1) per new day).

The head: logit = MLP([h_last (D), morning of D (Fm), static (Fs)]).

The GRU baseline uses the same input embedding (missing days zeroed and flagged, as
``MambaEncoder``), the same head and the same training code; its hidden size is chosen so that
its parameter count is as close as possible to the Mamba encoder's (``gru_hidden: 0``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from migrainemamba.features.sequences import MORNING_COLUMNS, STATIC_COLUMNS, VALUE_COLUMNS
from migrainemamba.models.mamba import MambaConfig, MambaEncoder

ENCODERS = ("mamba", "gru")

GruState = torch.Tensor  # (n_layers, B, H)


@dataclass
class SequenceModelConfig:
    """Architecture of an onset classifier; stored in every checkpoint (rebuild from file alone)."""

    encoder: str = "mamba"  # "mamba" | "gru"
    window_days: int = 30  # L; 0 = the whole history (causal encoders only)
    d_model: int = 32  # D
    n_layers: int = 2
    d_state: int = 16  # Mamba N
    d_conv: int = 4
    expand: int = 2
    bidirectional: bool = True
    dropout: float = 0.1
    gru_hidden: int = 0  # 0 = auto: match the Mamba encoder's parameter count
    head_hidden: int = 64
    n_features: int = len(VALUE_COLUMNS)  # F
    n_morning: int = len(MORNING_COLUMNS)  # Fm
    n_static: int = len(STATIC_COLUMNS)  # Fs

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.window_days < 0:
            raise ValueError(f"window_days must be >= 0 (0 = whole history), got {self.window_days}")
        if self.window_days == 0 and self.bidirectional:
            raise ValueError(
                "window_days: 0 (whole history, recurrent serving) needs a causal encoder: "
                "set bidirectional: false"
            )
        if self.encoder == "gru" and self.gru_hidden == 0:
            self.gru_hidden = match_gru_hidden(self)

    @property
    def causal(self) -> bool:
        return not self.bidirectional

    def mamba_config(self) -> MambaConfig:
        return MambaConfig(
            n_features=self.n_features,
            d_model=self.d_model,
            n_layers=self.n_layers,
            d_state=self.d_state,
            d_conv=self.d_conv,
            expand=self.expand,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SequenceModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"SequenceModelConfig: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**d)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _gru_parameters(n_in: int, hidden: int, n_layers: int, bidirectional: bool) -> int:
    dirs = 2 if bidirectional else 1
    total = 0
    for layer in range(n_layers):
        size_in = n_in if layer == 0 else hidden * dirs
        total += dirs * 3 * (hidden * size_in + hidden * hidden + 2 * hidden)
    return total


def match_gru_hidden(cfg: SequenceModelConfig) -> int:
    """Hidden size whose GRU encoder has the parameter count closest to the Mamba encoder's."""
    target = count_parameters(MambaEncoder(cfg.mamba_config()))
    dirs = 2 if cfg.bidirectional else 1
    fixed = (cfg.n_features + 1) * cfg.d_model + cfg.d_model  # input_proj
    best, best_gap = 1, math.inf
    for hidden in range(1, 4 * cfg.d_model + 1):
        n = fixed + _gru_parameters(cfg.d_model, hidden, cfg.n_layers, cfg.bidirectional)
        n += hidden * dirs * cfg.d_model + cfg.d_model + cfg.d_model  # out_proj + final norm
        if abs(n - target) < best_gap:
            best, best_gap = hidden, abs(n - target)
    return best


class GruEncoder(nn.Module):
    """(B, L, F) + (B, L) mask -> (B, L, D), the Mamba encoder's interface on a GRU.

    Missing days are zeroed and flagged exactly as in ``MambaEncoder._embed``; a bidirectional GRU
    concatenates both directions and projects back to D.
    """

    def __init__(self, cfg: SequenceModelConfig) -> None:
        super().__init__()
        self.n_features = cfg.n_features
        self.bidirectional = cfg.bidirectional
        self.input_proj = nn.Linear(cfg.n_features + 1, cfg.d_model)  # +1: mask feature
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(
            cfg.d_model,
            cfg.gru_hidden,
            num_layers=cfg.n_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.n_layers > 1 else 0.0,
            bidirectional=cfg.bidirectional,
        )
        self.out_proj = nn.Linear(cfg.gru_hidden * (2 if cfg.bidirectional else 1), cfg.d_model)
        self.norm_f = nn.RMSNorm(cfg.d_model)

    def _embed(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        m = mask.to(torch.bool).unsqueeze(-1)
        x = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))  # hide missing days
        return self.drop(self.input_proj(torch.cat([x, m.to(x.dtype)], dim=-1)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h, _ = self.gru(self._embed(x, mask))  # (B, L, H * dirs)
        return self.norm_f(self.out_proj(h))  # (B, L, D)

    def allocate_state(self, batch: int) -> GruState:
        self._check_causal()
        p = self.input_proj.weight
        return torch.zeros(self.gru.num_layers, batch, self.gru.hidden_size, dtype=p.dtype, device=p.device)

    def step(self, x_t: torch.Tensor, mask_t: torch.Tensor | None, state: GruState) -> tuple[torch.Tensor, GruState]:
        """One day: x_t (B, F), mask_t (B,) -> (B, D), equal to forward()[:, t]."""
        self._check_causal()
        h, state = self.gru(self._embed(x_t, mask_t).unsqueeze(1), state)  # (B, 1, H)
        return self.norm_f(self.out_proj(h[:, 0])), state

    def _check_causal(self) -> None:
        if self.bidirectional:
            raise RuntimeError("step() needs a causal encoder: this GRU is bidirectional")


def build_encoder(cfg: SequenceModelConfig) -> nn.Module:
    if cfg.encoder == "mamba":
        return MambaEncoder(cfg.mamba_config())
    return GruEncoder(cfg)


class OnsetHead(nn.Module):
    """[h (..., D), morning (..., Fm), static (..., Fs)] -> onset logit (...)."""

    def __init__(self, cfg: SequenceModelConfig) -> None:
        super().__init__()
        n_in = cfg.d_model + cfg.n_morning + cfg.n_static
        self.net = nn.Sequential(
            nn.Linear(n_in, cfg.head_hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.head_hidden, 1),
        )

    def forward(self, h: torch.Tensor, morning: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([h, morning, static], dim=-1)).squeeze(-1)


class OnsetClassifier(nn.Module):
    """Encoder + head: P(onset on D) from the diary before D, D's morning fields, static inputs."""

    def __init__(self, cfg: SequenceModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = build_encoder(cfg)
        self.head = OnsetHead(cfg)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, morning: torch.Tensor, static: torch.Tensor
    ) -> torch.Tensor:
        """Window mode: x (B, L, F) days D−L..D−1, mask (B, L), morning (B, Fm), static (B, Fs) -> (B,)."""
        h = self.encoder(x, mask)[:, -1]  # (B, D): last day's representation
        return self.head(h, morning, static)

    def forward_history(
        self, x: torch.Tensor, mask: torch.Tensor, morning: torch.Tensor, static: torch.Tensor
    ) -> torch.Tensor:
        """History mode (causal): x (B, T, F) with x[:, 0] the empty day before day 0,
        mask (B, T), morning (B, T, Fm) of days 0..T−1, static (B, Fs) -> logits (B, T) for days 0..T−1.
        """
        self._check_causal()
        h = self.encoder(x, mask)  # (B, T, D); h[:, t] has read days < t
        return self.head(h, morning, static.unsqueeze(1).expand(-1, h.shape[1], -1))

    # --- recurrent mode (serving; causal only) ------------------------------------------------

    def allocate_state(self, batch: int) -> Any:
        """The state before anything is read (the empty day is then stepped, see ``start_state``)."""
        self._check_causal()
        return self.encoder.allocate_state(batch)

    def step(self, x_t: torch.Tensor, mask_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Read one day: x_t (B, F), mask_t (B,) -> (h_t (B, D), new state)."""
        self._check_causal()
        return self.encoder.step(x_t, mask_t, state)

    def _check_causal(self) -> None:
        if not self.config.causal:
            raise RuntimeError(
                "history / step mode needs a causal classifier (bidirectional: false); "
                "a bidirectional one reads each window as a whole: use forward()"
            )
