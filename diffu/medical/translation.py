"""Cross-modality translation T1 → T2 (chapter §5.2): two diffusion routes and the baselines they must beat.

* **unpaired** — :func:`ddib`, dual diffusion implicit bridges (Su, Song, Meng & Ermon 2023): two models trained
  separately, one per modality, bridged through the deterministic DDIM latent: encode the T1 image to ``x_T`` with
  the T1 model's DDIM ODE run backwards, decode ``x_T`` with the T2 model's ODE. No paired data at all.
* **paired** — a conditional model ``ε_θ(x_t, t, cond=T1)`` (:class:`diffu.nn.concat.ConcatUNet`) trained with
  :func:`paired_loss` on aligned (T2, T1) pairs and sampled by any sampler with ``model_kwargs={"cond": t1}``.
* **baselines** — because §5's synthetic T2 is a function of the tissue maps (:func:`diffu.data.mni.synthetic_t2`),
  a pointwise intensity mapping is a strong competitor: :func:`fit_intensity_map` learns ``E[T2 | T1 = v]`` from
  training pairs (binned, piecewise linear), and :func:`fit_tissue_map` is the oracle that is given the true tissue
  labels (per-tissue mean T2) or fractions (least squares: exact for a T2 that is linear in the fractions).

**Bad input** raises ``ValueError``/``TypeError`` naming the argument (:mod:`diffu.checks`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..checks import check_bool, check_callable, check_finite, check_floating, check_image, check_int, check_tensor
from ..samplers import ddim, ddim_invert
from ..sampling import SamplerState, check_sampler_args, check_schedule
from ..schedules import Schedule
from ..train import diffusion_loss

__all__ = ["IntensityMap", "TissueMap", "ddib", "fit_intensity_map", "fit_tissue_map", "paired_loss"]


# ----------------------------------------------------------------------------------------------------------------
# Unpaired: DDIB
# ----------------------------------------------------------------------------------------------------------------


def ddib(
    model_a: Callable,
    model_b: Callable,
    x_a: torch.Tensor,
    schedule: Schedule,
    *,
    steps: int = 50,
    spacing: str = "leading",
    schedule_b: Schedule | None = None,
    clip_x0: bool = False,
    model_kwargs_a: dict | None = None,
    model_kwargs_b: dict | None = None,
    progress: bool = True,
    callback: Callable[[SamplerState], None] | None = None,
) -> torch.Tensor:
    """Dual diffusion implicit bridges (Su et al. 2023): ``x_b = ODE_b^{T→0}(ODE_a^{0→T}(x_a))``; unpaired T1 → T2
    translation in §5.2.

    Both halves are deterministic DDIM (η = 0, Song et al. 2021, Eq. 12 — the Euler discretisation of the
    probability-flow ODE): model A's ODE run from data to noise (:func:`diffu.samplers.ddim_invert`), then model B's
    from that latent back to data (:func:`diffu.samplers.ddim`). The latent ``x_T`` is shared by the two
    modalities; nothing else is. In the limit of many steps the map is the composition of two exact ODE flows, so it
    is invertible: ``ddib(b, a, ddib(a, b, x)) → x`` (cycle consistency), and ``ddib(a, a, x) → x``, both up to the
    discretisation error of ``steps`` DDIM steps.

    Args:
        model_a: the source-modality model ``model_a(x_t, t, **model_kwargs_a)`` (ε, or what ``prediction`` says).
        model_b: the target-modality model.
        x_a: source images ``(N, C, H, W)``, finite.
        schedule: model A's training schedule (and model B's unless ``schedule_b`` is given).
        steps: DDIM steps of each half (NFE = ``2 · steps``), an integer in ``[1, T]``.
        spacing: the timestep grid of both halves (:data:`diffu.sampling.SPACINGS`).
        schedule_b: model B's schedule when it differs (it must have as many steps as ``steps`` needs).
        clip_x0: clip x̂_0 to [-1, 1] in the decoding half (the encoding half never clips: it would not invert).
        model_kwargs_a, model_kwargs_b: extra keyword arguments of each model.
        progress: show a progress bar per half.
        callback: called with a :class:`~diffu.sampling.SamplerState` after every step of both halves: steps
            ``0 … steps − 1`` are the encoding (``x`` climbing to ``x_T``), ``steps … 2·steps − 1`` the decoding.

    Returns:
        ``x_b`` with ``x_a``'s shape, dtype and device. Deterministic: no generator.

    Raises:
        TypeError: a model or ``callback`` that is not callable, a schedule that is not a
            :class:`~diffu.schedules.Schedule`, ``progress``/``clip_x0`` not bools, model keyword arguments that are
            not dicts.
        ValueError: ``x_a`` not a finite floating-point tensor with a batch dimension, ``steps`` outside ``[1, T]``,
            an unknown ``spacing``.

    Notes:
        Official code: ``suxuann/ddib`` (``scripts/imagenet_translation.py``, ``scripts/synthetic_translation.py``,
        on guided-diffusion's ``ddim_reverse_sample_loop`` with ``clip_denoised=False`` and ``ddim_sample_loop`` with
        η = 0). Its ImageNet translation uses one class-conditional model for both domains (source and target
        labels as ``model_kwargs``), decodes with ``clip_denoised=True`` and adds classifier guidance (scale 1) to
        the decoding half; we decode without guidance and without clipping by default (``clip_x0``), the
        unguided ODE whose invertibility the cycle-consistency claim rests on. For one conditional network, pass it
        twice with ``model_kwargs_a``/``model_kwargs_b``.
    """
    for name, kw in (("model_kwargs_a", model_kwargs_a), ("model_kwargs_b", model_kwargs_b)):
        if kw is not None and (not isinstance(kw, dict) or not all(isinstance(k, str) for k in kw)):
            raise TypeError(f"{name} must be a dict with string keys or None, got {kw!r:.80}")
    check_sampler_args(model_a, progress=progress, callback=callback, model_kwargs=model_kwargs_a, name="model_a")
    check_sampler_args(model_b, model_kwargs=model_kwargs_b, name="model_b")
    check_schedule(schedule)
    schedule_b = schedule if schedule_b is None else schedule_b
    check_schedule(schedule_b, "schedule_b")
    check_bool("clip_x0", clip_x0)
    check_floating(x_a, "x_a")
    check_finite(x_a, "x_a")
    if x_a.ndim == 0:
        raise ValueError("x_a must have a batch dimension (N, …), got a 0-d tensor")
    enc = dec = None
    if callback is not None:

        def enc(state):
            callback(state)

        def dec(state):
            callback(state._replace(i=state.i + steps))

    # 1. encode: model A's DDIM ODE from data to x_T (Eq. 12 with η = 0, run backwards)
    x_T = ddim_invert(model_a, x_a, schedule, steps=steps, spacing=spacing, model_kwargs=model_kwargs_a,
                      progress=progress, callback=enc)  # fmt: skip
    # 2. decode: model B's DDIM ODE from x_T to data
    return ddim(model_b, x_T, schedule_b, steps=steps, eta=0.0, spacing=spacing, clip_x0=clip_x0,
                model_kwargs=model_kwargs_b, progress=progress, callback=dec)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Paired: the conditional ε loss
# ----------------------------------------------------------------------------------------------------------------


def paired_loss(model, schedule: Schedule, x: torch.Tensor, cond: torch.Tensor, generator=None) -> torch.Tensor:
    """The ε loss of a model conditioned on an aligned image, ``E_{t,ε} ‖ε − ε_θ(√ᾱ_t x + √(1 − ᾱ_t) ε, t, cond)‖²``
    (Eq. 14 of Ho et al. 2020 with the condition passed along, as SR3 and Palette train).

    Args:
        model: a network taking ``model(x_t, t, cond=cond)`` (e.g. :class:`diffu.nn.concat.ConcatUNet`).
        schedule: the :class:`~diffu.schedules.Schedule`.
        x: the target images ``(N, C, H, W)`` (T2), floating point.
        cond: the aligned condition images ``(N, C_cond, H, W)`` (T1) of ``x``'s batch and size, floating point.
        generator: a ``torch.Generator`` on ``x``'s device, or None.

    Returns:
        The mean squared error, a 0-d tensor (differentiable).

    Raises:
        ValueError: ``x`` or ``cond`` not a floating image batch, or of another batch size or image size.
        TypeError: a model that is not callable, a bad schedule or generator.

    Notes:
        :func:`diffu.train.diffusion_loss` with ``model_kwargs={"cond": cond}``; with a
        :class:`~diffu.nn.concat.ConcatUNet` its own checks also name ``cond``. A recipe passes it as
        ``loss=lambda m, t2, t1, generator: paired_loss(m, linear_schedule(), t2, t1, generator)``.
    """
    check_callable("model", model)
    check_image(x, "x")
    check_image(cond, "cond")
    if cond.shape[0] != x.shape[0] or cond.shape[2:] != x.shape[2:]:
        raise ValueError(f"cond must be (N, C_cond, H, W) with x's batch and size {tuple(x.shape[:1])} × "
                         f"{tuple(x.shape[2:])}, got {tuple(cond.shape)}")  # fmt: skip
    return diffusion_loss(model, schedule, x, generator, model_kwargs={"cond": cond})


# ----------------------------------------------------------------------------------------------------------------
# Baselines: intensity and tissue mappings
# ----------------------------------------------------------------------------------------------------------------


def _check_pair_images(t1, t2) -> None:
    for name, v in (("t1", t1), ("t2", t2)):
        check_image(v, name)
        check_finite(v, name)
    if t1.shape[1] != 1 or t2.shape[1] != 1:
        raise ValueError(f"t1 and t2 must be one-channel images (N, 1, H, W), got {tuple(t1.shape)} and "
                         f"{tuple(t2.shape)}")  # fmt: skip
    if t2.shape != t1.shape:
        raise ValueError(f"t2 must have t1's shape {tuple(t1.shape)} (aligned pairs), got {tuple(t2.shape)}")


@dataclass(frozen=True)
class IntensityMap:
    """A pointwise intensity mapping ``v ↦ f(v)``, piecewise linear through the knots ``(knots_x, knots_y)`` and
    constant beyond the first and last knot; made by :func:`fit_intensity_map`.

    ``map(t1)`` takes any finite floating tensor (a ``(N, 1, H, W)`` T1 batch) and returns ``f`` applied to every
    entry, in its dtype and device (``ValueError`` naming ``t1`` for anything else, a NaN or infinite entry
    included). The knots are copied (immutable).
    """

    knots_x: torch.Tensor
    knots_y: torch.Tensor

    def __post_init__(self):
        for name in ("knots_x", "knots_y"):
            v = getattr(self, name)
            check_tensor(v, name, ndim=1, floating=True, finite=True)
            object.__setattr__(self, name, v.detach().clone().double())
        if self.knots_x.shape != self.knots_y.shape or len(self.knots_x) == 0:
            raise ValueError(f"knots_x and knots_y must be non-empty and of one length, got "
                             f"{len(self.knots_x)} and {len(self.knots_y)}")  # fmt: skip
        if bool((self.knots_x[1:] <= self.knots_x[:-1]).any()):
            raise ValueError("knots_x must be strictly increasing")

    def __call__(self, t1: torch.Tensor) -> torch.Tensor:
        check_floating(t1, "t1")
        check_finite(t1, "t1")  # clamp would carry NaN through
        kx, ky = self.knots_x.to(t1.device), self.knots_y.to(t1.device)
        v = t1.double().clamp(float(kx[0]), float(kx[-1]))  # constant beyond the ends
        if len(kx) == 1:
            return ky[0].expand_as(v).to(t1.dtype).clone()
        j = torch.searchsorted(kx, v.reshape(-1), right=True).clamp(1, len(kx) - 1).reshape(v.shape)
        x0, x1, y0, y1 = kx[j - 1], kx[j], ky[j - 1], ky[j]
        return (y0 + (y1 - y0) * (v - x0) / (x1 - x0)).to(t1.dtype)


def fit_intensity_map(t1: torch.Tensor, t2: torch.Tensor, *, bins: int = 64) -> IntensityMap:
    """Fit the pointwise mapping T1 intensity → T2 intensity on aligned training pairs: the conditional mean
    ``E[T2 | T1 = v]`` estimated in ``bins`` equal-width bins of [-1, 1] and interpolated linearly.

    Each non-empty bin gives one knot: (the mean T1, the mean T2) of its pixels; empty bins are skipped (the
    interpolation bridges them). The mapping minimises the squared error among functions of the T1 intensity alone
    (up to the binning), so it is the best "lookup table" translation — and where the target is a function of
    the tissue, which the T1 intensity mostly identifies, it is hard to beat. It cannot separate tissues with the
    same T1 intensity, which is where a model that sees the context can win.

    Args:
        t1: training T1 images ``(N, 1, H, W)``, finite.
        t2: the aligned T2 images of ``t1``'s shape, finite.
        bins: the number of bins over [-1, 1], an integer ≥ 1 (T1 values outside [-1, 1] go to the end bins).

    Returns:
        An :class:`IntensityMap` (float64 knots, on the CPU); ``map(t1_test)`` translates new images.

    Raises:
        ValueError: ``t1``/``t2`` not finite one-channel image batches of one shape, ``bins`` not an integer ≥ 1.
    """
    _check_pair_images(t1, t2)
    check_int("bins", bins, 1)
    v, w = t1.reshape(-1).double().cpu(), t2.reshape(-1).double().cpu()
    idx = ((v + 1) / 2 * bins).floor().clamp(0, bins - 1).long()  # the bin of each pixel
    count = torch.bincount(idx, minlength=bins).double()
    sum_x = torch.bincount(idx, weights=v, minlength=bins)
    sum_y = torch.bincount(idx, weights=w, minlength=bins)
    full = count > 0
    return IntensityMap(sum_x[full] / count[full], sum_y[full] / count[full])


@dataclass(frozen=True)
class TissueMap:
    """The oracle tissue → T2 mapping made by :func:`fit_tissue_map`: ``values[k]`` is the T2 of tissue ``k``.

    ``map(tissue)`` takes integer labels ``(N, H, W)`` in ``[0, K)`` (returns ``values[labels]`` as ``(N, 1, H,
    W)`` float64) or fractions ``(N, K, H, W)`` (returns ``Σ_k values[k] · fractions_k``, ``(N, 1, H, W)`` in their
    dtype); ``ValueError`` for anything else. ``values`` is copied (immutable).
    """

    values: torch.Tensor

    def __post_init__(self):
        check_tensor(self.values, "values", ndim=1, floating=True, finite=True)
        if len(self.values) == 0:
            raise ValueError("values must hold at least one tissue's value")
        object.__setattr__(self, "values", self.values.detach().clone().double())

    def __call__(self, tissue: torch.Tensor) -> torch.Tensor:
        k = len(self.values)
        labels = _check_tissue(tissue, k)
        vals = self.values.to(tissue.device)
        if labels:
            return vals[tissue][:, None]  # (N, 1, H, W)
        return torch.einsum("nkhw,k->nhw", tissue.double(), vals)[:, None].to(tissue.dtype)


def _check_tissue(tissue, k: int | None = None) -> bool:
    """``tissue`` is integer labels ``(N, H, W)`` in ``[0, k)`` (True) or finite fractions ``(N, K, H, W)`` with
    ``K = k`` (False)."""
    check_tensor(tissue, "tissue")
    if tissue.is_floating_point():
        if tissue.ndim != 4 or (k is not None and tissue.shape[1] != k):
            want = "(N, K, H, W)" if k is None else f"(N, {k}, H, W)"
            raise ValueError(f"tissue fractions must have shape {want}, got {tuple(tissue.shape)}")
        check_finite(tissue, "tissue")
        return False
    if tissue.is_complex() or tissue.dtype == torch.bool or tissue.ndim != 3:
        raise ValueError(f"tissue must be integer labels (N, H, W) or float fractions (N, K, H, W), got "
                         f"{tissue.dtype} of shape {tuple(tissue.shape)}")  # fmt: skip
    if tissue.numel() and (int(tissue.min()) < 0 or (k is not None and int(tissue.max()) >= k)):
        hi = "" if k is None else f", {k - 1}"
        raise ValueError(f"tissue labels must be in [0{hi}], got values in [{int(tissue.min())}, {int(tissue.max())}]")
    return True


def fit_tissue_map(tissue: torch.Tensor, t2: torch.Tensor) -> TissueMap:
    """The oracle baseline: a T2 value per tissue, fitted on training pairs given the *true* tissue maps.

    * labels ``(N, H, W)`` (e.g. ``mni_slices(modality="labels")``): ``values[k]`` is the mean T2 of the pixels
      labelled ``k`` — the per-tissue mean, the best prediction from the hard label alone;
    * fractions ``(N, K, H, W)`` (``modality="fractions"``): ``values = argmin ‖Σ_k values[k] f_k − T2‖²`` (least
      squares). §5's synthetic T2 is *linear* in the fractions (:func:`diffu.data.mni.synthetic_t2`), so this oracle
      is exact up to float rounding: a ceiling, not a competitor.

    Args:
        tissue: integer labels ``(N, H, W)`` with values ``>= 0`` or finite fractions ``(N, K, H, W)``.
        t2: the aligned T2 images ``(N, 1, H, W)``, finite.

    Returns:
        A :class:`TissueMap` with ``max label + 1`` (or ``K``) values, float64 on the CPU.

    Raises:
        ValueError: ``tissue`` neither labels nor fractions, ``t2`` not a finite ``(N, 1, H, W)`` batch matching it,
            a label between 0 and the largest one that never occurs (its value would be undefined).
    """
    labels = _check_tissue(tissue)
    check_image(t2, "t2")
    check_finite(t2, "t2")
    n, h, w = tissue.shape[0], tissue.shape[-2], tissue.shape[-1]
    if t2.shape != (n, 1, h, w):
        raise ValueError(f"t2 must have shape {(n, 1, h, w)} (one T2 image per tissue map), got {tuple(t2.shape)}")
    y = t2.reshape(-1).double().cpu()
    if labels:
        lab = tissue.reshape(-1).cpu()
        k = int(lab.max()) + 1
        count = torch.bincount(lab, minlength=k).double()
        if bool((count == 0).any()):
            missing = (count == 0).nonzero().flatten().tolist()
            raise ValueError(f"tissue labels {missing} never occur: their T2 value is undefined")
        return TissueMap(torch.bincount(lab, weights=y, minlength=k) / count)
    f = tissue.double().cpu().permute(0, 2, 3, 1).reshape(-1, tissue.shape[1])  # (P, K)
    return TissueMap(torch.linalg.lstsq(f, y[:, None]).solution[:, 0])
