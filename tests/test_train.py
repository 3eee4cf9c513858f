import pytest
import torch

from diffu.data import toy_2d
from diffu.nn import MLPDenoiser
from diffu.schedules import linear_schedule
from diffu.train import TrainConfig, diffusion_loss, load_checkpoint, seeded, train

SCHED = linear_schedule(100)


def _loss(m, x, generator):
    return diffusion_loss(m, SCHED, x, generator)


def _model(seed=0):
    with seeded(seed):
        return MLPDenoiser(2, 32, 2)


def test_seeded_restores_global_rng():
    before = torch.get_rng_state()
    with seeded(5):
        a = torch.rand(3)
    with seeded(5):
        b = torch.rand(3)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), before)


def test_training_reduces_held_out_loss():
    data = (toy_2d("moons", 2000, generator=torch.Generator().manual_seed(0)),)
    held_out = toy_2d("moons", 4000, generator=torch.Generator().manual_seed(1))
    with seeded(0):
        model = MLPDenoiser(2, 64, 3)

    def eval_loss(m):
        with torch.no_grad():
            return float(diffusion_loss(m, SCHED, held_out, torch.Generator().manual_seed(2)))

    before = eval_loss(model)
    res = train(model, _loss, data, TrainConfig(steps=400, batch_size=128, lr=3e-3), progress=False)
    assert res.step == 400 and res.ema is not None
    assert eval_loss(res.model) < 0.75 * before, (before, eval_loss(res.model))


def test_resume_gives_identical_weights(tmp_path):
    """Stop after 37 steps, resume from the checkpoint, and end exactly where an uninterrupted run ends."""
    data = (toy_2d("8gaussians", 1000, generator=torch.Generator().manual_seed(0)),)
    cfg = TrainConfig(steps=80, batch_size=64, lr=1e-3, warmup=10, ckpt_every=25, seed=3)
    full = train(_model(), _loss, data, cfg, progress=False)
    ckpt = tmp_path / "run.safetensors"
    part = train(_model(), _loss, data, cfg, checkpoint=ckpt, stop_after=37, progress=False)
    assert part.step == 37 and ckpt.exists() and not (tmp_path / "run.safetensors.tmp").exists()
    resumed = train(_model(seed=99), _loss, data, cfg, checkpoint=ckpt, progress=False)  # weights come from ckpt
    assert resumed.step == 80 and resumed.losses == pytest.approx(full.losses)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)
    step, losses = load_checkpoint(ckpt, _model())
    assert step == 80 and len(losses) == 80


def test_resume_beyond_steps_is_refused(tmp_path):
    data = (torch.randn(100, 2),)
    ckpt = tmp_path / "c.safetensors"
    train(_model(), _loss, data, TrainConfig(steps=10, batch_size=8), checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="beyond"):
        train(_model(), _loss, data, TrainConfig(steps=5, batch_size=8), checkpoint=ckpt, progress=False)


def test_label_dropout_uses_null_class():
    seen = []

    class Spy(MLPDenoiser):
        def forward(self, x, t, y=None):
            seen.append(y.clone())
            return super().forward(x, t, y)

    m = Spy(2, 8, 1, num_classes=3)
    y = torch.zeros(4000, dtype=torch.long)
    diffusion_loss(m, SCHED, torch.randn(4000, 2), torch.Generator().manual_seed(0), y=y, p_uncond=0.1)
    frac = float((seen[0] == 3).float().mean())
    assert 0.08 < frac < 0.12
    with pytest.raises(ValueError, match="p_uncond"):
        diffusion_loss(m, SCHED, torch.randn(4, 2), y=y[:4], p_uncond=1.5)


@pytest.mark.parametrize(
    "kw,match",
    [({"steps": 0}, "steps"), ({"batch_size": 0}, "batch_size"), ({"lr": 0}, "lr"), ({"ema_decay": 1.0}, "ema"),
     ({"grad_clip": -1.0}, "grad_clip"), ({"warmup": -1}, "warmup")],
)  # fmt: skip
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_data_validation():
    with pytest.raises(ValueError, match="same first dimension"):
        train(_model(), _loss, (torch.randn(5, 2), torch.randn(4)), TrainConfig(steps=1), progress=False)


