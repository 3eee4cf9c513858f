"""Diffusion models as plug-and-play priors (diffu.diffusion_priors, Graikos et al. 2022, §2.4)."""

import pytest
import torch

from diffu.nn import UNet, UNetConfig
from diffu.schedules import linear_schedule
from diffu.train import seeded


@pytest.fixture(scope="module")
def unet():
    """A tiny class-conditional UNet for 8×8 images (3 classes, null label 3)."""
    with seeded(0):
        net = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_classes=3,
                              image_size=8))  # fmt: skip
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
    return net.eval()


def test_plug_and_play_timesteps_follow_the_official_annealing():
    import math

    from diffu.diffusion_priors import plug_and_play_timesteps

    ts = plug_and_play_timesteps(1000)
    i = 137
    assert ts[i] == int(((1000 - i) + (1000 - i) // 4 * math.cos(i / 50)) / 1000 * 1000)
    assert ts.min() >= 1 and ts.max() <= 999 and ts[0] == 999 and ts[-1] <= 2
    assert ts[:100].mean() > ts[450:550].mean() > ts[-100:].mean()  # noisy to clean
    with pytest.raises(ValueError, match="steps"):
        plug_and_play_timesteps(0)


def test_plug_and_play_with_a_blind_prior_minimises_the_constraint():
    """With ε̂ ≡ 0 the denoising loss ‖ε‖² does not depend on x, so only the constraint moves x."""
    from diffu.diffusion_priors import plug_and_play

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    target = torch.rand(2, 1, 4, 4) * 1.6 - 0.8
    c = lambda x: (x - target).pow(2).flatten(1).sum(1)  # noqa: E731
    res = plug_and_play(Zero(), c, torch.zeros(2, 1, 4, 4), linear_schedule(),
                        steps=300, lr=0.05, weight=1.0, anneal_weight=False, generator=torch.Generator().manual_seed(0),
                        progress=False)  # fmt: skip
    torch.testing.assert_close(res.x, target, rtol=0, atol=2e-2)
    assert res.constraint[-1] < 0.01 * res.constraint[0] and len(res.t) == 300


def test_plug_and_play_is_seeded_and_validates(unet):
    from diffu.diffusion_priors import plug_and_play
    from diffu.samplers import Trajectory

    kw = dict(steps=5, weight=0.5, model_kwargs={"y": torch.tensor([3, 3])}, progress=False)
    c = lambda x: x.mean((1, 2, 3))  # noqa: E731
    traj = Trajectory()
    a = plug_and_play(unet, c, (2, 1, 8, 8), linear_schedule(), generator=torch.Generator().manual_seed(0),
                      callback=traj, **kw)  # fmt: skip
    b = plug_and_play(unet, c, (2, 1, 8, 8), linear_schedule(), generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(a.x, b.x) and a.denoise == b.denoise and a.x.abs().max() <= 1 and len(traj) == 5
    assert not torch.equal(traj.xs[0], traj.xs[-1])  # snapshots, not views of the optimised tensor
    with pytest.raises(ValueError, match="weight"):
        plug_and_play(unet, c, (2, 1, 8, 8), linear_schedule(), steps=5, weight=-1.0, progress=False)
    with pytest.raises(ValueError, match="timesteps"):
        plug_and_play(unet, c, (2, 1, 8, 8), linear_schedule(), steps=5, timesteps=[1000] * 5, progress=False)


def test_constraint_factories(noisy_clf):
    from diffu.diffusion_priors import classifier_constraint, fidelity_constraint

    x = torch.randn(3, 1, 8, 8)
    c = classifier_constraint(noisy_clf, 2)
    with torch.no_grad():
        logits = noisy_clf(x, torch.zeros(3))
        assert torch.allclose(c(x), -torch.log_softmax(logits, 1)[:, 2])
        t = torch.full((3,), 400.0)
        assert torch.allclose(c(x, t), -torch.log_softmax(noisy_clf(x, t), 1)[:, 2])
    with pytest.raises(ValueError, match=r"y must be in \[0, 2\]"):  # named as the caller's argument
        classifier_constraint(noisy_clf, 5)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    f = fidelity_constraint(lambda z: mask * z, mask * x)
    assert torch.allclose(f(x), torch.zeros(3)) and torch.allclose(f(x + mask), mask.mean().expand(3))


def test_plug_and_play_noisy_constraint_sees_the_noisy_sample(unet):
    from diffu.diffusion_priors import plug_and_play

    seen = []

    def c(x_t, t):
        seen.append((x_t.detach().clone(), t.clone()))
        return x_t.mean((1, 2, 3))

    plug_and_play(unet, c, (2, 1, 8, 8), linear_schedule(), steps=3, timesteps=[900, 500, 10], noisy_constraint=True,
                  model_kwargs={"y": torch.tensor([3, 3])}, generator=torch.Generator().manual_seed(0),
                  progress=False)  # fmt: skip
    assert [int(t[0]) for _, t in seen] == [900, 500, 10]
    assert seen[0][0].abs().max() > 1.0  # x_t at t = 900 is mostly noise (not clipped to [-1, 1])


# ----------------------------------------------------------------------------------------------------------------
# the demonstrations of §2.4
# ----------------------------------------------------------------------------------------------------------------


def test_top_half_mask():
    from diffu.diffusion_priors import top_half_mask

    m = top_half_mask(6)
    assert m.shape == (1, 1, 6, 6) and m[..., :3, :].eq(1).all() and m[..., 3:, :].eq(0).all()
    assert top_half_mask().shape == (1, 1, 28, 28) and top_half_mask(7).sum() == 3 * 7
    with pytest.raises(ValueError, match="size"):
        top_half_mask(1)


def test_plug_and_play_inpaint_observes_the_top_half_and_runs_plug_and_play(unet, gen):
    """The observation is the noisy top half; the reconstruction is plug_and_play with the fidelity constraint on it,
    driven by the same generator (noise first, then the optimisation)."""
    from diffu.diffusion_priors import fidelity_constraint, plug_and_play, plug_and_play_inpaint, top_half_mask

    x_true = torch.rand(2, 1, 8, 8, generator=gen(1)) * 2 - 1
    x_hat, y_obs, mask = plug_and_play_inpaint(unet, x_true, 0.1, weight=5.0, steps=4, seed=3)
    assert x_hat.shape == y_obs.shape == x_true.shape and torch.equal(mask, top_half_mask(8))
    g = gen(3)
    expected_y = mask * (x_true + 0.1 * torch.randn(x_true.shape, generator=g))
    torch.testing.assert_close(y_obs, expected_y, rtol=0, atol=0)
    assert y_obs[..., 4:, :].eq(0).all() and not torch.equal(y_obs[..., :4, :], x_true[..., :4, :])
    res = plug_and_play(unet, fidelity_constraint(lambda z: mask * z, expected_y), x_true.shape, linear_schedule(),
                        steps=4, lr=0.05, weight=5.0, anneal_weight=False, model_kwargs={"y": torch.full((2,), 3)},
                        generator=g, progress=False)  # fmt: skip
    assert torch.equal(x_hat, res.x)
    again = plug_and_play_inpaint(unet, x_true, 0.1, weight=5.0, steps=4, seed=3)[0]
    assert torch.equal(again, x_hat) and not torch.equal(plug_and_play_inpaint(unet, x_true, 0.1, steps=4)[0], x_hat)


def test_plug_and_play_class_samples_are_class_balanced_and_sized_by_the_model(unet, noisy_clf, gen):
    from diffu.diffusion_priors import classifier_constraint, plug_and_play, plug_and_play_class_samples

    x = plug_and_play_class_samples(unet, noisy_clf, 4, weight=2.0, noisy=True, steps=3, seed=5)
    assert x.shape == (4, 1, 8, 8) and x.abs().max() <= 1  # 8×8 from unet.config, clipped
    y = torch.tensor([0, 1, 2, 0])  # labels i mod 3
    res = plug_and_play(unet, classifier_constraint(noisy_clf, y), (4, 1, 8, 8), linear_schedule(), steps=3, lr=0.05,
                        weight=2.0, noisy_constraint=True, model_kwargs={"y": torch.full((4,), 3)}, generator=gen(5),
                        progress=False)  # fmt: skip
    assert torch.equal(x, res.x)


# ----------------------------------------------------------------------------------------------------------------
# argument checks (issue 18)
# ----------------------------------------------------------------------------------------------------------------

NAN = float("nan")


def test_regression_fidelity_constraint_checks_shapes():
    """A measurement of one image was broadcast silently against a batch (and (N, 1) against (N, C) …)."""
    from diffu.diffusion_priors import fidelity_constraint

    x = torch.randn(3, 1, 8, 8)
    with pytest.raises(
        ValueError, match=r"A\(x\) must have the measurement y's shape \(1, 1, 8, 8\), got \(3, 1, 8, 8\)"
    ):
        fidelity_constraint(lambda z: z, torch.zeros(1, 1, 8, 8))(x)
    with pytest.raises(ValueError, match=r"A\(x\) must have the measurement y's shape"):
        fidelity_constraint(lambda z: z[..., :4, :], torch.zeros(3, 1, 8, 8))(x)
    with pytest.raises(ValueError, match=r"A\(x\) must have .* got list"):
        fidelity_constraint(lambda z: [z], torch.zeros(3, 1, 8, 8))(x)
    assert fidelity_constraint(lambda z: z, x.clone())(x).shape == (3,)


def test_constraint_factories_validate():
    from diffu.diffusion_priors import classifier_constraint, fidelity_constraint

    with pytest.raises(TypeError, match="A must be callable"):
        fidelity_constraint(torch.eye(4), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="y must be a floating-point tensor"):
        fidelity_constraint(lambda z: z, torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="y must be finite"):
        fidelity_constraint(lambda z: z, torch.full((1, 4), NAN))
    with pytest.raises(ValueError, match="classifier must have a num_classes attribute"):
        classifier_constraint(lambda x, t: x, 0)


def test_classifier_constraint_checks_the_batch(noisy_clf):
    from diffu.diffusion_priors import classifier_constraint

    c = classifier_constraint(noisy_clf, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="x must be a batch of 2 images"):
        c(torch.randn(3, 1, 8, 8))
    assert classifier_constraint(noisy_clf, 1)(torch.randn(3, 1, 8, 8)).shape == (3,)  # one label for any batch


def test_plug_and_play_validates(unet):
    from diffu.diffusion_priors import plug_and_play, plug_and_play_timesteps

    s, c = linear_schedule(), (lambda x: x.mean((1, 2, 3)))
    kw = dict(steps=2, progress=False, model_kwargs={"y": torch.tensor([3, 3])})
    for bad, match in (({"lr": NAN}, "lr must be a finite number > 0"), ({"weight": NAN}, "weight must be a finite"),
                       ({"steps": 2.5}, "steps must be an integer")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            plug_and_play(unet, c, (2, 1, 8, 8), s, **{**kw, **bad})
    with pytest.raises(ValueError, match="timesteps must be 2 integers"):
        plug_and_play(unet, c, (2, 1, 8, 8), s, timesteps=[500.7, 10.2], **kw)  # truncated silently before
    with pytest.raises(ValueError, match=r"x_init\[1\] must be an integer >= 1"):
        plug_and_play(unet, c, (2, 1.5, 8, 8), s, **kw)
    with pytest.raises(TypeError, match="x_init must be a tensor or a shape"):
        plug_and_play(unet, c, "2x1x8x8", s, **kw)
    with pytest.raises(ValueError, match=r"x_init must be a floating-point tensor.*from_uint8"):
        plug_and_play(unet, c, torch.zeros(2, 1, 8, 8, dtype=torch.uint8), s, **kw)
    with pytest.raises(ValueError, match="x_init must be finite"):
        plug_and_play(unet, c, torch.full((2, 1, 8, 8), NAN), s, **kw)
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule"):
        plug_and_play(unet, c, (2, 1, 8, 8), None, **kw)
    with pytest.raises(TypeError, match="constraint must be callable"):
        plug_and_play(unet, 1.0, (2, 1, 8, 8), s, **kw)
    with pytest.raises(TypeError, match="anneal_weight must be True or False"):
        plug_and_play(unet, c, (2, 1, 8, 8), s, anneal_weight="no", **kw)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        plug_and_play(unet, c, (2, 1, 8, 8), s, generator=0, **kw)
    with pytest.raises(TypeError, match="model_kwargs must be a dict"):
        plug_and_play(unet, c, (2, 1, 8, 8), s, steps=2, progress=False, model_kwargs=[3])
    with pytest.raises(ValueError, match="constraint must return a tensor"):
        plug_and_play(unet, lambda x: 0.5, (2, 1, 8, 8), s, **kw)
    with pytest.raises(ValueError, match="T must be an integer >= 2"):
        plug_and_play_timesteps(5, T=1)  # clipping to [1, 0] gave 0s
    with pytest.raises(ValueError, match="steps must be an integer"):
        plug_and_play_timesteps(2.5)


def test_plug_and_play_demonstrations_validate(unet, noisy_clf):
    from diffu.diffusion_priors import plug_and_play_class_samples, plug_and_play_inpaint, top_half_mask

    with pytest.raises(ValueError, match="x_true must hold square images"):
        plug_and_play_inpaint(unet, torch.zeros(1, 1, 8, 6), steps=2)
    with pytest.raises(ValueError, match="x_true must be finite"):
        plug_and_play_inpaint(unet, torch.full((1, 1, 8, 8), NAN), steps=2)
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        plug_and_play_inpaint(unet, torch.zeros(1, 1, 8, 8), NAN, steps=2)
    with pytest.raises(ValueError, match="x_true must be a float image batch"):
        plug_and_play_inpaint(unet, torch.zeros(8, 8), steps=2)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        plug_and_play_class_samples(unet, noisy_clf, 0, steps=2)
    with pytest.raises(ValueError, match="unet must be a class-conditional network"):
        plug_and_play_class_samples(lambda x, t: x, noisy_clf, 2, steps=2)
    with pytest.raises(TypeError, match="noisy must be True or False"):
        plug_and_play_class_samples(unet, noisy_clf, 2, noisy=1, steps=2)
    with pytest.raises(ValueError, match="size must be an integer >= 2"):
        top_half_mask(8.0)


def test_regression_plug_and_play_demonstrations_name_their_arguments(unet, noisy_clf):
    """plug_and_play_class_samples(clf='c') said "classifier must be callable" and plug_and_play_inpaint with a
    3-channel x_true failed inside the UNet with "x must have shape …": both now name the caller's argument."""
    from diffu.diffusion_priors import plug_and_play_class_samples, plug_and_play_inpaint
    from diffu.nn import NoisyClassifier

    with pytest.raises(TypeError, match="^clf must be callable, got str"):
        plug_and_play_class_samples(unet, "c", 3, steps=1)
    two = NoisyClassifier(channels=8, channel_mult=(1,), attn_resolutions=(), image_size=8, num_classes=2)
    with pytest.raises(ValueError, match="^clf must have at least the unet's 3 classes, got clf.num_classes = 2"):
        plug_and_play_class_samples(unet, two, 3, steps=1)
    with pytest.raises(ValueError, match=r"^x_true must have the unet's 1 channel\(s\), .* got \(2, 3, 8, 8\)"):
        plug_and_play_inpaint(unet, torch.zeros(2, 3, 8, 8), steps=1)
