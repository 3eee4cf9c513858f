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
        # the wrapper's message, or the network's (the Counting wrapper has no num_classes); both name y
        with pytest.raises(ValueError, match=r"y must be (\(4,\) integer labels )?in \[0, 3\]"):
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
    with pytest.raises(ValueError, match=r"y must be in \[0, 2\]"):  # named as the caller's argument
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


# ----------------------------------------------------------------------------------------------------------------
# argument checks (issue 18)
# ----------------------------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("scale", [NAN, INF, -INF])
def test_regression_cfg_scale_must_be_finite(unet, scale):
    """ClassifierFreeGuidance(scale=nan) was accepted (``nan < 0`` is false) and every guided output was NaN."""
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        ClassifierFreeGuidance(unet, scale, {"y": torch.tensor([3])})
    with pytest.raises(ValueError, match="w must be a finite number"):
        ClassifierFreeGuidance.from_w(unet, scale, {"y": torch.tensor([3])})


@pytest.mark.parametrize("scale", [NAN, INF, -1.0])
def test_regression_classifier_guidance_scale_must_be_finite(noisy_clf, unet8, scale):
    from diffu.guidance import ClassifierGuidance, guided_samples

    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        ClassifierGuidance(noisy_clf, scale, y=0)
    for kind in ("cfg", "classifier"):
        with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
            guided_samples(unet8, 2, kind=kind, scale=scale, classifier=noisy_clf, steps=2)
    with pytest.raises(TypeError, match="scale must be a finite number"):
        ClassifierGuidance(noisy_clf, "2", y=0)


def test_cfg_checks_its_arguments_and_conditioning():
    def model(x, t, text):
        return x

    null = {"text": torch.zeros(1, 3)}
    with pytest.raises(TypeError, match="model must be callable"):
        ClassifierFreeGuidance("unet", 1.0, null)
    with pytest.raises(TypeError, match="null must be a dict"):
        ClassifierFreeGuidance(model, 1.0, [torch.zeros(1, 3)])
    with pytest.raises(TypeError, match=r"null\['text'\] must be a tensor with a batch dimension"):
        ClassifierFreeGuidance(model, 1.0, {"text": torch.tensor(0.0)})
    g = ClassifierFreeGuidance(model, 2.0, null)
    x, t = torch.zeros(2, 1, 4, 4), torch.zeros(2)
    assert g(x, t, text=torch.ones(2, 3)).shape == x.shape
    with pytest.raises(ValueError, match="text must be a tensor with x's batch size 2"):
        g(x, t, text=torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"null\['text'\] must have shape \(1 or 2, \*\(4,\)\)"):
        g(x, t, text=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"t must be a number or have shape \(2,\)"):
        g(x, torch.zeros(3), text=torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"null\['text'\] must have shape \(1 or 3"):  # null of batch 2, x of 3
        ClassifierFreeGuidance(model, 2.0, {"text": torch.zeros(2, 3)})(torch.zeros(3, 1), torch.zeros(3),
                                                                           text=torch.ones(3, 3))  # fmt: skip


def test_cfg_null_labels_are_checked_against_the_model(unet):
    with pytest.raises(ValueError, match=r"null\['y'\] must be in \[0, 3\]"):
        ClassifierFreeGuidance(unet.net, 1.0, {"y": torch.tensor([4])})
    with pytest.raises(ValueError, match=r"null\['y'\] must be integers"):
        ClassifierFreeGuidance(unet.net, 1.0, {"y": torch.tensor([3.0])})


def test_classifier_guidance_checks_classifier_and_logits(noisy_clf):
    from diffu.guidance import ClassifierGuidance

    with pytest.raises(TypeError, match="classifier must be callable"):
        ClassifierGuidance("clf", 1.0, y=0)

    class Wrong(torch.nn.Module):
        num_classes = 3

        def forward(self, x, t):
            return torch.zeros(x.shape[0], 2)  # two logits for three classes

    with pytest.raises(ValueError, match=r"classifier must return \(2, 3\) logits"):
        ClassifierGuidance(Wrong(), 1.0, y=0)(torch.zeros(2, 1, 8, 8), torch.zeros(2))
    cg = ClassifierGuidance(noisy_clf, 1.0, y=0)
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor.*from_uint8"):
        cg(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2))


