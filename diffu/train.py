"""A plain training loop: AdamW, linear warm-up, EMA, gradient clipping, tqdm, atomic checkpoints and resume.

Checkpoints are ``.safetensors`` files (weights, EMA weights, optimiser moments and RNG states as tensors; the step
in the metadata) written to a temporary file and renamed, so an interrupted run never leaves a half-written
checkpoint. A resumed run ends with exactly the same weights as an uninterrupted one with the same seed
(``tests/test_train.py``). Used to train every shipped model (see :mod:`diffu.recipes`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .schedules import Schedule

__all__ = [
    "TrainConfig",
    "TrainResult",
    "classifier_loss",
    "diffusion_loss",
    "label_kwargs",
    "load_checkpoint",
    "save_checkpoint",
    "seeded",
    "train",
]


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train`. The learning rate is constant after ``warmup`` steps, so a run of
    ``steps = k`` is a prefix of any longer run with the same seed."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-4
    warmup: int = 0
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    seed: int = 0
    ckpt_every: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup < 0 or self.ckpt_every < 0:
            raise ValueError("warmup and ckpt_every must be >= 0")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")


@dataclass
class TrainResult:
    model: torch.nn.Module
    ema: torch.nn.Module | None
    losses: list[float] = field(default_factory=list)
    step: int = 0


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None):
    """Run a block (e.g. a model's random initialisation) with torch's global RNG seeded to ``seed``, restoring the
    caller's RNG state afterwards, so the library never changes the user's global randomness."""
    devices = []
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        devices = [device.index or 0]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # scoped by fork_rng: the global state is put back on exit
        yield


# ----------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------


def label_kwargs(model, y: torch.Tensor | None, p_uncond: float, generator=None) -> dict:
    """``{"y": y}`` with each label replaced by the null class ``model.num_classes`` with probability ``p_uncond``
    (classifier-free guidance training, Ho & Salimans 2022); ``{}`` without labels. Shared by the diffusion and
    flow-matching losses."""
    if y is None:
        return {}
    if p_uncond > 0:
        drop = torch.rand(y.shape[0], generator=generator, device=y.device) < p_uncond
        y = torch.where(drop, torch.full_like(y, model.num_classes), y)
    return {"y": y}


def diffusion_loss(
    model,
    schedule: Schedule,
    x0: torch.Tensor,
    generator=None,
    y: torch.Tensor | None = None,
    p_uncond: float = 0.0,
    model_kwargs: dict | None = None,
) -> torch.Tensor:
    """The simplified DDPM loss ``E_{t, ε} ‖ε - ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, t)‖²`` (Eq. 14 of Ho et al. 2020).

    With labels ``y`` and ``p_uncond > 0`` each label is replaced by the null class ``model.num_classes`` with
    probability ``p_uncond`` (Ho & Salimans 2022), so the same network learns the unconditional model. Other
    conditioning (e.g. caption tokens) goes in ``model_kwargs``.
    """
    if not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = schedule.q_sample(x0, t, noise)
    out = model(x_t, t.to(x0.dtype), **label_kwargs(model, y, p_uncond, generator), **(model_kwargs or {}))
    target = schedule.from_eps(noise, x_t, t, getattr(model, "prediction", "eps"))
    return F.mse_loss(out, target)


def _random_hflip(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Each image flipped left–right with probability ½ (one draw per image from ``generator``)."""
    f = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(f[:, None, None, None], x.flip(-1), x)


def classifier_loss(model, x: torch.Tensor, y: torch.Tensor, generator=None, flip: bool = True) -> torch.Tensor:
    """Cross-entropy with random horizontal flips (used for the FD-FMNIST feature network)."""
    return F.cross_entropy(model(_random_hflip(x, generator) if flip else x), y)


def noisy_classifier_loss(model, schedule: Schedule, x0: torch.Tensor, y: torch.Tensor, generator=None,
                          flip: bool = True) -> torch.Tensor:  # fmt: skip
    """Cross-entropy of a noise-aware classifier ``model(x_t, t)`` on ``x_t = q_sample(x_0, t)`` with ``t`` uniform
    over the schedule's steps (t = 0 is the nearly clean image), as guided-diffusion trains its classifiers
    (``classifier_train.py`` with ``--noised True``); random horizontal flips as in :func:`classifier_loss`."""
    x0 = _random_hflip(x0, generator) if flip else x0
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return F.cross_entropy(model(schedule.q_sample(x0, t, noise), t.to(x0.dtype)), y)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------


