"""DiT building blocks (chapter §2.6): patches, positional and label embeddings, the four conditioning blocks, and the
shipped DiT-family weights (keys and outputs pinned)."""

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
from diffu.nn.dit import DIT_BLOCKS, AdaLNBlock, AdaLNZeroBlock, CrossAttentionBlock, InContextBlock, modulate
from diffu.schedules import linear_schedule
from diffu.train import diffusion_loss, seeded


@pytest.mark.parametrize("c,h,w,p", [(1, 28, 28, 4), (1, 28, 28, 2), (4, 32, 32, 4), (3, 8, 12, 4), (2, 6, 6, 1)])
def test_patchify_round_trip_and_layout(c, h, w, p, gen):
    x = torch.randn(2, c, h, w, generator=gen())
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


def test_patch_embed_is_a_linear_layer_on_patches(gen):
    pe = PatchEmbed(3, 16, 4)
    x = torch.randn(2, 3, 8, 12, generator=gen(1))
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


def test_label_embedder_null_class_and_dropout(gen):
    le = LabelEmbedder(10, 8, dropout_prob=0.5)
    assert le.table.weight.shape == (11, 8)  # (classes + 1) × d, not T × d as the survey writes
    y = torch.arange(10).repeat(20)
    le.eval()
    assert torch.equal(le(y), le.table.weight[y])  # no dropout at evaluation
    le.train()
    a, b = le(y, gen(3)), le(y, gen(3))
    assert torch.equal(a, b)  # dropout is deterministic per generator
    dropped = (a == le.table.weight[10]).all(1).float().mean().item()
    assert 0.35 < dropped < 0.65  # 200 labels at p = 0.5 (±3 standard deviations)
    with pytest.raises(ValueError, match="labels in"):
        le(torch.tensor([11]))
    with pytest.raises(ValueError, match="dropout_prob"):
        LabelEmbedder(10, 8, dropout_prob=1.0)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_dit_shapes_zero_output_at_init_and_gradients(conditioning, gen):
    with seeded(0):
        m = DiT(DiTConfig(hidden_size=32, depth=2, num_heads=4, conditioning=conditioning))
    x = torch.randn(3, 1, 28, 28, generator=gen())
    out = m(x, torch.tensor([0.0, 500.0, 999.0]), y=torch.tensor([0, 5, 10]))
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))  # zero-initialised output layer
    loss = diffusion_loss(m, linear_schedule(), x, gen(1), y=torch.tensor([1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss) and m.linear_final.weight.grad.abs().sum() > 0


def test_adaln_zero_blocks_are_identity_at_init(gen):
    with seeded(0):
        m = DiT(DiTConfig(hidden_size=32, depth=3, num_heads=4, conditioning="adaLN-Zero"))
    x, c = torch.randn(2, 49, 32, generator=gen(2)), torch.randn(2, 32, generator=gen(3))
    for block in m.blocks:
        assert torch.equal(block(x, c), x)
    # and not for plain adaLN, whose modulation is not zero-initialised
    with seeded(0):
        block = AdaLNBlock(32, 4, 4.0)
    assert not torch.allclose(block(x, c), x)


def test_conditioning_reaches_the_output(gen):
    for conditioning in CONDITIONINGS:
        with seeded(0):
            m = DiT(DiTConfig(hidden_size=32, depth=2, num_heads=4, conditioning=conditioning))
        with torch.no_grad():
            for p in m.parameters():  # leave the zero initialisation so every path is active
                p.add_(0.05 * torch.randn(p.shape, generator=gen(4)))
        m.eval()
        x = torch.randn(2, 1, 28, 28, generator=gen(5))
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


def test_adaln_zero_block_matches_diffusers_dit_block(gen):
    """Oracle: diffusers' BasicTransformerBlock as DiTTransformer2DModel builds it (norm_type="ada_norm_zero",
    tanh-GELU, attention bias, LayerNorm without affine) with our weights copied equals our block to 1e-5. Two
    convention differences are bridged here: diffusers' AdaLayerNormZero embeds (t, y) itself (with
    downscale_freq_shift = 1, not DiT's 0), so its embedding is replaced by our conditioning vector c; and its
    LayerNorm eps is set to DiT's 1e-6 (diffusers' default is 1e-5)."""
    from diffusers.models.attention import BasicTransformerBlock

    d, heads = 32, 4
    with seeded(0):
        ours = AdaLNZeroBlock(d, heads, 4.0)
        for p in ours.parameters():  # random weights everywhere, including the zero-initialised modulation
            torch.nn.init.normal_(p, std=0.1)
        ref = BasicTransformerBlock(d, heads, d // heads, activation_fn="gelu-approximate", num_embeds_ada_norm=10,
                                    attention_bias=True, norm_type="ada_norm_zero", norm_elementwise_affine=False,
                                    norm_eps=1e-6)  # fmt: skip
    x, c = torch.randn(2, 49, d, generator=gen(6)), torch.randn(2, d, generator=gen(7))
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


def test_learned_range_variance_interpolates_fixed_variances(gen):
    """Nichol & Dhariwal's learned range: v = +1 gives β_t ("fixedlarge"), v = -1 gives β̃_t ("fixedsmall")."""
    from diffu.samplers import ddpm_step

    s = linear_schedule()
    x, eps, z = (torch.randn(2, 1, 4, 4, generator=gen(i)) for i in range(3))
    for t in (1, 10, 500, 999):
        for v, fixed in ((1.0, "fixedlarge"), (-1.0, "fixedsmall")):
            a, _ = ddpm_step(s, x, t, eps, variance="learned_range", v=torch.full_like(x, v), noise=z, clip_x0=False)
            b, _ = ddpm_step(s, x, t, eps, variance=fixed, noise=z, clip_x0=False)
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="needs the model's variance output"):
        ddpm_step(s, x, 5, eps, variance="learned_range", noise=z)


def test_learn_sigma_dit_in_the_samplers(gen):
    from diffu.samplers import ddim, ddpm

    with seeded(0):
        m = DiT(DiTConfig(hidden_size=32, depth=1, num_heads=4, learn_sigma=True))
    with torch.no_grad():
        m.linear_final.weight.normal_(std=0.05, generator=gen(8))  # a non-zero variance head
    m.eval()
    s = linear_schedule()
    kw = dict(model_kwargs={"y": torch.tensor([1, 2])}, progress=False)
    a = ddpm(m, (2, 1, 28, 28), s, steps=5, variance="learned_range", generator=gen(9), **kw)
    b = ddpm(m, (2, 1, 28, 28), s, steps=5, variance="learned_range", generator=gen(9), **kw)
    c = ddpm(m, (2, 1, 28, 28), s, steps=5, variance="fixedlarge", generator=gen(9), **kw)
    assert torch.equal(a, b) and a.shape == (2, 1, 28, 28) and not torch.allclose(a, c)
    assert ddim(m, (2, 1, 28, 28), s, steps=3, generator=gen(9), **kw).shape == (2, 1, 28, 28)  # uses ε̂ only
    with pytest.raises(ValueError, match="learn_sigma"):
        ddpm(DiT(hidden_size=32, depth=1), (1, 1, 28, 28), s, steps=2, variance="learned_range", progress=False)


def _survey_eq8(block, z, c):
    """The survey's Eq. (8) read literally: z_l = FFN{Attn{AdaLN(z)} + α AdaLN(z)} (one modulation, gate on the
    skip, no residual around the FFN)."""
    shift, scale, gate, *_ = block.adaLN_modulation(c).chunk(6, dim=-1)
    a = modulate(block.norm1(z), shift, scale)
    return block.mlp(block.attn(a) + gate[:, None] * a)


def test_survey_eq8_erratum_dit_block_is_two_gated_residuals(gen):
    """What DiT computes: z' = z + α₁ ⊙ Attn(LN(z)(1 + γ₁) + β₁), z_l = z' + α₂ ⊙ FFN(LN(z')(1 + γ₂) + β₂).
    The survey's Eq. (8) is a different function: it gates the skip instead of the sublayer, adds the normalised
    rather than the raw input, shares one modulation and drops the FFN's residual — so it is not even the identity
    when α = 0."""
    with seeded(0):
        block = AdaLNZeroBlock(32, 4, 4.0)
        for p in block.adaLN_modulation.parameters():
            torch.nn.init.normal_(p, std=0.2)
    z, c = torch.randn(2, 9, 32, generator=gen(1)), torch.randn(2, 32, generator=gen(2))
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


# ---------------------------------------------------------------------------------------------------------------
# one block class per conditioning scheme
# ---------------------------------------------------------------------------------------------------------------


def test_modulate_scales_and_shifts_every_token(gen):
    x, shift, scale = torch.randn(2, 5, 8, generator=gen(1)), torch.randn(2, 8, generator=gen(2)), torch.randn(2, 8)
    out = modulate(x, shift, scale)
    assert out.shape == (2, 5, 8)
    for n in range(2):
        for t in range(5):
            assert torch.equal(out[n, t], x[n, t] * (1 + scale[n]) + shift[n])  # per sample, the same for all tokens
    assert torch.equal(modulate(x, torch.zeros(2, 8), torch.zeros(2, 8)), x)


def test_dit_picks_one_block_class_per_conditioning():
    assert tuple(DIT_BLOCKS) == CONDITIONINGS and len(set(DIT_BLOCKS.values())) == 4
    for cond, cls in DIT_BLOCKS.items():
        m = DiT(DiTConfig(hidden_size=32, depth=2, num_heads=4, conditioning=cond))
        assert all(type(block) is cls for block in m.blocks), cond


def _adaln_zero_addcmul(block, x, c):
    """The adaLN-Zero block as diffu wrote it before the one-class-per-scheme refactor (the shipped adaLN-Zero
    weights were trained with it): modulation and gated residuals fused into ``torch.addcmul``."""
    shift1, scale1, gate1, shift2, scale2, gate2 = block.adaLN_modulation(c)[:, None].chunk(6, dim=-1)
    x = torch.addcmul(x, gate1, block.attn(torch.addcmul(shift1, block.norm1(x), 1 + scale1)))
    return torch.addcmul(x, gate2, block.mlp(torch.addcmul(shift2, block.norm2(x), 1 + scale2)))


def test_adaln_zero_block_equals_the_fused_addcmul_formulation(gen):
    """The block now reads as the paper's two lines, ``x + gate · sublayer(modulate(norm(x), shift, scale))``; the
    fused addcmul of the previous code rounds differently: by a few float32 spacings, ≤ 1e-6 for outputs of size
    ≤ 5 (the spacing near 4 is 4.8e-7; measured 2.4e-7 here)."""
    with seeded(0):
        block = AdaLNZeroBlock(96, 4, 4.0)
    with torch.no_grad():
        for p in block.parameters():  # random weights, so the gates, shifts and scales are all active
            p.copy_(0.05 * torch.randn(p.shape, generator=gen(1)))
        x, c = torch.randn(4, 49, 96, generator=gen(2)), torch.randn(4, 96, generator=gen(3))
        new, fused = block(x, c), _adaln_zero_addcmul(block, x, c)
    assert (new - x).abs().max() > 0.5 and new.abs().max() < 5  # far from the identity, with O(1) activations
    assert (new - fused).abs().max() <= 1e-6


def _neutral(block):
    """Set the modulation of an adaptive block to shift = scale = 0 and gate = 1."""
    lin = block.adaLN_modulation[-1]
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    if lin.out_features == 6 * lin.in_features:  # adaLN-Zero: (shift, scale, gate) × 2
        d = lin.in_features
        lin.bias.data[2 * d : 3 * d] = 1
        lin.bias.data[5 * d : 6 * d] = 1


@pytest.mark.parametrize("cls", [AdaLNBlock, AdaLNZeroBlock, CrossAttentionBlock])
def test_blocks_reduce_to_the_plain_pre_norm_block(cls, gen):
    """With neutral conditioning every block is the in-context block (a plain pre-norm ViT block) with the same
    attention and MLP weights: adaLN(-Zero) with shift = scale = 0 and gates = 1 (which also pins the chunk order
    shift, scale, gate), and cross-attention with a zero output projection."""
    with seeded(0):
        block, plain = cls(32, 4, 2.0), InContextBlock(32, 4, 2.0)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen(1)))
        for name in ("attn", "mlp"):
            getattr(plain, name).load_state_dict(getattr(block, name).state_dict())
        x = torch.randn(2, 9, 32, generator=gen(2))
        c = torch.randn(2, 2, 32, generator=gen(3)) if cls is CrossAttentionBlock else torch.randn(2, 32)
        before = block(x, c)
        if cls is CrossAttentionBlock:
            for name in ("norm1", "norm2"):
                getattr(plain, name).load_state_dict(getattr(block, name).state_dict())
            torch.nn.init.zeros_(block.cross_attn.proj.weight)
            torch.nn.init.zeros_(block.cross_attn.proj.bias)
        else:
            _neutral(block)
        torch.testing.assert_close(block(x, c), plain(x), rtol=1e-6, atol=1e-6)
        assert not torch.allclose(before, plain(x), atol=1e-3)  # and not before: c does enter the block


