"""High dimensionality and volumes (chapter §5.1): why a medical volume is hard for a diffusion model, and how a 2D
prior is run on a stack of slices.

* :func:`noise_norm_stats` — the norm of Gaussian noise concentrates around √D (the chi distribution), and two
  independent draws are nearly orthogonal: measured over draws, beside the closed forms;
* :func:`z_roughness`, :func:`slice_inconsistency` — differences between neighbouring depth
  slices, and the inconsistency of a slice-by-slice reconstruction measured *against the truth*;
* :func:`to_slices`, :func:`to_volume`, :func:`apply_slicewise` — a volume ``(N, C, D, H, W)`` as ``N·D`` images
  ``(N·D, C, H, W)`` and back, and a 2D image function (a prior, a solver) applied to every depth slice.

Volumes are ``(N, C, D, H, W)`` with depth on axis 2 (as :func:`diffu.data.mni.mni_volume` returns them and as
``torch.nn.Conv3d`` reads them); slice ``z`` of volume ``n`` is ``x[n, :, z]``.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..checks import (
    check_bool,
    check_callable,
    check_dtype,
    check_finite,
    check_floating,
    check_generator,
    check_int,
    check_rank,
    check_real,
    check_shape,
)

__all__ = [
    "apply_slicewise",
    "chi_moments",
    "noise_norm_stats",
    "slice_inconsistency",
    "to_slices",
    "to_volume",
    "z_roughness",
]

# the layout of a volume batch, for messages
_VOLUME = "(N, C, D, H, W)"

# above this dimension the Γ-ratio of the chi mean is taken from its asymptotic series (relative error < 4e-14 at
# D = 64), which keeps D − E‖ε‖² accurate where two lgamma values of size D·ln D would cancel
_SERIES_FROM = 64

# elements of float noise drawn at once by noise_norm_stats (32 MiB in float64), and the largest dimension it takes
# (a 512³ volume; two rows of it are 2 GiB in float64)
_CHUNK = 2**22
_MAX_DIM = 2**27


# ----------------------------------------------------------------------------------------------------------------
# concentration of the noise norm
# ----------------------------------------------------------------------------------------------------------------


def chi_moments(dim: int) -> tuple[float, float]:
    """Mean and variance of ``‖ε‖`` for ``ε ~ N(0, I_D)`` (the chi distribution with ``D`` degrees of freedom).

    ``E‖ε‖ = √2 Γ((D+1)/2) / Γ(D/2)`` and ``Var‖ε‖ = D − (E‖ε‖)²`` (since ``E‖ε‖² = D``); as ``D`` grows,
    ``E‖ε‖ = √D (1 − 1/(4D) + O(D⁻²))`` and ``Var‖ε‖ → 1/2``: the norm concentrates in a shell of width O(1) around
    √D (Wegner, *Lecture Notes on High-Dimensional Data*, the Gaussian annulus theorem). Chapter §5.1.

    Args:
        dim: the dimension ``D``, an integer ≥ 1.

    Returns:
        ``(mean, variance)`` as Python floats.

    Raises:
        ValueError: ``dim`` is not an integer ≥ 1, or is too large for a float (above ≈ 1.8·10³⁰⁸).

    Notes:
        For ``D ≥ 64`` the ratio ``Γ(x + 1/2)/Γ(x)`` (``x = D/2``) is the asymptotic series
        ``√x (1 − 1/(8x) + 1/(128x²) + 5/(1024x³) − 21/(32768x⁴) − 399/(262144x⁵) + 869/(4194304x⁶))``
        (relative error < 4·10⁻¹⁴ there, checked against mpmath), so that ``D − (E‖ε‖)²`` does not lose its
        digits to cancellation; below, ``lgamma``.
    """
    check_int("dim", dim, 1)
    try:
        d = float(dim)
    except OverflowError:  # an integer beyond the largest float (≈ 1.8·10³⁰⁸)
        raise ValueError(f"dim must be at most {sys.float_info.max:.4g} (a float's range), got about "
                         f"10**{int(int(dim).bit_length() * math.log10(2))}") from None  # fmt: skip
    if dim < _SERIES_FROM:
        mean = math.sqrt(2.0) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
        return mean, d - mean * mean
    u = 2 / d  # 1/x; the series in Horner form in 1/x, so that no power of x overflows for huge D
    p = -1 / 8 + u * (1 / 128 + u * (5 / 1024 + u * (-21 / 32768 + u * (-399 / 262144 + u * 869 / 4194304))))
    s_minus_1 = u * p
    mean = math.sqrt(d) * (1 + s_minus_1)
    # D (1 − s²) = −D (s − 1)(s + 1), written without the cancellation; D (s − 1) = 2p (no underflow for huge D)
    return mean, -2 * p * (2 + s_minus_1)


def _within_exact(dim: int, rel: float) -> float:
    """P(|‖ε‖/√D − 1| ≤ rel) = P((1−rel)² D ≤ χ²_D ≤ (1+rel)² D), from the regularised lower incomplete gamma."""
    a = torch.tensor(dim / 2, dtype=torch.float64)
    hi = torch.special.gammainc(a, a * (1 + rel) ** 2)
    lo = torch.special.gammainc(a, a * (1 - rel) ** 2)
    return float(hi - lo)


def _outside_exact(dim: int, rel: float) -> float:
    """P(|‖ε‖/√D − 1| > rel), the two tails added directly (``1 − within`` rounds to 0 in float64 once the tails are
    below ~1e-16, from a 64² slice up at rel = 0.1)."""
    a = torch.tensor(dim / 2, dtype=torch.float64)
    return float(torch.special.gammainc(a, a * (1 - rel) ** 2) + torch.special.gammaincc(a, a * (1 + rel) ** 2))


def noise_norm_stats(
    dims: Sequence[int] | int,
    n: int = 1000,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    rel: float = 0.1,
) -> list[dict]:
    """Concentration of Gaussian noise in high dimension, measured over ``n`` draws and beside the closed forms.

    For each ``D`` in ``dims``, ``n`` draws ``ε ~ N(0, I_D)`` give the mean and standard deviation of ``‖ε‖/√D``
    (exact: ``E‖ε‖/√D`` and ``√(D − E‖ε‖²)/√D`` from :func:`chi_moments`, → 1 and → 0 like ``1/√(2D)``), the
    fraction of draws within ``±rel`` of √D (exact: ``P((1−rel)²D ≤ χ²_D ≤ (1+rel)²D)``, → 1), and, over the
    ``n // 2`` pairs of draws ``(ε_{2k}, ε_{2k+1})``, the cosine and the angle between two independent draws
    (exact: ``E cos θ = 0`` and ``Var cos θ = 1/D``, since ``cos θ`` is distributed as one coordinate of a uniform
    unit vector; the angle → 90°). A 64×64 slice has D = 4096 and its noise norm falls outside ±10 % of 64 with
    probability 2.6·10⁻¹⁹ (scipy's chi-square); a 64³ volume has D = 262 144. Wegner, *Lecture Notes on
    High-Dimensional Data* (concentration of the norm, near-orthogonality of random vectors). Chapter §5.1.

    Args:
        dims: the dimensions ``D`` (integers in [1, 2²⁷], 2²⁷ being a 512³ volume), or one of them.
        n: draws per dimension, an integer ≥ 2.
        generator: the source of the draws (its device is where they are drawn); None: torch's global RNG.
        dtype: the floating dtype of the draws (float64 by default, so that the sums are exact enough at D ~ 10⁶).
        rel: the relative half-width of the shell, in (0, 1).

    Returns:
        One dict per dimension (Python numbers, JSON-ready): ``dim``, ``n``; ``mean``, ``mean_exact``, ``std``,
        ``std_exact`` of ``‖ε‖/√D``; ``within``, ``within_exact`` (fractions within ``±rel``); ``outside_exact``
        (the exact probability of falling outside, from the two tails: accurate where ``1 − within_exact`` rounds
        to 0); ``cos_mean``,
        ``cos_std``, ``cos_std_exact`` (``1/√D``); ``angle_mean_deg``, ``angle_std_deg``.

    Raises:
        ValueError: ``dims`` empty or holding a non-integer or an integer outside [1, 2²⁷], ``n`` not an integer
            ≥ 2, ``rel`` outside (0, 1), ``dtype`` not floating.
        TypeError: ``generator`` not a ``torch.Generator``; ``dtype`` not a ``torch.dtype``; ``rel`` not a number.

    Notes:
        The draws are made in chunks of at most 2²² elements (an even number of rows, so that pairs stay within a
        chunk), so any ``D`` fits in memory; the output depends only on ``(dims, n, generator state)``.
    """
    dims = [dims] if isinstance(dims, numbers.Integral) else dims
    if not isinstance(dims, Sequence) or isinstance(dims, str) or len(dims) == 0:
        raise ValueError(f"dims must be a non-empty sequence of integers >= 1, got {dims!r:.80}")
    for d in dims:
        check_int("each of dims", d, 1, _MAX_DIM)
    check_int("n", n, 2)
    check_generator(generator)
    dtype = check_dtype("dtype", dtype)
    check_real("rel", rel, 0, 1, low_open=True, high_open=True)
    device = generator.device if generator is not None else None
    rows = []
    for d in dims:
        per = max(2, (_CHUNK // d) // 2 * 2)  # rows per chunk, even
        norms, cosines = [], []
        for start in range(0, n, per):
            k = min(per, n - start)
            eps = torch.randn(k, d, generator=generator, device=device, dtype=dtype)  # (k, D)
            norms.append(eps.norm(dim=1))
            m = k // 2 * 2
            if m:
                a, b = eps[0:m:2], eps[1:m:2]
                cosines.append((a * b).sum(1) / (norms[-1][0:m:2] * norms[-1][1:m:2]))
        r = torch.cat(norms) / math.sqrt(d)  # (n,) ‖ε‖/√D
        cos = torch.cat(cosines).clamp(-1, 1)  # (n // 2,)
        angle = torch.rad2deg(torch.arccos(cos))
        mean_exact, var_exact = chi_moments(d)
        rows.append({
            "dim": int(d), "n": int(n),
            "mean": float(r.mean()), "mean_exact": mean_exact / math.sqrt(d),
            "std": float(r.std()), "std_exact": math.sqrt(max(var_exact, 0.0) / d),
            "within": float(((r - 1).abs() <= rel).to(dtype).mean()), "within_exact": _within_exact(d, rel),
            "outside_exact": _outside_exact(d, rel),
            "cos_mean": float(cos.mean()), "cos_std": float(cos.std()) if cos.numel() > 1 else float("nan"),
            "cos_std_exact": 1 / math.sqrt(d),
            "angle_mean_deg": float(angle.mean()),
            "angle_std_deg": float(angle.std()) if angle.numel() > 1 else float("nan"),
        })  # fmt: skip
    return rows


# ----------------------------------------------------------------------------------------------------------------
# differences along depth
# ----------------------------------------------------------------------------------------------------------------


def _check_volume(x, name: str, min_depth: int = 1) -> None:
    check_rank(x, 5, name, _VOLUME)
    check_floating(x, name)
    if 0 in (x.shape[1], x.shape[3], x.shape[4]):
        raise ValueError(f"{name} must have at least one channel, row and column, got shape {tuple(x.shape)}")
    if x.shape[2] < min_depth:
        raise ValueError(f"{name} must have at least {min_depth} depth slices (axis 2 of {_VOLUME}), got shape "
                         f"{tuple(x.shape)}")  # fmt: skip


def z_roughness(x: torch.Tensor) -> torch.Tensor:
    """Raw roughness along depth: ``mean |x_{z+1} − x_z|`` over ``z``, channels and pixels, per volume.

    A volume reconstructed slice by slice flickers from slice to slice, which raises it; but a z-regulariser lowers
    it by construction, and so does an over-smoothed result — which is why :func:`slice_inconsistency` compares the
    differences with the truth's. Shown beside it for contrast (chapter §5.1).

    Args:
        x: a volume batch ``(N, C, D, H, W)``, floating and finite, ``D ≥ 2``.

    Returns:
        ``(N,)``, in ``x``'s dtype and device.

    Raises:
        ValueError: ``x`` not a floating rank-5 tensor with C, H, W ≥ 1, fewer than two depth slices, or NaN/inf
            in ``x``.
    """
    _check_volume(x, "x", 2)
    check_finite(x, "x")
    return torch.diff(x.double(), dim=2).abs().flatten(1).mean(1).to(x.dtype)


def slice_inconsistency(x: torch.Tensor, x_true: torch.Tensor) -> torch.Tensor:
    """Slice inconsistency of a reconstructed volume against the truth (issue 21, item 1):
    ``mean_{z, c, pixels} |(x_{z+1} − x_z) − (x*_{z+1} − x*_z)|`` per volume, ``= z_roughness(x − x*)``.

    It is 0 when ``x`` differs from the truth by any volume that is constant along z (a constant, or one image
    repeated on every slice), and grows with every independent slice-to-slice error: noise ``σ ξ_z`` drawn
    independently per slice adds differences ``~ N(0, 2σ²)``, whose mean absolute value is ``2σ/√π``. Unlike
    :func:`z_roughness` it cannot be lowered by smoothing along z beyond the truth's own z-structure, so it measures
    whether a z-regulariser makes the stack *consistent*, not merely smooth (chapter §5.1, 3D reconstruction).

    Args:
        x: the reconstruction ``(N, C, D, H, W)``, floating and finite, ``D ≥ 2``.
        x_true: the truth, of ``x``'s shape, floating and finite.

    Returns:
        ``(N,)``, in ``x``'s dtype and device (computed in float64).

    Raises:
        ValueError: a volume that is not a floating rank-5 tensor with C, H, W ≥ 1, fewer than two depth slices,
            shapes that differ, or NaN/inf in either.
    """
    _check_volume(x, "x", 2)
    check_shape(x_true, x.shape, "x_true", of="x's")
    check_floating(x_true, "x_true")
    check_finite(x, "x")
    check_finite(x_true, "x_true")
    return torch.diff(x.double() - x_true.to(x.device, torch.float64), dim=2).abs().flatten(1).mean(1).to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# a 2D function on every slice
# ----------------------------------------------------------------------------------------------------------------


def to_slices(volume: torch.Tensor) -> torch.Tensor:
    """A volume batch as a batch of its depth slices: ``(N, C, D, H, W) → (N·D, C, H, W)``, slice ``z`` of volume
    ``n`` at index ``n·D + z`` (the inverse of :func:`to_volume`).

    Args:
        volume: ``(N, C, D, H, W)``, floating.

    Returns:
        ``(N·D, C, H, W)`` in ``volume``'s dtype and device (a view of ``volume`` when ``C = 1`` or ``D = 1``).

    Raises:
        ValueError: ``volume`` not a floating rank-5 tensor with C, H, W ≥ 1.
    """
    _check_volume(volume, "volume")
    n, c, d, h, w = volume.shape
    return volume.transpose(1, 2).reshape(n * d, c, h, w)


def to_volume(slices: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` volumes from a batch of their depth slices: ``(N·D, C, H, W) → (N, C, D, H, W)``, the inverse of
    :func:`to_slices` (slice ``z`` of volume ``k`` is read at index ``k·D + z``).

    Args:
        slices: ``(N·D, C, H, W)``, floating.
        n: the number of volumes ``N``, an integer ≥ 1 that divides ``slices.shape[0]``.

    Returns:
        ``(N, C, D, H, W)``, in ``slices``' dtype and device.

    Raises:
        ValueError: ``slices`` not a floating rank-4 tensor, ``n`` not an integer ≥ 1 or not dividing the batch.
    """
    check_rank(slices, 4, "slices", "(N·D, C, H, W)")
    check_floating(slices, "slices")
    check_int("n", n, 1)
    if slices.shape[0] % n:
        raise ValueError(f"n must divide the number of slices, got n={n} for {slices.shape[0]} slices")
    nd, c, h, w = slices.shape
    return slices.reshape(n, nd // n, c, h, w).transpose(1, 2).contiguous()


def apply_slicewise(
    fn: Callable[[torch.Tensor], torch.Tensor],
    volume: torch.Tensor,
    *,
    batch: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Apply a 2D image function to every depth slice of a volume batch, ``batch`` slices per call, and stack the
    results back into volumes: how a 2D diffusion prior or solver is run on a 3D stack (the slice-by-slice
    baseline of DiffusionMBIR, Chung et al. 2023, and of DDS's 3D experiments, Chung, Lee & Ye 2024). Chapter §5.1.

    Args:
        fn: ``fn(images) -> images`` from ``(B, C, H, W)`` to ``(B, C', H', W')`` (same ``B``): a denoiser, a
            solver ``lambda y: dds(model, y, op, schedule, generator=g)`` given a stack of measurements, ….
        volume: ``(N, C, D, H, W)``, floating (a stack of measurements such as sinograms works the same way).
        batch: slices per call (None: all ``N·D`` at once). Slices are taken in the order of :func:`to_slices`
            (volume by volume, ``z`` ascending); a stochastic ``fn`` that draws from one generator therefore gives
            results that depend on ``batch``.
        progress: show a progress bar over the calls.

    Returns:
        ``(N, C', D, H', W')``: ``out[:, :, z] = fn(volume[:, :, z])`` for every ``z`` (up to the batching).

    Raises:
        ValueError: ``volume`` not a floating rank-5 tensor with C, H, W ≥ 1 or empty, ``batch`` not an integer
            ≥ 1 or None, or ``fn`` returning something other than a ``(B, C', H', W')`` tensor for a batch of ``B``
            slices (or outputs whose shapes differ between calls).
        TypeError: ``fn`` not callable, ``progress`` not a bool.
    """
    check_callable("fn", fn)
    _check_volume(volume, "volume")
    if batch is not None:
        check_int("batch", batch, 1)
    check_bool("progress", progress)
    if volume.shape[0] == 0:
        raise ValueError(f"volume must hold at least one volume and slice, got shape {tuple(volume.shape)}")
    slices = to_slices(volume)  # (N·D, C, H, W)
    size = slices.shape[0] if batch is None else batch
    outs = []
    for start in tqdm(range(0, slices.shape[0], size), desc="slices", disable=not progress, leave=False):
        chunk = slices[start : start + size]
        out = fn(chunk)
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != chunk.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"fn must return a tensor (B, C', H', W') for a batch of B = {chunk.shape[0]} slices, "
                             f"got {got}")  # fmt: skip
        if outs and out.shape[1:] != outs[0].shape[1:]:
            raise ValueError(f"fn must return slices of one shape, got {tuple(outs[0].shape[1:])} and then "
                             f"{tuple(out.shape[1:])}")  # fmt: skip
        outs.append(out)
    return to_volume(torch.cat(outs), volume.shape[0])  # (N, C', D, H', W')