def test_check_labels_refuses_what_is_not_labels():
    from diffu.guidance import check_labels

    with pytest.raises(TypeError, match="labels must be an integer"):
        check_labels("cat", 3)
    with pytest.raises(ValueError, match=r"labels must be a scalar or \(N,\)"):
        check_labels(torch.zeros(2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        check_labels(0, 0)
    with pytest.raises(ValueError, match=r"y must be in \[0, 2\], got values in \[0, 40\]"):
        check_labels(torch.arange(41), 3, name="y")  # long label lists are summarised


def test_classifier_accuracy_by_t_validates(noisy_clf):
    from diffu.guidance import classifier_accuracy_by_t

    s, x, y = linear_schedule(), torch.randn(6, 1, 8, 8), torch.randint(0, 3, (6,))
    with pytest.raises(ValueError, match=r"edges\[1\] must be an integer"):
        classifier_accuracy_by_t(noisy_clf, s, x, y, edges=(0, 0.5, 10))  # 0.5 was truncated to 0 before
    with pytest.raises(ValueError, match=r"edges\[1\] must be an integer in \[0, 1000\]"):
        classifier_accuracy_by_t(noisy_clf, s, x, y, edges=(0, 1001))
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        classifier_accuracy_by_t(noisy_clf, s, x, y, batch=0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        classifier_accuracy_by_t(noisy_clf, s, x, y, seed=-1)
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule"):
        classifier_accuracy_by_t(noisy_clf, None, x, y)
    bad = x.clone()
    bad[0, 0, 0, 0] = NAN
    with pytest.raises(ValueError, match="x0 must be finite"):
        classifier_accuracy_by_t(noisy_clf, s, bad, y)
    with pytest.raises(ValueError, match=r"y must be a scalar or \(6,\)"):
        classifier_accuracy_by_t(noisy_clf, s, x, y[:2])
    with pytest.raises(TypeError, match="classifier must be a torch.nn.Module"):
        classifier_accuracy_by_t(lambda x, t: x, s, x, y)


def test_class_batches_and_guided_samples_validate_up_front(unet8):
    from diffu.guidance import balanced_labels, class_batches, guided_samples

    with pytest.raises(ValueError, match="seed must be an integer"):
        class_batches(4, 2, seed=-1)  # refused when called, not at the first batch
    with pytest.raises(ValueError, match="seed must be an integer"):
        class_batches(4, 2, seed=1.5)
    with pytest.raises(ValueError, match=r"shape\[1\] must be an integer >= 1"):
        class_batches(4, 2, seed=0, shape=(1, 0, 8))
    with pytest.raises(TypeError, match="shape must be a non-empty tuple"):
        class_batches(4, 2, seed=0, shape=8)
    with pytest.raises(ValueError, match="device must name a torch device"):
        balanced_labels(4, device="gpu")
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        guided_samples(unet8, 0)  # torch.cat of no batches before
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 1000\]"):
        guided_samples(unet8, 2, steps=2.5)
    with pytest.raises(ValueError, match="kind must be one of"):
        guided_samples(unet8, 2, kind=None)


# ----------------------------------------------------------------------------------------------------------------
# errors name the caller's argument; x is checked before the labels; NaN propagates (documented)
# ----------------------------------------------------------------------------------------------------------------


def test_regression_guidance_labels_are_named_y(unet, noisy_clf):
    """The wrappers reported bad labels as "labels …" although the argument is ``y``."""
    from diffu.guidance import ClassifierGuidance

    g = ClassifierFreeGuidance(unet.net, 2.0, {"y": torch.tensor([3])})
    x, t = torch.zeros(2, 1, 8, 8), torch.zeros(2)
    with pytest.raises(ValueError, match=r"^y must be integers, got dtype torch.float32"):
        g(x, t, y=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"^y must be a scalar or \(2,\) \(x's batch size\), got shape \(3,\)"):
        g(x, t, y=torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match=r"^y must be an integer, a sequence of integers or a tensor, got str"):
        ClassifierGuidance(noisy_clf, 1.0, y="1")
    with pytest.raises(ValueError, match=r"^y must be integers"):
        ClassifierGuidance(noisy_clf, 1.0, y=1.0)
    with pytest.raises(ValueError, match=r"^y must be in \[0, 2\], got -1"):
        ClassifierGuidance(noisy_clf, 1.0, y=-1)
    cg = ClassifierGuidance(noisy_clf, 1.0)
    for meth in (cg, cg.gradient, cg.log_prob):
        with pytest.raises(ValueError, match=r"^y must be in \[0, 2\], got \[0, 3\]"):
            meth(x, t, y=torch.tensor([0, 3]))


@pytest.mark.parametrize("bad", [torch.zeros(1, 8, 8), torch.zeros(1, 2, 1, 8, 8), torch.zeros(2, 2, 8, 8)])
def test_regression_guidance_checks_x_before_the_labels(unet, noisy_clf, bad):
    """An x of the wrong rank was reported as a label mismatch ("labels must be a scalar or (1,)"); the network's
    own check_input now names x first."""
    from diffu.guidance import ClassifierGuidance

    y = torch.tensor([0, 2])
    g = ClassifierFreeGuidance(unet.net, 2.0, {"y": torch.tensor([3])})
    with pytest.raises(ValueError, match=r"^x must have shape \(N, 1, H, W\)"):
        g(bad, torch.zeros(len(bad)), y=y)
    cg = ClassifierGuidance(noisy_clf, 2.0)
    for meth in (cg, cg.gradient, cg.log_prob):
        with pytest.raises(ValueError, match=r"^x must have shape \(N, 1, H, W\)"):
            meth(bad, torch.zeros(len(bad)), y=y)


def test_regression_check_labels_names_device_and_n():
    """check_labels(device=bad) failed with "labels must be an integer, …, got Tensor"; a batch mismatch now names
    where n comes from."""
    from diffu.guidance import check_labels

    y = torch.tensor([0, 2])
    with pytest.raises(ValueError, match="device must name a torch device"):
        check_labels(y, 3, device="nodevice")
    with pytest.raises(TypeError, match="device must be a torch.device, a string or None, got float"):
        check_labels(y, 3, device=3.5)
    with pytest.raises(ValueError, match=r"labels must be a scalar or \(3,\) \(n = 3\), got shape \(2,\)"):
        check_labels(y, 3, n=3)
    assert torch.equal(check_labels(y, 3, n=2, device="cpu"), y)


def test_regression_classifier_accuracy_by_t_names_x0(noisy_clf):
    """A 2-channel x0 was reported by the classifier as "x must have shape …"."""
    from diffu.guidance import classifier_accuracy_by_t

    with pytest.raises(ValueError, match=r"^x0 must have shape \(N, 1, H, W\), got \(2, 2, 8, 8\)"):
        classifier_accuracy_by_t(noisy_clf, linear_schedule(), torch.zeros(2, 2, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"^y must be a scalar or \(2,\) \(x0's batch size\)"):
        classifier_accuracy_by_t(noisy_clf, linear_schedule(), torch.zeros(2, 1, 8, 8), torch.tensor([0, 1, 2]))


def test_nan_propagates_through_the_guidance_wrappers_as_documented(unet, noisy_clf):
    """Called at every sampler step, the wrappers check shapes only: NaN in x comes out as NaN (never a plausible
    number), as their docstrings say."""
    from diffu.guidance import ClassifierGuidance

    x = torch.zeros(2, 1, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    t, y = torch.tensor([3.0, 5.0]), torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.isnan(ClassifierFreeGuidance(unet.net, 2.0, {"y": torch.tensor([3])})(x, t, y=y)).any()
    assert torch.isnan(ClassifierGuidance(noisy_clf, 2.0, y=y)(x, t)).any()
    for cls in (ClassifierFreeGuidance, ClassifierGuidance):
        assert "NaN or inf in ``x`` or ``t`` propagates" in cls.__doc__
