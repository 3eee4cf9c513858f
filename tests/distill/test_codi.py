"""diffu.distill.codi: conditional diffusion distillation, CoDi (Mei et al. 2024), on ×4 super-resolution."""

from __future__ import annotations

import pytest
import torch

from diffu.distill.codi import CODI_SKIP, SR_FACTOR, codi_loss, codi_targets, sr_condition, sr_sample
from diffu.inverse.operators import BlockAverage
from diffu.nn import ControlledUNet
from diffu.schedules import linear_schedule
from diffu.train import seeded

from .nets import tiny_unet

# The oracle ε-model of a one-image data set, in float32: z_t = α x* + σ ε carries a rounding of about 1e-7 (|z| ≤ 2),
# which (z − α x*)/σ amplifies by 1/σ_1 ≈ 68 at t = 1 and x̂ = (z − σ ε̂)/α by 1/α_999 ≈ 160 near t = T − 1; the
# composed ε targets are off by at most a few 1e-5 per entry, so a squared error below 1e-8.
ORACLE_ATOL = 1e-4
ORACLE_LOSS = 1e-8


def x_star(seed: int = 0, size: int = 8) -> torch.Tensor:
    """One (1, 1, size, size) image in [-0.9, 0.9] (inside the clip of x̂, which then does nothing)."""
    return torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 1.8 - 0.9


