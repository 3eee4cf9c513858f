"""diffu.distill.adversarial: adversarial diffusion distillation (Sauer et al. 2023)."""

from __future__ import annotations

import math

import pytest
import torch

from diffu.distill import distillation_grid, model_x0, multistep_sample
from diffu.distill.adversarial import (
    MODES,
    AdversarialDistillation,
    FeatureDiscriminator,
    add_sample,
    add_timesteps,
    hinge_d_loss,
    hinge_g_loss,
    r1_penalty,
    score_distillation_loss,
    unet_encoder_features,
)
from diffu.nn import UNet
from diffu.representations import unet_features
from diffu.train import TrainConfig, train

from .nets import ConstantX0, batch


def _params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------------------------
# The frozen features
# ----------------------------------------------------------------------------------------------------------------


def test_encoder_features_are_the_unets_own_levels(teacher):
    """The same maps as the probing API's encoder and middle levels (exactly: the same forward pass)."""
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    feats = unet_encoder_features(teacher, x, 3.0, torch.tensor([0, 2]))
    ref = unet_features(teacher, x, 3.0, torch.tensor([0, 2]), levels=["down0", "down1", "mid"])
    assert [tuple(f.shape) for f in feats] == [(2, 8, 8, 8), (2, 16, 4, 4), (2, 16, 4, 4)]
    assert len(ref) == 3 and all(torch.equal(a, b) for a, b in zip(feats, ref.values()))


def test_encoder_features_carry_the_graph_to_x_only(teacher):
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    sum(f.square().sum() for f in unet_encoder_features(teacher, x, 0.0)).backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(TypeError, match="unet"):
        unet_encoder_features(torch.nn.Conv2d(1, 1, 1), x, 0.0)
    with pytest.raises(ValueError, match="x"):
        unet_encoder_features(teacher, x[:, :, :7, :7], 0.0)


def test_discriminator_heads_shapes_state_and_freezing(teacher):
    teacher.requires_grad_(True).train()
    disc = FeatureDiscriminator(teacher, cmap_dim=4, seed=1)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    disc.train()
    assert not teacher.training  # the feature network stays in eval mode
    x, y = batch(3)
    logits = disc(x, y)
    assert [tuple(v.shape) for v in logits] == [(3, 64), (3, 16), (3, 16)]
    # only the heads are in the state dict, and a heads-only state dict loads
    sd = disc.state_dict()
    assert sd and all(k.startswith("heads.") for k in sd)
    other = FeatureDiscriminator(teacher, cmap_dim=4, seed=2)
    assert not all(torch.equal(a, b) for a, b in zip(other(x, y), logits))
    other.load_state_dict(sd)
    assert all(torch.equal(a, b) for a, b in zip(other(x, y), logits))
    # the seed fixes the heads; torch's global RNG is left as it was
    state = torch.get_rng_state()
    again = FeatureDiscriminator(teacher, cmap_dim=4, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(again(x, y), logits))
    # no labels = the null label
    null = torch.full((3,), 3)
    assert all(torch.equal(a, b) for a, b in zip(disc(x), disc(x, null)))


def test_discriminator_gives_no_gradient_to_the_features(teacher):
    disc = FeatureDiscriminator(teacher, cmap_dim=4)
    x, y = batch(2)
    x.requires_grad_(True)
    sum(v.sum() for v in disc(x, y)).backward()
    assert all(p.grad is None for p in disc.unet.parameters())
    assert all(p.grad is not None for p in disc.heads.parameters())
    assert x.grad is not None


