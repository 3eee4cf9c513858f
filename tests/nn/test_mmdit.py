"""MMDiT (SD3) joint-attention block: identity at init, joint attention, and the diffusers oracle."""

import pytest
import torch

from diffu.nn import MMDiTBlock, joint_attention
from diffu.train import seeded


def _copy_linear_chunks(dst_linears, src_linear):
    ws, bs = src_linear.weight.chunk(len(dst_linears)), src_linear.bias.chunk(len(dst_linears))
    for lin, w, b in zip(dst_linears, ws, bs):
        lin.weight.copy_(w)
        lin.bias.copy_(b)


@pytest.mark.parametrize("context_pre_only", [False, True])
def test_mmdit_block_matches_diffusers_joint_transformer_block(context_pre_only, gen):
    """Our block with its weights copied into diffusers' JointTransformerBlock gives the same streams to 1e-5.
    Convention difference bridged here: diffusers' AdaLayerNormContinuous (the last text stream) chunks its
    modulation as (scale, shift), the reverse of DiT's (shift, scale) that we use everywhere."""
    from diffusers.models.attention import JointTransformerBlock

    d, heads = 32, 4
    with seeded(0):
        ours = MMDiTBlock(d, heads, context_pre_only=context_pre_only)
        for p in ours.parameters():
            torch.nn.init.normal_(p, std=0.1)
        ref = JointTransformerBlock(d, heads, d // heads, context_pre_only=context_pre_only)
    x, ctx = torch.randn(2, 16, d, generator=gen(1)), torch.randn(2, 5, d, generator=gen(2))
    c = torch.randn(2, d, generator=gen(3))
    with torch.no_grad():
        ref.norm1.linear.load_state_dict(ours.mod_x[1].state_dict())
        if context_pre_only:
            shift_w, scale_w = ours.mod_c[1].weight.chunk(2)
            shift_b, scale_b = ours.mod_c[1].bias.chunk(2)
            ref.norm1_context.linear.weight.copy_(torch.cat([scale_w, shift_w]))
            ref.norm1_context.linear.bias.copy_(torch.cat([scale_b, shift_b]))
        else:
            ref.norm1_context.linear.load_state_dict(ours.mod_c[1].state_dict())
            ref.attn.to_add_out.load_state_dict(ours.proj_c.state_dict())
            ref.ff_context.net[0].proj.load_state_dict(ours.mlp_c[0].state_dict())
            ref.ff_context.net[2].load_state_dict(ours.mlp_c[2].state_dict())
        _copy_linear_chunks((ref.attn.to_q, ref.attn.to_k, ref.attn.to_v), ours.qkv_x)
        _copy_linear_chunks((ref.attn.add_q_proj, ref.attn.add_k_proj, ref.attn.add_v_proj), ours.qkv_c)
        ref.attn.to_out[0].load_state_dict(ours.proj_x.state_dict())
        ref.ff.net[0].proj.load_state_dict(ours.mlp_x[0].state_dict())
        ref.ff.net[2].load_state_dict(ours.mlp_x[2].state_dict())
        ref_ctx, ref_x = ref(hidden_states=x, encoder_hidden_states=ctx, temb=c)
        out_x, out_ctx = ours(x, ctx, c)
    torch.testing.assert_close(out_x, ref_x, rtol=1e-5, atol=1e-5)
    if context_pre_only:
        assert out_ctx is None and ref_ctx is None
    else:
        torch.testing.assert_close(out_ctx, ref_ctx, rtol=1e-5, atol=1e-5)


def test_mmdit_block_is_identity_at_init_and_text_reaches_image(gen):
    with seeded(0):
        block = MMDiTBlock(32, 4)
    x, ctx, c = torch.randn(2, 16, 32, generator=gen(4)), torch.randn(2, 5, 32, generator=gen(5)), torch.randn(2, 32)
    out_x, out_ctx = block(x, ctx, c)
    assert torch.equal(out_x, x) and torch.equal(out_ctx, ctx)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen(6)))
    a, _ = block(x, ctx, c)
    other = torch.randn(ctx.shape, generator=gen(7))  # (a constant shift would vanish in the LayerNorm)
    b, _ = block(x, other, c)  # changing only the text changes the image stream: attention is joint
    assert not torch.allclose(a, b)


