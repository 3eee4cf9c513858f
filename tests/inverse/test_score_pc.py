"""Predictor–corrector sampling with a measurement projection (diffu.inverse.score_pc): the projection itself, the
reduction to ancestral sampling and to score_sde's PC, consistency with the measurement, the exact Gaussian
posterior, determinism and bad input.

Bounds marked "measured" were measured once with these seeds (torch 2.13, CPU) and are asserted with a margin.
"""

import math

import pytest
import torch

from diffu.inverse import Inpainting, Radon
from diffu.inverse.score_pc import pc_projection, project_measurement
from diffu.samplers import ddpm, ddpm_step
from diffu.sampling import Trajectory, respaced
from tests.inverse.test_dds import SCHED, ImageGaussian, _mri, gaussian_posterior


def test_project_measurement_with_a_pseudo_inverse(gen):
    op = _mri(8, 2)
    x = torch.randn(2, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    y_t = op(torch.randn(2, 1, 8, 8, generator=gen(1), dtype=torch.float64))
    torch.testing.assert_close(op(project_measurement(x, y_t, op)), y_t, rtol=0, atol=1e-12)  # λ = 1: replaced
    half = project_measurement(x, y_t, op, lam=0.5)
    torch.testing.assert_close(op(half), (op(x) + y_t) / 2, rtol=0, atol=1e-12)  # blended k-space lines
    torch.testing.assert_close(project_measurement(x, y_t, op, lam=0.0), x, rtol=0, atol=0)
    # inpainting: the observed pixels take y's values, the others are untouched
    mask = (torch.rand(1, 1, 8, 8, generator=gen(2)) > 0.5).double()
    out = project_measurement(x, y_t[..., 0], Inpainting(mask))
    torch.testing.assert_close(out, mask * y_t[..., 0] + (1 - mask) * x, rtol=0, atol=1e-15)


def test_project_measurement_by_cg_is_the_minimum_norm_correction(gen):
    # Radon has no pinv: CG from 0 on AᵀA δ = Aᵀr gives the minimum-norm δ, which lies in the range of Aᵀ
    op = Radon(3)
    x = torch.randn(1, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    y_t = op(torch.randn(1, 1, 8, 8, generator=gen(1), dtype=torch.float64))
    out = project_measurement(x, y_t, op, pinv_iters=60)
    torch.testing.assert_close(op(out), y_t, rtol=0, atol=1e-10)  # measured 3e-15: 24 equations of rank 24
    a = op.A(torch.eye(64, dtype=torch.float64).reshape(64, 1, 8, 8)).reshape(64, -1).T  # (24, 64)
    want = x.flatten() + torch.linalg.pinv(a) @ (y_t - op(x)).flatten()
    torch.testing.assert_close(out.flatten(), want, rtol=0, atol=1e-10)  # measured 4e-14


def test_project_measurement_errors():
    op = Radon(4)
    x = torch.zeros(1, 1, 8, 8)
    y = op(x)
    cases = [
        (lambda: project_measurement(x, y, "op"), TypeError, "op must be a linear operator"),
        (lambda: project_measurement(x, y, op, lam=1.5), ValueError, r"lam must be a finite number in \[0, 1\]"),
        (lambda: project_measurement(x, y, op, pinv_iters=0), ValueError, "pinv_iters must be an integer >= 1"),
        (lambda: project_measurement(x.long(), y, op), ValueError, "x must be a floating-point"),
        (lambda: project_measurement(x, y.long(), op), ValueError, "y_t must be a floating-point"),
        (lambda: project_measurement(x, y[:, :, :3], op), ValueError, r"y_t must have the shape of op.A\(x\)"),
        (lambda: project_measurement(x, y * math.nan, op), ValueError, "y_t must be finite"),
    ]  # fmt: skip
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_no_projection_and_no_corrector_is_ancestral_sampling(dummy, gen):
    op = _mri(8, 2)
    y = op(torch.rand(2, 1, 8, 8, generator=gen(0)))
    out = pc_projection(dummy, y, op, SCHED, steps=10, snr=0.0, lam=0.0, generator=gen(1), progress=False)
    ref = ddpm(dummy, (2, 1, 8, 8), SCHED, steps=10, generator=gen(1), progress=False)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)  # draw for draw
    # corrector_steps = 0 switches the corrector off as snr = 0 does
    out0 = pc_projection(dummy, y, op, SCHED, steps=10, corrector_steps=0, lam=0.0, generator=gen(1), progress=False)
    torch.testing.assert_close(out0, ref, rtol=0, atol=0)


def test_without_projection_it_is_score_sde_pc(dummy, gen):
    # λ = 0: corrector (score_sde's Langevin step, per-image norms) then the ancestral predictor, written out here
    op, snr = _mri(8, 2), 0.16
    y = op(torch.rand(2, 1, 8, 8, generator=gen(0)))
    out = pc_projection(dummy, y, op, SCHED, steps=4, snr=snr, corrector_steps=2, lam=0.0, generator=gen(1),
                        progress=False)  # fmt: skip
    ts, sched = respaced(SCHED, 4)
    g = gen(1)
    x = torch.randn(2, 1, 8, 8, generator=g)
    for i in range(3, -1, -1):
        t = torch.full((2,), float(ts[i]))
        ab, alpha = float(sched.alpha_bar[i]), float(sched.alphas[i])
        for _ in range(2):
            grad = -dummy(x, t) / math.sqrt(1 - ab)
            z = torch.randn(x.shape, generator=g)
            step = 2 * alpha * (snr * z.flatten(1).norm(dim=1) / grad.flatten(1).norm(dim=1)) ** 2
            step = step[:, None, None, None]
            x = x + step * grad + (2 * step).sqrt() * z
        noise = torch.randn(x.shape, generator=g) if i > 0 else None
        x, _ = ddpm_step(sched, x, i, dummy(x, t), noise=noise)
    torch.testing.assert_close(out, x, rtol=0, atol=2e-5)  # float32, another order of operations: measured 3e-6


def test_mri_output_matches_the_measured_kspace(dummy, gen):
    op = _mri(8, 2)
    y = op(torch.rand(3, 1, 8, 8, generator=gen(0), dtype=torch.float64) * 2 - 1)
    traj = Trajectory()
    out = pc_projection(dummy, y, op, SCHED, steps=8, generator=gen(1), progress=False, callback=traj)
    torch.testing.assert_close(op(out), y, rtol=0, atol=1e-12)
    assert len(traj) == 8 and traj.ts[-1] == 0
    # λ < 1 blends the last projection: the measured k-space is only pulled halfway to y
    half = pc_projection(dummy, y, op, SCHED, steps=8, lam=0.5, generator=gen(1), progress=False)
    assert float((op(half) - y).abs().max()) > 1e-3


def test_sparse_view_ct_output_fits_the_sinogram(gen):
    # exact Gaussian prior, 4-view CT, no pinv (CG, 20 iterations): relative residual measured 4.3e-7 to 6.8e-7
    # (seeds 0-2) against 1.1-1.8 for the unconditional sample (lam = 0)
    model, op = ImageGaussian(0.2, 0.5), Radon(4)
    x_true = 0.2 + 0.5 * torch.randn(2, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    y = op(x_true)

    def rel(v):
        return float(((op(v) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)).max())

    out = pc_projection(model, y, op, SCHED, steps=20, clip_x0=False, generator=gen(1), progress=False)
    free = pc_projection(model, y, op, SCHED, steps=20, lam=0.0, clip_x0=False, generator=gen(1), progress=False)
    assert rel(out) < 1e-4 and rel(free) > 0.5


def test_samples_the_gaussian_posterior(gen):
    # noiseless ×2 MRI, i.i.d. Gaussian prior, 200 samples of 100 PC steps: the sample mean is within its standard
    # error of the posterior mean (measured error 0.85-1.10 s.e., seeds 0-2) and the per-pixel std matches the
    # posterior's (measured ratio 0.996-1.005; 0.86 with 20 steps, 0.94-0.96 with 50). clip_x0=False: the prior's
    # samples leave [-1, 1] (μ ± 2.4 s), which clipping would bias
    model, op = ImageGaussian(0.2, 0.5), _mri(8, 2)
    x_true = 0.2 + 0.5 * torch.randn(1, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    y = op(x_true)
    mean, std = gaussian_posterior(model, op, y, x_true)
    batch = y.expand(200, -1, -1, -1, -1)
    out = pc_projection(model, batch, op, SCHED, steps=100, clip_x0=False, generator=gen(1), progress=False)
    out = out.flatten(1)
    err, se = (out.mean(0) - mean).norm(), (out.std(0) / math.sqrt(200)).norm()
    assert float(err) < 1.5 * float(se)
    ratio = float((out.std(0)[std > 0.01] / std[std > 0.01]).mean())
    assert 0.9 < ratio < 1.1


def test_is_deterministic_and_follows_dtype(dummy, gen):
    op = Radon(3)
    y = op(torch.rand(1, 1, 8, 8, generator=gen(0), dtype=torch.float64))
    a = pc_projection(dummy, y, op, SCHED, steps=4, pinv_iters=3, generator=gen(1), progress=False)
    b = pc_projection(dummy, y, op, SCHED, steps=4, pinv_iters=3, generator=gen(1), progress=False)
    c = pc_projection(dummy, y, op, SCHED, steps=4, pinv_iters=3, generator=gen(2), progress=False)
    assert a.dtype == torch.float64 and a.shape == (1, 1, 8, 8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    out32 = pc_projection(dummy, y.float(), op, SCHED, steps=2, pinv_iters=2, generator=gen(1), progress=False)
    assert out32.dtype == torch.float32


def test_pc_projection_errors(dummy):
    op = _mri(8, 2)
    y = op(torch.zeros(1, 1, 8, 8))

    def call(**kw):
        return pc_projection(dummy, kw.pop("y", y), kw.pop("op", op), kw.pop("schedule", SCHED), steps=2,
                             progress=False, **kw)  # fmt: skip

    cases = [
        (dict(snr=-0.1), ValueError, "snr must be a finite number >= 0, got -0.1"),
        (dict(snr=math.inf), ValueError, "snr must be a finite number"),
        (dict(corrector_steps=-1), ValueError, "corrector_steps must be an integer >= 0"),
        (dict(lam=2.0), ValueError, r"lam must be a finite number in \[0, 1\]"),
        (dict(pinv_iters=0), ValueError, "pinv_iters must be an integer >= 1"),
        (dict(clip_x0="yes"), TypeError, "clip_x0 must be True or False"),
        (dict(y=y * math.nan), ValueError, "y must be finite"),
        (dict(y=y.long()), ValueError, "y must be a floating-point"),
        (dict(op=object()), TypeError, "op must be a linear operator"),
        (dict(schedule=None), TypeError, "schedule must be a diffu.schedules.Schedule"),
        (dict(x_T=(1, 1, 4, 4)), ValueError, "mask shape"),
        (dict(spacing="x"), ValueError, "spacing must be one of"),
        (dict(generator="seed"), TypeError, "generator must be a torch.Generator"),
        (dict(model_kwargs=[1]), TypeError, "model_kwargs must be a dict"),
    ]  # fmt: skip
    for kw, exc, match in cases:
        with pytest.raises(exc, match=match):
            call(**kw)
    with pytest.raises(ValueError, match="steps must be"):
        pc_projection(dummy, y, op, SCHED, steps=0, progress=False)


@pytest.mark.gpu
def test_pc_projection_on_gpu(dummy, gen):
    op = _mri(8, 2)
    y = op(torch.rand(2, 1, 8, 8, generator=gen(0), dtype=torch.float64)).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    out = pc_projection(dummy.cuda(), y, op, SCHED, steps=5, generator=g, progress=False)
    assert out.device.type == "cuda" and out.dtype == torch.float64
    torch.testing.assert_close(op(out), y, rtol=0, atol=1e-12)
    ct = Radon(3)
    out = pc_projection(dummy.cuda(), ct(out), ct, SCHED, steps=3, generator=g, progress=False)
    assert out.device.type == "cuda" and bool(torch.isfinite(out).all())
