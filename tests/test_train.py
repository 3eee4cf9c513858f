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
