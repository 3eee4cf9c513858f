"""Networks: embeddings, the DDPM UNet, DiT, an MLP denoiser and the FD-FMNIST classifier (chapters §2.1–§2.6)."""

from .autoencoder import Autoencoder, AutoencoderConfig
from .classifier import FMNISTClassifier, NoisyClassifier, NoisyClassifierConfig
from .controlnet import ControlledUNet, ControlNet, Restorer, RestorerConfig, zero_conv
from .dit import CONDITIONINGS, DIT_SIZES, DiT, DiTConfig
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
from .mlp import MLPDenoiser
from .mmdit import MMDiT, MMDiTBlock, MMDiTConfig, joint_attention
from .text import TextEncoder, WordTokenizer
from .unet import UNet, UNetConfig

__all__ = [
    "Autoencoder",
    "AutoencoderConfig",
    "CONDITIONINGS",
    "ControlNet",
    "ControlledUNet",
    "DIT_SIZES",
    "DiT",
    "DiTConfig",
    "DRUNet",
    "DRUNetConfig",
    "FMNISTClassifier",
    "LabelEmbedder",
    "MLPDenoiser",
    "MMDiT",
    "MMDiTBlock",
    "MMDiTConfig",
    "NoisyClassifier",
    "NoisyClassifierConfig",
    "PatchEmbed",
    "Restorer",
    "RestorerConfig",
    "TextEncoder",
    "TimestepEmbedder",
    "UNet",
    "UNetConfig",
    "WordTokenizer",
    "joint_attention",
    "patchify",
    "sincos_2d_pos_embed",
    "timestep_embedding",
    "unpatchify",
    "zero_conv",
]
