"""Fashion-MNIST captions for the tiny text-to-image MMDiT."""

import pytest
import torch

from diffu.captions import CLASS_NOUNS, brightness_levels, caption, captions_for, vocabulary
from diffu.nn import WordTokenizer


def test_caption_grammar():
    assert caption(9, "dark") == "a photo of a dark ankle boot"
    assert caption(9, None, template=1, synonym=0) == "an image of an ankle boot"
    assert caption(1, "light", template=3) == "light trousers"  # plural nouns take no article
    assert caption(0, None, template=3, synonym=1) == "a top"
    with pytest.raises(ValueError, match="label"):
        caption(10)
    with pytest.raises(ValueError, match="attribute"):
        caption(0, "red")


def test_every_caption_fits_the_tokenizer():
    tok = WordTokenizer(vocabulary(), max_len=12)
    caps = [caption(c, a, tp, s) for c in range(10) for a in ("dark", None, "light") for tp in range(4)
            for s in range(len(CLASS_NOUNS[c]))]  # fmt: skip
    ids = tok(caps)
    assert tok.decode(ids) == caps


def test_brightness_levels_are_per_class_terciles():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 1, 4, 4, generator=g) * 2 - 1
    y = torch.arange(300) % 3
    x[y == 2] += 0.5  # a brighter class must not push all its images into "light"
    lev = brightness_levels(x, y)
    for c in range(3):
        counts = torch.bincount(lev[y == c], minlength=3)
        assert counts.tolist() == [33, 34, 33]
    mean = x.flatten(1).mean(1)
    assert mean[(lev == 0) & (y == 0)].max() < mean[(lev == 2) & (y == 0)].min()


def test_captions_for_is_seeded_and_consistent():
    y, lev = torch.arange(10), torch.tensor([0, 2] * 5)
    a = captions_for(y, lev, torch.Generator().manual_seed(1))
    b = captions_for(y, lev, torch.Generator().manual_seed(1))
    assert a == b and len(a) == 10
    many = captions_for(torch.full((400,), 9), torch.zeros(400, dtype=torch.long), torch.Generator().manual_seed(2))
    assert all("boot" in c and "light" not in c for c in many)
    frac_dark = sum("dark" in c for c in many) / 400
    assert 0.6 < frac_dark < 0.8  # P_ATTRIBUTE = 0.7


def test_regression_caption_template_index_in_range():
    """A negative template index silently picked a template from the end (``TEMPLATES[-1]``)."""
    with pytest.raises(ValueError, match=r"template must be an integer in \[0, 3\], got -1"):
        caption(0, template=-1)
    with pytest.raises(ValueError, match="template must be an integer"):
        caption(0, template=4)


def test_caption_arguments_are_checked():
    with pytest.raises(ValueError, match=r"label must be an integer in \[0, 9\]"):
        caption(2.5)
    with pytest.raises(ValueError, match="synonym must be an integer >= 0"):
        caption(0, synonym=-1)
    with pytest.raises(ValueError, match="attribute must be one of"):
        caption(0, ["dark"])


def test_captions_for_and_brightness_levels_validate():
    y, lev = torch.arange(4), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        captions_for(y.float(), lev)
    with pytest.raises(ValueError, match=r"levels must hold class indices in \[0, 2\]"):
        captions_for(y, lev + 1)
    with pytest.raises(ValueError, match=r"levels must have shape \(4,\)"):
        captions_for(y, lev[:2])
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        captions_for(y, lev, generator=1)
    x = torch.rand(4, 1, 4, 4)
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor.*from_uint8"):
        brightness_levels((x * 255).to(torch.uint8), y)
    with pytest.raises(ValueError, match=r"y must have shape \(4,\)"):
        brightness_levels(x, y[:3])
    with pytest.raises(ValueError, match="x must be finite"):
        brightness_levels(torch.full((4, 1, 4, 4), float("nan")), y)
