"""DDS (diffu.inverse.dds): the CG data step, the 2D sampler against DDIM and the official update, consistency and the
posterior mean under an exact Gaussian prior, and the 3D extension (slice stack, TV along depth by ADMM).

Bounds marked "measured" were measured once with these seeds (torch 2.13, CPU) and are asserted with a margin.
"""

import math

import pytest
import torch

from diffu.gmm import ExactModel, GaussianMixture
from diffu.inverse import MRI, BlockAverage, Blur, Identity, Inpainting, Radon, cartesian_mask, gaussian_kernel
from diffu.inverse.dds import (
    ETA_RULES,
    SliceStack,
    admm_tv_z,
    data_consistency,
    dds,
    dds_volume,
    z_difference,
    z_difference_T,
)
from diffu.samplers import ddim
from diffu.sampling import Trajectory
from diffu.schedules import linear_schedule

SCHED = linear_schedule()


class ImageGaussian(torch.nn.Module):
    """The exact ε of images whose pixels are i.i.d. ``N(mean, std²)``: ``√(1−ᾱ)(x − √ᾱ μ)/(ᾱ s² + 1 − ᾱ)`` — a
    "network" with no error, whose posterior under a linear measurement is known in closed form (checked against
    diffu.gmm's exact model below)."""

    prediction = "eps"

    def __init__(self, mean: float, std: float, schedule=SCHED):
        super().__init__()
        self.mean, self.std, self.schedule = mean, std, schedule

    def forward(self, x, t):
        ab = self.schedule.alpha_bar[t.long().cpu()].to(x).reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.mean) / (ab * self.std**2 + 1 - ab)


def gaussian_posterior(model: ImageGaussian, op, y: torch.Tensor, like: torch.Tensor):
    """Posterior mean and per-pixel std of one image under noiseless ``y = A x``: ``A⁺y + (I − P)μ`` and
    ``s √diag(I − P)``, ``P = A⁺A`` (A as a dense matrix)."""
    d = like[0].numel()
    basis = torch.eye(d, dtype=torch.float64).reshape(d, *like.shape[1:])
    a = op.A(basis).reshape(d, -1).T  # (M, D)
    ap = torch.linalg.pinv(a)
    null = torch.eye(d, dtype=torch.float64) - ap @ a
    mean = ap @ y.flatten() + null @ torch.full((d,), model.mean, dtype=torch.float64)
    return mean, (model.std**2 * null.diagonal()).clamp(min=0).sqrt()


