"""Sinusoidal timestep embeddings and the MLP that follows them (chapters §2.2 and §2.6)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TimestepEmbedder", "timestep_embedding"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (float) timesteps, exactly DiT's convention (Peebles & Xie 2023, models.py).

    ``freqs[k] = exp(-ln(max_period) · k / (dim/2))`` for ``k = 0 … dim/2 - 1``, ``args = t · freqs`` and the
    output is ``[cos(args), sin(args)]`` (cosines first). An odd ``dim`` is padded with one zero column.
    The survey's worked example (§2.6.1, t = 50, d = 8) is recomputed in chapter §2.6.

    Args:
        t: ``(N,)`` timesteps (may be fractional).
        dim: embedding size (≥ 2).
        max_period: controls the lowest frequency.

    Returns:
        ``(N, dim)`` tensor with ``t``'s device and a floating dtype.
    """
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    if max_period <= 1:
        raise ValueError(f"max_period must be > 1, got {max_period}")
    t = torch.as_tensor(t)
    if t.ndim != 1:
        raise ValueError(f"t must have shape (N,), got {tuple(t.shape)}")
    dtype = t.dtype if t.is_floating_point() else torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2*half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb.to(dtype)


class TimestepEmbedder(nn.Module):
    """Sinusoidal frequencies followed by Linear → SiLU → Linear to ``hidden_size`` (as in DiT)."""

    def __init__(self, hidden_size: int, frequency_size: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.frequency_size = frequency_size
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.frequency_size, self.max_period)  # (N, F)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # (N, hidden)
