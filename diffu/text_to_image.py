"""Sampling the text-to-image model of chapter §2.6: captions in, images out.

The network is the tiny SD3-style :class:`~diffu.nn.MMDiT` (shipped as ``fmnist_t2i``), trained on Fashion-MNIST
with captions from the grammar of :mod:`diffu.captions`, 10 % of them empty: the null condition of classifier-free
guidance (:class:`~diffu.guidance.ClassifierFreeGuidance`). :func:`sample_captions` draws one image per caption.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .checks import check_callable, check_device, check_int, check_real
from .guidance import ClassifierFreeGuidance
from .samplers import ddim
from .schedules import linear_schedule

__all__ = ["sample_captions"]


def sample_captions(model, captions, scale=3.0, steps=50, seed=0, batch=128, device=None) -> torch.Tensor:
    """One sample per caption, ``(len(captions), C, H, W)`` on the CPU, from a text-to-image model such as
    :class:`~diffu.nn.MMDiT`: DDIM-``steps`` (η = 0, x̂_0 clipped) on the linear schedule with classifier-free
    guidance ``scale`` against the empty caption (Ho & Salimans 2022). §2.6.

    The image size and channels come from ``model.config`` (``image_size``, ``in_channels``); ``model.tokenizer``
    turns the captions into token ids. The batch starting at caption ``i`` draws its noise from a generator on
    ``device`` (default: the model's) seeded ``seed · 100003 + i``: the same seed and batch size give the same
    samples.

    Args:
        model: the text-to-image network (callable, with ``.config``, a callable ``.tokenizer`` and parameters).
        captions: a non-empty list or tuple of strings.
        scale: the guidance scale, a finite number >= 0; steps: DDIM steps in [1, 1000].
        seed: an integer in [0, 2**40]; batch: captions per batch, an integer >= 1.
        device: where the sampling runs (a torch.device, a string or None: the model's device).

    Raises:
        ValueError, TypeError: naming the argument that is not as above (checked before any sampling).
    """
    if isinstance(captions, str) or not isinstance(captions, Sequence) or not all(isinstance(c, str) for c in captions):
        raise TypeError(f"captions must be a sequence of strings, got {type(captions).__name__}")
    if len(captions) == 0:
        raise ValueError("captions must hold at least one caption, got none")
    check_int("batch", batch, 1)
    check_real("scale", scale, 0)
    check_int("steps", steps, 1, 1000)
    check_int("seed", seed, 0, 2**40)
    check_callable("model", model)
    cfg = getattr(model, "config", None)
    if cfg is None or not callable(getattr(model, "tokenizer", None)) or not isinstance(model, torch.nn.Module):
        raise TypeError(
            "model must be a text-to-image network (a torch.nn.Module with .config and a .tokenizer), got "
            f"{type(model).__name__}"
        )
    device = check_device("device", device)
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    guided = ClassifierFreeGuidance(model, scale, {"text": model.tokenizer([""])})
    out = []
    for start in range(0, len(captions), batch):
        caps = list(captions[start : start + batch])
        g = torch.Generator(device=device).manual_seed(seed * 100_003 + start)
        x_T = torch.randn(len(caps), cfg.in_channels, cfg.image_size, cfg.image_size, generator=g, device=device)
        with torch.no_grad():
            out.append(ddim(guided, x_T, linear_schedule(), steps=steps, generator=g, progress=False, clip_x0=True,
                            model_kwargs={"text": model.tokenizer(caps, device=device)}).cpu())  # fmt: skip
    return torch.cat(out)
