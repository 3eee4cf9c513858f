"""The caption sampler of the text-to-image model (diffu.text_to_image, §2.6)."""

import pytest
import torch

from diffu.captions import vocabulary
from diffu.nn import MMDiT, MMDiTConfig
from diffu.text_to_image import sample_captions
from diffu.train import seeded


@pytest.fixture(scope="module")
def t2i_small():
    """A tiny MMDiT for 2-channel 8×8 images: the sampler must take its image shape from the config."""
    with seeded(0):
        net = MMDiT(MMDiTConfig(vocab=tuple(vocabulary()), image_size=8, in_channels=2, patch_size=4, hidden_size=16,
                                depth=1, num_heads=2))  # fmt: skip
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
    return net.eval()


def test_sample_captions_is_seeded():
    from diffu.pretrained import load

    m = load("fmnist_t2i")
    caps = ["a bag", "a dark coat", "light trousers"]
    a = sample_captions(m, caps, scale=2.0, steps=2, seed=3)
    b = sample_captions(m, caps, scale=2.0, steps=2, seed=3)
    assert a.shape == (3, 1, 28, 28) and torch.equal(a, b) and torch.isfinite(a).all()
    assert not torch.equal(a, sample_captions(m, caps, scale=2.0, steps=2, seed=4))


def test_sample_captions_takes_the_image_shape_from_the_model(t2i_small, gen):
    """The shape comes from ``model.config``; each batch starts from noise of its own seeded generator and runs
    DDIM with classifier-free guidance against the empty caption."""
    from diffu.guidance import ClassifierFreeGuidance
    from diffu.samplers import ddim
    from diffu.schedules import linear_schedule

    caps = ["a bag", "a dark coat", "light trousers"]
    x = sample_captions(t2i_small, caps, scale=2.0, steps=2, seed=1, batch=2)
    assert x.shape == (3, 2, 8, 8) and torch.isfinite(x).all() and x.abs().max() <= 1
    guided = ClassifierFreeGuidance(t2i_small, 2.0, {"text": t2i_small.tokenizer([""])})
    ref = []
    for start in (0, 2):
        g = gen(1 * 100_003 + start)
        x_T = torch.randn(len(caps[start : start + 2]), 2, 8, 8, generator=g)
        with torch.no_grad():
            ref.append(ddim(guided, x_T, linear_schedule(), steps=2, generator=g, progress=False, clip_x0=True,
                            model_kwargs={"text": t2i_small.tokenizer(caps[start : start + 2])}))  # fmt: skip
    torch.testing.assert_close(x, torch.cat(ref), rtol=0, atol=0)
    assert not torch.equal(x, sample_captions(t2i_small, caps, scale=0.0, steps=2, seed=1, batch=2))


def test_sample_captions_validates(t2i_small):
    with pytest.raises(TypeError, match="captions must be a sequence of strings"):
        sample_captions(t2i_small, "a bag")  # a string is not a list of captions
    with pytest.raises(TypeError, match="captions must be a sequence of strings"):
        sample_captions(t2i_small, ["a bag", 3])
    with pytest.raises(ValueError, match="at least one caption"):
        sample_captions(t2i_small, [])
    with pytest.raises(ValueError, match="batch"):
        sample_captions(t2i_small, ["a bag"], batch=0)
    with pytest.raises(ValueError, match="scale"):
        sample_captions(t2i_small, ["a bag"], scale=-1.0)


def test_sample_captions_validates_every_argument_up_front(t2i_small):
    nan = float("nan")
    for kw, error, match in (
        ({"scale": nan}, ValueError, "scale must be a finite number >= 0"),
        ({"steps": 0}, ValueError, r"steps must be an integer in \[1, 1000\]"),
        ({"steps": 2.5}, ValueError, "steps must be an integer"),
        ({"seed": -1}, ValueError, "seed must be an integer"),
        ({"batch": 1.0}, ValueError, "batch must be an integer"),
        ({"device": "gpu"}, ValueError, "device must name a torch device"),
        ({"device": 0}, TypeError, "device must be"),
    ):
        with pytest.raises(error, match=match):
            sample_captions(t2i_small, ["a bag"], **kw)
    with pytest.raises(TypeError, match="captions must be a sequence of strings"):
        sample_captions(t2i_small, (c for c in ["a bag"]))  # a generator was consumed by the check before
    with pytest.raises(TypeError, match="model must be a text-to-image network"):
        sample_captions(torch.nn.Linear(2, 2), ["a bag"])
    with pytest.raises(TypeError, match="model must be callable"):
        sample_captions("t2i", ["a bag"])
