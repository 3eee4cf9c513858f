"""Segmentation with diffusion models (chapter §6.2).

* :mod:`diffu.segmentation.masks` — mask encodings (one-hot and analog bits on the [-1, 1] scale, exact inverses)
  and :func:`~diffu.segmentation.masks.segmentation_loss`, cross-entropy + soft Dice for the plain UNet baseline.
* :mod:`diffu.segmentation.ensemble` — Wolleb et al. 2022: diffuse only the mask, the image concatenated at every
  step; :func:`~diffu.segmentation.ensemble.segment` returns the ensemble mean, labels and per-pixel variance.
* :mod:`diffu.segmentation.recursive` — recursive noise diffusion (Kolbeinsson & Mikolajczyk 2024): the softmaxed
  previous prediction, noised and refined for ``T`` levels; the ground truth is never an input.
* :mod:`diffu.segmentation.evaluation` — Dice against the ensemble size, and how well the ensemble variance predicts
  the errors (correlation, AUROC, the uncertainty–error curve).
* :mod:`diffu.segmentation.latent` — SDSeg (Lin et al. 2024): the mask's latent denoised with the image concatenated,
  a latent x₀ loss, and single-step inference; conditioning on the structure segments only what is asked for.
* :mod:`diffu.segmentation.attention` — Dombrowski et al.: foreground masks from a text-to-image model's attention to
  the object's word, without segmentation labels.

The package re-exports the public names of its submodules.
"""

from .attention import AttentionIoU, attention_iou_table, attention_masks, threshold_maps, word_positions
from .ensemble import Segmentation, mask_diffusion_loss, segment
from .evaluation import UncertaintyError, ensemble_dice, uncertainty_error
from .latent import (
    LatentSegmentation,
    encode_structures,
    image_condition,
    sdseg_loss,
    sdseg_schedule,
    sdseg_segment,
)
from .masks import (
    ENCODINGS,
    analog_bits,
    decode_masks,
    encode_masks,
    encoding_channels,
    from_analog_bits,
    from_one_hot,
    one_hot,
    segmentation_loss,
)
from .recursive import RecursiveLevelLoss, recursive_segment, recursive_train_step

__all__ = [
    "ENCODINGS",
    "AttentionIoU",
    "LatentSegmentation",
    "RecursiveLevelLoss",
    "Segmentation",
    "UncertaintyError",
    "analog_bits",
    "attention_iou_table",
    "attention_masks",
    "decode_masks",
    "encode_masks",
    "encode_structures",
    "encoding_channels",
    "ensemble_dice",
    "from_analog_bits",
    "from_one_hot",
    "image_condition",
    "mask_diffusion_loss",
    "one_hot",
    "recursive_segment",
    "recursive_train_step",
    "sdseg_loss",
    "sdseg_schedule",
    "sdseg_segment",
    "segment",
    "segmentation_loss",
    "threshold_maps",
    "uncertainty_error",
    "word_positions",
]
