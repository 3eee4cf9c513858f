"""ReSample: latent diffusion solvers with hard data consistency (Song et al. ICLR 2024), chapter §4.5.

A latent diffusion model samples latents ``z`` that an autoencoder decodes to images, ``x = D(z)``. ReSample solves
``y = A(x) + noise`` with such a model: latent DDIM with a DPS-like gradient step through the network *and the
decoder*, plus, every few steps in the later part of the run, *hard* data consistency — an optimisation that makes
the current estimate ``ẑ_0`` fit ``y`` — whose result is mapped back to the noise level of the chain by *stochastic
resampling* (a Gaussian that blends the consistent ``ẑ_0`` with the unconditional ``z_t``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ..checks import (
    check_bool,
    check_callable,
    check_finite,
    check_floating,
    check_generator,
    check_int,
    check_real,
    check_steps,
)
from ..samplers import ddim_step
from ..sampling import SamplerState, check_sampler_args, check_schedule, ddim_timesteps, initial_noise, model_eps
from ..schedules import Schedule
from .dps import residual_norm

__all__ = [
    "latent_optimization",
    "pixel_optimization",
    "resample",
    "resample_moments",
    "resample_variance",
    "stochastic_resample",
]

EARLY_STOP_WINDOW = 200  # official latent_optimization: stop once the loss exceeds the loss 200 iterations earlier


# ----------------------------------------------------------------------------------------------------------------
# Stochastic resampling
# ----------------------------------------------------------------------------------------------------------------


def resample_variance(gamma: float, alpha_bar_t, alpha_bar_prev):
    """``s = γ (1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev)``: γ times the DDPM posterior variance β̃ between the two
    DDIM levels (official ``ddim.py``: ``sigma = 40*(1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)``, γ = 40).

    Raises:
        ValueError: ``gamma`` is not a finite number > 0; ``alpha_bar_t`` not in (0, 1) or ``alpha_bar_prev`` not
            in (``alpha_bar_t``, 1] (numbers or 0-d tensors; a negative variance otherwise).
    """
    check_real("gamma", gamma, 0, low_open=True)
    check_real("alpha_bar_t", alpha_bar_t, 0, 1, low_open=True, high_open=True)
    check_real("alpha_bar_prev", alpha_bar_prev, 0, 1, low_open=True)
    if not float(alpha_bar_prev) > float(alpha_bar_t):
        raise ValueError(f"alpha_bar_prev must be > alpha_bar_t = {float(alpha_bar_t):.6g} (the next, less noisy "
                         f"level), got {float(alpha_bar_prev):.6g}")  # fmt: skip
    return gamma * (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)


def resample_moments(z0: torch.Tensor, z_t: torch.Tensor, alpha_bar, s) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of ReSample's stochastic resampling (Song et al. 2024, Eq. 9 / Prop. 1):

    ``N((s √ᾱ ẑ_0 + (1 − ᾱ) z'_t)/(s + 1 − ᾱ), 1/(1/s + 1/(1 − ᾱ)))`` — the product of the forward marginal
    ``N(√ᾱ ẑ_0, (1 − ᾱ) I)`` of the measurement-consistent ``ẑ_0`` and ``N(z'_t, s I)`` around the unconditional
    state ``z'_t``. ``ᾱ`` is the level of ``z'_t`` (a scalar or a tensor broadcasting against ``z0``); ``s > 0``.

    Raises:
        ValueError: ``z0``/``z_t`` not floating-point tensors of the same shape; ``alpha_bar`` not in (0, 1) or
            ``s`` not finite and > 0 (numbers or tensors broadcasting against ``z0``). A NaN in ``z0`` or ``z_t``
            propagates to the mean (this runs inside :func:`resample`'s loop, which checks its inputs once).
    """
    check_floating(z0, "z0")
    check_floating(z_t, "z_t")
    if z0.shape != z_t.shape:
        raise ValueError(f"z0 and z_t must have the same shape, got {tuple(z0.shape)} and {tuple(z_t.shape)}")
    ab = torch.as_tensor(alpha_bar, device=z0.device, dtype=z0.dtype)
    s = torch.as_tensor(s, device=z0.device, dtype=z0.dtype)
    if not bool(((s > 0) & torch.isfinite(s)).all()):
        raise ValueError(f"s must be > 0 and finite, got {s}")
    if not bool(((ab > 0) & (ab < 1)).all()):
        raise ValueError(f"alpha_bar must be in (0, 1), got {ab}")
    for name, v in (("alpha_bar", ab), ("s", s)):
        try:
            torch.broadcast_shapes(v.shape, z0.shape)
        except RuntimeError:
            raise ValueError(
                f"{name} must broadcast against z0's shape {tuple(z0.shape)}, got {tuple(v.shape)}"
            ) from None
    mean = (s * ab.sqrt() * z0 + (1 - ab) * z_t) / (s + 1 - ab)
    std = (1 / (1 / s + 1 / (1 - ab))).sqrt()
    return mean, std.expand_as(mean)


