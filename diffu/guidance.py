"""Guidance and plug-and-play priors (chapters §2.3, §2.4, §2.6).

- Classifier guidance (Dhariwal & Nichol 2021): a noise-aware classifier ``p_φ(y | x_t, t)`` adds
  ``s ∇_x log p_φ(y | x_t)`` to the score. :class:`ClassifierGuidance` is the ``cond_fn`` that
  :func:`diffu.samplers.ddpm` (mean shift) and :func:`diffu.samplers.ddim` (ε shift) accept.
- Classifier-free guidance (Ho & Salimans 2022) mixes the conditional and unconditional predictions of one network
  trained with a null condition: ``ε̃ = ε_u + s (ε_c − ε_u)``. ``s = 1`` is the conditional model, ``s = 0`` the
  unconditional one; the paper writes ``ε̃ = (1 + w) ε_c − w ε_u``, i.e. ``s = 1 + w``
  (:meth:`ClassifierFreeGuidance.from_w`).
- Plug-and-play priors (Graikos et al. 2022): :func:`plug_and_play` optimises an image under the denoising loss
  at annealed random t plus any differentiable constraint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = [
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "PnPResult",
    "classifier_accuracy_by_t",
    "classifier_constraint",
    "fidelity_constraint",
    "plug_and_play",
    "pnp_timesteps",
    "sample_captions",
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
            _check_labels(cond["y"], k + 1, n=n, device=x.device)
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


# ----------------------------------------------------------------------------------------------------------------
# Classifier guidance
# ----------------------------------------------------------------------------------------------------------------


def _check_labels(y, num_classes, n=None, device=None) -> torch.Tensor:
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
        self.y = None if y is None else _check_labels(y, self.num_classes)

    def log_prob(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        """``log p_φ(y | x_t, t)`` per image, ``(N,)``."""
        y = self.y if y is None else y
        if y is None:
            raise ValueError("no labels: give y to ClassifierGuidance or pass y in the sampler's model_kwargs")
        y = _check_labels(y, self.num_classes, n=x.shape[0], device=x.device)
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
    y = _check_labels(y, classifier.num_classes, n=len(x0))
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
# Plug-and-play priors (Graikos et al. 2022)
# ----------------------------------------------------------------------------------------------------------------


class PnPResult(NamedTuple):
    """``x``: the optimised images clipped to [-1, 1]; per-iteration ``t``, ``denoise`` loss and mean
    ``constraint`` value (before weighting)."""

    x: torch.Tensor
    t: list
    denoise: list
    constraint: list


def classifier_constraint(classifier, y) -> Callable:
    """``c(x, t=None) = −log p_φ(y | x, t)`` per image for a noise-aware ``classifier(x, t)``: with ``t=None`` the
    clean image is classified (``t = 0``, the paper's form ``c(x)``); :func:`plug_and_play` with
    ``noisy_constraint=True`` passes the noisy sample and its ``t``."""
    y = _check_labels(y, classifier.num_classes)

    def c(x, t=None):
        t = torch.zeros(x.shape[0], device=x.device) if t is None else t
        return F.cross_entropy(classifier(x, t), y.to(x.device).expand(x.shape[0]), reduction="none")

    return c


def fidelity_constraint(A: Callable, y: torch.Tensor) -> Callable:
    """``c(x) = mean((A(x) − y)²)`` per image: data fidelity to a measurement ``y = A(x*) + noise`` for any
    differentiable forward operator ``A`` (e.g. a mask for inpainting)."""

    def c(x):
        return (A(x) - y).pow(2).flatten(1).mean(1)

    return c


def pnp_timesteps(steps: int, T: int = 1000) -> np.ndarray:
    """The annealed noise levels of the official code (AlexGraikos/diffusion_priors, mnist/inference.ipynb):
    ``t_i = ((S − i) + ⌊(S − i)/4⌋ cos(i/50)) / S · T``, linearly decreasing with a cosine wobble, as integers
    clipped to ``[1, T − 1]`` (the original clips to ``[1, T]``, one past our last index). For ``S ≠ 1000`` the
    wobble's period is scaled with ``S`` (``cos(20 i / S)``) so that every run sees the same shape."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    i = np.arange(steps)
    k = steps - i
    t = (k + (k // 4) * np.cos(20.0 * i / steps)) / steps * T
    return np.clip(t.astype(np.int64), 1, T - 1)


def plug_and_play(
    model,
    constraint: Callable[[torch.Tensor], torch.Tensor],
    x_init,
    schedule,
    *,
    steps: int = 500,
    lr: float = 0.01,
    weight: float = 1.0,
    anneal_weight: bool = True,
    noisy_constraint: bool = False,
    timesteps=None,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable | None = None,
) -> PnPResult:
    """Diffusion model as a plug-and-play prior (Graikos et al. 2022, Algorithm 1): find ``x`` minimising

    ``‖ε − ε_θ(√ᾱ_t x + √(1−ᾱ_t) ε, t)‖² + λ_i · c(clip(x))``

    by Adam on ``x`` itself, one fresh ``(t, ε)`` per iteration, ``t`` following :func:`pnp_timesteps` (from
    noisy to clean) and, with ``anneal_weight``, ``λ_i = weight · (S − i)/S`` — both as in the official code (Adam,
    lr 0.01, 1000 iterations, λ = 0.01 for its MNIST classifier). Gradients of both terms flow through the network.

    Args:
        model: ε-prediction diffusion model ``model(x_t, t, **model_kwargs)`` (the prior; e.g. the shipped UNet
            with ``model_kwargs={"y": null}`` for its unconditional mode).
        constraint: differentiable ``c(x) -> (N,)`` (or a scalar) on clipped images in [-1, 1], e.g. a classifier's
            ``-log p(y | x)`` or a data-fidelity term ``‖A x − y‖²``.
        x_init: starting images ``(N, C, H, W)`` or a shape (standard normal from ``generator``, as the original).
        steps, lr: iterations and Adam learning rate; ``weight``: λ, the constraint's weight (≥ 0).
        noisy_constraint: call ``constraint(x_t, t)`` on the same noisy sample as the denoising term instead of
            ``constraint(clip(x))`` — for noise-aware constraints such as the classifier of classifier guidance,
            whose gradients at high t shape the image globally instead of adding adversarial detail (our variant;
            the paper evaluates constraints on x).
        timesteps: optional explicit ``t`` per iteration (default :func:`pnp_timesteps`).
    """
    if weight < 0 or lr <= 0:
        raise ValueError(f"weight must be >= 0 and lr > 0, got weight={weight}, lr={lr}")
    ts = pnp_timesteps(steps, schedule.T) if timesteps is None else np.asarray(timesteps, dtype=np.int64)
    if ts.shape != (steps,) or ts.min() < 0 or ts.max() >= schedule.T:
        raise ValueError(f"timesteps must be {steps} integers in [0, {schedule.T - 1}]")
    dev = next(iter(model.parameters()), torch.empty(0)).device if hasattr(model, "parameters") else None
    x0 = x_init if torch.is_tensor(x_init) else torch.randn(tuple(x_init), generator=generator, device=dev)
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    hist_t, hist_d, hist_c = [], [], []
    for i in tqdm(range(steps), disable=not progress, desc="plug-and-play"):
        t = int(ts[i])
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        tt = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
        x_t = schedule.q_sample(x, torch.full((x.shape[0],), t, device=x.device), noise)
        denoise = F.mse_loss(model(x_t, tt, **(model_kwargs or {})), noise)
        c = constraint(x_t, tt) if noisy_constraint else constraint(x.clamp(-1, 1))
        c = c.mean() if c.ndim else c
        lam = weight * (steps - i) / steps if anneal_weight else weight
        opt.zero_grad(set_to_none=True)
        (denoise + lam * c).backward()
        opt.step()
        hist_t.append(t), hist_d.append(float(denoise.detach())), hist_c.append(float(c.detach()))
        if callback is not None:
            from .samplers import SamplerState

            callback(SamplerState(i, t, x.detach().clone(), x.detach().clamp(-1, 1)))  # x is updated in place
    return PnPResult(x.detach().clamp(-1, 1), hist_t, hist_d, hist_c)