def test_in_context_block_ignores_c(gen):
    block = InContextBlock(32, 4)
    x = torch.randn(2, 9, 32, generator=gen(1))
    assert torch.equal(block(x, torch.randn(2, 32)), block(x)) and block(x).shape == x.shape


# ---------------------------------------------------------------------------------------------------------------
# the shipped DiT-family weights: same state-dict keys, same outputs
# ---------------------------------------------------------------------------------------------------------------

#: Outputs of the shipped DiT-family networks on the input of ``_shipped_input``, computed with the implementation
#: before the one-block-class-per-scheme refactor (one DiTBlock with string dispatch, adaLN-Zero as fused addcmul):
#: the values at flat indices (0, n//7, n//3, n//2, 4n//5, n-1), the mean |output| and the root mean square.
SHIPPED = {
    "fmnist_dit_adaln": ([-0.2922933, -0.5104649, 0.7465882, -0.0053462, 1.3809525, -0.1157337], 0.7046182, 0.9219626),
    "fmnist_dit_adaln_zero": (
        [-0.3310629, -0.6885478, 0.5552342, -0.0161219, 1.3513168, -0.1044129], 0.7012485, 0.9120694),
    "fmnist_dit_cross_attention": (
        [-0.2132732, -0.3075250, 0.5863306, -0.0024493, 1.3631004, -0.1309438], 0.6973286, 0.9135923),
    "fmnist_dit_in_context": (
        [-0.4220946, -0.6446201, 0.4948532, -0.0176065, 1.3869480, -0.1066429], 0.7375385, 0.9418251),
    "fmnist_latent_dit": ([-0.1452772, -0.0268347, 1.0391089, 0.0413238, 0.3442161, -0.2719179], 0.6561425, 0.9159939),
    "fmnist_t2i": ([-0.1347915, -0.2436791, 0.6971390, 0.0162361, 1.3694996, -0.0945120], 0.6836625, 0.9117846),
    "mni_latent_dit": ([-0.7639411, -0.3766110, 0.6149939, 0.2223817, -1.0923735, -0.2540557], 0.7448684, 1.0011034),
}  # fmt: skip


