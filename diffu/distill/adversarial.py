"""Adversarial diffusion distillation (Sauer, Lorenz, Blattmann & Rombach 2023, "Adversarial Diffusion
Distillation", arXiv:2311.17042, §3): a few-step student trained by a GAN loss and a score-distillation loss.

The student ``x̂_θ(x_s, s)`` starts as a copy of the teacher and is trained at ``N = 4`` student timesteps
``τ ∈ {999, 749, 499, 249}`` (:func:`~diffu.distill.distillation_grid`) on *real* images noised to ``τ``,
``x_s = α_τ x_0 + σ_τ ε`` (pure noise at ``τ = T − 1``: zero terminal SNR, since sampling starts from pure noise).
Two losses act on its output (§3.2):

1. **adversarial** — a discriminator made of a frozen feature network ``F`` and one small trainable head ``D_k``
   per feature level (the paper: DINOv2 ViT features; here the frozen teacher UNet's encoder and middle features,
   :func:`unet_encoder_features`), class-conditional by projection; hinge loss::

       L_G^adv = −E[Σ_k D_k(F_k(x̂_θ))]
       L_D     = E[Σ_k max(0, 1 − D_k(F_k(x_0)))] + E[Σ_k max(0, 1 + D_k(F_k(x̂_θ)))] + (γ/2) R1

   with the R1 penalty on the *inputs of the heads* (the paper computes it there, not on pixels);
2. **score distillation** — diffuse the student's output to a teacher timestep ``t``,
   ``x̂_{θ,t} = α_t x̂_θ + σ_t ε'``, let the frozen teacher denoise it (no grad) to ``x̂_ψ`` and pull the student
   towards it with the paper's "exponential" weighting ``c(t) = ᾱ_t``::

       L_distill = E_{t, ε'}[ c(t) ‖x̂_θ − sg(x̂_ψ(x̂_{θ,t}, t))‖² ]

The student minimises ``L = L_G^adv + λ L_distill`` with the paper's ``λ = 2.5``. :class:`AdversarialDistillation`
is that loss as a ``loss_fn`` for :func:`diffu.train.train`; it updates the discriminator itself at every call.
Sampling (:func:`add_sample`) denoises and re-noises on 1–4 of the student's training timesteps.

Chapter §7 (ADD) uses this module.

NaN or inf in an input propagates to the outputs (losses, logits, samples): the functions check shapes and
dtypes, not values, per call; :func:`diffu.train.train` checks its data once and stops on a NaN loss.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..checks import (
    check_bool,
    check_callable,
    check_choice,
    check_finite,
    check_floating,
    check_generator,
    check_int,
    check_real,
)
from ..nn.adapter import adapter_levels
from ..nn.inputs import labels_for
from ..nn.unet import UNet, group_norm
from ..sampling import check_sampler_args, check_schedule, initial_noise
from ..schedules import Schedule
from ..train import label_kwargs, seeded
from .consistency import multistep_sample
from .progressive import check_timesteps, distillation_grid, model_x0

__all__ = ["MODES", "AdversarialDistillation", "FeatureDiscriminator", "add_sample", "add_timesteps", "hinge_d_loss",
           "hinge_g_loss", "r1_penalty", "score_distillation_loss", "unet_encoder_features"]  # fmt: skip

#: The loss switches of :class:`AdversarialDistillation` (the paper's ablation of the loss terms), in order both
#: terms, the adversarial term alone, the distillation term alone.
MODES = ("both", "adversarial", "distillation")


# ----------------------------------------------------------------------------------------------------------------
# The frozen feature network
# ----------------------------------------------------------------------------------------------------------------


class _Enough(Exception):
    """Raised by the last hook: the decoder of the UNet is not run."""


def _check_unet(unet, name: str = "unet") -> None:
    if not isinstance(unet, UNet):
        raise TypeError(f"{name} must be a diffu.nn.UNet, got {type(unet).__name__}")


def _taps(unet: UNet) -> list[nn.Module]:
    """The modules whose outputs are the feature levels: the last layer of each encoder resolution level (the
    points of :func:`~diffu.nn.adapter_levels`) and the last layer of the middle block."""
    positions, _ = adapter_levels(unet)
    # h_0 is conv_in's output, h_p (p ≥ 1) the output of down[p − 1]
    return [unet.conv_in if p == 0 else unet.down[p - 1][-1] for p in positions] + [unet.mid[-1]]


def unet_encoder_features(unet: UNet, x: torch.Tensor, t, y: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The feature maps of a :class:`~diffu.nn.UNet`'s encoder, one per resolution level (after its last block,
    the points of :func:`~diffu.nn.adapter_levels`), and of its middle block, *with* the autograd graph.

    The UNet's own forward pass computes them (read with forward hooks; the decoder is skipped). Unlike
    :func:`diffu.representations.unet_features` (which detaches, for probing), gradients flow back to ``x``, which
    the adversarial loss needs; the network's parameters get gradients only where they require them.

    Args:
        unet: the network (typically frozen: ``requires_grad_(False)``, eval mode).
        x: ``(N, C, H, W)`` the network's input.
        t: the timestep(s) the network receives, a number or ``(N,)``.
        y: ``(N,)`` labels of a class-conditional UNet, or None (its null label).

    Returns:
        ``[F_0, …, F_{L−1}, F_mid]``: ``(N, C_k, H_k, W_k)`` tensors, finest first.

    Raises:
        TypeError: ``unet`` not a :class:`~diffu.nn.UNet`.
        ValueError, TypeError: ``x``, ``t``, ``y`` as the UNet's forward checks them.
    """
    _check_unet(unet)
    taps = _taps(unet)
    feats: dict[int, torch.Tensor] = {}

    def hook(i):
        def save(_module, _inputs, output):
            feats[i] = output
            if len(feats) == len(taps):
                raise _Enough

        return save

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(taps)]
    try:
        unet(x, t, y)
    except _Enough:
        pass
    finally:
        for h in handles:
            h.remove()
    return [feats[i] for i in range(len(taps))]


