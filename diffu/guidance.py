"""Classifier guidance and classifier-free guidance (chapter §2.3).

- Classifier guidance (Dhariwal & Nichol 2021): a noise-aware classifier ``p_φ(y | x_t, t)`` adds
  ``s ∇_x log p_φ(y | x_t)`` to the score. :class:`ClassifierGuidance` is the ``cond_fn`` that
  :func:`diffu.samplers.ddpm` (mean shift) and :func:`diffu.samplers.ddim` (ε shift) accept.
- Classifier-free guidance (Ho & Salimans 2022) mixes the conditional and unconditional predictions of one network
  trained with a null condition: ``ε̃ = ε_u + s (ε_c − ε_u)``. ``s = 1`` is the conditional model, ``s = 0`` the
  unconditional one; the paper writes ``ε̃ = (1 + w) ε_c − w ε_u``, i.e. ``s = 1 + w``
  (:meth:`ClassifierFreeGuidance.from_w`).
- :func:`guided_samples` draws class-balanced samples (:func:`class_batches`) with either kind of guidance: the
  sweeps of §2.3 and of ``python -m diffu.bench guidance``.

Related ideas live in their own modules: the caption sampler of the text-to-image model (CFG against the empty
caption) in :mod:`diffu.text_to_image`, and diffusion models as plug-and-play priors (Graikos et al. 2022, §2.4)
in :mod:`diffu.diffusion_priors`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .samplers import ddim, ddpm
from .schedules import linear_schedule

__all__ = [
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "balanced_labels",
    "check_labels",
    "class_batches",
    "classifier_accuracy_by_t",
    "guided_samples",
]


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
        self.learn_sigma = getattr(model, "learn_sigma", False)

    @classmethod
    def from_w(cls, model, w: float, null: dict) -> ClassifierFreeGuidance:
        """The paper's parametrisation ``ε̃ = (1 + w) ε_c − w ε_u`` (Ho & Salimans 2022, Eq. 6): ``scale = 1 + w``;
        ``w = 0`` is the conditional model, ``w = -1`` the unconditional one."""
        if w < -1:
            raise ValueError(f"w must be >= -1 (scale = 1 + w >= 0), got {w}")
        return cls(model, 1.0 + w, null)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        if set(cond) != set(self.null):
            raise ValueError(f"conditioning keys {sorted(cond)} do not match the null condition's {sorted(self.null)}")
        n = x.shape[0]
        k = getattr(self.model, "num_classes", None)
        if "y" in cond and k is not None:  # class labels: 0 … k − 1, or k (the null label) for an unguided row
            check_labels(cond["y"], k + 1, n=n, device=x.device)
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(n) if t.ndim == 0 else t
        both = {}
        for k, c in cond.items():
            u = self.null[k].to(c.device)
            both[k] = torch.cat([c, u.expand(n, *u.shape[1:]) if u.shape[0] == 1 else u])
        out_c, out_u = self.model(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
        if self.learn_sigma:  # [ε̂, v]: guide the ε half only and keep the conditional variance output, as DiT does
            c = out_c.shape[1] // 2
            return torch.cat([torch.lerp(out_u[:, :c], out_c[:, :c], self.scale), out_c[:, c:]], dim=1)
        return torch.lerp(out_u, out_c, self.scale)  # exact ε_c at scale 1 and ε_u at scale 0


# ----------------------------------------------------------------------------------------------------------------
# Classifier guidance
# ----------------------------------------------------------------------------------------------------------------


def check_labels(y, num_classes: int, n: int | None = None, device=None) -> torch.Tensor:
    """``y`` as ``long`` class labels in ``[0, num_classes)``, validated: integers only, a scalar (expanded to
    ``(n,)`` when ``n`` is given) or shape ``(n,)``. Raises ``ValueError`` naming what was expected and given.

    Shared by the guidance wrappers here and the classifier constraint of :mod:`diffu.diffusion_priors`."""
    y = torch.as_tensor(y, device=device)
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if y.ndim == 0 and n is not None:
        y = y.expand(n)
    if n is not None and y.shape != (n,):
        raise ValueError(f"labels must be a scalar or ({n},), got shape {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes - 1}], got {y.tolist()}")
    return y.long()


class ClassifierGuidance:
    """``ClassifierGuidance(classifier, scale, y)(x_t, t) = scale · ∇_x log p_φ(y | x_t, t)``: the ``cond_fn`` of
    :func:`~diffu.samplers.ddpm` and :func:`~diffu.samplers.ddim` (Dhariwal & Nichol 2021; guided-diffusion's
    ``cond_fn`` with its ``classifier_scale``).

    ``classifier(x_t, t) -> logits`` must be noise-aware (e.g. the shipped ``fmnist_noisy_classifier``); ``y`` is
    one class for the whole batch or ``(N,)`` labels; with ``y=None`` the labels come from the sampler's
    ``model_kwargs["y"]`` (guiding a class-conditional model towards its own labels). ``scale = 0`` returns zeros
    without running the classifier, so the sampler is exactly the unguided one.
    """

    def __init__(self, classifier, scale: float, y=None):
        if not math.isfinite(scale) or scale < 0:
            raise ValueError(f"scale must be a finite number >= 0 (negative scales push away from y), got {scale}")
        self.classifier, self.scale = classifier, float(scale)
        self.num_classes = getattr(classifier, "num_classes", None)
        if self.num_classes is None:
            raise ValueError("classifier must have a num_classes attribute")
        self.y = None if y is None else check_labels(y, self.num_classes)

    def log_prob(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        """``log p_φ(y | x_t, t)`` per image, ``(N,)``."""
        y = self.y if y is None else y
        if y is None:
            raise ValueError("no labels: give y to ClassifierGuidance or pass y in the sampler's model_kwargs")
        y = check_labels(y, self.num_classes, n=x.shape[0], device=x.device)
        logits = self.classifier(x, t)
        logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        return F.log_softmax(logits, dim=-1).gather(1, y[:, None])[:, 0]

    def gradient(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        """``∇_x log p_φ(y | x_t, t)`` (each image's log-probability depends only on that image)."""
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            return torch.autograd.grad(self.log_prob(x_in, t, y).sum(), x_in)[0].to(x.dtype)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y=None, **_) -> torch.Tensor:
        if self.scale == 0:
            return torch.zeros_like(x)
        return self.scale * self.gradient(x, t, self.y if self.y is not None else y)


