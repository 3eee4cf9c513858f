"""diffu.distill.progressive: progressive distillation (Salimans & Ho 2022)."""

from __future__ import annotations

import functools

import pytest
import torch

from diffu.distill import (
    ddim_jump,
    distillation_grid,
    model_x0,
    progressive_loss,
    progressive_target,
    truncated_snr_weight,
)
from diffu.gmm import ExactModel, GaussianMixture
from diffu.nn import MLPDenoiser
from diffu.samplers import ddim, ddim_step
from diffu.schedules import linear_schedule

from .nets import batch


def test_grids_are_nested_when_the_steps_halve():
    """Every other point of the 2N-step grid is the N-step grid, from 64 steps down to 1 (T = 1000)."""
    for n in (1, 2, 4, 8, 16, 32):
        fine, coarse = distillation_grid(1000, 2 * n), distillation_grid(1000, n)
        assert torch.equal(fine[::2], coarse) and int(coarse[0]) == 999
    assert distillation_grid(1000, 4).tolist() == [999, 749, 499, 249]


def test_ddim_jump_is_the_ddim_step(schedule, teacher):
    """Per-sample ddim_jump equals diffu.samplers.ddim_step (η = 0) given the same x̂_0, and lands on x̂_0 at −1."""
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2])
    for t, tp in ((90, 60), (40, 0), (7, -1)):
        eps = teacher(x, torch.full((3,), float(t)), y)
        want, x0 = ddim_step(schedule, x, t, tp, eps)
        got = ddim_jump(schedule, x, torch.full((3,), t), torch.full((3,), tp), x0)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(ddim_jump(schedule, x, torch.full((3,), 5), torch.full((3,), -1), x0), x0)


def test_one_step_with_the_target_lands_on_the_two_teacher_steps(schedule, teacher):
    """Algorithm 2's identity: a DDIM step t → t'' with x̃ reproduces the teacher's two steps t → t' → t''."""
    x, y = batch(4)
    z = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    t, tm, tn = torch.tensor([99, 60, 30, 1]), torch.tensor([80, 40, 10, 0]), torch.tensor([60, 20, 5, -1])
    kw = {"y": y}
    target = progressive_target(teacher, z, t, tm, tn, schedule, model_kwargs=kw)
    two = z
    for a, b in ((t, tm), (tm, tn)):
        two = ddim_jump(schedule, two, a, b, model_x0(teacher, two, a, schedule, kw).clamp(-1, 1))
    torch.testing.assert_close(ddim_jump(schedule, z, t, tn, target), two, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(target[3], two[3])  # t'' = −1: the target is the teacher's endpoint


def test_the_teacher_step_is_what_ddim_sampling_does(schedule, teacher):
    """Two steps of the 2N grid from T − 1 reproduce diffu.samplers.ddim with spacing 'trailing' and clipping."""
    z = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([1, 2])
    grid = distillation_grid(100, 2)
    target = progressive_target(teacher, z, torch.full((2,), 99), torch.full((2,), int(grid[1])),
                                torch.full((2,), -1), schedule, model_kwargs={"y": y})  # fmt: skip
    ref = ddim(teacher, z, schedule, steps=2, spacing="trailing", clip_x0=True, model_kwargs={"y": y}, progress=False)
    torch.testing.assert_close(target, ref, rtol=1e-5, atol=1e-5)


def test_truncated_snr_weight(schedule):
    t = torch.arange(100)
    w = truncated_snr_weight(schedule, t)
    snr = schedule.alpha_bar / (1 - schedule.alpha_bar)
    assert torch.equal(w, torch.maximum(snr, torch.ones_like(snr)))
    assert float(w[-1]) == 1.0 and float(w[0]) == float(snr[0]) > 1


class _OracleStudent(torch.nn.Module):
    """Predicts x_0 as exactly the progressive target of its own input (knows the grid)."""

    prediction = "x0"

    def __init__(self, teacher, schedule, steps):
        super().__init__()
        self.teacher, self.schedule = teacher, schedule
        fine = distillation_grid(schedule.T, 2 * steps).tolist() + [-1]
        self.mid = {fine[2 * i]: fine[2 * i + 1] for i in range(steps)}
        self.next = {fine[2 * i]: fine[2 * i + 2] for i in range(steps)}
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, y=None):
        t = t.long()
        tm = torch.tensor([self.mid[int(v)] for v in t])
        tn = torch.tensor([self.next[int(v)] for v in t])
        return progressive_target(self.teacher, x, t, tm, tn, self.schedule, model_kwargs={"y": y}) + self.w


