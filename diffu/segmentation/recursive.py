"""Recursive noise diffusion for segmentation (chapter §6.2), Kolbeinsson & Mikolajczyk 2024 (WACV).

Training and inference follow one recursion: start from uniform noise, and at each of ``T`` levels softmax the
*previous prediction*, noise it to level ``τ_k = (T − k)/T`` and let the network refine it
(:func:`recursive_train_step`, :func:`recursive_segment`). The ground-truth mask is only ever a target, never an
input. The network is ``model(x, τ, cond=image)`` with the level ``τ ∈ (0, 1]`` as a float ``(N,)``, as the official
code passes it (a :class:`diffu.nn.concat.ConcatUNet` with ``K`` state channels and ``time_scale=1000``, the
continuous-time convention of flow matching).

**Bad input** raises ``ValueError``/``TypeError`` naming the argument (:mod:`diffu.checks`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checks import check_callable, check_finite, check_generator, check_image, check_int, check_real
from ..sampling import SamplerState, check_sampler_args, noise_like
from .ensemble import Segmentation
from .masks import one_hot

__all__ = ["RecursiveLevelLoss", "recursive_segment", "recursive_train_step"]


def _levels(steps: int) -> list[float]:
    """The noise levels ``τ_k = (T − k) / T``, ``k = 0 … T − 1`` (1 down to 1/T), the official linear schedule."""
    return [(steps - k) / steps for k in range(steps)]


def _diffuse(previous: torch.Tensor, level: float, generator) -> torch.Tensor:
    """Softmax the previous prediction over the classes, add ``τ · N(0, I)``, clip to [0, 1] (official ``diffuse``
    with ``noise_type="normal_add"``, ``schedule="linear"``)."""
    p = previous.softmax(1)
    return (p + level * noise_like(p, generator)).clamp(0, 1)


def _refine(model, x, level: float, images):
    """``model(x, τ, cond=images)``: the predicted residual (noise + previous error); the level is a float ``(N,)``."""
    t = torch.full((x.shape[0],), level, device=x.device, dtype=x.dtype)
    out = model(x, t, cond=images)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model must return a tensor of the state's shape {tuple(x.shape)}, got {got}")
    return out


def _check_generator_on(generator, images: torch.Tensor) -> None:
    if generator is not None and generator.device.type != images.device.type:
        raise ValueError(f"generator is on {generator.device.type} but images are on {images.device.type}: pass a "
                         f"generator of the images' device (torch.Generator(device=...))")  # fmt: skip


def _check_batch(images, labels, num_classes: int) -> torch.Tensor:
    """Check a training batch; return the one-hot ground truth ``y`` ``(N, K, H, W)`` on the [0, 1] scale."""
    check_image(images, "images")
    check_finite(images, "images")
    y = (one_hot(labels, num_classes, images.dtype) + 1) / 2  # (N, K, H, W) in {0, 1}
    if labels.shape[0] != images.shape[0] or labels.shape[1:] != images.shape[2:] or labels.device != images.device:
        raise ValueError(f"labels must be (N, H, W) with images' batch and size {images.shape[0]} × "
                         f"{tuple(images.shape[2:])} on {images.device}, got {tuple(labels.shape)} on "
                         f"{labels.device}")  # fmt: skip
    return y


def _level_loss(model, s, level: float, images, labels, y, ce_weight: float, generator):
    """One level of the training recursion: ``(L_k, s_{k+1})`` from the previous refined map ``s_k``."""
    # 1. the previous prediction (detached), softmaxed and noised to level τ
    x = _diffuse(s.detach(), level, generator)
    # 2. the predicted residual and its target: noise plus the previous error
    r = _refine(model, x, level, images)
    loss = F.mse_loss(r, x - y)
    if ce_weight > 0:
        loss = loss + ce_weight * F.cross_entropy(x - r, labels.long())
    return loss, (x - r).detach()


def recursive_train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    steps: int = 10,
    ce_weight: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One batch of recursive-denoising training: ``steps`` optimiser updates along the model's own trajectory.

    With ``y`` the one-hot ground truth on the [0, 1] scale and ``s_0 ~ U[0, 1)^{K×H×W}``, for ``k = 0 … T − 1``
    (``τ_k = (T − k)/T``)::

        x_k = clip(softmax(s_k) + τ_k z, 0, 1),   z ~ N(0, I)        # the previous prediction, noised
        r̂  = model(x_k, τ_k, cond=image)                         # predicted residual
        L_k = ‖r̂ − (x_k − y)‖² (mean) [+ ce_weight · CE(x_k − r̂, labels)]
        s_{k+1} = (x_k − r̂).detach()                                   # the refined prediction

    and an optimiser step after each ``L_k``. The target residual ``x_k − y`` holds the added noise *and* the error
    of the previous prediction, which the model learns to remove; ``y`` enters only the targets — the model's input
    is built from uniform noise and its own detached predictions, never from the ground truth.

    Args:
        model: ``model(x, τ, cond=images) -> (N, K, H, W)`` (a :class:`~diffu.nn.concat.ConcatUNet` with
            ``in_channels = out_channels = K`` and ``time_scale=1000``), in training mode.
        optimizer: anything with ``zero_grad()`` and ``step()`` over the model's parameters.
        images: ``(N, C_img, H, W)`` finite floating images; labels: ``(N, H, W)`` integer label maps.
        num_classes: ``K`` >= 2; steps: ``T`` >= 1 (official: 10 per scale, 25 in the README's example).
        ce_weight: weight >= 0 of a cross-entropy term on the refined map (the official "linear" scale procedure
            adds one; the "loop" procedure, whose recursion we follow, trains on the MSE alone: 0).
        generator: draws ``s_0`` and every ``z`` (on the images' device), or None.

    Returns:
        The ``T`` losses ``L_0 … L_{T−1}``, a detached float tensor ``(T,)``.

    Raises:
        ValueError: bad images or labels (shape, batch, range), ``num_classes``, ``steps`` or ``ce_weight``; a model
            output not of the state's shape.
        TypeError: a model that is not callable, an optimiser without ``zero_grad``/``step``, a bad generator.

    Notes:
        Official code ``benediktkol/recursive-noise-diffusion`` (``utils/trainer.py``, ``denoise_loop_scales``;
        ``utils/utils.py``, ``diffuse``). Reproduced: uniform initial noise, softmax of the previous prediction,
        additive Gaussian noise with the linear factor τ and clipping to [0, 1], the residual target
        ``diffused − ground truth``, the denoised map ``diffused − prediction``, the MSE loss, an optimiser step per
        level with the prediction detached between levels, the ground truth never an input. Not reproduced: the 3
        image scales per level (bilinear resizing between them, fractional τ per scale) and the patch tiling, mixed
        precision, AdamW with lr decay (the optimiser is the caller's). Used in chapter §6.2.
    """
    check_callable("model", model)
    if not (callable(getattr(optimizer, "zero_grad", None)) and callable(getattr(optimizer, "step", None))):
        raise TypeError(f"optimizer must have zero_grad() and step(), got {type(optimizer).__name__}")
    y = _check_batch(images, labels, num_classes)
    check_int("steps", steps, 1)
    check_real("ce_weight", ce_weight, 0)
    check_generator(generator)
    _check_generator_on(generator, images)
    s = torch.rand(y.shape, generator=generator, device=images.device, dtype=images.dtype)
    losses = []
    for level in _levels(steps):
        optimizer.zero_grad()
        loss, s = _level_loss(model, s, level, images, labels, y, ce_weight, generator)
        # 3. one update per level; the refined map is the next level's input
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return torch.tensor(losses)


