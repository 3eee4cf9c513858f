"""MMDiT (SD3) joint-attention block: identity at init, joint attention, and the diffusers oracle."""

import pytest
import torch

from diffu.nn import MMDiTBlock, joint_attention
from diffu.train import seeded


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _copy_linear_chunks(dst_linears, src_linear):
    ws, bs = src_linear.weight.chunk(len(dst_linears)), src_linear.bias.chunk(len(dst_linears))
    for lin, w, b in zip(dst_linears, ws, bs):
        lin.weight.copy_(w)
        lin.bias.copy_(b)


@pytest.mark.parametrize("context_pre_only", [False, True])
def test_mmdit_block_matches_diffusers_joint_transformer_block(context_pre_only):
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
    x, ctx = torch.randn(2, 16, d, generator=_g(1)), torch.randn(2, 5, d, generator=_g(2))
    c = torch.randn(2, d, generator=_g(3))
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


def test_mmdit_block_is_identity_at_init_and_text_reaches_image():
    with seeded(0):
        block = MMDiTBlock(32, 4)
    x, ctx, c = torch.randn(2, 16, 32, generator=_g(4)), torch.randn(2, 5, 32, generator=_g(5)), torch.randn(2, 32)
    out_x, out_ctx = block(x, ctx, c)
    assert torch.equal(out_x, x) and torch.equal(out_ctx, ctx)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=_g(6)))
    a, _ = block(x, ctx, c)
    other = torch.randn(ctx.shape, generator=_g(7))  # (a constant shift would vanish in the LayerNorm)
    b, _ = block(x, other, c)  # changing only the text changes the image stream: attention is joint
    assert not torch.allclose(a, b)


def test_joint_attention_is_attention_over_the_concatenation():
    n, tx, tc, d, h = 2, 6, 3, 16, 4
    qx, kx, vx = (torch.randn(n, tx, d, generator=_g(i)) for i in range(3))
    qc, kc, vc = (torch.randn(n, tc, d, generator=_g(10 + i)) for i in range(3))
    ox, oc = joint_attention(qx, kx, vx, qc, kc, vc, h)
    q, k, v = torch.cat([qx, qc], 1), torch.cat([kx, kc], 1), torch.cat([vx, vc], 1)
    split = [z.reshape(n, -1, h, d // h).transpose(1, 2) for z in (q, k, v)]
    weights = torch.softmax(split[0] @ split[1].transpose(-1, -2) / (d // h) ** 0.5, dim=-1)  # (N, h, T, T)
    full = (weights @ split[2]).transpose(1, 2).reshape(n, -1, d)
    torch.testing.assert_close(torch.cat([ox, oc], 1), full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MMDiTBlock(30, 4)
