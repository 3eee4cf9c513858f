"""Sampling the text-to-image model of chapter §2.6: captions in, images out.

The network is the tiny SD3-style :class:`~diffu.nn.MMDiT` (shipped as ``fmnist_t2i``), trained on Fashion-MNIST
with captions from the grammar of :mod:`diffu.captions`, 10 % of them empty: the null condition of classifier-free
guidance (:class:`~diffu.guidance.ClassifierFreeGuidance`). :func:`sample_captions` draws one image per caption.
"""

from __future__ import annotations

import torch

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
    """
    if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
        raise TypeError(f"captions must be a sequence of strings, got {type(captions).__name__}")
    if len(captions) == 0:
        raise ValueError("captions must hold at least one caption, got none")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    cfg = model.config
    if device is None:
        device = next(model.parameters()).device
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
