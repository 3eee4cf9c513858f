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

from .checks import (
    check_bool,
    check_callable,
    check_device,
    check_finite,
    check_floating,
    check_generator,
    check_int,
    check_labels,
    check_rank,
    check_real,
    check_tensor,
)
from .sampling import check_schedule
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
    ``steps = k`` is a prefix of any longer run with the same seed.

    Args:
        steps: optimiser steps, an integer >= 1.
        batch_size: images per step (drawn with replacement), an integer >= 1.
        lr: AdamW's learning rate, a finite number > 0.
        warmup: steps of linear learning-rate warm-up, an integer >= 0 (0: none).
        weight_decay: AdamW's weight decay, a finite number >= 0.
        grad_clip: the gradient-norm clip, a finite number > 0, or None (no clipping).
        ema_decay: the EMA decay in [0, 1), or None (no EMA copy).
        seed: the run's seed, an integer in [0, 2**63 - 2].
        ckpt_every: checkpoint every this many steps, an integer >= 0 (0: only at the end).

    Raises:
        ValueError: a field that is not what it says above (``TypeError`` for a field that is not a number).
    """

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
        check_int("steps", self.steps, 1)
        check_int("batch_size", self.batch_size, 1)
        check_real("lr", self.lr, 0, low_open=True)
        check_int("warmup", self.warmup, 0)
        check_real("weight_decay", self.weight_decay, 0)
        if self.grad_clip is not None:
            check_real("grad_clip", self.grad_clip, 0, low_open=True)
        if self.ema_decay is not None:
            check_real("ema_decay", self.ema_decay, 0, 1, high_open=True)
        check_int("seed", self.seed, 0, _MAX_SEED - 1)  # seeded() uses seed + 1
        check_int("ckpt_every", self.ckpt_every, 0)


@dataclass
class TrainResult:
    model: torch.nn.Module
    ema: torch.nn.Module | None
    losses: list[float] = field(default_factory=list)
    step: int = 0


#: The largest seed ``torch.manual_seed`` takes from :func:`seeded` and :class:`TrainConfig` (a signed 64-bit int).
_MAX_SEED = 2**63 - 1


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None):
    """Run a block (e.g. a model's random initialisation) with torch's global RNG seeded to ``seed``, restoring the
    caller's RNG state afterwards, so the library never changes the user's global randomness.

    Args:
        seed: an integer in [0, 2**63 - 1].
        device: a CUDA device whose RNG is forked (and seeded) too; other devices fork only the CPU RNG.
    """
    check_int("seed", seed, 0, _MAX_SEED)
    device = check_device("device", device)
    devices = []
    if device is not None and device.type == "cuda":
        devices = [device.index or 0]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # scoped by fork_rng: the global state is put back on exit
        yield


# ----------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------


def _check_label_tensor(y, n: int | None, name: str = "y") -> None:
    """``y`` is an integer tensor of shape ``(n,)`` (``(N,)`` for any N when ``n`` is None). Metadata only; the range
    is checked where the number of classes is known (:func:`label_kwargs`, the classifier losses' logits)."""
    check_tensor(y, name)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of class indices, got {y.dtype}")
    if y.ndim != 1 or (n is not None and y.shape[0] != n):
        want = "(N,)" if n is None else f"({n},)"
        raise ValueError(f"{name} must have shape {want} (one label per sample), got {tuple(y.shape)}")


def label_kwargs(model, y: torch.Tensor | None, p_uncond: float, generator=None) -> dict:
    """``{"y": y}`` with each label replaced by the null class ``model.num_classes`` with probability ``p_uncond``
    (classifier-free guidance training, Ho & Salimans 2022); ``{}`` without labels. Shared by the diffusion and
    flow-matching losses.

    Args:
        model: the class-conditional network (its ``num_classes`` is the null label; needed when ``p_uncond > 0``).
        y: ``(N,)`` integer labels, or None.
        p_uncond: the label-dropout probability in [0, 1].
        generator: a ``torch.Generator`` (on ``y``'s device) or None.

    Raises:
        ValueError: ``p_uncond`` outside [0, 1], labels that are not an integer ``(N,)`` tensor, labels outside
            ``[0, model.num_classes]`` (the null label included) when the model has an integer ``num_classes``, a
            model without an integer ``num_classes`` when labels are dropped.
        TypeError: a generator that is not a ``torch.Generator``.
    """
    check_real("p_uncond", p_uncond, 0, 1)
    check_generator(generator)
    if y is None:
        return {}
    _check_label_tensor(y, None)
    k = getattr(model, "num_classes", None)
    if isinstance(k, int) and not isinstance(k, bool):  # N labels: a cheap scan, before they reach an embedding
        check_labels(y, k, name="y", null=True)
    if p_uncond > 0:
        if isinstance(k, bool) or not isinstance(k, int):
            raise ValueError(
                f"model must be class-conditional (an int num_classes, the null label) to drop labels with "
                f"p_uncond={p_uncond}, got num_classes={k!r}"
            )
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

    Args:
        model: the network ``model(x_t, t, **cond)`` (its ``prediction`` attribute picks the target; default ε).
        schedule: the :class:`~diffu.schedules.Schedule`.
        x0: a floating-point data batch ``(N, …)``. It is not checked for NaN here (a per-step cost):
            :func:`train` checks its data once, and a NaN loss stops it.
        generator: a ``torch.Generator`` on ``x0``'s device, or None.
        y: ``(N,)`` integer labels or None; p_uncond: the label-dropout probability in [0, 1].
        model_kwargs: a dict of further conditioning, or None.

    Raises:
        ValueError: an integer or 0-d ``x0``, bad labels or ``p_uncond``.
        TypeError: a model that is not callable, a schedule, generator or model_kwargs of the wrong type.
    """
    check_callable("model", model)
    check_schedule(schedule)
    check_floating(x0, "x0")
    if x0.ndim == 0:
        raise ValueError("x0 must have a batch dimension (N, ...), got a 0-d tensor")
    if y is not None:
        _check_label_tensor(y, x0.shape[0])
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs must be a dict or None, got {type(model_kwargs).__name__}")
    check_real("p_uncond", p_uncond, 0, 1)
    check_generator(generator)
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


def _check_classifier_batch(model, x, y, generator, flip, name: str = "x") -> None:
    check_callable("model", model)
    check_rank(x, 4, name, "(N, C, H, W)")
    check_floating(x, name)
    _check_label_tensor(y, x.shape[0])
    check_generator(generator)
    check_bool("flip", flip)


def classifier_loss(model, x: torch.Tensor, y: torch.Tensor, generator=None, flip: bool = True) -> torch.Tensor:
    """Cross-entropy with random horizontal flips (used for the FD-FMNIST feature network).

    Args:
        model: ``model(x) -> (N, K)`` logits.
        x: floating-point images ``(N, C, H, W)``; y: ``(N,)`` integer labels.
        generator: the flips' ``torch.Generator`` (on ``x``'s device) or None; flip: whether to flip.

    NaN or infinity in ``x`` is not checked here (a full pass per training step): it propagates to a NaN loss,
    which stops :func:`train` (and :func:`train` checks its data for NaN once, before the first step).

    Raises:
        ValueError: images that are not a floating ``(N, C, H, W)`` batch, labels that are not an integer ``(N,)``
            tensor, logits that are not ``(N, K)``, labels outside ``[0, K - 1]`` (checked before the
            cross-entropy). TypeError: a model that is not callable, a generator or flag of the wrong type.
    """
    _check_classifier_batch(model, x, y, generator, flip)
    return _cross_entropy(model(_random_hflip(x, generator) if flip else x), y)


def _cross_entropy(logits, y: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(logits, y)`` once the logits are ``(N, K)`` and the labels in ``[0, K - 1]`` (an
    out-of-range label is an ``IndexError`` deep inside torch, or a device-side assert on CUDA)."""
    check_rank(logits, 2, "model(x)", "(N, K) logits")
    check_labels(y, logits.shape[1], logits.shape[0], "y")
    return F.cross_entropy(logits, y)


def noisy_classifier_loss(model, schedule: Schedule, x0: torch.Tensor, y: torch.Tensor, generator=None,
                          flip: bool = True) -> torch.Tensor:  # fmt: skip
    """Cross-entropy of a noise-aware classifier ``model(x_t, t)`` on ``x_t = q_sample(x_0, t)`` with ``t`` uniform
    over the schedule's steps (t = 0 is the nearly clean image), as guided-diffusion trains its classifiers
    (``classifier_train.py`` with ``--noised True``); random horizontal flips as in :func:`classifier_loss`.

    NaN in ``x0`` propagates to the loss, as in :func:`classifier_loss`.

    Raises:
        ValueError, TypeError: as :func:`classifier_loss` (for ``x0``), and for a schedule of the wrong type.
    """
    check_schedule(schedule)
    _check_classifier_batch(model, x0, y, generator, flip, "x0")
    x0 = _random_hflip(x0, generator) if flip else x0
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return _cross_entropy(model(schedule.q_sample(x0, t, noise), t.to(x0.dtype)), y)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------


def _check_checkpoint_objects(model, ema, optimizer, generator, device_generator) -> None:
    """The objects a checkpoint is saved from or loaded into (:func:`save_checkpoint`, :func:`load_checkpoint`)."""
    _check_module("model", model)
    if ema is not None:
        _check_module("ema", ema)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    check_generator(generator)
    check_generator(device_generator, "device_generator")


def save_checkpoint(
    path, model, ema=None, optimizer=None, generator=None, step=0, losses=(), extra=None, device_generator=None
):
    """Write a safetensors checkpoint atomically (temporary file + ``os.replace``).

    Args:
        path: the file to write (a str or path).
        model: the network (a ``torch.nn.Module`` with parameters); ema: its EMA copy or None.
        optimizer: a ``torch.optim.Optimizer`` or None.
        generator, device_generator: the data-order and (on an accelerator) the loss-noise generators (or None),
            whose states are saved so that a resumed run continues the same random streams.
        step: the number of steps done (an integer >= 0); losses: the loss history (numbers).
        extra: a JSON-serialisable dict stored in the metadata, or None.

    Returns:
        The path written.

    Raises:
        TypeError: an argument of the wrong type. ValueError: a ``path`` whose folder does not exist (or that is a
            folder), a negative or fractional step, losses that are not finite numbers.
    """
    path = _check_path("path", path)
    if not path.parent.is_dir():
        raise ValueError(f"path must be a file in an existing folder, got {str(path)!r}: {str(path.parent)!r} is not "
                         "a folder (create it first)")  # fmt: skip
    if path.is_dir():
        raise ValueError(f"path must be a file to write the checkpoint to, got the folder {str(path)!r}")
    _check_checkpoint_objects(model, ema, optimizer, generator, device_generator)
    check_int("step", step, 0)
    losses = list(losses)
    for i, v in enumerate(losses):
        check_real(f"losses[{i}]", v)
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
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
    """Restore what :func:`save_checkpoint` wrote into ``model`` (and ``ema``, ``optimizer``, the generators, when
    given) and torch's global RNG (the training loop calls it inside :func:`seeded`); returns ``(step, losses)``.

    Nothing is changed unless the whole checkpoint fits: the weights of ``model`` (and ``ema``) are checked against
    the file's (names and shapes) before any is loaded.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a file that is not a safetensors file, or has no step and loss metadata of a diffu checkpoint;
            a ``model`` (or ``ema``) whose weights do not match the checkpoint's (another architecture or size).
        TypeError: an argument of the wrong type.
    """
    from safetensors import SafetensorError, safe_open

    path = _check_path("path", path)
    _check_checkpoint_objects(model, ema, optimizer, generator, device_generator)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
    except SafetensorError as err:
        raise ValueError(f"path {str(path)!r} is not a diffu checkpoint (not a safetensors file: {err})") from None
    if not meta or "step" not in meta or "losses" not in meta:
        raise ValueError(f"path {str(path)!r} is not a diffu checkpoint: its metadata has no 'step' and 'losses'")
    tensors = load_file(str(path))
    dev = next(model.parameters()).device

    def part(prefix):
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    _check_state("model", model, part("model."), path)
    if ema is not None:
        _check_state("ema", ema, part("ema."), path)
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


def _check_path(name: str, path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or a path, got {type(path).__name__}")
    return Path(path)


def _check_module(name: str, model) -> None:
    """``model`` is a ``torch.nn.Module`` with at least one parameter (its device is read from them)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    if next(iter(model.parameters()), None) is None:
        raise ValueError(f"{name} must have parameters (its device is read from them), got a {type(model).__name__} "
                         "without any")  # fmt: skip


def _check_state(name: str, module: torch.nn.Module, state: dict, path) -> None:
    """The checkpoint's ``state`` has exactly ``module``'s weight names and shapes (``load_state_dict`` would raise
    a ``RuntimeError`` after copying the weights that do match)."""
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state.items()}
    if own == theirs:
        return
    missing, unexpected = sorted(own.keys() - theirs.keys()), sorted(theirs.keys() - own.keys())
    shapes = [f"{k}: {own[k]} vs {theirs[k]}" for k in sorted(own.keys() & theirs.keys()) if own[k] != theirs[k]]
    what = "; ".join(
        f"{label} {items[:3]}{' …' * (len(items) > 3)}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape (model vs file)", shapes))
        if items
    )
    if not theirs:
        what = f"the file holds no {name} weights"
    raise ValueError(
        f"{name} must be the architecture saved in {str(path)!r} (a {type(module).__name__} whose weights do not "
        f"match the checkpoint's: {what})"
    )


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

    Raises:
        ValueError: data that are not a non-empty sequence of tensors with one non-zero first dimension, data with
            NaN or infinity (checked once here), a model without parameters, a checkpoint beyond ``config.steps``,
            a ``stop_after`` that is not an integer >= 1.
        TypeError: a model, loss, config, checkpoint path or flag of the wrong type.
        FloatingPointError: the loss became NaN or infinite (the step is named).
    """
    _check_module("model", model)
    check_callable("loss_fn", loss_fn)
    if isinstance(data, torch.Tensor) or not isinstance(data, Sequence):
        raise TypeError(
            f"data must be a sequence of tensors such as (images, labels) or (x,), got {type(data).__name__}"
        )
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if checkpoint is not None:
        _check_path("checkpoint", checkpoint)
    check_bool("resume", resume)
    check_bool("progress", progress)
    if stop_after is not None:
        check_int("stop_after", stop_after, 1)
    for i, d in enumerate(data):
        check_tensor(d, f"data[{i}]")
    if not data or any(d.ndim == 0 or d.shape[0] != data[0].shape[0] for d in data) or data[0].shape[0] == 0:
        raise ValueError(
            "data must be a non-empty sequence of tensors with the same first dimension (at least one sample), got "
            f"shapes {[tuple(d.shape) for d in data]}"
        )
    for i, d in enumerate(data):
        check_finite(d, f"data[{i}]")
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
