"""An MLP denoiser for 2D toy data (chapter §2.1).

NaN or inf in the input (``x`` or ``t``) propagates to the output: forward checks shapes and dtypes only
(:mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_choice, check_int, check_real
from .embeddings import timestep_embedding
from .inputs import check_input, labels_for, timesteps_for

__all__ = ["MLPDenoiser"]


class MLPDenoiser(nn.Module):
    """``model(x_t, t, y=None) -> ε̂`` for ``(N, D)`` data: [x_t, sinusoidal(t)] → ``depth`` hidden SiLU layers → D.

    Args:
        dim: D, an integer ≥ 1.
        hidden: the hidden width, an integer ≥ 1.
        depth: the number of hidden layers, an integer ≥ 1.
        t_dim: the size of the timestep embedding, an integer ≥ 2.
        num_classes: None (unconditional) or the number of classes, an integer ≥ 1; the label ``num_classes`` is
            the null label (``y=None`` uses it).
        prediction: "eps" (DDPM, §2.1), "x0", "v", "velocity" (flow matching) or "score".
        time_scale: multiplies t before the embedding, a finite number > 0 (1000 for continuous ``t ∈ [0, 1]``).

    The call takes a float ``x`` ``(N, D)``, ``t`` a number or ``(N,)``, and for a conditional network optional
    integer labels ``y`` ``(N,)`` in ``[0, num_classes]``; labels given to an unconditional network, like every
    other bad input, raise ``ValueError`` naming the argument.
    """

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
        """See the class; ``time_scale = 1000`` for continuous ``t ∈ [0, 1]`` (§2.5)."""
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth)):
            check_int(name, value, 1)
        check_int("t_dim", t_dim, 2)
        if num_classes is not None:
            check_int("num_classes", num_classes, 1)
        check_choice("prediction", prediction, ("eps", "x0", "v", "velocity", "score"))
        check_real("time_scale", time_scale, 0, low_open=True)
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

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError``/``TypeError`` naming ``name`` unless ``x`` is a float ``(N, dim)`` (what
        :meth:`forward` checks first; the guidance wrappers call it before matching labels to ``x``)."""
        check_input(x, (self.dim,), name)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x)
        t = timesteps_for(t, x.shape[0], x.device)
        y = labels_for(y, self.num_classes, x.shape[0], x.device, owner="this MLPDenoiser")
        # t is in [0, T); scaling keeps the sinusoid's lowest frequencies informative for T = 1000
        emb = timestep_embedding(t * self.time_scale, self.t_dim, max_period=1000.0).to(x.dtype)  # (N, t_dim)
        if y is not None:
            emb = emb + self.label_emb(y)
        return self.net(torch.cat([x, emb], dim=1))  # (N, D)
