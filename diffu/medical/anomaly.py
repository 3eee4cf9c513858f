"""Anomaly detection in brain slices (chapter §5.1.4): synthetic lesions, four anomaly maps and two pixel metrics.

A model trained on healthy anatomy only is asked to say *where* a test image is abnormal. Every method here returns
an anomaly map ``(N, 1, H, W)`` — higher is more anomalous — from the difference between the test image ``x`` and a
"healthy" version ``x̂`` of it:

* :func:`masked_dps_map` — masked diffusion posterior sampling (Wu et al. 2024): ``x`` is treated as a masked, noisy
  observation of a healthy image; posterior samples under several random masks, ``|x − x̂|`` averaged;
* :func:`anoddpm_map` — AnoDDPM (Wyatt et al. 2022): noise ``x`` to an intermediate level, denoise, ``|x − x̂|``;
* :func:`autoencoder_map` — the reconstruction error of any autoencoder, ``|x − D(E(x))|``;
* :func:`mirror_difference` — ``|x − flip_lr(x)|``, exact on a left–right symmetric template.

The test set comes from :func:`insert_lesions` (soft-edged ellipses of random size and contrast inside the brain,
with the exact ground-truth mask), and the maps are scored with :func:`pixel_auroc` (rank formula, ties averaged)
and :func:`best_dice` (Dice of ``map ≥ τ`` maximised over every threshold τ), pooled over all pixels of a set and
optionally restricted to a region such as :func:`brain_mask`.

**Bad input** raises ``ValueError``/``TypeError`` naming the argument (:mod:`diffu.checks`): images must be finite
floating-point ``(N, C, H, W)`` batches in [-1, 1], masks binary, generators ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import (
    check_bool,
    check_callable,
    check_choice,
    check_device,
    check_eta,
    check_finite,
    check_generator,
    check_image,
    check_int,
    check_range,
    check_real,
)
from ..inverse import Inpainting, residual_norm
from ..inverse.operators import uniform_float
from ..samplers import ddim
from ..sampling import SamplerState, check_sampler_args, check_schedule, model_eps
from ..schedules import Schedule
from .uncertainty import average_ranks

__all__ = [
    "POLARITIES",
    "SIDES",
    "anoddpm_map",
    "autoencoder_map",
    "best_dice",
    "brain_mask",
    "insert_lesions",
    "masked_dps_map",
    "mirror_difference",
    "partial_timesteps",
    "patch_masks",
    "pixel_auroc",
]

#: Where :func:`insert_lesions` puts lesions, in the left or right half of the image, either at random, or each
#: with its mirror copy in the other half ("symmetric", which a mirror-difference detector cannot see).
SIDES = ("left", "right", "both", "symmetric")

#: The intensity of :func:`insert_lesions`'s lesions, brighter ("hyper"), darker ("hypo"), or either at random.
POLARITIES = ("hyper", "hypo", "both")


def _check_images(x, name: str = "x") -> None:
    """``x`` is a finite floating-point image batch ``(N, C, H, W)`` in [-1, 1] (a test image, not a noisy state)."""
    check_image(x, name)
    check_range(x, -1.0, 1.0, name, "diffu's image range")


def _check_pair(name: str, value, low: float, high: float) -> tuple[float, float]:
    """``value`` is a pair ``(lo, hi)`` of finite numbers with ``low < lo <= hi <= high``; returned as floats."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (lo, hi), got {value!r:.60}")
    for v in value:
        check_real(f"each end of {name}", v, low, high, low_open=True)
    lo, hi = float(value[0]), float(value[1])
    if lo > hi:
        raise ValueError(f"{name} must have lo <= hi, got {value!r}")
    return lo, hi


# ----------------------------------------------------------------------------------------------------------------
# Synthetic lesions
# ----------------------------------------------------------------------------------------------------------------


def brain_mask(x: torch.Tensor, threshold: float = -0.95) -> torch.Tensor:
    """The pixels of a skull-stripped slice that belong to the head: ``x > threshold`` in any channel.

    Args:
        x: images ``(N, C, H, W)`` in [-1, 1] whose background is −1 (the MNI template's is exactly −1).
        threshold: a number in [-1, 1); the default keeps every pixel 2.5 % of the range above the background.

    Returns:
        A bool tensor ``(N, 1, H, W)``.

    Raises:
        ValueError: ``x`` not a finite float image batch in [-1, 1]; ``threshold`` not a number in [-1, 1).
    """
    _check_images(x)
    check_real("threshold", threshold, -1, 1, high_open=True)
    return (x > threshold).any(1, keepdim=True)


