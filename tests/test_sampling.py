"""diffu.sampling, the sampler kernel: grids, initial noise, the model call, the reported states."""

import numpy as np
import pytest
import torch

from diffu.sampling import (
    SPACINGS,
    SamplerState,
    Trajectory,
    check_sampler_args,
    check_schedule,
    ddim_timesteps,
    initial_noise,
    model_cond,
    model_eps,
    noise_like,
    respaced,
)
from diffu.schedules import cosine_schedule, linear_schedule


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_respaced_is_the_ddim_grid_and_respace(spacing, steps):
    s = linear_schedule()
    ts, sched = respaced(s, steps, spacing)
    assert torch.equal(ts, ddim_timesteps(1000, steps, spacing).flip(0))
    assert bool((ts[1:] > ts[:-1]).all())  # increasing
    if steps == 1000:
        assert sched is s  # no respacing at full length
    else:
        assert sched.T == steps
        # the kept ᾱ values, up to float64 round-off of β = 1 − ᾱ_i/ᾱ_{i-1} (≈ 1e-16 absolute)
        torch.testing.assert_close(sched.alpha_bar, s.alpha_bar[ts], rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(sched.betas, s.respace(ts).betas, rtol=0, atol=0)


def test_respaced_defaults_and_errors():
    s = cosine_schedule(T=100)
    ts, sched = respaced(s)
    assert sched is s and torch.equal(ts, torch.arange(100))
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 100\], got 0"):
        respaced(s, 0)
    with pytest.raises(ValueError, match="spacing must be one of"):
        respaced(s, 10, "quad")


def test_initial_noise_draws_and_passes_through(dummy, gen):
    a = initial_noise((2, 1, 4, 4), gen(0))
    assert a.shape == (2, 1, 4, 4) and a.dtype == torch.get_default_dtype()
    assert torch.equal(a, initial_noise([2, 1, 4, 4], gen(0))) and not torch.equal(
        a, initial_noise((2, 1, 4, 4), gen(1))
    )
    assert torch.equal(a, torch.randn(2, 1, 4, 4, generator=gen(0)))
    x = torch.ones(3, 2)
    assert initial_noise(x, gen(0)) is x  # a tensor is the state itself
    like = torch.zeros(1, dtype=torch.float64)
    d = initial_noise((2, 3), gen(0), like=like)
    assert d.dtype == torch.float64 and torch.equal(d, torch.randn(2, 3, generator=gen(0), dtype=torch.float64))
    assert initial_noise(x, like=like).dtype == torch.float64  # a given state is cast like ``like``
    # without a generator the noise is drawn on the model's device
    assert initial_noise((2, 2), model=dummy).device == next(dummy.parameters()).device
    for bad in ((2, 0), (2, 1.5), "2x2", 3):
        with pytest.raises(ValueError, match="x_T must be a tensor or a shape tuple of positive ints"):
            initial_noise(bad, gen(0))


def test_initial_noise_with_a_required_shape(gen):
    y = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    x = initial_noise(None, gen(3), like=y, shape=y.shape)
    assert x.shape == y.shape and x.dtype == torch.float64
    assert torch.equal(x, torch.randn(y.shape, generator=gen(3), dtype=torch.float64))
    given = torch.ones(2, 1, 4, 4)
    assert torch.equal(initial_noise(given, like=y, shape=y.shape), given.double())
    with pytest.raises(ValueError, match=r"x_T must be a tensor of y's shape \(2, 1, 4, 4\), got \(1, 1, 4, 4\)"):
        initial_noise(torch.ones(1, 1, 4, 4), like=y, shape=y.shape, of="y's")
    with pytest.raises(ValueError, match=r"k_T must be a tensor of shape"):
        initial_noise((2, 1, 4, 4), like=y, shape=y.shape, name="k_T")  # a shape is not accepted here


def test_noise_like_follows_the_input(gen):
    x = torch.zeros(3, 2, dtype=torch.float64)
    z = noise_like(x, gen(5))
    assert z.shape == x.shape and z.dtype == x.dtype and torch.equal(z, noise_like(x, gen(5)))


