"""Cross-modality translation (diffu.medical.translation): DDIB against the closed-form bridge of two Gaussian
priors (first-order convergence in the step count, round trips, cycle consistency), the paired ε loss with a
ConcatUNet, and the intensity / tissue mapping baselines (exact and closed-form cases)."""

import pytest
import torch

from diffu.medical.translation import IntensityMap, TissueMap, ddib, fit_intensity_map, fit_tissue_map, paired_loss
from diffu.nn.concat import ConcatUNet
from diffu.schedules import cosine_schedule, linear_schedule
from diffu.train import diffusion_loss

S = linear_schedule()


class GaussianEps(torch.nn.Module):
    """The exact ε of data with independent pixels ``x_0 ~ N(μ, s²)`` (μ, s broadcast over the image):
    ``E[x_0 | x_t] = μ + √ᾱ s² / (ᾱ s² + 1 − ᾱ) (x_t − √ᾱ μ)`` and ``ε̂ = (x_t − √ᾱ E[x_0 | x_t]) / √(1 − ᾱ)``."""

    def __init__(self, mu, s, schedule):
        super().__init__()
        self.mu, self.s, self.ab = mu, s, schedule.alpha_bar

    def forward(self, x, t):
        ab = self.ab.to(x)[t.long()].reshape(-1, *[1] * (x.ndim - 1))
        mu, s = self.mu.to(x), self.s.to(x)
        mean = mu + ab.sqrt() * s**2 / (ab * s**2 + 1 - ab) * (x - ab.sqrt() * mu)
        return (x - ab.sqrt() * mean) / (1 - ab).sqrt()


def _gaussians(seed=0):
    """Two per-pixel Gaussian "modalities" A and B on 8×8 images, source images from A, and the exact bridge: the
    probability-flow ODE of a 1-D Gaussian keeps the standardised value (x − m_t)/σ_t, so the continuous DDIB map
    is x_b = μ_b + s_b (x_a − μ_a) / s_a (a contrast inversion here: μ_b = −μ_a / 2)."""
    g = torch.Generator().manual_seed(seed)
    mu_a = torch.rand(1, 1, 8, 8, generator=g, dtype=torch.float64) * 0.8 - 0.4
    s_a = torch.rand(1, 1, 8, 8, generator=g, dtype=torch.float64) * 0.3 + 0.1
    mu_b, s_b = -mu_a / 2, 0.3 - s_a / 2
    x_a = mu_a + s_a * torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    return (mu_a, s_a), (mu_b, s_b), x_a, mu_b + s_b / s_a * (x_a - mu_a)


def test_ddib_converges_to_the_exact_gaussian_bridge_at_first_order():
    (mu_a, s_a), (mu_b, s_b), x_a, exact = _gaussians()
    a, b = GaussianEps(mu_a, s_a, S), GaussianEps(mu_b, s_b, S)
    err = [(ddib(a, b, x_a, S, steps=k, progress=False) - exact).abs().max().item() for k in (50, 100, 200)]
    # DDIM is the Euler scheme of the ODE: doubling the steps halves the error (measured 0.129, 0.068, 0.035)
    assert err[1] < 0.6 * err[0] and err[2] < 0.6 * err[1]
    assert err[2] < 0.05


def test_ddib_round_trip_and_cycle_consistency_improve_with_steps():
    (mu_a, s_a), (mu_b, s_b), x_a, _ = _gaussians(1)
    a, b = GaussianEps(mu_a, s_a, S), GaussianEps(mu_b, s_b, S)
    same = [(ddib(a, a, x_a, S, steps=k, progress=False) - x_a).abs().max().item() for k in (50, 200)]
    cyc = [(ddib(b, a, ddib(a, b, x_a, S, steps=k, progress=False), S, steps=k, progress=False) - x_a).abs().max()
           .item() for k in (50, 200)]  # fmt: skip
    # 4× the steps, first order: ~4× smaller (measured ratios 0.27 and 0.29: 0.101 → 0.027, 0.421 → 0.124)
    assert same[1] < 0.35 * same[0] and cyc[1] < 0.35 * cyc[0]


def test_ddib_with_another_schedule_for_model_b():
    """Model B trained on a cosine schedule: the latent is still shared, the limit the same bridge."""
    (mu_a, s_a), (mu_b, s_b), x_a, exact = _gaussians(2)
    cos = cosine_schedule()
    a, b = GaussianEps(mu_a, s_a, S), GaussianEps(mu_b, s_b, cos)
    err = [(ddib(a, b, x_a, S, schedule_b=cos, steps=k, progress=False) - exact).abs().max().item() for k in (50, 200)]
    assert err[1] < 0.35 * err[0]  # 4× the steps, first order: ~4× smaller (measured 0.130, 0.032)