def test_discriminator_bad_input(teacher):
    disc = FeatureDiscriminator(teacher)
    x, _ = batch(2)
    with pytest.raises(ValueError, match="y"):
        disc(x, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="y"):
        disc(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="x"):
        disc(x.long())
    with pytest.raises(TypeError, match="unet"):
        FeatureDiscriminator("unet")
    with pytest.raises(ValueError, match="cmap_dim"):
        FeatureDiscriminator(teacher, cmap_dim=0)
    with pytest.raises(ValueError, match="feature_t"):
        FeatureDiscriminator(teacher, feature_t=-1)
    with pytest.raises(ValueError, match="features"):
        disc.head_logits(disc.features(x)[:2], None)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = UNet(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8)
    uncond = FeatureDiscriminator(net)
    assert [tuple(v.shape) for v in uncond(x)] == [(2, 64), (2, 16), (2, 16)]
    with pytest.raises(ValueError, match="y"):
        uncond(x, torch.tensor([0, 1]))


# ----------------------------------------------------------------------------------------------------------------
# Losses on hand values
# ----------------------------------------------------------------------------------------------------------------


def test_hinge_losses_on_hand_values():
    real = torch.tensor([[2.0, 0.5], [-1.0, 1.0]])  # relu(1 − r) = 0, 0.5, 2, 0 → mean 0.625
    fake = torch.tensor([[-2.0, 0.5], [0.0, -0.5]])  # relu(1 + f) = 0, 1.5, 1, 0.5 → mean 0.75
    assert hinge_d_loss(real, fake).item() == pytest.approx(1.375, abs=1e-7)
    assert hinge_g_loss(fake).item() == pytest.approx(0.5, abs=1e-7)  # −mean(f) = −(−2 + 0.5 + 0 − 0.5)/4
    # heads are summed, each averaged over its own samples and positions
    r2, f2 = torch.tensor([[0.0]]), torch.tensor([[3.0]])
    assert hinge_d_loss([real, r2], [fake, f2]).item() == pytest.approx(1.375 + 1 + 4, abs=1e-6)
    assert hinge_g_loss([fake, f2]).item() == pytest.approx(0.5 - 3, abs=1e-6)


def test_hinge_losses_bad_input():
    r = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="fake_logits"):
        hinge_d_loss([r, r], [r])
    with pytest.raises(TypeError, match="real_logits"):
        hinge_d_loss([1.0], [r])
    with pytest.raises(ValueError, match="fake_logits"):
        hinge_g_loss(torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match="fake_logits"):
        hinge_g_loss(torch.tensor(1.0))
    with pytest.raises(TypeError, match="fake_logits"):
        hinge_g_loss([])


