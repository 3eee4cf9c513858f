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

from ..checks import check_int, check_steps, check_tensor
from ..samplers import ddim_step
from ..sampling import SamplerState, ddim_timesteps, initial_noise, model_eps
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
    DDIM levels (official ``ddim.py``: ``sigma = 40*(1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)``, γ = 40)."""
    if not float(gamma) > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    return gamma * (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)


def resample_moments(z0: torch.Tensor, z_t: torch.Tensor, alpha_bar, s) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of ReSample's stochastic resampling (Song et al. 2024, Eq. 9 / Prop. 1):

    ``N((s √ᾱ ẑ_0 + (1 − ᾱ) z'_t)/(s + 1 − ᾱ), 1/(1/s + 1/(1 − ᾱ)))`` — the product of the forward marginal
    ``N(√ᾱ ẑ_0, (1 − ᾱ) I)`` of the measurement-consistent ``ẑ_0`` and ``N(z'_t, s I)`` around the unconditional
    state ``z'_t``. ``ᾱ`` is the level of ``z'_t`` (a scalar or a tensor broadcasting against ``z0``); ``s > 0``.
    """
    if z0.shape != z_t.shape:
        raise ValueError(f"z0 and z_t must have the same shape, got {tuple(z0.shape)} and {tuple(z_t.shape)}")
    ab = torch.as_tensor(alpha_bar, device=z0.device, dtype=z0.dtype)
    s = torch.as_tensor(s, device=z0.device, dtype=z0.dtype)
    if not bool((s > 0).all()):
        raise ValueError(f"s must be > 0, got {s}")
    if not bool(((ab > 0) & (ab < 1)).all()):
        raise ValueError(f"alpha_bar must be in (0, 1), got {ab}")
    mean = (s * ab.sqrt() * z0 + (1 - ab) * z_t) / (s + 1 - ab)
    std = (1 / (1 / s + 1 / (1 - ab))).sqrt()
    return mean, std.expand_as(mean)


def stochastic_resample(z0, z_t, alpha_bar, s, generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw from :func:`resample_moments`' Gaussian (official ``DDIMSampler.stochastic_resample``)."""
    mean, std = resample_moments(z0, z_t, alpha_bar, s)
    return mean + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Hard data consistency
# ----------------------------------------------------------------------------------------------------------------


def _per_image_mse(y, ay):
    return ((y - ay) ** 2).reshape(y.shape[0], -1).mean(1)  # (N,)


def pixel_optimization(y: torch.Tensor, op, x_init: torch.Tensor, *, iters: int = 2000, lr: float = 1e-2,
                       tol: float = 1e-3) -> torch.Tensor:  # fmt: skip
    """``argmin_x ‖y − A(x)‖²`` by AdamW from ``x_init`` (official ``pixel_optimization``: lr 1e-2, ≤ 2000 steps,
    stop when the MSE < ``tol²``, tol = 1e-3). The loss is the sum of per-image MSEs, so each image follows the
    Adam path it would follow alone (the official runs one image at a time); we stop when every image is below
    ``tol²``. Returns the optimised images ``(N, C, H, W)`` (detached)."""
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
    per-image MSEs as in :func:`pixel_optimization`. Returns the optimised latents (detached)."""
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
    if not float(scale) >= 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    if not float(gamma) > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    for name, v in (("hard_start", hard_start), ("latent_start", latent_start)):
        if not 0 <= float(v) <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    for name, v, low in (("hard_every", hard_every, 1), ("travel", travel, 0), ("pixel_iters", pixel_iters, 1),
                         ("latent_iters", latent_iters, 1)):  # fmt: skip
        check_int(name, v, low)
    for name, v in (("pixel_lr", pixel_lr), ("latent_lr", latent_lr)):
        if not float(v) > 0:
            raise ValueError(f"{name} must be > 0, got {v}")
    if not float(tol) >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    check_tensor(y, "y")
    if x_T is None:  # the latent shape of the image shape (op.AT(y)'s for linear operators, else y's)
        img_shape = op.AT(y).shape if getattr(op, "linear", False) else y.shape
        with torch.no_grad():
            x_T = autoencoder.encode(torch.zeros(img_shape, device=y.device, dtype=y.dtype)).shape
    if not isinstance(x_T, torch.Tensor) and len(x_T) != 4:
        raise ValueError(f"x_T must be a tensor or a latent shape (N, C, h, w), got {tuple(x_T)!r}")
    z = initial_noise(x_T, generator, like=y)
    with torch.no_grad():
        ay = op.A(autoencoder.decode(z))
    if ay.shape != y.shape:
        raise ValueError(f"y must have the shape of op.A(decode(z)) {tuple(ay.shape)}, got {tuple(y.shape)}")
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
                    z0 = autoencoder.encode(pixel_optimization(y, op, autoencoder.decode(z0), iters=pixel_iters,
                                                               lr=pixel_lr, tol=tol))  # fmt: skip
            # 3c. late in the run: ẑ_0(y) = argmin_z ‖y − A(D(z))‖² from ẑ_0
            if index < first_latent:
                z0 = latent_optimization(y, op, autoencoder.decode, z0, iters=latent_iters, lr=latent_lr, tol=tol)
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
        z = latent_optimization(y, op, autoencoder.decode, z, iters=latent_iters, lr=latent_lr, tol=tol)
    with torch.no_grad():
        return autoencoder.decode(z)
