"""Distillation: few-step students of the shipped diffusion models (chapter §7).

- :mod:`diffu.distill.progressive` — progressive distillation (Salimans & Ho 2022);
- :mod:`diffu.distill.consistency` — consistency distillation and sampling (Song et al. 2023);
- :mod:`diffu.distill.guide` — plug-and-play distillation of classifier-free guidance (Hsiao et al. 2024);
- :mod:`diffu.distill.adversarial` — adversarial diffusion distillation (Sauer et al. 2023);
- :mod:`diffu.distill.codi` — conditional diffusion distillation, CoDi (Mei et al. 2024), on ×4 super-resolution;
- :mod:`diffu.distill.frontier` — one sampler call per (method, NFE) for the frontier plot.

The students are :class:`diffu.nn.StudentUNet` networks copied from the ε-prediction teacher.
"""

from .adversarial import (
    MODES,
    AdversarialDistillation,
    FeatureDiscriminator,
    add_sample,
    add_timesteps,
    hinge_d_loss,
    hinge_g_loss,
    r1_penalty,
    score_distillation_loss,
    unet_encoder_features,
)
from .codi import CODI_SKIP, SR_FACTOR, codi_loss, codi_targets, sr_condition, sr_sample
from .consistency import (
    ConsistencyDistillation,
    consistency_function,
    consistency_grid,
    consistency_sample,
    edm_sigma,
    heun_teacher_step,
    multistep_sample,
)
from .frontier import FRONTIER_METHODS, frontier_samples
from .guide import DEFAULT_SCALES, cfg_target, guide_loss, guided_eps_cost
from .progressive import (
    check_timesteps,
    ddim_jump,
    distillation_grid,
    model_x0,
    progressive_loss,
    progressive_target,
    truncated_snr_weight,
)

__all__ = [
    "CODI_SKIP",
    "SR_FACTOR",
    "codi_loss",
    "codi_targets",
    "sr_condition",
    "sr_sample",
    "DEFAULT_SCALES",
    "cfg_target",
    "guide_loss",
    "guided_eps_cost",
    "FRONTIER_METHODS",
    "MODES",
    "AdversarialDistillation",
    "FeatureDiscriminator",
    "add_sample",
    "add_timesteps",
    "frontier_samples",
    "hinge_d_loss",
    "hinge_g_loss",
    "r1_penalty",
    "score_distillation_loss",
    "unet_encoder_features",
    "check_timesteps",
    "ConsistencyDistillation",
    "consistency_function",
    "consistency_grid",
    "consistency_sample",
    "ddim_jump",
    "distillation_grid",
    "edm_sigma",
    "heun_teacher_step",
    "model_x0",
    "multistep_sample",
    "progressive_loss",
    "progressive_target",
    "truncated_snr_weight",
]
