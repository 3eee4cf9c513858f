"""DPS and RePaint (diffu.inverse.dps, diffu.inverse.repaint): the jump schedule against diffusers, reduction to
plain ancestral sampling, determinism, measurement consistency with the shipped model, input validation."""

import copy

import pytest
import torch

from diffu.inverse.dps import dps, residual_norm
from diffu.inverse.masks import box_mask
from diffu.inverse.operators import BlockAverage, Inpainting
from diffu.inverse.repaint import repaint, repaint_schedule
from diffu.samplers import ddpm
from diffu.schedules import linear_schedule

SHAPE = (2, 1, 8, 8)


@pytest.fixture(scope="module")
def y8(gen):
    return torch.rand(SHAPE, generator=gen(1)) * 2 - 1


@pytest.mark.parametrize("steps, jump_length, jump_n_sample", [(250, 10, 10), (50, 5, 3), (20, 1, 1), (30, 7, 2)])
def test_repaint_schedule_matches_diffusers(steps, jump_length, jump_n_sample):
    from diffusers import RePaintScheduler

    sched = RePaintScheduler(num_train_timesteps=1000)
    sched.set_timesteps(steps, jump_length=jump_length, jump_n_sample=jump_n_sample)
    ours = repaint_schedule(steps, jump_length, jump_n_sample)
    assert ours[-1] == -1 and ours[0] == steps - 1
    assert all(abs(a - b) == 1 for a, b in zip(ours[:-1], ours[1:]))
    # diffusers: same visiting order without the final -1, in the original 1000-step scale ("leading" spacing)
    assert sched.timesteps.tolist() == [t * (1000 // steps) for t in ours[:-1]]


def test_repaint_schedule_no_resampling():
    assert repaint_schedule(6, 3, 1) == [5, 4, 3, 2, 1, 0, -1]
    times = repaint_schedule(250, 10, 10)
    n_rev = sum(b < a for a, b in zip(times[:-1], times[1:]))
    assert n_rev == 250 + 24 * 9 * 10  # the 24 stretches below level 240 are denoised 10 times


@pytest.mark.parametrize("T, steps", [(40, None), (1000, 25)])  # full chain (short schedule) and respaced
def test_dps_scale_zero_is_ddpm(gen, unet, y8, T, steps):
    S = linear_schedule(T)
    op = Inpainting(box_mask(8, 8, 0.5))
    ref = ddpm(unet, SHAPE, S, steps=steps, generator=gen(3), progress=False)
    out = dps(unet, op.A(y8), op, S, steps=steps, scale=0.0, generator=gen(3), progress=False, x_T=SHAPE)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_repaint_empty_mask_no_resampling_is_ddpm(gen, unet, y8):
    S = linear_schedule()
    ref = ddpm(unet, SHAPE, S, steps=20, spacing="linspace", generator=gen(4), progress=False)
    out = repaint(unet, y8, torch.zeros(1, 1, 8, 8), S, steps=20, jump_length=5, jump_n_sample=1, generator=gen(4),
                  progress=False)  # fmt: skip
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_repaint_keeps_known_region(gen, unet, y8):
    S = linear_schedule()
    out = repaint(unet, y8, torch.ones(1, 1, 8, 8), S, steps=20, jump_length=5, jump_n_sample=2, generator=gen(5),
                  progress=False)  # fmt: skip
    # last injection at ᾱ_0 = 1 − 1e-4 (noise std 0.01), then the model's x̂_0: y up to ~0.01·|z − ε̂|
    err = (out - y8).abs().max().item()
    assert err < 0.1, err
    mask = box_mask(8, 8, 0.5)
    states = []
    out = repaint(unet, y8, mask, S, steps=20, jump_length=5, jump_n_sample=2, generator=gen(5), progress=False,
                  callback=states.append)  # fmt: skip
    assert len(states) == sum(b < a for a, b in zip(repaint_schedule(20, 5, 2), repaint_schedule(20, 5, 2)[1:]))
    assert states[-1].t == 0 and torch.equal(states[-1].x, out)
    assert ((out - y8) * mask).abs().max() < 0.1
    assert ((out - y8) * (1 - mask)).abs().max() > 0.1  # the hole is generated, not copied


def test_determinism(gen, unet, y8):
    S = linear_schedule()
    op = BlockAverage(2)
    a = dps(unet, op.A(y8), op, S, steps=10, scale=0.5, generator=gen(6), progress=False)
    b = dps(unet, op.A(y8), op, S, steps=10, scale=0.5, generator=gen(6), progress=False)
    c = dps(unet, op.A(y8), op, S, steps=10, scale=0.5, generator=gen(7), progress=False)
    assert a.shape == SHAPE and torch.equal(a, b) and not torch.equal(a, c)
    mask = box_mask(8, 8, 0.5)
    a = repaint(unet, y8, mask, S, steps=10, jump_length=3, jump_n_sample=2, generator=gen(6), progress=False)
    b = repaint(unet, y8, mask, S, steps=10, jump_length=3, jump_n_sample=2, generator=gen(6), progress=False)
    c = repaint(unet, y8, mask, S, steps=10, jump_length=3, jump_n_sample=2, generator=gen(7), progress=False)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_dps_variants_and_callback(gen, unet, y8):
    S = linear_schedule()
    op = Inpainting(box_mask(8, 8, 0.5))
    states = []
    for kw in ({"noise": "poisson"}, {"per_image": True}, {"clip_x0": False}):
        out = dps(unet, op.A(y8), op, S, steps=5, scale=0.5, generator=gen(8), progress=False, **kw)
        assert torch.isfinite(out).all()
    out = dps(unet, op.A(y8), op, S, steps=5, scale=0.5, generator=gen(8), progress=False, callback=states.append)
    assert [s.i for s in states] == list(range(5)) and states[-1].t == 0 and torch.equal(states[-1].x, out)
    assert not states[-1].x.requires_grad and not states[-1].x0_hat.requires_grad


def test_dps_nonlinear_operator_and_dtype(gen, unet, y8):
    from diffu.inverse.fourier import PhaseRetrieval

    S = linear_schedule()
    op = PhaseRetrieval()
    out = dps(unet, op.A(y8), op, S, steps=5, scale=0.5, generator=gen(0), progress=False, x_T=SHAPE)
    assert out.shape == SHAPE and torch.isfinite(out).all()
    op = Inpainting(box_mask(8, 8, 0.5))
    out = dps(copy.deepcopy(unet).double(), op.A(y8).double(), op, S, steps=3, generator=gen(0), progress=False)
    assert out.dtype == torch.float64 and out.shape == SHAPE


def test_dps_per_image_default_decouples_batch(gen, unet, y8):
    """By default (per-image norms) image 0's result does not depend on the other images of the batch; the
    batch-coupled norm (``per_image=False``, the official code's norm, which only ever ran batch 1) does."""
    S = linear_schedule()
    op = BlockAverage(2)
    x_T = torch.randn(SHAPE, generator=gen(9))
    kw = dict(steps=5, scale=1.0, x_T=x_T, progress=False)
    both = dps(unet, op.A(y8), op, S, generator=gen(10), **kw)
    y2 = op.A(y8).clone()
    y2[1:] = 0  # different measurements for the other images
    other = dps(unet, y2, op, S, generator=gen(10), **kw)
    torch.testing.assert_close(both[0], other[0], atol=1e-5, rtol=0)
    # image 0 run alone gives the same result as in the batch (one step, t = 0: no noise is drawn, so the batch
    # and the single image see the same randomness)
    alone = dps(unet, op.A(y8)[:1], op, S, steps=1, scale=1.0, x_T=x_T[:1], generator=gen(10), progress=False)
    batch = dps(unet, op.A(y8), op, S, steps=1, scale=1.0, x_T=x_T, generator=gen(10), progress=False)
    torch.testing.assert_close(alone[0], batch[0], atol=1e-5, rtol=0)  # one step: t = 0, no noise drawn
    coupled = dps(unet, y2, op, S, per_image=False, generator=gen(10), **kw)
    ref = dps(unet, op.A(y8), op, S, per_image=False, generator=gen(10), **kw)
    assert (coupled[0] - ref[0]).abs().max() > 1e-4  # the batch norm couples the images


def test_residual_norm_per_image_and_batch():
    y = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    ay = torch.zeros(2, 2)
    assert float(residual_norm(y, ay)) == 7.0  # default: Σ_n ‖r_n‖ = 3 + 4
    assert float(residual_norm(y, ay, per_image=False)) == 5.0  # ‖r‖ of the batch
    # the gradient of the per-image sum w.r.t. image n is r_n/‖r_n‖ (unit length); the batch norm's is r_n/‖r‖
    a = ay.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(residual_norm(y, a), a)
    torch.testing.assert_close(g.norm(dim=1), torch.ones(2))
    a = ay.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(residual_norm(y, a, per_image=False), a)
    torch.testing.assert_close(g.norm(dim=1), torch.tensor([0.6, 0.8]))
    # poisson, on the [0, 1] intensity scale u = (y + 1)/2: ‖r_n‖/2 · mean(1/max(u_n, 1/255))
    w = 1 / ((y + 1) / 2).clamp(min=1 / 255)
    torch.testing.assert_close(residual_norm(y, ay, "poisson"), 1.5 * w[0].mean() + 2 * w[1].mean())
    assert float(residual_norm(torch.zeros(2, 2), ay + 0.5, "poisson")) == float(
        residual_norm(torch.zeros(2, 2), ay + 0.5)
    )


@pytest.fixture(scope="module")
def fmnist_unguided(gen):
    """The shipped UNet, two test images, the null-class labels and their unguided 50-step sample, drawn once for
    both operators below: DPS with scale 0 is this DDPM sample (test_dps_scale_zero_is_ddpm)."""
    from diffu.data import fashion_mnist
    from diffu.pretrained import load

    model = load("fmnist_unet").eval()
    x, _ = fashion_mnist("test", 2)
    kw = {"y": torch.full((2,), 10)}  # the null class: unconditional
    with torch.no_grad():
        out = ddpm(model, x.shape, linear_schedule(), steps=50, model_kwargs=kw, generator=gen(0), progress=False)
    return model, x, kw, out


@pytest.mark.parametrize("name", ["sr", "box"])
def test_dps_reduces_measurement_error_pretrained(gen, fmnist_unguided, name):
    model, x, kw, unguided = fmnist_unguided
    op = BlockAverage(2) if name == "sr" else Inpainting(box_mask(28, 28, 0.5))
    y = op.A(x)
    res = {0.0: (y - op.A(unguided)).norm().item()}
    out = dps(model, y, op, linear_schedule(), steps=50, scale=1.0, model_kwargs=kw, generator=gen(0), progress=False,
              x_T=x.shape)  # fmt: skip
    res[1.0] = (y - op.A(out)).norm().item()
    # measured ‖y − A(x)‖: sr 10.03 → 1.99, box 17.78 → 2.14 (scale 0 → 1, 50 steps, seed 0)
    assert res[1.0] < 0.5 * res[0.0], res


def test_bad_inputs(unet, y8):
    S = linear_schedule()
    op = BlockAverage(2)
    y = op.A(y8)
    with pytest.raises(ValueError, match="scale"):
        dps(unet, y, op, S, steps=5, scale=-1, progress=False)
    with pytest.raises(ValueError, match="steps"):
        dps(unet, y, op, S, steps=0, progress=False)
    with pytest.raises(ValueError, match="noise"):
        dps(unet, y, op, S, steps=5, noise="laplace", progress=False)
    with pytest.raises(ValueError, match="y must have the shape"):
        dps(unet, y8, op, S, steps=5, x_T=SHAPE, progress=False)
    mask = box_mask(8, 8, 0.5)
    with pytest.raises(ValueError, match="jump_length"):
        repaint(unet, y8, mask, S, steps=10, jump_length=0, progress=False)
    with pytest.raises(ValueError, match="jump_n_sample"):
        repaint(unet, y8, mask, S, steps=10, jump_n_sample=0, progress=False)
    with pytest.raises(ValueError, match="steps"):
        repaint(unet, y8, mask, S, steps=1001, progress=False)
    with pytest.raises(ValueError, match="mask"):
        repaint(unet, y8, torch.ones(1, 1, 4, 4), S, steps=10, progress=False)
    with pytest.raises(ValueError, match="mask"):
        repaint(unet, y8, torch.full((1, 1, 8, 8), 0.5), S, steps=10, progress=False)
    with pytest.raises(ValueError, match="y must be"):
        repaint(unet, y8[0], mask, S, steps=10, progress=False)
    with pytest.raises(ValueError, match="x_T"):
        repaint(unet, y8, mask, S, steps=10, x_T=torch.zeros(1, 1, 8, 8), progress=False)


class _Counting(torch.nn.Module):
    """A dummy ε-model that counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t):
        self.calls += 1
        return 0.1 * torch.tanh(x)


def test_repaint_cost_is_2410_network_evaluations_for_the_paper_schedule(gen):
    """250 levels, jump length 10, 10 resamplings: up-jumps (undo steps) are forward draws and cost no network
    evaluation, so a run costs 250 + 9 · 10 · 24 = 2 410 evaluations (not ≈ 4 500, the number of levels visited)."""
    times = repaint_schedule(250, 10, 10)
    moves = list(zip(times[:-1], times[1:]))
    assert len(moves) == 4570 and sum(b < a for a, b in moves) == 2410 and sum(b > a for a, b in moves) == 2160
    model, states = _Counting(), []
    y = torch.zeros(1, 1, 4, 4)
    repaint(model, y, box_mask(4, 4, 0.5), linear_schedule(), steps=250, generator=gen(0), progress=False,
            callback=states.append)  # fmt: skip
    assert model.calls == 2410 and len(states) == 2410


@pytest.mark.parametrize(("steps", "jump_length", "jump_n_sample"), [(250, 10, 10), (50, 5, 3), (20, 7, 4), (5, 10, 3)])
def test_repaint_cost_formula(steps, jump_length, jump_n_sample):
    """The docstring's count: steps + (jump_n_sample − 1) · jump_length · ⌈(steps − jump_length) / jump_length⌉."""
    times = repaint_schedule(steps, jump_length, jump_n_sample)
    down = sum(b < a for a, b in zip(times[:-1], times[1:]))
    jumps = max(0, -(-(steps - jump_length) // jump_length))
    assert down == steps + (jump_n_sample - 1) * jump_length * jumps


# ----------------------------------------------------------------------------------------------------------------
# Regressions (issue 18) and input checks
# ----------------------------------------------------------------------------------------------------------------


def test_regression_dps_poisson_with_zero_measurements(gen, unet, y8):
    """A measurement pixel of exactly 0 (mid-grey on [-1, 1]) was weighted by 1/eps: ±3.8e3 with one such pixel,
    ±9.3e4 for an all-zero y. The weighting now runs on the [0, 1] intensities, where 0 is mid-grey's 0.5."""
    S, op = linear_schedule(), BlockAverage(2)
    y = op.A(y8)
    one_zero = y.clone()
    one_zero[0, 0, 1, 1] = 0.0
    kw = dict(steps=20, scale=1.0, progress=False)
    ref = dps(unet, y, op, S, generator=gen(3), **kw).abs().max()
    for yy in (one_zero, torch.zeros_like(y)):
        out = dps(unet, yy, op, S, noise="poisson", generator=gen(3), **kw)
        assert torch.isfinite(out).all() and out.abs().max() < 2 * ref, float(out.abs().max())
    # an all-grey measurement has weight 1/0.5 on half the residual: the Gaussian norm, up to the float32 rounding
    # of (v + 1)/2 (measured 2.4e-7 after 20 steps)
    zero = torch.zeros_like(y)
    torch.testing.assert_close(dps(unet, zero, op, S, noise="poisson", generator=gen(4), **kw),
                               dps(unet, zero, op, S, generator=gen(4), **kw), rtol=0, atol=1e-5)  # fmt: skip


def test_dps_and_residual_norm_check_their_arguments(unet, y8):
    S, op = linear_schedule(), BlockAverage(2)
    y = op.A(y8)
    y_nan = y.clone()
    y_nan[1, 0, 2, 2] = float("nan")
    kw = dict(steps=2, progress=False)
    cases = [
        (lambda: dps(unet, y_nan, op, S, **kw), ValueError, "y must be finite, got 1 NaN"),
        (lambda: dps(unet, y.long(), op, S, **kw), ValueError, "y must be a floating-point tensor, got torch.int64"),
        (lambda: dps(unet, y - 1.5, op, S, noise="poisson", **kw), ValueError, "y must be >= -1 for noise='poisson'"),
        (lambda: dps(unet, y, op, S, scale=float("inf"), **kw), ValueError, "scale must be a finite number >= 0"),
        (lambda: dps(unet, y, op, S, scale="1", **kw), TypeError, "scale must be a finite number, got str"),
        (lambda: dps(unet, y, op, S, clip_x0="yes", **kw), TypeError, "clip_x0 must be True or False"),
        (lambda: dps(unet, y, op, S, per_image=1, **kw), TypeError, "per_image must be True or False"),
        (lambda: dps(unet, y, op, None, **kw), TypeError, "schedule must be a diffu.schedules.Schedule"),
        (lambda: dps(unet, y, "op", S, **kw), TypeError, "op must be a forward model with a callable A"),
        (lambda: dps(None, y, op, S, **kw), TypeError, "model must be callable"),
        (lambda: dps(unet, y, op, S, callback=3, **kw), TypeError, "callback must be callable"),
        (lambda: dps(unet, y, op, S, x_T=(2, 1, 8), **kw), ValueError, r"x_T must be a tensor or an image shape"),
        (lambda: dps(unet, y[0, 0], Inpainting(torch.ones(1, 1, 4, 4)), S, **kw), ValueError, "y must be a float"),
        (lambda: residual_norm(y, y[:1]), ValueError, r"ay must have y's shape \(2, 1, 4, 4\)"),
        (lambda: residual_norm(y, y, per_image="no"), TypeError, "per_image must be True or False"),
        (lambda: residual_norm(y, y, "laplace"), ValueError, "noise must be one of"),
        (lambda: residual_norm(y.long(), y), ValueError, "y must be a floating-point tensor"),
        (lambda: residual_norm(y_nan, y), ValueError, "y must be finite, got 1 NaN"),
        (lambda: residual_norm(y - 3, y, "poisson"), ValueError, "y must be >= -1 for Poisson noise"),
        (lambda: residual_norm(torch.tensor(1.0), torch.tensor(1.0)), ValueError, "y must have a batch dimension"),
    ]  # fmt: skip
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_repaint_checks_its_arguments(unet, y8):
    S, mask = linear_schedule(), box_mask(8, 8, 0.5)
    y_nan = y8.clone()
    y_nan[0, 0, 4, 4] = float("nan")  # under the hole: 0 · NaN would still poison the result
    kw = dict(steps=4, jump_length=1, jump_n_sample=1, progress=False)
    cases = [
        (lambda: repaint(unet, y_nan, mask, S, **kw), ValueError, "y must be finite, got 1 NaN"),
        (lambda: repaint(unet, y8.long(), mask, S, **kw), ValueError, "y must be a floating-point tensor"),
        (lambda: repaint(unet, y8, mask, S, clip_x0=None, **kw), TypeError, "clip_x0 must be True or False"),
        (lambda: repaint(unet, y8, mask.long(), S, **kw), ValueError, "mask dtype must be bool or floating point"),
        (lambda: repaint(unet, y8, mask, "linear", **kw), TypeError, "schedule must be a diffu.schedules.Schedule"),
        (lambda: repaint(unet, y8, mask, S, model_kwargs=[1], **kw), TypeError, "model_kwargs must be a dict"),
        (lambda: repaint(unet, y8, mask, S, steps=4, jump_length=1.5), ValueError, "jump_length must be an integer"),
        (lambda: repaint_schedule(-1), ValueError, "steps must be an integer >= 1, got -1"),
        (lambda: repaint_schedule(10, 2, 0), ValueError, "jump_n_sample must be an integer >= 1, got 0"),
    ]  # fmt: skip
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
