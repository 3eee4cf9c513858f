"""Diffusion models as plug-and-play priors (Graikos et al. 2022, chapter §2.4).

A trained diffusion model is used as a *prior* inside an optimisation: :func:`plug_and_play` finds an image ``x``
that the denoiser finds plausible (its denoising loss at annealed random noise levels) and that satisfies any
differentiable constraint ``c(x)`` — a classifier's ``−log p(y | x)`` (:func:`classifier_constraint`) or data
fidelity ``‖A x − y‖²`` (:func:`fidelity_constraint`). No sampler runs: Adam updates ``x`` itself.

Not to be confused with *plug-and-play restoration* (DPIR, Zhang et al. 2021; DiffPIR, Zhu et al. 2023) in
:mod:`diffu.inverse.pnp`, which alternates a data step with a denoiser inside an iterative solver (chapter §4.1).
The names here spell out ``plug_and_play``; the abbreviation "pnp" belongs to that module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checks import (
    check_bool,
    check_callable,
    check_device,
    check_finite,
    check_floating,
    check_generator,
    check_image,
    check_int,
    check_real,
    check_tensor,
)
from .guidance import balanced_labels, check_labels
from .samplers import SamplerState
from .schedules import Schedule, linear_schedule

__all__ = [
    "PlugAndPlayResult",
    "classifier_constraint",
    "fidelity_constraint",
    "plug_and_play",
    "plug_and_play_class_samples",
    "plug_and_play_inpaint",
    "plug_and_play_timesteps",
    "top_half_mask",
]


class PlugAndPlayResult(NamedTuple):
    """``x``: the optimised images clipped to [-1, 1]; per-iteration ``t``, ``denoise`` loss and mean
    ``constraint`` value (before weighting)."""

    x: torch.Tensor
    t: list
    denoise: list
    constraint: list


def _check_classifier(classifier, name: str = "classifier") -> int:
    check_callable(name, classifier)
    k = getattr(classifier, "num_classes", None)
    if k is None:
        raise ValueError(f"{name} must have a num_classes attribute (a class-conditional classifier)")
    check_int(f"{name}.num_classes", k, 1)
    return k


def classifier_constraint(classifier, y) -> Callable:
    """``c(x, t=None) = −log p_φ(y | x, t)`` per image for a noise-aware ``classifier(x, t)``: with ``t=None`` the
    clean image is classified (``t = 0``, the paper's form ``c(x)``); :func:`plug_and_play` with
    ``noisy_constraint=True`` passes the noisy sample and its ``t``.

    Args:
        classifier: ``classifier(x, t) -> (N, num_classes)`` logits, with an integer ``num_classes``.
        y: one class (an int) or ``(N,)`` integer labels in ``[0, num_classes)``.

    Raises:
        ValueError: labels that are not integers in range; when ``c`` is called, an ``x`` whose batch size is not
            the labels' (one label serves any batch).
        TypeError: a classifier that is not callable.
    """
    k = _check_classifier(classifier)
    y = check_labels(y, k, name="y")

    def c(x, t=None):
        check_tensor(x, "x")
        if x.ndim == 0 or y.numel() not in (1, x.shape[0]):
            raise ValueError(f"x must be a batch of {y.numel()} images (the constraint's labels), got shape "
                             f"{tuple(x.shape)}")  # fmt: skip
        t = torch.zeros(x.shape[0], device=x.device) if t is None else t
        return F.cross_entropy(classifier(x, t), y.to(x.device).expand(x.shape[0]), reduction="none")

    return c


def fidelity_constraint(A: Callable, y: torch.Tensor) -> Callable:
    """``c(x) = mean((A(x) − y)²)`` per image: data fidelity to a measurement ``y = A(x*) + noise`` for any
    differentiable forward operator ``A`` (e.g. a mask for inpainting).

    Args:
        A: the forward operator, any callable ``A(x) -> tensor``.
        y: the measurement ``(N, …)``, a finite floating-point tensor.

    Raises:
        ValueError: an integer or 0-d ``y`` or one with NaN or infinity; when ``c`` is called, ``A(x)`` of another
            shape than ``y`` (no broadcasting: a measurement of one image is not silently reused for a batch).
        TypeError: an ``A`` that is not callable.
    """
    check_callable("A", A)
    check_floating(y, "y")
    if y.ndim == 0:
        raise ValueError("y must have a batch dimension (N, ...), got a 0-d tensor")
    check_finite(y, "y")

    def c(x):
        ax = A(x)
        if not isinstance(ax, torch.Tensor) or ax.shape != y.shape:
            got = tuple(ax.shape) if isinstance(ax, torch.Tensor) else type(ax).__name__
            raise ValueError(f"A(x) must have the measurement y's shape {tuple(y.shape)}, got {got}")
        return (ax - y).pow(2).flatten(1).mean(1)

    return c


def plug_and_play_timesteps(steps: int, T: int = 1000) -> np.ndarray:
    """The annealed noise levels of the official code (AlexGraikos/diffusion_priors, mnist/inference.ipynb):
    ``t_i = ((S − i) + ⌊(S − i)/4⌋ cos(i/50)) / S · T``, linearly decreasing with a cosine wobble, as integers
    clipped to ``[1, T − 1]`` (the original clips to ``[1, T]``, one past our last index). For ``S ≠ 1000`` the
    wobble's period is scaled with ``S`` (``cos(20 i / S)``) so that every run sees the same shape.

    Args:
        steps: the number of iterations S, an integer >= 1.
        T: the schedule's number of steps, an integer >= 2 (the levels lie in ``[1, T − 1]``).

    Raises:
        ValueError: ``steps`` or ``T`` not an integer in range.
    """
    check_int("steps", steps, 1)
    check_int("T", T, 2)
    i = np.arange(steps)
    k = steps - i
    t = (k + (k // 4) * np.cos(20.0 * i / steps)) / steps * T
    return np.clip(t.astype(np.int64), 1, T - 1)


def _check_shape_or_tensor(x_init) -> None:
    if isinstance(x_init, torch.Tensor):
        check_floating(x_init, "x_init")
        if x_init.ndim == 0:
            raise ValueError("x_init must have a batch dimension (N, ...), got a 0-d tensor")
        check_finite(x_init, "x_init")
        return
    ok = isinstance(x_init, (tuple, list, torch.Size)) and len(x_init) > 0
    if not ok:
        raise TypeError(f"x_init must be a tensor or a shape such as (N, C, H, W), got {x_init!r:.60}")
    for i, d in enumerate(x_init):
        check_int(f"x_init[{i}]", d, 1)


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
) -> PlugAndPlayResult:
    """Diffusion model as a plug-and-play prior (Graikos et al. 2022, Algorithm 1): find ``x`` minimising

    ``‖ε − ε_θ(√ᾱ_t x + √(1−ᾱ_t) ε, t)‖² + λ_i · c(clip(x))``

    by Adam on ``x`` itself, one fresh ``(t, ε)`` per iteration, ``t`` following :func:`plug_and_play_timesteps` (from
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
        timesteps: optional explicit ``t`` per iteration (default :func:`plug_and_play_timesteps`): ``steps``
            integers in ``[0, T − 1]``.
        model_kwargs: a dict passed to the model, or None; generator: a ``torch.Generator`` or None.
        progress: show a tqdm bar; callback: None or a callable taking a :class:`~diffu.samplers.SamplerState`.

    Raises:
        ValueError: ``steps``, ``lr``, ``weight`` or ``timesteps`` out of range, an ``x_init`` tensor that is not
            finite floating point; a constraint that returns something other than a tensor.
        TypeError: a model or constraint that is not callable, a schedule, flag, generator, model_kwargs or
            callback of the wrong type, an ``x_init`` that is neither a tensor nor a shape.
    """
    check_callable("model", model)
    check_callable("constraint", constraint)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a diffu.schedules.Schedule, got {type(schedule).__name__}")
    check_int("steps", steps, 1)
    check_real("lr", lr, 0, low_open=True)
    check_real("weight", weight, 0)
    check_bool("anneal_weight", anneal_weight)
    check_bool("noisy_constraint", noisy_constraint)
    check_bool("progress", progress)
    check_generator(generator)
    if callback is not None:
        check_callable("callback", callback)
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs must be a dict or None, got {type(model_kwargs).__name__}")
    _check_shape_or_tensor(x_init)
    if timesteps is None:
        ts = plug_and_play_timesteps(steps, schedule.T)
    else:
        ts = np.asarray(timesteps.cpu() if isinstance(timesteps, torch.Tensor) else timesteps)
        if ts.dtype.kind not in "iu":
            raise ValueError(f"timesteps must be {steps} integers in [0, {schedule.T - 1}], got dtype {ts.dtype}")
        ts = ts.astype(np.int64)
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
        if not isinstance(c, torch.Tensor):
            raise ValueError(f"constraint must return a tensor ((N,) or a scalar), got {type(c).__name__}")
        c = c.mean() if c.ndim else c
        lam = weight * (steps - i) / steps if anneal_weight else weight
        opt.zero_grad(set_to_none=True)
        (denoise + lam * c).backward()
        opt.step()
        hist_t.append(t), hist_d.append(float(denoise.detach())), hist_c.append(float(c.detach()))
        if callback is not None:
            callback(SamplerState(i, t, x.detach().clone(), x.detach().clamp(-1, 1)))  # x is updated in place
    return PlugAndPlayResult(x.detach().clamp(-1, 1), hist_t, hist_d, hist_c)


# ----------------------------------------------------------------------------------------------------------------
# The two demonstrations of §2.4: class-constrained samples and inpainting
# ----------------------------------------------------------------------------------------------------------------


def top_half_mask(size: int = 28) -> torch.Tensor:
    """The inpainting mask of chapter §2.4, ``(1, 1, size, size)``: 1 on the observed top half, 0 below.

    Raises:
        ValueError: ``size`` is not an integer >= 2.
    """
    check_int("size", size, 2)
    m = torch.zeros(1, 1, size, size)
    m[..., : size // 2, :] = 1
    return m


def _check_prior_unet(unet, name: str = "unet"):
    """A class-conditional network with ``.config`` (``in_channels``, ``image_size``) and an integer
    ``.num_classes`` (its null label); returns its config."""
    cfg, k = getattr(unet, "config", None), getattr(unet, "num_classes", None)
    if cfg is None or k is None:
        raise ValueError(f"{name} must be a class-conditional network with .config (in_channels, image_size) and "
                         f".num_classes, got {type(unet).__name__}")  # fmt: skip
    check_callable(name, unet)
    check_int(f"{name}.num_classes", k, 1)
    return cfg


def plug_and_play_class_samples(unet, clf, n, *, weight=1.0, noisy=False, steps=200, lr=0.05, seed=0, device=None):
    """``n`` class-balanced images (label ``i mod num_classes``) from the class-conditional ``unet`` in its
    unconditional mode (null label) as a plug-and-play prior, constrained by ``−log p(y | ·)`` of the noise-aware
    classifier ``clf`` (on x, the paper's form, or on x_t with ``noisy``); on the CPU. The image shape comes from
    ``unet.config``. Chapter §2.4 and ``python -m diffu.bench guidance``.

    Args:
        unet: the class-conditional prior (``.config``, integer ``.num_classes``); clf: the noise-aware classifier
            (``num_classes`` at least the unet's).
        n: the number of images, an integer >= 1; noisy: True or False; seed: an integer >= 0.
        weight, steps, lr: as in :func:`plug_and_play`; device: where it runs.

    Raises:
        ValueError, TypeError: naming the argument that is not as above.
    """
    cfg = _check_prior_unet(unet)
    k = _check_classifier(clf, "clf")
    if k < unet.num_classes:
        raise ValueError(f"clf must have at least the unet's {unet.num_classes} classes, got clf.num_classes = {k}")
    check_int("n", n, 1)
    check_bool("noisy", noisy)
    check_int("seed", seed, 0, 2**63 - 1)
    device = check_device("device", device)
    y = balanced_labels(n, unet.num_classes, device)
    g = torch.Generator(device=device).manual_seed(seed)
    res = plug_and_play(unet, classifier_constraint(clf, y), (n, cfg.in_channels, cfg.image_size, cfg.image_size),
                        linear_schedule(), steps=steps, lr=lr, weight=weight, noisy_constraint=noisy,
                        model_kwargs={"y": torch.full_like(y, unet.num_classes)}, generator=g,
                        progress=False)  # fmt: skip
    return res.x.cpu()


def plug_and_play_inpaint(unet, x_true, sigma=0.05, *, weight=10.0, steps=200, lr=0.05, seed=0, device=None):
    """Inpaint the bottom half of ``x_true`` ``(N, C, H, W)`` from its noisy top half (:func:`top_half_mask`, noise
    ``sigma``) with the class-conditional ``unet`` in its unconditional mode (null label) as a plug-and-play prior
    and the data-fidelity constraint at constant ``weight``. Returns ``(x_hat, y_obs, mask)`` on the CPU. §2.4.

    Args:
        unet: the class-conditional prior (``.config``, integer ``.num_classes``).
        x_true: square images ``(N, C, H, H)``, finite floating point.
        sigma: the observation noise, a finite number >= 0; seed: an integer >= 0.
        weight, steps, lr: as in :func:`plug_and_play`; device: where it runs.

    Raises:
        ValueError, TypeError: naming the argument that is not as above.
    """
    cfg = _check_prior_unet(unet)
    check_image(x_true, "x_true")
    if x_true.shape[1] != cfg.in_channels:
        raise ValueError(f"x_true must have the unet's {cfg.in_channels} channel(s), shape (N, {cfg.in_channels}, "
                         f"H, H), got {tuple(x_true.shape)}")  # fmt: skip
    if x_true.shape[-2] != x_true.shape[-1]:
        raise ValueError(
            f"x_true must hold square images (the top-half mask is H × H), got shape {tuple(x_true.shape)}"
        )
    check_finite(x_true, "x_true")
    check_real("sigma", sigma, 0)
    check_int("seed", seed, 0, 2**63 - 1)
    device = check_device("device", device)
    g = torch.Generator(device=device).manual_seed(seed)
    x_true = x_true.to(device)
    mask = top_half_mask(x_true.shape[-1]).to(x_true)
    y_obs = mask * (x_true + sigma * torch.randn(x_true.shape, generator=g, device=device))
    null = torch.full((len(x_true),), unet.num_classes, device=device)
    res = plug_and_play(unet, fidelity_constraint(lambda z: mask * z, y_obs), x_true.shape, linear_schedule(),
                        steps=steps, lr=lr, weight=weight, anneal_weight=False, model_kwargs={"y": null}, generator=g,
                        progress=False)  # fmt: skip
    return res.x.cpu(), y_obs.cpu(), mask.cpu()