def test_classifier_loss_flips_and_learns():
    from diffu.train import classifier_loss

    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x = torch.randn(64, 1, 2, 2)
    y = (x[:, 0, 0, 0] + x[:, 0, 0, 1] > 0).long()  # symmetric under a horizontal flip
    loss = classifier_loss(m, x, y, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and float(loss.detach()) > 0
    assert float(classifier_loss(m, x, y, flip=False).detach()) == pytest.approx(
        float(torch.nn.functional.cross_entropy(m(x), y))
    )


def test_diffusion_loss_target_follows_prediction_type():
    """An x0-predicting model is trained against x0: a model that returns the clean data has zero loss."""
    x0 = torch.randn(32, 2)

    class Oracle(torch.nn.Module):
        prediction = "x0"

        def forward(self, x_t, t):
            return x0

    assert float(diffusion_loss(Oracle(), SCHED, x0, torch.Generator().manual_seed(0))) == pytest.approx(0, abs=1e-10)


@pytest.mark.gpu
def test_resume_on_gpu(tmp_path):
    data = (toy_2d("moons", 500, generator=torch.Generator().manual_seed(0)),)
    cfg = TrainConfig(steps=30, batch_size=32, ckpt_every=10, seed=1)
    full = train(_model().cuda(), _loss, data, cfg, progress=False)
    ckpt = tmp_path / "gpu.safetensors"
    train(_model().cuda(), _loss, data, cfg, checkpoint=ckpt, stop_after=13, progress=False)
    resumed = train(_model().cuda(), _loss, data, cfg, checkpoint=ckpt, progress=False)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_diffusion_loss_passes_model_kwargs():
    seen = {}

    class Probe(torch.nn.Module):
        prediction = "eps"

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, text=None):
            seen["text"] = text
            return x * self.w

    ids = torch.tensor([[1, 2], [1, 3]])
    loss = diffusion_loss(Probe(), linear_schedule(), torch.zeros(2, 3), model_kwargs={"text": ids})
    assert torch.equal(seen["text"], ids) and torch.isfinite(loss)


# ----------------------------------------------------------------------------------------------------------------
# argument checks (issue 18)
# ----------------------------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "kw,error,match",
    [({"lr": NAN}, ValueError, "lr must be a finite number > 0, got nan"),
     ({"steps": 2.5}, ValueError, "steps must be an integer >= 1, got 2.5"),
     ({"lr": INF}, ValueError, "lr must be a finite number"),
     ({"lr": "1e-3"}, TypeError, "lr must be a finite number"),
     ({"steps": True}, ValueError, "steps must be an integer"),
     ({"batch_size": 64.0}, ValueError, "batch_size must be an integer"),
     ({"warmup": 1.5}, ValueError, "warmup must be an integer"),
     ({"weight_decay": -0.1}, ValueError, "weight_decay must be a finite number >= 0"),
     ({"weight_decay": NAN}, ValueError, "weight_decay must be a finite number"),
     ({"grad_clip": NAN}, ValueError, "grad_clip must be a finite number > 0"),
     ({"grad_clip": 0.0}, ValueError, "grad_clip must be a finite number > 0"),
     ({"ema_decay": NAN}, ValueError, r"ema_decay must be a finite number in \[0, 1\)"),
     ({"ema_decay": -0.5}, ValueError, "ema_decay"),
     ({"seed": -1}, ValueError, "seed must be an integer"),
     ({"seed": 1.0}, ValueError, "seed must be an integer"),
     ({"ckpt_every": -1}, ValueError, "ckpt_every must be an integer >= 0"),
     ({"ckpt_every": 0.5}, ValueError, "ckpt_every must be an integer")],
)  # fmt: skip
def test_regression_train_config_validates_every_field(kw, error, match):
    """TrainConfig(lr=nan, steps=2.5) was accepted (NaN passes ``lr <= 0``; 2.5 steps ran 3)."""
    with pytest.raises(error, match=match):
        TrainConfig(**kw)


def test_train_config_valid_values_unchanged():
    cfg = TrainConfig(steps=3, batch_size=2, lr=1, warmup=0, weight_decay=0, grad_clip=None, ema_decay=None, seed=5)
    assert (cfg.lr, cfg.grad_clip, cfg.ema_decay) == (1, None, None)


def test_seeded_validates():
    with pytest.raises(ValueError, match="seed must be an integer"):
        with seeded(1.5):
            pass
    with pytest.raises(TypeError, match="device must be"):
        with seeded(0, device=3):
            pass


