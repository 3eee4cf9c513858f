"""The few-step student of chapter §7 (distillation): a copy of the ε-prediction UNet with a second, direct x̂_0 head.

An ε-prediction network cannot be a one- or two-step sampler: at the noisiest timestep of the linear schedule
(√ᾱ ≈ 0.006) the clean image ``x̂_0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ`` multiplies any error in ε̂ by about 150. Salimans &
Ho 2022 (§4, "Parameterization") therefore distil into students that predict x, v or a mixture. :class:`StudentUNet`
keeps the teacher's ε head (so it starts from everything the teacher knows) and adds a head ``D`` that predicts
x_0 directly; the two are mixed with the weights the noise level itself gives::

    x̂_0 = ᾱ_t · (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t + (1 − ᾱ_t) · D

so the ε route dominates where it is well conditioned (ᾱ near 1) and ``D`` where it is not (ᾱ near 0). Written as
a v-prediction (``v = √ᾱ ε − √(1−ᾱ) x_0``, Salimans & Ho Eq. (5)) the output is ``v̂ = √ᾱ_t ε̂ − √(1−ᾱ_t) D``,
whose ``x̂_0 = √ᾱ_t x_t − √(1−ᾱ_t) v̂`` is exactly the mixture above, with a gain of at most 1 on either head.
Every sampler reads it through ``prediction = "v"``.

:meth:`StudentUNet.from_teacher` copies a trained ε UNet into the ε head and starts ``D`` at zero (its output
convolution's new channels are zero), so at initialisation x̂_0 = ᾱ_t x̂_0^teacher: the teacher itself where
ᾱ_t ≈ 1, 0 (mid-grey) where ᾱ_t ≈ 0 (where the teacher's own x̂_0 is the amplified noise described above).

NaN or inf in the input propagates to the output: forward checks shapes and dtypes only (:mod:`diffu.nn.inputs`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from ..checks import check_int
from ..schedules import make_schedule
from .inputs import make_config, timesteps_for
from .unet import UNet, UNetConfig

__all__ = ["StudentUNet", "StudentUNetConfig"]


@dataclass
class StudentUNetConfig(UNetConfig):
    """Hyper-parameters of :class:`StudentUNet`: the fields of :class:`~diffu.nn.UNetConfig` (``out_channels`` is
    the image's channels; the network inside has twice as many, ε̂ and D), plus the noise schedule that mixes the
    two heads: ``schedule`` (a name :func:`diffu.schedules.make_schedule` knows) over ``T`` steps. ``prediction``
    must be "eps": it names what the inner network's first head predicts (the student itself outputs v).
    """

    schedule: str = "linear"
    T: int = 1000

    def __post_init__(self):
        super().__post_init__()
        check_int("T", self.T, 2)
        try:
            make_schedule(self.schedule, self.T)
        except (TypeError, ValueError) as err:
            raise ValueError(f"schedule must name a schedule of diffu.schedules.make_schedule: {err}") from None
        if self.prediction != "eps":
            raise ValueError(f"prediction must be 'eps' (the inner network's first head), got {self.prediction!r}")

    def to_dict(self):
        return asdict(self)

    def unet_config(self) -> UNetConfig:
        """The inner network's :class:`~diffu.nn.UNetConfig` (two heads: ``2 · out_channels`` channels)."""
        kw = {f.name: getattr(self, f.name) for f in fields(UNetConfig)}
        return UNetConfig(**{**kw, "out_channels": 2 * self.out_channels})


class StudentUNet(nn.Module):
    """``model(x_t, t, y=None) -> v̂ = √ᾱ_t ε̂ − √(1−ᾱ_t) D`` (``prediction = "v"``), see the module docstring.

    ``t`` is a float timestep ``(N,)`` in ``[0, T − 1]``; fractional values read ᾱ from
    :meth:`~diffu.schedules.Schedule.interp_alpha_bar` (exact at integers), so consistency models can query any
    noise level between the training grid's points.

    Args:
        config: a :class:`StudentUNetConfig`, or None and its fields as keyword arguments (not both).
        teacher: optional network to start from (see :meth:`from_teacher`; the shipped students name it as a
            manifest component, so that :func:`diffu.pretrained.build` starts where training started).

    The call checks ``x``, ``t`` and ``y`` as :class:`~diffu.nn.UNet` does and ``t`` against ``[0, T − 1]``,
    raising ``ValueError``/``TypeError`` naming the argument.
    """

    #: Constructor arguments that are networks the student starts from, not parts it holds (a manifest names its
    #: teacher as a component so that :func:`diffu.pretrained.build` starts where training started).
    INIT_COMPONENTS = ("teacher",)

    def __init__(self, config: StudentUNetConfig | None = None, teacher: nn.Module | None = None, **kwargs):
        super().__init__()
        cfg = make_config(StudentUNetConfig, config, kwargs)
        self.config = cfg
        self.net = UNet(cfg.unet_config())
        self.schedule = make_schedule(cfg.schedule, cfg.T)
        self.prediction = "v"
        self.num_classes = cfg.num_classes
        if teacher is not None:
            self._copy_from(teacher)

    def _copy_from(self, teacher: nn.Module) -> None:
        """Start from ``teacher``: an ε :class:`~diffu.nn.UNet` fills the ε head (the D head starts at zero); a
        :class:`StudentUNet` of the same config is copied whole (the next round of progressive distillation)."""
        if isinstance(teacher, StudentUNet):
            if teacher.config != self.config:
                raise ValueError("teacher must be a StudentUNet with this config, got another config")
            self.load_state_dict({k: v.detach().clone() for k, v in teacher.state_dict().items()})
            return
        if not isinstance(teacher, UNet):
            raise TypeError(f"teacher must be a diffu.nn.UNet or a StudentUNet, got {type(teacher).__name__}")
        if teacher.prediction != "eps":
            raise ValueError(f"teacher must predict 'eps', got prediction={teacher.prediction!r}")
        if teacher.config.to_dict() != {f.name: getattr(self.config, f.name) for f in fields(UNetConfig)}:
            raise ValueError("teacher must have this student's UNet config (StudentUNet.from_teacher builds one)")
        state = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
        c = teacher.config.out_channels
        for name in ("conv_out.weight", "conv_out.bias"):  # the D head: c more output channels, all zero
            state[name] = torch.cat([state[name], torch.zeros_like(state[name][:c])])
        self.net.load_state_dict(state)
        p = next(teacher.parameters())
        self.to(device=p.device, dtype=p.dtype)

    @property
    def null_class(self) -> int | None:
        return self.num_classes

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """The inner UNet's :meth:`~diffu.nn.UNet.check_input`."""
        self.net.check_input(x, name)

    @classmethod
    def from_teacher(cls, teacher: nn.Module, schedule: str = "linear", T: int = 1000) -> StudentUNet:
        """A student whose ε head is a copy of the ε UNet ``teacher`` and whose D head starts at zero; or a copy
        of a ``StudentUNet`` teacher (``schedule`` and ``T`` are then its own).

        Args:
            teacher: a :class:`~diffu.nn.UNet` predicting ε, or a :class:`StudentUNet` (not modified).
            schedule, T: the schedule the ε teacher was trained with (they mix the heads).

        Raises:
            TypeError: ``teacher`` neither a :class:`~diffu.nn.UNet` nor a :class:`StudentUNet`.
            ValueError: an ε teacher that does not predict ε.
        """
        if isinstance(teacher, StudentUNet):
            return cls(teacher.config, teacher=teacher)
        if not isinstance(teacher, UNet):
            raise TypeError(f"teacher must be a diffu.nn.UNet or a StudentUNet, got {type(teacher).__name__}")
        if teacher.prediction != "eps":
            raise ValueError(f"teacher must predict 'eps', got prediction={teacher.prediction!r}")
        return cls(StudentUNetConfig(**teacher.config.to_dict(), schedule=schedule, T=T), teacher=teacher)

    def alpha_bar(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ᾱ at the (possibly fractional) timesteps ``t`` ``(N,)``, shaped ``(N, 1, 1, 1)`` like ``x``."""
        ab = self.schedule.interp_alpha_bar(t.detach())
        return ab.reshape(-1, *([1] * (x.ndim - 1))).to(device=x.device, dtype=x.dtype)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x)
        t = timesteps_for(t, x.shape[0], x.device)
        if t.numel() and (float(t.min()) < 0 or float(t.max()) > self.config.T - 1):
            raise ValueError(
                f"t must lie in [0, {self.config.T - 1}], got values in [{float(t.min())}, {float(t.max())}]"
            )
        ab = self.alpha_bar(t, x)  # (N, 1, 1, 1)
        eps, d = self.net(x, t, y).chunk(2, dim=1)  # (N, C, H, W) each
        return ab.sqrt() * eps - (1 - ab).sqrt() * d
