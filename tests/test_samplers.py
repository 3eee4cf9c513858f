import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from diffu.samplers import (
    SamplerState,
    Trajectory,
    ddim,
    ddim_invert,
    ddim_step,
    ddim_timesteps,
    ddpm,
    ddpm_step,
)
from diffu.schedules import cosine_schedule, linear_schedule

TOL = dict(atol=1e-5, rtol=1e-5)


def _f64(ref):
    """Upcast a diffusers scheduler's float32 tables to float64, so the comparison tests the maths: in float32,
    1 - ᾱ_t near t = 0 loses ~4 significant digits in diffusers (differences up to 2e-4 at t = 1)."""
    for name in ("betas", "alphas", "alphas_cumprod"):
        setattr(ref, name, getattr(ref, name).double())
    if hasattr(ref, "final_alpha_cumprod"):
        ref.final_alpha_cumprod = torch.as_tensor(ref.final_alpha_cumprod).double()
    return ref


def _inputs(seed=0, shape=(4, 1, 8, 8), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=g, dtype=dtype) for _ in range(3))


@pytest.mark.parametrize("variance", ["fixedsmall", "fixedlarge"])
@pytest.mark.parametrize("t", [999, 500, 37, 1, 0])
def test_ddpm_step_matches_diffusers(variance, t):
    s = linear_schedule()
    kind = {"fixedsmall": "fixed_small", "fixedlarge": "fixed_large"}[variance]
    ref = _f64(DDPMScheduler(num_train_timesteps=1000, clip_sample=False, variance_type=kind))
    x, eps, z = _inputs(t, dtype=torch.float64)
    # diffusers draws its own noise: give it a seeded generator and replay the same draw for ours
    g = torch.Generator().manual_seed(123)
    expected = ref.step(eps, t, x, generator=g).prev_sample
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    ours, x0 = ddpm_step(s, x, t, eps, variance=variance, clip_x0=False, noise=z)
    torch.testing.assert_close(ours, expected, **TOL)
    torch.testing.assert_close(x0, ref.step(eps, t, x).pred_original_sample, **TOL)


def test_ddpm_step_clips_x0():
    s = linear_schedule()
    x, eps, z = _inputs()
    _, x0 = ddpm_step(s, 5 * x, 10, eps, noise=z)
    assert float(x0.abs().max()) <= 1.0
    with pytest.raises(ValueError, match="variance must be"):
        ddpm_step(s, x, 10, eps, variance="learned", noise=z)
    with pytest.raises(ValueError, match="noise is required"):
        ddpm_step(s, x, 10, eps)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 10, 50, 333, 1000])
def test_ddim_timesteps_match_diffusers(spacing, steps):
    ref = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    ref.set_timesteps(steps)
    assert ddim_timesteps(1000, steps, spacing).tolist() == ref.timesteps.tolist()


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_step_matches_diffusers(spacing, eta):
    s = linear_schedule()
    steps = 50
    ref = _f64(DDIMScheduler(num_train_timesteps=1000, clip_sample=False, timestep_spacing=spacing))
    ref.set_timesteps(steps)
    x, eps, _ = _inputs(1, dtype=torch.float64)
    for t in ref.timesteps[[0, 1, 25, -1]].tolist():
        t_prev = t - 1000 // steps  # diffusers' rule for the previous timestep
        g = torch.Generator().manual_seed(7)
        expected = ref.step(eps, t, x, eta=eta, generator=g).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        ours, _ = ddim_step(s, x, t, max(t_prev, -1), eps, eta=eta, noise=z)
        torch.testing.assert_close(ours, expected, **TOL)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_loop_matches_diffusers_loop(dummy, spacing):
    """Whole deterministic DDIM-20 runs agree with a diffusers loop around the same model."""
    s = linear_schedule()
    ref = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, timestep_spacing=spacing)
    ref.set_timesteps(20)
    x_T = _inputs(3)[0]
    x = x_T.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            x = ref.step(dummy(x, t.expand(len(x)).float()), t, x).prev_sample
    ours = ddim(dummy, x_T, s, steps=20, spacing=spacing, progress=False)
    torch.testing.assert_close(ours, x, **TOL)


def test_ddpm_loop_matches_diffusers_loop(dummy):
    s = linear_schedule(100, 1e-3, 0.05)
    ref = DDPMScheduler(num_train_timesteps=100, beta_start=1e-3, beta_end=0.05, clip_sample=False)
    ref.set_timesteps(100)
    x_T = _inputs(4)[0]
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    ours = ddpm(dummy, x_T, s, clip_x0=False, generator=g1, progress=False)
    x = x_T.clone()
    with torch.no_grad():
        for t in ref.timesteps:  # diffusers draws noise at each t > 0 with the generator, in the same order
            x = ref.step(dummy(x, t.expand(len(x)).float()), t, x, generator=g2).prev_sample
    torch.testing.assert_close(ours, x, **TOL)