def test_the_gaussian_model_is_diffu_gmms_exact_model():
    x = torch.randn(3, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = ExactModel(GaussianMixture([1.0], torch.full((1, 9), 0.2, dtype=torch.float64), 0.5), schedule=SCHED)
    for t in (0, 300, 999):
        tt = torch.full((3,), float(t), dtype=torch.float64)
        want = exact(x.flatten(1), tt).reshape(x.shape)
        torch.testing.assert_close(ImageGaussian(0.2, 0.5)(x, tt), want, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# The data step
# ----------------------------------------------------------------------------------------------------------------


def _mri(n=8, accel=2, seed=1):
    return MRI(cartesian_mask(n, n, accel, center_fraction=0.25, generator=torch.Generator().manual_seed(seed)))


def test_data_consistency_zero_iterations_returns_the_start(gen):
    op = Radon(4)
    x0 = torch.randn(2, 1, 8, 8, generator=gen(0))
    assert data_consistency(x0, op(x0 + 1), op, iters=0) is x0


def test_data_consistency_gamma_form_is_the_closed_form_for_a_mask(gen):
    # (I + γM) x = x0 + γ M y is diagonal with two eigenvalues: CG is exact after 2 iterations
    mask = (torch.rand(1, 1, 6, 6, generator=gen(0)) > 0.5).double()
    op = Inpainting(mask)
    x0, y = torch.randn(2, 1, 6, 6, generator=gen(1), dtype=torch.float64), torch.randn(2, 1, 6, 6, generator=gen(2))
    y = op(y.double())
    want = (x0 + 0.7 * mask * y) / (1 + 0.7 * mask)
    torch.testing.assert_close(data_consistency(x0, y, op, iters=2, gamma=0.7), want, rtol=0, atol=1e-12)
    # noiseless form: the measured pixels become y, the others stay
    out = data_consistency(x0, y, op, iters=3)
    torch.testing.assert_close(out, mask * y + (1 - mask) * x0, rtol=0, atol=1e-12)


def test_data_consistency_one_iteration_is_the_official_mri_projection(gen):
    # the official single-coil step x̂0 − A⁺(A x̂0 − y); with a Hermitian mask AᵀA is a projection: CG needs one step
    op = _mri(16, 4)
    x0 = torch.randn(3, 1, 16, 16, generator=gen(0), dtype=torch.float64)
    y = op(torch.randn(3, 1, 16, 16, generator=gen(1), dtype=torch.float64))
    want = x0 - op.pinv(op(x0) - y)
    for iters in (1, 5):  # more iterations stay put (stopped at rounding level, not divided noise by noise)
        out = data_consistency(x0, y, op, iters=iters)
        torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(op(out), y, rtol=0, atol=1e-12)


def test_data_consistency_solves_an_invertible_system(gen):
    # circular blur with min |k̂| = 0.11 on 16×16: enough CG iterations give A⁻¹y, the truth for noiseless data
    op = Blur(gaussian_kernel(5, 0.6, dtype=torch.float64))
    x = torch.rand(2, 1, 16, 16, generator=gen(0), dtype=torch.float64) * 2 - 1
    y = op(x)
    start = torch.zeros_like(x)
    out = data_consistency(start, y, op, iters=100)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-8)
    # 5 iterations (the official count) reduce the residual but do not solve it (measured 0.11 of ‖y‖)
    r5 = (op(data_consistency(start, y, op, iters=5)) - y).norm() / y.norm()
    assert 1e-3 < float(r5) < 0.5


def test_data_consistency_errors():
    op, x0 = Radon(4), torch.zeros(1, 1, 8, 8)
    y = op(x0)
    cases = [
        (lambda: data_consistency(x0, y, "op"), TypeError, "op must be a linear operator with callable A and AT"),
        (lambda: data_consistency(x0, y, op, iters=-1), ValueError, "iters must be an integer >= 0, got -1"),
        (lambda: data_consistency(x0, y, op, iters=2.0), ValueError, "iters must be an integer"),
        (lambda: data_consistency(x0, y, op, gamma=0.0), ValueError, r"gamma must be a finite number > 0, got 0.0"),
        (lambda: data_consistency(x0, y, op, gamma=math.nan), ValueError, "gamma must be a finite number"),
        (lambda: data_consistency(x0, y * math.nan, op), ValueError, "y must be finite"),
        (lambda: data_consistency(x0.long(), y, op), ValueError, "x0 must be a floating-point"),
        (lambda: data_consistency(x0 * math.inf, y, op), ValueError, "x0 must be finite"),
        (lambda: data_consistency(x0, y[:, :, :2], op), ValueError, r"y must have the shape of op.A\(x0\)"),
    ]  # fmt: skip
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_data_consistency_names_x0_when_the_operator_refuses_it():
    """op.A's own error names its argument ``x``; data_consistency re-raises it naming ``x0``."""
    block, x0 = BlockAverage(2), torch.zeros(2, 1, 8, 8)
    y = block(x0)
    for bad in (x0[0], x0[None], torch.zeros(2, 1, 7, 7)):  # rank 3, rank 5, not divisible by the factor
        with pytest.raises(ValueError, match=r"^x0 must be an input of op \(BlockAverage\), got shape") as err:
            data_consistency(bad, y, block)
        assert isinstance(err.value.__cause__, ValueError)  # the operator's message follows
        assert str(err.value.__cause__) in str(err.value)
    with pytest.raises(ValueError, match=r"x0 must be an input of op \(Radon\)"):
        data_consistency(x0[0], Radon(4)(x0), Radon(4))


# ----------------------------------------------------------------------------------------------------------------
# The 2D sampler
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_dds_without_cg_is_ddim(dummy, gen, eta):
    op = Radon(4)
    y = op(torch.zeros(2, 1, 8, 8))
    out = dds(dummy, y, op, SCHED, steps=10, eta=eta, cg_iters=0, eta_rule="ddim", generator=gen(1), progress=False)
    ref = ddim(dummy, (2, 1, 8, 8), SCHED, steps=10, eta=eta, generator=gen(1), progress=False)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)  # the same draws, the same arithmetic
    if eta == 0:  # both rules agree at η = 0
        other = dds(dummy, y, op, SCHED, steps=10, eta=0.0, cg_iters=0, generator=gen(1), progress=False)
        torch.testing.assert_close(other, ref, rtol=0, atol=0)


