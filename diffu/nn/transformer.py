"""The two sublayers of a transformer block (Vaswani et al. 2017), shared by DiT, MMDiT and the text encoder
(chapter §2.6): multi-head attention and the position-wise MLP.

NaN or inf in the input (``x``, ``context``) propagates to the output: forward checks shapes and dtypes only
(:mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_bool, check_int, check_real
from .inputs import check_input

__all__ = ["Attention", "feed_forward"]


def feed_forward(dim: int, mlp_ratio: float = 4.0) -> nn.Sequential:
    """The position-wise MLP of a transformer block: Linear(D → r·D) → tanh-GELU → Linear(r·D → D), as in DiT.

    Args:
        dim: the token width D, an integer ≥ 1.
        mlp_ratio: r > 0, the hidden width is ``int(r · D)`` (at least 1).

    Returns:
        ``nn.Sequential`` mapping ``(…, D)`` to ``(…, D)``; its layers are ``[0]`` and ``[2]`` (state-dict keys
        ``0.weight``, ``2.weight``, …).

    Raises:
        ValueError: ``dim`` is not an integer ≥ 1, or ``mlp_ratio`` is not a finite number > 0 with ``int(r · D)``
            ≥ 1.

    Notes:
        DiT uses timm's ``Mlp(..., act_layer=GELU(approximate="tanh"))``, the same three layers.
    """
    check_int("dim", dim, 1)
    check_real("mlp_ratio", mlp_ratio, 0, low_open=True)
    hidden = int(dim * mlp_ratio)
    if hidden < 1:
        raise ValueError(f"mlp_ratio must give a hidden width int(mlp_ratio · dim) >= 1, got {mlp_ratio} · {dim}")
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class Attention(nn.Module):
    """Multi-head scaled dot-product attention ``softmax(Q Kᵀ / √d_head) V`` (Vaswani et al. 2017) with a fused QKV
    projection, or — with ``cross=True`` — queries from ``x`` and keys/values from a ``context``.

    Args:
        dim: the token width D, an integer ≥ 1 (``num_heads`` must divide it).
        num_heads: the number of heads, an integer ≥ 1.
        cross: separate ``q`` and ``kv`` projections for cross-attention instead of one ``qkv``.

    Notes:
        DiT uses timm's ``Attention(qkv_bias=True)``: the same fused ``qkv`` and ``proj`` layers.
    """

    def __init__(self, dim: int, num_heads: int, cross: bool = False):
        super().__init__()
        check_int("dim", dim, 1)
        check_int("num_heads", num_heads, 1)
        check_bool("cross", cross)
        if dim % num_heads:
            raise ValueError(f"hidden_size {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.cross = num_heads, cross
        if cross:
            self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask=None) -> torch.Tensor:
        """``x``: ``(N, T, D)``; ``context``: ``(N, T_k, D)`` (cross-attention only, where it is required);
        ``mask``: optional boolean ``attn_mask`` of SDPA (True = attend; a float mask is added to the scores)
        broadcastable to ``(N, heads, T, T_k)``, e.g. ``(N, 1, 1, T_k)`` for padding. Returns ``(N, T, D)``.

        Raises ``ValueError``/``TypeError`` naming the argument for a wrong shape or dtype, a missing ``context``
        in cross-attention or one given to self-attention (where it would be ignored)."""
        d = self.proj.in_features
        check_input(x, (None, d))
        if self.cross:
            if context is None:
                raise ValueError("context is required by cross-attention (Attention(cross=True))")
            check_input(context, (None, d), "context")
            if context.shape[0] != x.shape[0]:
                raise ValueError(f"context must have batch size {x.shape[0]} (x's), got shape {tuple(context.shape)}")
        elif context is not None:
            raise ValueError("context was given to self-attention (Attention(cross=False)), which would ignore it")
        if mask is not None:
            _check_mask(
                mask, (x.shape[0], self.num_heads, x.shape[1], x.shape[1] if context is None else context.shape[1])
            )
        n, t, d = x.shape
        h = self.num_heads
        if self.cross:
            q = self.q(x)  # (N, T, D)
            k, v = self.kv(context).chunk(2, dim=-1)  # (N, T_k, D) each
        else:
            q, k, v = self.qkv(x).chunk(3, dim=-1)  # (N, T, D) each
        q, k, v = (z.reshape(n, -1, h, d // h).transpose(1, 2) for z in (q, k, v))  # (N, heads, T, D/heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, heads, T, D/heads)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))  # (N, T, D)


def _check_mask(mask, scores: tuple) -> None:
    """An SDPA ``attn_mask``: a bool or float tensor broadcastable to the ``(N, heads, T, T_k)`` scores."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a tensor or None, got {type(mask).__name__}")
    if not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise ValueError(f"mask must be a bool (True = attend) or float tensor, got {mask.dtype}")
    try:
        fits = mask.ndim <= 4 and torch.broadcast_shapes(mask.shape, scores) == scores
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"mask must broadcast to the scores (N, heads, T, T_k) = {scores}, got {tuple(mask.shape)}")
