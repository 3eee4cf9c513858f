"""Measurements on the physical scale (chapter §5): attenuation or signal intensity in [0, 1], air = 0.

Inside diffu images live on [-1, 1] (convention 1), where air is −1. A scanner measures the physical image
``μ = (x + 1) / 2``: a CT sinogram is the Radon transform of the attenuation, which is 0 outside the body, and an MR
image's background is 0. This matters for the analytic baselines: filtered back-projection on [-1, 1] data would
treat air as a mid-grey −1 ≠ 0 and put its errors (for example in the unmeasured corners outside the scanned disc,
which :func:`~diffu.inverse.classical.fbp` sets to 0) at the wrong level. So chapter §5 measures

    y = A μ + σ_y n,   μ = (x + 1) / 2,

with σ_y on the physical scale, and hands the diffusion solvers, which work on x, the equivalent linear measurement
of x (:func:`signed_measurement`): ``2 y − A 1 = A x + 2 σ_y n`` (linearity of ``A``), whose noise level is ``2 σ_y``.
"""

from __future__ import annotations

import torch

from ..checks import check_generator, check_real, check_tensor
from ..inverse import MRI, Radon, fbp, zero_filled

__all__ = ["analytic_reconstruction", "measure_physical", "signed_measurement"]


def _check_op(op) -> None:
    if not (callable(getattr(op, "A", None)) and callable(getattr(op, "AT", None))):
        raise TypeError(f"op must be a linear operator with A and AT (e.g. Radon, MRI), got {type(op).__name__}")


def measure_physical(op, x: torch.Tensor, sigma_y: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``y = A((x + 1)/2) + σ_y n``: the measurement of the physical image of ``x`` (N, C, H, W) in [-1, 1], with
    white Gaussian noise of standard deviation ``sigma_y`` (for :class:`~diffu.inverse.fourier.MRI`, on the acquired
    k-space entries only; unacquired entries stay 0). ``n`` is drawn from ``generator`` (on its device).

    Raises:
        TypeError: ``op`` without ``A``/``AT``.
        ValueError: ``x`` not a finite floating-point tensor, ``sigma_y`` not a finite number >= 0, a generator on
            another device than ``x``.
    """
    _check_op(op)
    check_tensor(x, "x", floating=True, finite=True)
    check_real("sigma_y", sigma_y, 0)
    check_generator(generator)
    ax = op.A((x + 1) / 2)
    n = torch.randn(ax.shape, generator=generator, device=ax.device, dtype=ax.dtype)
    if isinstance(op, MRI):
        n = n * op.mask.to(ax)[..., None].expand_as(n)
    return ax + sigma_y * n


def signed_measurement(op, y: torch.Tensor, like: torch.Tensor | tuple) -> torch.Tensor:
    """The measurement of the [-1, 1] image that the physical measurement ``y`` of :func:`measure_physical` is
    equivalent to: ``2 y − A 1`` (``= A x + 2 σ_y n``). ``like`` is an image batch, or its shape, giving the shape of
    the ``1`` (all-ones image).

    Raises:
        TypeError: ``op`` without ``A``/``AT``.
        ValueError: ``y`` not a finite floating-point tensor of the shape ``op.A`` gives for ``like``; a ``like``
            that ``op`` does not accept.
    """
    _check_op(op)
    check_tensor(y, "y", floating=True, finite=True)
    shape = tuple(like.shape) if isinstance(like, torch.Tensor) else tuple(like)
    try:
        ones = op.A(torch.ones(shape, dtype=y.dtype, device=y.device))
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"like must be an image batch (or its shape) that op accepts, got {shape}: {e}") from e
    if ones.shape != y.shape:
        raise ValueError(f"y and like disagree: op.A gives {tuple(ones.shape)} for images of shape like = {shape}, "
                         f"y has shape {tuple(y.shape)}")  # fmt: skip
    return 2 * y - ones


def analytic_reconstruction(op, y: torch.Tensor) -> torch.Tensor:
    """The classical baseline on the physical scale, mapped back to [-1, 1]: filtered back-projection
    (:func:`~diffu.inverse.classical.fbp`, zero outside the scanned disc, i.e. air) for a
    :class:`~diffu.inverse.fourier.Radon` operator, the zero-filled inverse FFT for :class:`~diffu.inverse.fourier.MRI`;
    ``2 μ̂ − 1``, clamped to [-1, 1].

    Raises:
        TypeError: ``op`` is neither ``Radon`` nor ``MRI``.
        ValueError: ``y`` is not a finite floating-point measurement of ``op``'s shape.
    """
    if not isinstance(op, (Radon, MRI)):
        raise TypeError(f"op must be a Radon or MRI operator, got {type(op).__name__}")
    check_tensor(y, "y", floating=True, finite=True)
    try:
        mu = fbp(op, y) if isinstance(op, Radon) else zero_filled(op, y)
    except ValueError as e:
        raise ValueError(f"y must be a measurement of op: {e}") from e
    return (2 * mu - 1).clamp(-1, 1)
