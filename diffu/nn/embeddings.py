"""Embeddings of DiT (chapter §2.6): sinusoidal timesteps and their MLP, class labels with a null class, patches
(patchify / unpatchify / PatchEmbed) and the fixed 2D sin-cos positional embedding.

NaN or inf in the input (timesteps ``t``, patches ``x``) propagates to the output: the embeddings check shapes and
dtypes only (:mod:`diffu.nn.inputs`), since they run at every sampler step.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from ..checks import check_generator, check_int, check_rank, check_real
from .inputs import check_input, labels_for

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
        t: ``(N,)`` timesteps (may be fractional; a float or integer tensor, or a list of numbers).
        dim: embedding size, an integer ≥ 2.
        max_period: controls the lowest frequency, a finite number > 1.

    Returns:
        ``(N, dim)`` tensor with ``t``'s device and a floating dtype.

    Raises:
        ValueError: ``dim`` not an integer ≥ 2, ``max_period`` not a finite number > 1, ``t`` not of shape
            ``(N,)`` or of a bool or complex dtype.
        TypeError: ``t`` is not a tensor (or a sequence of numbers); ``max_period`` is not a number.
    """
    check_int("dim", dim, 2)
    check_real("max_period", max_period, 1, low_open=True)
    try:
        t = torch.as_tensor(t)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"t must be a tensor of shape (N,), got {type(t).__name__}") from err
    if t.ndim != 1:
        raise ValueError(f"t must have shape (N,), got {tuple(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"t must hold real (float or integer) timesteps, got {t.dtype}")
    dtype = t.dtype if t.is_floating_point() else torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2*half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb.to(dtype)


class TimestepEmbedder(nn.Module):
    """Sinusoidal frequencies followed by Linear → SiLU → Linear to ``hidden_size`` (as in DiT).

    Args:
        hidden_size: the output width, an integer ≥ 1.
        frequency_size: the size of the sinusoidal embedding (:func:`timestep_embedding`'s ``dim``), ≥ 2.
        max_period: :func:`timestep_embedding`'s ``max_period``, > 1.

    The call takes ``(N,)`` timesteps and returns ``(N, hidden_size)``.
    """

    def __init__(self, hidden_size: int, frequency_size: int = 256, max_period: float = 10000.0):
        super().__init__()
        check_int("hidden_size", hidden_size, 1)
        check_int("frequency_size", frequency_size, 2)
        check_real("max_period", max_period, 1, low_open=True)
        self.frequency_size = frequency_size
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.frequency_size, self.max_period)  # (N, F)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # (N, hidden)


class LabelEmbedder(nn.Module):
    """A table of ``(num_classes + 1) × hidden`` embeddings; row ``num_classes`` is the null class of classifier-free
    guidance. (The survey calls the table T × d with T the sequence length; it is classes × d.) In training, each
    label is replaced by the null class with probability ``dropout_prob`` (Ho & Salimans 2022; DiT uses 0.1).

    Args:
        num_classes: the number of classes, an integer ≥ 1.
        hidden_size: the embedding width, an integer ≥ 1.
        dropout_prob: the label-dropout probability in training, in [0, 1).

    The call ``embedder(y, generator=None)`` takes ``(N,)`` integer labels in ``[0, num_classes]`` and an optional
    ``torch.Generator`` for the dropout draw, and returns ``(N, hidden_size)``.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float = 0.1):
        super().__init__()
        check_int("num_classes", num_classes, 1)
        check_int("hidden_size", hidden_size, 1)
        check_real("dropout_prob", dropout_prob, 0, 1, high_open=True)
        self.num_classes, self.dropout_prob = num_classes, dropout_prob
        self.table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        y = labels_for(y, self.num_classes, None, self.table.weight.device, owner="LabelEmbedder")
        check_generator(generator)
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(y.shape[0], generator=generator, device=y.device) < self.dropout_prob
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.table(y)  # (N, hidden)


def _check_patch(h, w, p):
    """``p`` is an integer ≥ 1 dividing the image size ``h × w`` — checked before einops sees it: einops caches
    its recipe by the axis lengths, and a float ``p = 4.0`` (equal to 4 as a key) would poison the cache for every
    later valid call on that shape."""
    check_int("p", p, 1)
    if h % p or w % p:
        raise ValueError(f"image size {h}×{w} must be divisible by the patch size p = {p}")


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(N, C, H, W)`` → ``(N, (H/p)(W/p), p·p·C)``: non-overlapping p×p patches in raster order, each flattened
    as (row, column, channel) — the layout DiT's unpatchify undoes.

    Args:
        x: a tensor ``(N, C, H, W)`` (any dtype: this is a pure rearrangement).
        p: the patch size, an integer ≥ 1 dividing ``H`` and ``W``.

    Returns:
        ``(N, (H/p)(W/p), p·p·C)``.

    Raises:
        ValueError: ``x`` is not a 4-dimensional tensor, ``p`` is not an integer ≥ 1 or does not divide ``H, W``.
    """
    check_rank(x, 4, "x", "(N, C, H, W)")
    _check_patch(x.shape[-2], x.shape[-1], p)
    return rearrange(x, "n c (h p) (w q) -> n (h w) (p q c)", p=int(p), q=int(p))