def test_ddim_eta1_equals_ddpm_at_full_steps(dummy):
    """η = 1 with all T steps is exactly ancestral sampling with β̃_t (Song et al. 2021, §4.1)."""
    s = linear_schedule(50)
    x_T = _inputs(5)[0]
    a = ddim(dummy, x_T, s, steps=50, eta=1.0, generator=torch.Generator().manual_seed(3), progress=False)
    b = ddpm(dummy, x_T, s, clip_x0=False, generator=torch.Generator().manual_seed(3), progress=False)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_respaced_ddpm_equals_ddim_eta1(dummy):
    s = cosine_schedule(200)
    x_T = _inputs(6)[0]
    a = ddpm(dummy, x_T, s, steps=20, clip_x0=False, generator=torch.Generator().manual_seed(1), progress=False)
    b = ddim(dummy, x_T, s, steps=20, eta=1.0, generator=torch.Generator().manual_seed(1), progress=False)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler,kw", [(ddpm, {}), (ddim, {"eta": 0.7}), (ddim, {"eta": 0.0})])
def test_seeded_determinism_and_shape_input(dummy, sampler, kw):
    s = linear_schedule(100)
    a = sampler(dummy, (3, 1, 4, 4), s, generator=torch.Generator().manual_seed(0), progress=False, **kw)
    b = sampler(dummy, (3, 1, 4, 4), s, generator=torch.Generator().manual_seed(0), progress=False, **kw)
    c = sampler(dummy, (3, 1, 4, 4), s, generator=torch.Generator().manual_seed(1), progress=False, **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 1, 4, 4) and torch.isfinite(a).all()


@pytest.mark.parametrize("schedule", [linear_schedule(), cosine_schedule()])
def test_nan_free_over_whole_range(dummy, schedule):
    traj = Trajectory()
    x = ddpm(dummy, (2, 1, 4, 4), schedule, generator=torch.Generator().manual_seed(0), progress=False,
             callback=traj)  # fmt: skip
    assert len(traj) == 1000 and traj.ts[0] == 999 and traj.ts[-1] == 0
    assert all(torch.isfinite(v).all() for v in traj.xs + traj.x0s) and torch.isfinite(x).all()
    x = ddim(dummy, (2, 1, 4, 4), schedule, steps=1000, eta=1.0, generator=torch.Generator().manual_seed(0),
             progress=False)  # fmt: skip
    assert torch.isfinite(x).all()


def test_dtype_and_device_follow_input(dummy):
    s = linear_schedule(20)
    x_T = torch.randn(2, 3, dtype=torch.float64)
    assert ddim(dummy.double(), x_T, s, steps=5, progress=False).dtype == torch.float64
    assert ddpm(dummy.double(), x_T, s, generator=torch.Generator().manual_seed(0), progress=False).dtype == (
        torch.float64
    )


def test_callback_states(dummy):
    seen = []
    ddim(dummy, (1, 2), linear_schedule(100), steps=4, progress=False, callback=seen.append)
    assert [st.i for st in seen] == [0, 1, 2, 3] and [st.t for st in seen] == [75, 50, 25, 0]
    assert all(isinstance(st, SamplerState) for st in seen)


def test_ddim_inversion_roundtrip_exact_for_time_independent_model():
    """If ε_θ does not depend on (x, t), inversion is exact and the round trip returns the input."""

    class Const(torch.nn.Module):
        def forward(self, x, t):
            return torch.full_like(x, 0.3)

    s = linear_schedule()
    x0 = _inputs(8)[0].double()
    xT = ddim_invert(Const(), x0, s, steps=25, progress=False)
    torch.testing.assert_close(ddim(Const(), xT, s, steps=25, progress=False), x0)


def test_ddim_inversion_roundtrip_converges_first_order(dummy):
    """The ε(x_s) ≈ ε(x_t) approximation is a first-order error: 5× more steps → ~5× smaller round-trip error."""
    s = linear_schedule()
    x0 = 0.5 * _inputs(9)[0].double()
    model = dummy.double()
    err = {}
    for steps in (100, 500):
        xT = ddim_invert(model, x0, s, steps=steps, progress=False)
        err[steps] = float((ddim(model, xT, s, steps=steps, progress=False) - x0).abs().max())
    assert 4.0 < err[100] / err[500] < 6.5 and err[500] < 0.06


