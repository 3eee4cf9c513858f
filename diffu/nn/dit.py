"""Diffusion Transformer (Peebles & Xie 2023) with the four conditioning schemes of its ablation (chapter §2.6).

``DiT(conditioning=…)``: the same patch embedding, positional embedding, blocks and final projection, with the
timestep and class conditioning entering in one of four ways:

* ``"in-context"`` — the t and y embeddings are two extra tokens in the sequence (removed before the output);
* ``"cross-attention"`` — blocks gain a cross-attention layer that attends to the [t; y] embedding pair;
* ``"adaLN"`` — LayerNorm scale and shift are regressed from c = t_emb + y_emb;
* ``"adaLN-Zero"`` — adaLN plus per-block gates α, all regressed from c and zero-initialised, so every block starts
  as the identity (the paper's choice; best FID in its Fig. 5).

Attention runs through ``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import LabelEmbedder, PatchEmbed, TimestepEmbedder, sincos_2d_pos_embed, unpatchify

__all__ = ["CONDITIONINGS", "DIT_SIZES", "DiT", "DiTBlock", "DiTConfig", "PatchTransformerConfig"]

#: The four conditioning schemes of the DiT paper's ablation (its Fig. 5).
CONDITIONINGS = ("in-context", "cross-attention", "adaLN", "adaLN-Zero")


@dataclass
class PatchTransformerConfig:
    """The fields shared by :class:`DiTConfig` and :class:`~diffu.nn.MMDiTConfig`."""

    image_size: int = 28
    patch_size: int = 4
    in_channels: int = 1
    hidden_size: int = 96
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0

    def to_dict(self):
        return asdict(self)

    def check(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be divisible by patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads or self.hidden_size % 4:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads} and "
                             "by 4")  # fmt: skip


@dataclass
class DiTConfig(PatchTransformerConfig):
    """Hyper-parameters of :class:`DiT` (stored next to shipped weights)."""

    num_classes: int | None = 10
    class_dropout_prob: float = 0.1
    conditioning: str = "adaLN-Zero"
    learn_sigma: bool = False


#: Tiny configurations for this book's 28×28 Fashion-MNIST (the paper's S/B/L/XL start at 384 hidden units).
DIT_SIZES = {
    "DiT-T/4": dict(hidden_size=96, depth=4, num_heads=4, patch_size=4),
    "DiT-T/2": dict(hidden_size=96, depth=4, num_heads=4, patch_size=2),
    "DiT-S/4": dict(hidden_size=192, depth=6, num_heads=6, patch_size=4),
}


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x (1 + scale) + shift`` with per-sample ``(N, D)`` shift and scale broadcast over tokens."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head attention with a fused QKV projection; keys/values from ``context`` when given (cross-attention)."""

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
        """``mask``: optional boolean ``attn_mask`` of SDPA (True = attend), e.g. ``(N, 1, 1, T_k)`` for padding."""
        n, t, d = x.shape
        h = self.num_heads
        if self.cross:
            q = self.q(x)
            k, v = self.kv(context).chunk(2, dim=-1)
        else:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (z.reshape(n, -1, h, d // h).transpose(1, 2) for z in (q, k, v))  # (N, heads, T, d/heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, heads, T, d/heads)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))  # (N, T, D)


def build_patch_and_time_embedders(model, cfg: PatchTransformerConfig):
    """Give ``model`` the patch embedding ``x_embedder``, the fixed ``pos_embed`` buffer ``(1, T, D)``, the
    ``t_embedder`` and the token-grid side ``grid`` (shared by DiT and MMDiT)."""
    model.grid = cfg.image_size // cfg.patch_size
    model.x_embedder = PatchEmbed(cfg.in_channels, cfg.hidden_size, cfg.patch_size)
    model.register_buffer("pos_embed", sincos_2d_pos_embed(cfg.hidden_size, model.grid)[None], persistent=False)
    model.t_embedder = TimestepEmbedder(cfg.hidden_size)


def embed_patches_and_time(model, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
    """The input side shared by :class:`DiT` and :class:`~diffu.nn.MMDiT`: validate ``x``, embed its patches plus
    the fixed positions, ``(N, T, D)``, and the timesteps (a scalar is broadcast), ``(N, D)``."""
    cfg = model.config
    if x.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
        raise ValueError(f"x must be (N, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}), got {tuple(x.shape)}")
    t = torch.as_tensor(t, device=x.device)
    t = t.expand(x.shape[0]) if t.ndim == 0 else t
    return model.x_embedder(x) + model.pos_embed.to(x.dtype), model.t_embedder(t).to(x.dtype)


def final_layer(model, h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """The output side shared by :class:`DiT` and :class:`~diffu.nn.MMDiT`: LayerNorm (adaptively modulated by
    ``c`` when given), a linear map of each token to ``p·p·C_out`` values, and unpatchify to ``(N, C_out, H, W)``."""
    h = model.norm_final(h)
    if c is not None:
        shift, scale = model.final_modulation(c).chunk(2, dim=-1)
        h = modulate(h, shift, scale)
    return unpatchify(model.linear_final(h), model.config.patch_size, model.grid)


def _mlp(dim, ratio):
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class DiTBlock(nn.Module):
    """One transformer block; ``conditioning`` decides how ``c`` enters (see the module docstring)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, conditioning: str):
        super().__init__()
        self.conditioning = conditioning
        adaptive = conditioning in ("adaLN", "adaLN-Zero")
        # adaLN variants regress the norm's scale/shift, so the LayerNorm itself has no affine parameters
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=not adaptive, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=not adaptive, eps=1e-6)
        self.mlp = _mlp(dim, mlp_ratio)
        if conditioning == "cross-attention":
            self.norm_x = nn.LayerNorm(dim, eps=1e-6)
            self.cross_attn = Attention(dim, num_heads, cross=True)
        if adaptive:
            n_mod = 6 if conditioning == "adaLN-Zero" else 4  # (shift, scale[, gate]) for attention and MLP
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, n_mod * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.conditioning == "adaLN-Zero":
            # (N, 1, D) each; addcmul fuses the modulation and the gated residual into one pass each (the fused form
            # differs from modulate()'s mul + add in the last bits, so the other variants keep theirs: their weights
            # were trained with it)
            shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c)[:, None].chunk(6, dim=-1)
            x = torch.addcmul(x, gate1, self.attn(torch.addcmul(shift1, self.norm1(x), 1 + scale1)))
            return torch.addcmul(x, gate2, self.mlp(torch.addcmul(shift2, self.norm2(x), 1 + scale2)))
        if self.conditioning == "adaLN":
            shift1, scale1, shift2, scale2 = self.adaLN_modulation(c).chunk(4, dim=-1)
            x = x + self.attn(modulate(self.norm1(x), shift1, scale1))
            return x + self.mlp(modulate(self.norm2(x), shift2, scale2))
        x = x + self.attn(self.norm1(x))  # in-context: c is already part of the token sequence
        if self.conditioning == "cross-attention":
            x = x + self.cross_attn(self.norm_x(x), context=c)  # c: (N, 2, D) — the [t; y] pair
        return x + self.mlp(self.norm2(x))


class DiT(nn.Module):
    """``model(x_t, t, y=None) -> ε̂`` (or ``[ε̂, v]`` with ``learn_sigma``) for ``(N, C, H, W)`` inputs.

    ``y = num_classes`` (or ``y=None``) is the null label (the unconditional model).
    """

    prediction = "eps"

    def __init__(self, config: DiTConfig | None = None, **kwargs):
        super().__init__()
        cfg = config or DiTConfig(**kwargs)
        if cfg.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {cfg.conditioning!r}")
        cfg.check()
        self.config = cfg
        self.learn_sigma = cfg.learn_sigma  # output [ε̂, v]; samplers take ε̂, DDPM's "learned_range" also v
        d, p = cfg.hidden_size, cfg.patch_size
        self.out_channels = cfg.in_channels * (2 if cfg.learn_sigma else 1)
        self.num_classes = cfg.num_classes
        build_patch_and_time_embedders(self, cfg)
        self.y_embedder = LabelEmbedder(cfg.num_classes, d, cfg.class_dropout_prob) if cfg.num_classes else None
        self.blocks = nn.ModuleList([DiTBlock(d, cfg.num_heads, cfg.mlp_ratio, cfg.conditioning)
                                     for _ in range(cfg.depth)])  # fmt: skip
        adaptive = cfg.conditioning in ("adaLN", "adaLN-Zero")
        self.norm_final = nn.LayerNorm(d, elementwise_affine=not adaptive, eps=1e-6)
        if adaptive:
            self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.linear_final = nn.Linear(d, p * p * self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):
        """DiT's initialisation: Xavier-uniform linears, N(0, 0.02) embeddings, zero adaLN-Zero modulation and a
        zero output layer (so the network predicts ε̂ = 0 and every adaLN-Zero block is the identity at init)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.table.weight, std=0.02)
        for lin in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        if self.config.conditioning == "adaLN-Zero":
            for block in self.blocks:
                nn.init.zeros_(block.adaLN_modulation[-1].weight)
                nn.init.zeros_(block.adaLN_modulation[-1].bias)
        if hasattr(self, "final_modulation"):
            nn.init.zeros_(self.final_modulation[-1].weight)
            nn.init.zeros_(self.final_modulation[-1].bias)
        nn.init.zeros_(self.linear_final.weight)
        nn.init.zeros_(self.linear_final.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, generator=None):
        n = x.shape[0]
        h, t_emb = embed_patches_and_time(self, x, t)  # (N, T, D), (N, D)
        y_emb = None
        if self.y_embedder is not None:
            y = torch.full((n,), self.num_classes, device=x.device, dtype=torch.long) if y is None else y
            y_emb = self.y_embedder(y, generator).to(x.dtype)  # (N, D), one label-dropout draw
        elif y is not None:
            raise ValueError("y was given but this DiT has no class conditioning (num_classes=None)")
        adaptive = self.config.conditioning in ("adaLN", "adaLN-Zero")
        if adaptive:
            cond = t_emb if y_emb is None else t_emb + y_emb  # (N, D)
        else:
            cond = torch.stack([t_emb] + ([] if y_emb is None else [y_emb]), dim=1)  # (N, 1 or 2, D)
            if self.config.conditioning == "in-context":
                h = torch.cat([cond, h], dim=1)  # (N, k + T, D)
        for block in self.blocks:
            h = block(h, cond)
        if self.config.conditioning == "in-context":
            h = h[:, cond.shape[1] :]  # drop the conditioning tokens
        return final_layer(self, h, cond if adaptive else None)
