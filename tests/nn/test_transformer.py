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
