"""Embeddings of DiT (chapter §2.6): sinusoidal timesteps and their MLP, class labels with a null class, patches
(patchify / unpatchify / PatchEmbed) and the fixed 2D sin-cos positional embedding."""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

__all__ = [
    "LabelEmbedder",
    "PatchEmbed",
    "TimestepEmbedder",
    "patchify",
    "sincos_2d_pos_embed",
    "timestep_embedding",
    "unpatchify",
]


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


class LabelEmbedder(nn.Module):
    """A table of ``(num_classes + 1) × hidden`` embeddings; row ``num_classes`` is the null class of classifier-free
    guidance. (The survey calls the table T × d with T the sequence length; it is classes × d.) In training, each
    label is replaced by the null class with probability ``dropout_prob`` (Ho & Salimans 2022; DiT uses 0.1)."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float = 0.1):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0 <= dropout_prob < 1:
            raise ValueError(f"dropout_prob must be in [0, 1), got {dropout_prob}")
        self.num_classes, self.dropout_prob = num_classes, dropout_prob
        self.table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if y.ndim != 1 or int(y.min()) < 0 or int(y.max()) > self.num_classes:
            raise ValueError(f"y must be (N,) labels in [0, {self.num_classes}] ({self.num_classes} = null)")
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(y.shape[0], generator=generator, device=y.device) < self.dropout_prob
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.table(y)  # (N, hidden)


def _check_patch(h, w, p):
    if p < 1 or h % p or w % p:
        raise ValueError(f"image size {h}×{w} must be divisible by the patch size p = {p}")


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(N, C, H, W)`` → ``(N, (H/p)(W/p), p·p·C)``: non-overlapping p×p patches in raster order, each flattened
    as (row, column, channel) — the layout DiT's unpatchify undoes."""
    _check_patch(x.shape[-2], x.shape[-1], p)
    return rearrange(x, "n c (h p) (w q) -> n (h w) (p q c)", p=p, q=p)


def unpatchify(tokens: torch.Tensor, p: int, h: int, w: int | None = None) -> torch.Tensor:
    """The exact inverse of :func:`patchify`: ``(N, h·w, p·p·C)`` → ``(N, C, h·p, w·p)`` for an ``h × w`` token
    grid (square when ``w`` is omitted)."""
    w = h if w is None else w
    n, t, d = tokens.shape
    if t != h * w or d % (p * p):
        raise ValueError(f"tokens of shape {tuple(tokens.shape)} do not form a {h}×{w} grid of {p}×{p} patches")
    return rearrange(tokens, "n (h w) (p q c) -> n c (h p) (w q)", h=h, w=w, p=p, q=p)


class PatchEmbed(nn.Module):
    """Patchify and project each p·p·C patch to ``hidden`` with one convolution (kernel = stride = p), initialised
    like a linear layer (Xavier-uniform on the flattened kernel, zero bias) as in DiT."""

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        nn.init.xavier_uniform_(self.proj.weight.view(hidden_size, -1))
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_patch(x.shape[-2], x.shape[-1], self.patch_size)
        return rearrange(self.proj(x), "n d h w -> n (h w) d")  # (N, T, hidden)


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))  # (dim/2,)
    out = pos.reshape(-1, 1).double() * omega[None]  # (M, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, dim)


def sincos_2d_pos_embed(dim: int, grid_h: int, grid_w: int | None = None) -> torch.Tensor:
    """The fixed 2D sin-cos positional embedding of MAE/DiT: ``(grid_h·grid_w, dim)``. The first ``dim/2`` values
    encode the column (the grid is built with ``meshgrid(w, h)``, "w goes first"), the rest the row; each half is
    ``[sin, cos]`` with frequencies ``1 / 10000^(i/(dim/4))``."""
    grid_w = grid_h if grid_w is None else grid_w
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for the 2D sin-cos embedding, got {dim}")
    gw, gh = torch.meshgrid(torch.arange(grid_w), torch.arange(grid_h), indexing="xy")  # (grid_h, grid_w) each
    return torch.cat([_sincos_1d(dim // 2, gw), _sincos_1d(dim // 2, gh)], dim=1).float()  # (T, dim)