def test_ddib_callback_determinism_and_dtype(dummy):
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    seen = []
    out = ddib(dummy, dummy, x, S, steps=5, progress=False, callback=seen.append)
    assert [s.i for s in seen] == list(range(10)) and [s.t for s in seen[:5]] == [0, 200, 400, 600, 800]
    assert torch.equal(out, ddib(dummy, dummy, x, S, steps=5, progress=False))  # deterministic: no generator
    assert out.dtype == torch.float32 and out.shape == x.shape
    out64 = ddib(dummy.double(), dummy.double(), x.double(), S, steps=5, progress=False)
    assert out64.dtype == torch.float64 and (out64 - out).abs().max() < 1e-5  # float32 rounding (measured 1.6e-6)


def test_ddib_errors(dummy):
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(TypeError, match="model_a must be callable"):
        ddib(None, dummy, x, S, progress=False)
    with pytest.raises(TypeError, match="model_b must be callable"):
        ddib(dummy, 1, x, S, progress=False)
    with pytest.raises(ValueError, match="x_a must be a floating-point tensor"):
        ddib(dummy, dummy, x.long(), S, progress=False)
    with pytest.raises(ValueError, match="x_a must be finite"):
        ddib(dummy, dummy, x.masked_fill(x > 1, float("nan")), S, progress=False)
    with pytest.raises(ValueError, match="steps must be an integer in"):
        ddib(dummy, dummy, x, S, steps=0, progress=False)
    with pytest.raises(TypeError, match="schedule_b must be"):
        ddib(dummy, dummy, x, S, schedule_b="cosine", progress=False)
    with pytest.raises(TypeError, match="clip_x0 must be"):
        ddib(dummy, dummy, x, S, clip_x0=0, progress=False)
    with pytest.raises(TypeError, match="model_kwargs_b must be"):
        ddib(dummy, dummy, x, S, model_kwargs_b=[1], progress=False)


# ----------------------------------------------------------------------------------------------------------------
# Paired
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def concat_net():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = ConcatUNet(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8)
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.1)
    return m


def test_paired_loss_is_the_conditional_eps_loss(concat_net, gen):
    x, cond = torch.randn(3, 1, 8, 8, generator=gen(0)), torch.randn(3, 1, 8, 8, generator=gen(1))
    loss = paired_loss(concat_net, S, x, cond, gen(2))
    want = diffusion_loss(concat_net, S, x, gen(2), model_kwargs={"cond": cond})
    assert loss.ndim == 0 and torch.equal(loss, want)
    assert torch.equal(loss, paired_loss(concat_net, S, x, cond, gen(2)))  # deterministic per generator
    assert not torch.equal(loss, paired_loss(concat_net, S, x, cond.flip(0), gen(2)))  # the condition matters
    loss.backward()
    assert concat_net.unet.conv_in.weight.grad.abs().sum() > 0
    concat_net.zero_grad()
    loss64 = paired_loss(concat_net.double(), S, x.double(), cond.double(), gen(2))
    concat_net.float()
    assert loss64.dtype == torch.float64 and torch.isfinite(loss64)


