"""Diffusion Transformer (Peebles & Xie 2023) with the four conditioning schemes of its ablation (chapter §2.6).

``DiT(conditioning=…)``: the same patch embedding, positional embedding and final projection around ``depth`` blocks
of one class per scheme (:data:`DIT_BLOCKS`), the timestep and class conditioning entering in one of four ways:

* ``"in-context"`` — :class:`InContextBlock`: the t and y embeddings are two extra tokens in the sequence (removed
  before the output);
* ``"cross-attention"`` — :class:`CrossAttentionBlock`: a cross-attention layer attends to the [t; y] pair;
* ``"adaLN"`` — :class:`AdaLNBlock`: LayerNorm scale and shift are regressed from c = t_emb + y_emb;
* ``"adaLN-Zero"`` — :class:`AdaLNZeroBlock`: adaLN plus per-block gates α, all regressed from c and
  zero-initialised, so every block starts as the identity (the paper's choice; best FID in its Fig. 5).

Attention runs through ``torch.nn.functional.scaled_dot_product_attention``. NaN or inf in the input (``x``,
``t``, a block's ``c``) propagates to the output: forward checks shapes and dtypes only (:mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..checks import check_bool, check_choice, check_generator, check_int, check_real
from .embeddings import LabelEmbedder, PatchEmbed, TimestepEmbedder, sincos_2d_pos_embed, unpatchify
from .inputs import check_input, labels_for, make_config, timesteps_for
from .transformer import Attention, feed_forward

__all__ = [
    "AdaLNBlock",
    "AdaLNZeroBlock",
    "CONDITIONINGS",
    "CrossAttentionBlock",
    "DIT_BLOCKS",
    "DIT_SIZES",
    "DiT",
    "DiTConfig",
    "InContextBlock",
    "PatchTransformerConfig",
    "modulate",
]

#: The four conditioning schemes of the DiT paper's ablation (its Fig. 5).
CONDITIONINGS = ("in-context", "cross-attention", "adaLN", "adaLN-Zero")


@dataclass
class PatchTransformerConfig:
    """The fields shared by :class:`DiTConfig` and :class:`~diffu.nn.MMDiTConfig`, validated on construction
    (:meth:`check`)."""

    image_size: int = 28
    patch_size: int = 4
    in_channels: int = 1
    hidden_size: int = 96
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0

    def to_dict(self):
        """The fields as a plain dict (what the weights manifest stores)."""
        return asdict(self)

    def __post_init__(self):
        self.check()

    def check(self):
        """Raise ``ValueError`` (``TypeError`` for a non-number) unless every size is an integer ≥ 1, ``mlp_ratio``
        a finite number > 0, the patch size divides the image and the heads (and 4, for the 2D sin-cos positions)
        divide the width."""
        for name in ("image_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads"):
            check_int(name, getattr(self, name), 1)
        check_real("mlp_ratio", self.mlp_ratio, 0, low_open=True)
        if int(self.hidden_size * self.mlp_ratio) < 1:
            raise ValueError(
                f"mlp_ratio must give an MLP width int(mlp_ratio · hidden_size) >= 1, got {self.mlp_ratio}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be divisible by patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads or self.hidden_size % 4:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads} and "
                             "by 4")  # fmt: skip


@dataclass
class DiTConfig(PatchTransformerConfig):
    """Hyper-parameters of :class:`DiT` (stored next to shipped weights), validated on construction: the shared
    fields as :meth:`PatchTransformerConfig.check`, ``num_classes`` None or an integer ≥ 1, ``class_dropout_prob``
    in [0, 1), ``conditioning`` one of :data:`CONDITIONINGS`, ``learn_sigma`` a bool."""

    num_classes: int | None = 10
    class_dropout_prob: float = 0.1
    conditioning: str = "adaLN-Zero"
    learn_sigma: bool = False

    def check(self):
        super().check()
        if self.num_classes is not None:
            check_int("num_classes", self.num_classes, 1)
        check_real("class_dropout_prob", self.class_dropout_prob, 0, 1, high_open=True)
        check_choice("conditioning", self.conditioning, CONDITIONINGS)
        check_bool("learn_sigma", self.learn_sigma)


#: Tiny configurations for this book's 28×28 Fashion-MNIST (the paper's S/B/L/XL start at 384 hidden units).
DIT_SIZES = {
    "DiT-T/4": dict(hidden_size=96, depth=4, num_heads=4, patch_size=4),
    "DiT-T/2": dict(hidden_size=96, depth=4, num_heads=4, patch_size=2),
    "DiT-S/4": dict(hidden_size=192, depth=6, num_heads=6, patch_size=4),
}


#################################################################################
#                        adaLN's modulation (paper Sec. 3.2)                    #
#################################################################################


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive LayerNorm's affine step, ``x (1 + scale) + shift`` (Peebles & Xie 2023, Sec. 3.2; DiT's models.py).

    Args:
        x: ``(N, T, D)`` normalised tokens.
        shift: ``(N, D)`` per-sample shift β, broadcast over the T tokens.
        scale: ``(N, D)`` per-sample scale γ (``1 + γ`` multiplies, so γ = 0 leaves ``x`` unchanged).

    Returns:
        ``(N, T, D)``.

    Raises:
        ValueError: ``x`` is not a float ``(N, T, D)`` tensor, or ``shift``/``scale`` not ``(N, D)`` (or ``(1, D)``,
            broadcast over the batch).
    """
    check_input(x, (None, None))
    _check_condition(shift, x, "shift")
    _check_condition(scale, x, "scale")
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _check_condition(c, x: torch.Tensor, name: str = "c", tokens: bool = False) -> None:
    """``c`` is a float ``(N, D)`` conditioning for the tokens ``x`` ``(N, T, D)`` — a batch of 1 broadcasts (a
    ``(1,)`` timestep without labels gives one conditioning vector) — or, with ``tokens``, ``(N, k, D)``."""
    check_input(c, (None, x.shape[-1]) if tokens else (x.shape[-1],), name, dims=("k", "D") if tokens else None)
    if c.shape[0] != x.shape[0] and (tokens or c.shape[0] != 1):
        also = "" if tokens else " or 1"
        raise ValueError(f"{name} must have batch size {x.shape[0]} (x's){also}, got shape {tuple(c.shape)}")


