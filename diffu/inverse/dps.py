"""Diffusion Posterior Sampling (Chung et al. 2023), chapter §4.2.

DPS turns an unconditional ε-prediction model into a sampler of ``p(x_0 | y)`` for ``y = A(x_0) + noise`` with any
differentiable forward model ``A`` (linear or not): every ancestral step is followed by a gradient step on the
measurement error of Tweedie's denoised estimate, differentiated *through the network*.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ..checks import check_bool, check_choice, check_finite, check_floating, check_real
from ..samplers import ddpm_step
from ..sampling import SamplerState, check_sampler_args, check_schedule, initial_noise, model_eps, respaced
from ..schedules import Schedule

__all__ = ["NOISES", "dps", "residual_norm"]

#: The measurement noise models of :func:`dps` (which norm of the residual it differentiates).
NOISES = ("gaussian", "poisson")

# The smallest intensity the Poisson weighting divides by, on the [0, 1] scale: one photon of the official noise
# model at its rate 1 (``PoissonNoise`` draws ``Poisson(255 · rate · u)`` counts of a [0, 1] image ``u``), which is
# also one grey level of an 8-bit image. Zero counts (black pixels, y = −1) are weighted as one photon.
_ZERO_COUNT = 1 / 255


def residual_norm(y: torch.Tensor, ay: torch.Tensor, noise: str = "gaussian", per_image: bool = True) -> torch.Tensor:
    """The scalar DPS differentiates: the unsquared residual norm ``‖y − A(x̂_0)‖`` (official ``PosteriorSampling``).

    Args:
        y: the measurement ``(N, …)``, floating point (for "poisson": ``y >= −1``, a non-negative intensity
            ``(y + 1)/2``).
        ay: ``A(x̂_0)``, of ``y``'s shape.
        noise: "gaussian": ``‖r‖``; "poisson": the official code's reweighting ``(‖r‖ / |y|).mean()`` computed on
            the [0, 1] intensity scale: with ``u = (y + 1)/2`` and ``r_u = (y − A(x̂_0))/2``,
            ``‖r_u‖ · mean(1 / max(u, 1/255))`` (see Notes).
        per_image: the sum over images of per-image norms, ``Σ_n ‖r_n‖`` (each image's gradient is its own), or
            ``False``: the norm of the whole batch tensor, which couples the images (see :func:`dps`).

    Returns:
        A 0-d tensor. A NaN in ``ay`` (a diverged ``x̂_0``) propagates.

    Raises:
        ValueError: ``y``/``ay`` not floating-point tensors of the same shape with a batch dimension, a ``y`` with
            NaN or infinity, an unknown ``noise``, and for "poisson" a ``y < −1`` (a negative intensity).
        TypeError: ``per_image`` is not a bool.

    Notes:
        Poisson weighting: ``DPS2022/diffusion-posterior-sampling``, ``condition_methods.py::grad_and_value``,
        divides the residual norm by ``measurement.abs()`` and averages, ``(‖y − A(x̂_0)‖ / |y|).mean()``, where
        ``measurement`` is the output of its ``PoissonNoise`` mapped back to [-1, 1]; the weight ``1/|y|`` stands for
        the paper's weighted least squares with ``Λ = diag(1 / 2y_j)`` (Chung et al. 2023), the inverse variance of
        counts ``y_j >= 0``. On [-1, 1] images that weight is infinite at mid-grey (``y = 0``, an ordinary intensity
        of one half; a single such pixel used to blow DPS up to ±4e3) and smallest for black pixels, the opposite of
        Poisson statistics. We apply it where it belongs, to the intensities ``u = (y + 1)/2 ∈ [0, 1]`` and the
        residual on that scale (``‖r‖/2``), and weight a zero count (black, ``u = 0``) as one photon of the
        official noise model at rate 1, ``u = 1/255``, instead of dividing by 0. For ``y = 0`` everywhere this is
        the Gaussian norm ``‖r‖``; the weight ranges from 1 (white) to 255 (black), so dark measurements take larger
        steps and ζ needs retuning for ``noise="poisson"``.
    """
    check_floating(y, "y")
    check_finite(y, "y")
    check_floating(ay, "ay")
    if ay.shape != y.shape:
        raise ValueError(f"ay must have y's shape {tuple(y.shape)}, got {tuple(ay.shape)}")
    if y.ndim == 0:
        raise ValueError("y must have a batch dimension (N, …), got a 0-d tensor")
    check_choice("noise", noise, NOISES)
    check_bool("per_image", per_image)
    if noise == "poisson" and y.numel() and bool((y < -1).any()):
        raise ValueError(f"y must be >= -1 for Poisson noise (a non-negative intensity (y + 1)/2), got min "
                         f"{float(y.min()):.4g}")  # fmt: skip
    return _residual_norm(y, ay, noise, per_image)


def _residual_norm(y: torch.Tensor, ay: torch.Tensor, noise: str, per_image: bool) -> torch.Tensor:
    """:func:`residual_norm` without the checks (:func:`dps` checks ``y`` once at entry, not at every step)."""
    if noise == "poisson":
        y, ay = (y + 1) / 2, (ay + 1) / 2  # the intensities on [0, 1], where the Poisson weighting applies
    r = y - ay
    if per_image:
        norm = torch.linalg.vector_norm(r.reshape(r.shape[0], -1), dim=1)  # (N,)
    else:
        norm = torch.linalg.vector_norm(r)
    if noise == "poisson":
        w = 1 / y.clamp(min=_ZERO_COUNT)  # 1/u, a zero count weighted as one photon
        norm = norm * w.reshape(w.shape[0], -1).mean(1) if per_image else norm * w.mean()
    return norm.sum()


def _dps_start(y, op, schedule, x_T, generator, scale, noise, clip_x0, per_image) -> torch.Tensor:
    """Check :func:`dps`'s arguments and return the initial state (``x_T``, or noise of the image shape)."""
    check_real("scale", scale, 0)
    check_choice("noise", noise, NOISES)
    check_bool("clip_x0", clip_x0)
    check_bool("per_image", per_image)
    check_schedule(schedule)
    check_floating(y, "y")
    check_finite(y, "y")
    if y.ndim == 0:
        raise ValueError("y must have a batch dimension (N, …), got a 0-d tensor")
    if noise == "poisson" and y.numel() and bool((y < -1).any()):
        raise ValueError(f"y must be >= -1 for noise='poisson' (a non-negative intensity (y + 1)/2), got min "
                         f"{float(y.min()):.4g}")  # fmt: skip
    if not callable(getattr(op, "A", None)):
        raise TypeError(f"op must be a forward model with a callable A, got {type(op).__name__}")
    given = x_T is not None
    if x_T is None:  # the image shape: op.AT(y)'s for linear operators, y's otherwise
        x_T = op.AT(y).shape if callable(getattr(op, "AT", None)) and getattr(op, "linear", False) else y.shape
    if not (
        x_T.ndim == 4 if isinstance(x_T, torch.Tensor) else isinstance(x_T, (tuple, list, torch.Size)) and len(x_T) == 4
    ):
        got = tuple(x_T.shape) if isinstance(x_T, torch.Tensor) else x_T
        if not given:
            raise ValueError(f"x_T must be given (an image shape (N, C, H, W)) when y's image shape is not one, got "
                             f"{tuple(got)}")  # fmt: skip
        raise ValueError(f"x_T must be a tensor or an image shape (N, C, H, W), got {got!r:.80}")
    x = initial_noise(x_T, generator, like=y)
    with torch.no_grad():
        ay = op.A(x)
    if ay.shape != y.shape:
        of = "x_T" if given else "x"
        raise ValueError(f"y must have the shape of op.A({of}) {tuple(ay.shape)}, got {tuple(y.shape)}")
    return x


def dps(
    model: Callable,
    y: torch.Tensor,
    op,
    schedule: Schedule,
    *,
    steps: int | None = None,
    scale: float = 0.3,
    noise: str = "gaussian",
    clip_x0: bool = True,
    per_image: bool = True,
    spacing: str = "leading",
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
    x_T=None,
) -> torch.Tensor:
    """DPS (Chung et al. 2023, Algorithm 1): ancestral steps corrected by ``−ζ ∇_{x_t} ‖y − A(x̂_0(x_t))‖``.

    Works with any differentiable forward model ``A``, linear or not: the gradient runs through the network.

    Args:
        model: ``model(x_t, t, **model_kwargs)`` predicting ε (or what ``model.prediction`` says).
        y: the measurement ``(N, …)``, shaped like ``op.A(x)``.
        op: a forward model with a differentiable ``op.A(x)`` (:mod:`diffu.inverse.operators`, ``PhaseRetrieval``…).
        schedule: the training schedule.
        steps: number of steps (default ``T``); fewer respace the schedule as :func:`diffu.samplers.ddpm` does.
        scale: ζ >= 0; 0 gives plain ancestral sampling.
        noise: "gaussian" or "poisson": which official norm to use (:func:`residual_norm`).
        clip_x0: clip x̂_0 to [-1, 1] before both the step and the measurement loss.
        per_image: one residual norm per image (default), or ``False``: the norm of the whole batch (see Notes).
        spacing: the timesteps kept when ``steps < T`` (:data:`diffu.sampling.SPACINGS`).
        x_T: initial noise, or a shape; default ``op.AT(y)``'s shape for linear operators, else ``y``'s shape (pass
            it for non-linear operators that change the size, e.g. ``PhaseRetrieval``).
        callback: called after every step with ``SamplerState(i, t, x_{t-1}, x̂_0)``.

    Returns:
        The reconstruction ``x_0`` ``(N, C, H, W)`` in the dtype and device of ``y``.

    Raises:
        ValueError: ``y`` is not a finite floating-point tensor (for "poisson", also ``y >= −1``) of the shape
            ``op.A`` gives for the image shape; ``scale`` not a finite number >= 0; an unknown ``noise`` or
            ``spacing``; ``steps`` not in ``[1, T]``; ``x_T`` neither a finite image batch nor an image shape.
        TypeError: ``model``/``callback`` not callable, ``op`` without a callable ``A``, ``schedule`` not a
            :class:`~diffu.schedules.Schedule`, ``clip_x0``/``per_image``/``progress`` not bools, a bad
            ``generator`` or ``model_kwargs``.

    Notes:
        Official code: ``DPS2022/diffusion-posterior-sampling`` (``condition_methods.py::PosteriorSampling``,
        ``gaussian_diffusion.py::p_sample_loop``). It differentiates the *unsquared* norm; the paper's
        ``ζ_t ∇‖y − A(x̂_0)‖²`` with ``ζ_t = ζ / ‖y − A(x̂_0)‖`` is the same step up to a factor 2 absorbed in ζ.
        Its ``clip_denoised`` clamps x̂_0 *before* the measurement loss, so clipped pixels get no gradient.

        The norm is taken over the whole batch tensor there, but the official sampler only ever runs one image at a
        time, where whole-batch and per-image norms coincide. For ``N > 1`` images a batch norm divides each image's
        gradient by the norm of the whole batch's residual, shrinking each step by ≈ √N and coupling the images; the
        default ``per_image=True`` samples every image as if alone (``per_image=False`` keeps the coupled norm).

        For ``noise="poisson"`` the official code uses ``‖r‖ · mean(1/|y|)``, a scalar reweighting, not the paper's
        weighted least squares ``‖r‖²_Λ`` (Λ = diag(1/2y)); we follow the code, but on the [0, 1] intensity scale
        where its ``1/|y|`` is an inverse Poisson variance (on [-1, 1] it divides by 0 at mid-grey), with zero counts
        weighted as one photon (:func:`residual_norm`).

        The official runs use 1000 unrespaced steps with learned variances (``model_var_type: learned_range``) on
        256×256 FFHQ/ImageNet and ζ = 0.3 (×4 SR), 0.5 (inpainting), 1.0 (phase retrieval); ours use fixed small
        variances (σ_t² = β̃_t) on 28×28 Fashion-MNIST, usually with fewer steps, so ζ needs retuning. §4.2.
    """
    check_sampler_args(model, generator=generator, progress=progress, callback=callback, model_kwargs=model_kwargs)
    x = _dps_start(y, op, schedule, x_T, generator, scale, noise, clip_x0, per_image)
    ts, sched = respaced(schedule, steps, spacing)  # model timesteps (increasing) and the respaced ᾱ
    steps = len(ts)
    for i in tqdm(range(steps - 1, -1, -1), disable=not progress, desc=f"DPS-{steps}"):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            # 1. ε̂ = ε_θ(x_t, t), with x_t requiring grad
            eps = model_eps(model, x, int(ts[i]), schedule, model_kwargs)
            # 2. Tweedie's x̂_0 and the ordinary ancestral step x'_{t-1} = μ̃_t(x_t, x̂_0) + σ_t z
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if i > 0 else None
            x_prev, x0 = ddpm_step(sched, x, i, eps, clip_x0=clip_x0, noise=z)
            # 3. the measurement residual ‖y − A(x̂_0)‖ and its gradient through the network
            norm = _residual_norm(y, op.A(x0), noise, per_image)
            (grad,) = torch.autograd.grad(norm, x)
        # 4. x_{t-1} = x'_{t-1} − ζ ∇_{x_t} ‖y − A(x̂_0)‖
        x = (x_prev - scale * grad).detach()
        if callback is not None:
            callback(SamplerState(steps - 1 - i, int(ts[i]), x.clone(), x0.detach().clone()))
    return x