def test_dds_rule_is_the_official_update(dummy, gen):
    # solver_2d.py: xt_next = √a_next x0_hat + c1 z + c2 et, c1 = √(1 − a_next) η, c2 = √(1 − a_next) √(1 − η²);
    # written here in the official form, with our data step, over the grid 750, 500, 250, 0 (leading, steps=4; our
    # step to t = 0 is the ordinary one, see the Notes of dds)
    op, eta = Radon(4), 0.85
    x_true = torch.rand(2, 1, 8, 8, generator=gen(0)) * 2 - 1
    y = op(x_true)
    out = dds(dummy, y, op, SCHED, steps=4, eta=eta, cg_iters=3, generator=gen(1), progress=False)
    g = gen(1)
    x = torch.randn(2, 1, 8, 8, generator=g)
    for t, t_next in [(750, 500), (500, 250), (250, 0), (0, -1)]:
        at = float(SCHED.alpha_bar[t])
        at_next = 1.0 if t_next < 0 else float(SCHED.alpha_bar[t_next])
        et = dummy(x, torch.full((2,), float(t)))
        x0 = data_consistency((x - et * math.sqrt(1 - at)) / math.sqrt(at), y, op, iters=3)
        c1, c2 = math.sqrt(1 - at_next) * eta, math.sqrt(1 - at_next) * math.sqrt(1 - eta**2)
        x = math.sqrt(at_next) * x0 + c1 * torch.randn(x.shape, generator=g) + c2 * et
    torch.testing.assert_close(out, x, rtol=0, atol=2e-5)  # float32, measured max 1e-6