def stochastic_resample(z0, z_t, alpha_bar, s, generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw from :func:`resample_moments`' Gaussian (official ``DDIMSampler.stochastic_resample``); errors as
    :func:`resample_moments`, ``TypeError`` for a ``generator`` that is not a ``torch.Generator``."""
    check_generator(generator)
    mean, std = resample_moments(z0, z_t, alpha_bar, s)
    return mean + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Hard data consistency
# ----------------------------------------------------------------------------------------------------------------


def _per_image_mse(y, ay):
    return ((y - ay) ** 2).reshape(y.shape[0], -1).mean(1)  # (N,)


def _check_optimization(y, op, start, name, iters, lr, tol, decode=None) -> None:
    """The arguments of :func:`pixel_optimization` / :func:`latent_optimization`."""
    for n, v in (("y", y), (name, start)):
        check_floating(v, n)
        check_finite(v, n)
        if v.ndim == 0:
            raise ValueError(f"{n} must have a batch dimension (N, …), got a 0-d tensor")
    if not callable(getattr(op, "A", None)):
        raise TypeError(f"op must be a forward model with a callable A, got {type(op).__name__}")
    if decode is not None:
        check_callable("decode", decode)
    check_int("iters", iters, 1)
    check_real("lr", lr, 0, low_open=True)
    check_real("tol", tol, 0)
    with torch.no_grad():
        try:
            ay = op.A(decode(start) if decode is not None else start)
        except ValueError as err:
            raise ValueError(f"{name} (shape {tuple(start.shape)}) does not fit decode and op.A: {err}") from err
    if ay.shape != y.shape:
        what = f"op.A(decode({name}))" if decode is not None else f"op.A({name})"
        raise ValueError(f"y must have the shape of {what} {tuple(ay.shape)}, got {tuple(y.shape)}")


def pixel_optimization(y: torch.Tensor, op, x_init: torch.Tensor, *, iters: int = 2000, lr: float = 1e-2,
                       tol: float = 1e-3) -> torch.Tensor:  # fmt: skip
    """``argmin_x ‖y − A(x)‖²`` by AdamW from ``x_init`` (official ``pixel_optimization``: lr 1e-2, ≤ 2000 steps,
    stop when the MSE < ``tol²``, tol = 1e-3). The loss is the sum of per-image MSEs, so each image follows the
    Adam path it would follow alone (the official runs one image at a time); we stop when every image is below
    ``tol²``. Returns the optimised images ``(N, C, H, W)`` (detached).

    ``ValueError`` for ``y``/``x_init`` that are not finite floating-point tensors, ``op.A(x_init)`` not of ``y``'s
    shape, ``iters`` not an integer >= 1, ``lr`` not a finite number > 0 or ``tol`` not one >= 0."""
    _check_optimization(y, op, x_init, "x_init", iters, lr, tol)
    return _pixel_optimization(y, op, x_init, iters, lr, tol)


def _pixel_optimization(y, op, x_init, iters, lr, tol):  # unchecked: resample checks once, before its loop
    x = x_init.detach().clone().requires_grad_(True)
    opt = torch.optim.AdamW([x], lr=lr)
    y = y.detach()
    with torch.enable_grad():
        for _ in range(iters):
            mse = _per_image_mse(y, op.A(x))
            opt.zero_grad()
            mse.sum().backward()
            opt.step()
            if bool((mse < tol**2).all()):
                break
    return x.detach()


def latent_optimization(y: torch.Tensor, op, decode: Callable, z_init: torch.Tensor, *, iters: int = 500,
                        lr: float = 5e-3, tol: float = 1e-3) -> torch.Tensor:  # fmt: skip
    """``argmin_z ‖y − A(D(z))‖²`` by AdamW from ``z_init`` (official ``latent_optimization``: lr 5e-3, ≤ 500 steps,
    stop when the MSE < ``tol²`` or, after 200 steps, when it exceeds its value 200 steps earlier). Sum of
    per-image MSEs as in :func:`pixel_optimization`. Returns the optimised latents (detached); errors as
    :func:`pixel_optimization` (``z_init`` for ``x_init``), and ``TypeError`` for a ``decode`` that is not callable."""
    _check_optimization(y, op, z_init, "z_init", iters, lr, tol, decode)
    return _latent_optimization(y, op, decode, z_init, iters, lr, tol)


def _latent_optimization(y, op, decode, z_init, iters, lr, tol):  # unchecked: resample checks once
    z = z_init.detach().clone().requires_grad_(True)
    opt = torch.optim.AdamW([z], lr=lr)
    y = y.detach()
    history: list[float] = []
    with torch.enable_grad():
        for itr in range(iters):
            mse = _per_image_mse(y, op.A(decode(z)))
            opt.zero_grad()
            mse.sum().backward()
            opt.step()
            cur = float(mse.detach().sum())
            history.append(cur)
            if itr >= EARLY_STOP_WINDOW and history.pop(0) < cur:
                break
            if bool((mse < tol**2).all()):
                break
    return z.detach()


# ----------------------------------------------------------------------------------------------------------------
# The sampler
# ----------------------------------------------------------------------------------------------------------------


def _resample_start(autoencoder, y, op, x_T, generator, steps, T, scale, gamma, hard_every, hard_start, latent_start,
                    travel, pixel_iters, latent_iters, pixel_lr, latent_lr, tol) -> torch.Tensor:  # fmt: skip
    """Check :func:`resample`'s arguments and return the initial latent (``x_T``, or noise of the latent shape)."""
    check_steps(steps, T)
    check_real("scale", scale, 0)
    check_real("gamma", gamma, 0, low_open=True)
    for name, v in (("hard_start", hard_start), ("latent_start", latent_start)):
        check_real(name, v, 0, 1)
    for name, v, low in (("hard_every", hard_every, 1), ("travel", travel, 0), ("pixel_iters", pixel_iters, 1),
                         ("latent_iters", latent_iters, 1)):  # fmt: skip
        check_int(name, v, low)
    for name, v in (("pixel_lr", pixel_lr), ("latent_lr", latent_lr)):
        check_real(name, v, 0, low_open=True)
    check_real("tol", tol, 0)
    for name in ("encode", "decode"):
        if not callable(getattr(autoencoder, name, None)):
            raise TypeError(f"autoencoder must have callable encode and decode, got {type(autoencoder).__name__}")
    if not callable(getattr(op, "A", None)):
        raise TypeError(f"op must be a forward model with a callable A, got {type(op).__name__}")
    check_floating(y, "y")
    check_finite(y, "y")
    if y.ndim == 0:
        raise ValueError("y must have a batch dimension (N, …), got a 0-d tensor")
    given = x_T is not None
    if x_T is None:  # the latent shape of the image shape (op.AT(y)'s for linear operators, else y's)
        img_shape = op.AT(y).shape if getattr(op, "linear", False) else y.shape
        with torch.no_grad():
            try:
                x_T = autoencoder.encode(torch.zeros(img_shape, device=y.device, dtype=y.dtype)).shape
            except ValueError as err:
                raise ValueError(f"y's image shape {tuple(img_shape)} does not fit the autoencoder: {err}") from err
    if not (
        x_T.ndim == 4 if isinstance(x_T, torch.Tensor) else isinstance(x_T, (tuple, list, torch.Size)) and len(x_T) == 4
    ):
        got = tuple(x_T.shape) if isinstance(x_T, torch.Tensor) else x_T
        raise ValueError(f"x_T must be a tensor or a latent shape (N, C, h, w), got {got!r:.80}")
    z = initial_noise(x_T, generator, like=y)
    with torch.no_grad():
        ay = op.A(autoencoder.decode(z))
    if ay.shape != y.shape:
        of = "x_T" if given else "z"
        raise ValueError(f"y must have the shape of op.A(decode({of})) {tuple(ay.shape)}, got {tuple(y.shape)}")
    return z


def resample(
    model: Callable,
    autoencoder,
    y: torch.Tensor,
    op,
    schedule: Schedule,
    *,
    steps: int = 100,
    scale: float = 0.5,
    gamma: float = 40.0,
    hard_every: int = 5,
    hard_start: float = 1 / 3,
    latent_start: float = 2 / 3,
    travel: int = 1,
    pixel_iters: int = 2000,
    latent_iters: int = 500,
    pixel_lr: float = 1e-2,
    latent_lr: float = 5e-3,
    tol: float = 1e-3,
    final_optimization: bool = True,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
    x_T=None,
) -> torch.Tensor:
    """ReSample (Song et al. ICLR 2024, Algorithm 1): latent DDIM + DPS-like steps + hard data consistency.

    Args:
        model: latent ε-model ``model(z_t, t, **model_kwargs)`` on the autoencoder's (scaled) latents.
        autoencoder: ``encode(x) → z`` and ``decode(z) → x`` (e.g. :class:`diffu.nn.Autoencoder`), differentiable.
        y: the measurement ``(N, …)``, shaped like ``op.A(decode(z))``.
        op: a forward model with a differentiable ``op.A`` (linear operators give the default image shape via ``AT``).
        schedule: the latent model's training schedule.
        steps: DDIM steps (NFE of the main chain).
        scale: DPS-like step multiplier ≥ 0 (the step is ``scale · ᾱ_t``; official 0.5); 0 disables it.
        gamma: γ > 0 of the resampling variance ``s`` (:func:`resample_variance`).
        hard_every: hard consistency every this many steps (official 10 of 500).
        hard_start, latent_start: fractions of the run in [0, 1] after which hard consistency starts (pixel-space)
            and after which it is done in latent space (official 1/3 and 2/3); ``hard_start = 1`` gives a plain
            latent DPS-like sampler, ``latent_start <= hard_start`` latent-space consistency only.
        travel: time-travel DDIM steps before each hard consistency (0: use step 1's ``ẑ_0``).
        pixel_iters, latent_iters, pixel_lr, latent_lr, tol: the two optimisations' budgets, AdamW learning rates
            and tolerance (stop at MSE < tol²).
        final_optimization: latent optimisation of the final ``z_0`` (official).
        x_T: initial latent noise or its shape; default: ``encode``'s output shape for the image shape
            (``op.AT(y)``'s for linear operators, else ``y``'s).
        callback: receives ``SamplerState(i, t, z, x̂_0)`` with the new *latent* state ``z`` and the *decoded*
            estimate ``x̂_0 = D(ẑ_0)`` (after hard consistency when done).

    Returns:
        The decoded reconstruction ``(N, C, H, W)``.

    Raises:
        ValueError: ``y`` not a finite floating-point tensor of the shape ``op.A(decode(z))`` gives; a number out of
            its range above (``steps`` in ``[1, T]``, fractions in [0, 1], counts integers, rates finite and > 0,
            ``scale``/``tol`` finite and >= 0); ``x_T`` neither a finite latent batch nor a latent shape.
        TypeError: ``model``/``callback`` not callable, an ``autoencoder`` without ``encode``/``decode``, ``op``
            without ``A``, ``schedule`` not a :class:`~diffu.schedules.Schedule`, ``final_optimization``/``progress``
            not bools, a bad ``generator`` or ``model_kwargs``.

    Notes:
        Official code: ``soominkwon/resample`` (``ldm/models/diffusion/ddim.py::resample_sampling``), which runs one
        image at a time, 500 DDIM steps over T = 1000, hard consistency every 10 steps and 5 time-travel steps, on
        64×64×3 LDM latents of 256² faces. Differences:

        - our default scales the run down to 100 steps, hard consistency every 5 and 1 time-travel step (the same
          fractions of the trajectory as 500 / 10 / 5 would be 2 and 1; 5 halves the number of optimisations);
        - the official ``pseudo_x0 = (x − (1−ᾱ_t) ε̂)/√ᾱ_t`` (used by the DPS step and hard consistency) puts ``1 − ᾱ_t``
          where Tweedie's formula has ``√(1 − ᾱ_t)``; we use Tweedie's ``ẑ_0`` (the paper's Eq.);
        - its time-travel loop calls the network at the next timestep but with the ᾱ of the current one (an index
          off by one); our travel steps are ordinary DDIM steps on the grid;
        - DDIM timesteps: our ``"leading"`` grid ``0, k, 2k, …`` and ᾱ = 1 after the last step (LDM: ``+1`` offset and
          ``ᾱ_prev = ᾱ_0`` at the end);
        - batches: norms and MSEs are per image and summed, so every image is solved as if alone (AdamW's per-element
          steps make that exact); the optimisations stop when all images pass ``tol``. With noisy ``y`` the official
          ``tol = 1e-3`` is never reached: the optimisation fits the noise up to the iteration limit (the official
          comment says to tune it to the noise level, e.g. ``tol ≈ σ_y``). §4.5.
    """
    check_sampler_args(model, generator=generator, progress=progress, callback=callback, model_kwargs=model_kwargs)
    check_schedule(schedule)
    check_bool("final_optimization", final_optimization)
    z = _resample_start(autoencoder, y, op, x_T, generator, steps, schedule.T, scale, gamma, hard_every, hard_start,
                        latent_start, travel, pixel_iters, latent_iters, pixel_lr, latent_lr, tol)  # fmt: skip
    ts = ddim_timesteps(schedule.T, steps, "leading").tolist()  # decreasing
    prev = ts[1:] + [-1]
    first_hard, first_latent = steps - int(hard_start * steps), int((1 - latent_start) * steps)

    for i in tqdm(range(steps), disable=not progress, desc=f"ReSample-{steps}"):
        t, tp, index = ts[i], prev[i], steps - 1 - i  # index: steps left after this one
        ab_t, ab_prev = schedule.alpha_bar_at(t, z), schedule.alpha_bar_at(tp, z)
        z = z.detach().requires_grad_(scale > 0)
        with torch.set_grad_enabled(scale > 0):
            # 1. ε̂ = ε_θ(z_t, t), Tweedie ẑ_0 and the deterministic DDIM step (η = 0) to z'_{t'}
            eps = model_eps(model, z, t, schedule, model_kwargs)
            z_next, z0 = ddim_step(schedule, z, t, tp, eps)
            x0 = autoencoder.decode(z0) if scale > 0 or callback is not None else None
            # 2. DPS-like step z_{t'} = z'_{t'} − scale · ᾱ_t ∇_{z_t} Σ_n ‖y_n − A(D(ẑ_0))_n‖ (official scale=a_t*.5)
            if scale > 0:
                (grad,) = torch.autograd.grad(residual_norm(y, op.A(x0)), z)  # Σ_n ‖y_n − A(x̂_0)_n‖
                z_next = z_next - scale * ab_t * grad
        z = z_next.detach()
        # 3. hard data consistency every hard_every steps after hard_start of the run
        if 0 < index <= first_hard and index % hard_every == 0:
            with torch.no_grad():
                z0 = z0.detach()
                zz = z
                # 3a. "time travel": further unconditional DDIM steps from z_{t'} give a cleaner ẑ_0
                for j in range(i + 1, min(i + 1 + travel, steps)):
                    zz, z0 = ddim_step(
                        schedule, zz, ts[j], prev[j], model_eps(model, zz, ts[j], schedule, model_kwargs)
                    )
                # 3b. middle of the run: x* = argmin ‖y − A(x)‖² from D(ẑ_0) in pixels, ẑ_0(y) = E(x*)
                if index >= first_latent:
                    z0 = autoencoder.encode(_pixel_optimization(y, op, autoencoder.decode(z0), pixel_iters, pixel_lr,
                                                                tol))  # fmt: skip
            # 3c. late in the run: ẑ_0(y) = argmin_z ‖y − A(D(z))‖² from ẑ_0
            if index < first_latent:
                z0 = _latent_optimization(y, op, autoencoder.decode, z0, latent_iters, latent_lr, tol)
            # 3d. stochastic resampling of z_{t'} around ẑ_0(y) (Eq. 9, :func:`resample_moments`)
            s = resample_variance(gamma, ab_t, ab_prev)
            z = stochastic_resample(z0, z, ab_prev, s, generator)
            if callback is not None:
                with torch.no_grad():
                    x0 = autoencoder.decode(z0)
        if callback is not None:
            callback(SamplerState(i, t, z.clone(), x0.detach().clone()))
    # 4. a final latent optimisation of z_0 (official), then x = D(z_0)
    if final_optimization:
        z = _latent_optimization(y, op, autoencoder.decode, z, latent_iters, latent_lr, tol)
    with torch.no_grad():
        return autoencoder.decode(z)