def test_model_eps_and_model_cond(dummy):
    s = linear_schedule()
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    seen = []

    def model(x, t, **kw):
        seen.append((t.clone(), kw))
        return dummy(x, t)

    eps = model_eps(model, x, 17, s, {"y": 1})
    assert torch.equal(eps, dummy(x, torch.full((3,), 17.0)))
    assert torch.equal(seen[0][0], torch.full((3,), 17.0)) and seen[0][1] == {"y": 1}  # float (N,) timestep

    class LearnSigma(torch.nn.Module):  # [ε̂, v]: the variance half is dropped
        learn_sigma = True

        def forward(self, x, t):
            return torch.cat([dummy(x, t), torch.full_like(x, 9.0)], 1)

    torch.testing.assert_close(model_eps(LearnSigma(), x, 17, s), eps, rtol=0, atol=0)
    g = model_cond(lambda x, t, y=None: x * t[:, None, None, None] + y, x, 5, {"y": 2.0})
    torch.testing.assert_close(g, 5 * x + 2)
    with pytest.raises(ValueError, match="cond_fn must return a tensor of x_t's shape"):
        model_cond(lambda x, t: x[:, :1, :2], x, 5)


def test_sampler_state_and_trajectory():
    traj = Trajectory(every=2, max_items=1)
    for i in range(5):
        traj(SamplerState(i, 10 - i, torch.full((2, 1), float(i)), torch.zeros(2, 1)))
    assert len(traj) == 3 and traj.ts == [10, 8, 6] and traj.xs[1].shape == (1, 1) and float(traj.xs[2]) == 4.0
    with pytest.raises(ValueError, match="every must be >= 1"):
        Trajectory(every=0)


def test_samplers_keep_the_old_import_path():
    """Notebooks import these from diffu.samplers: the kernel's objects, not copies."""
    import diffu.samplers as samplers
    import diffu.sampling as sampling

    for name in ("SamplerState", "Trajectory", "ddim_timesteps", "model_eps", "SPACINGS"):
        assert getattr(samplers, name) is getattr(sampling, name)


# ----------------------------------------------------------------------------------------------------------------
# Bad input (CONTRIBUTING.md, convention 8): each error names the argument
# ----------------------------------------------------------------------------------------------------------------


def test_regression_integer_x_T_reaches_randn(dummy, gen):
    """An int64 x_T used to be returned as the state, and the sampler's first noise draw then failed inside
    torch.randn ("normal_kernel_cpu" not implemented for 'Long'); NaN/inf x_T ran to a NaN sample."""
    for bad in (torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.uint8)):
        with pytest.raises(ValueError, match="x_T must be a floating-point tensor.*from_uint8"):
            initial_noise(bad, gen(0))
    for v in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="x_T must be finite"):
            initial_noise(torch.full((2, 3), v), gen(0))
    with pytest.raises(ValueError, match="x_1 must have a batch dimension"):
        initial_noise(torch.tensor(1.0), name="x_1")
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        noise_like(torch.zeros(2, 3, dtype=torch.int64), gen(0))


def test_initial_noise_and_noise_like_bad_input(gen):
    for bad in ((), (True, 2), (2, -1)):
        with pytest.raises(ValueError, match="x_T must be a tensor or a shape tuple of positive ints"):
            initial_noise(bad, gen(0))
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator or None.*manual_seed\(3\)"):
        initial_noise((2, 2), 3)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        noise_like(torch.zeros(2), "g")
    with pytest.raises(ValueError, match="like must be a floating-point tensor"):
        initial_noise((2, 2), gen(0), like=torch.zeros(1, dtype=torch.int64))
    # a CPU generator cannot draw on another device: named here, not torch's "Expected a 'meta' device type"
    with pytest.raises(ValueError, match="generator is on cpu but the noise is drawn on meta"):
        noise_like(torch.zeros(2, device="meta"), gen(0))
    assert initial_noise([2, torch.tensor(3).item()], gen(0)).shape == (2, 3)