def save_checkpoint(
    path, model, ema=None, optimizer=None, generator=None, step=0, losses=(), extra=None, device_generator=None
):
    """Write a safetensors checkpoint atomically (temporary file + ``os.replace``).

    ``generator`` / ``device_generator``: the data-order and (on an accelerator) the loss-noise generators, whose
    states are saved so that a resumed run continues the same random streams."""
    path = Path(path)
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().contiguous().cpu() for k, v in ema.state_dict().items()})
    if optimizer is not None:
        for i, st in optimizer.state_dict()["state"].items():
            for k, v in st.items():
                tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().contiguous().cpu()
    if generator is not None:
        tensors["rng.generator"] = generator.get_state()
    if device_generator is not None:
        tensors["rng.device_generator"] = device_generator.get_state().cpu()
    tensors["rng.torch"] = torch.get_rng_state()
    dev = next(model.parameters()).device
    if dev.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(dev).cpu()
    meta = {
        "step": str(step),
        "losses": json.dumps([round(x, 6) for x in losses]),
        "extra": json.dumps(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_checkpoint(path, model, ema=None, optimizer=None, generator=None, device_generator=None):
    """Restore what :func:`save_checkpoint` wrote; returns ``(step, losses)``."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    dev = next(model.parameters()).device

    def part(prefix):
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    model.load_state_dict(part("model."))
    if ema is not None:
        ema.load_state_dict(part("ema."))
    if optimizer is not None:
        sd = optimizer.state_dict()
        state: dict = {}
        for k, v in part("opt.").items():
            i, name = k.split(".", 1)
            state.setdefault(int(i), {})[name] = v if name == "step" else v.to(dev)
        optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
    if generator is not None and "rng.generator" in tensors:
        generator.set_state(tensors["rng.generator"])
    if device_generator is not None and "rng.device_generator" in tensors:
        device_generator.set_state(tensors["rng.device_generator"])
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and dev.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], dev)
    return int(meta["step"]), json.loads(meta["losses"])


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def _ema_update(ema, model, decay):
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def train(
    model: torch.nn.Module,
    loss_fn: Callable,
    data: Sequence[torch.Tensor],
    config: TrainConfig,
    *,
    checkpoint: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``model`` by minimising ``loss_fn(model, *batch, generator=g)`` over random mini-batches of ``data``.

    Each step draws ``config.batch_size`` indices (with replacement) from one seeded CPU generator, which on the CPU
    also feeds the loss's own randomness (timesteps, noise); on an accelerator the loss gets a second generator on
    that device. Dropout uses torch's global RNG inside a scoped, seeded fork (:func:`seeded`).

    Args:
        model: the network (its device decides where training runs; ``data`` is moved batch by batch).
        loss_fn: ``loss_fn(model, *batch, generator=g) -> scalar``.
        data: tensors with the same first dimension (e.g. ``(images, labels)``).
        config: :class:`TrainConfig`.
        checkpoint: path of a checkpoint written every ``config.ckpt_every`` steps and at the end; with ``resume``
            an existing file there is loaded first and training continues from its step.
        stop_after: stop (after checkpointing) once this many steps are done — simulates an interruption.

    Returns:
        :class:`TrainResult` with the trained model, its EMA copy (or None) and the loss history.
    """
    if not data or any(d.shape[0] != data[0].shape[0] for d in data):
        raise ValueError("data must be a non-empty sequence of tensors with the same first dimension")
    dev = next(model.parameters()).device
    n = data[0].shape[0]
    g = torch.Generator().manual_seed(config.seed)  # batch indices: the data tensors stay where they are (CPU)
    # the loss draws t and noise on the model's device; on the CPU both streams are the same generator
    g_dev = None if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(config.seed)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if config.ema_decay is not None else None
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step, losses = 0, []
    with seeded(config.seed + 1, dev):
        if checkpoint is not None and resume and Path(checkpoint).exists():
            step, losses = load_checkpoint(checkpoint, model, ema, opt, g, g_dev)
            if step > config.steps:
                raise ValueError(f"checkpoint {checkpoint} is at step {step}, beyond config.steps={config.steps}")
        model.train()
        bar = tqdm(total=config.steps, initial=step, disable=not progress, desc="train")
        while step < config.steps:
            idx = torch.randint(0, n, (config.batch_size,), generator=g)
            batch = [d[idx].to(dev) for d in data]
            for group in opt.param_groups:
                group["lr"] = config.lr * min(1.0, (step + 1) / config.warmup) if config.warmup else config.lr
            loss = loss_fn(model, *batch, generator=g if g_dev is None else g_dev)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            if ema is not None:
                _ema_update(ema, model, min(config.ema_decay, (1 + step) / (10 + step)))
            step += 1
            losses.append(loss.item())
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
            done = step == config.steps or (stop_after is not None and step >= stop_after)
            if checkpoint is not None and ((config.ckpt_every and step % config.ckpt_every == 0) or done):
                save_checkpoint(checkpoint, model, ema, opt, g, step, losses, asdict(config), g_dev)
            if done:
                break
        bar.close()
    model.eval()
    return TrainResult(model, ema, losses, step)