class Oracle(torch.nn.Module):
    """The exact ε-model of data that is the single image ``x0`` (every training image equals it):
    ``ε(z, t) = (z − α_t x0)/σ_t``; a wrong constant ``x0 = a`` gives a model whose x̂ is ``a`` everywhere. Records
    the timesteps of each call."""

    def __init__(self, x0, schedule):
        super().__init__()
        self.x0, self.schedule, self.calls = x0, schedule, []

    def forward(self, x, t, cond=None, y=None):
        t = torch.as_tensor(t).long().expand(x.shape[0])
        self.calls.append(t.clone())
        ab = self.schedule.alpha_bar[t].to(x).view(-1, 1, 1, 1)
        return (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()


class WithCond(torch.nn.Module):
    """A UNet that accepts (and ignores) ``cond``."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x, t, cond=None, y=None):
        return self.base(x, t, y)


def controlled(seed: int = 0) -> ControlledUNet:
    with seeded(seed + 1):
        return ControlledUNet(tiny_unet(seed), cond_channels=1)


def coef(schedule, t):
    ab = schedule.alpha_bar[t].float().view(-1, 1, 1, 1)
    return ab.sqrt(), (1 - ab).sqrt()


def images(n=4, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ----------------------------------------------------------------------------------------------------------------
# sr_condition
# ----------------------------------------------------------------------------------------------------------------


def test_sr_condition_is_the_pseudo_inverse_of_the_block_average():
    """sr_condition(x) = A⁺ A x for A = BlockAverage(4), at the default factor SR_FACTOR = 4."""
    x = images(3)
    op = BlockAverage(4)
    assert SR_FACTOR == 4
    torch.testing.assert_close(sr_condition(x), op.pinv(op(x)), rtol=0, atol=0)
    assert sr_condition(x).shape == x.shape and not torch.equal(sr_condition(x), x)


def test_sr_condition_is_constant_on_blocks_and_keeps_the_measurement():
    """Each 4×4 block holds one value, and A A⁺ A x = A x: the mean of 16 copies of v is v up to the rounding of the
    running sum (15 additions, each at most half an ulp of a partial sum ≤ 16 |v|: below 1e-6 for |v| ≤ 1)."""
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    c = sr_condition(x)
    blocks = c.reshape(2, 1, 7, 4, 7, 4)
    assert torch.equal(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))
    op = BlockAverage(4)
    torch.testing.assert_close(op(c), op(x), rtol=0, atol=1e-6)
    assert not torch.allclose(op(c), op(x.flip(-1)), atol=1e-2)  # A x does depend on x


def test_sr_condition_of_factor_1_is_the_identity():
    """A 1×1 block average changes nothing."""
    x = images(2)
    assert torch.equal(sr_condition(x, 1), x)


@pytest.mark.parametrize("factor", [0, -1, 2.0, True, "4"])
def test_sr_condition_bad_factor(factor):
    """A factor that is not an integer ≥ 1 is refused, naming the factor."""
    with pytest.raises(ValueError, match="factor"):
        sr_condition(images(1), factor)


def test_sr_condition_size_not_divisible():
    """A 7×7 image at factor 4 (or 8×8 at 3) is refused, naming the factor."""
    with pytest.raises(ValueError, match="factor"):
        sr_condition(torch.zeros(1, 1, 7, 7))
    with pytest.raises(ValueError, match="factor"):
        sr_condition(images(1), 3)


# ----------------------------------------------------------------------------------------------------------------
# The fixed point of the module docstring
# ----------------------------------------------------------------------------------------------------------------


def test_the_exact_denoiser_of_one_image_is_a_fixed_point():
    """For data x* and the oracle ε(z, t) = (z − α_t x*)/σ_t: ẑ_s = z_s, both targets are the true ε, the loss ≈ 0."""
    sch = linear_schedule()
    x0 = x_star()
    t = torch.tensor([1, 100, 249, 250, 251, 600, 998, 999])  # s = 0 for the first three
    eps = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    z_t = sch.q_sample(x0.expand(8, -1, -1, -1), t, eps)
    cond = sr_condition(z_t)
    eps_t, eps_signal, eps_noise = codi_targets(Oracle(x0, sch), z_t, t, eps, cond, schedule=sch)
    for v in (eps_t, eps_signal, eps_noise):
        torch.testing.assert_close(v, eps, rtol=0, atol=ORACLE_ATOL)
    data = x0.expand(16, -1, -1, -1)
    loss = codi_loss(
        Oracle(x0, sch), data, sr_condition(data), schedule=sch, generator=torch.Generator().manual_seed(0)
    )
    assert 0 <= loss < ORACLE_LOSS


def test_a_wrong_constant_satisfies_the_signal_term_but_not_the_noise_term():
    """x̂ ≡ a ≠ x*: ε̂_t − ε̃_signal ≈ 0, ε̂_t − ε̂_noise = α_t (x* − a)/σ_t, so the loss is mean((α_t (x* − a)/σ_t)²)."""
    sch = linear_schedule()
    x0, a = x_star(), x_star(seed=1)
    wrong = Oracle(a, sch)
    t = torch.tensor([1, 100, 249, 250, 251, 600, 998, 999])
    eps = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    z_t = sch.q_sample(x0.expand(8, -1, -1, -1), t, eps)
    eps_t, eps_signal, eps_noise = codi_targets(wrong, z_t, t, eps, sr_condition(z_t), schedule=sch)
    a_t, s_t = coef(sch, t)
    gap = a_t * (x0 - a) / s_t  # (8, 1, 8, 8); up to 67 at t = 1
    assert gap.abs().max() > 1
    torch.testing.assert_close(eps_t - eps_signal, torch.zeros_like(eps), rtol=0, atol=ORACLE_ATOL)
    torch.testing.assert_close(eps_noise, eps, rtol=0, atol=ORACLE_ATOL)  # x̂_s = a: ẑ_s is consistent with a
    torch.testing.assert_close(eps_t - eps_noise, gap, rtol=1e-4, atol=ORACLE_ATOL)
    # codi_loss draws t ~ U{1, …, T−1} first (documented order); its noise term (target ε, the fixed point of
    # ε̂_noise) is the same gap, independent of ε, and its signal term is ≈ 0
    data = x0.expand(16, -1, -1, -1)
    loss = codi_loss(wrong, data, sr_condition(data), schedule=sch, generator=torch.Generator().manual_seed(5))
    td = torch.randint(1, sch.T, (16,), generator=torch.Generator().manual_seed(5))
    a_d, s_d = coef(sch, td)
    want = (a_d * (x0 - a) / s_d).square().mean()
    assert want > 0.1
    torch.testing.assert_close(loss, want, rtol=1e-4, atol=ORACLE_LOSS)


# ----------------------------------------------------------------------------------------------------------------
# codi_loss and codi_targets on a tiny ControlledUNet
# ----------------------------------------------------------------------------------------------------------------


def test_the_loss_is_the_eps_loss_plus_the_signal_term_of_the_pairs_with_t_above_skip():
    """codi_loss = mean (ε̂_t − ε)² + the signal term averaged over the pairs with t > Δ only (the docstring's
    formula, rebuilt from codi_targets with the documented draws); with Δ ≥ T − 1 it is the plain ε-loss."""
    sch, model, x = linear_schedule(100), controlled(), images(6)
    cond = sr_condition(x)
    for skip in (10, 60, 99):
        g = torch.Generator().manual_seed(7)
        t = torch.randint(1, sch.T, (6,), generator=g)
        eps = torch.randn(x.shape, generator=g)
        eps_t, eps_signal, _ = codi_targets(model, sch.q_sample(x, t, eps), t, eps, cond, schedule=sch, skip=skip)
        keep = t > skip
        signal = (eps_t - eps_signal)[keep].square().mean() if keep.any() else torch.tensor(0.0)
        want = (eps_t - eps).square().mean() + signal
        got = codi_loss(model, x, cond, schedule=sch, skip=skip, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        assert (skip == 99) == (not keep.any())  # the last case has no pair with t > Δ: the plain ε-loss


def test_codi_loss_is_deterministic_in_the_generator():
    """The same generator seed gives the same loss, another seed another loss."""
    sch, model, x = linear_schedule(100), controlled(), images(4)
    a, b, c = (codi_loss(model, x, sr_condition(x), schedule=sch, skip=10, generator=torch.Generator().manual_seed(k))
               for k in (3, 3, 4))  # fmt: skip
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gradient_reaches_only_the_controlnet():
    """The frozen base gets no gradient; the ControlNet's zero convolutions (what learns first) get one."""
    sch, model, x = linear_schedule(100), controlled(), images(4)
    loss = codi_loss(model, x, sr_condition(x), schedule=sch, skip=10, generator=torch.Generator().manual_seed(0))
    assert loss.requires_grad and loss > 0
    loss.backward()
    assert all(p.grad is None for p in model.base.parameters())
    zero = [*model.control.zero_convs, model.control.mid_out]
    assert all(z.weight.grad is not None and z.weight.grad.abs().sum() > 0 for z in zero)


def test_at_initialisation_the_loss_is_the_base_models():
    """The zero convolutions make the ControlledUNet its base: the same loss as the base wrapped to accept cond."""
    sch, model, x = linear_schedule(100), controlled(), images(4)
    cond = sr_condition(x)
    got = codi_loss(model, x, cond, schedule=sch, skip=10, generator=torch.Generator().manual_seed(2))
    want = codi_loss(WithCond(model.base), x, cond, schedule=sch, skip=10, generator=torch.Generator().manual_seed(2))
    assert want > 0
    assert torch.equal(got, want)  # the decoder adds exact zeros to its features


@pytest.mark.parametrize(
    "T, skip, t, s",
    [
        (100, 10, [0, 3, 10, 11, 50, 99], [0, 0, 0, 1, 40, 89]),
        (1000, CODI_SKIP, [1, 249, 250, 251, 999], [0, 0, 0, 1, 749]),
        (100, 1, [0, 1, 99], [0, 0, 98]),
    ],
)
def test_the_earlier_time_is_t_minus_skip_clamped_at_0(T, skip, t, s):
    """codi_targets calls the model at t, then at s = max(t − skip, 0)."""
    sch = linear_schedule(T)
    model = Oracle(x_star(), sch)
    t = torch.tensor(t)
    eps = torch.randn(len(t), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    z_t = sch.q_sample(x_star().expand(len(t), -1, -1, -1), t, eps)
    codi_targets(model, z_t, t, eps, sr_condition(z_t), schedule=sch, skip=skip)
    assert len(model.calls) == 2
    assert torch.equal(model.calls[0], t) and torch.equal(model.calls[1], torch.tensor(s))


def test_codi_targets_carry_gradient_only_in_the_prediction():
    """ε̂_θ(z_t) has a gradient; the two targets (from ẑ_s, under stop-gradient) have none."""
    sch, model, x = linear_schedule(100), controlled(), images(2)
    t = torch.tensor([5, 60])
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    eps_t, eps_signal, eps_noise = codi_targets(model, sch.q_sample(x, t, eps), t, eps, sr_condition(x),
                                                schedule=sch, skip=10)  # fmt: skip
    assert eps_t.requires_grad and not eps_signal.requires_grad and not eps_noise.requires_grad


# ----------------------------------------------------------------------------------------------------------------
# sr_sample
# ----------------------------------------------------------------------------------------------------------------


def test_sr_sample_is_deterministic_and_in_range():
    """The same generator seed gives the same (N, 1, H, W) samples in [-1, 1]; another seed others."""
    model, x = controlled(), images(3)
    sch = linear_schedule(100)
    a, b, c = (sr_sample(model, sr_condition(x), steps=2, schedule=sch, generator=torch.Generator().manual_seed(k))
               for k in (0, 0, 1))  # fmt: skip
    assert a.shape == (3, 1, 8, 8) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1 and a.std() > 0


@pytest.mark.parametrize("steps, want", [(1, [999]), (2, [999, 499]), (4, [999, 749, 499, 249])])
def test_sr_sample_calls_the_model_once_per_step_on_the_trailing_grid(steps, want):
    """NFE = steps, at the trailing timesteps of the default 1000-step schedule (999, 749, 499, 249 for 4)."""
    x = images(2)
    model = Oracle(x_star(), linear_schedule())
    out = sr_sample(model, sr_condition(x), steps=steps, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 8, 8)
    assert [int(c[0]) for c in model.calls] == want
    torch.testing.assert_close(out, x_star().expand(2, -1, -1, -1), rtol=0, atol=ORACLE_ATOL)  # the oracle's image


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------


def test_codi_loss_validation():
    """Each bad argument gets a ValueError/TypeError naming it."""
    sch, model, x = linear_schedule(100), controlled(), images(4)
    cases = [
        (dict(cond=sr_condition(x)[:3]), ValueError, "cond"),
        (dict(cond=None), ValueError, "cond"),
        (dict(images="x"), ValueError, "images"),
        (dict(images=x.long()), ValueError, "images"),
        (dict(images=x[0]), ValueError, "images"),
        (dict(images=torch.cat([x, x], 1)), ValueError, "images"),  # 2 channels for a 1-channel UNet
        (dict(model="unet"), TypeError, "model"),
        (dict(skip=0), ValueError, "skip"),
        (dict(skip=-1), ValueError, "skip"),
        (dict(skip=1.5), ValueError, "skip"),
        (dict(skip=True), ValueError, "skip"),
        (dict(generator=0), TypeError, "generator"),
        (dict(generator="g"), TypeError, "generator"),
        (dict(schedule="linear"), TypeError, "schedule"),
        (dict(schedule=None), TypeError, "schedule"),
    ]
    for change, err, name in cases:
        args = {"model": model, "images": x, "cond": sr_condition(x), "schedule": sch, "skip": 10, "generator": None}
        args.update(change)
        with pytest.raises(err, match=name):
            codi_loss(args.pop("model"), args.pop("images"), args.pop("cond"), **args)


def test_codi_targets_validation():
    """Bad arguments are refused, naming them, before the model runs (an eps that would broadcast included)."""
    sch = linear_schedule(100)
    model = Oracle(x_star(), sch)
    x, t = images(2), torch.tensor([5, 50])
    cases = [
        (dict(skip=0), ValueError, "skip"),
        (dict(skip=-1), ValueError, "skip"),
        (dict(skip=1.5), ValueError, "skip"),
        (dict(skip=None), ValueError, "skip"),
        (dict(eps=x[:1]), ValueError, "eps"),
        (dict(eps=x[:, :, :1]), ValueError, "eps"),
        (dict(eps=x.long()), ValueError, "eps"),
        (dict(eps=None), ValueError, "eps"),
        (dict(z_t=x[0]), ValueError, "z_t"),
        (dict(z_t=x.long()), ValueError, "z_t"),
        (dict(schedule="linear"), TypeError, "schedule"),
        (dict(model="oracle"), TypeError, "model"),
    ]
    for change, err, name in cases:
        args = {"model": model, "z_t": x, "t": t, "eps": x, "cond": x, "schedule": sch, "skip": 10, **change}
        with pytest.raises(err, match=name):
            pos = [args.pop(k) for k in ("model", "z_t", "t", "eps", "cond")]
            codi_targets(*pos, **args)
    assert model.calls == []
    with pytest.raises(ValueError, match="z_t"):  # a diffu network's own check: channels
        codi_targets(controlled(), torch.cat([x, x], 1), t, torch.cat([x, x], 1), x, schedule=sch, skip=10)


def test_sr_sample_validation():
    """cond, steps, schedule and generator are checked, naming the argument."""
    model, cond = controlled(), sr_condition(images(2))
    cases = [
        (dict(cond="c"), ValueError, "cond"),
        (dict(cond=cond.long()), ValueError, "cond"),
        (dict(cond=cond[0]), ValueError, "cond"),
        (dict(cond=torch.zeros(2, 1, 7, 7)), ValueError, "cond"),  # a size the UNet cannot halve
        (dict(steps=0), ValueError, "steps"),
        (dict(steps=2.5), ValueError, "steps"),
        (dict(steps=101), ValueError, "steps"),
        (dict(schedule="linear"), TypeError, "schedule"),
        (dict(generator=0), TypeError, "generator"),
    ]
    for change, err, name in cases:
        args = {"cond": cond, "steps": 2, "schedule": linear_schedule(100), "generator": None, **change}
        with pytest.raises(err, match=name):
            sr_sample(model, args.pop("cond"), **args)


# ----------------------------------------------------------------------------------------------------------------
# bench_codi
# ----------------------------------------------------------------------------------------------------------------


def test_bench_codi_skips_a_model_that_is_not_shipped():
    """A run whose model is not shipped gives no row and is listed under "missing"; the input is still scored."""
    from diffu.bench.distill import bench_codi

    res = bench_codi(n=4, seeds=(0,), runs=(("CoDi", "no_such_codi_model", (1,)),), device="cpu", progress=False)
    assert res["rows"] == [] and res["missing"] == ["no_such_codi_model"]
    assert res["n_images"] == 4 and res["factor"] == SR_FACTOR and res["input"]["psnr"] > 0


def test_bench_codi_rows_are_direct_calls(monkeypatch):
    """Each row's per-seed PSNR is psnr(sr_sample(model, sr_condition(x), steps, generator seeded), x).mean() on the
    first n test images, and "input" scores the condition itself (an untrained ControlledUNet around fmnist_unet)."""
    import diffu.bench.distill as bench
    from diffu.data import fashion_mnist
    from diffu.metrics import psnr
    from diffu.pretrained import load

    with seeded(0):
        model = ControlledUNet(load("fmnist_unet"), cond_channels=1).eval()
    monkeypatch.setattr(bench, "available", lambda: ["fake_codi"])
    monkeypatch.setattr(bench, "load", lambda name, device=None: model)
    res = bench.bench_codi(n=4, seeds=(0, 1), runs=(("CoDi", "fake_codi", (1,)),), device="cpu", progress=False)
    x = fashion_mnist("test", 4)[0]
    cond = sr_condition(x)
    assert res["missing"] == [] and len(res["rows"]) == 1
    row = res["rows"][0]
    assert (row["model"], row["steps"], row["nfe"]) == ("fake_codi", 1, 1)
    with torch.no_grad():
        want = [psnr(sr_sample(model, cond, steps=1, generator=torch.Generator().manual_seed(s)), x).mean().item()
                for s in (0, 1)]  # fmt: skip
    assert row["psnr"]["values"] == want and want[0] != want[1]
    assert res["input"]["psnr"] == psnr(cond, x).mean().item()
