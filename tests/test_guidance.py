"""Classifier-free guidance wrapper."""

import pytest
import torch

from diffu.guidance import ClassifierFreeGuidance
from diffu.nn import UNet, UNetConfig
from diffu.samplers import ddim
from diffu.schedules import linear_schedule
from diffu.train import seeded


class Counting(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0
        self.prediction = "eps"

    def forward(self, x, t, y=None):
        self.calls += 1
        return self.net(x, t, y=y)


@pytest.fixture(scope="module")
def unet():
    with seeded(0):
        net = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_classes=3))
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
    return Counting(net.eval())


def test_scale_one_and_zero_are_exactly_the_two_branches(unet):
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t, y = torch.full((4,), 300.0), torch.tensor([0, 1, 2, 0])
    null = {"y": torch.tensor([3])}
    with torch.no_grad():
        cond, uncond = unet(x, t, y=y), unet(x, t, y=torch.full((4,), 3))
        unet.calls = 0
        assert torch.equal(ClassifierFreeGuidance(unet, 1.0, null)(x, t, y=y), cond)
        assert torch.equal(ClassifierFreeGuidance(unet, 0.0, null)(x, t, y=y), uncond)
        assert unet.calls == 2  # one batched forward pass per call
        s3 = ClassifierFreeGuidance(unet, 3.0, null)(x, t, y=y)
    torch.testing.assert_close(s3, uncond + 3 * (cond - uncond), rtol=1e-5, atol=1e-6)


def test_guided_model_drives_a_sampler_deterministically(unet):
    guided = ClassifierFreeGuidance(unet, 2.0, {"y": torch.tensor([3])})
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    kw = dict(steps=3, progress=False, model_kwargs={"y": torch.tensor([1, 2])})
    a = ddim(guided, x_T, linear_schedule(), generator=torch.Generator().manual_seed(2), **kw)
    b = ddim(guided, x_T, linear_schedule(), generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_errors(unet):
    with pytest.raises(ValueError, match="scale"):
        ClassifierFreeGuidance(unet, -1.0, {"y": torch.tensor([3])})
    with pytest.raises(ValueError, match="null"):
        ClassifierFreeGuidance(unet, 1.0, {})
    g = ClassifierFreeGuidance(unet, 1.0, {"y": torch.tensor([3])})
    with pytest.raises(ValueError, match="keys"):
        g(torch.zeros(1, 1, 8, 8), torch.zeros(1), text=torch.zeros(1, 2))
    for net in (unet, unet.net):  # the wrapper checks labels itself when the model has num_classes
        with pytest.raises(ValueError, match=r"labels (must be )?in \[0, 3\]"):
            ClassifierFreeGuidance(net, 1.0, {"y": torch.tensor([3])})(
                torch.zeros(2, 1, 8, 8), torch.zeros(2), y=torch.tensor([0, 4])
            )


def test_sample_captions_is_seeded():
    from diffu.guidance import sample_captions
    from diffu.pretrained import load

    m = load("fmnist_t2i")
    caps = ["a bag", "a dark coat", "light trousers"]
    a = sample_captions(m, caps, scale=2.0, steps=2, seed=3)
    b = sample_captions(m, caps, scale=2.0, steps=2, seed=3)
    assert a.shape == (3, 1, 28, 28) and torch.equal(a, b) and torch.isfinite(a).all()
    assert not torch.equal(a, sample_captions(m, caps, scale=2.0, steps=2, seed=4))


# ----------------------------------------------------------------------------------------------------------------
# classifier-free guidance with every sampler of the book
# ----------------------------------------------------------------------------------------------------------------


def _flow_unet():
    with seeded(1):
        net = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_classes=3,
                              prediction="velocity", time_scale=1000.0))  # fmt: skip
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
        torch.nn.init.normal_(net.label_emb.weight, std=1.0)  # make the label matter
    return net.eval()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "pf_ode", "flow_heun"])
