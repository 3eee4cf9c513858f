"""diffu.distill.consistency: consistency distillation and few-step sampling (Song et al. 2023)."""

from __future__ import annotations

import math

import pytest
import torch

from diffu.distill import (
    ConsistencyDistillation,
    consistency_function,
    consistency_grid,
    consistency_sample,
    ddim_jump,
    edm_sigma,
    heun_teacher_step,
    model_x0,
    multistep_sample,
)
from diffu.gmm import ExactModel, GaussianMixture
from diffu.schedules import linear_schedule

from .nets import ConstantX0, batch


def test_edm_sigma_and_grid(schedule):
    assert float(edm_sigma(schedule, -1)) == 0.0
    s = edm_sigma(schedule, torch.arange(100))
    assert bool((s[1:] > s[:-1]).all())
    g = consistency_grid(schedule, 18)
    assert int(g[0]) == 0 and int(g[-1]) == 99 and bool((g[1:] > g[:-1]).all()) and len(g) <= 18
    big = consistency_grid(linear_schedule(1000), 18)
    assert len(big) == 18  # the official N = 18 fits T = 1000 without merged points


def test_boundary_condition_and_the_official_parameterisation(schedule):
    """f(x, t = 0) = x̄ exactly (any network); elsewhere c_skip x̄ + c_out F with F read in EDM units."""
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = ConstantX0(0.3)
    f0 = consistency_function(model, x, torch.zeros(3, dtype=torch.long), schedule)
    torch.testing.assert_close(f0, x / schedule.alpha_bar[0].sqrt().float())
    t = torch.tensor([5, 50, 99])
    f = consistency_function(model, x, t, schedule)
    ab = schedule.alpha_bar[t].view(-1, 1, 1, 1)
    sig, smin, sd = ((1 - ab) / ab).sqrt(), math.sqrt((1 - schedule.alpha_bar[0]) / schedule.alpha_bar[0]), 0.5
    xbar = x.double() / ab.sqrt()
    c_skip = sd**2 / ((sig - smin) ** 2 + sd**2)
    c_out = (sig - smin) * sd / (sig**2 + sd**2).sqrt()
    F = (0.3 - sd**2 / (sig**2 + sd**2) * xbar) / (sig * sd / (sig**2 + sd**2).sqrt())
    torch.testing.assert_close(f.double(), c_skip * xbar + c_out * F, rtol=1e-5, atol=1e-5)


def test_heun_step_beats_euler_on_a_mixture():
    """With the exact ε of an 8-component ring, one Heun step over 20–40 timesteps is several times closer to the
    ODE solution (1-timestep DDIM steps, whose own error is ~40× smaller) than one Euler (= DDIM) step."""
    sched = linear_schedule(1000)
    exact = ExactModel(GaussianMixture.ring(8, radius=2.0, std=0.2), schedule=sched)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for hi, lo in ((600, 560), (300, 260), (100, 80)):
        t, tl = torch.full((64,), hi), torch.full((64,), lo)
        fine = x
        for a in range(hi, lo, -1):
            ta = torch.full((64,), a)
            fine = ddim_jump(sched, fine, ta, ta - 1, model_x0(exact, fine, ta, sched))
        heun = heun_teacher_step(exact, x, t, tl, sched)
        euler = ddim_jump(sched, x, t, tl, model_x0(exact, x, t, sched))
        err_h, err_e = (heun - fine).abs().max().item(), (euler - fine).abs().max().item()
        assert err_h < 0.3 * err_e, (hi, lo, err_h, err_e)


def test_target_ema_and_loss(schedule, teacher, student):
    x0, y = batch(4)
    loss = ConsistencyDistillation(teacher, schedule, n=10, mu=0.9)
    a = loss(student, x0, y, generator=torch.Generator().manual_seed(0))
    assert loss.target is not student and all(not p.requires_grad for p in loss.target.parameters())
    a.backward()
    assert all(p.grad is None for p in teacher.parameters()) and all(p.grad is None for p in loss.target.parameters())
    old = [p.clone() for p in loss.target.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.5)
    loss.update_target(student)
    for o, p_t, p in zip(old, loss.target.parameters(), student.parameters()):
        torch.testing.assert_close(p_t, 0.9 * o + 0.1 * p)
    fresh = ConsistencyDistillation(teacher, schedule, n=10, mu=0.9)
    b1 = fresh(student, x0, y, generator=torch.Generator().manual_seed(3))
    fresh2 = ConsistencyDistillation(teacher, schedule, n=10, mu=0.9)
    b2 = fresh2(student, x0, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(b1, b2)


def test_multistep_sample(schedule):
    """Denoise-and-re-noise returns the denoiser's last x̂ (clipped), consumes the generator deterministically."""
    seen = []

    def denoise(x, t):
        seen.append(int(t[0]))
        return torch.full_like(x, 2.0)

    x = torch.randn(2, 1, 8, 8)
    out = multistep_sample(denoise, x, schedule, [99, 60, 20], generator=torch.Generator().manual_seed(0))
    assert seen == [99, 60, 20] and torch.equal(out, torch.ones_like(x))
    out2 = multistep_sample(denoise, x, schedule, [99, 60, 20], generator=torch.Generator().manual_seed(0),
                            clip=False)  # fmt: skip
    assert torch.equal(out2, torch.full_like(x, 2.0))
    with pytest.raises(ValueError, match="strictly decreasing"):
        multistep_sample(denoise, x, schedule, [60, 99])
    with pytest.raises(TypeError, match="denoise"):
        multistep_sample("f", x, schedule, [99])


def test_consistency_sample_deterministic_and_validated(schedule, student):
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    kw = {"y": torch.tensor([0, 1])}
    a = consistency_sample(student, (2, 1, 8, 8), schedule, steps=3, model_kwargs=kw, generator=g())
    b = consistency_sample(student, (2, 1, 8, 8), schedule, steps=3, model_kwargs=kw, generator=g())
    assert torch.equal(a, b) and a.shape == (2, 1, 8, 8) and float(a.abs().max()) <= 1
    with pytest.raises(ValueError, match="steps must"):
        consistency_sample(student, (2, 1, 8, 8), schedule, steps=0)
    with pytest.raises(ValueError, match="timesteps must hold"):
        consistency_sample(student, (2, 1, 8, 8), schedule, steps=2, timesteps=[50, 20])


def test_bad_input(schedule, teacher, student):
    with pytest.raises(ValueError, match="mu"):
        ConsistencyDistillation(teacher, schedule, mu=1.0)
    with pytest.raises(ValueError, match="n must"):
        ConsistencyDistillation(teacher, schedule, n=1)
    with pytest.raises(TypeError, match="teacher"):
        ConsistencyDistillation("unet", schedule)
    with pytest.raises(TypeError, match="student"):
        ConsistencyDistillation(teacher, schedule).update_target("net")
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match="t_prev must be smaller"):
        heun_teacher_step(teacher, x, torch.tensor([5, 5]), torch.tensor([6, 1]), schedule)
    with pytest.raises(ValueError, match="sigma_data"):
        consistency_function(student, x, torch.tensor([1, 2]), schedule, sigma_data=0.0)