def _ellipse_weight(h: int, w: int, cy: float, cx: float, a: float, b: float, theta: float, edge: float, like):
    """The lesion profile ``(H, W)`` in [0, 1]: 1 inside, falling linearly to 0 at the boundary over ``edge`` pixels
    (a hard 0/1 ellipse when ``edge = 0``), semi-axes ``a >= b`` pixels rotated by ``theta``, centre ``(cy, cx)``."""
    yy = torch.arange(h, device=like.device, dtype=like.dtype)[:, None] + 0.5  # pixel centres
    xx = torch.arange(w, device=like.device, dtype=like.dtype)[None, :] + 0.5
    du = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
    dv = -(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)
    rho = torch.sqrt((du / a) ** 2 + (dv / b) ** 2)  # 1 on the boundary
    if edge == 0:
        return (rho < 1).to(like.dtype)
    return ((1 - rho) * b / edge).clamp(0, 1)  # (1 − ρ)·b: the depth inside the boundary, in pixels along b


def _centre(inside: torch.Tensor, a: float, b: float, side: str, generator) -> tuple[float, float] | None:
    """A uniformly drawn pixel centre ``(cy, cx)`` of the brain mask ``inside`` ``(H, W)`` on ``side`` ("left",
    "right") — preferring centres at least ``b`` pixels from the background and ``a`` pixels from the midline, and
    relaxing those margins when no pixel qualifies; None when the side has no brain pixel."""
    h, w = inside.shape
    cols = torch.arange(w, device=inside.device) + 0.5
    half = cols <= w / 2 if side == "left" else cols >= w / 2
    k = 2 * int(b) + 1
    outside = (~inside).to(torch.float32)[None, None]
    eroded = inside & ~(F.max_pool2d(outside, k, stride=1, padding=k // 2)[0, 0] > 0)  # ≥ ⌊b⌋ px from background
    away = cols <= w / 2 - a if side == "left" else cols >= w / 2 + a
    for cand in (eroded & away, inside & away, eroded & half, inside & half):
        idx = cand.flatten().nonzero().flatten()
        if len(idx):
            j = int(idx[min(int(uniform_float(generator) * len(idx)), len(idx) - 1)])
            return j // w + 0.5, j % w + 0.5
    return None


def insert_lesions(
    x: torch.Tensor,
    *,
    n: int = 1,
    radius: tuple[float, float] = (0.05, 0.12),
    contrast: tuple[float, float] = (0.3, 0.7),
    polarity: str = "both",
    side: str = "both",
    edge: float = 1.0,
    threshold: float = -0.95,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic lesions: soft-edged ellipses of random size, shape, orientation and contrast inside the brain
    (the test set of §5.1.4).

    Each lesion adds ``±c · w(p)`` to the image, where ``w`` is 1 inside an ellipse and falls linearly to 0 at its
    boundary over ``edge`` pixels; lesions of one image add up; the result is kept in [-1, 1] by clipping (a
    hyperintense lesion on a pixel already at 1 leaves it unchanged), and only brain pixels
    (:func:`brain_mask`) change. The ground truth is exact: ``mask`` is the set of brain pixels strictly inside
    some lesion's ellipse — exactly the pixels whose intensity changed, wherever the clipping did not absorb the
    change.

    Per lesion (drawn per image, in this order, from ``generator``): the side (for ``side="both"``), the
    semi-major axis ``a = r · W`` with ``r ~ U(radius)``, the semi-minor axis ``b = a · U(0.6, 1)``, the
    orientation ``θ ~ U(0, π)``, the sign (for ``polarity="both"``), the contrast ``c ~ U(contrast)`` on the
    [-1, 1] scale, and the centre: a uniformly drawn brain pixel at least ``⌊b⌋`` pixels from the background and
    ``a`` pixels from the vertical midline on its side (margins relaxed when no pixel qualifies).

    Args:
        x: healthy slices ``(N, C, H, W)`` in [-1, 1] with background −1 (e.g. :func:`diffu.data.mni.mni_slices`).
        n: lesions per image (an integer ≥ 0); with ``side="symmetric"`` each one also gets its mirror copy.
        radius: ``(lo, hi)``, the range of the semi-major axis as a fraction of the image width, in (0, 0.5].
        contrast: ``(lo, hi)``, the range of the intensity change ``c`` (before the soft edge), in (0, 2].
        polarity: one of :data:`POLARITIES`.
        side: one of :data:`SIDES`: "left"/"right" halves of the image (columns below/above ``W/2``), "both" (each
            lesion's half at random), "symmetric" (a lesion in the left half and its exact mirror image in the
            right: on an exactly symmetric template, ``x − flip_lr(x)`` stays 0).
        edge: the width in pixels of the soft edge (a number ≥ 0; 0 gives hard-edged ellipses).
        threshold: the brain mask's threshold (:func:`brain_mask`).
        generator: the randomness (CONTRIBUTING.md, convention 5).

    Returns:
        ``(x_lesioned, mask)``: ``(N, C, H, W)`` in ``x``'s dtype and device, and the bool ground truth
        ``(N, 1, H, W)``.

    Raises:
        ValueError: ``x`` not a finite float image batch in [-1, 1], an image without brain pixels (when ``n > 0``),
            ``n`` not an integer ≥ 0, ``radius``/``contrast`` not pairs in range, an unknown ``polarity`` or
            ``side``, ``edge`` < 0, a bad ``threshold``.
        TypeError: ``generator`` not a ``torch.Generator``.

    Notes:
        Brain-MRI anomaly benchmarks evaluate on real lesions (e.g. BraTS tumours); a single template has none, so
        §5.1.4 evaluates on synthetic lesions whose ground truth is exact. A uniform intensity shift with a soft edge is
        far simpler than a tumour (no texture, no mass effect, no oedema), so numbers measured on it are not
        comparable with published ones. A one-sided lesion on a symmetric template is trivially found by the mirror
        difference; "symmetric" lesions are the fair test of a learned detector.
    """
    mask_in = brain_mask(x, threshold)  # checks x and threshold
    check_int("n", n, 0)
    r_lo, r_hi = _check_pair("radius", radius, 0, 0.5)
    c_lo, c_hi = _check_pair("contrast", contrast, 0, 2)
    check_choice("polarity", polarity, POLARITIES)
    check_choice("side", side, SIDES)
    check_real("edge", edge, 0)
    check_generator(generator)
    N, _, H, W = x.shape
    delta = torch.zeros(N, 1, H, W, device=x.device, dtype=x.dtype)
    truth = torch.zeros(N, 1, H, W, device=x.device, dtype=torch.bool)
    for i in range(N):
        if n > 0 and not bool(mask_in[i].any()):
            raise ValueError(f"x[{i}] has no brain pixels (none above threshold {threshold}): nowhere to put a lesion")
        for _ in range(n):
            # 1. the lesion's half, size, shape and orientation
            half = side if side in ("left", "right") else "left"
            if side == "both":
                half = "left" if uniform_float(generator) < 0.5 else "right"
            a = (r_lo + (r_hi - r_lo) * uniform_float(generator)) * W  # semi-major axis, pixels
            b = a * (0.6 + 0.4 * uniform_float(generator))
            theta = math.pi * uniform_float(generator)
            # 2. its sign and contrast
            sign = {"hyper": 1.0, "hypo": -1.0}.get(polarity, 0.0)
            if polarity == "both":
                sign = 1.0 if uniform_float(generator) < 0.5 else -1.0
            c = c_lo + (c_hi - c_lo) * uniform_float(generator)
            # 3. a centre inside the brain, on its half
            centre = _centre(mask_in[i, 0], a, b, half, generator)
            if centre is None:  # no brain on that half: the other one (not for "symmetric": mirrored anyway)
                centre = _centre(mask_in[i, 0], a, b, "right" if half == "left" else "left", generator)
            wgt = _ellipse_weight(H, W, centre[0], centre[1], a, b, theta, float(edge), x)  # (H, W)
            # 4. the mirror copy: max(w, flip(w)), so that the lesioned slice stays exactly symmetric
            if side == "symmetric":
                wgt = torch.maximum(wgt, wgt.flip(-1))
            delta[i, 0] += sign * c * wgt
            truth[i, 0] |= wgt > 0
    delta = delta * mask_in
    # 5. add, keep the image range, and restrict the truth to the brain
    return (x + delta).clamp(-1, 1), truth & mask_in


# ----------------------------------------------------------------------------------------------------------------
# Anomaly maps
# ----------------------------------------------------------------------------------------------------------------


def _abs_diff(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """``|x − x̂|`` averaged over the channels, ``(N, 1, H, W)``."""
    return (x - x_hat).abs().mean(1, keepdim=True)


def mirror_difference(x: torch.Tensor) -> torch.Tensor:
    """The left–right mirror difference ``|x − flip_lr(x)|`` (averaged over channels), ``(N, 1, H, W)``.

    A detector that needs no training: on an exactly symmetric template (the MNI152 "sym" template is) it is 0 on
    healthy tissue, finds every one-sided lesion — twice, at the lesion and at its mirror position — and is blind
    to symmetric lesions (:func:`insert_lesions` with ``side="symmetric"``). §5.1.4's honest baseline.

    Raises:
        ValueError: ``x`` not a finite float image batch ``(N, C, H, W)`` in [-1, 1].
    """
    _check_images(x)
    return _abs_diff(x, x.flip(-1))


def autoencoder_map(autoencoder: Callable, x: torch.Tensor) -> torch.Tensor:
    """The reconstruction error ``|x − D(E(x))|`` of an autoencoder trained on healthy images, ``(N, 1, H, W)``; a
    baseline of §5.1.4.

    Args:
        autoencoder: a callable returning the reconstruction of ``x`` (e.g. :class:`diffu.nn.Autoencoder`, whose
            call is ``decode(encode(x))``), of ``x``'s shape.
        x: test images ``(N, C, H, W)`` in [-1, 1].

    Returns:
        The map in ``x``'s dtype and device (computed without gradients).

    Raises:
        ValueError: ``x`` not a finite float image batch in [-1, 1]; a reconstruction that is not a tensor of
            ``x``'s shape.
        TypeError: ``autoencoder`` not callable.

    Notes:
        The classic unsupervised baseline of Baur et al. 2021 ("Autoencoders for unsupervised anomaly segmentation
        in brain MR images: a comparative study"): a bottleneck too small to reproduce what it never saw.
    """
    check_callable("autoencoder", autoencoder)
    _check_images(x)
    with torch.no_grad():
        x_hat = autoencoder(x)
    if not isinstance(x_hat, torch.Tensor) or x_hat.shape != x.shape:
        got = tuple(x_hat.shape) if isinstance(x_hat, torch.Tensor) else type(x_hat).__name__
        raise ValueError(f"autoencoder must return a reconstruction of x's shape {tuple(x.shape)}, got {got}")
    return _abs_diff(x, x_hat.to(x.dtype))


def partial_timesteps(t_start: int, steps: int) -> torch.Tensor:
    """The decreasing timesteps of a run that starts at the intermediate ``t_start`` and ends at 0:
    ``round(linspace(t_start, 0, steps))`` (``[t_start]`` for one step), for :func:`diffu.samplers.ddim`'s
    ``timesteps``.

    Args:
        t_start: an integer ≥ 0 (below the schedule's ``T``, which the sampler checks).
        steps: an integer in ``[1, t_start + 1]`` (distinct timesteps).

    Returns:
        A long tensor ``(steps,)``, strictly decreasing, first ``t_start``, last 0 (when ``steps > 1``).

    Raises:
        ValueError: ``t_start`` or ``steps`` out of range.
    """
    check_int("t_start", t_start, 0)
    check_int("steps", steps, 1, t_start + 1)
    if steps == 1:
        return torch.tensor([t_start], dtype=torch.long)
    ts = np.floor(np.linspace(t_start, 0, steps) + 0.5).astype(np.int64)  # round half up: distinct for steps <= t+1
    return torch.from_numpy(ts)


def _partial_start(x, schedule: Schedule, t_start: int, generator) -> torch.Tensor:
    """``x_{t_start} = √ᾱ x + √(1 − ᾱ) ε`` (Eq. 4 of Ho et al. 2020), ε from ``generator`` on ``x``'s device."""
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    t = torch.full((x.shape[0],), t_start, device=x.device, dtype=torch.long)
    return schedule.q_sample(x, t, eps)


def _check_partial(schedule: Schedule, t_start, steps) -> torch.Tensor:
    check_schedule(schedule)
    check_int("t_start", t_start, 1, schedule.T - 1)
    return partial_timesteps(t_start, steps)


def anoddpm_map(
    model: Callable,
    x: torch.Tensor,
    schedule: Schedule,
    *,
    t_start: int = 250,
    steps: int | None = None,
    eta: float = 1.0,
    samples: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
    model_kwargs: dict | None = None,
) -> torch.Tensor:
    """AnoDDPM (Wyatt et al. 2022): noise the test image to an intermediate level ``t_λ``, denoise, ``|x − x̂|``.
    A baseline of §5.1.4.

    ``x_{t_λ} = √ᾱ_{t_λ} x + √(1 − ᾱ_{t_λ}) ε`` (Eq. 4 of Ho et al. 2020), then the reverse process from ``t_λ``
    to 0 with a model of healthy images: small anomalies are drowned by the noise and replaced by healthy tissue,
    healthy tissue is roughly reproduced. The map is ``|x − x̂|`` averaged over channels and over ``samples``
    independent runs.

    Args:
        model: ``model(x_t, t, **model_kwargs)`` predicting ε (or what ``model.prediction`` says), trained on
            healthy images.
        x: test images ``(N, C, H, W)`` in [-1, 1].
        schedule: the training schedule.
        t_start: ``t_λ``, an integer in ``[1, T − 1]`` (AnoDDPM: 250 of 1000 for its Gaussian-noise variant).
        steps: reverse steps from ``t_λ`` to 0 (default ``t_λ + 1``: every step, as AnoDDPM), an integer in
            ``[1, t_λ + 1]`` (:func:`partial_timesteps`).
        eta: DDIM's η (:func:`diffu.samplers.ddim_step`): 1 (default) is the ancestral DDPM step (exactly, with
            every step), 0 the deterministic DDIM ODE.
        samples: independent runs averaged into the map (an integer ≥ 1).
        generator, progress, callback, model_kwargs: as every sampler (``callback`` sees the ``N · samples``
            states, the runs stacked along the batch).

    Returns:
        The map ``(N, 1, H, W)`` in ``x``'s dtype and device.

    Raises:
        ValueError: ``x`` not a finite float image batch in [-1, 1]; ``t_start``, ``steps``, ``samples`` or ``eta``
            out of range.
        TypeError: ``model``/``callback`` not callable, a bad ``generator``, ``progress`` or ``model_kwargs``, a
            ``schedule`` that is not a :class:`~diffu.schedules.Schedule`.

    Notes:
        Official code: ``Julian-Wyatt/AnoDDPM`` (``GaussianDiffusion.py::forward_backward`` and ``sample_p``,
        ``detection.py``): the image is noised in one draw to ``t_distance − 1``, then every ancestral step down to 0
        with x̂_0 clamped to [-1, 1] (we clamp too: ``clip_x0``) and the fixed variance β_t (guided-diffusion's
        "fixedlarge"; η = 1 here gives β̃_t, "fixedsmall"); the map is the squared error ``(x − x̂)²`` (the same
        ranking as ``|x − x̂|`` for one channel, so the same AUROC and best Dice). Its best results use simplex noise
        (multi-scale, to cover large anomalies) in place of Gaussian noise; we use Gaussian noise, the variant the
        paper compares against. ``steps < t_λ + 1`` respaces the reverse process (the kept ᾱ's are unchanged).
    """
    check_sampler_args(model, generator=generator, progress=progress, callback=callback, model_kwargs=model_kwargs)
    _check_images(x)
    check_schedule(schedule)
    check_int("t_start", t_start, 1, schedule.T - 1)
    ts = _check_partial(schedule, t_start, t_start + 1 if steps is None else steps)
    check_real("eta", eta)
    check_eta(eta)
    check_int("samples", samples, 1)
    xs = x.repeat(samples, 1, 1, 1)  # (S·N, C, H, W): the runs in one batch
    # 1. noise to t_λ: x_{t_λ} ~ q(x_{t_λ} | x), Eq. 4 of Ho et al.
    x_t = _partial_start(xs, schedule, int(ts[0]), generator)
    # 2. the reverse process t_λ → 0 (DDPM's ancestral step for η = 1: Eq. 12 and 16 of Song et al. 2021)
    x_hat = ddim(model, x_t, schedule, timesteps=ts.tolist(), eta=eta, clip_x0=True, generator=generator,
                 progress=progress, callback=callback, model_kwargs=model_kwargs)  # fmt: skip
    # 3. |x − x̂|, averaged over channels and runs
    return _abs_diff(xs, x_hat).reshape(samples, *x.shape[:1], 1, *x.shape[2:]).mean(0)


def patch_masks(
    n: int, height: int, width: int, *, keep: float = 0.5, patch: int = 4, generator=None, device=None
) -> torch.Tensor:
    """Random patch masks: the image is tiled by ``patch × patch`` squares (the last row and column of tiles cut at
    the border) and each tile is observed (1) with probability ``keep``, independently; ``(n, 1, H, W)`` float.

    Args:
        n: the number of masks (an integer ≥ 1).
        height, width: the image size (integers ≥ 1).
        keep: the probability that a tile is observed, in [0, 1].
        patch: the tile side in pixels (an integer ≥ 1; 1 gives pixel-wise masks).
        generator: the randomness; device: where the masks live (default: the generator's, else the CPU).

    Returns:
        ``(n, 1, H, W)`` float32 masks of 0s and 1s.

    Raises:
        ValueError: a size, ``keep`` or ``patch`` out of range, a ``device`` string torch does not parse.
        TypeError: ``generator`` not a ``torch.Generator``, ``device`` not a device, string or None.
    """
    check_int("n", n, 1)
    check_int("height", height, 1)
    check_int("width", width, 1)
    check_real("keep", keep, 0, 1)
    check_int("patch", patch, 1)
    check_generator(generator)
    device = check_device("device", device)
    dev = generator.device if generator is not None else None
    gh, gw = -(-height // patch), -(-width // patch)
    tiles = (torch.rand(n, 1, gh, gw, generator=generator, device=dev, dtype=torch.float64) < keep).float()
    masks = tiles.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[..., :height, :width]
    return masks.to(device) if device is not None else masks


def _dps_guidance(model, schedule: Schedule, y: torch.Tensor, op: Inpainting, scale: float, model_kwargs):
    """``cond_fn(x_t, t) = −ζ ∇_{x_t} Σ_n ‖y_n − A(x̂_0(x_t))_n‖`` for :func:`diffu.samplers.ddim`, which shifts
    ε̂ by ``−√(1 − ᾱ_t) · cond_fn`` (the DPS gradient written as a score correction)."""

    def cond_fn(x_t, t, **kwargs):
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_(True)
            tt = int(t[0])
            eps = model_eps(model, x_in, tt, schedule, model_kwargs)
            x0 = schedule.eps_to_x0(eps, x_in, tt)  # Tweedie's x̂_0, differentiable through the network
            norm = residual_norm(y, op.A(x0))  # Σ_n ‖y_n − m ⊙ x̂_0,n‖ (unsquared, per image: DPS)
            (grad,) = torch.autograd.grad(norm, x_in)
        return -scale * grad

    return cond_fn


def masked_dps_map(
    model: Callable,
    x: torch.Tensor,
    schedule: Schedule,
    *,
    masks: int = 4,
    keep: float = 0.5,
    patch: int = 4,
    t_start: int = 200,
    steps: int = 10,
    scale: float = 10.0,
    eta: float = 1.0,
    hidden_only: bool = False,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
    model_kwargs: dict | None = None,
) -> torch.Tensor:
    """Masked diffusion posterior sampling (MDPS, Wu et al. 2024): the test image as a masked, noisy observation of a
    healthy one; ``|x − x̂|`` averaged over posterior samples under ``masks`` random masks.

    For each mask ``m_k`` (:func:`patch_masks`), ``y_k = m_k ⊙ x`` is an inpainting measurement
    (:class:`~diffu.inverse.Inpainting`) and ``x̂_k`` a sample of the healthy prior conditioned on it: the run starts
    from ``x`` noised to ``t_start`` (as MDPS's code does, rather than from pure noise) and takes ``steps`` DDIM
    steps with η = ``eta`` to 0, each with the DPS correction of Chung et al. 2023 written as a shift of the
    predicted noise,

        ``ε̃ = ε̂ + √(1 − ᾱ_t) · ζ ∇_{x_t} ‖y_k − m_k ⊙ x̂_0(x_t)‖``,

    so that observed healthy tissue is reproduced while hidden pixels are filled in by the prior. The anomaly map is
    ``mean_k |x − x̂_k|`` (averaged over channels), or with ``hidden_only`` the mean over the masks that hide each
    pixel (the plain mean where no mask hides it).

    Args:
        model: ``model(x_t, t, **model_kwargs)`` predicting ε (or what ``model.prediction`` says), trained on
            healthy images.
        x: test images ``(N, C, H, W)`` in [-1, 1].
        schedule: the training schedule.
        masks: random masks (= posterior samples) per image, an integer ≥ 1.
        keep, patch: the masks' observed fraction and tile size (:func:`patch_masks`).
        t_start: where the run starts, an integer in ``[1, T − 1]`` (default as MDPS's code: 200 of 1000).
        steps: DDIM steps from ``t_start`` to 0, in ``[1, t_start + 1]`` (default as MDPS's code: 10, a skip of
            20). Each step costs two network evaluations and one backward pass (NFE = 2 · steps, as the official
            code).
        scale: ζ ≥ 0; 0 makes every sample an unguided partial-noise reconstruction (AnoDDPM with ``masks`` runs).
            The unsquared norm moves each pixel by O(ζ/√D) through the denoiser's Jacobian, so ζ depends on the
            image size: the default 10 is for §5's 32×32 slices, where (on an early checkpoint of the T1 prior)
            it lowers the error on healthy tissue by ~15 % while ζ = 1 changes nothing and ζ = 30 starts to
            reproduce the observed lesions; retune it with the benchmark.
        eta: DDIM's η in [0, 1] (MDPS's code: 1, the ancestral variance).
        hidden_only: average each pixel over the masks that hide it only.
        generator, progress, callback, model_kwargs: as every sampler (``callback`` sees the ``N · masks`` states,
            the masks stacked along the batch: mask ``k`` of image ``i`` is row ``k · N + i``).

    Returns:
        The map ``(N, 1, H, W)`` in ``x``'s dtype and device.

    Raises:
        ValueError: ``x`` not a finite float image batch in [-1, 1]; ``masks``, ``keep``, ``patch``, ``t_start``,
            ``steps``, ``scale`` or ``eta`` out of range.
        TypeError: ``model``/``callback`` not callable, a bad ``generator``, ``progress``, ``hidden_only`` or
            ``model_kwargs``, a ``schedule`` that is not a :class:`~diffu.schedules.Schedule`.

    Notes:
        The survey's review pages say only "treat the test image as a masked, noisy observation of a normal image;
        draw several posterior samples with a DDIM-based denoiser; average the difference maps". Official code:
        ``KevinBHLin/MDPS`` (IJCAI 2024), read in a public copy (``src/diffusion.py::sample_mask``,
        ``multi_MDPS.py``): it starts from the test image noised to ``test_steps = 200`` (of 1000), takes DDIM steps
        (skip 20, the ancestral variance) whose ε is shifted by ``√(1 − ᾱ_t) · w · ∇‖x̂_0 − y‖`` (w = 100, the
        unsquared norm of the whole batch), and scores ``|x − x̂|`` plus a ResNet feature distance, averaged over
        repeats. Its mask is not random: a first guided reconstruction, thresholded at 12 % of its map's range,
        marks the pixels to regenerate, and outside them the state is replaced by the test image noised with one
        fixed ε at every step (RePaint-style). We follow the brief of §5.1.4 instead — random patch masks, soft DPS
        consistency on the observed pixels (per-image norm, as :func:`diffu.inverse.dps`), pixel differences only —
        and keep the code's partial start, DDIM grid, ε-shift form of the guidance and its 2 NFE per step. The
        paper's remaining details (mask statistics, the perceptual term's weight) are not known to us.
    """
    check_sampler_args(model, generator=generator, progress=progress, callback=callback, model_kwargs=model_kwargs)
    _check_images(x)
    ts = _check_partial(schedule, t_start, steps)
    check_int("masks", masks, 1)
    check_real("scale", scale, 0)
    check_real("eta", eta)
    check_eta(eta)
    check_bool("hidden_only", hidden_only)
    N, _, H, W = x.shape
    # 1. K random patch masks per image, stacked along the batch: row k·N + i is mask k of image i
    m = patch_masks(masks * N, H, W, keep=keep, patch=patch, generator=generator).to(device=x.device, dtype=x.dtype)
    xs = x.repeat(masks, 1, 1, 1)  # (K·N, C, H, W)
    op = Inpainting(m)
    y = op.A(xs)  # y_k = m_k ⊙ x
    # 2. the start: x noised to t_start (Eq. 4 of Ho et al. 2020)
    x_t = _partial_start(xs, schedule, int(ts[0]), generator)
    # 3. DDIM from t_start to 0 with the DPS correction as an ε shift (Chung et al. 2023, Algorithm 1; MDPS's code)
    guide = _dps_guidance(model, schedule, y, op, float(scale), model_kwargs) if scale > 0 else None
    x_hat = ddim(model, x_t, schedule, timesteps=ts.tolist(), eta=eta, cond_fn=guide, generator=generator,
                 progress=progress, callback=callback, model_kwargs=model_kwargs)  # fmt: skip
    # 4. |x − x̂_k| averaged over the masks (over the hiding masks only, with hidden_only)
    diff = _abs_diff(xs, x_hat).reshape(masks, N, 1, H, W)
    if not hidden_only:
        return diff.mean(0)
    hidden = (1 - m).reshape(masks, N, 1, H, W)
    count = hidden.sum(0)
    return torch.where(count > 0, (diff * hidden).sum(0) / count.clamp(min=1), diff.mean(0))


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------


def _scored_pixels(scores, mask, region, name: str = "scores") -> tuple[torch.Tensor, torch.Tensor]:
    """The scores (float64) and bool labels of the pixels in ``region``, flattened; checks all three."""
    check_image(scores, name)
    check_finite(scores, name)
    for what, v in (("mask", mask), ("region", region)):
        if v is None and what == "region":
            continue
        if not isinstance(v, torch.Tensor) or v.shape != scores.shape:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"{what} must be a tensor of {name}'s shape {tuple(scores.shape)}, got {got}")
        if v.dtype != torch.bool and (v.is_complex() or ((v != 0) & (v != 1)).any()):
            raise ValueError(f"{what} must be binary (bool, or 0/1 values)")
    sel = torch.ones_like(mask, dtype=torch.bool) if region is None else region.bool()
    return scores[sel].double(), mask.bool()[sel]


def pixel_auroc(scores: torch.Tensor, mask: torch.Tensor, *, region: torch.Tensor | None = None) -> float:
    """The pixel-level area under the ROC curve of an anomaly map, pooled over all pixels of the batch (§5.1.4).

    By the rank (Mann–Whitney) formula ``AUROC = (R₊ − P(P + 1)/2) / (P Q)``, where ``R₊`` is the sum of the ranks
    of the ``P`` anomalous pixels among all ``P + Q`` scores, tied scores sharing their average rank: the
    probability that a random anomalous pixel scores above a random normal one, ties counting one half.

    Args:
        scores: an anomaly map ``(N, C, H, W)`` (usually ``C = 1``), finite; higher is more anomalous.
        mask: the ground truth of ``scores``'s shape, bool or 0/1 (1 = anomalous).
        region: None, or a bool/0-1 tensor of ``scores``'s shape: only its pixels count (e.g. :func:`brain_mask`,
            so that the trivially normal background does not inflate the score).

    Returns:
        The AUROC in [0, 1] as a Python float (0.5 for an uninformative map).

    Raises:
        ValueError: ``scores`` not a finite float image batch, ``mask``/``region`` not binary tensors of its shape,
            or no anomalous or no normal pixel in the region (the AUROC is undefined).
    """
    s, lab = _scored_pixels(scores, mask, region)
    p = int(lab.sum())
    q = lab.numel() - p
    if p == 0 or q == 0:
        raise ValueError(f"mask must mark both anomalous and normal pixels in the region (the AUROC is undefined "
                         f"otherwise), got {p} anomalous and {q} normal")  # fmt: skip
    ranks = average_ranks(s)  # 1-based, ties averaged
    return float((ranks[lab].sum() - p * (p + 1) / 2) / (p * q))


def best_dice(scores: torch.Tensor, mask: torch.Tensor, *, region: torch.Tensor | None = None) -> tuple[float, float]:
    """The best Dice over thresholds, ``max_τ 2 |{s ≥ τ} ∩ M| / (|{s ≥ τ}| + |M|)``, pooled over the batch, and
    the threshold that attains it.

    Every distinct score value is tried as τ (ties fall on the same side), so this is the exact maximum ("⌈Dice⌉"
    of Baur et al. 2021, one threshold for the whole set) — an upper bound on what a threshold chosen without the
    ground truth achieves. ``s > τ'`` with ``τ'`` the next smaller value gives the same sets and the same maximum.

    Args:
        scores: an anomaly map ``(N, C, H, W)``, finite.
        mask: the ground truth of ``scores``'s shape, bool or 0/1.
        region: None, or a binary tensor of ``scores``'s shape restricting the pixels that count.

    Returns:
        ``(dice, tau)``: the best Dice in [0, 1] and the smallest score value ``τ`` of the predicted set
        ``scores ≥ τ``, Python floats.

    Raises:
        ValueError: bad ``scores``, ``mask`` or ``region`` (see :func:`pixel_auroc`), or no anomalous pixel in the
            region (the Dice is undefined).
    """
    s, lab = _scored_pixels(scores, mask, region)
    p = int(lab.sum())
    if p == 0:
        raise ValueError("mask must mark at least one anomalous pixel in the region (the Dice is undefined), got none")
    s_sorted, order = torch.sort(s, descending=True, stable=True)
    tp = lab[order].double().cumsum(0)  # true positives of the k + 1 highest scores
    _, counts = torch.unique_consecutive(s_sorted, return_counts=True)
    ends = counts.cumsum(0) - 1  # the last position of each run of tied scores: the valid cut points
    dice = 2 * tp[ends] / (p + ends.double() + 1)
    best = int(dice.argmax())
    return float(dice[best]), float(s_sorted[ends[best]])
