"""Two-stage blind restoration in the spirit of StableSR and DiffBIR, scaled down to pixel-space Fashion-MNIST (§4).

Stage 1 (:class:`~diffu.nn.Restorer`, trained by regression) removes the degradation and returns a clean but
smooth estimate, the posterior mean; stage 2 (:class:`~diffu.nn.ControlledUNet`, a frozen pretrained diffusion
UNet steered by a ControlNet adapter) samples a sharp image *conditioned on* that estimate. The blind degradation
model :func:`degrade` generates the training pairs of both stages. Recipes ``fmnist_restorer`` and
``fmnist_controlnet`` in :mod:`diffu.recipes` train them (stage 1 first: stage 2's loss runs the frozen stage 1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..checks import (
    check_bool,
    check_callable,
    check_finite,
    check_floating,
    check_generator,
    check_image,
    check_real,
    check_steps,
)
from ..nn.controlnet import ControlledUNet, Restorer, RestorerConfig
from ..samplers import ddim
from ..sampling import SamplerState, check_sampler_args, check_schedule, initial_noise
from ..schedules import Schedule, linear_schedule
from ..train import diffusion_loss

__all__ = ["BLUR_SIGMA", "FACTORS", "NOISE_SIGMA", "controlnet_loss", "degrade", "restorer_loss", "two_stage_restore"]

BLUR_SIGMA = (0.5, 2.0)  #: Gaussian blur std in pixels, drawn uniformly per image.
FACTORS = (2, 4)  #: Down-/up-sampling factor, drawn uniformly per image.
NOISE_SIGMA = (0.0, 0.1)  #: Additive Gaussian noise std on the [-1, 1] scale, drawn uniformly per image.


def _per_image(value, name, n, like, generator, low, high):
    """``value`` as an ``(N,)`` tensor like ``like``; drawn from U[low, high] when None."""
    if value is None:
        return low + (high - low) * torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
    if isinstance(value, torch.Tensor):
        ok = not value.is_complex() and value.dtype != torch.bool
    else:
        ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if not ok:
        raise ValueError(f"{name} must be a number >= 0 or an (N,) = ({n},) tensor of them, got {value!r:.80}")
    v = torch.as_tensor(value, device=like.device, dtype=like.dtype)
    if v.ndim == 0:
        v = v.expand(n)
    if v.shape != (n,) or not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
        raise ValueError(f"{name} must be a number >= 0 or an (N,) = ({n},) tensor of them, got {value!r}")
    return v


def _gaussian_blur(x, sigma):
    """Per-image separable Gaussian blur, ``sigma`` ``(N,)`` in pixels (0 = identity), replicate padding."""
    n, c, h, w = x.shape
    r = int(torch.ceil(3 * sigma.max()).item()) if sigma.numel() else 0
    if r == 0:
        return x
    taps = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-(taps**2) / (2 * sigma.clamp_min(1e-6)[:, None] ** 2))  # (N, 2r+1); σ → 0 gives a delta
    g = (g / g.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N·C, 2r+1)
    z = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="replicate")
    z = F.conv2d(z, g[:, None, None, :], groups=n * c)  # along W
    z = F.conv2d(z, g[:, None, :, None], groups=n * c)  # along H
    return z.reshape(n, c, h, w)


def _down_up(x, factor: int):
    """Block-average by ``factor`` (:class:`~diffu.inverse.BlockAverage`'s ``A``) and bilinear upsampling back."""
    if factor == 1:
        return x
    return F.interpolate(F.avg_pool2d(x, factor), size=x.shape[-2:], mode="bilinear", align_corners=False)


def degrade(
    x: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    blur_sigma=None,
    factor: int | None = None,
    noise_sigma=None,
    return_params: bool = False,
):
    """Blind degradation ``y = clamp(up_f(down_f(k_σb * x)) + σ_n n, −1, 1)`` for two-stage restoration (§4).

    A scaled-down version of the random "blur → resize → noise" chains used to train blind restorers (Real-ESRGAN,
    used by StableSR and DiffBIR; their JPEG step, second-order chain and anisotropic kernels are left out):

    1. Gaussian blur ``k_σb``, ``σ_b ~ U[0.5, 2.0]`` pixels (:data:`BLUR_SIGMA`), replicate padding;
    2. block averaging by ``f ∈ {2, 4}`` (uniform, :data:`FACTORS`), then bilinear upsampling back to ``H×W``;
    3. additive white Gaussian noise ``σ_n ~ U[0, 0.1]`` on the [-1, 1] scale (:data:`NOISE_SIGMA`);
    4. clamping to [-1, 1] (a real sensor's range).

    Each image draws its own parameters, in the order ``σ_b``, ``f``, ``σ_n``, noise, from ``generator`` (same
    seed → same output). "Fixed" mode: any parameter given is used for every image (``blur_sigma``/``noise_sigma``
    also accept an ``(N,)`` tensor; ``0`` switches a stage off, ``factor=1`` skips the resize).

    Args:
        x: clean images ``(N, C, H, W)`` in [-1, 1]; ``H`` and ``W`` divisible by the factor(s) used.
        generator: randomness for the parameters and the noise (on ``x``'s device).
        blur_sigma, factor, noise_sigma: fixed parameters (None: drawn per image).
        return_params: also return ``{"blur_sigma": (N,), "factor": (N,), "noise_sigma": (N,)}``.

    Returns:
        The degraded images ``(N, C, H, W)`` (and the parameters with ``return_params``).

    Raises:
        ValueError: ``x`` is not a finite floating-point image batch (the final clamp would turn infinities into
            plausible ±1); ``blur_sigma``/``noise_sigma`` not a finite number >= 0 or an ``(N,)`` tensor of them;
            ``factor`` not None or an integer >= 1 dividing ``H`` and ``W``.
        TypeError: ``generator`` is not a ``torch.Generator``, ``return_params`` not a bool.
    """
    if isinstance(x, torch.Tensor) and not x.is_floating_point():
        check_floating(x, "x")
    check_image(x)
    check_finite(x, "x")
    check_generator(generator)
    check_bool("return_params", return_params)
    n = x.shape[0]
    sb = _per_image(blur_sigma, "blur_sigma", n, x, generator, *BLUR_SIGMA)
    if factor is None:
        pick = torch.rand(n, generator=generator, device=x.device) < 0.5
        f = torch.where(pick, FACTORS[0], FACTORS[1])  # (N,) long
    elif isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be an integer >= 1 or None, got {factor!r}")
    else:
        f = torch.full((n,), factor, device=x.device, dtype=torch.long)
    sn = _per_image(noise_sigma, "noise_sigma", n, x, generator, *NOISE_SIGMA)
    for k in sorted(set(f.tolist())):
        if x.shape[-2] % k or x.shape[-1] % k:
            raise ValueError(f"image size {x.shape[-2]}×{x.shape[-1]} must be divisible by the factor {k}")
    z = _gaussian_blur(x, sb)
    out = torch.zeros_like(z)
    for k in sorted(set(f.tolist())):
        out = torch.where((f == k)[:, None, None, None], _down_up(z, k), out)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    y = (out + sn[:, None, None, None] * noise).clamp(-1, 1)
    if return_params:
        return y, {"blur_sigma": sb, "factor": f, "noise_sigma": sn}
    return y


# ----------------------------------------------------------------------------------------------------------------
# Training losses of the two stages (recipes fmnist_restorer, fmnist_controlnet)
# ----------------------------------------------------------------------------------------------------------------


def restorer_loss(model, x: torch.Tensor, generator=None) -> torch.Tensor:
    """Stage 1: ``‖R(degrade(x)) − x‖²`` (mean squared error) with a fresh random degradation per image; errors
    as :func:`degrade`, and ``TypeError`` for a ``model`` that is not callable."""
    check_callable("model", model)
    y = degrade(x, generator=generator)
    try:
        out = model(y)
    except ValueError as err:
        raise ValueError(f"x (shape {tuple(x.shape)}) does not fit the model: {err}") from err
    return F.mse_loss(out, x)


def controlnet_loss(model: ControlledUNet, x: torch.Tensor, generator=None, schedule: Schedule | None = None):
    """Stage 2: the ε-loss of the controlled UNet (Eq. 14 of Ho et al. 2020, linear schedule) on clean ``x``,
    conditioned on the frozen stage 1's restoration of a fresh random degradation, ``cond = R(degrade(x))``.
    The UNet's label is the null class (the model is used unconditionally). Errors as :func:`degrade`, and for a
    ``schedule`` that is neither None nor a :class:`~diffu.schedules.Schedule` (``TypeError``)."""
    if schedule is not None:
        check_schedule(schedule)
    if getattr(model, "restorer", None) is None:
        raise ValueError("model must be a ControlledUNet built with its frozen stage-1 restorer (restorer=...)")
    with torch.no_grad():
        y = degrade(x, generator=generator)
        try:
            cond = model.restorer(y)  # (N, 1, H, W)
        except ValueError as err:
            raise ValueError(f"x (shape {tuple(x.shape)}) does not fit the model's restorer: {err}") from err
    return diffusion_loss(model, schedule or linear_schedule(), x, generator, model_kwargs={"cond": cond})


def images_only(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor]:
    """Recipe data hook: restoration trains on the images alone."""
    return (x,)


def build_restorer() -> Restorer:
    """The architecture of the shipped ``fmnist_restorer`` (≈ 0.6 M parameters)."""
    return Restorer(RestorerConfig(in_channels=1, channels=32, channel_mult=(1, 2, 2)))


def build_controlled_unet(restorer: torch.nn.Module | None = None) -> ControlledUNet:
    """The shipped ``fmnist_unet`` (frozen) + a fresh ControlNet adapter + the frozen stage 1.

    ``restorer`` defaults to the shipped ``fmnist_restorer``; training ``fmnist_controlnet`` therefore needs
    ``fmnist_restorer`` to be shipped first (``FileNotFoundError``/``ValueError`` otherwise).

    The adapter's fresh layers draw from torch's global RNG, as any constructor does. The shipped adapter was
    initialised when :func:`diffu.pretrained.load` still drew each loaded network's (discarded) random
    initialisation from that RNG; the same two draws are made here first, so that
    ``python -m diffu.pretrained train fmnist_controlnet`` starts from the shipped file's initialisation."""
    from ..pretrained import available, build, info, load

    if restorer is not None and not isinstance(restorer, torch.nn.Module):
        raise TypeError(f"restorer must be a torch.nn.Module or None, got {type(restorer).__name__}")
    missing = [n for n in ("fmnist_unet",) + (() if restorer is not None else ("fmnist_restorer",))
               if n not in available()]  # fmt: skip
    if missing:
        raise FileNotFoundError(f"fmnist_controlnet needs the shipped weights {missing}: train them first "
                                f"(python -m diffu.pretrained train fmnist_restorer)")  # fmt: skip
    for name in ("fmnist_unet",) + (() if restorer is not None else ("fmnist_restorer",)):
        build(info(name))  # the draws the shipped adapter's initialisation followed (see above)
    return ControlledUNet(load("fmnist_unet"), restorer=restorer if restorer is not None else load("fmnist_restorer"))


# ----------------------------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------------------------


def two_stage_restore(
    restorer: Callable,
    controlled_model: Callable,
    y_degraded: torch.Tensor,
    schedule: Schedule,
    *,
    steps: int = 50,
    eta: float = 0.0,
    control_scale: float = 1.0,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
    x_T: torch.Tensor | None = None,
    return_stage1: bool = False,
):
    """Two-stage blind restoration (StableSR / DiffBIR style): ``x̂_1 = R(y)``, then DDIM on ``ε_θ(x_t, t | x̂_1)`` (§4).

    Stage 1 has the higher PSNR (it is the MSE-optimal estimate), stage 2 the sharper, more realistic output (lower
    FD) at some PSNR cost, the papers' claim. ``control_scale`` trades the two: ``0`` is unconditional sampling
    from the frozen prior, larger values follow ``x̂_1`` more closely.

    Args:
        restorer: stage 1, ``restorer(y) -> x̂_1`` of ``y``'s shape.
        controlled_model: stage 2, ``model(x_t, t, cond=x̂_1, control_scale=s, **model_kwargs) -> ε̂`` (a
            :class:`~diffu.nn.ControlledUNet`).
        y_degraded: degraded images ``(N, C, H, W)`` in [-1, 1] (e.g. from :func:`degrade`).
        schedule: the diffusion model's training schedule.
        steps: DDIM steps in ``[1, T]`` ("leading" spacing, :func:`diffu.samplers.ddim`); ``eta``: DDIM's η.
        control_scale: the control strength ``s ≥ 0`` multiplying every ControlNet residual.
        model_kwargs: extra arguments of the model (e.g. ``{"y": null labels}``); must not contain ``cond``.
        x_T: the initial noise ``(N, C, H, W)``; drawn from ``generator`` when None.
        callback: called after every DDIM step with ``SamplerState(i, t, x_t', x̂_0)``.
        return_stage1: also return the stage-1 output.

    Returns:
        The restored images ``(N, C, H, W)`` (not clamped), or ``(stage2, stage1)`` with ``return_stage1``.

    Raises:
        ValueError: ``y_degraded`` not a finite floating-point image batch; ``steps`` not in ``[1, T]``, ``eta`` not
            in [0, 1], ``control_scale`` not a finite number >= 0; ``model_kwargs`` holding ``cond`` or
            ``control_scale``; a stage-1 output of another shape; ``x_T`` not a finite tensor of the image shape.
        TypeError: ``restorer``/``controlled_model``/``callback`` not callable, ``schedule`` not a
            :class:`~diffu.schedules.Schedule`, ``return_stage1``/``progress`` not bools, a bad ``generator`` or
            ``model_kwargs``.

    Notes:
        A scaled-down illustration of StableSR (Wang et al. 2023, ``IceClear/StableSR``) and DiffBIR (Lin et al. 2024,
        ``XPixelGroup/DiffBIR``). Kept: DiffBIR's split into a regression stage 1 that removes the degradation and a
        generative stage 2 conditioned on its output; the frozen prior plus a ControlNet (copied encoder, zero convs,
        control strength ``s``) as the adapter; 50 sampling steps (DiffBIR's default, with its respaced DDPM sampler;
        here DDIM, whose ``eta = 1`` is the ancestral variant). Not kept: latent space (no VAE: pixels at 28×28);
        StableSR's time-aware encoder with SPADE-like modulation ``h (1 + γ) + β`` and its controllable feature wrapping
        (CFW, ``w``) between encoder and decoder; DiffBIR's IRControlNet, which concatenates the stage-1 *latent* to
        ``x_t`` at the ControlNet input (here the stage-1 image enters through ControlNet's hint branch instead);
        DiffBIR's restoration guidance, tiled sampling, wavelet colour fix and text prompts.
    """
    check_callable("restorer", restorer)
    check_sampler_args(controlled_model, generator=generator, progress=progress, callback=callback,
                       model_kwargs=model_kwargs, name="controlled_model")  # fmt: skip
    check_schedule(schedule)
    if isinstance(y_degraded, torch.Tensor) and not y_degraded.is_floating_point():
        check_floating(y_degraded, "y_degraded")
    check_image(y_degraded, "y_degraded")
    check_finite(y_degraded, "y_degraded")
    check_steps(steps, schedule.T)
    check_real("eta", eta, 0, 1)
    if isinstance(control_scale, bool) or not isinstance(control_scale, (int, float)) or not 0 <= control_scale < 1e6:
        raise ValueError(f"control_scale must be a finite number >= 0, got {control_scale!r}")
    check_bool("return_stage1", return_stage1)
    kwargs = dict(model_kwargs or {})
    if "cond" in kwargs or "control_scale" in kwargs:
        raise ValueError("model_kwargs must not contain 'cond' or 'control_scale' (two_stage_restore sets them)")
    # 1. stage 1: the regression estimate x̂_1 = R(y), the posterior mean (smooth)
    with torch.no_grad():
        try:
            x1 = restorer(y_degraded)  # (N, C, H, W)
        except ValueError as err:
            raise ValueError(f"y_degraded (shape {tuple(y_degraded.shape)}) does not fit the restorer: {err}") from err
    if not isinstance(x1, torch.Tensor) or x1.shape != y_degraded.shape:
        got = tuple(x1.shape) if isinstance(x1, torch.Tensor) else type(x1).__name__
        raise ValueError(f"restorer must return y_degraded's shape {tuple(y_degraded.shape)}, got {got}")
    # 2. stage 2: DDIM sampling of ε_θ(x_t, t | cond = x̂_1), every ControlNet residual scaled by control_scale
    x_T = initial_noise(x_T, generator, like=x1, shape=x1.shape)
    kwargs.update(cond=x1, control_scale=control_scale)
    x = ddim(controlled_model, x_T, schedule, steps=steps, eta=eta, model_kwargs=kwargs, generator=generator,
             progress=progress, callback=callback)  # fmt: skip
    return (x, x1) if return_stage1 else x