def unpatchify(tokens: torch.Tensor, p: int, h: int, w: int | None = None) -> torch.Tensor:
    """The exact inverse of :func:`patchify`: ``(N, h·w, p·p·C)`` → ``(N, C, h·p, w·p)`` for an ``h × w`` token
    grid (square when ``w`` is omitted).

    Args:
        tokens: ``(N, h·w, p·p·C)``.
        p: the patch size, an integer ≥ 1.
        h, w: the token grid's height and width, integers ≥ 1 (``w`` defaults to ``h``).

    Raises:
        ValueError: ``tokens`` is not 3-dimensional, a size is not an integer ≥ 1, or the tokens do not form an
            ``h × w`` grid of ``p × p`` patches.
    """
    w = h if w is None else w
    check_rank(tokens, 3, "tokens", "(N, h·w, p·p·C)")
    for name, v in (("p", p), ("h", h), ("w", w)):
        check_int(name, v, 1)  # before einops, which caches its recipe by these lengths (see patchify)
    p, h, w = int(p), int(h), int(w)
    n, t, d = tokens.shape
    if t != h * w or d % (p * p):
        raise ValueError(f"tokens of shape {tuple(tokens.shape)} do not form a {h}×{w} grid of {p}×{p} patches")
    return rearrange(tokens, "n (h w) (p q c) -> n c (h p) (w q)", h=h, w=w, p=p, q=p)


class PatchEmbed(nn.Module):
    """Patchify and project each p·p·C patch to ``hidden`` with one convolution (kernel = stride = p), initialised
    like a linear layer (Xavier-uniform on the flattened kernel, zero bias) as in DiT.

    Args:
        in_channels: C of the input, an integer ≥ 1.
        hidden_size: the token width, an integer ≥ 1.
        patch_size: p, an integer ≥ 1.

    The call takes a float ``(N, C, H, W)`` with ``H, W`` divisible by p and returns ``(N, (H/p)(W/p), hidden)``.
    """

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int):
        super().__init__()
        check_int("in_channels", in_channels, 1)
        check_int("hidden_size", hidden_size, 1)
        check_int("patch_size", patch_size, 1)
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        nn.init.xavier_uniform_(self.proj.weight.view(hidden_size, -1))
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, (self.proj.in_channels, None, None))
        _check_patch(x.shape[-2], x.shape[-1], self.patch_size)
        return rearrange(self.proj(x), "n d h w -> n (h w) d")  # (N, T, hidden)


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))  # (dim/2,)
    out = pos.reshape(-1, 1).double() * omega[None]  # (M, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, dim)


def sincos_2d_pos_embed(dim: int, grid_h: int, grid_w: int | None = None) -> torch.Tensor:
    """The fixed 2D sin-cos positional embedding of MAE/DiT: ``(grid_h·grid_w, dim)``. The first ``dim/2`` values
    encode the column (the grid is built with ``meshgrid(w, h)``, "w goes first"), the rest the row; each half is
    ``[sin, cos]`` with frequencies ``1 / 10000^(i/(dim/4))``.

    Args:
        dim: the embedding width, an integer ≥ 4 divisible by 4.
        grid_h, grid_w: the token grid's height and width, integers ≥ 1 (``grid_w`` defaults to ``grid_h``).

    Raises:
        ValueError: a size that is not an integer ≥ 1 (``dim`` ≥ 4), or ``dim`` not divisible by 4.
    """
    grid_w = grid_h if grid_w is None else grid_w
    check_int("dim", dim, 4)
    check_int("grid_h", grid_h, 1)
    check_int("grid_w", grid_w, 1)
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for the 2D sin-cos embedding, got {dim}")
    gw, gh = torch.meshgrid(torch.arange(grid_w), torch.arange(grid_h), indexing="xy")  # (grid_h, grid_w) each
    return torch.cat([_sincos_1d(dim // 2, gw), _sincos_1d(dim // 2, gh)], dim=1).float()  # (T, dim)
