import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from diffu.schedules import (
    Schedule,
    cosine_schedule,
    linear_schedule,
    make_schedule,
    scaled_linear_schedule,
    sigmoid_schedule,
)

ORACLE = {
    "linear": "linear",
    "cosine": "squaredcos_cap_v2",
    "scaled_linear": "scaled_linear",
    "sigmoid": "sigmoid",
}


@pytest.mark.parametrize("name", sorted(ORACLE))
def test_schedule_matches_diffusers(name):
    ours = make_schedule(name, 1000)
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=ORACLE[name])
    if name == "scaled_linear":  # diffusers' scaled_linear uses its own beta range arguments
        ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    np.testing.assert_allclose(ours.betas.numpy(), ref.betas.double().numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(ours.alpha_bar.numpy(), ref.alphas_cumprod.double().numpy(), rtol=1e-5, atol=1e-8)


def test_linear_endpoints_and_float64():
    s = linear_schedule()
    assert s.T == 1000 and s.betas.dtype == torch.float64
    assert float(s.betas[0]) == pytest.approx(1e-4) and float(s.betas[-1]) == pytest.approx(0.02)
    assert float(s.alpha_bar[-1]) < 1e-4  # x_T is essentially pure noise


def test_cosine_clipped_at_0999():
    s = cosine_schedule(1000)
    assert float(s.betas.max()) == pytest.approx(0.999)
    assert bool((s.alpha_bar[1:] < s.alpha_bar[:-1]).all())


def test_sigmoid_and_scaled_monotone():
    for s in (sigmoid_schedule(), scaled_linear_schedule()):
        assert bool((s.betas[1:] >= s.betas[:-1]).all())


@pytest.mark.parametrize("T", [0, -3, 2.5, True])
def test_bad_T(T):
    with pytest.raises(ValueError, match="T must be"):
        linear_schedule(T)


@pytest.mark.parametrize("betas", [[0.1, 1.0], [0.0, 0.1], [-0.1], [[0.1]], []])
def test_bad_betas(betas):
    with pytest.raises(ValueError, match="betas"):
        Schedule(torch.tensor(betas, dtype=torch.float64))


def test_bad_constructor_args():
    with pytest.raises(ValueError, match="beta_start"):
        linear_schedule(10, beta_start=0.0)
    with pytest.raises(ValueError, match="s must"):
        cosine_schedule(10, s=-1)
    with pytest.raises(ValueError, match="max_beta"):
        cosine_schedule(10, max_beta=1.0)
    with pytest.raises(ValueError, match="name must be"):
        make_schedule("quadratic")


def test_q_sample_matches_add_noise():
    s = linear_schedule()
    ref = DDPMScheduler(num_train_timesteps=1000)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(8, 1, 6, 6, generator=g), torch.randn(8, 1, 6, 6, generator=g)
    t = torch.tensor([0, 1, 10, 100, 500, 998, 999, 250])
    torch.testing.assert_close(s.q_sample(x0, t, noise), ref.add_noise(x0, noise, t), atol=1e-5, rtol=1e-5)


def test_q_sample_statistics():
    s = cosine_schedule()
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((20000, 1), 0.5)
    xt = s.q_sample(x0, 300, torch.randn(20000, 1, generator=g))
    ab = float(s.alpha_bar[300])
    assert float(xt.mean()) == pytest.approx(0.5 * ab**0.5, abs=0.02)
    assert float(xt.var()) == pytest.approx(1 - ab, rel=0.03)


def test_t_out_of_range_and_shapes():
    s = linear_schedule(100)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"t must be in \[0, 99\]"):
        s.q_sample(x, torch.tensor([0, 100]), x)
    with pytest.raises(ValueError, match=r"t must be in"):
        s.q_sample(x, -1, x)
    with pytest.raises(ValueError, match="same shape"):
        s.q_sample(x, 1, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="integer"):
        s.q_sample(x, torch.tensor([0.5, 1.0]), x)


