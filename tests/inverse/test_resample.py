"""ReSample and its autoencoder (diffu.inverse.resample, diffu.nn.autoencoder): the resampling Gaussian against the
closed form, the official variance against DDPM's posterior variance, reduction to latent DDIM, hard data
consistency, determinism, scale_factor, input validation; shipped-weight checks run once the weights exist."""

import pytest
import torch

import diffu.pretrained
from diffu.inverse.masks import box_mask
from diffu.inverse.operators import BlockAverage, Inpainting
from diffu.inverse.resample import (
    latent_optimization,
    pixel_optimization,
    resample,
    resample_moments,
    resample_variance,
    stochastic_resample,
)
from diffu.nn import Autoencoder, DiT, DiTConfig
from diffu.nn.autoencoder import autoencoder_loss, encode_images
from diffu.samplers import ddim
from diffu.schedules import linear_schedule
from diffu.train import seeded

IMG = (2, 1, 8, 8)


@pytest.fixture(scope="module")
def ae():
    with seeded(0):
        return Autoencoder(channels=8, latent_channels=2, groups=4).eval()


@pytest.fixture(scope="module")
def latent_model():
    with seeded(1):
        m = DiT(DiTConfig(image_size=2, patch_size=1, in_channels=2, hidden_size=16, depth=1, num_heads=2,
                          num_classes=None))  # fmt: skip
        torch.nn.init.normal_(m.linear_final.weight, std=0.3)  # DiT zero-initialises its output: make ε̂ non-trivial
    return m.eval()


@pytest.fixture(scope="module")
def x8(gen):
    return torch.rand(IMG, generator=gen(2)) * 2 - 1


def run(latent_model, ae, y, op, **kw):
    kw = {"steps": 12, "hard_every": 2, "pixel_iters": 20, "latent_iters": 20, "progress": False, **kw}
    return resample(latent_model, ae, y, op, linear_schedule(), **kw)


# ------------------------------------------------------------------------------------------------ resampling law


def test_resample_moments_closed_form(gen):
    z0, zt = torch.randn(3, 2, 4, 4, generator=gen(0)), torch.randn(3, 2, 4, 4, generator=gen(1))
    ab, s = 0.3, 0.07
    mean, std = resample_moments(z0, zt, ab, s)
    # product of N(√ᾱ z0, 1 − ᾱ) and N(z_t, s), written in precision form
    prec = 1 / (1 - ab) + 1 / s
    torch.testing.assert_close(mean, (ab**0.5 * z0 / (1 - ab) + zt / s) / prec, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(std, torch.full_like(std, prec**-0.5), rtol=1e-6, atol=1e-6)
    # limits: s → ∞ trusts the consistent ẑ_0 (forward marginal), s → 0 keeps z_t
    m_big, sd_big = resample_moments(z0, zt, ab, 1e9)
    torch.testing.assert_close(m_big, ab**0.5 * z0, rtol=1e-5, atol=1e-5)
    assert abs(sd_big[0, 0, 0, 0].item() - (1 - ab) ** 0.5) < 1e-6
    torch.testing.assert_close(resample_moments(z0, zt, ab, 1e-9)[0], zt, rtol=1e-5, atol=1e-5)


def test_stochastic_resample_monte_carlo(gen):
    n = 200_000
    z0, zt = torch.full((n, 1, 1, 1), 0.8), torch.full((n, 1, 1, 1), -0.5)
    ab, s = 0.6, 0.25
    draws = stochastic_resample(z0, zt, ab, s, generator=gen(3)).flatten().double()
    mean = (s * ab**0.5 * 0.8 + (1 - ab) * -0.5) / (s + 1 - ab)
    var = 1 / (1 / s + 1 / (1 - ab))
    # 5 standard errors: mean's SE = √(var/n); the sample variance's SE ≈ var √(2/n)
    assert abs(draws.mean().item() - mean) < 5 * (var / n) ** 0.5
    assert abs(draws.var().item() - var) < 5 * var * (2 / n) ** 0.5
    again = stochastic_resample(z0, zt, ab, s, generator=gen(3))
    torch.testing.assert_close(again.flatten().double(), draws, rtol=0, atol=0)


def test_resample_variance_is_gamma_times_posterior_variance():
    S = linear_schedule()
    for t in (1, 10, 500, 999):
        s = resample_variance(1.0, S.alpha_bar[t], S.alpha_bar[t - 1])
        torch.testing.assert_close(s, S.posterior_variance[t], rtol=1e-9, atol=0)
    ab, ab_prev = S.alpha_bar[500], S.alpha_bar[480]
    assert torch.isclose(resample_variance(40.0, ab, ab_prev), 40 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))