def _check_block(dim, num_heads, mlp_ratio) -> None:
    """A block's arguments, checked before the first layer is built from them."""
    check_int("dim", dim, 1)
    check_int("num_heads", num_heads, 1)
    check_real("mlp_ratio", mlp_ratio, 0, low_open=True)


def _check_tokens(block, x) -> None:
    """``x`` is a float ``(N, T, D)`` token tensor of the block's width."""
    check_input(x, (None, block.norm1.normalized_shape[0]))


#################################################################################
#                 One DiT block per conditioning scheme (paper Fig. 3)          #
#################################################################################


class AdaLNZeroBlock(nn.Module):
    """A DiT block with adaLN-Zero conditioning (Peebles & Xie 2023, Sec. 3.2 and Fig. 3; the paper's choice).

    From the conditioning vector ``c = t_emb + y_emb`` one linear layer regresses six vectors — shift β, scale γ and
    gate α for the attention and for the MLP — and the block is two gated residual branches:

    ``x ← x + α₁ ⊙ Attn(LN(x)(1 + γ₁) + β₁)``, ``x ← x + α₂ ⊙ MLP(LN(x)(1 + γ₂) + β₂)``.

    With the modulation layer at zero (as :meth:`DiT.initialize_weights` leaves it) every α is 0 and the block is the
    identity. The survey's Eq. (8) writes this block differently; chapter §2.6 corrects it.

    Args:
        dim: the token width D.
        num_heads: attention heads (must divide D).
        mlp_ratio: the MLP's hidden width is ``int(mlp_ratio · D)``.

    Notes:
        As in the official ``DiTBlock``; the zero initialisation is done by the model
        (:meth:`DiT.initialize_weights`), not by the block, as there.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        _check_block(dim, num_heads, mlp_ratio)
        # the norms have no affine parameters of their own: the scale and shift are regressed from c
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = feed_forward(dim, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, T, D)`` tokens, ``c``: ``(N, D)`` conditioning. Returns ``(N, T, D)``. Raises ``ValueError``
        naming the argument for another shape or an integer dtype."""
        _check_tokens(self, x)
        _check_condition(c, x)
        # (N, 6D) -> six (N, D) vectors: shift, scale and gate of the attention (msa) and of the MLP branch
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (N, T, D)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (N, T, D)
        return x