def test_posterior_matches_bayes_in_1d():
    """q(x_{t-1} | x_t, x_0) from the product of q(x_t | x_{t-1}) and q(x_{t-1} | x_0), done by hand."""
    s = linear_schedule(50)
    x0, xt = torch.tensor([[0.3]]), torch.tensor([[-0.8]])
    for t in (1, 7, 49):
        a, b, abp = float(s.alphas[t]), float(s.betas[t]), float(s.alpha_bar[t - 1])
        prec = a / b + 1 / (1 - abp)
        mean_ref = (a**0.5 * float(xt) / b + abp**0.5 * float(x0) / (1 - abp)) / prec
        mean, var, logvar = s.q_posterior(x0.double(), xt.double(), t)
        assert float(mean) == pytest.approx(mean_ref, rel=1e-10)
        assert float(var) == pytest.approx(1 / prec, rel=1e-10)
        assert float(logvar) == pytest.approx(np.log(1 / prec), rel=1e-10)
    _, var0, logvar0 = s.q_posterior(x0.double(), xt.double(), 0)
    assert float(var0) == 0.0 and float(logvar0) == pytest.approx(float(s.posterior_log_variance_clipped[1]))


@pytest.mark.parametrize("pred", ["eps", "x0", "v", "score"])
def test_conversions_roundtrip(pred):
    s = cosine_schedule(200)
    g = torch.Generator().manual_seed(2)
    x0, eps = (
        torch.randn(5, 3, generator=g, dtype=torch.float64),
        torch.randn(5, 3, generator=g, dtype=torch.float64),
    )
    t = torch.tensor([0, 10, 50, 150, 199])
    xt = s.q_sample(x0, t, eps)
    out = s.from_eps(eps, xt, t, pred)
    torch.testing.assert_close(s.to_eps(out, xt, t, pred), eps, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(s.eps_to_x0(eps, xt, t), x0, rtol=1e-8, atol=1e-8)


def test_v_and_score_definitions():
    s = linear_schedule(100)
    x0, eps = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    t = torch.tensor([3, 30, 60, 99])
    xt = s.q_sample(x0, t, eps)
    ab = s.alpha_bar[t][:, None]
    torch.testing.assert_close(s.eps_to_v(eps, xt, t), ab.sqrt() * eps - (1 - ab).sqrt() * x0)
    torch.testing.assert_close(s.eps_to_score(eps, xt, t), -eps / (1 - ab).sqrt())
    with pytest.raises(ValueError, match="prediction must be"):
        s.to_eps(eps, xt, t, "velocity!")
    with pytest.raises(ValueError, match="prediction must be"):
        s.from_eps(eps, xt, t, "nope")


def test_score_is_gaussian_score():
    """For x0 ~ N(0, 1) the VP marginal is N(0, 1) and its score is -x; eps_to_score must agree with E[ε|x_t]."""
    s = linear_schedule(100)
    xt = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    t = 40
    ab = float(s.alpha_bar[t])
    eps_mmse = (1 - ab) ** 0.5 * xt  # E[ε | x_t] for a standard normal x0
    torch.testing.assert_close(s.eps_to_score(eps_mmse, xt, t), -xt)


def test_respace_keeps_alpha_bar():
    s = linear_schedule()
    ts = torch.arange(0, 1000, 20)
    r = s.respace(ts)
    torch.testing.assert_close(r.alpha_bar, s.alpha_bar[ts])
    with pytest.raises(ValueError, match="strictly increasing"):
        s.respace([5, 3])
    assert "T=50" in repr(r) and len(r) == 50 and float(s.snr(0)) > float(s.snr(999))


def test_alpha_bar_at_the_clean_end_and_previous_step():
    """ᾱ_{-1} = 1 (the clean end before t = 0), not Python's alpha_bar[-1] (the noisiest step)."""
    s = linear_schedule()
    assert float(s.alpha_bar_at(-1)) == 1.0 and float(s.alpha_bar[-1]) < 1e-4
    assert float(s.alpha_bar_at(0)) == float(s.alpha_bar[0]) and float(s.alpha_bar_at(999)) == float(s.alpha_bar[999])
    k = torch.arange(1000)
    # ᾱ of the previous step: alpha_bar_at(k - 1) is alpha_bar[k - 1] for k >= 1 and 1 for k = 0
    assert torch.equal(s.alpha_bar_at(k - 1), s.alpha_bar_prev)
    assert float(s.alpha_bar_at(k - 1)[0]) == 1.0 and torch.equal(s.alpha_bar_at(k - 1)[1:], s.alpha_bar[:-1])
    t = torch.tensor([[-1, 5], [10, 999]])
    out = s.alpha_bar_at(t)
    assert out.shape == (2, 2) and out.dtype == torch.float64 and s.alpha_bar_at(3).shape == ()
    x = torch.zeros(2, dtype=torch.float32)
    cast = s.alpha_bar_at(t, x)  # dtype and device follow ``like``
    assert cast.dtype == torch.float32 and torch.equal(cast, out.float())
    assert torch.equal(s.alpha_bar_at(torch.tensor(7.0)), s.alpha_bar[7])  # integral floats are accepted
    for bad in (-2, 1000, torch.tensor([0, -3])):
        with pytest.raises(ValueError, match=r"t must be in \[-1, 999\]"):
            s.alpha_bar_at(bad)
    with pytest.raises(ValueError, match="integer timesteps"):
        s.alpha_bar_at(2.5)


# ----------------------------------------------------------------------------------------------------------------
# Bad input (CONTRIBUTING.md, convention 8): each error names the argument
# ----------------------------------------------------------------------------------------------------------------


def test_regression_q_sample_integer_x0():
    """q_sample(int64 x0, …) returned exactly the noise: ᾱ was cast to x0's integer dtype, i.e. to 0."""
    s = linear_schedule(100)
    noise = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.int64, torch.uint8):
        with pytest.raises(ValueError, match="x0 must be a floating-point tensor.*from_uint8"):
            s.q_sample(torch.ones(2, 3, dtype=dtype), 10, noise)
    with pytest.raises(ValueError, match="noise must be a floating-point tensor"):
        s.q_sample(noise, 10, noise.long())
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        s.at("alpha_bar", 10, torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="like must be a floating-point tensor"):
        s.alpha_bar_at(10, torch.ones(2, dtype=torch.int64))
    for conv in (s.eps_to_x0, s.x0_to_eps, s.v_to_eps, s.eps_to_v, s.eps_to_score, s.score_to_eps):
        with pytest.raises(ValueError, match="x_t must be a floating-point tensor"):
            conv(noise, noise.long(), 10)


