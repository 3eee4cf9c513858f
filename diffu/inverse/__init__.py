"""Inverse problems ``y = A(x) + noise`` (chapter §3, §4, §5): forward operators with adjoints, pseudo-inverses and
SVD views (:mod:`~diffu.inverse.operators`, :mod:`~diffu.inverse.blur`, :mod:`~diffu.inverse.fourier`), mask
generators (:mod:`~diffu.inverse.masks`), noise models, classical reconstructions
(:mod:`~diffu.inverse.classical`) and diffusion solvers (:mod:`~diffu.inverse.dps`, :mod:`~diffu.inverse.repaint`,
:mod:`~diffu.inverse.ddrm`, :mod:`~diffu.inverse.resample`, :mod:`~diffu.inverse.blind`; for medical imaging, §5:
:mod:`~diffu.inverse.dds` and :mod:`~diffu.inverse.score_pc`).
"""

from __future__ import annotations

from .blind import (
    BlindState,
    bird,
    blind_dps,
    blur_each,
    kernel_error,
    kernel_from_diffusion,
    kernel_to_diffusion,
)
from .blur import Blur, Turbulence, gaussian_kernel, motion_kernel, random_kernels
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
from .dds import SliceStack, admm_tv_z, data_consistency, dds, dds_volume, z_difference, z_difference_T
from .dps import dps, residual_norm
from .fourier import MRI, PhaseRetrieval, Radon, ShiftedPhaseRetrieval, fft2c, ifft2c, register_phase
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
    SeparableOperator,
    adjoint_by_autograd,
    bicubic_kernel,
)
from .pnp import diffpir, diffpir_timesteps, dihedral, dpir, dpir_schedule, hqs_data_step
from .repaint import repaint, repaint_schedule
from .resample import resample, resample_moments, stochastic_resample
from .score_pc import pc_projection, project_measurement
from .two_stage import degrade, two_stage_restore

__all__ = [
    "adjoint_by_autograd",
    "admm_tv_z",
    "Bicubic",
    "bicubic_kernel",
    "bird",
    "blind_dps",
    "BlindState",
    "BlockAverage",
    "Blur",
    "blur_each",
    "box_mask",
    "brush_mask",
    "cartesian_mask",
    "cg",
    "data_consistency",
    "ddrm",
    "dds",
    "dds_volume",
    "degrade",
    "diffpir",
    "diffpir_timesteps",
    "dihedral",
    "dpir",
    "dpir_schedule",
    "dps",
    "fbp",
    "fft2c",
    "Gaussian",
    "gaussian_kernel",
    "gerchberg_saxton",
    "grad",
    "grad_T",
    "hio",
    "hqs_data_step",
    "Identity",
    "ifft2c",
    "Inpainting",
    "kernel_error",
    "kernel_from_diffusion",
    "kernel_to_diffusion",
    "LinearOperator",
    "motion_kernel",
    "MRI",
    "op_norm",
    "Operator",
    "pc_projection",
    "PhaseRetrieval",
    "Poisson",
    "project_measurement",
    "Radon",
    "random_kernels",
    "random_mask",
    "register_phase",
    "repaint",
    "repaint_schedule",
    "resample",
    "resample_moments",
    "residual_norm",
    "SeparableOperator",
    "ShiftedPhaseRetrieval",
    "SliceStack",
    "stochastic_resample",
    "tikhonov",
    "Turbulence",
    "tv",
    "tv_denoise",
    "tv_reconstruct",
    "two_stage_restore",
    "wiener",
    "z_difference",
    "z_difference_T",
    "zero_filled",
]
