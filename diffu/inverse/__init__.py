"""Inverse problems ``y = A(x) + noise`` (chapter §3, §4, §5): forward operators with adjoints, pseudo-inverses and
SVD views (:mod:`~diffu.inverse.operators`, :mod:`~diffu.inverse.blur`, :mod:`~diffu.inverse.fourier`), mask
generators (:mod:`~diffu.inverse.masks`), noise models, classical reconstructions
(:mod:`~diffu.inverse.classical`) and diffusion solvers (:mod:`~diffu.inverse.dps`, :mod:`~diffu.inverse.repaint`,
:mod:`~diffu.inverse.ddrm`).
"""

from __future__ import annotations

from .blur import Blur, Turbulence, gaussian_kernel, motion_kernel
from .classical import (
    cg,
    fbp,
    gerchberg_saxton,
    grad,
    grad_T,
    hio,
    op_norm,
    tikhonov,
    tv,
    tv_denoise,
    tv_reconstruct,
    wiener,
    zero_filled,
)
from .ddrm import ddrm
from .dps import dps
from .fourier import MRI, PhaseRetrieval, Radon, fft2c, ifft2c
from .masks import box_mask, brush_mask, cartesian_mask, random_mask
from .operators import (
    Bicubic,
    BlockAverage,
    Gaussian,
    Identity,
    Inpainting,
    LinearOperator,
    Operator,
    Poisson,
    bicubic_kernel,
)
from .repaint import repaint, repaint_schedule

__all__ = [
    "MRI",
    "Bicubic",
    "BlockAverage",
    "Blur",
    "Gaussian",
    "Identity",
    "Inpainting",
    "LinearOperator",
    "Operator",
    "PhaseRetrieval",
    "Poisson",
    "Radon",
    "Turbulence",
    "bicubic_kernel",
    "box_mask",
    "brush_mask",
    "cartesian_mask",
    "cg",
    "ddrm",
    "dps",
    "fbp",
    "fft2c",
    "gaussian_kernel",
    "gerchberg_saxton",
    "grad",
    "grad_T",
    "hio",
    "ifft2c",
    "motion_kernel",
    "op_norm",
    "random_mask",
    "repaint",
    "repaint_schedule",
    "tikhonov",
    "tv",
    "tv_denoise",
    "tv_reconstruct",
    "wiener",
    "zero_filled",
]