class RecursiveLevelLoss:
    """The recursion of :func:`recursive_train_step` as a loss for :func:`diffu.train.train`: one level per call.

    ``train`` takes one optimiser step per loss call; the official procedure takes one per recursion level. This
    callable keeps the recursion's state between calls: a call at level 0 starts a new recursion on the batch it is
    given (``s_0 ~ U[0, 1)``); the next ``T − 1`` calls ignore their batch and continue the stored one — the previous
    refined map, softmaxed and noised to ``τ_k = (T − k)/T`` — and return ``L_k``. ``T`` consecutive calls with an
    optimiser step after each are therefore :func:`recursive_train_step` on the first batch (same draws from the
    generator, same losses; tested), and a run of ``S`` training steps trains ``S / T`` recursions.

    Args:
        num_classes: ``K`` >= 2; steps: ``T`` >= 1; ce_weight: as :func:`recursive_train_step`.

    The call ``loss(model, images, labels, generator=None)`` returns ``L_k`` (a 0-d differentiable tensor) and
    checks its arguments as :func:`recursive_train_step` does. ``level`` is the next call's ``k``; :meth:`reset`
    starts a new recursion at the next call. The state is not in training checkpoints: a resumed run starts a new
    recursion at its first step.

    Raises:
        ValueError: bad ``num_classes``, ``steps`` or ``ce_weight``; at the call, as :func:`recursive_train_step`.

    Used for the shipped ``cardiac_recursive`` model of chapter §6.2.
    """

    def __init__(self, num_classes: int, steps: int = 10, ce_weight: float = 0.0):
        check_int("num_classes", num_classes, 2)
        check_int("steps", steps, 1)
        check_real("ce_weight", ce_weight, 0)
        self.num_classes, self.steps, self.ce_weight = num_classes, steps, float(ce_weight)
        self.reset()

    def reset(self) -> None:
        """Start a new recursion (on the next call's batch)."""
        self.level, self._batch, self._state = 0, None, None

    def __call__(self, model, images: torch.Tensor, labels: torch.Tensor, generator=None) -> torch.Tensor:
        check_callable("model", model)
        check_generator(generator)
        if self.level == 0:
            y = _check_batch(images, labels, self.num_classes)
            _check_generator_on(generator, images)
            self._batch = (images, labels, y)
            self._state = torch.rand(y.shape, generator=generator, device=images.device, dtype=images.dtype)
        images, labels, y = self._batch
        level = _levels(self.steps)[self.level]
        loss, self._state = _level_loss(model, self._state, level, images, labels, y, self.ce_weight, generator)
        self.level = (self.level + 1) % self.steps
        return loss