def test_cfg_scale_one_and_zero_sample_like_the_two_branches(unet, sampler):
    from diffu import flow, sde
    from diffu.samplers import ddpm

    y, null = torch.tensor([0, 2]), torch.tensor([3])
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))

    def run(net, labels):
        g = torch.Generator().manual_seed(5)
        kw = dict(model_kwargs={"y": labels}, progress=False)
        if sampler == "ddpm":
            return ddpm(net, x_T, linear_schedule(), steps=4, generator=g, **kw)
        if sampler == "ddim":
            return ddim(net, x_T, linear_schedule(), steps=4, eta=0.5, generator=g, **kw)
        if sampler == "pf_ode":
            vp = sde.VPSDE()
            return sde.pf_ode(sde.FromDiscrete(net, linear_schedule(), vp), x_T, vp, steps=4, **kw)
        return flow.heun(net, x_T, steps=3, **kw)

    net = _flow_unet() if sampler == "flow_heun" else unet
    with torch.no_grad():
        cond, uncond = run(net, y), run(net, null.expand(2))
        torch.testing.assert_close(run(ClassifierFreeGuidance(net, 1.0, {"y": null}), y), cond, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(run(ClassifierFreeGuidance(net, 0.0, {"y": null}), y), uncond, rtol=1e-6, atol=1e-6)
        assert (run(ClassifierFreeGuidance(net, 3.0, {"y": null}), y) - cond).abs().max() > 1e-4


def test_cfg_from_w_is_the_papers_parametrisation(unet):
    x, t, y = torch.randn(3, 1, 8, 8), torch.full((3,), 500.0), torch.tensor([0, 1, 2])
    null = {"y": torch.tensor([3])}
    g = ClassifierFreeGuidance.from_w(unet, 0.5, null)
    assert g.scale == 1.5
    with torch.no_grad():
        cond, uncond = unet(x, t, y=y), unet(x, t, y=torch.full((3,), 3))
        torch.testing.assert_close(g(x, t, y=y), 1.5 * cond - 0.5 * uncond, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="w must be >= -1"):
        ClassifierFreeGuidance.from_w(unet, -2.0, null)


def test_cfg_guides_only_the_eps_half_of_learn_sigma_models():
    from diffu.nn import DiT, DiTConfig

    with seeded(0):
        dit = DiT(DiTConfig(hidden_size=32, depth=1, num_heads=2, patch_size=4, learn_sigma=True)).eval()
        for p in dit.parameters():
            torch.nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(2, 1, 28, 28), torch.full((2,), 10.0), torch.tensor([1, 2])
    g = ClassifierFreeGuidance(dit, 4.0, {"y": torch.tensor([10])})
    with torch.no_grad():
        out, cond, uncond = g(x, t, y=y), dit(x, t, y=y), dit(x, t, y=torch.tensor([10, 10]))
    assert g.learn_sigma and out.shape == cond.shape
    torch.testing.assert_close(out[:, 1:], cond[:, 1:], rtol=0, atol=1e-6)  # the conditional variance output
    torch.testing.assert_close(out[:, :1], uncond[:, :1] + 4 * (cond[:, :1] - uncond[:, :1]), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# classifier guidance
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_clf():
    from diffu.nn import NoisyClassifier

    with seeded(0):
        clf = NoisyClassifier(channels=8, channel_mult=(1, 2), attn_resolutions=(), image_size=8, num_classes=3)
        for p in clf.parameters():
            torch.nn.init.normal_(p, std=0.2)
    return clf.eval()


def test_classifier_guidance_gradient_matches_finite_differences(noisy_clf):
    from diffu.guidance import ClassifierGuidance

    clf = noisy_clf.double()
    try:
        cg = ClassifierGuidance(clf, 2.5, y=torch.tensor([0, 2]))
        g = torch.Generator().manual_seed(0)
        x, v = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64), torch.randn(2, 1, 8, 8, generator=g).double()
        t = torch.tensor([100.0, 700.0], dtype=torch.float64)
        grad = cg(x, t)
        h = 1e-5
        with torch.no_grad():
            fd = (cg.log_prob(x + h * v, t) - cg.log_prob(x - h * v, t)) / (2 * h)  # per-image directional derivative
        torch.testing.assert_close((grad * v).flatten(1).sum(1), 2.5 * fd, rtol=1e-6, atol=1e-8)
        assert grad.abs().max() > 0
    finally:
        clf.float()


def test_classifier_guidance_scale_zero_is_the_unguided_sampler(unet, noisy_clf):
    from diffu.guidance import ClassifierGuidance
    from diffu.samplers import ddpm

    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    kw = dict(model_kwargs={"y": torch.tensor([3, 3])}, progress=False)
    zero = ClassifierGuidance(noisy_clf, 0.0, y=1)

    def gen():
        return torch.Generator().manual_seed(7)

    for run in (lambda **k: ddpm(unet, x_T, linear_schedule(), steps=5, generator=gen(), **k),
                lambda **k: ddim(unet, x_T, linear_schedule(), steps=5, eta=1.0, generator=gen(), **k)):  # fmt: skip
        base = run(**kw)
        assert torch.equal(run(cond_fn=zero, **kw), base)
        assert (run(cond_fn=ClassifierGuidance(noisy_clf, 5.0, y=1), **kw) - base).abs().max() > 1e-5


def test_ddpm_guidance_is_a_mean_shift_by_the_step_variance():
    from diffu.samplers import ddpm_step

    s = linear_schedule()
    g = torch.Generator().manual_seed(0)
    x, eps, noise, grad = (torch.randn(2, 1, 4, 4, generator=g) for _ in range(4))
    for variance, var in (("fixedsmall", s.posterior_variance[300]), ("fixedlarge", s.betas[300])):
        a, _ = ddpm_step(s, x, 300, eps, variance=variance, noise=noise)
        b, _ = ddpm_step(s, x, 300, eps, variance=variance, noise=noise, guidance=grad)
        torch.testing.assert_close(b - a, var.float() * grad, rtol=1e-4, atol=1e-7)
    a, _ = ddpm_step(s, x, 0, eps)
    b, _ = ddpm_step(s, x, 0, eps, guidance=grad)  # β̃_0 = 0: the last fixedsmall step is not shifted
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="guidance must have"):
        ddpm_step(s, x, 300, eps, noise=noise, guidance=grad[:1, :, :2])