def test_bad_input(dummy):
    s = linear_schedule(100)
    for bad in (0, 101, -1, 2.5):
        with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 100\]"):
            ddim(dummy, (1, 2), s, steps=bad, progress=False)
    with pytest.raises(ValueError, match="steps must"):
        ddpm(dummy, (1, 2), s, steps=0, progress=False)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
            ddim(dummy, (1, 2), s, eta=bad, progress=False)
    with pytest.raises(ValueError, match="spacing must be"):
        ddim(dummy, (1, 2), s, spacing="quadratic", progress=False)
    with pytest.raises(ValueError, match="variance must be"):
        ddpm(dummy, (1, 2), s, variance="learned", progress=False)
    with pytest.raises(ValueError, match="x_T must be"):
        ddim(dummy, "noise", s, progress=False)
    with pytest.raises(ValueError, match="t_prev must be"):
        ddim_step(s, torch.zeros(1, 2), 10, 10, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="strictly decreasing"):
        ddim(dummy, (1, 2), s, timesteps=[10, 20], progress=False)
    with pytest.raises(ValueError, match="every"):
        Trajectory(every=0)


def test_explicit_timesteps(dummy):
    s = linear_schedule(100)
    x_T = torch.randn(2, 2, generator=torch.Generator().manual_seed(0))
    a = ddim(dummy, x_T, s, timesteps=ddim_timesteps(100, 10, "trailing").tolist(), progress=False)
    b = ddim(dummy, x_T, s, steps=10, spacing="trailing", progress=False)
    assert torch.equal(a, b)


@pytest.mark.gpu
def test_samplers_on_gpu(dummy):
    s = linear_schedule(50)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = ddpm(dummy.cuda(), (2, 1, 4, 4), s, generator=g, progress=False)
    assert x.device.type == "cuda" and torch.isfinite(x).all()


def test_model_eps_converts_other_parameterisations(dummy):
    """A v-predicting wrapper of the same network gives identical DDIM samples (CONTRIBUTING.md, convention 3)."""
    from diffu.samplers import model_eps

    s = linear_schedule(100)

    class AsV(torch.nn.Module):
        prediction = "v"

        def forward(self, x, t):
            return s.eps_to_v(dummy(x, t), x, t.long())

    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model_eps(AsV(), x, 40, s), dummy(x, torch.full((3,), 40.0)), atol=1e-5, rtol=1e-5)
    a = ddim(AsV(), x, s, steps=10, progress=False)
    torch.testing.assert_close(a, ddim(dummy, x, s, steps=10, progress=False), atol=1e-5, rtol=1e-5)


def test_learned_range_guidance_at_t0_follows_guided_diffusion():
    """At t = 0 no noise is added, but classifier guidance shifts the mean by Σ_0 (guided-diffusion's
    ``condition_mean``); with "learned_range" Σ_0 = exp(f log β_0 + (1 - f) log β̃_1), f = (v + 1)/2: the upper end
    is log β_0 itself (``np.log(self.betas)``), the lower end the clipped posterior log-variance (β̃_1 at t = 0)."""
    s = linear_schedule().respace(ddim_timesteps(1000, 10).flip(0))  # respaced: β_0 and β̃_1 far apart
    x, eps, g = _inputs(3, dtype=torch.float64)
    plain, _ = ddpm_step(s, x, 0, eps, clip_x0=False)
    for v in (-1.0, 0.0, 1.0):
        vv = torch.full_like(x, v)
        shifted, _ = ddpm_step(s, x, 0, eps, variance="learned_range", v=vv, guidance=g, clip_x0=False)
        f = (v + 1) / 2
        var = torch.exp(f * torch.log(s.betas[0]) + (1 - f) * torch.log(s.posterior_variance[1]))
        torch.testing.assert_close(shifted, plain + var * g, rtol=1e-12, atol=1e-12)
    # the fixed variances at t = 0: β̃_0 = 0 (no shift) and "fixedlarge"'s β̃_1 (Ho et al.'s replaced first β)
    small, _ = ddpm_step(s, x, 0, eps, guidance=g, clip_x0=False)
    large, _ = ddpm_step(s, x, 0, eps, variance="fixedlarge", guidance=g, clip_x0=False)
    torch.testing.assert_close(small, plain, rtol=0, atol=0)
    torch.testing.assert_close(large, plain + s.posterior_variance[1] * g, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Bad input (CONTRIBUTING.md, convention 8): each error names the argument
# ----------------------------------------------------------------------------------------------------------------


def test_regression_step_noise_of_batch_one():
    """ddpm_step/ddim_step accepted noise of shape (1, …) and broadcast it: every image got the same draw."""
    s = linear_schedule()
    x, eps, z = _inputs()  # (4, 1, 8, 8)
    with pytest.raises(ValueError, match=r"noise must have x_t's shape \(4, 1, 8, 8\) \(one per sample\), got \(1,"):
        ddpm_step(s, x, 10, eps, noise=z[:1])
    with pytest.raises(ValueError, match=r"noise must have x_t's shape \(4, 1, 8, 8\)"):
        ddim_step(s, x, 10, 5, eps, eta=0.5, noise=z[:1])
    with pytest.raises(ValueError, match="v must have x_t's shape"):
        ddpm_step(s, x, 10, eps, variance="learned_range", noise=z, v=z[:1])
    with pytest.raises(ValueError, match="noise must be a floating-point tensor"):
        ddpm_step(s, x, 10, eps, noise=z.long())


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8])
def test_regression_integer_x_T(dummy, dtype):
    """An integer x_T reached torch.randn in the first step ("normal_kernel_cpu" not implemented for 'Long')."""
    s = linear_schedule(20)
    x_T = torch.zeros(2, 1, 4, 4, dtype=dtype)
    with pytest.raises(ValueError, match="x_T must be a floating-point tensor.*from_uint8"):
        ddpm(dummy, x_T, s, generator=torch.Generator().manual_seed(0), progress=False)
    with pytest.raises(ValueError, match="x_T must be a floating-point tensor"):
        ddim(dummy, x_T, s, steps=2, eta=0.5, progress=False)
    with pytest.raises(ValueError, match="x0 must be a floating-point tensor"):
        ddim_invert(dummy, x_T, s, steps=2, progress=False)
    with pytest.raises(ValueError, match="x_t must be a floating-point tensor"):
        ddpm_step(s, x_T, 5, torch.zeros(2, 1, 4, 4), noise=torch.zeros(2, 1, 4, 4))