def _shipped_input(model, gen):
    cfg = model.config
    x = torch.randn(4, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen(0))
    t = torch.tensor([3.0, 250.0, 611.0, 999.0])
    if hasattr(model, "tokenizer"):  # the MMDiT
        return x, t, dict(text=["a photo of a bag", "", "an image of a dark ankle boot", "a light t-shirt"])
    if cfg.num_classes is None:  # unconditional (the §5 latent model)
        return x, t, {}
    return x, t, dict(y=torch.tensor([0, 3, 7, 10]))


def test_every_shipped_dit_family_weight_is_pinned():
    from diffu.pretrained import available, info

    family = {n for n in available() if info(n)["arch"].split(":")[-1] in ("DiT", "MMDiT")}
    assert family == set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_weights_keep_their_keys_and_outputs(name, gen):
    """The state dict has exactly the file's keys, and the output matches the pinned values to 1e-5: the adaLN-Zero
    rewrite moves outputs by ≤ 2.2e-6 (float32 rounding of the unfused multiply-add; the old and the new code are
    each ~2e-6 from a float64 evaluation), and thread count or CPU vector width move the last bits, while any real
    change (a swapped chunk, a missing residual) moves them by more than 1e-2."""
    from importlib import resources

    from safetensors import safe_open

    from diffu.pretrained import info, load

    model = load(name)
    with safe_open(str(resources.files("diffu") / "weights" / info(name)["file"]), "pt") as f:
        assert set(model.state_dict()) == set(f.keys())
    x, t, kwargs = _shipped_input(model, gen)
    with torch.no_grad():
        out = model(x, t, **kwargs).double().flatten()
    values, mean_abs, rms = SHIPPED[name]
    k = out.numel()
    got = out[[0, k // 7, k // 3, k // 2, 4 * k // 5, k - 1]]
    torch.testing.assert_close(got, torch.tensor(values, dtype=torch.float64), rtol=0, atol=1e-5)
    assert abs(out.abs().mean().item() - mean_abs) <= 1e-5 and abs(out.pow(2).mean().sqrt().item() - rms) <= 1e-5


# ---------------------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------------------


def test_regression_patchify_float_patch_size_does_not_poison_einops(gen):
    """patchify(x, 4.0) failed inside einops and cached a broken recipe under the key of p = 4 (4.0 == 4), so every
    later valid patchify(x, 4) on that shape failed too. The patch size is checked before einops sees it."""
    x = torch.randn(2, 3, 12, 16, generator=gen(1))
    for bad in (4.0, torch.tensor(4), "4", True):
        with pytest.raises(ValueError, match="p must be an integer >= 1"):
            patchify(x, bad)
        with pytest.raises(ValueError, match="p must be an integer >= 1"):
            unpatchify(torch.zeros(2, 12, 48), bad, 3, 4)
    tok = patchify(x, 4)  # the valid call on the same shape still works
    assert tok.shape == (2, 12, 48) and torch.equal(unpatchify(tok, 4, 3, 4), x)
    with pytest.raises(ValueError, match="h must be an integer >= 1"):
        unpatchify(tok, 4, 3.0, 4)
    assert torch.equal(unpatchify(tok, 4, 3, 4), x)


def test_patch_functions_check_their_arguments():
    with pytest.raises(ValueError, match="p must be an integer >= 1, got 0"):
        patchify(torch.zeros(1, 1, 4, 4), 0)
    with pytest.raises(ValueError, match=r"x must have 4 dimensions \(N, C, H, W\), got shape \(4, 4\)"):
        patchify(torch.zeros(4, 4), 2)
    with pytest.raises(ValueError, match="x must be a tensor"):
        patchify([[0.0]], 2)
    with pytest.raises(ValueError, match="tokens must have 3 dimensions"):
        unpatchify(torch.zeros(4, 4), 2, 2)
    for kwargs, match in (
        ({"in_channels": 0}, "in_channels"),
        ({"hidden_size": 2.5}, "hidden_size"),
        ({"patch_size": -1}, "patch_size"),
    ):
        with pytest.raises(ValueError, match=f"{match} must be an integer >= 1"):
            PatchEmbed(**{"in_channels": 1, "hidden_size": 8, "patch_size": 2, **kwargs})
    with pytest.raises(ValueError, match="grid_h must be an integer >= 1, got 0"):
        sincos_2d_pos_embed(8, 0)
    with pytest.raises(ValueError, match="dim must be an integer >= 4, got 2.0"):
        sincos_2d_pos_embed(2.0, 3)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        LabelEmbedder(0, 8)
    with pytest.raises(TypeError, match="dropout_prob must be a finite number"):
        LabelEmbedder(3, 8, dropout_prob="0.1")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"patch_size": 3}, ValueError, "divisible by patch_size"),
        ({"patch_size": 2.0}, ValueError, "patch_size must be an integer >= 1"),
        ({"patch_size": 0}, ValueError, "patch_size must be an integer >= 1"),
        ({"hidden_size": 36, "num_heads": 8}, ValueError, "divisible by num_heads"),
        ({"hidden_size": 30, "num_heads": 5}, ValueError, "and by 4"),
        ({"num_heads": 0}, ValueError, "num_heads must be an integer >= 1"),
        ({"depth": -1}, ValueError, "depth must be an integer >= 1"),
        ({"depth": 2.5}, ValueError, "depth must be an integer >= 1"),
        ({"in_channels": 0}, ValueError, "in_channels must be an integer >= 1"),
        ({"mlp_ratio": 0.0}, ValueError, "mlp_ratio must be a finite number > 0"),
        ({"mlp_ratio": float("inf")}, ValueError, "mlp_ratio must be a finite number > 0"),
        ({"num_classes": 0}, ValueError, "num_classes must be an integer >= 1"),
        ({"class_dropout_prob": 1.0}, ValueError, "class_dropout_prob must be a finite number in"),
        ({"conditioning": "film"}, ValueError, "conditioning must be one of"),
        ({"learn_sigma": 1}, TypeError, "learn_sigma must be True or False"),
    ],
)
def test_regression_dit_config_refuses_nonsense(kwargs, error, match):
    """DiTConfig validates itself on construction (fractional, negative and zero sizes were accepted before, or
    failed deep inside torch when the network was built)."""
    with pytest.raises(error, match=match):
        DiTConfig(**kwargs)
    with pytest.raises(error, match=match):
        DiT(**kwargs)