class AdaLNBlock(nn.Module):
    """A DiT block with adaptive LayerNorm (adaLN) conditioning (Peebles & Xie 2023, Sec. 3.2; Perez et al. 2018).

    Like :class:`AdaLNZeroBlock` without the gates: four vectors (β₁, γ₁, β₂, γ₂) are regressed from
    ``c = t_emb + y_emb``, and ``x ← x + Attn(LN(x)(1 + γ₁) + β₁)``, ``x ← x + MLP(LN(x)(1 + γ₂) + β₂)``.

    Its arguments are those of :class:`AdaLNZeroBlock` (``dim``, ``num_heads``, ``mlp_ratio``).

    Notes:
        The official repository ships only the adaLN-Zero block; this variant follows the paper's description.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        _check_block(dim, num_heads, mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = feed_forward(dim, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 4 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, T, D)`` tokens, ``c``: ``(N, D)`` conditioning. Returns ``(N, T, D)``. Raises ``ValueError``
        naming the argument for another shape or an integer dtype."""
        _check_tokens(self, x)
        _check_condition(c, x)
        shift_msa, scale_msa, shift_mlp, scale_mlp = self.adaLN_modulation(c).chunk(4, dim=1)  # (N, D) each
        x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (N, T, D)
        x = x + self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (N, T, D)
        return x


class InContextBlock(nn.Module):
    """A DiT block for in-context conditioning (Peebles & Xie 2023, Sec. 3.2): a standard pre-norm ViT block; the
    t and y embeddings are extra tokens of its input sequence (:class:`DiT` adds and removes them).

    ``x ← x + Attn(LN(x))``, ``x ← x + MLP(LN(x))``.

    Its arguments are those of :class:`AdaLNZeroBlock` (``dim``, ``num_heads``, ``mlp_ratio``).

    Notes:
        The official repository ships only the adaLN-Zero block; this variant follows the paper's description.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        _check_block(dim, num_heads, mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = feed_forward(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(N, k + T, D)`` tokens whose first k are the conditioning; ``c`` is unused (the same call as the
        other blocks) and not checked. Returns ``(N, k + T, D)``."""
        _check_tokens(self, x)
        x = x + self.attn(self.norm1(x))  # (N, k + T, D)
        x = x + self.mlp(self.norm2(x))  # (N, k + T, D)
        return x