def test_paired_loss_errors(concat_net):
    x = torch.randn(3, 1, 8, 8)
    with pytest.raises(ValueError, match="cond must be"):
        paired_loss(concat_net, S, x, torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="cond must be"):
        paired_loss(concat_net, S, x, torch.randn(3, 1, 4, 4))
    with pytest.raises(ValueError, match="cond must be a float image batch"):
        paired_loss(concat_net, S, x, torch.ones(3, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="x must be a float image batch"):
        paired_loss(concat_net, S, x[0], x)
    with pytest.raises(TypeError, match="model must be callable"):
        paired_loss(None, S, x, x)


# ----------------------------------------------------------------------------------------------------------------
# Intensity and tissue mappings
# ----------------------------------------------------------------------------------------------------------------


def test_intensity_map_reproduces_a_linear_relation_exactly(gen):
    t1 = torch.rand(4, 1, 8, 8, generator=gen(0), dtype=torch.float64) * 2 - 1
    t2 = 0.5 * t1 - 0.2
    f = fit_intensity_map(t1, t2, bins=16)
    new = torch.rand(2, 1, 5, 5, generator=gen(1), dtype=torch.float64) * 1.8 - 0.9
    inside = (new >= f.knots_x[0]) & (new <= f.knots_x[-1])
    torch.testing.assert_close(f(new)[inside], (0.5 * new - 0.2)[inside], rtol=0, atol=1e-12)
    assert f(torch.full((1, 1, 2, 2), -5.0, dtype=torch.float64)).eq(f.knots_y[0]).all()  # constant beyond the ends
    assert f(new.float()).dtype == torch.float32


def test_intensity_map_knots_are_bin_means_and_empty_bins_are_skipped():
    t1 = torch.tensor([-0.9, -0.7, 0.6, 0.8], dtype=torch.float64).reshape(1, 1, 2, 2)
    t2 = torch.tensor([1.0, 0.0, -0.5, -0.1], dtype=torch.float64).reshape(1, 1, 2, 2)
    f = fit_intensity_map(t1, t2, bins=4)  # bins [-1, -.5) [-.5, 0) [0, .5) [.5, 1]: two empty
    torch.testing.assert_close(f.knots_x, torch.tensor([-0.8, 0.7], dtype=torch.float64))
    torch.testing.assert_close(f.knots_y, torch.tensor([0.5, -0.3], dtype=torch.float64))
    mid = f(torch.tensor([[[[-0.05]]]], dtype=torch.float64))
    assert mid.item() == pytest.approx(0.5 + (-0.3 - 0.5) * 0.75 / 1.5)  # linear between the two knots


def test_intensity_map_is_the_binned_conditional_mean(gen):
    """A noisy non-linear relation: the fitted map approaches E[T2 | T1] = sin(2 T1). Bins of width 1/16 hold
    ~1900 of the 61 440 pixels: a bin mean's noise is 0.1/√1900 = 0.0023 (4σ: 0.009), and linear interpolation of
    a curve with |f''| <= 4 errs by at most h²|f''|/8 = 0.002 (measured max error 0.0067)."""
    t1 = torch.rand(60, 1, 32, 32, generator=gen(0), dtype=torch.float64) * 2 - 1
    t2 = torch.sin(2 * t1) + 0.1 * torch.randn(t1.shape, generator=gen(1), dtype=torch.float64)
    f = fit_intensity_map(t1, t2, bins=32)
    v = torch.linspace(-0.9, 0.9, 50, dtype=torch.float64)
    assert (f(v) - torch.sin(2 * v)).abs().max() < 0.011


def test_intensity_map_errors(gen):
    t1 = torch.rand(2, 1, 4, 4, generator=gen(0))
    with pytest.raises(ValueError, match="t2 must have t1's shape"):
        fit_intensity_map(t1, t1[:1])
    with pytest.raises(ValueError, match="one-channel images"):
        fit_intensity_map(t1.repeat(1, 2, 1, 1), t1.repeat(1, 2, 1, 1))
    with pytest.raises(ValueError, match="bins must be"):
        fit_intensity_map(t1, t1, bins=0)
    with pytest.raises(ValueError, match="t1 must be finite"):
        fit_intensity_map(t1.masked_fill(t1 > 0.5, float("nan")), t1)
    with pytest.raises(ValueError, match="knots_x must be strictly increasing"):
        IntensityMap(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="t1 must be a floating-point tensor"):
        fit_intensity_map(t1, t1)(torch.ones(2, dtype=torch.long))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_intensity_map_refuses_non_finite_input(gen, bad):
    """clamp carries NaN through: a NaN (or infinite) T1 pixel raises naming t1 instead of a NaN in the result."""
    f = IntensityMap(torch.tensor([-1.0, 1.0]), torch.tensor([0.0, 1.0]))
    t1 = torch.rand(2, 1, 4, 4, generator=gen(0)) * 2 - 1
    torch.testing.assert_close(f(t1), (t1 + 1) / 2)
    with pytest.raises(ValueError, match="t1 must be finite, got 1 NaN or infinite"):
        f(t1.index_put((torch.tensor([1]), torch.tensor([0]), torch.tensor([2]), torch.tensor([3])), torch.tensor(bad)))


def test_tissue_map_labels_give_per_tissue_means():
    lab = torch.tensor([[[0, 1], [2, 1]]])
    t2 = torch.tensor([[[[-1.0, 0.2], [0.5, 0.4]]]])
    f = fit_tissue_map(lab, t2)
    torch.testing.assert_close(f.values, torch.tensor([-1.0, 0.3, 0.5], dtype=torch.float64))
    torch.testing.assert_close(f(lab), torch.tensor([[[[-1.0, 0.3], [0.5, 0.3]]]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"tissue labels \[1\] never occur"):
        fit_tissue_map(torch.tensor([[[0, 2]]]), torch.zeros(1, 1, 1, 2))
    with pytest.raises(ValueError, match="tissue labels must be in"):
        f(torch.tensor([[[0, 3]]]))


def test_tissue_map_fractions_recover_a_linear_contrast_exactly(gen):
    fr = torch.rand(3, 4, 6, 6, generator=gen(0), dtype=torch.float64)
    fr = fr / fr.sum(1, keepdim=True)
    w = torch.tensor([-1.0, 1.0, 0.1, -0.4], dtype=torch.float64)
    t2 = torch.einsum("nkhw,k->nhw", fr, w)[:, None]
    f = fit_tissue_map(fr, t2)
    torch.testing.assert_close(f.values, w, rtol=0, atol=1e-10)
    torch.testing.assert_close(f(fr), t2, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="tissue fractions must have shape"):
        f(fr[:, :3])
    with pytest.raises(ValueError, match="t2 must have shape"):
        fit_tissue_map(fr, t2[:2])
    with pytest.raises(ValueError, match="tissue must be integer labels"):
        fit_tissue_map(fr[:, 0].bool(), t2)
    with pytest.raises(ValueError, match="values must hold"):
        TissueMap(torch.zeros(0))