@torch.no_grad()
def classifier_accuracy_by_t(classifier, schedule, x0, y, edges=(0, 1, 100, 300, 500, 700, 1000), batch=500, seed=0):
    """Test accuracy of a noise-aware ``classifier(x_t, t)`` on ``x_t = q_sample(x0, t)`` with ``t`` drawn uniformly
    from each range ``[edges[i], edges[i+1])`` (the first default range is t = 0, the nearly clean image).
    Returns ``{"a-b": accuracy}``; seeded, so the same call gives the same numbers."""
    edges = [int(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 0 or edges[-1] > schedule.T:
        raise ValueError(f"edges must increase strictly within [0, {schedule.T}], got {edges}")
    y = check_labels(y, classifier.num_classes, n=len(x0))
    dev = next(classifier.parameters()).device
    g = torch.Generator().manual_seed(seed)
    out = {}
    for a, b in zip(edges, edges[1:]):
        correct = 0
        for xb, yb in zip(x0.split(batch), y.split(batch)):
            t = torch.randint(a, b, (len(xb),), generator=g)
            noise = torch.randn(xb.shape, generator=g)
            x_t = schedule.q_sample(xb, t, noise).to(dev)
            correct += int((classifier(x_t, t.float().to(dev)).argmax(1).cpu() == yb).sum())
        out[f"{a}-{b - 1}" if b - a > 1 else f"{a}"] = correct / len(x0)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Class-balanced guided sampling (the sweeps of §2.3)
# ----------------------------------------------------------------------------------------------------------------


def balanced_labels(n: int, num_classes: int = 10, device=None) -> torch.Tensor:
    """Class-balanced labels ``i mod num_classes`` for ``i = 0 … n − 1``, ``(n,)`` long."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return (torch.arange(n, device=device) % num_classes).long()


def class_batches(
    n: int, batch: int, seed: int, device=None, shape: tuple = (1, 28, 28), num_classes: int = 10
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Generator]]:
    """Batches ``(x_T, labels, generator)`` for ``n`` class-balanced samples (label ``i mod num_classes``) of images
    of ``shape`` ``(C, H, W)``: ``x_T`` ``(m, C, H, W)`` standard normal, ``labels`` ``(m,)``.

    Each batch has its own generator on ``device``, seeded ``seed · 100003 + start`` (``start``: the index of its
    first sample) and used first for ``x_T``; the sampler may go on drawing from it. So sample ``i`` depends only on
    ``(seed, batch, i)``, not on how many samples are drawn in all."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    labels = balanced_labels(n, num_classes, device)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        g = torch.Generator(device=device).manual_seed(seed * 100_003 + start)
        yield torch.randn(m, *shape, generator=g, device=device), labels[start : start + m], g


def guided_samples(model, n, *, kind="cfg", scale=1.0, classifier=None, sampler="ddim", steps=50, batch=128,
                   seed=0, device=None):  # fmt: skip
    """``n`` class-balanced samples (label ``i mod num_classes``) of a class-conditional ε-model such as the shipped
    ``fmnist_unet``, on the CPU:

    - ``kind="cfg"``: classifier-free guidance at ``scale`` (null label ``model.num_classes``);
    - ``kind="classifier"``: the unconditional model (null label) with classifier guidance at ``scale`` from the
      noise-aware ``classifier`` towards each sample's label.

    ``sampler``: "ddim" (η = 0, DDIM-``steps``, x̂_0 clipped) or "ddpm" (ancestral, respaced to ``steps``), on the
    linear schedule. The noise comes from :func:`class_batches` (``seed``, ``batch``); the image shape from
    ``model.config`` (``in_channels``, ``image_size``). Chapter §2.3 and ``python -m diffu.bench guidance``."""
    if kind not in ("cfg", "classifier"):
        raise ValueError(f"kind must be 'cfg' or 'classifier', got {kind!r}")
    if sampler not in ("ddim", "ddpm"):
        raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
    if kind == "classifier" and classifier is None:
        raise ValueError("kind='classifier' needs a noise-aware classifier, got classifier=None")
    cfg, k = getattr(model, "config", None), getattr(model, "num_classes", None)
    if cfg is None or k is None:
        raise ValueError("model must be a class-conditional network with .config (in_channels, image_size) and "
                         f".num_classes, got {type(model).__name__}")  # fmt: skip
    sched = linear_schedule()
    null = torch.tensor([k])
    out = []
    for x_T, y, g in class_batches(n, batch, seed, device, shape=(cfg.in_channels, cfg.image_size, cfg.image_size),
                                   num_classes=k):  # fmt: skip
        if kind == "cfg":
            net, kwargs, cond_fn = ClassifierFreeGuidance(model, scale, {"y": null}), {"y": y}, None
        else:
            net, kwargs = model, {"y": torch.full_like(y, k)}
            cond_fn = ClassifierGuidance(classifier, scale, y)
        if sampler == "ddim":
            x = ddim(net, x_T, sched, steps=steps, clip_x0=True, model_kwargs=kwargs, cond_fn=cond_fn, generator=g,
                     progress=False)  # fmt: skip
        else:
            x = ddpm(net, x_T, sched, steps=steps, model_kwargs=kwargs, cond_fn=cond_fn, generator=g, progress=False)
        out.append(x.cpu())
    return torch.cat(out)