def test_dit_blocks_and_modulate_check_their_inputs(gen):
    x, c = torch.randn(2, 9, 32, generator=gen(1)), torch.randn(2, 32, generator=gen(2))
    for cls in (AdaLNZeroBlock, AdaLNBlock):
        block = cls(32, 4)
        assert block(x, c[:1]).shape == x.shape  # one conditioning vector broadcast over the batch
        with pytest.raises(ValueError, match=r"x must have shape \(N, T, 32\)"):
            block(torch.zeros(2, 9, 16), c)
        with pytest.raises(ValueError, match=r"x must have shape \(N, T, 32\), got \(9, 32\)"):
            block(x[0], c)
        with pytest.raises(ValueError, match=r"c must have shape \(N, 32\)"):
            block(x, torch.zeros(2, 16))
        with pytest.raises(ValueError, match=r"c must have batch size 2 \(x's\) or 1"):
            block(x, torch.zeros(3, 32))
    cross = CrossAttentionBlock(32, 4)
    with pytest.raises(ValueError, match=r"c must have shape \(N, k, 32\)"):
        cross(x, c)
    with pytest.raises(ValueError, match=r"c must have batch size 2 \(x's\), got"):
        cross(x, torch.zeros(1, 2, 32))
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        InContextBlock(32, 4)(x.long())
    with pytest.raises(ValueError, match="mlp_ratio must be a finite number > 0"):
        AdaLNZeroBlock(32, 4, mlp_ratio=-1.0)
    with pytest.raises(ValueError, match="num_heads must be an integer >= 1, got 0"):
        AdaLNBlock(32, 0)
    for cls in (AdaLNZeroBlock, AdaLNBlock, InContextBlock, CrossAttentionBlock):
        with pytest.raises(ValueError, match="dim must be an integer >= 1, got 32.0"):
            cls(32.0, 4)
    with pytest.raises(ValueError, match=r"shift must have shape \(N, 32\)"):
        modulate(x, torch.zeros(2, 8), c)
    with pytest.raises(ValueError, match=r"scale must have batch size 2"):
        modulate(x, c, torch.zeros(3, 32))
    with pytest.raises(ValueError, match=r"x must have shape \(N, T, D\)"):
        modulate(x[0], c, c)