# ----------------------------------------------------------------------------------------------------------------
# The discriminator
# ----------------------------------------------------------------------------------------------------------------


class _Head(nn.Module):
    """StyleGAN-T's ``DiscHead`` on a 2-D feature map: a 1×1 conv block, a residual 3×3 conv block
    (``(h + f(h))/√2``), then a 1×1 conv to ``cmap_dim`` channels projected on the label's embedding
    (``⟨out, e_y⟩/√cmap_dim`` per position); a single output channel without labels."""

    def __init__(self, channels: int, num_classes: int | None, cmap_dim: int, groups: int):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(channels, channels, 1), group_norm(channels, groups), nn.LeakyReLU(0.2))
        self.res = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), group_norm(channels, groups),
                                 nn.LeakyReLU(0.2))  # fmt: skip
        conditional = num_classes is not None
        self.cls = nn.Conv2d(channels, cmap_dim if conditional else 1, 1)
        self.embed = nn.Embedding(num_classes + 1, cmap_dim) if conditional else None  # last row: the null label

    def forward(self, f: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.main(f)
        h = (h + self.res(h)) / math.sqrt(2)
        out = self.cls(h)  # (N, cmap_dim or 1, H, W)
        if self.embed is not None:
            e = self.embed(y)[:, :, None, None]  # (N, cmap_dim, 1, 1)
            out = (out * e).sum(1, keepdim=True) / math.sqrt(e.shape[1])
        return out.flatten(1)  # (N, H·W): one logit per position


def _drop_features(module, state_dict, prefix, local_metadata):
    """state_dict post-hook: keep only the heads (the frozen feature network is rebuilt from its own weights)."""
    for key in [k for k in state_dict if k.startswith(f"{prefix}unet.")]:
        del state_dict[key]


def _fill_features(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
    """load_state_dict pre-hook: a heads-only state dict leaves the frozen feature network as it is."""
    for k, v in module.unet.state_dict(keep_vars=True).items():
        state_dict.setdefault(f"{prefix}unet.{k}", v.detach())


class FeatureDiscriminator(nn.Module):
    """ADD's discriminator: a frozen feature network ``F`` and one trainable head ``D_k`` per feature level,
    ``disc(x, y=None) -> [D_0(F_0(x), y), …]``, each ``(N, H_k·W_k)`` logits (one per position, StyleGAN-T's
    per-token logits).

    ``F`` is :func:`unet_encoder_features` of ``unet`` at the fixed timestep ``feature_t`` with the null label
    (the features do not see the class; the heads are conditioned by projection on a label embedding, as the
    paper's discriminator is on its text and image embeddings).

    Only the heads are trainable and only their tensors are in ``state_dict()``; ``unet`` is frozen in place
    (``requires_grad_(False)``, kept in eval mode) and rebuilt from its own weights.

    Args:
        unet: the feature network (here the teacher).
        cmap_dim: the projection's embedding width, an integer ≥ 1.
        feature_t: the timestep the features are read at, an integer ≥ 0 (0: the clean-image features).
        seed: seeds the heads' random initialisation (torch's global RNG is forked, not changed).

    The call checks ``x`` as the UNet does and ``y`` (``(N,)`` labels in ``[0, num_classes]``, or None for the null
    label; no labels for an unconditional ``unet``), raising ``ValueError``/``TypeError`` naming the argument.

    Notes:
        StyleGAN-T's heads (which ADD adopts) use spectral-normalised 1-D convolutions over ViT tokens, "local"
        batch normalisation and a kernel-9 residual block. Ours are 2-D (the features are maps): 1×1 and 3×3
        convolutions, GroupNorm in place of the batch-dependent normalisation, no spectral normalisation (the R1
        penalty regularises). DINOv2 is not available here; the frozen teacher's encoder is the feature network.
    """

    def __init__(self, unet: UNet, *, cmap_dim: int = 64, feature_t: int = 0, seed: int = 0):
        super().__init__()
        _check_unet(unet)
        check_int("cmap_dim", cmap_dim, 1)
        check_int("feature_t", feature_t, 0)
        check_int("seed", seed, 0, 2**63 - 2)
        self.unet = unet.requires_grad_(False).eval()
        self.feature_t, self.num_classes = feature_t, unet.num_classes
        _, widths = adapter_levels(unet)
        widths = (*widths, unet.mid[-1].conv2.out_channels)
        p = next(unet.parameters())
        with seeded(seed):
            self.heads = nn.ModuleList(_Head(c, self.num_classes, cmap_dim, unet.config.groups) for c in widths)
        self.heads.to(device=p.device, dtype=p.dtype)
        self.register_state_dict_post_hook(_drop_features)
        self.register_load_state_dict_pre_hook(_fill_features)

    def train(self, mode: bool = True):
        super().train(mode)
        self.unet.eval()  # the frozen network stays in eval mode
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[F_0(x), …, F_mid(x)]`` (:func:`unet_encoder_features` at ``feature_t``, null label), with the graph
        back to ``x``."""
        return unet_encoder_features(self.unet, x, float(self.feature_t))

    def labels(self, y: torch.Tensor | None, n: int, device) -> torch.Tensor | None:
        """``y`` checked (``(n,)`` in ``[0, num_classes]``), the null labels for None; None without classes."""
        return labels_for(y, self.num_classes, n, device, owner="this FeatureDiscriminator")

    def head_logits(self, features: Sequence[torch.Tensor], y: torch.Tensor | None) -> list[torch.Tensor]:
        """The heads on given features (from :meth:`features`; ``y`` already through :meth:`labels`)."""
        if len(features) != len(self.heads):
            raise ValueError(f"features must hold {len(self.heads)} feature maps, got {len(features)}")
        return [head(f, y) for head, f in zip(self.heads, features)]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        self.unet.check_input(x)
        return self.head_logits(self.features(x), self.labels(y, x.shape[0], x.device))


# ----------------------------------------------------------------------------------------------------------------
# The losses
# ----------------------------------------------------------------------------------------------------------------


def _as_heads(logits, name: str) -> list[torch.Tensor]:
    items = [logits] if isinstance(logits, torch.Tensor) else logits
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(v, torch.Tensor) for v in items):
        raise TypeError(f"{name} must be a tensor or a non-empty list of tensors (one per head), got "
                        f"{type(logits).__name__}")  # fmt: skip
    for v in items:
        check_floating(v, name)
        if v.ndim == 0:
            raise ValueError(f"{name} must have a batch dimension (N, …), got a 0-d tensor")
    return list(items)


def hinge_d_loss(real_logits, fake_logits) -> torch.Tensor:
    """The discriminator's hinge loss, ``Σ_k mean relu(1 − D_k(real)) + Σ_k mean relu(1 + D_k(fake))`` (§3.2 of
    Sauer et al. 2023 without R1; Lim & Ye 2017), the mean over samples and positions of each head.

    Args:
        real_logits, fake_logits: a tensor ``(N, …)`` or a list of them, one per head (the same number of heads).

    Returns:
        A scalar.

    Raises:
        TypeError, ValueError: not floating tensors with a batch dimension, different numbers of heads.
    """
    real, fake = _as_heads(real_logits, "real_logits"), _as_heads(fake_logits, "fake_logits")
    if len(real) != len(fake):
        raise ValueError(f"fake_logits must have as many heads as real_logits ({len(real)}), got {len(fake)}")
    return sum(torch.relu(1 - r).mean() + torch.relu(1 + f).mean() for r, f in zip(real, fake))


def hinge_g_loss(fake_logits) -> torch.Tensor:
    """The generator's hinge loss, ``−Σ_k mean D_k(fake)`` (§3.2 of Sauer et al. 2023).

    Args:
        fake_logits: a tensor ``(N, …)`` or a list of them, one per head.

    Raises:
        TypeError, ValueError: not floating tensors with a batch dimension.
    """
    return -sum(f.mean() for f in _as_heads(fake_logits, "fake_logits"))


def r1_penalty(logits, features) -> torch.Tensor:
    """The R1 gradient penalty on the heads' inputs, ``Σ_k E_n ‖∇_{F_k} Σ_positions D_k(F_k)_n‖²`` (Mescheder et
    al. 2018, Eq. (9) without γ/2; ADD takes the gradient with respect to each head's input, not the pixels).

    Args:
        logits: ``[D_0, …]`` per-head logits ``(N, …)`` computed from ``features``.
        features: ``[F_0, …]`` the heads' inputs, leaf tensors with ``requires_grad`` (real data's features,
            detached from the feature network).

    Returns:
        A scalar with its graph (``create_graph=True``), so it can be added to the discriminator's loss.

    Raises:
        TypeError, ValueError: not lists of floating tensors of the same length; features that do not require grad.
    """
    logits, features = _as_heads(logits, "logits"), _as_heads(features, "features")
    if len(logits) != len(features):
        raise ValueError(f"features must hold one tensor per head ({len(logits)}), got {len(features)}")
    if not all(f.requires_grad for f in features):
        raise ValueError("features must require grad (detach them and call requires_grad_())")
    grads = torch.autograd.grad(sum(v.sum() for v in logits), features, create_graph=True)
    return sum(g.pow(2).flatten(1).sum(1).mean() for g in grads)


def score_distillation_loss(x_student: torch.Tensor, teacher: Callable, schedule: Schedule, *,
                            model_kwargs: dict | None = None, t=None, t_min: int = 0, t_max: int | None = None,
                            generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """ADD's score-distillation loss (§3.2 of Sauer et al. 2023) with the exponential weighting ``c(t) = ᾱ_t`` and
    the squared L2 distance:
    ``mean_n ᾱ_{t_n} · mean_pixels (x̂_θ − sg(x̂_ψ))²`` with ``x̂_ψ = x̂_0^teacher(√ᾱ_t sg(x̂_θ) + √(1 − ᾱ_t) ε', t)``.

    Args:
        x_student: ``(N, …)`` the student's x̂_θ (with its graph).
        teacher: ``teacher(x, t, **model_kwargs)`` (ε, x_0, v or score by its ``prediction``); run without grad.
        schedule: the teacher's schedule.
        model_kwargs: the teacher's conditioning (labels).
        t: ``(N,)`` integer teacher timesteps (a tensor), or None to draw them uniformly from ``[t_min, t_max]``.
        t_min, t_max: the range of drawn timesteps (``t_max`` None: ``T − 1``).
        generator: draws ``t`` and ``ε'``.

    Returns:
        A scalar; its gradient reaches ``x_student`` only through the first term.

    Raises:
        TypeError, ValueError: ``teacher`` not callable, ``x_student`` not floating, timesteps out of range or of
            another batch size, ``t_min > t_max``.
    """
    check_callable("teacher", teacher)
    check_schedule(schedule)
    check_floating(x_student, "x_student")
    if hasattr(teacher, "check_input"):  # images the teacher takes
        teacher.check_input(x_student, "x_student")
    check_generator(generator)
    t_max = schedule.T - 1 if t_max is None else t_max
    check_int("t_max", t_max, 0, schedule.T - 1)
    check_int("t_min", t_min, 0, t_max)
    n, dev = x_student.shape[0], x_student.device
    if t is None:
        t = torch.randint(t_min, t_max + 1, (n,), generator=generator, device=dev)
    t = check_timesteps(schedule, t, x_student, "t", x_name="x_student").to(dev)
    noise = torch.randn(x_student.shape, generator=generator, device=dev, dtype=x_student.dtype)
    with torch.no_grad():
        target = model_x0(teacher, schedule.q_sample(x_student.detach(), t, noise), t, schedule, model_kwargs)
    c = schedule.alpha_bar[t.cpu()].to(device=dev, dtype=x_student.dtype)  # c(t) = ᾱ_t, "exponential"
    return (c * (x_student - target).pow(2).flatten(1).mean(1)).mean()


# ----------------------------------------------------------------------------------------------------------------
# The training loss
# ----------------------------------------------------------------------------------------------------------------


def _mean_logit(logits: list[torch.Tensor]) -> float:
    """The mean of all heads' logits (the "D(real)"/"D(fake)" of a training curve)."""
    return float(torch.cat([v.detach().flatten() for v in logits]).mean())


class AdversarialDistillation:
    """ADD's training loss as a ``loss_fn`` for :func:`diffu.train.train` (module docstring), holding the frozen
    teacher, the :class:`FeatureDiscriminator` and its optimiser.

    ``loss(student, x0, y=None, generator=g)``:

    1. draws a student timestep ``τ`` of ``distillation_grid(T, steps)`` per sample and ``x_s = q(x_0, τ)``
       (pure noise at ``τ = T − 1`` with ``zero_terminal``), labels dropped with ``p_uncond``;
    2. ``x̂_θ = x̂_0^student(x_s, τ)`` (one student evaluation, with grad);
    3. (modes "both", "adversarial") one discriminator step on ``x_0`` vs ``sg(x̂_θ)``: hinge loss plus
       ``(r1_gamma/2) · R1`` (:func:`r1_penalty` on the real features), AdamW on the heads only;
    4. ``L_G^adv = −Σ_k mean D_k(F_k(x̂_θ))`` with the *updated* heads (their parameters take no gradient from it);
    5. ``L_distill`` (:func:`score_distillation_loss`; computed without grad in mode "adversarial", for the record);
    6. returns ``L_G^adv + λ L_distill`` ("both"), ``L_G^adv`` ("adversarial") or ``λ L_distill`` ("distillation").

    Every mode draws the same random numbers in the same order, so for one generator seed the three returned losses
    satisfy ``both = adversarial + distillation`` exactly. Each call appends
    ``{"d_loss", "r1", "g_adv", "distill", "d_real", "d_fake"}`` (floats; NaN where the mode has no discriminator)
    to :attr:`history`: ``d_real``/``d_fake`` are the mean logits on real data and on the student's output, which
    show whether the discriminator stays balanced.

    Args:
        teacher: the frozen teacher (ε, x_0 or v by its ``prediction``; a
            :class:`~diffu.guidance.ClassifierFreeGuidance` wrapper gives guided targets).
        schedule: the teacher's schedule.
        feature_net: the discriminator's feature network (default ``teacher``, which must then be a
            :class:`~diffu.nn.UNet`); frozen in place.
        mode: one of :data:`MODES`.
        steps: the number of student timesteps (4 in the paper).
        distill_weight: λ > 0 (2.5 in the paper).
        r1_gamma: γ ≥ 0 of the R1 penalty (the paper: 10⁻⁵; 0 switches it off).
        d_lr, d_betas, d_weight_decay: the discriminator's AdamW.
        cmap_dim, feature_t: see :class:`FeatureDiscriminator`.
        t_min, t_max: the teacher timesteps of the distillation loss (default the whole range).
        p_uncond: label-dropout probability (as :func:`diffu.train.diffusion_loss`).
        zero_terminal: feed pure noise (not ``q(x_0, T − 1)``) at ``τ = T − 1``.
        seed: seeds the heads' initialisation.

    Raises:
        TypeError, ValueError: (construction) an argument outside the domain above, named in the message; (call) a
            student that is not callable, ``x0`` that is not a finite image batch of the feature network's shape,
            bad labels or generator.
        FloatingPointError: (call) a non-finite discriminator loss; the discriminator is then left unchanged.

    The discriminator and its optimiser state move to the data's device at the first call (with the teacher if it
    is an ``nn.Module``). They are not part of :func:`diffu.train.train`'s checkpoint: save
    :meth:`state_dict` yourself; a run resumed from a train checkpoint restarts them from ``seed``.

    Notes:
        Deviations from the paper: the discriminator's features are the teacher UNet's (not DINOv2); the heads are
        2-D convolutional (see :class:`FeatureDiscriminator`); the discriminator is updated *inside* the student's
        loss call, before the student's step, on the current batch (one D step per G step); the distance ``d`` is
        the mean squared pixel error (its scale is what λ balances); the score-distillation teacher is unguided
        unless a guided one is passed; the student is conditioned on the
        class label (the paper: text), as are the discriminator heads (the paper: text and image embeddings).
    """

    def __init__(self, teacher: Callable, schedule: Schedule, *, feature_net: UNet | None = None, mode: str = "both",
                 steps: int = 4, distill_weight: float = 2.5, r1_gamma: float = 1e-5, d_lr: float = 1e-4,
                 d_betas: tuple = (0.0, 0.99), d_weight_decay: float = 0.0, cmap_dim: int = 64, feature_t: int = 0,
                 t_min: int = 0, t_max: int | None = None, p_uncond: float = 0.0, zero_terminal: bool = True,
                 seed: int = 0):  # fmt: skip
        check_callable("teacher", teacher)
        check_schedule(schedule)
        feature_net = teacher if feature_net is None else feature_net
        _check_unet(feature_net, "feature_net")
        check_choice("mode", mode, MODES)
        check_int("steps", steps, 1, schedule.T)
        check_real("distill_weight", distill_weight, 0, low_open=True)
        check_real("r1_gamma", r1_gamma, 0)
        check_real("d_lr", d_lr, 0, low_open=True)
        if not isinstance(d_betas, (tuple, list)) or len(d_betas) != 2:
            raise ValueError(f"d_betas must be a pair of numbers in [0, 1), got {d_betas!r:.60}")
        for b in d_betas:
            check_real("d_betas", b, 0, 1, high_open=True)
        check_real("d_weight_decay", d_weight_decay, 0)
        t_max = schedule.T - 1 if t_max is None else t_max
        check_int("t_max", t_max, 0, schedule.T - 1)
        check_int("t_min", t_min, 0, t_max)
        check_real("p_uncond", p_uncond, 0, 1)
        check_bool("zero_terminal", zero_terminal)
        self.teacher, self.schedule, self.mode = teacher, schedule, mode
        self.grid = distillation_grid(schedule.T, steps)
        self.distill_weight, self.r1_gamma, self.p_uncond = distill_weight, r1_gamma, p_uncond
        self.t_min, self.t_max, self.zero_terminal = t_min, t_max, zero_terminal
        self.discriminator = FeatureDiscriminator(feature_net, cmap_dim=cmap_dim, feature_t=feature_t, seed=seed)
        self.optimizer = torch.optim.AdamW(self.discriminator.heads.parameters(), lr=d_lr, betas=tuple(d_betas),
                                           weight_decay=d_weight_decay)  # fmt: skip
        self.history: list[dict] = []

    def state_dict(self) -> dict:
        """The discriminator's heads, its optimiser's state, and the length of :attr:`history`."""
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict(),
                "calls": len(self.history)}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned, as a copy (the history itself is not restored)."""
        if not isinstance(state, dict) or not {"discriminator", "optimizer"} <= set(state):
            raise ValueError("state must be a dict from AdversarialDistillation.state_dict()")
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))  # never share moments with the source

    def _to(self, device: torch.device) -> None:
        if next(self.discriminator.heads.parameters()).device == device:
            return
        self.discriminator.to(device)
        if isinstance(self.teacher, nn.Module):
            self.teacher.to(device)
        for st in self.optimizer.state.values():
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and k != "step":
                    st[k] = v.to(device)

    def _discriminator_step(self, x0, fake_feats, y) -> dict:
        """One AdamW step of the heads on real ``x0`` vs the (detached) features of the student's output."""
        disc = self.discriminator
        with torch.no_grad():
            real_feats = disc.features(x0)
        real_feats = [f.detach().requires_grad_(self.r1_gamma > 0) for f in real_feats]
        real = disc.head_logits(real_feats, y)
        fake = disc.head_logits([f.detach() for f in fake_feats], y)
        d_loss = hinge_d_loss(real, fake)
        r1 = r1_penalty(real, real_feats) if self.r1_gamma > 0 else torch.zeros((), device=x0.device)
        total = d_loss + self.r1_gamma / 2 * r1
        if not math.isfinite(total.item()):
            raise FloatingPointError(f"the discriminator's loss became {total.item()} (the student's output is not "
                                     "finite?); the discriminator was not updated")  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"d_loss": d_loss.item(), "r1": r1.item(), "d_real": _mean_logit(real), "d_fake": _mean_logit(fake)}

    def __call__(self, student, x0: torch.Tensor, y: torch.Tensor | None = None, *, generator=None) -> torch.Tensor:
        check_callable("student", student)
        self.discriminator.unet.check_input(x0, "x0")  # images the feature network (and the teacher) take
        check_finite(x0, "x0")  # NaN would reach the discriminator's weights
        check_generator(generator)
        n, dev, sch = x0.shape[0], x0.device, self.schedule
        self._to(dev)
        # 1. student timesteps τ and inputs x_s = q(x_0, τ) (pure noise at τ = T − 1 with zero_terminal)
        k = torch.randint(0, len(self.grid), (n,), generator=generator, device=dev).cpu()
        tau = self.grid[k].to(dev)
        eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
        x_s = sch.q_sample(x0, tau, eps)
        if self.zero_terminal:
            x_s = torch.where((tau == sch.T - 1).reshape(-1, *[1] * (x0.ndim - 1)), eps, x_s)
        kw = label_kwargs(student, y, self.p_uncond, generator)
        # 2. the student's one-step output x̂_θ
        x_hat = model_x0(student, x_s, tau, sch, kw)
        rec = dict.fromkeys(("d_loss", "r1", "g_adv", "d_real", "d_fake"), math.nan)
        g_adv = None
        if self.mode != "distillation":
            disc = self.discriminator
            yd = disc.labels(kw.get("y") if disc.num_classes is not None else None, n, dev)
            fake_feats = disc.features(x_hat)  # with the graph back to the student
            rec.update(self._discriminator_step(x0, fake_feats, yd))  # 3. one D step
            disc.heads.requires_grad_(False)  # 4. the student's adversarial loss: no gradient for the heads
            try:
                g_adv = hinge_g_loss(disc.head_logits(fake_feats, yd))
            finally:
                disc.heads.requires_grad_(True)
            rec["g_adv"] = g_adv.item()
        # 5. score distillation against the frozen teacher
        with torch.set_grad_enabled(self.mode != "adversarial" and torch.is_grad_enabled()):
            distill = score_distillation_loss(x_hat, self.teacher, sch, model_kwargs=kw, t_min=self.t_min,
                                              t_max=self.t_max, generator=generator)  # fmt: skip
        rec["distill"] = distill.item()
        self.history.append(rec)
        # 6. the switch of the paper's ablation
        if self.mode == "adversarial":
            return g_adv
        if self.mode == "distillation":
            return self.distill_weight * distill
        return g_adv + self.distill_weight * distill


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------