def test_regression_timestep_batch_mismatch():
    """t of another batch size than x used to fail inside torch's broadcasting (or, for a 2-D t, be flattened)."""
    s = linear_schedule(100)
    x = torch.zeros(2, 3)
    for t in (torch.tensor([1, 2, 3]), torch.tensor([[1, 2]])):
        with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(2,\) \(one per sample"):
            s.q_sample(x, t, x)
        with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(2,\)"):
            s.eps_to_x0(x, x, t)
        with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(2,\)"):
            s.to_eps(x, x, t)
    # a scalar, a one-element tensor and (N,) are the accepted forms, and agree
    a = s.q_sample(x + 1, 5, x)
    assert torch.equal(a, s.q_sample(x + 1, torch.tensor([5]), x))
    assert torch.equal(a, s.q_sample(x + 1, torch.tensor([5, 5]), x))


def test_timesteps_of_the_wrong_kind():
    s = linear_schedule(100)
    x = torch.zeros(2, 3)
    for bad in ("1", None, True, [1, "a"]):
        with pytest.raises(TypeError, match="t must be an integer timestep or a tensor of them"):
            s.q_sample(x, bad, x)
    for bad in (float("nan"), float("inf"), torch.tensor([1.0, float("nan")])):
        with pytest.raises(ValueError, match="t must hold integer timesteps"):
            s.check_t(bad)
    with pytest.raises(TypeError, match="t must hold integer timesteps, got a torch.bool tensor"):
        s.check_t(torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"k must be one timestep, got shape \(2,\)"):
        s.check_t([1, 2], "k", scalar=True)
    assert int(s.check_t(torch.tensor([7]), scalar=True)) == 7
    with pytest.raises(TypeError, match="timesteps must be an integer timestep"):
        s.respace("abc")
    for bad in ("a", True, None):
        with pytest.raises(TypeError, match="t must be a real number or tensor"):
            s.interp_alpha_bar(bad)
    with pytest.raises(TypeError, match="t must be an integer timestep"):
        s.alpha_bar_at("a")


def test_schedule_constructor_bad_input():
    for bad in ("abc", None, [0.1, "a"]):
        with pytest.raises(TypeError, match="betas must be a 1-D tensor of numbers"):
            Schedule(bad)
    with pytest.raises(TypeError, match="betas must be a 1-D tensor of real numbers"):
        Schedule(torch.tensor([True]))
    with pytest.raises(ValueError, match="betas must lie in the open interval"):
        Schedule(torch.tensor([0.1, float("nan")]))
    with pytest.raises(TypeError, match="name must be a string"):
        Schedule(torch.tensor([0.1]), 3)
    for fn in (linear_schedule, scaled_linear_schedule, sigmoid_schedule):
        for bad in (float("nan"), float("inf"), 1.0, -0.1):
            with pytest.raises(ValueError, match=r"beta_start must be a finite number in \(0, 1\)"):
                fn(10, bad)
            with pytest.raises(ValueError, match=r"beta_end must be a finite number in \(0, 1\)"):
                fn(10, 0.01, bad)
        with pytest.raises(TypeError, match="beta_start must be a finite number"):
            fn(10, "0.1")
        with pytest.raises(ValueError, match="T must be an integer >= 1"):
            fn(1e3)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="s must be a finite number >= 0"):
            cosine_schedule(10, s=bad)
        with pytest.raises(ValueError, match="max_beta must be a finite number in"):
            cosine_schedule(10, max_beta=bad)
    with pytest.raises(ValueError, match="name must be one of"):
        make_schedule(3)