# ------------------------------------------------------------------------------------------------ autoencoder


def test_autoencoder_shapes_and_scale_factor(gen, ae, x8):
    x = torch.rand(64, 1, 8, 8, generator=gen(4)) * 2 - 1
    a = Autoencoder(channels=8, latent_channels=2, groups=4)
    a.load_state_dict(ae.state_dict())
    assert a.encode(x).shape == (64, 2, 2, 2) and a.decode(a.encode(x)).shape == x.shape
    raw_std = a.encode(x).std().item()
    sf = a.set_scale_factor(x)
    assert abs(sf - 1 / raw_std) < 1e-4 * sf
    assert abs(a.encode(x).std().item() - 1) < 1e-5
    # the scale cancels between encode and decode: the reconstruction does not depend on it
    torch.testing.assert_close(a(x), ae(x), rtol=1e-5, atol=1e-5)
    # training tracks 1/std(μ): the first batch sets it exactly
    b = Autoencoder(channels=8, latent_channels=2, groups=4)
    b.load_state_dict(ae.state_dict())
    autoencoder_loss(b, x, generator=gen(0))
    assert abs(b.encode(x).std().item() - 1) < 1e-5
    torch.testing.assert_close(encode_images(a, x, batch_size=10), a.encode(x))
    with pytest.raises(ValueError, match="divisible by 4"):
        a.encode(torch.zeros(1, 1, 10, 10))
    with pytest.raises(ValueError, match="z must have shape"):
        a.decode(torch.zeros(1, 3, 2, 2))


