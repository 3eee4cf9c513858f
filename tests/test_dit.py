"""DiT building blocks (chapter §2.6): patches, positional and label embeddings, the four conditionings."""

import pytest
import torch
from einops import rearrange

from diffu.nn import (
    CONDITIONINGS,
    DIT_SIZES,
    DiT,
    DiTConfig,
    LabelEmbedder,
    PatchEmbed,
    patchify,
    sincos_2d_pos_embed,
    unpatchify,
)
from diffu.nn.dit import DiTBlock
from diffu.schedules import linear_schedule
from diffu.train import diffusion_loss, seeded


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("c,h,w,p", [(1, 28, 28, 4), (1, 28, 28, 2), (4, 32, 32, 4), (3, 8, 12, 4), (2, 6, 6, 1)])
def test_patchify_round_trip_and_layout(c, h, w, p):
    x = torch.randn(2, c, h, w, generator=_g())
    tok = patchify(x, p)
    assert tok.shape == (2, (h // p) * (w // p), p * p * c)
    assert torch.equal(unpatchify(tok, p, h // p, w // p), x)
    # token k = patch (row i, column j) in raster order; its values are ordered (row a, column b, channel ch)
    i, j, a, b, ch = h // p - 1, 0, p - 1, 0, c - 1
    assert tok[1, i * (w // p) + j, (a * p + b) * c + ch] == x[1, ch, i * p + a, j * p + b]


def test_survey_patch_example():
    """The survey's example: a 32×32×4 latent with p = 4 gives 64 tokens of 64 values."""
    assert patchify(torch.zeros(1, 4, 32, 32), 4).shape == (1, 64, 64)


def test_patch_errors():
    with pytest.raises(ValueError, match="divisible by the patch size"):
        patchify(torch.zeros(1, 1, 28, 28), 3)
    with pytest.raises(ValueError, match="do not form"):
        unpatchify(torch.zeros(1, 50, 16), 4, 7)
    with pytest.raises(ValueError, match="divisible by the patch size"):
        PatchEmbed(1, 8, 3)(torch.zeros(1, 1, 28, 28))


def test_patch_embed_is_a_linear_layer_on_patches():
    pe = PatchEmbed(3, 16, 4)
    x = torch.randn(2, 3, 8, 12, generator=_g(1))
    w = rearrange(pe.proj.weight, "d c p q -> (p q c) d")
    expected = patchify(x, 4) @ w + pe.proj.bias
    torch.testing.assert_close(pe(x), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(pe.proj.bias, torch.zeros(16))  # zero bias at init, as DiT


def test_sincos_2d_structure():
    e = sincos_2d_pos_embed(16, 3, 5)  # 3 rows, 5 columns
    assert e.shape == (15, 16)
    grid = e.reshape(3, 5, 16)
    # first half encodes the column only, second half the row only ("w goes first")
    assert torch.allclose(grid[0, :, :8], grid[2, :, :8]) and torch.allclose(grid[:, 0, 8:], grid[:, 4, 8:])
    assert not torch.allclose(grid[0, 0, :8], grid[0, 1, :8])
    # position 0: sines 0, cosines 1; column 1: the first sine is sin(1 · ω_0) = sin(1)
    assert torch.equal(e[0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))
    assert e[1, 0] == pytest.approx(torch.sin(torch.tensor(1.0)).item(), abs=1e-7)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d_pos_embed(10, 3)


def test_label_embedder_null_class_and_dropout():
    le = LabelEmbedder(10, 8, dropout_prob=0.5)
    assert le.table.weight.shape == (11, 8)  # (classes + 1) × d, not T × d as the survey writes
    y = torch.arange(10).repeat(20)
    le.eval()
    assert torch.equal(le(y), le.table.weight[y])  # no dropout at evaluation
    le.train()
    a, b = le(y, _g(3)), le(y, _g(3))
    assert torch.equal(a, b)  # dropout is deterministic per generator
    dropped = (a == le.table.weight[10]).all(1).float().mean().item()
    assert 0.35 < dropped < 0.65  # 200 labels at p = 0.5 (±3 standard deviations)
    with pytest.raises(ValueError, match="labels in"):
        le(torch.tensor([11]))
    with pytest.raises(ValueError, match="dropout_prob"):
        LabelEmbedder(10, 8, dropout_prob=1.0)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_dit_shapes_zero_output_at_init_and_gradients(conditioning):
    with seeded(0):
        m = DiT(DiTConfig(hidden_size=32, depth=2, num_heads=4, conditioning=conditioning))
    x = torch.randn(3, 1, 28, 28, generator=_g())
    out = m(x, torch.tensor([0.0, 500.0, 999.0]), y=torch.tensor([0, 5, 10]))
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))  # zero-initialised output layer
    loss = diffusion_loss(m, linear_schedule(), x, _g(1), y=torch.tensor([1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss) and m.linear_final.weight.grad.abs().sum() > 0


def test_adaln_zero_blocks_are_identity_at_init():
    with seeded(0):
        m = DiT(DiTConfig(hidden_size=32, depth=3, num_heads=4, conditioning="adaLN-Zero"))
    x, c = torch.randn(2, 49, 32, generator=_g(2)), torch.randn(2, 32, generator=_g(3))
    for block in m.blocks:
        assert torch.equal(block(x, c), x)
    # and not for plain adaLN, whose modulation is not zero-initialised
    with seeded(0):
        block = DiTBlock(32, 4, 4.0, "adaLN")
    assert not torch.allclose(block(x, c), x)


def test_conditioning_reaches_the_output():
    for conditioning in CONDITIONINGS:
        with seeded(0):
            m = DiT(DiTConfig(hidden_size=32, depth=2, num_heads=4, conditioning=conditioning))
        with torch.no_grad():
            for p in m.parameters():  # leave the zero initialisation so every path is active
                p.add_(0.05 * torch.randn(p.shape, generator=_g(4)))
        m.eval()
        x = torch.randn(2, 1, 28, 28, generator=_g(5))
        base = m(x, torch.tensor([10.0, 10.0]), y=torch.tensor([1, 1]))
        assert not torch.allclose(base, m(x, torch.tensor([900.0, 900.0]), y=torch.tensor([1, 1]))), conditioning
        assert not torch.allclose(base, m(x, torch.tensor([10.0, 10.0]), y=torch.tensor([7, 7]))), conditioning


def test_dit_errors_and_registry():
    with pytest.raises(ValueError, match="conditioning must be one of"):
        DiT(conditioning="film")
    with pytest.raises(ValueError, match="divisible by patch_size"):
        DiT(image_size=28, patch_size=3)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        DiT(hidden_size=36, num_heads=8)
    with pytest.raises(ValueError, match="x must be"):
        DiT(hidden_size=32, depth=1)(torch.zeros(1, 1, 32, 32), torch.zeros(1))
    with pytest.raises(ValueError, match="no class conditioning"):
        DiT(hidden_size=32, depth=1, num_classes=None)(torch.zeros(1, 1, 28, 28), torch.zeros(1), y=torch.zeros(1))
    for name, size in DIT_SIZES.items():
        m = DiT(DiTConfig(**size))
        assert 28 % m.config.patch_size == 0 and sum(p.numel() for p in m.parameters()) < 5_000_000, name
    assert DiT(learn_sigma=True, hidden_size=32, depth=1).linear_final.out_features == 4 * 4 * 2


def test_adaln_zero_block_matches_diffusers_dit_block():
    """Oracle: diffusers' BasicTransformerBlock as DiTTransformer2DModel builds it (norm_type="ada_norm_zero",
    tanh-GELU, attention bias, LayerNorm without affine) with our weights copied equals our block to 1e-5. Two
    convention differences are bridged here: diffusers' AdaLayerNormZero embeds (t, y) itself (with
    downscale_freq_shift = 1, not DiT's 0), so its embedding is replaced by our conditioning vector c; and its
    LayerNorm eps is set to DiT's 1e-6 (diffusers' default is 1e-5)."""
    from diffusers.models.attention import BasicTransformerBlock

    d, heads = 32, 4
    with seeded(0):
        ours = DiTBlock(d, heads, 4.0, "adaLN-Zero")
        for p in ours.parameters():  # random weights everywhere, including the zero-initialised modulation
            torch.nn.init.normal_(p, std=0.1)
        ref = BasicTransformerBlock(d, heads, d // heads, activation_fn="gelu-approximate", num_embeds_ada_norm=10,
                                    attention_bias=True, norm_type="ada_norm_zero", norm_elementwise_affine=False,
                                    norm_eps=1e-6)  # fmt: skip
    x, c = torch.randn(2, 49, d, generator=_g(6)), torch.randn(2, d, generator=_g(7))
    with torch.no_grad():
        ref.norm1.linear.load_state_dict(ours.adaLN_modulation[1].state_dict())
        wq, wk, wv = ours.attn.qkv.weight.chunk(3)
        bq, bk, bv = ours.attn.qkv.bias.chunk(3)
        for lin, w, b in ((ref.attn1.to_q, wq, bq), (ref.attn1.to_k, wk, bk), (ref.attn1.to_v, wv, bv)):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        ref.attn1.to_out[0].load_state_dict(ours.attn.proj.state_dict())
        ref.ff.net[0].proj.load_state_dict(ours.mlp[0].state_dict())
        ref.ff.net[2].load_state_dict(ours.mlp[2].state_dict())
    del ref.norm1.emb
    ref.norm1.emb = lambda timestep, class_labels, hidden_dtype=None: c
    with torch.no_grad():
        expected = ref(x, timestep=torch.zeros(2), class_labels=torch.zeros(2, dtype=torch.long))
        torch.testing.assert_close(ours(x, c), expected, rtol=1e-5, atol=1e-5)


def test_learned_range_variance_interpolates_fixed_variances():
    """Nichol & Dhariwal's learned range: v = +1 gives β_t ("fixedlarge"), v = -1 gives β̃_t ("fixedsmall")."""
    from diffu.samplers import ddpm_step

    s = linear_schedule()
    x, eps, z = (torch.randn(2, 1, 4, 4, generator=_g(i)) for i in range(3))
    for t in (1, 10, 500, 999):
        for v, fixed in ((1.0, "fixedlarge"), (-1.0, "fixedsmall")):
            a, _ = ddpm_step(s, x, t, eps, variance="learned_range", v=torch.full_like(x, v), noise=z, clip_x0=False)
            b, _ = ddpm_step(s, x, t, eps, variance=fixed, noise=z, clip_x0=False)
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="needs the model's variance output"):
        ddpm_step(s, x, 5, eps, variance="learned_range", noise=z)


def test_learn_sigma_dit_in_the_samplers():
    from diffu.samplers import ddim, ddpm

    with seeded(0):
        m = DiT(DiTConfig(hidden_size=32, depth=1, num_heads=4, learn_sigma=True))
    with torch.no_grad():
        m.linear_final.weight.normal_(std=0.05, generator=_g(8))  # a non-zero variance head
    m.eval()
    s = linear_schedule()
    kw = dict(model_kwargs={"y": torch.tensor([1, 2])}, progress=False)
    a = ddpm(m, (2, 1, 28, 28), s, steps=5, variance="learned_range", generator=_g(9), **kw)
    b = ddpm(m, (2, 1, 28, 28), s, steps=5, variance="learned_range", generator=_g(9), **kw)
    c = ddpm(m, (2, 1, 28, 28), s, steps=5, variance="fixedlarge", generator=_g(9), **kw)
    assert torch.equal(a, b) and a.shape == (2, 1, 28, 28) and not torch.allclose(a, c)
    assert ddim(m, (2, 1, 28, 28), s, steps=3, generator=_g(9), **kw).shape == (2, 1, 28, 28)  # uses ε̂ only
    with pytest.raises(ValueError, match="learn_sigma"):
        ddpm(DiT(hidden_size=32, depth=1), (1, 1, 28, 28), s, steps=2, variance="learned_range", progress=False)


def _survey_eq8(block, z, c):
    """The survey's Eq. (8) read literally: z_l = FFN{Attn{AdaLN(z)} + α AdaLN(z)} (one modulation, gate on the
    skip, no residual around the FFN)."""
    from diffu.nn.dit import modulate

    shift, scale, gate, *_ = block.adaLN_modulation(c).chunk(6, dim=-1)
    a = modulate(block.norm1(z), shift, scale)
    return block.mlp(block.attn(a) + gate[:, None] * a)


def test_survey_eq8_erratum_dit_block_is_two_gated_residuals():
    """What DiT computes: z' = z + α₁ ⊙ Attn(LN(z)(1 + γ₁) + β₁), z_l = z' + α₂ ⊙ FFN(LN(z')(1 + γ₂) + β₂).
    The survey's Eq. (8) is a different function: it gates the skip instead of the sublayer, adds the normalised
    rather than the raw input, shares one modulation and drops the FFN's residual — so it is not even the identity
    when α = 0."""
    from diffu.nn.dit import modulate

    with seeded(0):
        block = DiTBlock(32, 4, 4.0, "adaLN-Zero")
        for p in block.adaLN_modulation.parameters():
            torch.nn.init.normal_(p, std=0.2)
    z, c = torch.randn(2, 9, 32, generator=_g(1)), torch.randn(2, 32, generator=_g(2))
    with torch.no_grad():
        s1, g1, a1, s2, g2, a2 = block.adaLN_modulation(c).chunk(6, dim=-1)
        z1 = z + a1[:, None] * block.attn(modulate(block.norm1(z), s1, g1))
        expected = z1 + a2[:, None] * block.mlp(modulate(block.norm2(z1), s2, g2))
        torch.testing.assert_close(block(z, c), expected)
        assert not torch.allclose(_survey_eq8(block, z, c), expected, atol=1e-2)
        torch.nn.init.zeros_(block.adaLN_modulation[-1].weight)
        torch.nn.init.zeros_(block.adaLN_modulation[-1].bias)
        assert torch.equal(block(z, c), z)  # the real block: identity at α = 0
        assert not torch.allclose(_survey_eq8(block, z, c), z, atol=1e-2)  # Eq. (8): not the identity