def test_joint_attention_is_attention_over_the_concatenation(gen):
    n, tx, tc, d, h = 2, 6, 3, 16, 4
    qx, kx, vx = (torch.randn(n, tx, d, generator=gen(i)) for i in range(3))
    qc, kc, vc = (torch.randn(n, tc, d, generator=gen(10 + i)) for i in range(3))
    ox, oc = joint_attention(qx, kx, vx, qc, kc, vc, h)
    q, k, v = torch.cat([qx, qc], 1), torch.cat([kx, kc], 1), torch.cat([vx, vc], 1)
    split = [z.reshape(n, -1, h, d // h).transpose(1, 2) for z in (q, k, v)]
    weights = torch.softmax(split[0] @ split[1].transpose(-1, -2) / (d // h) ** 0.5, dim=-1)  # (N, h, T, T)
    full = (weights @ split[2]).transpose(1, 2).reshape(n, -1, d)
    torch.testing.assert_close(torch.cat([ox, oc], 1), full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MMDiTBlock(30, 4)


# ---------------------------------------------------------------------------------------------------------------
# the tiny text-to-image model: tokenizer, text encoder, MMDiT network
# ---------------------------------------------------------------------------------------------------------------

from diffu.captions import vocabulary  # noqa: E402
from diffu.nn import MMDiT, MMDiTConfig, TextEncoder, WordTokenizer  # noqa: E402


def test_tokenizer_round_trip_and_errors():
    tok = WordTokenizer(vocabulary(), max_len=8)
    ids = tok(["a photo of a dark ankle boot", ""])
    assert ids.shape == (2, 8) and ids.dtype == torch.long
    assert ids[0, 0] == tok.START and ids[1].tolist() == [tok.START] + [tok.PAD] * 7  # empty = null caption
    assert tok.decode(ids) == ["a photo of a dark ankle boot", ""]
    assert tok("A Photo of a BAG.").tolist() == tok("a photo of a bag").tolist()  # case and punctuation
    with pytest.raises(ValueError, match="castle"):
        tok("a photo of a castle")
    with pytest.raises(ValueError, match="at most 7"):
        tok("a a a a a a a a")
    with pytest.raises(ValueError, match="max_len"):
        WordTokenizer(["a"], max_len=1)


def test_text_encoder_ignores_padding():
    """Padding is masked out of the encoder's keys and its pooled mean, so extra padding changes nothing."""
    with seeded(0):
        enc = TextEncoder(10, 16, max_len=8, depth=2, num_heads=4).eval()
    short = torch.tensor([[1, 4, 5, 0, 0]])
    longer = torch.tensor([[1, 4, 5, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        h1, p1 = enc(short)
        h2, p2 = enc(longer)
    assert h1.shape == (1, 5, 16) and p1.shape == (1, 16)
    torch.testing.assert_close(h1[:, :3], h2[:, :3])
    torch.testing.assert_close(p1, p2)
    torch.testing.assert_close(p1, h1[:, :3].mean(1))
    with pytest.raises(ValueError, match="ids must be"):
        enc(torch.zeros(1, 9, dtype=torch.long))


def _tiny_mmdit():
    with seeded(0):
        return MMDiT(MMDiTConfig(vocab=tuple(vocabulary()), hidden_size=32, depth=2, num_heads=4))


def test_mmdit_model_zero_output_at_init_and_text_inputs(gen):
    m = _tiny_mmdit()
    x = torch.randn(3, 1, 28, 28, generator=gen(0))
    t = torch.tensor([0.0, 10.0, 999.0])
    out = m(x, t, text=["a bag", "an image of a light coat", ""])
    assert out.shape == x.shape and torch.all(out == 0)  # adaLN-Zero blocks and a zero output layer
    assert m.blocks[-1].context_pre_only and not m.blocks[0].context_pre_only
    with pytest.raises(ValueError, match="3 images"):
        m(x, t, text=["a bag"] * 2)
    with pytest.raises(ValueError, match="x must be"):
        m(torch.randn(1, 1, 32, 32), t[:1])
    with pytest.raises(ValueError, match="vocab"):
        MMDiT(MMDiTConfig())


def test_mmdit_model_reads_the_text_and_exposes_attention(gen):
    m = _tiny_mmdit()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen(5)))
    x = torch.randn(2, 1, 28, 28, generator=gen(1))
    t = torch.tensor([100.0, 100.0])
    ids = m.tokenizer(["a photo of a bag", "a photo of a bag"])
    with torch.no_grad():
        a = m(x, t, text=ids)
        b = m(x, t, text=["a photo of a bag", "a photo of a dress"])
        c = m(x, t, text="a photo of a bag")  # one string for the whole batch
        weights = []
        d = m(x, t, text=ids, attention=weights)
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(a, d)  # asking for the attention maps does not change the output
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])  # per-sample text conditioning
    assert len(weights) == 2 and weights[0].shape == (2, 4, 49 + 12, 49 + 12)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(2, 4, 61))


def test_joint_attention_weights_reproduce_the_output(gen):
    d, heads = 16, 2
    qx, kx, vx = (torch.randn(2, 6, d, generator=gen(i)) for i in range(3))
    qc, kc, vc = (torch.randn(2, 3, d, generator=gen(i + 3)) for i in range(3))
    w = []
    ox, oc = joint_attention(qx, kx, vx, qc, kc, vc, heads, w)
    v = torch.cat([vx, vc], 1).reshape(2, 9, heads, d // heads).transpose(1, 2)
    manual = (w[0] @ v).transpose(1, 2).reshape(2, 9, d)
    torch.testing.assert_close(torch.cat([ox, oc], 1), manual, rtol=1e-5, atol=1e-6)


def test_survey_eq13_erratum_projections_are_per_modality():
    """The survey's Eq. (13) writes one W_Q, W_K, W_V for the concatenated sequence; SD3 (and diffusers'
    JointTransformerBlock, matched above) project each modality with its own weights before the joint attention."""
    block = MMDiTBlock(32, 4)
    assert block.qkv_x.weight.data_ptr() != block.qkv_c.weight.data_ptr()
    x, ctx, c = torch.randn(1, 4, 32), torch.randn(1, 2, 32), torch.randn(1, 32)
    with torch.no_grad():
        block.qkv_c.weight.add_(1.0)  # changing only the text projection changes the image stream's output
        for p in (*block.mod_x.parameters(), *block.mod_c.parameters()):
            p.normal_(std=0.1)
        before = block(x, ctx, c)[0]
        block.qkv_c.weight.mul_(2)
        after = block(x, ctx, c)[0]
    assert not torch.allclose(before, after)


# ---------------------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------------------


def test_regression_out_of_vocabulary_token_ids_are_named():
    """Token ids outside the vocabulary failed inside nn.Embedding (an IndexError); float ids too."""
    m = _tiny_mmdit()
    x, t = torch.zeros(2, 1, 28, 28), torch.zeros(2)
    v = len(m.tokenizer)
    with pytest.raises(ValueError, match=rf"text must be \(N, L\) integer token ids in \[0, {v - 1}\].*outside"):
        m(x, t, text=torch.tensor([[1, v], [1, 2]]))
    with pytest.raises(ValueError, match="text must be .* got torch.float32"):
        m(x, t, text=torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"ids must be \(N, L\) integer token ids in \[0, 9\]"):
        TextEncoder(10, 16, 8)(torch.tensor([[1, -1]]))


def test_regression_all_padding_text_row_is_refused():
    """A row of padding ids attends to nothing: the text encoder returned NaN for it. It is refused instead."""
    enc = TextEncoder(10, 16, 8)
    with pytest.raises(ValueError, match="ids must hold at least one non-padding token per row"):
        enc(torch.tensor([[1, 4, 0], [0, 0, 0]]))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"vocab": "a bag"}, TypeError, "vocab must be a tuple of words"),
        ({"vocab": ("a", 3)}, TypeError, "vocab must be a tuple of strings"),
        ({"vocab": ("a",), "text_depth": -1}, ValueError, "text_depth must be an integer >= 0"),
        ({"vocab": ("a",), "max_len": 1}, ValueError, "max_len must be an integer >= 2"),
        ({"vocab": ("a",), "patch_size": 5}, ValueError, "divisible by patch_size"),
        ({"vocab": ("a",), "num_heads": 5}, ValueError, "divisible by num_heads"),
    ],
)
def test_regression_mmdit_config_refuses_nonsense(kwargs, error, match):
    with pytest.raises(error, match=match):
        MMDiTConfig(**kwargs)