def test_autoencoder_loss_trains(gen):
    with seeded(0):
        a = Autoencoder(channels=8, latent_channels=2, groups=4)
    # two-parameter images (a horizontal and a vertical ramp): a 2×2×2 latent can represent them
    ramp = torch.linspace(-1, 1, 8)
    a_, b_ = torch.rand(2, 16, 1, 1, 1, generator=gen(5))
    x = a_ * ramp[None, :] + b_ * ramp[:, None] - 0.5
    opt = torch.optim.Adam(a.parameters(), lr=3e-3)
    g = gen(0)
    losses = []
    for _ in range(60):
        loss = autoencoder_loss(a, x, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


# ------------------------------------------------------------------------------------------------ hard consistency


def test_hard_data_consistency_lowers_residual(gen, ae, x8):
    op = Inpainting(box_mask(8, 8, 0.5))
    with torch.no_grad():
        y = op.A(ae.decode(torch.randn(2, 2, 2, 2, generator=gen(11))))  # in the range of A ∘ D
    z_init = torch.randn(2, 2, 2, 2, generator=gen(6))

    def res(z):
        return torch.linalg.vector_norm(y - op.A(ae.decode(z))).item()

    before = res(z_init)
    after = res(latent_optimization(y, op, ae.decode, z_init, iters=100, lr=5e-2))
    assert after < 0.7 * before, (before, after)
    x_init = ae.decode(z_init).detach()
    x_opt = pixel_optimization(y, op, x_init, iters=300)
    r0, r1 = (torch.linalg.vector_norm(y - op.A(v)).item() for v in (x_init, x_opt))
    assert r1 < 0.05 * r0, (r0, r1)
    # pixel optimisation only moves what A sees: the hole keeps its initial values (up to AdamW's weight decay)
    hole = op.mask.expand_as(x8) == 0
    assert (x_opt - x_init)[hole].abs().max() < 0.05


def test_resample_with_hard_consistency_fits_y_better(gen, latent_model, ae, x8):
    op = BlockAverage(2)
    with torch.no_grad():
        y = op.A(ae.decode(torch.randn(2, 2, 2, 2, generator=gen(11))))  # in the range of A ∘ D

    def res(x):
        return torch.linalg.vector_norm(y - op.A(x)).item()

    plain = run(latent_model, ae, y, op, scale=0.0, hard_start=1.0, latent_start=1.0, final_optimization=False,
                generator=gen(7))  # fmt: skip
    hard = run(latent_model, ae, y, op, scale=0.5, generator=gen(7))
    assert res(hard) < 0.7 * res(plain), (res(plain), res(hard))


# ------------------------------------------------------------------------------------------------ the sampler


def test_resample_reduces_to_latent_ddim(gen, latent_model, ae, x8):
    """scale 0, no hard consistency, no final optimisation: exactly decoded latent DDIM (η = 0)."""
    op = Inpainting(box_mask(8, 8, 0.5))
    zT = torch.randn(2, 2, 2, 2, generator=gen(8))
    S = linear_schedule()
    ours = run(latent_model, ae, op.A(x8), op, scale=0.0, hard_start=1.0, final_optimization=False, x_T=zT)
    ref = ae.decode(ddim(latent_model, zT, S, steps=12, progress=False))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_resample_shapes_determinism_callback(gen, latent_model, ae, x8):
    op = BlockAverage(2)
    y = op.A(x8)
    states = []
    a = run(latent_model, ae, y, op, generator=gen(9), callback=states.append)
    b = run(latent_model, ae, y, op, generator=gen(9))
    c = run(latent_model, ae, y, op, generator=gen(10))
    assert a.shape == IMG and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert len(states) == 12 and [s.i for s in states] == list(range(12))
    assert states[0].x.shape == (2, 2, 2, 2) and states[0].x0_hat.shape == IMG  # latent state, decoded x̂_0
    assert states[0].t == 11 * (1000 // 12) and states[-1].t == 0


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"scale": -0.1}, "scale"),
        ({"gamma": 0.0}, "gamma"),
        ({"steps": 0}, "steps"),
        ({"hard_start": -0.1}, "hard_start"),
        ({"latent_start": 1.5}, "latent_start"),
        ({"hard_every": 0}, "hard_every"),
        ({"travel": -1}, "travel"),
        ({"latent_iters": 0}, "latent_iters"),
        ({"tol": -1.0}, "tol"),
        ({"x_T": (2, 2, 2)}, "x_T"),
    ],
)
def test_resample_validation(latent_model, ae, x8, kw, match):
    op = BlockAverage(2)
    with pytest.raises(ValueError, match=match):
        run(latent_model, ae, op.A(x8), op, **kw)


