"""Captions for Fashion-MNIST, the text side of the tiny text-to-image MMDiT of chapter §2.6.

Each training image gets a fresh random caption per step from a small grammar: a template ("a photo of …",
"an image of …", …), a noun for its class with synonyms ("pullover", "sweater", "jumper"), and — for the darkest and
brightest third of its class — sometimes the attribute "dark" or "light". So the text carries two facts the model
must learn to read: what the object is and, optionally, how bright it is. Example: ``"a photo of a dark ankle boot"``.
Sampling images from captions: :func:`diffu.text_to_image.sample_captions`.
"""

from __future__ import annotations

import torch

from .checks import check_finite, check_floating, check_generator, check_int, check_labels

__all__ = ["CLASS_NOUNS", "TEMPLATES", "brightness_levels", "caption", "captions_for", "vocabulary"]

#: Nouns (synonyms) that name each Fashion-MNIST class in a caption, indexed by label.
CLASS_NOUNS = (
    ("t-shirt", "top", "tee"),
    ("trousers", "pants"),
    ("pullover", "sweater", "jumper"),
    ("dress",),
    ("coat", "jacket"),
    ("sandal",),
    ("shirt",),
    ("sneaker", "trainer"),
    ("bag", "handbag"),
    ("ankle boot", "boot"),
)
PLURAL = {"trousers", "pants"}
#: Caption templates; ``{}`` is replaced by the noun phrase (article, optional brightness word, class noun).
TEMPLATES = ("a photo of {}", "an image of {}", "a picture of {}", "{}")
ATTRIBUTES = ("dark", None, "light")  # brightness level 0, 1, 2
P_ATTRIBUTE = 0.7  # how often a dark/light image's caption says so


def vocabulary() -> list[str]:
    """Every word the grammar can produce (the tokenizer's vocabulary)."""
    words = ["a", "an", "photo", "image", "picture", "of", "dark", "light"]
    for nouns in CLASS_NOUNS:
        for noun in nouns:
            words += noun.split()
    return list(dict.fromkeys(words))


def brightness_levels(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(N,)`` level 0/1/2 = darkest / middle / brightest third of each image's class by mean pixel value.

    Args:
        x: images ``(N, …)`` (N >= 1, at least 2 dimensions), finite floating point.
        y: ``(N,)`` integer class labels in [0, 9].

    Raises:
        ValueError: images that are not a finite floating-point batch, labels of another shape, dtype or range.
    """
    check_floating(x, "x")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of images (N, ...), got shape {tuple(x.shape)}")
    check_labels(y, len(CLASS_NOUNS), x.shape[0], "y")
    check_finite(x, "x")
    mean = x.flatten(1).mean(1)
    level = torch.ones_like(y)
    for c in y.unique():
        idx = (y == c).nonzero().squeeze(1)
        lo, hi = torch.quantile(mean[idx], torch.tensor([1 / 3, 2 / 3], dtype=mean.dtype))
        level[idx[mean[idx] < lo]] = 0
        level[idx[mean[idx] > hi]] = 2
    return level


def _noun_phrase(noun: str, attribute: str | None, article: bool) -> str:
    phrase = noun if attribute is None else f"{attribute} {noun}"
    if not article or noun in PLURAL:
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def caption(label: int, attribute: str | None = None, template: int = 0, synonym: int = 0) -> str:
    """One caption, e.g. ``caption(9, "dark")`` → ``"a photo of a dark ankle boot"``.

    Args:
        label: the class, an integer in [0, 9].
        attribute: "dark", "light" or None.
        template: an index into :data:`TEMPLATES` (an integer in [0, 3]).
        synonym: which of the class's nouns (an integer >= 0, taken modulo their number).

    Raises:
        ValueError: an argument that is not as above.
    """
    check_int("label", label, 0, len(CLASS_NOUNS) - 1)
    if not (attribute is None or (isinstance(attribute, str) and attribute in ATTRIBUTES)):
        raise ValueError(f"attribute must be one of {ATTRIBUTES}, got {attribute!r}")
    check_int("template", template, 0, len(TEMPLATES) - 1)
    check_int("synonym", synonym, 0)
    nouns = CLASS_NOUNS[label]
    return TEMPLATES[template].format(_noun_phrase(nouns[synonym % len(nouns)], attribute, article=True))


def captions_for(labels: torch.Tensor, levels: torch.Tensor, generator: torch.Generator | None = None) -> list[str]:
    """A random caption per image (template, synonym and whether to state the brightness drawn from
    ``generator``).

    Args:
        labels: ``(N,)`` integer class labels in [0, 9].
        levels: ``(N,)`` integer brightness levels in [0, 2] (:func:`brightness_levels`).
        generator: a ``torch.Generator`` on ``labels``' device, or None.

    Raises:
        ValueError: labels or levels of another shape, dtype or range, a generator on another device.
        TypeError: a generator that is not a ``torch.Generator``.
    """
    check_labels(labels, len(CLASS_NOUNS), name="labels")
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got {tuple(labels.shape)}")
    check_labels(levels, len(ATTRIBUTES), labels.shape[0], "levels")
    check_generator(generator)
    if generator is not None and generator.device.type != labels.device.type:
        raise ValueError(f"generator is on {generator.device.type} but labels are on {labels.device.type}: pass a "
                         "generator of the labels' device")  # fmt: skip
    n = labels.shape[0]
    r = torch.rand(n, 3, generator=generator, device=labels.device).cpu()
    out = []
    for i, (lab, lev) in enumerate(zip(labels.tolist(), levels.tolist())):
        attr = ATTRIBUTES[lev] if r[i, 0] < P_ATTRIBUTE else None
        out.append(caption(lab, attr, int(r[i, 1] * len(TEMPLATES)), int(r[i, 2] * len(CLASS_NOUNS[lab]))))
    return out