def test_mmdit_config_stores_the_vocabulary_as_a_tuple():
    assert MMDiTConfig(vocab=["a", "bag"]).vocab == ("a", "bag")


def test_text_and_tokenizer_arguments_are_checked():
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 2"):
        TextEncoder(1, 16, 8)
    with pytest.raises(ValueError, match="depth must be an integer >= 0"):
        TextEncoder(10, 16, 8, depth=-1)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        TextEncoder(10, 18, 8, num_heads=4)
    with pytest.raises(TypeError, match="words must be an iterable of strings"):
        WordTokenizer("a bag")
    with pytest.raises(ValueError, match="words must be lower-case words"):
        WordTokenizer(["a", "Bag", "t shirt"])
    with pytest.raises(ValueError, match="words must be lower-case words"):
        WordTokenizer(["a", ["bag"]])
    tok = WordTokenizer(["a", "bag"])
    with pytest.raises(TypeError, match="captions must be a string or a list of strings"):
        tok([1, 2])
    with pytest.raises(ValueError, match="device must name a torch device"):
        tok("a bag", device="gpu0")
    with pytest.raises(TypeError, match="caption must be a string"):
        tok.split(3)
    with pytest.raises(ValueError, match=r"ids must be \(N, L\) integer token ids in \[0, 3\]"):
        tok.decode(torch.tensor([[1, 7]]))
    m = _tiny_mmdit()
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        m.encode_text(None, -1, "cpu")
    with pytest.raises(TypeError, match="either config or keyword arguments"):
        MMDiT(m.config, depth=3)


