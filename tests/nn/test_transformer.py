"""The transformer sublayers shared by DiT, MMDiT and the text encoder: multi-head attention and the MLP."""

import pytest
import torch
import torch.nn.functional as F

from diffu.nn import Attention, feed_forward


def _torch_mha(attn: Attention, dim: int, heads: int) -> torch.nn.MultiheadAttention:
    """PyTorch's own multi-head attention with our weights copied (its in_proj stacks W_Q, W_K, W_V as ours does)."""
    mha = torch.nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        if attn.cross:
            mha.in_proj_weight.copy_(torch.cat([attn.q.weight, attn.kv.weight]))
            mha.in_proj_bias.copy_(torch.cat([attn.q.bias, attn.kv.bias]))
        else:
            mha.in_proj_weight.copy_(attn.qkv.weight)
            mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.load_state_dict(attn.proj.state_dict())
    return mha.eval()


def test_self_attention_matches_torch_multihead_attention(gen):
    """Oracle: ``torch.nn.MultiheadAttention`` with copied weights, without and with a key-padding mask (ours:
    True = attend; PyTorch's ``key_padding_mask``: True = ignore), to 1e-5 (float32 matmul reduction order)."""
    torch.manual_seed(0)  # only the default init of the layers below; every compared weight is copied
    attn = Attention(32, 4)
    mha = _torch_mha(attn, 32, 4)
    x = torch.randn(3, 7, 32, generator=gen(1))
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[1, 4:] = False
    with torch.no_grad():
        torch.testing.assert_close(attn(x), mha(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5)
        ours = attn(x, mask=keep[:, None, None, :])
        ref = mha(x, x, x, key_padding_mask=~keep, need_weights=False)[0]
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(ours[1], attn(x)[1], atol=1e-4)  # the mask does change the padded sample


def test_cross_attention_matches_torch_multihead_attention(gen):
    torch.manual_seed(0)
    attn = Attention(32, 4, cross=True)
    mha = _torch_mha(attn, 32, 4)
    x, ctx = torch.randn(2, 9, 32, generator=gen(1)), torch.randn(2, 3, 32, generator=gen(2))
    with torch.no_grad():
        out = attn(x, context=ctx)
        torch.testing.assert_close(out, mha(x, ctx, ctx, need_weights=False)[0], rtol=1e-5, atol=1e-5)
    assert out.shape == x.shape and not hasattr(attn, "qkv")


def test_attention_errors():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        Attention(30, 4)


def test_feed_forward_is_linear_tanh_gelu_linear(gen):
    mlp = feed_forward(16, 2.5)
    assert [type(m).__name__ for m in mlp] == ["Linear", "GELU", "Linear"] and mlp[1].approximate == "tanh"
    assert (mlp[0].in_features, mlp[0].out_features, mlp[2].out_features) == (16, 40, 16)
    assert list(mlp.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # the shipped weights' keys
    x = torch.randn(2, 5, 16, generator=gen(1))
    with torch.no_grad():
        expected = F.linear(F.gelu(F.linear(x, mlp[0].weight, mlp[0].bias), approximate="tanh"), *mlp[2].parameters())
        torch.testing.assert_close(mlp(x), expected, rtol=0, atol=0)
    assert feed_forward(10, 1.0)[0].out_features == 10 and feed_forward(8)[0].out_features == 32
    with pytest.raises(ValueError, match="mlp_ratio"):
        feed_forward(8, 0.0)
    with pytest.raises(ValueError, match="dim"):
        feed_forward(0)


def test_regression_attention_refuses_an_ignored_or_missing_context(gen):
    """Self-attention ignored a context silently; cross-attention without one failed inside nn.Linear."""
    x = torch.randn(2, 5, 16, generator=gen(1))
    with pytest.raises(ValueError, match="context was given to self-attention"):
        Attention(16, 4)(x, context=x)
    with pytest.raises(ValueError, match="context is required by cross-attention"):
        Attention(16, 4, cross=True)(x)
    with pytest.raises(ValueError, match="context must have batch size 2"):
        Attention(16, 4, cross=True)(x, context=x[:1])


def test_attention_and_feed_forward_check_their_arguments(gen):
    attn = Attention(16, 4)
    x = torch.randn(2, 5, 16, generator=gen(1))
    with pytest.raises(ValueError, match=r"x must have shape \(N, T, 16\), got \(2, 5, 8\)"):
        attn(torch.zeros(2, 5, 8))
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        attn(x.long())
    with pytest.raises(ValueError, match=r"mask must broadcast to the scores \(N, heads, T, T_k\) = \(2, 4, 5, 5\)"):
        attn(x, mask=torch.ones(2, 1, 1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a bool"):
        attn(x, mask=torch.ones(2, 1, 1, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="mask must be a tensor"):
        attn(x, mask=[True])
    for args, error, match in (
        ((16, 0), ValueError, "num_heads must be an integer >= 1"),
        ((16.0, 4), ValueError, "dim must be an integer >= 1"),
    ):
        with pytest.raises(error, match=match):
            Attention(*args)
    with pytest.raises(TypeError, match="cross must be True or False"):
        Attention(16, 4, cross=1)
    with pytest.raises(ValueError, match="mlp_ratio must give a hidden width"):
        feed_forward(4, 0.1)
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        feed_forward(2.5)
