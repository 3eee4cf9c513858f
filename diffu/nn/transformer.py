"""The two sublayers of a transformer block (Vaswani et al. 2017), shared by DiT, MMDiT and the text encoder
(chapter §2.6): multi-head attention and the position-wise MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Attention", "feed_forward"]


def feed_forward(dim: int, mlp_ratio: float = 4.0) -> nn.Sequential:
    """The position-wise MLP of a transformer block: Linear(D → r·D) → tanh-GELU → Linear(r·D → D), as in DiT.

    Args:
        dim: the token width D.
        mlp_ratio: r, the hidden width is ``int(r · D)``.

    Returns:
        ``nn.Sequential`` mapping ``(…, D)`` to ``(…, D)``; its layers are ``[0]`` and ``[2]`` (state-dict keys
        ``0.weight``, ``2.weight``, …).

    Notes:
        DiT uses timm's ``Mlp(..., act_layer=GELU(approximate="tanh"))``, the same three layers.
    """
    if dim < 1 or mlp_ratio <= 0:
        raise ValueError(f"dim must be >= 1 and mlp_ratio > 0, got {dim} and {mlp_ratio}")
    hidden = int(dim * mlp_ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class Attention(nn.Module):
    """Multi-head scaled dot-product attention ``softmax(Q Kᵀ / √d_head) V`` (Vaswani et al. 2017) with a fused QKV
    projection, or — with ``cross=True`` — queries from ``x`` and keys/values from a ``context``.

    Args:
        dim: the token width D (``num_heads`` must divide it).
        num_heads: the number of heads.
        cross: separate ``q`` and ``kv`` projections for cross-attention instead of one ``qkv``.

    Notes:
        DiT uses timm's ``Attention(qkv_bias=True)``: the same fused ``qkv`` and ``proj`` layers.
    """

    def __init__(self, dim: int, num_heads: int, cross: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.cross = num_heads, cross
        if cross:
            self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask=None) -> torch.Tensor:
        """``x``: ``(N, T, D)``; ``context``: ``(N, T_k, D)`` (cross-attention only); ``mask``: optional boolean
        ``attn_mask`` of SDPA (True = attend), e.g. ``(N, 1, 1, T_k)`` for padding. Returns ``(N, T, D)``."""
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