def test_mmdit_block_and_joint_attention_check_their_inputs(gen):
    block = MMDiTBlock(32, 4)
    x, ctx, c = torch.randn(2, 6, 32, generator=gen(1)), torch.randn(2, 3, 32, generator=gen(2)), torch.randn(2, 32)
    with pytest.raises(ValueError, match=r"ctx must have shape \(N, T, 32\)"):
        block(x, torch.zeros(2, 3, 16), c)
    with pytest.raises(ValueError, match=r"ctx and c must have x's batch size 2"):
        block(x, ctx[:1], c)
    with pytest.raises(ValueError, match=r"c must have shape \(N, 32\)"):
        block(x, ctx, torch.zeros(2, 3, 32))
    with pytest.raises(TypeError, match="context_pre_only must be True or False"):
        MMDiTBlock(32, 4, context_pre_only="yes")
    q = torch.randn(2, 6, 32)
    with pytest.raises(ValueError, match=r"k_x must have shape \(N, 6, 32\)"):
        joint_attention(q, q[:, :5], q, ctx, ctx, ctx, 4)
    with pytest.raises(ValueError, match="q_c must have batch size 2"):
        joint_attention(q, q, q, ctx[:1], ctx[:1], ctx[:1], 4)
    with pytest.raises(ValueError, match="num_heads 5 must divide the width 32"):
        joint_attention(q, q, q, ctx, ctx, ctx, 5)
    with pytest.raises(TypeError, match="weights must be a list"):
        joint_attention(q, q, q, ctx, ctx, ctx, 4, weights=())