def test_the_loss_is_zero_for_a_student_that_predicts_the_target(schedule, teacher):
    x0, y = batch(6)
    oracle = _OracleStudent(teacher, schedule, 4)
    loss = progressive_loss(oracle, x0, y, teacher=teacher, schedule=schedule, steps=4,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert float(loss.detach()) < 1e-8


def test_the_loss_by_hand(schedule, teacher, student):
    """The loss equals its definition computed from the same draws (grid index, then noise)."""
    x0, y = batch(5)
    steps = 4
    loss = progressive_loss(student, x0, y, teacher=teacher, schedule=schedule, steps=steps,
                            generator=torch.Generator().manual_seed(7))  # fmt: skip
    g = torch.Generator().manual_seed(7)
    i = torch.randint(0, steps, (5,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    fine = distillation_grid(100, 2 * steps).tolist() + [-1]
    t = torch.tensor([fine[2 * k] for k in i])
    tm, tn = torch.tensor([fine[2 * k + 1] for k in i]), torch.tensor([fine[2 * k + 2] for k in i])
    z = schedule.q_sample(x0, t, noise)
    target = progressive_target(teacher, z, t, tm, tn, schedule, model_kwargs={"y": y})
    pred = model_x0(student, z, t, schedule, {"y": y})
    snr = schedule.alpha_bar[t] / (1 - schedule.alpha_bar[t])
    w = snr.clamp(min=1).float()
    want = (w * ((pred - target) ** 2).mean(dim=(1, 2, 3))).mean()
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-7)


def test_loss_is_deterministic_and_trains_only_the_student(schedule, teacher, student):
    x0, y = batch(4)
    loss_fn = functools.partial(progressive_loss, teacher=teacher, schedule=schedule, steps=2)
    a = loss_fn(student, x0, y, generator=torch.Generator().manual_seed(1))
    b = loss_fn(student, x0, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    a.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_works_on_2d_data_with_an_exact_teacher():
    """On (N, 2) points (lab9): the exact Gaussian-mixture teacher, an MLP student, no clipping."""
    sched = linear_schedule(100)
    gmm = GaussianMixture.ring(4, radius=2.0, std=0.2)
    teacher = ExactModel(gmm, schedule=sched)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        mlp = MLPDenoiser(dim=2, hidden=32)
    x0 = gmm.sample(64, generator=torch.Generator().manual_seed(0)).float()
    loss = progressive_loss(mlp, x0, teacher=teacher, schedule=sched, steps=1, clip_x0=False,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_bad_input(schedule, teacher, student):
    x0, y = batch(2)
    z = torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match="steps must"):
        progressive_loss(student, x0, y, teacher=teacher, schedule=schedule, steps=51)
    with pytest.raises(TypeError, match="teacher"):
        progressive_loss(student, x0, y, teacher="unet", schedule=schedule, steps=2)
    with pytest.raises(ValueError, match="x0"):
        progressive_loss(student, x0.long(), y, teacher=teacher, schedule=schedule, steps=2)
    with pytest.raises(ValueError, match="decrease"):
        progressive_target(teacher, z, torch.tensor([50, 50]), torch.tensor([60, 60]), torch.tensor([10, 10]),
                           schedule)  # fmt: skip
    with pytest.raises(ValueError, match="t_mid must have shape"):
        progressive_target(teacher, z, torch.tensor([50, 50]), torch.tensor([40]), torch.tensor([10, 10]), schedule)
    with pytest.raises(ValueError, match="t_next"):
        progressive_target(teacher, z, torch.tensor([50, 50]), torch.tensor([40, 40]), torch.tensor([-2, 10]),
                           schedule)  # fmt: skip
    with pytest.raises(TypeError, match="clip_x0"):
        progressive_target(teacher, z, torch.tensor([50, 50]), torch.tensor([40, 40]), torch.tensor([0, 0]),
                           schedule, clip_x0=1)  # fmt: skip
    with pytest.raises(ValueError, match="steps must"):
        distillation_grid(100, 0)