def test_losses_validate_their_arguments():
    from diffu.train import classifier_loss, label_kwargs, noisy_classifier_loss

    m = MLPDenoiser(2, 8, 1, num_classes=3)
    x = torch.randn(4, 2)
    with pytest.raises(TypeError, match="model must be callable"):
        diffusion_loss(None, SCHED, x)
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule"):
        diffusion_loss(m, None, x)
    with pytest.raises(ValueError, match=r"x0 must be a floating-point tensor.*from_uint8"):
        diffusion_loss(m, SCHED, x.long())  # int64 data gave exactly the noise as x_t
    with pytest.raises(ValueError, match=r"y must have shape \(4,\)"):
        diffusion_loss(m, SCHED, x, y=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="y must be an integer tensor"):
        diffusion_loss(m, SCHED, x, y=torch.zeros(4))
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator.*manual_seed\(3\)"):
        diffusion_loss(m, SCHED, x, generator=3)
    with pytest.raises(ValueError, match="p_uncond must be a finite number"):
        diffusion_loss(m, SCHED, x, y=torch.zeros(4, dtype=torch.long), p_uncond=NAN)
    with pytest.raises(TypeError, match="model_kwargs must be a dict"):
        diffusion_loss(m, SCHED, x, model_kwargs=[1])
    with pytest.raises(ValueError, match="model must be class-conditional"):
        label_kwargs(torch.nn.Linear(2, 2), torch.zeros(4, dtype=torch.long), 0.5)
    assert label_kwargs(None, None, 0.5) == {}
    clf, xi, y = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), torch.randn(3, 1, 2, 2), torch.ones(3)
    with pytest.raises(ValueError, match="y must be an integer tensor"):
        classifier_loss(clf, xi, y)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        classifier_loss(clf, xi.flatten(1), y.long())
    with pytest.raises(TypeError, match="flip must be True or False"):
        classifier_loss(clf, xi, y.long(), flip="yes")
    with pytest.raises(ValueError, match="x0 must be a floating-point tensor"):
        noisy_classifier_loss(clf, SCHED, xi.long(), y.long())


def test_train_validates_its_arguments(tmp_path):
    data = (torch.randn(10, 2),)
    cfg = TrainConfig(steps=1, batch_size=2)
    with pytest.raises(TypeError, match="data must be a sequence of tensors"):
        train(_model(), _loss, data[0], cfg, progress=False)  # a tensor, not (tensor,)
    with pytest.raises(ValueError, match=r"data\[1\] must be a tensor"):
        train(_model(), _loss, (data[0], [1, 2]), cfg, progress=False)
    with pytest.raises(ValueError, match="at least one sample"):
        train(_model(), _loss, (torch.zeros(0, 2),), cfg, progress=False)
    nan = data[0].clone()
    nan[4, 1] = NAN
    with pytest.raises(ValueError, match=r"data\[0\] must be finite"):
        train(_model(), _loss, (nan,), cfg, progress=False)
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        train(_model(), _loss, data, {"steps": 1}, progress=False)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        train(_model(), None, data, cfg, progress=False)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        train(lambda x: x, _loss, data, cfg, progress=False)
    with pytest.raises(ValueError, match="model must have parameters"):
        train(torch.nn.Identity(), _loss, data, cfg, progress=False)
    with pytest.raises(ValueError, match="stop_after must be an integer >= 1"):
        train(_model(), _loss, data, cfg, stop_after=0, progress=False)
    with pytest.raises(TypeError, match="checkpoint must be a str or a path"):
        train(_model(), _loss, data, cfg, checkpoint=3, progress=False)
    with pytest.raises(TypeError, match="resume must be True or False"):
        train(_model(), _loss, data, cfg, resume="no", progress=False)


def test_checkpoint_functions_validate(tmp_path):
    from safetensors.torch import save_file

    from diffu.train import save_checkpoint

    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        save_checkpoint(tmp_path / "c.safetensors", _model(), step=-1)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        save_checkpoint(tmp_path / "c.safetensors", {"w": 1})
    with pytest.raises(ValueError, match=r"losses\[1\] must be a finite number"):
        save_checkpoint(tmp_path / "c.safetensors", _model(), losses=[0.5, NAN])
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        save_checkpoint(tmp_path / "c.safetensors", _model(), optimizer="adam")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_checkpoint(tmp_path / "missing.safetensors", _model())
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a diffu checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors", _model())


