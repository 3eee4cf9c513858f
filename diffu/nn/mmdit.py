"""The MMDiT block of Stable Diffusion 3 (Esser et al. 2024), chapter §2.6.

Two token streams — image patches ``x`` and text tokens ``ctx`` — each keep their own adaLN-Zero modulation, QKV
projections, output projection and MLP; only the attention is joint: queries, keys and values of both streams are
concatenated as ``[image; text]`` along the sequence, one attention runs, and the result is split back. In the last
block the text stream stops after attention (``context_pre_only``): its output would never be used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dit import _mlp, modulate

__all__ = ["MMDiTBlock", "joint_attention"]


def joint_attention(q_x, k_x, v_x, q_c, k_c, v_c, num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the concatenated ``[image; text]`` sequence (SD3, Eq. (11)–(14) of the survey's §2.6). Inputs
    are ``(N, T_x, D)`` and ``(N, T_c, D)``; returns the two output streams with the same lengths."""
    n, tx, d = q_x.shape
    q, k, v = (torch.cat(pair, dim=1) for pair in ((q_x, q_c), (k_x, k_c), (v_x, v_c)))  # (N, T_x + T_c, D)
    q, k, v = (z.reshape(n, -1, num_heads, d // num_heads).transpose(1, 2) for z in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, -1, d)  # (N, T_x + T_c, D)
    return out[:, :tx], out[:, tx:]


class MMDiTBlock(nn.Module):
    """``block(x, ctx, c) -> (x, ctx)`` with ``x (N, T_x, D)``, ``ctx (N, T_c, D)`` and the pooled conditioning
    ``c (N, D)`` (timestep + pooled text). With ``context_pre_only`` the returned ``ctx`` is None."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, context_pre_only: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.context_pre_only = num_heads, context_pre_only
        self.norm1_x = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm1_c = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mod_x = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))  # (shift, scale, gate) × (attn, MLP)
        # the last text stream only needs (shift, scale) for its attention input
        self.mod_c = nn.Sequential(nn.SiLU(), nn.Linear(dim, (2 if context_pre_only else 6) * dim))
        self.qkv_x, self.qkv_c = nn.Linear(dim, 3 * dim), nn.Linear(dim, 3 * dim)
        self.proj_x = nn.Linear(dim, dim)
        self.norm2_x = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp_x = _mlp(dim, mlp_ratio)
        if not context_pre_only:
            self.proj_c = nn.Linear(dim, dim)
            self.norm2_c = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.mlp_c = _mlp(dim, mlp_ratio)
        for mod in (self.mod_x, self.mod_c):  # adaLN-Zero: the block starts as the identity on both streams
            nn.init.zeros_(mod[-1].weight)
            nn.init.zeros_(mod[-1].bias)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, c: torch.Tensor):
        sx1, cx1, gx1, sx2, cx2, gx2 = self.mod_x(c).chunk(6, dim=-1)  # (N, D) each: shift, scale, gate
        if self.context_pre_only:
            sc1, cc1 = self.mod_c(c).chunk(2, dim=-1)
        else:
            sc1, cc1, gc1, sc2, cc2, gc2 = self.mod_c(c).chunk(6, dim=-1)
        qx, kx, vx = self.qkv_x(modulate(self.norm1_x(x), sx1, cx1)).chunk(3, dim=-1)  # separate projections …
        qc, kc, vc = self.qkv_c(modulate(self.norm1_c(ctx), sc1, cc1)).chunk(3, dim=-1)
        ax, ac = joint_attention(qx, kx, vx, qc, kc, vc, self.num_heads)  # … one joint attention
        x = x + gx1[:, None] * self.proj_x(ax)
        x = x + gx2[:, None] * self.mlp_x(modulate(self.norm2_x(x), sx2, cx2))
        if self.context_pre_only:
            return x, None
        ctx = ctx + gc1[:, None] * self.proj_c(ac)
        ctx = ctx + gc2[:, None] * self.mlp_c(modulate(self.norm2_c(ctx), sc2, cc2))
        return x, ctx