def test_r1_penalty_on_a_linear_head():
    """D(F)_n = Σ w·F_n per position sum: ∇_F = w for every sample, so R1 = ‖w‖² per head."""
    g = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(3, 2, 2, generator=g), torch.randn(5, generator=g)
    f1 = torch.randn(4, 3, 2, 2, generator=g, requires_grad=True)
    f2 = torch.randn(4, 5, generator=g, requires_grad=True)
    logits = [(f1 * w1).sum((1, 2, 3))[:, None], (f2 * w2) ** 1]  # a (N, 1) head and a per-position head
    r1 = r1_penalty(logits, [f1, f2])
    assert r1.item() == pytest.approx(float(w1.square().sum() + w2.square().sum()), rel=1e-6)
    # quadratic head: ∇ = 2F, so R1 = E_n ‖2F_n‖² — and the penalty has a graph (differentiable in F)
    f = torch.randn(4, 6, generator=g, requires_grad=True)
    r = r1_penalty([f.square()], [f])
    assert r.requires_grad and r.item() == pytest.approx(float((2 * f.detach()).square().sum(1).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="features"):
        r1_penalty([f.square()], [f.detach()])
    with pytest.raises(ValueError, match="features"):
        r1_penalty([f.square()], [f, f])


def test_score_distillation_loss_hand_value_and_gradient(schedule, gen):
    x = torch.randn(3, 1, 4, 4, generator=gen(0)).requires_grad_(True)
    t = torch.tensor([0, 40, 99])
    loss = score_distillation_loss(x, ConstantX0(0.3), schedule, t=t, generator=gen(1))
    ab = schedule.alpha_bar[t].float()
    want = (ab * (x.detach() - 0.3).square().flatten(1).mean(1)).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    loss.backward()  # only through x̂_θ: ∂/∂x = 2 ᾱ_t (x − 0.3) / (N · D)
    expect = 2 * ab.reshape(-1, 1, 1, 1) * (x.detach() - 0.3) / (3 * 16)
    torch.testing.assert_close(x.grad, expect, rtol=1e-5, atol=1e-7)


def test_score_distillation_loss_teacher_sees_the_renoised_student(schedule, gen):
    seen = {}

    class Spy(ConstantX0):
        def forward(self, x, t, y=None):
            seen["x"], seen["t"] = x, t
            return super().forward(x, t)

    x = torch.randn(2, 1, 4, 4, generator=gen(0))
    score_distillation_loss(x, Spy(0.0), schedule, t_min=10, t_max=20, generator=gen(5))
    g = gen(5)
    t = torch.randint(10, 21, (2,), generator=g)
    eps = torch.randn(x.shape, generator=g)
    assert torch.equal(seen["t"], t.float()) and torch.equal(seen["x"], schedule.q_sample(x, t, eps))
    # determinism
    a = score_distillation_loss(x, ConstantX0(0.1), schedule, generator=gen(2))
    b = score_distillation_loss(x, ConstantX0(0.1), schedule, generator=gen(2))
    assert torch.equal(a, b)


def test_score_distillation_loss_bad_input(schedule):
    x = torch.zeros(2, 1, 4, 4)
    teacher = ConstantX0(0.0)
    with pytest.raises(ValueError, match="t_min"):
        score_distillation_loss(x, teacher, schedule, t_min=50, t_max=10)
    with pytest.raises(ValueError, match="t_max"):
        score_distillation_loss(x, teacher, schedule, t_max=100)
    with pytest.raises(ValueError, match="t"):
        score_distillation_loss(x, teacher, schedule, t=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="t"):
        score_distillation_loss(x, teacher, schedule, t=torch.tensor([1, 100]))
    with pytest.raises(ValueError, match="x_student"):
        score_distillation_loss(x.long(), teacher, schedule)
    with pytest.raises(TypeError, match="teacher"):
        score_distillation_loss(x, "teacher", schedule)


# ----------------------------------------------------------------------------------------------------------------
# The training loss
# ----------------------------------------------------------------------------------------------------------------


def _add(teacher, schedule, **kw):
    return AdversarialDistillation(teacher, schedule, cmap_dim=4, d_lr=1e-2, r1_gamma=0.1, **kw)


def test_discriminator_step_changes_only_the_heads(teacher, student, schedule, gen):
    loss_fn = _add(teacher, schedule)
    heads, feat, stud = _params(loss_fn.discriminator.heads), _params(teacher), _params(student)
    x, y = batch(4)
    loss = loss_fn(student, x, y, generator=gen(0))
    assert not _same(heads, _params(loss_fn.discriminator.heads))
    assert _same(feat, _params(teacher)) and _same(stud, _params(student))
    # the student's loss gives gradients to the student only
    loss.backward()
    assert all(p.grad is None for p in loss_fn.discriminator.heads.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in student.parameters())
    assert all(p.requires_grad for p in loss_fn.discriminator.heads.parameters())


def test_modes_remove_the_other_term_exactly(teacher, student, schedule, gen):
    x, y = batch(4)
    out, hist = {}, {}
    for mode in MODES:
        loss_fn = _add(teacher, schedule, mode=mode)
        out[mode] = loss_fn(student, x, y, generator=gen(3))
        hist[mode] = loss_fn.history[-1]
    assert torch.equal(out["both"], out["adversarial"] + out["distillation"])
    assert out["distillation"].item() == pytest.approx(2.5 * hist["distillation"]["distill"], rel=1e-7)
    assert out["adversarial"].item() == hist["adversarial"]["g_adv"]
    assert hist["both"] == hist["adversarial"]  # the same draws, the same discriminator step
    assert all(math.isnan(hist["distillation"][k]) for k in ("d_loss", "r1", "g_adv", "d_real", "d_fake"))
    assert hist["distillation"]["distill"] == hist["both"]["distill"]
    assert set(hist["both"]) == {"d_loss", "r1", "g_adv", "distill", "d_real", "d_fake"}
    assert all(math.isfinite(v) for v in hist["both"].values())


def test_distillation_mode_never_touches_the_discriminator(teacher, student, schedule, gen):
    loss_fn = _add(teacher, schedule, mode="distillation")
    heads = _params(loss_fn.discriminator.heads)
    x, y = batch(4)
    loss_fn(student, x, y, generator=gen(0)).backward()
    assert _same(heads, _params(loss_fn.discriminator.heads)) and not loss_fn.optimizer.state
    assert all(p.grad is None for p in loss_fn.discriminator.heads.parameters())


def test_adversarial_loss_is_deterministic_and_state_dict_round_trips(teacher, student, schedule, gen):
    x, y = batch(4)
    a, b = _add(teacher, schedule, seed=4), _add(teacher, schedule, seed=4)
    state = torch.get_rng_state()
    la, lb = a(student, x, y, generator=gen(1)), b(student, x, y, generator=gen(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(la, lb) and a.history == b.history
    # a fresh loss given a's state (heads and Adam moments) continues exactly as a does
    c = _add(teacher, schedule, seed=9)
    c.load_state_dict(a.state_dict())
    assert a.state_dict()["calls"] == 1
    assert torch.equal(a(student, x, y, generator=gen(2)), c(student, x, y, generator=gen(2)))
    assert _same(_params(a.discriminator.heads), _params(c.discriminator.heads))
    with pytest.raises(ValueError, match="state"):
        c.load_state_dict({"heads": 1})


def test_student_sees_real_data_at_its_grid_and_pure_noise_at_T(teacher, student, schedule, gen):
    seen = []

    def spy(x, t, y=None):
        seen.append((x, t))
        return student(x, t, y)

    spy.prediction, spy.num_classes = "v", 3
    x, y = batch(4)
    _add(teacher, schedule, steps=1, mode="distillation")(spy, x, y, generator=gen(6))
    g = gen(6)
    torch.randint(0, 1, (4,), generator=g)
    eps = torch.randn(x.shape, generator=g)
    assert torch.equal(seen[0][0], eps) and torch.equal(seen[0][1], torch.full((4,), 99.0))
    seen.clear()
    _add(teacher, schedule, steps=1, mode="distillation", zero_terminal=False)(spy, x, y, generator=gen(6))
    assert torch.equal(seen[0][0], schedule.q_sample(x, torch.full((4,), 99), eps))
    seen.clear()
    _add(teacher, schedule, steps=4, mode="distillation")(spy, x, y, generator=gen(7))
    assert set(seen[0][1].long().tolist()) <= set(distillation_grid(100, 4).tolist())


def test_adversarial_distillation_trains_with_the_train_loop(teacher, student, schedule):
    x, y = batch(8)
    loss_fn = _add(teacher, schedule)
    before = _params(student)
    res = train(student, loss_fn, (x, y), TrainConfig(steps=2, batch_size=4, ema_decay=None), progress=False)
    assert len(res.losses) == 2 and len(loss_fn.history) == 2 and not _same(before, _params(student))


def test_adversarial_distillation_bad_arguments(teacher, student, schedule):
    with pytest.raises(ValueError, match="mode"):
        AdversarialDistillation(teacher, schedule, mode="gan")
    with pytest.raises(TypeError, match="feature_net"):
        AdversarialDistillation(ConstantX0(0.0), schedule)
    with pytest.raises(ValueError, match="d_betas"):
        AdversarialDistillation(teacher, schedule, d_betas=(0.0, 1.0))
    with pytest.raises(ValueError, match="d_betas"):
        AdversarialDistillation(teacher, schedule, d_betas=0.9)
    with pytest.raises(ValueError, match="steps"):
        AdversarialDistillation(teacher, schedule, steps=0)
    with pytest.raises(ValueError, match="distill_weight"):
        AdversarialDistillation(teacher, schedule, distill_weight=0.0)
    with pytest.raises(ValueError, match="r1_gamma"):
        AdversarialDistillation(teacher, schedule, r1_gamma=-1.0)
    with pytest.raises(ValueError, match="t_min"):
        AdversarialDistillation(teacher, schedule, t_min=60, t_max=50)
    loss_fn = AdversarialDistillation(teacher, schedule)
    x, y = batch(2)
    with pytest.raises(ValueError, match="x0"):
        loss_fn(student, x.long(), y)
    with pytest.raises(ValueError, match="y"):
        loss_fn(student, x, torch.tensor([0, 9]))
    with pytest.raises(TypeError, match="generator"):
        loss_fn(student, x, y, generator=0)
    with pytest.raises(TypeError, match="student"):
        loss_fn("student", x, y)
    with pytest.raises(ValueError, match="x0"):
        loss_fn(student, x[0], y)
    with pytest.raises(ValueError, match="x0"):
        loss_fn(student, torch.where(x > 0.9, float("nan"), x), y)


def test_a_non_finite_student_leaves_the_discriminator_unchanged(teacher, student, schedule, gen):
    def broken(x, t, y=None):
        return student(x, t, y) * float("nan")

    broken.prediction, broken.num_classes = "v", 3
    loss_fn = _add(teacher, schedule)
    heads = _params(loss_fn.discriminator.heads)
    x, y = batch(4)
    with pytest.raises(FloatingPointError, match="discriminator"):
        loss_fn(broken, x, y, generator=gen(0))
    assert _same(heads, _params(loss_fn.discriminator.heads)) and not loss_fn.optimizer.state


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------


def test_add_timesteps():
    assert [add_timesteps(1000, k) for k in (1, 2, 3, 4)] == [[999], [999, 499], [999, 749, 249],
                                                             [999, 749, 499, 249]]  # fmt: skip
    for k in (1, 2, 4):
        assert add_timesteps(1000, k) == distillation_grid(1000, k).tolist()
    assert add_timesteps(100, 2, grid_steps=8) == distillation_grid(100, 8)[[0, 4]].tolist()
    with pytest.raises(ValueError, match="steps"):
        add_timesteps(1000, 5)
    with pytest.raises(ValueError, match="grid_steps"):
        add_timesteps(10, 1, grid_steps=11)
    with pytest.raises(ValueError, match="T"):
        add_timesteps(0, 1)


def test_add_sample_is_multistep_sampling_on_the_training_grid(student, schedule, gen):
    kw = {"y": torch.tensor([0, 2])}
    x_T = torch.randn(2, 1, 8, 8, generator=gen(0))
    out = add_sample(student, x_T, schedule, steps=3, model_kwargs=kw, generator=gen(1))

    def denoise(x, t):
        return model_x0(student, x, t, schedule, kw)

    ref = multistep_sample(denoise, x_T, schedule, [99, 74, 24], generator=gen(1))
    assert torch.equal(out, ref) and out.abs().max() <= 1
    a = add_sample(student, (2, 1, 8, 8), schedule, steps=2, model_kwargs=kw, generator=gen(4))
    b = add_sample(student, (2, 1, 8, 8), schedule, steps=2, model_kwargs=kw, generator=gen(4))
    assert torch.equal(a, b) and a.shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="steps"):
        add_sample(student, x_T, schedule, steps=5)
    with pytest.raises(TypeError, match="model_kwargs"):
        add_sample(student, x_T, schedule, model_kwargs=[1])
    with pytest.raises(TypeError, match="generator"):
        add_sample(student, x_T, schedule, generator=1)
