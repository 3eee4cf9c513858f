"""diffu.nn.student: the two-head few-step student of chapter §7."""

from __future__ import annotations

import pytest
import torch

from diffu.nn import UNet, UNetConfig
from diffu.nn.student import StudentUNet, StudentUNetConfig
from diffu.pretrained import build
from diffu.recipes import network_entry
from diffu.schedules import linear_schedule
from tests.distill.nets import tiny_unet


def test_from_teacher_is_the_teacher_eps_head_exactly():
    """With the D head at zero, v̂ = √ᾱ ε̂_teacher at integer and fractional t, and x̂_0 = ᾱ x̂_0^teacher."""
    teacher = tiny_unet()
    s = StudentUNet.from_teacher(teacher, T=100)
    sched = linear_schedule(100)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2])
    for t in (torch.tensor([0.0, 40.0, 99.0]), torch.tensor([0.5, 12.25, 98.9])):
        ab = sched.interp_alpha_bar(t).float().view(-1, 1, 1, 1)
        with torch.no_grad():
            v, e = s(x, t, y), teacher(x, t, y)
        torch.testing.assert_close(v, ab.sqrt() * e, rtol=0, atol=1e-6)
    t = torch.tensor([3, 50, 97])
    with torch.no_grad():
        x0_s = sched.eps_to_x0(sched.v_to_eps(s(x, t.float(), y), x, t), x, t)
        x0_t = sched.eps_to_x0(teacher(x, t.float(), y), x, t)
    ab = sched.alpha_bar[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(x0_s, ab * x0_t, rtol=1e-4, atol=1e-4)


def test_the_d_head_mixes_with_weight_one_minus_alpha_bar():
    """Setting the D head's bias to c gives x̂_0 = ᾱ x̂_0^ε + (1 − ᾱ) c (the module docstring's mixture)."""
    s = StudentUNet.from_teacher(tiny_unet(), T=100)
    sched = linear_schedule(100)
    with torch.no_grad():
        s.net.conv_out.bias[1] = 0.7
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([10, 90]), torch.tensor([1, 2])
    with torch.no_grad():
        out = s.net(x, t.float(), y)
        x0 = sched.eps_to_x0(sched.v_to_eps(s(x, t.float(), y), x, t), x, t)
    ab = sched.alpha_bar[t].float().view(-1, 1, 1, 1)
    want = ab * sched.eps_to_x0(out[:, :1], x, t) + (1 - ab) * out[:, 1:]
    torch.testing.assert_close(x0, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[:, 1:], torch.full_like(out[:, 1:], 0.7))


def test_gradients_reach_both_heads():
    s = StudentUNet.from_teacher(tiny_unet(), T=100)
    s(torch.randn(2, 1, 8, 8), torch.tensor([5.0, 80.0]), torch.tensor([0, 1])).pow(2).sum().backward()
    g = s.net.conv_out.weight.grad
    assert g[0].abs().sum() > 0 and g[1].abs().sum() > 0


def test_manifest_round_trip_rebuilds_the_same_network():
    s = StudentUNet.from_teacher(tiny_unet(), T=100)
    entry = network_entry(s)
    assert entry["arch"] == "diffu.nn.student:StudentUNet" and entry["config"]["T"] == 100
    rebuilt = build(entry)
    rebuilt.load_state_dict(s.state_dict())
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1.0, 60.0])
    with torch.no_grad():
        assert torch.equal(rebuilt(x, t, torch.tensor([0, 2])), s(x, t, torch.tensor([0, 2])))


def test_teacher_is_not_modified():
    teacher = tiny_unet()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s = StudentUNet.from_teacher(teacher, T=100)
    with torch.no_grad():
        s.net.conv_in.weight.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_bad_input():
    with pytest.raises(TypeError, match="teacher"):
        StudentUNet.from_teacher(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="teacher must predict 'eps'"):
        StudentUNet.from_teacher(UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                                 attn_resolutions=(), image_size=8, prediction="v")))  # fmt: skip
    with pytest.raises(ValueError, match="prediction must be 'eps'"):
        StudentUNetConfig(prediction="v")
    with pytest.raises(ValueError, match="schedule must name"):
        StudentUNetConfig(schedule="quadratic")
    with pytest.raises(ValueError, match="T must"):
        StudentUNetConfig(T=1)
    s = StudentUNet.from_teacher(tiny_unet(), T=100)
    with pytest.raises(ValueError, match="t must lie in"):
        s(torch.randn(2, 1, 8, 8), torch.tensor([1.0, 100.0]))
    with pytest.raises(ValueError, match="x"):
        s(torch.randn(2, 3, 8, 8), torch.tensor([1.0, 2.0]))