class CrossAttentionBlock(InContextBlock):
    """A DiT block with cross-attention conditioning (Peebles & Xie 2023, Sec. 3.2; as in Vaswani et al. 2017's
    decoder): a multi-head cross-attention layer between self-attention and the MLP attends to the short sequence
    ``[t_emb; y_emb]``.

    ``x ← x + Attn(LN(x))``, ``x ← x + CrossAttn(LN(x), c)``, ``x ← x + MLP(LN(x))``.

    Its arguments are those of :class:`AdaLNZeroBlock` (``dim``, ``num_heads``, ``mlp_ratio``).

    Notes:
        The official repository ships only the adaLN-Zero block; this variant follows the paper's description. It
        extends :class:`InContextBlock` (the plain pre-norm block) with the cross-attention layer.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__(dim, num_heads, mlp_ratio)  # norm1, attn, norm2, mlp: the plain pre-norm block
        # registered after the MLP although applied before it: the order of the shipped weights and of the seeded init
        self.norm_x = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = Attention(dim, num_heads, cross=True)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, T, D)`` tokens, ``c``: ``(N, k, D)`` conditioning tokens (k = 2: t and y; 1 without
        labels). Returns ``(N, T, D)``. Raises ``ValueError`` naming the argument for another shape or an integer
        dtype."""
        _check_tokens(self, x)
        _check_condition(c, x, tokens=True)
        x = x + self.attn(self.norm1(x))  # (N, T, D)
        x = x + self.cross_attn(self.norm_x(x), context=c)  # (N, T, D)
        x = x + self.mlp(self.norm2(x))  # (N, T, D)
        return x


#: The block class of each conditioning scheme, in the order of :data:`CONDITIONINGS`.
DIT_BLOCKS = {
    "in-context": InContextBlock,
    "cross-attention": CrossAttentionBlock,
    "adaLN": AdaLNBlock,
    "adaLN-Zero": AdaLNZeroBlock,
}


#################################################################################
#                 Input and output sides shared by DiT and MMDiT                #
#################################################################################


def build_patch_and_time_embedders(model, cfg: PatchTransformerConfig):
    """Give ``model`` the patch embedding ``x_embedder``, the fixed ``pos_embed`` buffer ``(1, T, D)``, the
    ``t_embedder`` and the token-grid side ``grid`` (shared by DiT and MMDiT)."""
    model.grid = cfg.image_size // cfg.patch_size
    model.x_embedder = PatchEmbed(cfg.in_channels, cfg.hidden_size, cfg.patch_size)
    model.register_buffer("pos_embed", sincos_2d_pos_embed(cfg.hidden_size, model.grid)[None], persistent=False)
    model.t_embedder = TimestepEmbedder(cfg.hidden_size)


