"""Guidance (chapters §2.3, §2.6): classifier-free guidance as a model wrapper any sampler can call.

Classifier-free guidance (Ho & Salimans 2022) mixes the conditional and unconditional predictions of one network
trained with a null condition: ``ε̃ = ε_u + s (ε_c − ε_u)``. ``s = 1`` is the conditional model, ``s = 0`` the
unconditional one; the paper writes ``ε̃ = (1 + w) ε_c − w ε_u``, i.e. ``s = 1 + w``.
"""

from __future__ import annotations

import torch

__all__ = ["ClassifierFreeGuidance", "sample_captions"]


class ClassifierFreeGuidance:
    """``ClassifierFreeGuidance(model, scale, null)(x_t, t, **cond) = ε_u + scale (ε_c − ε_u)``.

    Both branches run in one batched forward pass of ``2N`` inputs. ``null`` gives the unconditional inputs: a dict
    with the same keys as ``cond`` whose tensors have batch size 1 (broadcast) or N, e.g. ``{"y": tensor([10])}`` for
    the class-conditional UNet or ``{"text": model.tokenizer([""])}`` for the text-to-image MMDiT. The wrapper has
    the model's ``prediction`` attribute, so every sampler of the book accepts it in place of the model.
    """

    def __init__(self, model, scale: float, null: dict):
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        if not null:
            raise ValueError("null must give the unconditional inputs, e.g. {'y': torch.tensor([10])}")
        self.model, self.scale, self.null = model, float(scale), null
        self.prediction = getattr(model, "prediction", "eps")

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        if set(cond) != set(self.null):
            raise ValueError(f"conditioning keys {sorted(cond)} do not match the null condition's {sorted(self.null)}")
        n = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(n) if t.ndim == 0 else t
        both = {}
        for k, c in cond.items():
            u = self.null[k].to(c.device)
            both[k] = torch.cat([c, u.expand(n, *u.shape[1:]) if u.shape[0] == 1 else u])
        out_c, out_u = self.model(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
        return torch.lerp(out_u, out_c, self.scale)  # exact ε_c at scale 1 and ε_u at scale 0


def sample_captions(model, captions, scale=3.0, steps=50, seed=0, batch=128, device=None):
    """One sample per caption from a text-to-image model (:class:`~diffu.nn.MMDiT`): DDIM-``steps`` (η = 0) with
    classifier-free guidance ``scale`` against the empty caption. The batch starting at caption ``i`` draws its
    noise from a generator seeded ``seed · 100003 + i``: the same seed and batch size give the same samples. §2.6."""
    from .samplers import ddim
    from .schedules import linear_schedule

    guided = ClassifierFreeGuidance(model, scale, {"text": model.tokenizer([""])})
    out = []
    for start in range(0, len(captions), batch):
        caps = list(captions[start : start + batch])
        g = torch.Generator(device=device).manual_seed(seed * 100_003 + start)
        x_T = torch.randn(len(caps), 1, 28, 28, generator=g, device=device)
        with torch.no_grad():
            out.append(ddim(guided, x_T, linear_schedule(), steps=steps, generator=g, progress=False, clip_x0=True,
                            model_kwargs={"text": model.tokenizer(caps, device=device)}).cpu())  # fmt: skip
    return torch.cat(out)
