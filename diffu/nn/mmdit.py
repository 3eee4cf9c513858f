"""The MMDiT block of Stable Diffusion 3 (Esser et al. 2024), chapter §2.6.

Two token streams — image patches ``x`` and text tokens ``ctx`` — each keep their own adaLN-Zero modulation, QKV
projections, output projection and MLP; only the attention is joint: queries, keys and values of both streams are
concatenated as ``[image; text]`` along the sequence, one attention runs, and the result is split back. In the last
block the text stream stops after attention (``context_pre_only``): its output would never be used.

NaN or inf in the input (``x``, ``t``, ``ctx``, ``c``) propagates to the output: forward checks shapes, dtypes and
token ids only (:mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_bool, check_device, check_int
from .dit import (
    DiT,
    PatchTransformerConfig,
    build_patch_and_time_embedders,
    embed_patches_and_time,
    final_layer,
    modulate,
)
from .inputs import check_input, check_tokens, make_config
from .text import TextEncoder, WordTokenizer
from .transformer import feed_forward

__all__ = ["MMDiT", "MMDiTBlock", "MMDiTConfig", "joint_attention"]


def joint_attention(q_x, k_x, v_x, q_c, k_c, v_c, num_heads: int, weights: list | None = None):
    """Attention over the concatenated ``[image; text]`` sequence (SD3, Eq. (11)–(14) of the survey's §2.6). Inputs
    are ``(N, T_x, D)`` and ``(N, T_c, D)``; returns the two output streams with the same lengths. With a list
    ``weights``, the softmax attention matrix ``(N, heads, T_x + T_c, T_x + T_c)`` is appended to it (for plots).

    Raises:
        ValueError: an input that is not a float 3-dimensional tensor, image (or text) queries, keys and values of
            different shapes, streams of different batch size or width, or ``num_heads`` not an integer ≥ 1 dividing
            the width.
        TypeError: ``weights`` is neither None nor a list.
    """
    check_input(q_x, (None, None), "q_x")
    check_input(q_c, (None, q_x.shape[-1]), "q_c")
    if q_c.shape[0] != q_x.shape[0]:
        raise ValueError(f"q_c must have batch size {q_x.shape[0]} (q_x's), got shape {tuple(q_c.shape)}")
    for name, z, like in (("k_x", k_x, q_x), ("v_x", v_x, q_x), ("k_c", k_c, q_c), ("v_c", v_c, q_c)):
        check_input(z, like.shape[1:], name, dims=("T", "D"))
        if z.shape != like.shape:
            raise ValueError(f"{name} must have the shape of its queries {tuple(like.shape)}, got {tuple(z.shape)}")
    check_int("num_heads", num_heads, 1)
    if q_x.shape[-1] % num_heads:
        raise ValueError(f"num_heads {num_heads} must divide the width {q_x.shape[-1]}")
    if weights is not None and not isinstance(weights, list):
        raise TypeError(f"weights must be a list (the attention maps are appended to it) or None, got "
                        f"{type(weights).__name__}")  # fmt: skip
    n, tx, d = q_x.shape
    q, k, v = (torch.cat(pair, dim=1) for pair in ((q_x, q_c), (k_x, k_c), (v_x, v_c)))  # (N, T_x + T_c, D)
    q, k, v = (z.reshape(n, -1, num_heads, d // num_heads).transpose(1, 2) for z in (q, k, v))
    if weights is not None:
        weights.append(torch.softmax(q @ k.transpose(-1, -2) / (d // num_heads) ** 0.5, dim=-1).detach())
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, -1, d)  # (N, T_x + T_c, D)
    return out[:, :tx], out[:, tx:]


class MMDiTBlock(nn.Module):
    """The MMDiT block of Stable Diffusion 3 (Esser et al. 2024, Fig. 2b; survey §2.6, Eq. (12)–(14)): two adaLN-Zero
    streams, image and text, with one joint attention.

    Each stream s ∈ {x, ctx} regresses its own (β, γ, α) × (attention, MLP) from the pooled conditioning ``c`` and
    runs ``s ← s + α₁ ⊙ Proj(JointAttn(…))``, ``s ← s + α₂ ⊙ MLP(LN(s)(1 + γ₂) + β₂)``, where the joint attention
    (:func:`joint_attention`) takes each stream's own Q, K, V of ``LN(s)(1 + γ₁) + β₁``.

    Args:
        dim: the token width D of both streams.
        num_heads: attention heads (must divide D).
        mlp_ratio: the MLPs' hidden width is ``int(mlp_ratio · D)``.
        context_pre_only: the last block: the text stream only feeds the attention and is not updated.

    The call ``block(x, ctx, c, attention=None)`` takes ``x`` ``(N, T_x, D)``, ``ctx`` ``(N, T_c, D)``, ``c``
    ``(N, D)`` (timestep + pooled text) and returns ``(x, ctx)`` of the same shapes (``ctx`` is None with
    ``context_pre_only``); a list ``attention`` receives the attention weights.

    Notes:
        Equals diffusers' ``JointTransformerBlock`` (without QK normalisation) with copied weights
        (tests/nn/test_mmdit.py). The survey's Eq. (13) shares one W_Q, W_K, W_V between the streams; SD3 does not.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, context_pre_only: bool = False):
        super().__init__()
        check_int("dim", dim, 1)
        check_int("num_heads", num_heads, 1)
        check_bool("context_pre_only", context_pre_only)
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
        self.mlp_x = feed_forward(dim, mlp_ratio)
        if not context_pre_only:
            self.proj_c = nn.Linear(dim, dim)
            self.norm2_c = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.mlp_c = feed_forward(dim, mlp_ratio)
        for mod in (self.mod_x, self.mod_c):  # adaLN-Zero: the block starts as the identity on both streams
            nn.init.zeros_(mod[-1].weight)
            nn.init.zeros_(mod[-1].bias)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, c: torch.Tensor, attention: list | None = None):
        """See the class: ``(x, ctx)`` after the block; ``ValueError``/``TypeError`` naming the argument for a
        wrong shape or dtype."""
        d = self.norm1_x.normalized_shape[0]
        check_input(x, (None, d))
        check_input(ctx, (None, d), "ctx")
        check_input(c, (d,), "c")
        if ctx.shape[0] != x.shape[0] or c.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"ctx and c must have x's batch size {x.shape[0]} (c may have 1), got shapes "
                             f"{tuple(ctx.shape)} and {tuple(c.shape)}")  # fmt: skip
        sx1, cx1, gx1, sx2, cx2, gx2 = self.mod_x(c).chunk(6, dim=-1)  # (N, D) each: shift, scale, gate
        if self.context_pre_only:
            sc1, cc1 = self.mod_c(c).chunk(2, dim=-1)  # (N, D) each
        else:
            sc1, cc1, gc1, sc2, cc2, gc2 = self.mod_c(c).chunk(6, dim=-1)  # (N, D) each
        # separate projections per stream … (N, T_x, D) and (N, T_c, D) each
        qx, kx, vx = self.qkv_x(modulate(self.norm1_x(x), sx1, cx1)).chunk(3, dim=-1)
        qc, kc, vc = self.qkv_c(modulate(self.norm1_c(ctx), sc1, cc1)).chunk(3, dim=-1)
        ax, ac = joint_attention(qx, kx, vx, qc, kc, vc, self.num_heads, attention)  # … one joint attention
        x = x + gx1[:, None] * self.proj_x(ax)  # (N, T_x, D)
        x = x + gx2[:, None] * self.mlp_x(modulate(self.norm2_x(x), sx2, cx2))  # (N, T_x, D)
        if self.context_pre_only:
            return x, None
        ctx = ctx + gc1[:, None] * self.proj_c(ac)  # (N, T_c, D)
        ctx = ctx + gc2[:, None] * self.mlp_c(modulate(self.norm2_c(ctx), sc2, cc2))  # (N, T_c, D)
        return x, ctx


