"""Networks: embeddings, the DDPM UNet, DiT, an MLP denoiser and the FD-FMNIST classifier (chapters §2.1–§2.6);
every network's forward checks its input first (:mod:`diffu.nn.inputs`)."""

from .adapter import AdaptedUNet, T2IAdapter, T2IAdapterConfig, adapter_levels
from .autoencoder import Autoencoder, AutoencoderConfig
from .classifier import FMNISTClassifier, NoisyClassifier, NoisyClassifierConfig
from .concat import ConcatUNet, ConcatUNetConfig
from .controlnet import ControlledUNet, ControlNet, Restorer, RestorerConfig, exclude_frozen, zero_conv
from .dit import (
    CONDITIONINGS,
    DIT_BLOCKS,
    DIT_SIZES,
    AdaLNBlock,
    AdaLNZeroBlock,
    CrossAttentionBlock,
    DiT,
    DiTConfig,
    InContextBlock,
    modulate,
)
from .drunet import DRUNet, DRUNetConfig
from .embeddings import (
    LabelEmbedder,
    PatchEmbed,
    TimestepEmbedder,
    patchify,
    sincos_2d_pos_embed,
    timestep_embedding,
    unpatchify,
)
from .guide import GuidedUNet, GuideNet, GuideNetConfig
from .inputs import check_input, check_int_tuple, check_tokens, labels_for, make_config, timesteps_for
from .medsegdiff import FFParser, MedSegDiffConfig, MedSegDiffUNet
from .mlp import MLPDenoiser
from .mmdit import MMDiT, MMDiTBlock, MMDiTConfig, joint_attention
from .student import StudentUNet, StudentUNetConfig
from .text import TextEncoder, WordTokenizer
from .transformer import Attention, feed_forward
from .unet import KernelUNet, KernelUNetConfig, UNet, UNetConfig, group_norm
from .unet3d import UNet3D, UNet3DConfig

__all__ = [
    "AdaptedUNet",
    "T2IAdapter",
    "T2IAdapterConfig",
    "adapter_levels",
    "AdaLNBlock",
    "AdaLNZeroBlock",
    "Attention",
    "ConcatUNet",
    "ConcatUNetConfig",
    "Autoencoder",
    "AutoencoderConfig",
    "CONDITIONINGS",
    "ControlNet",
    "ControlledUNet",
    "CrossAttentionBlock",
    "DIT_BLOCKS",
    "DIT_SIZES",
    "DiT",
    "DiTConfig",
    "DRUNet",
    "DRUNetConfig",
    "FFParser",
    "FMNISTClassifier",
    "GuideNet",
    "GuideNetConfig",
    "GuidedUNet",
    "InContextBlock",
    "KernelUNet",
    "KernelUNetConfig",
    "LabelEmbedder",
    "MedSegDiffConfig",
    "MedSegDiffUNet",
    "MLPDenoiser",
    "MMDiT",
    "MMDiTBlock",
    "MMDiTConfig",
    "NoisyClassifier",
    "NoisyClassifierConfig",
    "PatchEmbed",
    "Restorer",
    "RestorerConfig",
    "StudentUNet",
    "StudentUNetConfig",
    "TextEncoder",
    "TimestepEmbedder",
    "UNet",
    "UNetConfig",
    "UNet3D",
    "UNet3DConfig",
    "WordTokenizer",
    "check_input",
    "check_int_tuple",
    "check_tokens",
    "exclude_frozen",
    "feed_forward",
    "group_norm",
    "joint_attention",
    "labels_for",
    "make_config",
    "modulate",
    "patchify",
    "sincos_2d_pos_embed",
    "timestep_embedding",
    "timesteps_for",
    "unpatchify",
    "zero_conv",
]