def test_table_and_prediction_names():
    s = linear_schedule(10)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="name must be one of"):
        s.at("alpha_bars", 3, x)
    with pytest.raises(ValueError, match="prediction must be one of"):
        s.to_eps(x, x, 3, "velocity")
    with pytest.raises(ValueError, match="prediction must be one of"):
        s.from_eps(x, x, 3, "epsilon")
    with pytest.raises(ValueError, match="eps and x_t must have the same shape"):
        s.eps_to_v(x[:1], x, 3)


def test_nan_propagates_through_the_forward_process():
    """Documented (module docstring): NaN in the data propagates entry by entry, never to a plausible number."""
    s = linear_schedule(10)
    x = torch.zeros(2, 3)
    x[0, 1] = float("nan")
    out = s.q_sample(x, 3, torch.zeros(2, 3))
    assert torch.isnan(out[0, 1]) and int(torch.isnan(out).sum()) == 1


def test_regression_alpha_bar_underflow_is_refused():
    """linear_schedule(1100, 0.5, 0.5) was built with ᾱ_{T-1} = 0 (float64 underflow), and eps_to_x0 there
    returned NaN; betas below ~1e-16 gave ᾱ_0 = 1 and a 0/0 posterior variance."""
    with pytest.raises(ValueError, match="betas make ᾱ underflow to 0 in float64 from step t = 1074 of 1100"):
        linear_schedule(1100, 0.5, 0.5)
    with pytest.raises(ValueError, match="betas make ᾱ underflow"):
        sigmoid_schedule(2000, 0.5, 0.9)
    with pytest.raises(ValueError, match="betas must be large enough that 1 - β < 1 in float64"):
        Schedule(torch.tensor([1e-17, 0.1], dtype=torch.float64))
    s = linear_schedule(1000, 0.5, 0.5)  # ᾱ_{T-1} = 2^-1000 ≈ 9e-302: tiny but still a number
    x = torch.ones(1, 2, dtype=torch.float64)
    assert float(s.alpha_bar[-1]) > 0 and bool(torch.isfinite(s.eps_to_x0(x, x, 999)).all())