def test_regression_label_kwargs_checks_labels_against_num_classes():
    """label_kwargs(y=[0, 7]) for a 3-class model returned the labels silently (they fail deep inside the
    network's embedding, or index another class's row)."""
    from diffu.train import label_kwargs

    m = MLPDenoiser(2, 8, 1, num_classes=3)
    for p in (0.0, 0.5):
        with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 3\], got values in \[0, 7\]"):
            label_kwargs(m, torch.tensor([0, 7]), p)
        with pytest.raises(ValueError, match=r"y must hold class indices"):
            label_kwargs(m, torch.tensor([-1, 0]), p)
    y = torch.tensor([0, 2, 3])  # the null label 3 is a valid input (already dropped)
    assert torch.equal(label_kwargs(m, y, 0.0)["y"], y)
    with pytest.raises(ValueError, match=r"y must hold class indices"):
        diffusion_loss(m, SCHED, torch.randn(2, 2), y=torch.tensor([0, 4]))
    # without a num_classes the range is unknown: passed through as before
    assert torch.equal(label_kwargs(torch.nn.Linear(2, 2), torch.tensor([0, 7]), 0.0)["y"], torch.tensor([0, 7]))


def test_regression_classifier_loss_checks_labels_before_cross_entropy():
    """A label >= the number of logits raised IndexError ("Target 10 is out of bounds") inside torch."""
    from diffu.train import classifier_loss, noisy_classifier_loss

    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.randn(4, 1, 2, 2)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 2\], got values in \[0, 10\]"):
        classifier_loss(clf, x, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 2\]"):
        classifier_loss(clf, x, torch.tensor([0, -1, 2, 1]), flip=False)
    with pytest.raises(ValueError, match=r"model\(x\) must have 2 dimensions"):
        classifier_loss(torch.nn.Identity(), x, torch.tensor([0, 1, 2, 1]))

    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x, t):
            return self.lin(x.flatten(1))

    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 2\]"):
        noisy_classifier_loss(Noisy(), SCHED, x, torch.tensor([0, 1, 2, 3]))
    # valid labels: the same loss as the plain cross-entropy (no change for valid input)
    y, g = torch.tensor([0, 1, 2, 1]), torch.Generator().manual_seed(0)
    ref = torch.nn.functional.cross_entropy(clf(x), y)
    assert torch.equal(classifier_loss(clf, x, y, g, flip=False), ref)


def test_classifier_loss_documents_nan_propagation():
    from diffu.train import classifier_loss

    assert "NaN" in classifier_loss.__doc__
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.randn(2, 1, 2, 2)
    x[0, 0, 0, 0] = float("nan")
    assert torch.isnan(classifier_loss(clf, x, torch.tensor([0, 1]), flip=False))


def test_regression_save_checkpoint_to_a_missing_folder(tmp_path):
    """Writing into a folder that does not exist raised safetensors' SafetensorError (an I/O error on a .tmp)."""
    from diffu.train import save_checkpoint

    target = tmp_path / "no" / "such" / "ck.safetensors"
    with pytest.raises(ValueError, match=r"path must be a file in an existing folder.*create it first"):
        save_checkpoint(target, _model())
    assert not (tmp_path / "no").exists()
    with pytest.raises(ValueError, match="path must be a file to write the checkpoint to, got the folder"):
        save_checkpoint(tmp_path, _model())


def test_regression_load_checkpoint_of_a_non_checkpoint_file(tmp_path):
    """A file that is not safetensors (JSON, text) raised SafetensorError ("header too large")."""
    bad = tmp_path / "manifest.json"
    bad.write_text('{"not": "a checkpoint"}\n')
    with pytest.raises(ValueError, match=r"path .*manifest.json.* is not a diffu checkpoint \(not a safetensors"):
        load_checkpoint(bad, _model())


def test_regression_load_checkpoint_of_another_architecture(tmp_path):
    """Loading into another network raised load_state_dict's RuntimeError after copying the weights that matched."""
    from diffu.train import save_checkpoint

    path = save_checkpoint(tmp_path / "ck.safetensors", _model(0), step=2, losses=[0.1])
    other = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"model must be the architecture saved in .*Linear.*missing \['bias'"):
        load_checkpoint(path, other)
    wider = MLPDenoiser(2, 16, 2)  # same names, other shapes
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(ValueError, match=r"model must be the architecture.*shape \(model vs file\)"):
        load_checkpoint(path, wider)
    assert all(torch.equal(before[k], v) for k, v in wider.state_dict().items())  # nothing was half-loaded
    with pytest.raises(ValueError, match="ema must be the architecture .*holds no ema weights"):
        load_checkpoint(path, _model(), ema=_model())  # saved without an EMA copy
    m = _model(1)
    assert load_checkpoint(path, m) == (2, [0.1])
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), _model(0).state_dict().values()))
