"""Networks: embeddings, the DDPM UNet, an MLP denoiser and the FD-FMNIST classifier (chapters §2.1, §2.2, §2.6)."""

from .classifier import FMNISTClassifier
from .embeddings import TimestepEmbedder, timestep_embedding
from .mlp import MLPDenoiser
from .unet import UNet, UNetConfig

__all__ = ["FMNISTClassifier", "MLPDenoiser", "TimestepEmbedder", "UNet", "UNetConfig", "timestep_embedding"]
