"""Networks: embeddings, the DDPM UNet, DiT, an MLP denoiser and the FD-FMNIST classifier (chapters §2.1–§2.6)."""

from .classifier import FMNISTClassifier, NoisyClassifier, NoisyClassifierConfig
from .dit import CONDITIONINGS, DIT_SIZES, DiT, DiTConfig
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
    "CONDITIONINGS",
    "DIT_SIZES",
    "DiT",
    "DiTConfig",
    "FMNISTClassifier",
    "LabelEmbedder",
    "MLPDenoiser",
    "MMDiT",
    "MMDiTBlock",
    "MMDiTConfig",
    "NoisyClassifier",
    "NoisyClassifierConfig",
    "PatchEmbed",
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
]