@dataclass
class MMDiTConfig(PatchTransformerConfig):
    """Hyper-parameters of :class:`MMDiT` (stored next to shipped weights); ``vocab`` is the tokenizer's word list.
    Validated on construction: the shared fields as :meth:`~diffu.nn.dit.PatchTransformerConfig.check`, ``vocab`` a
    tuple (or list) of strings, ``text_depth`` an integer ≥ 0, ``max_len`` an integer ≥ 2."""

    vocab: tuple = ()
    text_depth: int = 1
    max_len: int = 12

    def check(self):
        super().check()
        if isinstance(self.vocab, str) or not isinstance(self.vocab, (tuple, list)):
            raise TypeError(f"vocab must be a tuple of words, got {type(self.vocab).__name__} {self.vocab!r:.60}")
        if not all(isinstance(w, str) for w in self.vocab):
            raise TypeError(f"vocab must be a tuple of strings, got {self.vocab!r:.80}")
        self.vocab = tuple(self.vocab)
        check_int("text_depth", self.text_depth, 0)
        check_int("max_len", self.max_len, 2)


class MMDiT(nn.Module):
    """A tiny SD3-style text-to-image denoiser: ``model(x_t, t, text=ids or captions) -> ε̂``.

    Image patches (+ 2D sin-cos positions) and the text encoder's tokens (projected to the same width) run through
    ``depth`` :class:`MMDiTBlock` s; the conditioning vector is ``c = t_emb + MLP(pooled text)`` as in SD3, and the
    last block's text stream is ``context_pre_only``. ``text=None`` (or the empty caption) is the null condition
    used by classifier-free guidance; ``text`` may be a list of strings, tokenized by ``model.tokenizer``.

    Args:
        config: an :class:`MMDiTConfig` with a non-empty ``vocab``, or None and its fields as keyword arguments
            (not both).

    The call checks ``x`` (a float ``(N, in_channels, image_size, image_size)``), ``t`` (a number or ``(N,)``),
    ``text`` (see :meth:`encode_text`) and ``attention`` (None or a list), raising ``ValueError``/``TypeError``
    naming the argument.
    """

    prediction = "eps"
    check_input = DiT.check_input  # reads only the config's in_channels and image_size, which MMDiTConfig shares

    def __init__(self, config: MMDiTConfig | None = None, **kwargs):
        super().__init__()
        cfg = make_config(MMDiTConfig, config, kwargs)
        if not cfg.vocab:
            raise ValueError("config.vocab must list the tokenizer's words")
        self.config = cfg
        d, p = cfg.hidden_size, cfg.patch_size
        self.tokenizer = WordTokenizer(cfg.vocab, cfg.max_len)
        build_patch_and_time_embedders(self, cfg)
        self.text_encoder = TextEncoder(len(self.tokenizer), d, cfg.max_len, cfg.text_depth, cfg.num_heads)
        self.context_proj = nn.Linear(d, d)  # text tokens → the joint width (SD3's context_embedder)
        self.pooled_proj = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList([MMDiTBlock(d, cfg.num_heads, cfg.mlp_ratio, context_pre_only=i == cfg.depth - 1)
                                     for i in range(cfg.depth)])  # fmt: skip
        self.norm_final = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.linear_final = nn.Linear(d, p * p * cfg.in_channels)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for lin in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        zero = [b.mod_x[-1] for b in self.blocks] + [b.mod_c[-1] for b in self.blocks]
        for lin in zero + [self.final_modulation[-1], self.linear_final]:  # adaLN-Zero and a zero output layer
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def encode_text(self, text, n: int, device) -> torch.Tensor:
        """Token ids ``(n, L)`` for ``text``: None (the null caption), a string (for every image), a list of ``n``
        strings, or integer ids ``(n, L)`` in the vocabulary with ``L <= max_len``; on ``device``.

        Raises:
            TypeError: ``text`` is none of these; ``device`` is not a device.
            ValueError: a word outside the vocabulary, too long a caption, ids outside the vocabulary, or not ``n``
                captions.
        """
        check_int("n", n, 0)
        device = check_device("device", device)
        if text is None:
            text = [""] * n
        if isinstance(text, str):
            text = [text] * n
        if torch.is_tensor(text):
            check_tokens(text, len(self.tokenizer), self.config.max_len, "text")
        elif isinstance(text, (list, tuple)):
            text = self.tokenizer(list(text))
        else:
            raise TypeError(f"text must be None, a caption, a list of captions or token ids, got {type(text).__name__}")
        if text.shape[0] != n:
            raise ValueError(f"text has {text.shape[0]} captions for a batch of {n} images")
        return text.to(device)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text=None, attention: list | None = None) -> torch.Tensor:
        """``attention``: pass a list to receive each block's joint attention weights ``(N, heads, T+L, T+L)``."""
        h, t_emb = embed_patches_and_time(self, x, t)  # (N, T, D), (N, D)
        if attention is not None and not isinstance(attention, list):
            raise TypeError(f"attention must be a list (the maps are appended to it) or None, got "
                            f"{type(attention).__name__}")  # fmt: skip
        tokens, pooled = self.text_encoder(self.encode_text(text, x.shape[0], x.device))  # (N, L, D), (N, D)
        ctx = self.context_proj(tokens)  # (N, L, D)
        c = t_emb + self.pooled_proj(pooled)  # (N, D)
        for block in self.blocks:
            h, ctx = block(h, ctx, c, attention)
        return final_layer(self, h, c)  # (N, C, H, W)
