"""SDSeg (Lin et al. 2024): segmentation in the latent space of an autoencoder, with a single-step reverse process.

The masks are moved into the latent space of an autoencoder (Stable Diffusion's KL-f8 there; a toy KL-f4,
:class:`~diffu.nn.autoencoder.Autoencoder`, here), and an ε-prediction UNet learns ``p(z_mask | image)`` with the
image's latent concatenated to its input. Two things make it a segmenter rather than a sampler:

* **the latent x₀ loss**: besides the ε-loss, the ``x̂₀`` the network implies, ``ẑ₀ = (z_t − √(1−ᾱ_t) ε̂)/√ᾱ_t``,
  is pulled to the true mask latent ``z₀`` (weight 1, both terms L1 as the official configs' ``loss_type: l1``), so
  that one prediction from pure noise is already a mask;
* **single-step inference**: draw ``z_T ~ N(0, I)``, predict once at ``t = T − 1``, take ``ẑ₀``, decode. No
  sampling loop; the claim to test is that this is as good as 10 or 50 DDIM steps.

**Conditional segmentation.** For ``K > 2`` classes the official model predicts once per class, with the class id as
its conditioning (``c_crossattn = [cls]``), each prediction a binary mask of that structure. Here the class id is the
UNet's class label ``y`` (structure ``s`` = label ``s + 1``), so asking for one structure segments only that
structure — the survey's "conditional" segmentation — and asking for all of them assembles the multi-class map
(a pixel takes the structure with the highest decoded score, background where no score is positive).

**Deviations** (toy scale, from scratch): the image condition is the image itself folded to the latent's
resolution (``pixel_unshuffle``: a 1 × 32 × 32 image becomes 16 × 8 × 8, lossless) instead of a trainable copy of
the VAE encoder; the mask autoencoder is trained on the binary masks (±1) of the dataset's structures, not
borrowed from an image model; DDIM uses our "leading" spacing. The noise schedule is the official one:
``scaled_linear`` with β from 0.0015 to 0.0155 (:func:`sdseg_schedule`).

Official code: ``lin-tianyu/Stable-Diffusion-Seg``, ``ldm/models/diffusion/SDSeg.py`` (``p_losses``,
``get_loss_seg_regression``, ``log_dice``'s ``use_direct`` branch) and ``configs/SDSeg/*.yaml``.

Used in chapter §6.3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checks import (
    check_bool,
    check_callable,
    check_finite,
    check_generator,
    check_image,
    check_int,
    check_labels,
    check_real,
    check_tensor,
)
from ..samplers import ddim
from ..sampling import check_schedule, initial_noise
from ..schedules import Schedule, scaled_linear_schedule

__all__ = [
    "LatentSegmentation",
    "encode_structures",
    "image_condition",
    "sdseg_loss",
    "sdseg_schedule",
    "sdseg_segment",
]


def sdseg_schedule(T: int = 1000) -> Schedule:
    """SDSeg's noise schedule: LDM's ``"linear"`` (linear in √β, our :func:`~diffu.schedules.scaled_linear_schedule`)
    from β = 0.0015 to 0.0155 over ``T`` steps (``linear_start``/``linear_end`` of every official SDSeg config)."""
    return scaled_linear_schedule(T, 0.0015, 0.0155)


def image_condition(images: torch.Tensor, size: int) -> torch.Tensor:
    """The image folded to the latent's resolution: ``pixel_unshuffle`` by ``H / size``, so ``(N, C, H, W)`` becomes
    ``(N, C·f², size, W/f)`` with every pixel kept (a 1 × 32 × 32 image → 16 × 8 × 8 for ``size = 8``).

    Raises:
        ValueError: ``images`` not a finite float image batch, ``size`` not a positive divisor of ``H`` and ``W``.
    """
    check_image(images, "images")
    check_finite(images, "images")
    check_int("size", size, 1)
    h, w = images.shape[-2:]
    if h % size or w % size or h // size != w // size:
        raise ValueError(f"size must divide the images' height and width by the same factor, got size {size} for "
                         f"{h}×{w} images")  # fmt: skip
    return F.pixel_unshuffle(images, h // size)


def _check_autoencoder(autoencoder) -> None:
    if not isinstance(autoencoder, torch.nn.Module) or not all(
        callable(getattr(autoencoder, m, None)) for m in ("encode", "decode")
    ):
        raise TypeError(f"autoencoder must be a torch.nn.Module with encode and decode methods (an Autoencoder), got "
                        f"{type(autoencoder).__name__}")  # fmt: skip


def encode_structures(autoencoder, labels: torch.Tensor, num_classes: int, batch_size: int = 1000) -> torch.Tensor:
    """The latent of every structure's binary mask: ``z[:, s] = autoencoder.encode(2·[labels = s + 1] − 1)`` for the
    ``K − 1`` structures (the background, class 0, is no structure), without gradients.

    Args:
        autoencoder: an :class:`~diffu.nn.autoencoder.Autoencoder` of one input channel (the masks', ±1).
        labels: ``(N, H, W)`` integer label maps in ``[0, num_classes)``.
        num_classes: ``K`` >= 2; batch_size: masks per encoder call (>= 1).

    Returns:
        ``(N, K − 1, C_z, H/4, W/4)`` latents (the autoencoder's ``scale_factor`` applied), on ``labels``' device.

    Raises:
        ValueError: bad labels, ``num_classes`` or ``batch_size``; TypeError: an autoencoder that is not a module
            with ``encode`` and ``decode``.
    """
    check_int("num_classes", num_classes, 2)
    check_int("batch_size", batch_size, 1)
    check_tensor(labels, "labels", ndim=3)
    check_labels(labels, num_classes, name="labels")
    _check_autoencoder(autoencoder)
    masks = torch.stack([labels == s for s in range(1, num_classes)], 1).flatten(0, 1)  # (N·S, H, W)
    masks = (2.0 * masks.float() - 1)[:, None]
    with torch.no_grad():
        z = torch.cat([autoencoder.encode(masks[i : i + batch_size]) for i in range(0, len(masks), batch_size)])
    return z.unflatten(0, (labels.shape[0], num_classes - 1))


def _check_latents(mask_latents, images) -> None:
    check_tensor(mask_latents, "mask_latents", ndim=5, floating=True)
    check_finite(mask_latents, "mask_latents")
    check_image(images, "images")
    check_finite(images, "images")
    if mask_latents.shape[0] != images.shape[0] or mask_latents.device != images.device:
        raise ValueError(f"mask_latents must be (N, S, C, h, w) with images' batch {images.shape[0]} on "
                         f"{images.device}, got {tuple(mask_latents.shape)} on {mask_latents.device}")  # fmt: skip


def sdseg_loss(model, schedule: Schedule, images: torch.Tensor, mask_latents: torch.Tensor, generator=None, *,
               x0_weight: float = 1.0) -> torch.Tensor:  # fmt: skip
    """SDSeg's training loss on a batch: for each image a structure ``s`` drawn uniformly, its mask latent ``z₀``,
    ``t ~ U{0, …, T−1}`` and ``ε ~ N(0, I)``; ``z_t = √ᾱ_t z₀ + √(1−ᾱ_t) ε``; ``ε̂ = model(z_t, t, cond=c, y=s)``
    with ``c`` the folded image (:func:`image_condition`); and

    ``L = mean |ε̂ − ε| + x0_weight · mean |ẑ₀ − z₀|``, ``ẑ₀ = (z_t − √(1−ᾱ_t) ε̂) / √ᾱ_t``.

    Args:
        model: ``model(z_t, t, cond=c, y=s)`` (a :class:`~diffu.nn.concat.ConcatUNet` over the latents, with
            ``cond_channels`` = the folded image's channels and ``num_classes`` >= the number of structures).
        schedule: the training schedule (:func:`sdseg_schedule`).
        images: ``(N, C, H, W)`` finite float images.
        mask_latents: ``(N, S, C_z, h, w)`` the structures' latents (:func:`encode_structures`), ``H/h`` an integer.
        generator: a ``torch.Generator`` on the images' device (it draws ``s``, then ``t``, then ``ε``), or None.
        x0_weight: the latent x₀ term's weight (>= 0; official 1).

    Returns:
        A 0-d differentiable tensor.

    Raises:
        ValueError: bad images or latents, or of different batches; a negative ``x0_weight``.
        TypeError: a model that is not callable, a bad schedule or generator.

    Notes:
        Official ``SDSeg.p_losses``: ``loss_simple`` (the ε term, L1) + ``loss_seg`` (``get_loss_seg_regression``:
        ``predict_start_from_noise`` against ``x_start``, L1, weight 1); the learned log-variance and the VLB term of
        the code are off in the configs and left out.
    """
    check_callable("model", model)
    check_schedule(schedule)
    check_generator(generator)
    check_real("x0_weight", x0_weight, 0)
    _check_latents(mask_latents, images)
    n, s_count = mask_latents.shape[:2]
    dev = images.device
    s = torch.randint(s_count, (n,), generator=generator, device=dev)
    z0 = mask_latents[torch.arange(n, device=dev), s]  # (N, C_z, h, w)
    t = torch.randint(schedule.T, (n,), generator=generator, device=dev)
    eps = torch.randn(z0.shape, generator=generator, device=dev, dtype=z0.dtype)
    abar = schedule.alpha_bar.to(dev, z0.dtype)[t].view(-1, 1, 1, 1)
    zt = abar.sqrt() * z0 + (1 - abar).sqrt() * eps
    eps_hat = model(zt, t, cond=image_condition(images, z0.shape[-1]), y=s)
    z0_hat = (zt - (1 - abar).sqrt() * eps_hat) / abar.sqrt()
    return F.l1_loss(eps_hat, eps) + x0_weight * F.l1_loss(z0_hat, z0)


class LatentSegmentation(NamedTuple):
    """What :func:`sdseg_segment` returns: ``scores`` ``(N, S, H, W)``, each requested structure's decoded mask (≈ +1
    inside, −1 outside), ``labels`` ``(N, H, W)`` int64: the structure with the highest score where it is positive
    (its class ``s + 1``), 0 elsewhere; ``structures`` the structure indices of ``scores``' channels."""

    scores: torch.Tensor
    labels: torch.Tensor
    structures: tuple


def _structure_list(structures, count: int) -> tuple:
    if structures is None:
        return tuple(range(count))
    if isinstance(structures, (str, bytes)) or not isinstance(structures, Sequence) or not structures:
        raise ValueError(f"structures must be None or a non-empty sequence of structure indices, got {structures!r}")
    for s in structures:
        check_int("structures", s, 0, count - 1)
    if len(set(structures)) != len(structures):
        raise ValueError(f"structures must not repeat, got {list(structures)}")
    return tuple(int(s) for s in structures)


def sdseg_segment(
    model,
    autoencoder,
    images: torch.Tensor,
    schedule: Schedule,
    *,
    num_structures: int,
    structures: Sequence[int] | None = None,
    steps: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> LatentSegmentation:
    """Segment with an SDSeg model: per requested structure, one latent from pure noise, decoded.

    ``steps = 1`` is SDSeg's inference: ``z_T ~ N(0, I)``, one call at ``t = T − 1``, ``ẑ₀ = (z_T − √(1−ᾱ) ε̂)/√ᾱ``.
    ``steps > 1`` runs DDIM (η = 0, "leading" spacing; the official comparison's sampler) from the same ``z_T``. The
    same noise serves every structure of an image (as the official loop over classes), and each structure is one
    batch of ``N`` model calls per step.

    Args:
        model: ``model(z, t, cond=c, y=s)`` trained with :func:`sdseg_loss`.
        autoencoder: the mask autoencoder (``encode``: ``(N, 1, H, W)`` masks → latents, ``decode`` back).
        images: ``(N, C, H, W)`` finite float images.
        schedule: the training schedule.
        num_structures: ``S``, the structures the model knows (``K − 1``).
        structures: the structure indices to segment (default all; e.g. ``[1]``: only structure 1, class 2).
        steps: 1 (single step) or the DDIM steps, in ``[1, T]``.
        generator, progress: as every sampler.

    Returns:
        A :class:`LatentSegmentation`.

    Raises:
        ValueError: bad images, ``num_structures``, ``structures`` or ``steps``.
        TypeError: a model that is not callable, an autoencoder without ``encode``/``decode``, a bad generator or
            ``progress``.
    """
    check_callable("model", model)
    _check_autoencoder(autoencoder)
    check_image(images, "images")
    check_finite(images, "images")
    check_schedule(schedule)
    check_int("num_structures", num_structures, 1)
    wanted = _structure_list(structures, num_structures)
    check_int("steps", steps, 1, schedule.T)
    check_generator(generator)
    check_bool("progress", progress)
    n, dev = images.shape[0], images.device
    scores = []
    with torch.no_grad():
        # the latent's shape: the autoencoder's code of one blank mask
        latent = autoencoder.encode(torch.zeros(1, 1, *images.shape[-2:], device=dev, dtype=images.dtype)).shape
        cond = image_condition(images, latent[-1])
        z_T = initial_noise((n, *latent[1:]), generator, like=images)
        for s in tqdm(wanted, disable=not progress, desc=f"SDSeg ({steps} step{'s' * (steps > 1)})"):
            y = torch.full((n,), s, device=dev, dtype=torch.long)
            if steps == 1:
                t = torch.full((n,), schedule.T - 1, device=dev, dtype=torch.long)
                abar = schedule.alpha_bar.to(dev, z_T.dtype)[-1]
                z0 = (z_T - (1 - abar).sqrt() * model(z_T, t, cond=cond, y=y)) / abar.sqrt()
            else:
                z0 = ddim(model, z_T, schedule, steps=steps, model_kwargs={"cond": cond, "y": y}, progress=False)
            scores.append(autoencoder.decode(z0)[:, 0])
    scores = torch.stack(scores, 1)  # (N, S', H, W)
    best, arg = scores.max(1)
    index = torch.tensor(wanted, device=dev)[arg] + 1
    labels = torch.where(best > 0, index, torch.zeros_like(index))
    return LatentSegmentation(scores, labels, wanted)
