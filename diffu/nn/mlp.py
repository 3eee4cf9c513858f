"""An MLP denoiser for 2D toy data (chapter §2.1)."""

from __future__ import annotations

import torch
from torch import nn

from .embeddings import timestep_embedding

__all__ = ["MLPDenoiser"]


class MLPDenoiser(nn.Module):
    """``model(x_t, t) -> ε̂`` for ``(N, D)`` data: [x_t, sinusoidal(t)] → ``depth`` hidden SiLU layers → D."""

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 128,
        depth: int = 3,
        t_dim: int = 32,
        num_classes=None,
        prediction: str = "eps",
        time_scale: float = 1.0,
    ):
        """``prediction``: "eps" (DDPM, §2.1), "velocity" (flow matching) or "score"; ``time_scale`` multiplies t
        before the embedding — use 1000 for continuous ``t ∈ [0, 1]`` (§2.5)."""
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"dim, hidden and depth must be >= 1, got {dim}, {hidden}, {depth}")
        if prediction not in ("eps", "x0", "v", "velocity", "score"):
            raise ValueError(f"prediction must be 'eps', 'x0', 'v', 'velocity' or 'score', got {prediction!r}")
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.prediction, self.time_scale = prediction, float(time_scale)
        self.dim, self.t_dim, self.num_classes = dim, t_dim, num_classes
        layers, cin = [], dim + t_dim
        for _ in range(depth):
            layers += [nn.Linear(cin, hidden), nn.SiLU()]
            cin = hidden
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes + 1, t_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        # t is in [0, T); scaling keeps the sinusoid's lowest frequencies informative for T = 1000
        emb = timestep_embedding(t * self.time_scale, self.t_dim, max_period=1000.0).to(x.dtype)  # (N, t_dim)
        if self.num_classes is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.label_emb(y)
        return self.net(torch.cat([x, emb], dim=1))  # (N, D)
