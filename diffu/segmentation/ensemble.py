"""Wolleb et al.'s implicit segmentation ensembles (chapter §6.2): diffuse only the mask, condition on the image.

Wolleb, Sandkühler, Bieder, Valmaggia & Cattin 2022, "Diffusion models for implicit image segmentation ensembles"
(MIDL): the encoded mask (:mod:`diffu.segmentation.masks`) is the diffused state and the image is concatenated at
every step (:class:`diffu.nn.concat.ConcatUNet`, ``model(x_t, t, cond=image)``). :func:`mask_diffusion_loss` trains
it; :func:`segment` samples an ensemble of masks per image in one sampler call and returns the ensemble mean, its
label map and the per-pixel variance (the uncertainty map) as a :class:`Segmentation`.

**Bad input** raises ``ValueError``/``TypeError`` naming the argument (:mod:`diffu.checks`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ..checks import check_callable, check_choice, check_finite, check_image, check_int
from ..samplers import ddim, ddpm
from ..sampling import SamplerState, check_sampler_args, check_schedule, initial_noise
from ..schedules import Schedule
from ..train import diffusion_loss
from .masks import decode_masks, encoding_channels

__all__ = ["Segmentation", "mask_diffusion_loss", "segment"]


def _check_pair(masks, images, masks_name: str = "masks_encoded") -> None:
    check_image(masks, masks_name)
    check_image(images, "images")
    if images.shape[0] != masks.shape[0] or images.shape[2:] != masks.shape[2:]:
        raise ValueError(f"images must be (N, C, H, W) with {masks_name}'s batch and size {masks.shape[0]} × "
                         f"{tuple(masks.shape[2:])}, got {tuple(images.shape)}")  # fmt: skip


def mask_diffusion_loss(model, schedule: Schedule, masks_encoded: torch.Tensor, images: torch.Tensor, generator=None):
    """Wolleb et al.'s training loss: ``E_{t,ε} ‖ε − ε_θ(√ᾱ_t m + √(1 − ᾱ_t) ε, t, cond=image)‖²`` on the encoded
    mask ``m`` (Eq. 14 of Ho et al. 2020 with the image passed along; only the mask is noised).

    Args:
        model: ``model(x_t, t, cond=images)`` (a :class:`~diffu.nn.concat.ConcatUNet` with ``in_channels`` =
            ``out_channels`` = the encoding's channels and ``cond_channels`` = the image's).
        schedule: the :class:`~diffu.schedules.Schedule`.
        masks_encoded: ``(N, C, H, W)`` masks from :func:`encode_masks` (±1).
        images: ``(N, C_img, H, W)`` images of the same batch and size.
        generator: a ``torch.Generator`` on the masks' device, or None; it draws ``t`` then ε
            (:func:`diffu.train.diffusion_loss`).

    Returns:
        The mean squared error, a 0-d differentiable tensor. NaN in the masks or images propagates to a NaN loss
        (no pass over the data per step, as :func:`diffu.train.diffusion_loss`).

    Raises:
        ValueError: masks or images not floating image batches, or of different batch or size.
        TypeError: a model that is not callable, a bad schedule or generator.

    Notes:
        Official code ``JuliaWolleb/Diffusion-based-Segmentation`` (guided-diffusion): ε loss plus the VB term of a
        learned-σ model, 1000 linear-schedule steps, the image concatenated to the one-channel mask; we keep the ε
        loss only (fixed variances) and allow multi-class encodings. Used in chapter §6.2.
    """
    check_callable("model", model)
    _check_pair(masks_encoded, images)
    return diffusion_loss(model, schedule, masks_encoded, generator, model_kwargs={"cond": images})


class Segmentation(NamedTuple):
    """What :func:`segment` and :func:`recursive_segment` return.

    ``mean`` ``(N, C, H, W)``: the ensemble mean of the sampled masks (the encoding scale of :func:`segment`, the
    [0, 1] one-hot scale of :func:`recursive_segment`); ``labels`` ``(N, H, W)`` int64: decoded from ``mean``;
    ``variance`` ``(N, H, W)``: the per-pixel variance over the ensemble (population, summed over channels; 0 for an
    ensemble of one), the uncertainty map; ``samples`` ``(E, N, C, H, W)``: every member.
    """

    mean: torch.Tensor
    labels: torch.Tensor
    variance: torch.Tensor
    samples: torch.Tensor


def _summarise(samples: torch.Tensor, labels: torch.Tensor) -> Segmentation:
    mean = samples.mean(0)  # (N, C, H, W)
    variance = samples.var(0, correction=0).sum(1)  # (N, H, W)
    return Segmentation(mean, labels, variance, samples)


def _check_common(model, images, ensemble, generator, progress, callback) -> None:
    check_sampler_args(model, generator=generator, progress=progress, callback=callback)
    check_image(images, "images")
    check_finite(images, "images")
    check_int("ensemble", ensemble, 1)


def segment(
    model: Callable,
    images: torch.Tensor,
    schedule: Schedule,
    *,
    num_classes: int,
    encoding: str = "onehot",
    steps: int = 50,
    sampler: str = "ddim",
    ensemble: int = 5,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
) -> Segmentation:
    """Wolleb et al.'s implicit ensemble: sample ``ensemble`` masks per image from ``p_θ(m | image)`` and average.

    The ``E = ensemble`` members of every image are one batch of ``E · N`` states (member-major: the batch is the
    image batch repeated ``E`` times) handed to one sampler call, each with its own noise ``x_T`` and the image as
    ``cond``. ``labels`` decodes the ensemble mean (argmax for one-hot, nearest codeword for bits), not a majority
    vote of the members: it is the official evaluation (mean of the samples, then threshold), and the
    members' continuous values break the ties a vote of two would have (how much an ensemble of 2, 5 or 10 gains:
    :func:`~diffu.segmentation.evaluation.ensemble_dice`); for one-hot it is the argmax of the mean class score.

    Args:
        model: ``model(x_t, t, cond=images)`` trained with :func:`mask_diffusion_loss`.
        images: ``(N, C_img, H, W)`` finite floating images.
        schedule: the training schedule.
        num_classes: ``K`` >= 2; encoding: one of :data:`ENCODINGS` (the model's ``C`` channels).
        steps: sampler steps in ``[1, T]`` (DDPM respaced when fewer than ``T``).
        sampler: ``"ddim"`` (η = 0) or ``"ddpm"`` (ancestral, Wolleb et al.'s); both clip x̂_0 to [−1, 1].
        ensemble: members per image ``E`` >= 1 (Wolleb et al.: 5).
        generator, progress, callback: as every sampler (the callback sees the ``(E · N, …)`` batch).

    Returns:
        A :class:`Segmentation` on the images' device, in their dtype (``labels`` int64).

    Raises:
        ValueError: images not a finite floating image batch, bad ``num_classes``/``steps``/``ensemble``, an
            unknown ``encoding`` or ``sampler``.
        TypeError: model or callback not callable, a bad schedule, generator or ``progress``.

    Notes:
        Official code (``scripts/segmentation_sample.py``): 1000 DDPM steps with learned σ, 5 samples, mean and
        variance of the samples over the ensemble. Here DDIM with few steps is the default (CPU budget); pass
        ``sampler="ddpm", steps=schedule.T`` for the official sampler with fixed variances. Used in chapter §6.2.
    """
    _check_common(model, images, ensemble, generator, progress, callback)
    check_schedule(schedule)
    channels = encoding_channels(num_classes, encoding)
    check_choice("sampler", sampler, ("ddim", "ddpm"))
    n = images.shape[0]
    cond = images.repeat(ensemble, 1, 1, 1)  # (E·N, C_img, H, W), member-major
    x_T = initial_noise((ensemble * n, channels, *images.shape[2:]), generator, like=images)  # (E·N, C, H, W)
    kw = dict(model_kwargs={"cond": cond}, generator=generator, progress=progress, callback=callback, clip_x0=True)
    if sampler == "ddim":
        x0 = ddim(model, x_T, schedule, steps=steps, **kw)
    else:
        x0 = ddpm(model, x_T, schedule, steps=steps, **kw)
    samples = x0.reshape(ensemble, n, channels, *images.shape[2:])  # (E, N, C, H, W)
    return _summarise(samples, decode_masks(samples.mean(0), num_classes, encoding))