def test_dds_output_is_consistent_with_the_measurement(gen):
    # exact Gaussian prior, noiseless sparse-view CT: the output satisfies its own last data step; against the
    # unconditional DDIM sample (cg_iters=0) the relative residual drops from 0.91-1.07 to 0.0047-0.0063 (measured,
    # seeds 0-2)
    model, op = ImageGaussian(0.2, 0.5), Radon(4)
    x_true = 0.2 + 0.5 * torch.randn(4, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    y = op(x_true)

    def rel(v):
        return float(((op(v) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)).mean())

    free = dds(model, y, op, SCHED, steps=20, cg_iters=0, generator=gen(1), progress=False)
    solved = dds(model, y, op, SCHED, steps=20, generator=gen(1), progress=False)
    assert rel(free) > 0.5 and rel(solved) < 0.02
    # MRI: one CG iteration is the projection, so the measured k-space equals y
    op = _mri(8, 2)
    y = op(x_true)
    out = dds(model, y, op, SCHED, steps=20, generator=gen(2), progress=False)
    torch.testing.assert_close(op(out), y, rtol=0, atol=1e-12)


def test_dds_data_term_with_noisy_measurements(gen):
    # invertible blur (min |k̂| = 0.11), σ_y = 0.05, exact Gaussian prior. The noiseless form with enough CG solves
    # A x = y exactly and fits the noise (residual measured < 1e-6 of the noise norm σ√M); the γ form stops at a
    # residual set by γ against ‖A‖² ≤ 1: γ = 1 leaves 2.1-2.6 noise norms, γ = 100 (≈ prior var / σ_y²) 0.015-0.026
    # (measured, seeds 0-2, every image)
    model, op = ImageGaussian(0.2, 0.5), Blur(gaussian_kernel(5, 0.6, dtype=torch.float64))
    x = 0.2 + 0.5 * torch.randn(4, 1, 16, 16, generator=gen(0), dtype=torch.float64)
    y = op(x) + 0.05 * torch.randn(x.shape, generator=gen(10), dtype=torch.float64)

    def residual(gamma):
        out = dds(model, y, op, SCHED, steps=20, gamma=gamma, cg_iters=50, generator=gen(1), progress=False)
        return (op(out) - y).flatten(1).norm(dim=1) / (0.05 * 16)

    assert float(residual(None).max()) < 1e-3
    r1, r100 = residual(1.0), residual(100.0)
    assert float(r1.min()) > 1.5 and float(r100.max()) < 0.1


def test_dds_mean_is_the_gaussian_posterior_mean(gen):
    # noiseless ×2 MRI of an 8×8 image with an i.i.d. Gaussian prior: the posterior mean is A⁺y + (I − P)μ. The
    # error of the mean of 200 samples is compared with its standard error ‖std/√200‖ (unbiased: ≈ 1 ± 0.1 over 64
    # pixels); measured 0.79-1.08 over seeds 0-2. The std of the unmeasured pixels is 0.75 of the posterior's
    # (measured 0.750-0.754): DDS is not an exact posterior sampler, its DDIM step from Tweedie's mean drops the
    # posterior variance of x̂_0 (pc_projection measures 1.01-1.03 on the same problem)
    model, op = ImageGaussian(0.2, 0.5), _mri(8, 2)
    x_true = 0.2 + 0.5 * torch.randn(1, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    y = op(x_true)
    mean, std = gaussian_posterior(model, op, y, x_true)
    out = dds(model, y.expand(200, -1, -1, -1, -1), op, SCHED, steps=20, generator=gen(1), progress=False).flatten(1)
    err, se = (out.mean(0) - mean).norm(), (out.std(0) / math.sqrt(200)).norm()
    assert float(err) < 1.5 * float(se)
    ratio = float((out.std(0)[std > 0.01] / std[std > 0.01]).mean())
    assert 0.6 < ratio < 0.9


def test_dds_is_deterministic_and_follows_dtype(dummy, gen):
    op = _mri(8, 2)
    y = op(torch.rand(2, 1, 8, 8, generator=gen(0), dtype=torch.float64))
    a = dds(dummy, y, op, SCHED, steps=5, generator=gen(1), progress=False)
    b = dds(dummy, y, op, SCHED, steps=5, generator=gen(1), progress=False)
    c = dds(dummy, y, op, SCHED, steps=5, generator=gen(2), progress=False)
    assert a.dtype == torch.float64 and a.shape == (2, 1, 8, 8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    y32 = y.float()
    assert dds(dummy, y32, op, SCHED, steps=5, generator=gen(1), progress=False).dtype == torch.float32


def test_dds_callback_reports_the_corrected_estimate(dummy, gen):
    op = _mri(8, 2)
    y = op(torch.rand(1, 1, 8, 8, generator=gen(0), dtype=torch.float64))
    traj = Trajectory()
    out = dds(dummy, y, op, SCHED, steps=6, gamma=1.0, generator=gen(1), progress=False, callback=traj)
    assert len(traj) == 6 and traj.ts == [830, 664, 498, 332, 166, 0]  # "leading": multiples of T // 6 = 166
    torch.testing.assert_close(traj.xs[-1], out)
    torch.testing.assert_close(traj.x0s[-1], out)  # the last step returns x̃_0 itself (ᾱ_{-1} = 1)


def test_dds_errors(dummy):
    op = Radon(4)
    y = op(torch.zeros(1, 1, 8, 8))
    call = lambda **kw: dds(dummy, kw.pop("y", y), kw.pop("op", op), kw.pop("schedule", SCHED), progress=False, **kw)  # noqa: E731
    cases = [
        (dict(eta=1.5), ValueError, r"eta must be a finite number in \[0, 1\], got 1.5"),
        (dict(eta=math.nan), ValueError, "eta must be a finite number"),
        (dict(cg_iters=-1), ValueError, "cg_iters must be an integer >= 0, got -1"),
        (dict(gamma=-1.0), ValueError, "gamma must be a finite number > 0"),
        (dict(eta_rule="ddpm"), ValueError, "eta_rule must be one of"),
        (dict(clip_x0=1), TypeError, "clip_x0 must be True or False"),
        (dict(steps=0), ValueError, "steps must be"),
        (dict(spacing="cosine"), ValueError, "spacing must be one of"),
        (dict(y=y * math.nan), ValueError, "y must be finite"),
        (dict(y=y.long()), ValueError, "y must be a floating-point"),
        (dict(y=y[:, :, :2]), ValueError, r"y \(sinogram\) has 2 angles, the operator 4"),
        (dict(op=object()), TypeError, "op must be a linear operator"),
        (dict(schedule="linear"), TypeError, "schedule must be a diffu.schedules.Schedule"),
        (dict(x_T=torch.full((1, 1, 8, 8), math.nan)), ValueError, "x_T must be finite"),
        (dict(x_T=(1, 1, 9, 9)), ValueError, r"y must have the shape of op.A\(x_T\)"),
        (dict(generator=1), TypeError, "generator must be a torch.Generator"),
        (dict(callback=1), TypeError, "callback must be callable"),
    ]  # fmt: skip
    for kw, exc, match in cases:
        with pytest.raises(exc, match=match):
            call(**kw)
    assert ETA_RULES == ("dds", "ddim")


# ----------------------------------------------------------------------------------------------------------------
# 3D
# ----------------------------------------------------------------------------------------------------------------


def test_z_difference_and_its_adjoint(gen):
    x = torch.randn(2, 3, 5, 4, 6, generator=gen(0), dtype=torch.float64)
    q = torch.randn(2, 3, 5, 4, 6, generator=gen(1), dtype=torch.float64)
    torch.testing.assert_close((z_difference(x) * q).sum(), (x * z_difference_T(q)).sum(), rtol=1e-12, atol=0)
    ramp = torch.arange(5.0).reshape(1, 1, 5, 1, 1).expand(1, 1, 5, 2, 2)
    assert z_difference(ramp)[:, :, :-1].eq(1).all() and z_difference(ramp)[:, :, -1].eq(0).all()
    assert z_difference(torch.ones(1, 1, 1, 2, 2)).eq(0).all()  # one slice: nothing to compare
    for f in (z_difference, z_difference_T):
        with pytest.raises(ValueError, match=r"must have 5 dimensions \(N, C, D, H, W\)"):
            f(torch.zeros(1, 1, 4, 4))
        with pytest.raises(ValueError, match="must be a floating-point"):
            f(torch.zeros(1, 1, 2, 4, 4, dtype=torch.long))


@pytest.mark.parametrize("op", [Radon(5), _mri(8, 2)], ids=["radon", "mri"])
def test_slice_stack_is_the_slicewise_operator_and_adjoint(gen, op):
    vol = torch.randn(2, 1, 3, 8, 8, generator=gen(0), dtype=torch.float64)
    stack = SliceStack(op)
    y = stack(vol)
    assert y.shape[:2] == (2, 3)
    torch.testing.assert_close(y[1, 2], op(vol[1:2, :, 2])[0])  # slice d of volume n
    w = torch.randn(y.shape, generator=gen(1), dtype=torch.float64)
    torch.testing.assert_close((y * w).sum(), (vol * stack.AT(w)).sum(), rtol=1e-10, atol=0)
    with pytest.raises(TypeError, match="op must be a linear operator"):
        SliceStack("radon")
    with pytest.raises(ValueError, match=r"x must have 5 dimensions"):
        stack(vol[:, :, 0])
    with pytest.raises(ValueError, match=r"y must have shape \(N, D, …\)"):
        stack.AT(w.flatten(0, -3)[0])


def test_slice_stack_propagates_nan_as_documented(gen):
    """Like the operators of diffu.inverse.operators, SliceStack does not look for NaN: it propagates (per slice),
    and the class docstring says so."""
    assert "NaN" in SliceStack.__doc__ and "propagates" in SliceStack.__doc__
    stack, vol = SliceStack(BlockAverage(2)), torch.randn(2, 1, 3, 8, 8, generator=gen(0))
    vol[1, 0, 2, 0, 0] = math.nan
    vol[0, 0, 1, 5, 5] = math.inf
    y = stack.A(vol)
    bad = ~torch.isfinite(y)
    assert bad.sum() == 2 and torch.isnan(y[1, 2, 0, 0, 0]) and torch.isinf(y[0, 1, 0, 2, 2])
    x = stack.AT(y)
    assert torch.isnan(x[1, 0, 2, :2, :2]).all() and torch.isinf(x[0, 0, 1, 4:6, 4:6]).all()
    assert int((~torch.isfinite(x)).sum()) == 8  # only the two 2×2 blocks


def test_admm_tv_z_solves_two_slice_tv_denoising(gen):
    # A = I, D = 2: argmin ½‖x − y‖² + λ|x₂ − x₁| per pixel moves both values λ towards each other, or to their mean
    # when they are within 2λ
    y = torch.randn(1, 1, 2, 4, 4, generator=gen(0), dtype=torch.float64)
    lam = 0.3
    gap = y[:, :, 1] - y[:, :, 0]
    shift = torch.clamp(gap / 2, -lam, lam)
    want = torch.stack([y[:, :, 0] + shift, y[:, :, 1] - shift], 2)
    stack = SliceStack(Identity())
    x, _ = admm_tv_z(y, stack(y), stack, z_weight=lam, rho=1.0, iters=300, cg_iters=10)
    torch.testing.assert_close(x, want, rtol=0, atol=1e-6)  # measured 1e-9 after 300 iterations
    # z_weight = 0: the least-squares solution (A = I: y itself), reached by the ρ-proximal iterations (contraction
    # 2ρ/(1 + 2ρ) per iteration for D = 2); the scaled dual u stays zero
    x, (z, u) = admm_tv_z(torch.zeros_like(y), stack(y), stack, z_weight=0.0, rho=1.0, iters=100, cg_iters=10)
    torch.testing.assert_close(x, y, rtol=0, atol=1e-10)
    assert float(u.abs().max()) == 0


def test_admm_tv_z_errors(gen):
    stack = SliceStack(Radon(4))
    x = torch.zeros(1, 1, 3, 8, 8)
    y = stack(x)
    cases = [
        (lambda: admm_tv_z(x, y, Radon(4)), TypeError, "op must be a SliceStack"),
        (lambda: admm_tv_z(x, y, stack, z_weight=-1.0), ValueError, "z_weight must be a finite number >= 0"),
        (lambda: admm_tv_z(x, y, stack, rho=0.0), ValueError, "rho must be a finite number > 0"),
        (lambda: admm_tv_z(x, y, stack, iters=0), ValueError, "iters must be an integer >= 1"),
        (lambda: admm_tv_z(x, y, stack, cg_iters=-2), ValueError, "cg_iters must be an integer >= 0"),
        (lambda: admm_tv_z(x[:, :, 0], y, stack), ValueError, r"x must have 5 dimensions"),
        (lambda: admm_tv_z(x, y[:, :2], stack), ValueError, r"y must have the shape of op.A\(x\)"),
        (lambda: admm_tv_z(x, y, stack, prior=x[:, :, :2]), ValueError, "prior must have x's shape"),
        (lambda: admm_tv_z(x, y, stack, split=(x,)), ValueError, r"split must be a pair \(z, u\)"),
    ]  # fmt: skip
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_dds_volume_without_z_weight_is_dds_on_the_slices(dummy, gen):
    op = _mri(8, 2)
    vol = torch.rand(2, 2, 3, 8, 8, generator=gen(0)) * 2 - 1  # two channels: the slice layout matters
    y = SliceStack(op)(vol)
    out = dds_volume(dummy, y, op, SCHED, z_weight=0.0, steps=5, gamma=1.0, generator=gen(1), progress=False)
    ref = dds(dummy, y.flatten(0, 1), op, SCHED, steps=5, gamma=1.0, generator=gen(1), progress=False)
    assert out.shape == vol.shape
    torch.testing.assert_close(out.transpose(1, 2).flatten(0, 1), ref, rtol=0, atol=0)


def test_dds_volume_tv_along_depth_makes_slices_consistent(gen):
    # a volume of 6 identical slices, exact i.i.d. Gaussian prior (no coupling between slices of its own), 4-view CT
    # per slice. Slice inconsistency against the truth, mean |D_z x − D_z x*| (here mean |D_z x|), and volume RMSE,
    # measured over seeds 0-2: independent slices 0.32-0.34 / 0.43-0.49; z_weight 0.04: 0.027-0.034 / 0.36-0.41
    model = ImageGaussian(0.2, 0.5)
    truth = (0.2 + 0.5 * torch.randn(1, 1, 1, 8, 8, generator=gen(0), dtype=torch.float64)).expand(1, 1, 6, 8, 8)
    op = Radon(4)
    y = SliceStack(op)(truth)
    runs = {
        w: dds_volume(model, y, op, SCHED, z_weight=w, steps=20, generator=gen(1), progress=False) for w in (0, 0.04)
    }
    incons = {w: float(z_difference(v)[:, :, :-1].abs().mean()) for w, v in runs.items()}
    rmse = {w: float((v - truth).pow(2).mean().sqrt()) for w, v in runs.items()}
    assert incons[0.04] < 0.2 * incons[0] and rmse[0.04] < 0.92 * rmse[0]
    # the data stay nearly fitted: one ADMM iteration of 5 CG steps per diffusion step trades some residual for the
    # z-coupling (relative residual per slice, measured max 0.8 % without and 3-5 % with the penalty, seeds 0-2)
    r = (SliceStack(op)(runs[0.04]) - y).flatten(2).norm(dim=2) / y.flatten(2).norm(dim=2)
    assert float(r.max()) < 0.1


def test_dds_volume_is_deterministic_and_checks_its_arguments(dummy, gen):
    op = Radon(4)
    y = SliceStack(op)(torch.zeros(1, 1, 3, 8, 8, dtype=torch.float64))
    a = dds_volume(dummy, y, op, SCHED, steps=4, generator=gen(3), progress=False)
    b = dds_volume(dummy, y, SliceStack(op), SCHED, steps=4, generator=gen(3), progress=False)
    assert a.dtype == torch.float64 and a.shape == (1, 1, 3, 8, 8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    call = lambda **kw: dds_volume(dummy, kw.pop("y", y), op, SCHED, steps=2, progress=False, **kw)  # noqa: E731
    cases = [
        (dict(z_weight=-0.1), ValueError, "z_weight must be a finite number >= 0"),
        (dict(rho=-1.0), ValueError, "rho must be a finite number > 0"),
        (dict(admm_iters=0), ValueError, "admm_iters must be an integer >= 1"),
        (dict(y=y[0, 0, 0]), ValueError, r"y must have shape \(N, D, …\)"),
        (dict(x_T=(1, 1, 8, 8)), ValueError, r"x_T must be a volume \(N, C, D, H, W\)"),
        (dict(x_T=(1, 1, 2, 8, 8)), ValueError, r"x_T must have depth D = 3 \(y.shape\[1\]"),
        (dict(x_T=torch.zeros(1, 1, 4, 8, 8)), ValueError, r"x_T must have depth D = 3 .*got shape \(1, 1, 4, 8, 8\)"),
        (dict(x_T=(1, 1, 3, 9, 9)), ValueError, r"y must have the shape of SliceStack\(op\).A\(x_T\)"),
        (dict(eta=2.0), ValueError, "eta must be a finite number"),
    ]  # fmt: skip
    for kw, exc, match in cases:
        with pytest.raises(exc, match=match):
            call(**kw)


@pytest.mark.gpu
def test_dds_on_gpu_matches_cpu(dummy, gen):
    op = Radon(4)
    y = op(torch.rand(2, 1, 8, 8, generator=gen(0), dtype=torch.float64))
    x_T = torch.randn(2, 1, 8, 8, generator=gen(1), dtype=torch.float64)
    cpu = dds(dummy, y, op, SCHED, steps=5, eta=0.0, x_T=x_T, progress=False)
    gpu = dds(dummy.cuda(), y.cuda(), op, SCHED, steps=5, eta=0.0, x_T=x_T.cuda(), progress=False)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float64
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-8)
    vol_y = SliceStack(op)(torch.rand(1, 1, 3, 8, 8, generator=gen(2), dtype=torch.float64))
    g = torch.Generator(device="cuda").manual_seed(0)
    vol = dds_volume(dummy.cuda(), vol_y.cuda(), op, SCHED, steps=5, generator=g, progress=False)
    assert vol.device.type == "cuda" and bool(torch.isfinite(vol).all())
