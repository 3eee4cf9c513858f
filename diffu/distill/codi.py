"""CoDi, conditional diffusion distillation (Mei et al. 2024, "CoDi: Conditional Diffusion Distillation for
Higher-Fidelity and Faster Image Generation", CVPR 2024): in one training stage, teach a pretrained
*unconditional* diffusion model a new image condition and make it sample in a few steps.

The conditional model is the frozen base plus a zero-initialised adapter (here a ControlNet,
:class:`~diffu.nn.ControlledUNet`; the paper's parameter-efficient variant PE-CoDi also keeps the backbone frozen
and trains the adapter only), so at step 0 it *is* the unconditional model. For a training pair ``(x, c)``, a time
``t`` and its earlier time ``s = max(t − Δ, 0)``, with ``z_t = α_t x + σ_t ε`` (``α_t = √ᾱ_t``,
``σ_t = √(1 − ᾱ_t)``), CoDi does not ask a teacher for the next point of the probability-flow ODE: it builds it from
the adapted model's own prediction and the *same* noise (the paper's "adapted diffusion model prediction for the
latent variable"),

    ẑ_s = α_s x̂_θ(z_t, c, t) + σ_s ε,

and asks the predictions at ``(z_t, t)`` and ``(ẑ_s, s)`` to agree — the signal (conditional consistency) and the
noise (noise self-consistency). If ``x̂_θ(z_t, c, t) = x`` then ``ẑ_s = z_s`` exactly, so a perfect conditional
denoiser is a fixed point; the noise term is what ties the model to the data: a constant prediction ``x̂ ≡ a``
satisfies the signal term but leaves ``ε̂(z_t) − ε̂(ẑ_s) = α_t (x − a)/σ_t``.

**The noise term at its fixed point.** The noise self-consistency target ``ε̂_θ(ẑ_s, c, s)`` is ill-conditioned
where ``σ_s`` is small: ``x̂_θ(z_t)`` is a blurred (posterior-mean) image, the denoiser at ``s`` reads the blur
``α_s (x̂ − x)`` as noise and divides it by ``σ_s``. Measured on 64 test images with the untrained adapter
(``fmnist_unet``), its mean squared gap to ``ε̂_θ(z_t)`` is 0.33 at ``t = 50`` and 0.66 at ``t = 250`` (``s = 0``)
against 0.17 and 0.04 for the true ε; a first run of 150 steps with it drove ε̂ towards 0 (output std 0.3 at
``t = 50``) and the 4-step samples to 4.3 dB PSNR. :func:`codi_loss` therefore uses the value the noise target
takes at the fixed point, ε itself (the paired data's denoising loss), and keeps the bootstrapped signal term.
:func:`codi_targets` still returns the bootstrapped noise target, for comparison.

For an ε-prediction network the signal term is written in ε units: ``‖x̂_θ(z_t) − sg x̂_θ(ẑ_s)‖²`` weighted by
SNR(t) is ``‖ε̂_θ(z_t) − sg ε̃‖²`` with ``ε̃ = (z_t − α_t x̂_θ(ẑ_s, c, s))/σ_t``, which keeps it finite where
``α_t → 0`` (``x̂ = (z − σ ε̂)/α`` would amplify an error of ε̂ by ``σ_t/α_t ≈ 160`` at ``t = 999``);
``x̂_θ(z_t)`` is clipped to [-1, 1] before it makes ``ẑ_s``, as the DDIM sampler clips it. The target side is the
current weights under stop-gradient (``θ⁻ = θ``, the EMA-free target of Song & Dhariwal 2023's improved consistency
training).

The condition of chapter §7.3 is ×4 super-resolution (:func:`sr_condition`): the 7×7 block averages of a 28×28
Fashion-MNIST image, upsampled by pixel replication (the pseudo-inverse of
:class:`~diffu.inverse.operators.BlockAverage`).

Facts from the paper: the equation for ẑ_s above; a single stage (no conditional teacher is trained first); 1–4
sampling steps; an adapter on a frozen backbone for PE-CoDi. The ε target of the noise term, the ε-unit weighting,
the clip, ``Δ`` and θ⁻ = θ are our choices at this scale (the paper distils large latent text-to-image models).

NaN or inf in ``images`` or ``cond`` propagates to the loss (shapes and dtypes are checked; :func:`diffu.train.train`
checks its data once and a NaN loss stops it).

Used in chapter §7.3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import check_batch, check_callable, check_generator, check_int, check_tensor
from ..inverse.operators import BlockAverage
from ..samplers import ddim
from ..sampling import check_schedule
from ..schedules import Schedule, linear_schedule

__all__ = ["CODI_SKIP", "SR_FACTOR", "codi_loss", "codi_targets", "sr_condition", "sr_sample"]

#: ×4 super-resolution, 28×28 → 7×7 block averages.
SR_FACTOR = 4
#: Δ of the shipped student, the spacing of the 4-step trailing grid (999, 749, 499, 249) of a 1000-step schedule.
CODI_SKIP = 250


def sr_condition(images: torch.Tensor, factor: int = SR_FACTOR) -> torch.Tensor:
    """The super-resolution condition of an image batch: its ``factor × factor`` block averages, upsampled back
    by pixel replication (``A⁺ A x`` for ``A`` = :class:`~diffu.inverse.operators.BlockAverage`).

    Args:
        images: ``(N, C, H, W)`` float images, ``H`` and ``W`` divisible by ``factor``.
        factor: an integer ≥ 1.

    Returns:
        ``(N, C, H, W)``, constant on each ``factor × factor`` block.

    Raises:
        ValueError: a bad ``factor``, a size not divisible by it, ``images`` not a float ``(N, C, H, W)`` batch.
    """
    op = BlockAverage(factor)
    check_tensor(images, "images", ndim=4, floating=True)
    return op.pinv(op(images))


def _check_images(model, x: torch.Tensor, name: str) -> None:
    """``x`` is a float ``(N, C, H, W)`` batch that ``model`` takes (its own ``check_input``: channels, size)."""
    check_tensor(x, name, ndim=4, floating=True)
    if callable(getattr(model, "check_input", None)):
        model.check_input(x, name)


def _coef(schedule: Schedule, t: torch.Tensor, like: torch.Tensor):
    a = schedule.at("alpha_bar", t, like)
    return a.sqrt(), (1 - a).sqrt()


def codi_targets(model, z_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, cond: torch.Tensor, *,
                 schedule: Schedule,
                 skip: int = CODI_SKIP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """One side of CoDi's consistency pair: the prediction at ``(z_t, t)`` and the stop-gradient targets from
    ``(ẑ_s, s)``, all in ε units (module docstring).

    Args:
        model: ``model(z, t, cond=c) -> ε̂`` (a :class:`~diffu.nn.ControlledUNet`).
        z_t: ``(N, C, H, W)`` noisy images ``α_t x + σ_t ε``.
        t: ``(N,)`` integer timesteps in ``[0, T)``.
        eps: the noise that made ``z_t``, like ``z_t``.
        cond: the condition maps of the batch.
        schedule: the model's schedule (``T`` steps).
        skip: ``Δ``, an integer ≥ 1; ``s = max(t − Δ, 0)``.

    Returns:
        ``(ε̂_θ(z_t, c, t), ε̃_signal, ε̂_noise)``: the prediction (with gradient), the signal-consistency target
        ``(z_t − α_t x̂_θ(ẑ_s, c, s))/σ_t`` and the noise-consistency target ``ε̂_θ(ẑ_s, c, s)`` (both detached).

    Raises:
        TypeError: ``model`` not callable, a bad ``schedule``.
        ValueError: ``z_t`` not a float ``(N, C, H, W)`` batch the model takes, ``eps`` not a float tensor of
            ``z_t``'s shape, a bad ``skip``; ``t`` and ``cond`` are checked by the model and the schedule, naming them.
    """
    check_callable("model", model)
    check_schedule(schedule)
    _check_images(model, z_t, "z_t")
    check_tensor(eps, "eps", floating=True)
    if eps.shape != z_t.shape:  # it would broadcast into ẑ_s
        raise ValueError(f"eps must have z_t's shape {tuple(z_t.shape)}, got {tuple(eps.shape)}")
    check_int("skip", skip, 1)
    eps_t = model(z_t, t, cond=cond)
    with torch.no_grad():
        x_t = schedule.eps_to_x0(eps_t.detach(), z_t, t).clamp(-1, 1)
        s = (t - skip).clamp(min=0)
        a_s, sig_s = _coef(schedule, s, z_t)
        z_s = a_s * x_t + sig_s * eps  # the adapted model's prediction of the latent at s, with the same noise
        eps_s = model(z_s, s, cond=cond)
        x_s = schedule.eps_to_x0(eps_s, z_s, s)
        a_t, sig_t = _coef(schedule, t, z_t)
        eps_signal = (z_t - a_t * x_s) / sig_t
    return eps_t, eps_signal, eps_s


def codi_loss(model, images: torch.Tensor, cond: torch.Tensor, *, schedule: Schedule, skip: int = CODI_SKIP,
              generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """CoDi's single-stage loss on a batch of pairs (module docstring): the noise term at its fixed point plus the
    conditional consistency of the signal, both in ε units,

        L = mean ‖ε̂_θ(z_t, c, t) − ε‖² + mean_{t > Δ} ‖ε̂_θ(z_t, c, t) − ε̃_signal‖²

    (the second mean over the pairs with ``t > Δ``, whose ``s = t − Δ`` is a noisy time; it is 0 when there are
    none; for ``t ≤ Δ``, ``ẑ_0`` is ``x̂_θ(z_t)`` itself and the target says nothing).

    With ``functools.partial`` over the keyword arguments it is a ``loss_fn`` for :func:`diffu.train.train` on
    ``(images, cond)`` data. Draws, in this order from ``generator``: ``t ~ U{1, …, T−1}`` ``(N,)``, then
    ``ε ~ N(0, I)`` like ``images``.

    Args:
        model: ``model(z, t, cond=c) -> ε̂``, the adapted network being trained (an ε-prediction
            :class:`~diffu.nn.ControlledUNet` whose base is the frozen pretrained model).
        images: ``(N, C, H, W)`` clean training images in [-1, 1].
        cond: ``(N, C_cond, H, W)`` their conditions (e.g. :func:`sr_condition` of ``images``).
        schedule: the base's :class:`~diffu.schedules.Schedule`.
        skip: ``Δ`` between the two times of a pair, an integer ≥ 1.
        generator: a ``torch.Generator`` on ``images``' device, or None.

    Returns:
        The scalar loss (a 0-d tensor with a gradient for the trainable parameters).

    Raises:
        TypeError: ``model`` not callable, a bad ``schedule`` or ``generator``.
        ValueError: ``images`` not a float ``(N, C, H, W)`` batch the model takes, ``cond`` not a tensor or its batch
            not ``images``', a bad ``skip``; the model's own checks name ``cond``.
    """
    check_callable("model", model)
    check_schedule(schedule)
    _check_images(model, images, "images")
    check_tensor(cond, "cond")
    check_batch(cond, images.shape[0], "cond", of="images'")
    check_int("skip", skip, 1)
    check_generator(generator)
    n, dev = images.shape[0], images.device
    t = torch.randint(1, schedule.T, (n,), generator=generator, device=dev)
    eps = torch.randn(images.shape, generator=generator, device=dev, dtype=images.dtype)
    z_t = schedule.q_sample(images, t, eps)
    eps_t, eps_signal, _ = codi_targets(model, z_t, t, eps, cond, schedule=schedule, skip=skip)
    per_pair = (eps_t - eps_signal).pow(2).flatten(1).mean(1)
    signal = (per_pair * (t > skip)).sum() / (t > skip).sum().clamp(min=1)
    return F.mse_loss(eps_t, eps) + signal


def sr_sample(model, cond: torch.Tensor, *, steps: int = 4, schedule: Schedule | None = None,
              generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:  # fmt: skip
    """Super-resolve with a conditional ε-model: deterministic DDIM (η = 0) over ``steps`` "trailing" timesteps
    (``999, 749, 499, 249`` for 4 steps, the grid :data:`CODI_SKIP` is the spacing of), x̂_0 clipped to [-1, 1],
    from noise drawn from ``generator``; the output is clamped to [-1, 1]. The same sampler serves the 50-step
    conditional teacher and the few-step CoDi student, so that they differ only in their weights. NFE = ``steps``.

    Args:
        model: ``model(x_t, t, cond=c) -> ε̂`` (a :class:`~diffu.nn.ControlledUNet`).
        cond: ``(N, C_cond, H, W)`` conditions (:func:`sr_condition` of the images to recover); the samples have
            ``(N, C, H, W)`` with the base UNet's input channels (``C_cond`` for a model without a UNet config).
        steps: an integer in ``[1, T]``.
        schedule: the model's schedule (default: the linear 1000-step schedule of the shipped UNets).
        generator: a ``torch.Generator`` on ``cond``'s device for the initial noise, or None.
        progress: show a progress bar.

    Returns:
        ``(N, C, H, W)`` samples in [-1, 1].

    Raises:
        TypeError, ValueError: as :func:`diffu.samplers.ddim` (naming the argument); ``cond`` not a float
            ``(N, C_cond, H, W)`` tensor, or of a size the model does not take (``ValueError``).
    """
    check_tensor(cond, "cond", ndim=4, floating=True)
    schedule = schedule or linear_schedule()
    config = getattr(getattr(model, "base", model), "config", None)  # a ControlledUNet's frozen UNet
    channels = getattr(config, "in_channels", cond.shape[1])
    shape = (cond.shape[0], channels, *cond.shape[-2:])
    if callable(getattr(model, "check_input", None)):  # the samples have cond's size: one the network takes
        model.check_input(torch.empty(shape, device="meta", dtype=cond.dtype), "cond")
    out = ddim(model, shape, schedule, steps=steps, spacing="trailing", clip_x0=True, model_kwargs={"cond": cond},
               generator=generator, progress=progress)  # fmt: skip
    return out.clamp(-1, 1)