def recursive_segment(
    model: Callable,
    images: torch.Tensor,
    *,
    num_classes: int,
    steps: int = 10,
    ensemble: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
) -> Segmentation:
    """Recursive noise diffusion inference: from uniform noise, ``T`` rounds of softmax → noise to ``τ_k`` → refine.

    The recursion of :func:`recursive_train_step` without the updates: ``s_0 ~ U[0, 1)``, ``x_k = clip(softmax(s_k)
    + τ_k z, 0, 1)``, ``s_{k+1} = x_k − model(x_k, τ_k, cond=image)``; the label is ``argmax s_T``. An
    ensemble of ``E`` runs is one batch of ``E · N`` (member-major), averaged as the official ``test.py`` does
    (the mean of the refined maps, then argmax).

    Args:
        model: ``model(x, τ, cond=images) -> (N, K, H, W)``, τ ∈ (0, 1].
        images: ``(N, C_img, H, W)`` finite floating images.
        num_classes: ``K`` >= 2; steps: ``T`` >= 1 (use the training value); ensemble: ``E`` >= 1.
        generator, progress: as every sampler.
        callback: called with ``SamplerState(k, T − k, s_{k+1}, s_{k+1})`` after each round (``τ_k = (T − k)/T``).

    Returns:
        A :class:`Segmentation` (``mean`` on the [0, 1] one-hot scale, not softmaxed; ``variance`` over the
        members' refined maps).

    Raises:
        ValueError: bad images, ``num_classes``, ``steps`` or ``ensemble``; a model output not of the state's shape.
        TypeError: model or callback not callable, a bad generator or ``progress``.

    Notes:
        Official ``utils/evaluation.py`` (``denoise_loop_scales``), one scale and no patch tiling (see
        :func:`recursive_train_step`); its optional "built-in ensemble" (a running average over levels) is not
        reproduced. Used in chapter §6.2.
    """
    check_sampler_args(model, generator=generator, progress=progress, callback=callback)
    check_image(images, "images")
    check_finite(images, "images")
    check_int("ensemble", ensemble, 1)
    check_int("num_classes", num_classes, 2)
    check_int("steps", steps, 1)
    _check_generator_on(generator, images)
    n = images.shape[0]
    cond = images.repeat(ensemble, 1, 1, 1)  # (E·N, C_img, H, W)
    s = torch.rand((ensemble * n, num_classes, *images.shape[2:]), generator=generator, device=images.device,
                   dtype=images.dtype)  # fmt: skip
    with torch.no_grad():
        for k, level in enumerate(tqdm(_levels(steps), disable=not progress, desc=f"RND-{steps}")):
            x = _diffuse(s, level, generator)
            s = x - _refine(model, x, level, cond)
            if callback is not None:
                callback(SamplerState(k, steps - k, s, s))
    samples = s.reshape(ensemble, n, num_classes, *images.shape[2:])  # (E, N, K, H, W)
    mean = samples.mean(0)  # (N, K, H, W)
    return Segmentation(mean, mean.argmax(1), samples.var(0, correction=0).sum(1), samples)
