"""Predictor–corrector sampling with a measurement-consistency projection after every update: the score-SDE
approach to medical inverse problems (Song, Shen, Xing & Ermon, ICLR 2022, "Solving inverse problems in medical
imaging with score-based generative models"; in the same spirit, Chung & Ye 2022, score-MRI), for the discrete VP
models of diffu. Chapter §5.

The measurement ``y = A x`` is noised like the state, ``y_t = √ᾱ_t y + √(1 − ᾱ_t) A ε``, and before each corrector
and predictor update the state is moved towards ``{x : A x = y_t}`` by the relaxed projection
``x ← x + λ A⁺(y_t − A x)`` (:func:`project_measurement`). For ``A = M F`` (Cartesian MRI: a mask ``M`` after the
orthonormal Fourier transform ``F``) this is the paper's ``x ← F⁻¹[λ M y_t + (1 − λ M) F x]``: the measured k-space
lines are replaced (``λ = 1``) or blended.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ..checks import check_bool, check_finite, check_floating, check_int, check_real
from ..samplers import ddpm_step
from ..sampling import SamplerState, check_sampler_args, check_schedule, initial_noise, model_eps, noise_like, respaced
from ..schedules import Schedule
from .classical import cg
from .operators import LinearOperator

__all__ = ["pc_projection", "project_measurement"]


def _check_op(op) -> None:
    if not (callable(getattr(op, "A", None)) and callable(getattr(op, "AT", None))):
        raise TypeError(f"op must be a linear operator with callable A and AT, got {type(op).__name__}")


def _project(x: torch.Tensor, y_t: torch.Tensor, op, lam: float, pinv_iters: int) -> torch.Tensor:
    """:func:`project_measurement` without the checks."""
    r = y_t - op.A(x)
    if getattr(op, "has_pinv", False):
        return x + lam * op.pinv(r)
    # CG from 0 on AᵀA δ = Aᵀr: the minimum-norm least-squares δ = A⁺r; stop at rounding level (100 ε)
    delta = cg(lambda v: op.AT(op.A(v)), op.AT(r), tol=100 * torch.finfo(x.dtype).eps, max_iter=pinv_iters)
    return x + lam * delta


def project_measurement(
    x: torch.Tensor, y_t: torch.Tensor, op: LinearOperator, *, lam: float = 1.0, pinv_iters: int = 20
) -> torch.Tensor:
    """The relaxed projection ``x + λ A⁺(y_t − A x)`` onto the measurement set ``{x : A x = y_t}`` (the general form
    of the data-consistency step of Song, Shen, Xing & Ermon 2022). ``λ = 1`` projects (``A x' = y_t`` where
    ``A A⁺ = I`` on the residual), ``λ = 0`` leaves ``x`` alone. §5.

    ``A⁺`` is ``op.pinv`` where the operator has one (``MRI``, ``Inpainting``…: exact), else the minimum-norm
    least-squares correction by ``pinv_iters`` CG iterations on ``AᵀA δ = Aᵀ(y_t − A x)`` from ``δ = 0``
    (``Radon``: approximate; CG from 0 stays in the range of ``Aᵀ``).

    Args:
        x: images ``(N, C, H, W)``, floating point.
        y_t: a measurement shaped like ``op.A(x)``.
        op: a linear operator (callable ``A`` and ``AT``; ``pinv`` used when ``op.has_pinv``).
        lam: λ ∈ [0, 1].
        pinv_iters: CG iterations for operators without ``pinv``, an integer >= 1.

    Returns:
        The projected images like ``x``.

    Raises:
        TypeError: ``op`` without callable ``A``/``AT``.
        ValueError: ``x``/``y_t`` not floating point, ``y_t`` not finite, ``op.A(x)`` not of ``y_t``'s shape,
            ``lam`` outside [0, 1], ``pinv_iters`` not an integer >= 1. NaN in ``x`` propagates.
    """
    _check_op(op)
    check_real("lam", lam, 0, 1)
    check_int("pinv_iters", pinv_iters, 1)
    check_floating(x, "x")
    check_floating(y_t, "y_t")
    check_finite(y_t, "y_t")
    ax = op.A(x)
    if ax.shape != y_t.shape:
        raise ValueError(f"y_t must have the shape of op.A(x) {tuple(ax.shape)}, got {tuple(y_t.shape)}")
    return _project(x, y_t, op, lam, pinv_iters)


def _langevin(x: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor, alpha: float, snr: float, z: torch.Tensor):
    """One Langevin corrector step with score ``s = −ε̂/√(1 − ᾱ_t)``: ``x + δ s + √(2δ) z``,
    ``δ = 2 α (snr ‖z‖/‖s‖)²`` per image (no step for an image whose score is exactly 0)."""
    score = -eps / (1 - ab).sqrt()
    g = score.flatten(1).norm(dim=1)  # (N,)
    n = z.flatten(1).norm(dim=1)
    step = torch.where(g > 0, 2 * alpha * (snr * n / torch.where(g > 0, g, 1)) ** 2, 0)
    step = step.reshape(-1, *([1] * (x.ndim - 1)))
    return x + step * score + (2 * step).sqrt() * z


def pc_projection(
    model: Callable,
    y: torch.Tensor,
    op: LinearOperator,
    schedule: Schedule,
    *,
    steps: int | None = None,
    snr: float = 0.16,
    corrector_steps: int = 1,
    lam: float = 1.0,
    pinv_iters: int = 20,
    clip_x0: bool = True,
    spacing: str = "leading",
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
    x_T=None,
) -> torch.Tensor:
    """Predictor–corrector sampling with a data-consistency projection (Song, Shen, Xing & Ermon, ICLR 2022) for
    a discrete VP ε-model: at every timestep, project, ``corrector_steps`` Langevin steps, project, one ancestral
    step; at the end one projection onto the measurement itself. NFE = ``steps · (1 + corrector_steps)``
    (``steps`` when ``snr = 0``).

    Each projection uses a fresh noised measurement ``y_t = √ᾱ_t y + √(1 − ᾱ_t) A ε`` (:func:`project_measurement`).
    The corrector is score_sde's Langevin step with the signal-to-noise rule ``δ = 2 α_t (snr ‖z‖/‖s‖)²`` and
    ``α_t = 1 − β_t`` of the (respaced) schedule; the predictor is the ancestral step
    (:func:`diffu.samplers.ddpm_step`, σ_t² = β̃_t), which returns the posterior mean at the last step.

    Args:
        model: ``model(x_t, t, **model_kwargs)`` predicting ε (or what ``model.prediction`` says).
        y: the noiseless (or lightly noisy) measurement ``(N, …)``, shaped like ``op.A(x)``, finite.
        op: a linear operator (``pinv`` used where it exists, else CG; see :func:`project_measurement`).
        schedule: the training schedule.
        steps: predictor steps (default ``T``), respaced as :func:`diffu.samplers.ddpm` does.
        snr: the corrector's signal-to-noise ratio r >= 0 (score_sde's default 0.16); 0 switches the corrector off.
        corrector_steps: Langevin steps per timestep, an integer >= 0.
        lam: the projection's λ ∈ [0, 1] (1: replace the measured components; 0: unconditional sampling).
        pinv_iters: CG iterations of ``A⁺`` for operators without ``pinv``, an integer >= 1.
        clip_x0: clip x̂_0 to [-1, 1] in the ancestral step (as :func:`diffu.samplers.ddpm`).
        spacing: the kept timesteps when ``steps < T`` (:data:`diffu.sampling.SPACINGS`).
        model_kwargs, generator, progress, callback: as every sampler; ``callback`` gets
            ``SamplerState(i, t, x_{t−1}, x̂_0)`` after each predictor step.
        x_T: initial noise ``(N, C, H, W)`` or a shape; default noise of ``op.AT(y)``'s shape.

    Returns:
        The reconstruction ``(N, C, H, W)`` in ``y``'s dtype and device.

    Raises:
        TypeError: ``model``/``callback`` not callable, ``op`` without callable ``A``/``AT``, ``schedule`` not a
            :class:`~diffu.schedules.Schedule`, ``clip_x0``/``progress`` not bools, a bad ``generator`` or
            ``model_kwargs``.
        ValueError: ``y`` not a finite floating-point tensor of ``op.A``'s output shape; ``snr`` not a finite
            number >= 0; ``corrector_steps`` not an integer >= 0; ``lam`` outside [0, 1]; ``pinv_iters`` not an
            integer >= 1; ``steps`` outside ``[1, T]``; an unknown ``spacing``; a bad ``x_T``.

    Notes:
        Official code: ``yang-song/score_inverse_problems``, ``cs.py::get_projection_sampler`` (projection before
        the corrector and before the predictor, a fresh noise draw for each, ``merge_known_with_mask``) and
        ``sampling.py::LangevinCorrector``. Their tuned settings, for VE SDE models with N = 1000 steps: CT
        ``snr = 0.246``, ``λ = 0.841``; MRI ``snr = 0.517``, ``λ = 1``. Deviations: (1) the corrector's norms are
        per image, not averaged over the batch (``.mean()``), so an image's result does not depend on the others
        in the batch; (2) the final projection uses ``lam`` with the noiseless ``y`` (the official sampler ends with
        a Tweedie denoising step and a hard ``λ = 1`` merge), so that ``lam = 0, snr = 0`` is
        :func:`diffu.samplers.ddpm` draw for draw — pass ``lam=1`` for the official end; (3) for CT the paper
        merges in the sinogram domain through the Fourier-slice theorem (a right-inverse of ``A`` built from the
        full-angle transform); we use the minimum-norm ``A⁺`` by CG. A term whose weight is zero (``lam = 0``,
        ``snr = 0``) is skipped together with its random draws.
    """
    check_sampler_args(model, generator=generator, progress=progress, callback=callback, model_kwargs=model_kwargs)
    check_schedule(schedule)
    check_real("snr", snr, 0)
    check_int("corrector_steps", corrector_steps, 0)
    check_real("lam", lam, 0, 1)
    check_int("pinv_iters", pinv_iters, 1)
    check_bool("clip_x0", clip_x0)
    _check_op(op)
    check_floating(y, "y")
    if y.ndim == 0:
        raise ValueError("y must have a batch dimension (N, …), got a 0-d tensor")
    check_finite(y, "y")
    ts, sched = respaced(schedule, steps, spacing)  # model timesteps (increasing) and the respaced schedule
    x = initial_noise(op.AT(y).shape if x_T is None else x_T, generator, like=y)
    ax = op.A(x)
    if ax.shape != y.shape:
        raise ValueError(f"y must have the shape of op.A(x_T) {tuple(ax.shape)}, got {tuple(y.shape)}")
    correct = snr > 0 and corrector_steps > 0

    def project(x: torch.Tensor, i: int) -> torch.Tensor:
        # x ← x + λ A⁺(y_t − A x) with y_t = √ᾱ_t y + √(1 − ᾱ_t) A ε, one fresh ε per projection (Song et al. 2022)
        if lam == 0:
            return x
        ab = sched.alpha_bar_at(i, x)
        y_t = ab.sqrt() * y + (1 - ab).sqrt() * op.A(noise_like(x, generator))
        return _project(x, y_t, op, lam, pinv_iters)

    n = len(ts)
    with torch.no_grad():
        for i in tqdm(range(n - 1, -1, -1), disable=not progress, desc=f"PC-proj-{n}"):
            t = int(ts[i])
            if correct:
                # 1. project onto the noised measurement, then Langevin corrector steps at level t (score_sde Alg. 5)
                x = project(x, i)
                ab, alpha = sched.alpha_bar_at(i, x), float(sched.alphas[i])
                for _ in range(corrector_steps):
                    eps = model_eps(model, x, t, schedule, model_kwargs)
                    x = _langevin(x, eps, ab, alpha, snr, noise_like(x, generator))
            # 2. project again, then the ancestral predictor x_{t-1} = μ̃_t(x_t, x̂_0) + σ_t z (Ho et al. 2020, Alg. 2)
            x = project(x, i)
            eps = model_eps(model, x, t, schedule, model_kwargs)
            z = noise_like(x, generator) if i > 0 else None
            x, x0 = ddpm_step(sched, x, i, eps, clip_x0=clip_x0, noise=z)
            if callback is not None:
                callback(SamplerState(n - 1 - i, t, x, x0))
        # 3. the final projection onto the measurement itself (noiseless level)
        if lam > 0:
            x = _project(x, y, op, lam, pinv_iters)
    return x