def embed_patches_and_time(model, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
    """The input side shared by :class:`DiT` and :class:`~diffu.nn.MMDiT`: validate ``x`` (``model.check_input``:
    a float ``(N, C, S, S)`` of the config's channels and image size) and ``t``
    (:func:`~diffu.nn.inputs.timesteps_for`), embed the patches plus the fixed positions, ``(N, T, D)``, and the
    timesteps (a scalar is broadcast), ``(N, D)``."""
    model.check_input(x)
    t = timesteps_for(t, x.shape[0], x.device)
    return model.x_embedder(x) + model.pos_embed.to(x.dtype), model.t_embedder(t).to(x.dtype)


def final_layer(model, h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """The output side shared by :class:`DiT` and :class:`~diffu.nn.MMDiT`: LayerNorm (adaptively modulated by
    ``c`` when given), a linear map of each token to ``p·p·C_out`` values, and unpatchify to ``(N, C_out, H, W)``."""
    h = model.norm_final(h)  # (N, T, D)
    if c is not None:
        shift, scale = model.final_modulation(c).chunk(2, dim=-1)  # (N, D) each
        h = modulate(h, shift, scale)  # (N, T, D)
    return unpatchify(model.linear_final(h), model.config.patch_size, model.grid)  # (N, C_out, H, W)


#################################################################################
#                                 The DiT model                                 #
#################################################################################


class DiT(nn.Module):
    """The Diffusion Transformer (Peebles & Xie 2023): ``model(x_t, t, y=None) -> ε̂`` (or ``[ε̂, v]`` with
    ``learn_sigma``), chapter §2.6.

    Patchify + 2D sin-cos positions, ``depth`` blocks of the class :data:`DIT_BLOCKS` gives ``config.conditioning``,
    then a (modulated) LayerNorm, a linear layer and unpatchify.

    Args:
        config: a :class:`DiTConfig`, or None and its fields as keyword arguments (not both).

    The call takes ``x`` ``(N, C, H, W)``, float ``t`` ``(N,)`` (or a scalar), integer labels ``y`` ``(N,)`` —
    ``y = num_classes`` (or ``y=None``) is the null label, the unconditional model — and an optional ``generator``
    for the label dropout in training. It returns ``(N, C, H, W)`` (``(N, 2C, H, W)`` with ``learn_sigma``). A
    float ``x`` of another shape than ``(N, in_channels, image_size, image_size)``, a ``t`` of another batch size,
    labels that are not integers in ``[0, num_classes]`` (or labels for a network without classes) raise
    ``ValueError`` naming the argument.

    Notes:
        The paper's "in-context", "cross-attention" and "adaLN" ablation variants are not in the official code;
        they follow its Sec. 3.2. The output LayerNorm is modulated only for the adaLN variants.
    """

    prediction = "eps"

    def __init__(self, config: DiTConfig | None = None, **kwargs):
        super().__init__()
        cfg = make_config(DiTConfig, config, kwargs)
        self.config = cfg
        self.learn_sigma = cfg.learn_sigma  # output [ε̂, v]; samplers take ε̂, DDPM's "learned_range" also v
        # adaLN variants: one vector c modulates every block; the others see [t; y] as tokens
        self.adaptive = cfg.conditioning in ("adaLN", "adaLN-Zero")
        d, p = cfg.hidden_size, cfg.patch_size
        self.out_channels = cfg.in_channels * (2 if cfg.learn_sigma else 1)
        self.num_classes = cfg.num_classes
        build_patch_and_time_embedders(self, cfg)
        self.y_embedder = LabelEmbedder(cfg.num_classes, d, cfg.class_dropout_prob) if cfg.num_classes else None
        block = DIT_BLOCKS[cfg.conditioning]
        self.blocks = nn.ModuleList([block(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.norm_final = nn.LayerNorm(d, elementwise_affine=not self.adaptive, eps=1e-6)
        if self.adaptive:
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

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError``/``TypeError`` naming ``name`` unless ``x`` is a float ``(N, in_channels,
        image_size, image_size)`` (what :meth:`forward` checks first; the guidance wrappers call it before matching
        labels to ``x``). Shared with :class:`~diffu.nn.MMDiT`."""
        cfg = self.config
        check_input(x, (cfg.in_channels, None, None), name, size=(cfg.image_size, cfg.image_size),
                    of=f"the {type(self).__name__}")  # fmt: skip

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, generator=None):
        """``x`` ``(N, C, H, W)``, ``t`` ``(N,)``, ``y`` ``(N,)`` or None → ``(N, C_out, H, W)`` (see the class)."""
        h, t_emb = embed_patches_and_time(self, x, t)  # (N, T, D), (N, D)
        check_generator(generator)
        # shape and dtype here, the values in the label embedder (one read of the labels per call)
        y = labels_for(y, self.num_classes, x.shape[0], x.device, owner="this DiT", values=False)
        y_emb = None
        if y is not None:
            y_emb = self.y_embedder(y, generator).to(x.dtype)  # (N, D), one label-dropout draw
        if self.adaptive:
            c = t_emb if y_emb is None else t_emb + y_emb  # (N, D)
        else:
            if t_emb.shape[0] != x.shape[0]:  # a (1,) timestep: one embedding for the batch's tokens
                t_emb = t_emb.expand(x.shape[0], -1)
            c = torch.stack([t_emb] + ([] if y_emb is None else [y_emb]), dim=1)  # (N, k, D), k = 1 or 2
        if self.config.conditioning == "in-context":
            h = torch.cat([c, h], dim=1)  # (N, k + T, D)
        for block in self.blocks:
            h = block(h, c)  # (N, T, D) or (N, k + T, D)
        if self.config.conditioning == "in-context":
            h = h[:, c.shape[1] :]  # (N, T, D): drop the conditioning tokens
        return final_layer(self, h, c if self.adaptive else None)  # (N, C_out, H, W)