def test_resample_shape_mismatch(latent_model, ae, x8):
    op = BlockAverage(2)
    with pytest.raises(ValueError, match="y must have the shape"):
        run(latent_model, ae, op.A(x8), op, x_T=(2, 2, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        resample_moments(torch.zeros(2, 2), torch.zeros(2, 3), 0.5, 1.0)
    with pytest.raises(ValueError, match="s must be > 0"):
        resample_moments(torch.zeros(2, 2), torch.zeros(2, 2), 0.5, 0.0)
    with pytest.raises(ValueError, match="gamma"):
        resample_variance(-1.0, 0.5, 0.6)


# ------------------------------------------------------------------------------------------------ shipped weights


@pytest.mark.skipif("fmnist_autoencoder" not in diffu.pretrained.available(), reason="fmnist_autoencoder not shipped")
def test_shipped_autoencoder_reconstructs():
    from diffu.data import fashion_mnist
    from diffu.metrics import psnr

    a = diffu.pretrained.load("fmnist_autoencoder")
    x = fashion_mnist("test", n=500)[0]
    with torch.no_grad():
        z = a.encode(x)
        rec = a.decode(z).clamp(-1, 1)
    assert psnr(rec, x).mean().item() > 24.0
    assert 0.8 < z.std().item() < 1.2  # scale_factor was tracked on training batches of the same distribution


@pytest.mark.skipif(not {"fmnist_autoencoder", "fmnist_latent_dit"} <= set(diffu.pretrained.available()),
                    reason="latent diffusion weights not shipped")  # fmt: skip
def test_shipped_resample_beats_latent_dps_on_inpainting(gen):
    from diffu.data import fashion_mnist
    from diffu.inverse.operators import Gaussian
    from diffu.metrics import psnr

    a, m = diffu.pretrained.load("fmnist_autoencoder"), diffu.pretrained.load("fmnist_latent_dit")
    x = fashion_mnist("test", n=4)[0]
    op = Inpainting(box_mask(28, 28, 0.5))
    y = Gaussian(0.05)(op.A(x), generator=gen(0))
    # PSNR margin hard − soft on these 4 images, generator seeds 1…7: 4.2, 2.2, 4.4, 3.7, 4.9, 2.2, 2.1 dB with 25
    # steps; 50 steps cost twice as much and were less clear (1.5, −1.0, 3.6, 3.4, 3.0 dB for seeds 1…5)
    kw = {"steps": 25, "latent_iters": 100, "pixel_iters": 300, "tol": 0.05, "progress": False}
    hard = resample(m, a, y, op, linear_schedule(), generator=gen(1), **kw)
    soft = resample(m, a, y, op, linear_schedule(), generator=gen(1), hard_start=1.0, final_optimization=False, **kw)
    assert psnr(hard.clamp(-1, 1), x).mean() > psnr(soft.clamp(-1, 1), x).mean()


def test_resample_and_its_parts_check_their_arguments(latent_model, ae, x8):
    op = BlockAverage(2)
    y = op.A(x8)
    y_nan = y.clone()
    y_nan[0, 0, 1, 1] = float("nan")
    z0 = torch.zeros(2, 2)
    cases = [
        (lambda: run(latent_model, ae, y_nan, op), ValueError, "y must be finite, got 1 NaN"),
        (lambda: run(latent_model, ae, y.long(), op), ValueError, "y must be a floating-point tensor"),
        (lambda: run(latent_model, ae, y, op, scale=float("nan")), ValueError, "scale must be a finite number >= 0"),
        (lambda: run(latent_model, ae, y, op, pixel_lr=0.0), ValueError, "pixel_lr must be a finite number > 0"),
        (lambda: run(latent_model, ae, y, op, hard_start="0.5"), TypeError, "hard_start must be a finite number"),
        (lambda: run(latent_model, ae, y, op, final_optimization=1), TypeError, "final_optimization must be True"),
        (lambda: run(latent_model, object(), y, op), TypeError, "autoencoder must have callable encode and decode"),
        (lambda: run(latent_model, ae, y, "op"), TypeError, "op must be a forward model with a callable A"),
        (lambda: resample(latent_model, ae, y, op, None), TypeError, "schedule must be a diffu.schedules.Schedule"),
        (lambda: pixel_optimization(y, op, x8, iters=0), ValueError, "iters must be an integer >= 1, got 0"),
        (lambda: pixel_optimization(y, op, x8, lr=float("inf")), ValueError, "lr must be a finite number > 0"),
        (lambda: pixel_optimization(y_nan, op, x8), ValueError, "y must be finite"),
        (lambda: pixel_optimization(y, op, x8[..., :4, :4]), ValueError, r"y must have the shape of op.A\(x_init\)"),
        (lambda: latent_optimization(y, op, "decode", z0), TypeError, "decode must be callable"),
        (lambda: latent_optimization(y, op, ae.decode, z0.long()), ValueError, "z_init must be a floating-point"),
        (lambda: latent_optimization(y, op, ae.decode, ae.encode(x8), tol=-1.0), ValueError, "tol must be a finite"),
        (lambda: resample_variance(40.0, 1.0, 0.5), ValueError, r"alpha_bar_t must be a finite number in \(0, 1\)"),
        (lambda: resample_variance(40.0, 0.5, 0.0), ValueError, r"alpha_bar_prev must be a finite number in \(0, 1\]"),
        (lambda: resample_variance(float("inf"), 0.5, 0.6), ValueError, "gamma must be a finite number > 0"),
        (lambda: resample_moments(z0, z0, 0.5, float("inf")), ValueError, "s must be > 0 and finite"),
        (lambda: resample_moments(z0, z0, torch.full((3,), 0.5), 1.0), ValueError, "alpha_bar must broadcast"),
        (lambda: resample_moments(z0.long(), z0, 0.5, 1.0), ValueError, "z0 must be a floating-point"),
        (lambda: stochastic_resample(z0, z0, 0.5, 1.0, generator=3), TypeError, "generator must be a torch"),
    ]  # fmt: skip
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