def test_samplers_refuse_nonfinite_states(dummy):
    s = linear_schedule(20)
    x = torch.zeros(2, 3)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match="x_T must be finite"):
        ddim(dummy, x, s, steps=2, progress=False)
    with pytest.raises(ValueError, match="x0 must be finite"):
        ddim_invert(dummy, x, s, steps=2, progress=False)
    # one step is documented to propagate NaN (no full-tensor checks inside a sampler's loop)
    out, _ = ddim_step(s, x, 5, 3, torch.zeros(2, 3))
    assert torch.isnan(out[1, 2]) and int(torch.isnan(out).sum()) == 1


@pytest.mark.parametrize("sampler", [ddpm, ddim])
def test_shared_sampler_arguments(dummy, sampler):
    s = linear_schedule(20)
    kw = dict(steps=2, progress=False)
    for bad, match in (
        (dict(generator=0), r"generator must be a torch.Generator or None.*manual_seed\(0\)"),
        (dict(callback=1), "callback must be callable"),
        (dict(model_kwargs=1), "model_kwargs must be a dict"),
        (dict(cond_fn="classifier"), "cond_fn must be callable"),
        (dict(progress="no"), "progress must be True or False"),
        (dict(clip_x0=None), "clip_x0 must be True or False"),
    ):
        with pytest.raises(TypeError, match=match):
            sampler(dummy, (1, 2), s, **{**kw, **bad})
    with pytest.raises(TypeError, match="model must be callable"):
        sampler(None, (1, 2), s, **kw)
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule"):
        sampler(dummy, (1, 2), "linear", **kw)
    with pytest.raises(TypeError, match="callback must be callable"):
        ddim_invert(dummy, torch.zeros(1, 2), s, steps=2, progress=False, callback=1)


def test_step_and_ddim_arguments():
    s = linear_schedule(20)
    x = torch.zeros(2, 3)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eta must be a finite number"):
            ddim_step(s, x, 5, 3, x, eta=bad, noise=x)
    with pytest.raises(TypeError, match="eta must be a finite number"):
        ddim_step(s, x, 5, 3, x, eta="0.5", noise=x)
    for bad in (2.5, "3", 5, -2):
        with pytest.raises(ValueError, match=r"t_prev must be an integer in \[-1, t\)"):
            ddim_step(s, x, 5, bad, x)
    assert torch.equal(ddim_step(s, x, 5, torch.tensor(3), x)[0], ddim_step(s, x, 5, 3, x)[0])
    with pytest.raises(ValueError, match="t must be one timestep"):
        ddpm_step(s, x, torch.tensor([1, 2]), x, noise=x)
    with pytest.raises(TypeError, match="clip_x0 must be True or False"):
        ddpm_step(s, x, 5, x, noise=x, clip_x0=1)
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule"):
        ddim_step(None, x, 5, 3, x)


def test_ddim_timesteps_argument(dummy):
    s = linear_schedule(20)
    for bad in (5, "54"):
        with pytest.raises(TypeError, match="timesteps must be a sequence of integer timesteps"):
            ddim(dummy, (1, 2), s, timesteps=bad, progress=False)
    with pytest.raises(ValueError, match="timesteps must hold integer timesteps"):
        ddim(dummy, (1, 2), s, timesteps=[5.5, 2], progress=False)
    a = ddim(dummy, torch.ones(1, 2), s, timesteps=torch.tensor([15, 5]), progress=False)
    assert torch.equal(a, ddim(dummy, torch.ones(1, 2), s, timesteps=range(15, 0, -10), progress=False))