def test_ddim_guidance_is_an_eps_shift():
    from diffu.samplers import ddim_step

    s = linear_schedule()
    const = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    x_T = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(2))

    class Model(torch.nn.Module):
        def forward(self, x, t):
            return 0.3 * x

    out = ddim(Model(), x_T, s, timesteps=[500], cond_fn=lambda x, t: const, progress=False)
    eps = 0.3 * x_T - (1 - s.alpha_bar[500]).sqrt() * const
    torch.testing.assert_close(out, ddim_step(s, x_T, 500, -1, eps)[0])
    with pytest.raises(ValueError, match="cond_fn must return"):
        ddim(Model(), x_T, s, timesteps=[500], cond_fn=lambda x, t: const[..., :2], progress=False)


def test_classifier_guidance_bad_input(noisy_clf):
    from diffu.guidance import ClassifierGuidance

    with pytest.raises(ValueError, match="scale"):
        ClassifierGuidance(noisy_clf, -1.0, y=0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        ClassifierGuidance(noisy_clf, 1.0, y=3)
    with pytest.raises(ValueError, match="integers"):
        ClassifierGuidance(noisy_clf, 1.0, y=torch.tensor([0.5]))
    cg = ClassifierGuidance(noisy_clf, 1.0)
    with pytest.raises(ValueError, match="no labels"):
        cg(torch.zeros(2, 1, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match=r"scalar or \(2,\)"):
        ClassifierGuidance(noisy_clf, 1.0, y=torch.tensor([0, 1, 2]))(torch.zeros(2, 1, 8, 8), torch.zeros(2))
    # labels from the sampler's model_kwargs when none were given
    assert cg(torch.zeros(2, 1, 8, 8), torch.zeros(2), y=torch.tensor([0, 1])).shape == (2, 1, 8, 8)


def test_noisy_classifier_shapes_and_errors(noisy_clf):
    out = noisy_clf(torch.randn(3, 1, 8, 8), torch.tensor(5.0))
    assert out.shape == (3, 3)
    with pytest.raises(ValueError, match="x must be"):
        noisy_clf(torch.randn(3, 1, 9, 9), torch.zeros(3))
    with pytest.raises(ValueError, match="t must be"):
        noisy_clf(torch.randn(3, 1, 8, 8), torch.zeros(2))


def test_noisy_classifier_loss_is_seeded_and_trains(noisy_clf):
    import copy

    from diffu.train import noisy_classifier_loss

    x, y = torch.randn(8, 1, 8, 8).clamp(-1, 1), torch.randint(0, 3, (8,))
    m = copy.deepcopy(noisy_clf).train()
    a = noisy_classifier_loss(m, linear_schedule(), x, y, torch.Generator().manual_seed(0))
    b = noisy_classifier_loss(m, linear_schedule(), x, y, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.requires_grad
    a.backward()
    assert all(p.grad is not None for p in m.head.parameters())


def test_classifier_accuracy_by_t(noisy_clf):
    from diffu.guidance import classifier_accuracy_by_t

    x, y = torch.randn(20, 1, 8, 8), torch.randint(0, 3, (20,))
    a = classifier_accuracy_by_t(noisy_clf, linear_schedule(), x, y, edges=(0, 1, 500, 1000))
    assert list(a) == ["0", "1-499", "500-999"] and all(0 <= v <= 1 for v in a.values())
    assert a == classifier_accuracy_by_t(noisy_clf, linear_schedule(), x, y, edges=(0, 1, 500, 1000))
    with pytest.raises(ValueError, match="edges"):
        classifier_accuracy_by_t(noisy_clf, linear_schedule(), x, y, edges=(0, 0, 10))


# ----------------------------------------------------------------------------------------------------------------
# plug-and-play priors
# ----------------------------------------------------------------------------------------------------------------


def test_pnp_timesteps_follow_the_official_annealing():
    import math

    from diffu.guidance import pnp_timesteps

    ts = pnp_timesteps(1000)
    i = 137
    assert ts[i] == int(((1000 - i) + (1000 - i) // 4 * math.cos(i / 50)) / 1000 * 1000)
    assert ts.min() >= 1 and ts.max() <= 999 and ts[0] == 999 and ts[-1] <= 2
    assert ts[:100].mean() > ts[450:550].mean() > ts[-100:].mean()  # noisy to clean
    with pytest.raises(ValueError, match="steps"):
        pnp_timesteps(0)


def test_pnp_with_a_blind_prior_minimises_the_constraint():
    """With ε̂ ≡ 0 the denoising loss ‖ε‖² does not depend on x, so only the constraint moves x."""
    from diffu.guidance import plug_and_play

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


def test_pnp_is_seeded_and_validates(unet):
    from diffu.guidance import plug_and_play
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
    from diffu.guidance import classifier_constraint, fidelity_constraint

    x = torch.randn(3, 1, 8, 8)
    c = classifier_constraint(noisy_clf, 2)
    with torch.no_grad():
        logits = noisy_clf(x, torch.zeros(3))
        assert torch.allclose(c(x), -torch.log_softmax(logits, 1)[:, 2])
        t = torch.full((3,), 400.0)
        assert torch.allclose(c(x, t), -torch.log_softmax(noisy_clf(x, t), 1)[:, 2])
    with pytest.raises(ValueError, match="labels must be in"):
        classifier_constraint(noisy_clf, 5)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    f = fidelity_constraint(lambda z: mask * z, mask * x)
    assert torch.allclose(f(x), torch.zeros(3)) and torch.allclose(f(x + mask), mask.mean().expand(3))


def test_pnp_noisy_constraint_sees_the_noisy_sample(unet):
    from diffu.guidance import plug_and_play

    seen = []

    def c(x_t, t):
        seen.append((x_t.detach().clone(), t.clone()))
        return x_t.mean((1, 2, 3))

    plug_and_play(unet, c, (2, 1, 8, 8), linear_schedule(), steps=3, timesteps=[900, 500, 10], noisy_constraint=True,
                  model_kwargs={"y": torch.tensor([3, 3])}, generator=torch.Generator().manual_seed(0),
                  progress=False)  # fmt: skip
    assert [int(t[0]) for _, t in seen] == [900, 500, 10]
    assert seen[0][0].abs().max() > 1.0  # x_t at t = 900 is mostly noise (not clipped to [-1, 1])