def test_check_sampler_args_and_check_schedule(dummy, gen):
    check_sampler_args(dummy, generator=gen(0), progress=False, callback=print, model_kwargs={"y": 1}, cond_fn=print)
    for kwargs, match in (
        (dict(model=3), "model must be callable"),
        (dict(generator=0), "generator must be a torch.Generator"),
        (dict(progress=1), "progress must be True or False"),
        (dict(callback="cb"), "callback must be callable"),
        (dict(cond_fn=1.0), "cond_fn must be callable"),
        (dict(model_kwargs=[("y", 1)]), "model_kwargs must be a dict"),
        (dict(model_kwargs={1: 2}), "model_kwargs must be a dict with string keys"),
    ):
        with pytest.raises(TypeError, match=match):
            check_sampler_args(**{"model": dummy, **kwargs})
    with pytest.raises(TypeError, match="cond_fn must be callable"):
        check_sampler_args(None, name="cond_fn")
    check_schedule(linear_schedule(10))
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule, got str"):
        check_schedule("linear")
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule"):
        respaced(None, 3)


def test_ddim_timesteps_bad_input():
    for T in (0, 2.5, True):
        with pytest.raises(ValueError, match="T must be an integer >= 1"):
            ddim_timesteps(T, 1)
    with pytest.raises(ValueError, match="spacing must be one of"):
        ddim_timesteps(10, 2, 1)
    for off in (-1, 0.5):
        with pytest.raises(ValueError, match="offset must be an integer >= 0"):
            ddim_timesteps(10, 2, offset=off)
    with pytest.raises(ValueError, match="offset 5 moves timesteps outside"):
        ddim_timesteps(10, 2, offset=5)
    # the other spacings ignore an offset (as diffusers' steps_offset): refused rather than dropped silently
    with pytest.raises(ValueError, match="offset applies to spacing='leading' only"):
        ddim_timesteps(10, 2, "trailing", offset=1)
    assert ddim_timesteps(10, 2, offset=1).tolist() == [6, 1]


def test_model_eps_and_model_cond_bad_input(dummy):
    s = linear_schedule(20)
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(TypeError, match="model must be callable"):
        model_eps(3, x, 1, s)
    with pytest.raises(ValueError, match=r"t must be in \[0, 19\]"):
        model_eps(dummy, x, 20, s)
    with pytest.raises(ValueError, match="t must be one timestep"):
        model_eps(dummy, x, torch.tensor([1, 2]), s)
    with pytest.raises(ValueError, match="t must hold integer timesteps"):
        model_eps(dummy, x, 1.5, s)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        model_eps(dummy, x.long(), 1, s)
    with pytest.raises(TypeError, match="model_kwargs must be a dict"):
        model_eps(dummy, x, 1, s, [1])
    with pytest.raises(TypeError, match="model must return a tensor, got tuple"):
        model_eps(lambda x, t: (x,), x, 1, s)
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule"):
        model_eps(dummy, x, 1, "linear")
    with pytest.raises(TypeError, match="cond_fn must be callable"):
        model_cond(1, x, 3)
    with pytest.raises(TypeError, match="cond_fn must return a tensor, got NoneType"):
        model_cond(lambda x, t: None, x, 3)
    with pytest.raises(ValueError, match="t must be a finite number"):
        model_cond(lambda x, t: x, x, float("nan"))


def test_trajectory_bad_input():
    for bad in (1.5, True, 0):
        with pytest.raises(ValueError, match="every must be >= 1"):
            Trajectory(every=bad)
    with pytest.raises(ValueError, match="max_items must be an integer >= 1"):
        Trajectory(max_items=0)
    with pytest.raises(TypeError, match="state must be a diffu.sampling.SamplerState"):
        Trajectory()((0, 1, torch.zeros(1), torch.zeros(1)))


@pytest.mark.parametrize("T,steps", [(15, 13), (17, 7), (21, 15)])
def test_regression_trailing_grid_of_one_too_many_points(T, steps):
    """ddim_timesteps(15, 13, "trailing") raised "offset 0 moves timesteps outside [0, 14]": np.arange(T, 0, -T/steps)
    returns steps + 1 points by rounding, the last one rounding to -1 (diffusers has the same extra point)."""
    ts = ddim_timesteps(T, steps, "trailing")
    assert ts.shape == (steps,) and int(ts[0]) == T - 1 and int(ts.min()) >= 0
    assert bool((ts[:-1] > ts[1:]).all())
    expected = np.round(np.arange(T, 0, -T / steps))[:steps] - 1  # the grid's values, without the extra point
    assert ts.tolist() == expected.astype(int).tolist()
