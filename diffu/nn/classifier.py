"""A small Fashion-MNIST classifier whose penultimate features define FD-FMNIST (chapter §2.2, diffu.metrics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FMNISTClassifier"]


class FMNISTClassifier(nn.Module):
    """conv(32) ×2 → pool → conv(64) ×2 → pool → conv(128) → global average → 128-d features → 10 logits.

    Input ``(N, 1, 28, 28)`` in [-1, 1]. :meth:`features` returns the ``(N, feature_dim)`` vectors whose Fréchet
    distance is our stated stand-in for FID (Inception features are not available offline).
    """

    def __init__(self, width: int = 32, feature_dim: int = 128, num_classes: int = 10):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(), nn.MaxPool2d(2),  # 14×14
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(), nn.MaxPool2d(2),  # 7×7
            nn.Conv2d(2 * w, feature_dim, 3, padding=1), nn.GroupNorm(8, feature_dim), nn.SiLU(),
        )  # fmt: skip
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"x must have shape (N, 1, 28, 28), got {tuple(x.shape)}")
        return F.adaptive_avg_pool2d(self.body(x), 1).flatten(1)  # (N, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, num_classes)