def add_timesteps(T: int, steps: int, grid_steps: int = 4) -> list[int]:
    """The timesteps of ``steps``-step ADD sampling: ``steps`` evenly spaced points (by index, rounded half up,
    starting at the first) of the student's training grid ``distillation_grid(T, grid_steps)``.

    With ``T = 1000`` and the paper's 4-point grid ``[999, 749, 499, 249]``: 1 step ``[999]``, 2 steps
    ``[999, 499]``, 3 steps ``[999, 749, 249]``, 4 steps the whole grid — always timesteps the student was trained
    at (1, 2 and 4 steps coincide with ``distillation_grid(T, steps)``).

    Raises:
        ValueError: ``T`` not an integer ≥ 1, ``grid_steps`` not in ``[1, T]``, ``steps`` not in ``[1, grid_steps]``.
    """
    check_int("T", T, 1)
    check_int("grid_steps", grid_steps, 1, T)
    check_int("steps", steps, 1, grid_steps)
    grid = distillation_grid(T, grid_steps)
    return [int(grid[(2 * i * grid_steps + steps) // (2 * steps)]) for i in range(steps)]


def add_sample(model: Callable, x_T, schedule: Schedule, *, steps: int = 1, grid_steps: int = 4,
               model_kwargs: dict | None = None, generator: torch.Generator | None = None, progress: bool = False,
               clip: bool = True) -> torch.Tensor:  # fmt: skip
    """ADD sampling (Sauer et al. 2023, §3): ``x̂ = x̂_θ(x_T, 999)``, then re-noise to the next timestep of
    :func:`add_timesteps` and denoise again (:func:`~diffu.distill.multistep_sample`); NFE = ``steps``.

    Args:
        model: the student (read through :func:`~diffu.distill.model_x0`).
        x_T: initial noise ``(N, …)`` or a shape (standard normal, drawn from ``generator``).
        schedule: the schedule the student was trained on.
        steps: 1 to ``grid_steps`` evaluations.
        grid_steps: the size of the student's training grid (4 in the paper).
        model_kwargs: the model's conditioning (labels).
        generator: draws ``x_T`` (for a shape) and the re-noising noise.
        clip: clip every x̂ to [−1, 1].

    Returns:
        ``x̂`` like ``x_T``.

    Raises:
        TypeError, ValueError: as :func:`~diffu.distill.multistep_sample` and :func:`add_timesteps`.
    """
    check_sampler_args(model, generator=generator, progress=progress, model_kwargs=model_kwargs)
    check_schedule(schedule)
    check_int("grid_steps", grid_steps, 1, schedule.T)
    ts = add_timesteps(schedule.T, steps, grid_steps)
    x = initial_noise(x_T, generator, model=model)

    def denoise(x_t, t):
        return model_x0(model, x_t, t, schedule, model_kwargs)

    return multistep_sample(denoise, x, schedule, ts, generator=generator, progress=progress, clip=clip,
                            desc=f"ADD-{steps}")  # fmt: skip
