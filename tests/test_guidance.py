"""Classifier-free guidance, classifier guidance and class-balanced guided sampling (diffu.guidance, §2.3)."""

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
    from diffu import flow, sde, sde_samplers
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
            return sde_samplers.pf_ode(sde.FromDiscrete(net, linear_schedule(), vp), x_T, vp, steps=4, **kw)
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
# labels, class-balanced batches and guided sampling
# ----------------------------------------------------------------------------------------------------------------


def test_check_labels():
    from diffu.guidance import check_labels

    assert torch.equal(check_labels(2, 3, n=4), torch.full((4,), 2))  # a scalar is broadcast to the batch
    assert check_labels(torch.tensor([0, 2], dtype=torch.int32), 3).dtype == torch.long
    with pytest.raises(ValueError, match="integers"):
        check_labels(torch.tensor([1.0]), 3)
    with pytest.raises(ValueError, match="integers"):
        check_labels(torch.tensor([True]), 3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\], got \[3\]"):
        check_labels(torch.tensor([3]), 3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        check_labels(-1, 3)
    with pytest.raises(ValueError, match=r"scalar or \(4,\)"):
        check_labels(torch.tensor([0, 1]), 3, n=4)


def test_balanced_labels_and_class_batches(gen):
    from diffu.guidance import balanced_labels, class_batches

    assert balanced_labels(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0] and balanced_labels(12).tolist()[-2:] == [0, 1]
    batches = list(class_batches(7, 3, seed=2, shape=(2, 4, 5), num_classes=3))
    assert [len(y) for _, y, _ in batches] == [3, 3, 1]
    assert torch.equal(torch.cat([y for _, y, _ in batches]), balanced_labels(7, 3))
    x_T, _, g = batches[1]  # the batch starting at sample 3 draws its noise first from seed · 100003 + 3
    assert x_T.shape == (3, 2, 4, 5) and torch.equal(x_T, torch.randn(3, 2, 4, 5, generator=gen(2 * 100_003 + 3)))
    ref = gen(2 * 100_003 + 3)
    torch.randn(3, 2, 4, 5, generator=ref)
    assert torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=ref))  # the sampler goes on drawing from g
    more = list(class_batches(9, 3, seed=2, shape=(2, 4, 5), num_classes=3))  # drawing more changes no sample
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches[:2], more[:2]))
    with pytest.raises(ValueError, match="batch"):
        next(class_batches(4, 0, seed=0))
    with pytest.raises(ValueError, match="num_classes"):
        balanced_labels(4, 0)
    with pytest.raises(ValueError, match="n must be"):
        balanced_labels(-1)


@pytest.fixture(scope="module")
def unet8():
    """A tiny class-conditional UNet for 8×8 images (3 classes, null label 3), with a config like the shipped one."""
    with seeded(3):
        net = UNet(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_classes=3,
                              image_size=8))  # fmt: skip
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
        torch.nn.init.normal_(net.label_emb.weight, std=1.0)  # make the label matter
    return net.eval()


def test_guided_samples_compose_class_batches_with_the_guided_sampler(unet8, noisy_clf):
    """CFG at scale 1 is the conditional sampler and classifier guidance at scale 0 the unconditional one, on the
    noise and labels of class_batches; the image shape comes from the model's config."""
    from diffu.guidance import class_batches, guided_samples
    from diffu.samplers import ddpm

    x = guided_samples(unet8, 5, kind="cfg", scale=1.0, steps=3, batch=2, seed=1)
    assert x.shape == (5, 1, 8, 8) and x.device.type == "cpu"
    ref_c, ref_u, ref_p = [], [], []
    with torch.no_grad():
        for x_T, y, g in class_batches(5, 2, seed=1, shape=(1, 8, 8), num_classes=3):
            ref_c.append(ddim(unet8, x_T, linear_schedule(), steps=3, clip_x0=True, model_kwargs={"y": y}, generator=g,
                              progress=False))  # fmt: skip
        for x_T, y, g in class_batches(5, 2, seed=1, shape=(1, 8, 8), num_classes=3):
            ref_u.append(ddim(unet8, x_T, linear_schedule(), steps=3, clip_x0=True,
                              model_kwargs={"y": torch.full_like(y, 3)}, generator=g, progress=False))  # fmt: skip
        for x_T, y, g in class_batches(5, 2, seed=1, shape=(1, 8, 8), num_classes=3):
            ref_p.append(ddpm(unet8, x_T, linear_schedule(), steps=3, model_kwargs={"y": torch.full_like(y, 3)},
                              generator=g, progress=False))  # fmt: skip
    torch.testing.assert_close(x, torch.cat(ref_c), rtol=1e-6, atol=1e-6)
    for sampler, ref in (("ddim", ref_u), ("ddpm", ref_p)):
        u = guided_samples(unet8, 5, kind="classifier", scale=0.0, classifier=noisy_clf, sampler=sampler, steps=3,
                           batch=2, seed=1)  # fmt: skip
        torch.testing.assert_close(u, torch.cat(ref), rtol=0, atol=1e-6)  # DDIM's ε shift by 0: float rounding
    g4 = guided_samples(unet8, 4, kind="classifier", scale=2.0, classifier=noisy_clf, steps=3, batch=2, seed=1)
    assert not torch.equal(g4, torch.cat(ref_u)[:4])  # the classifier moves the samples
    assert torch.equal(guided_samples(unet8, 3, kind="cfg", scale=2.0, steps=3, batch=2, seed=1)[:2],
                       guided_samples(unet8, 2, kind="cfg", scale=2.0, steps=3, batch=2, seed=1))  # fmt: skip


def test_guided_samples_errors(unet8, unet):
    from diffu.guidance import guided_samples

    with pytest.raises(ValueError, match="kind must be"):
        guided_samples(unet8, 2, kind="text")
    with pytest.raises(ValueError, match="sampler must be"):
        guided_samples(unet8, 2, sampler="euler")
    with pytest.raises(ValueError, match="needs a noise-aware classifier"):
        guided_samples(unet8, 2, kind="classifier")
    with pytest.raises(ValueError, match="config"):
        guided_samples(unet, 2)  # a wrapper without .config
