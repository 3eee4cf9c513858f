"""Notebook scaffolding for the chapters (``book/``) and labs (``labs/``): one call sets up a chapter, plus the two
helpers that chapters used to copy into their setup cells (null labels, committed benchmark results).

A chapter's setup cell is then a few lines::

    from diffu.book import setup

    DEVICE, FAST, SEED, gen = setup(threads=2)

``DEVICE`` is :func:`diffu.device`, ``FAST`` is true on a CPU (the chapter picks its small configuration), ``SEED``
the chapter's seed and ``gen(k)`` a fresh generator seeded with ``SEED + k``, so every random draw of a page is
reproducible on its own (CONTRIBUTING.md, convention 5: the library never touches torch's global RNG).

Used in: every chapter and lab.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from . import device as best_device
from .checks import check_device, check_int, check_tensor

__all__ = [
    "Chapter",
    "Unconditional",
    "available_cores",
    "default_threads",
    "load_result",
    "null_labels",
    "result_path",
    "setup",
]

# The benchmark that writes each committed result of book/results (``python -m diffu.bench NAME``).
_BENCHMARKS = {
    "dit_ablation.json": "ablation",
    "distill.json": "distill",
    "fd_vs_nfe.json": "fd",
    "guidance.json": "guidance",
    "inverse.json": "inverse",
    "inverse_examples.safetensors": "inverse",
    "medical_anomaly.json": "medical_anomaly",
    "medical_memorisation.json": "medical_memorisation",
    "medical_cost.json": "medical_cost",
    "medical_recon.json": "medical",
    "medical_recon_examples.safetensors": "medical",
    "medical_translation.json": "medical_translation",
    "medical_translation_examples.safetensors": "medical_translation",
    "medical_volume.json": "medical_volume",
    "nfe_2d.json": "nfe",
    "segmentation.json": "segmentation",
    "nfe_fmnist.json": "nfe",
    "t2i.json": "t2i",
    "unet_probe.json": "probe",
}


# Seeds and offsets stay below 2**63, so that seed + offset fits torch.Generator.manual_seed (at most 2**64 − 1).
_MAX_SEED = 2**63 - 1


def _check_seed(name: str, value) -> None:
    check_int(name, value, 0)
    if value > _MAX_SEED:
        raise ValueError(f"{name} must be at most 2**63 - 1 (torch's seeds), got {value}")


@dataclass(frozen=True)
class Chapter:
    """What :func:`setup` returns: a notebook's device, ``FAST`` flag, seed and generator factory.

    It unpacks as ``DEVICE, FAST, SEED, gen = setup()``; ``gen`` is the bound method :meth:`Chapter.gen`.
    """

    #: The device the chapter computes on: CUDA, then Apple MPS, then the CPU.
    device: torch.device
    #: True on a CPU, where the chapter runs its small configuration (fewer steps, images, iterations).
    fast: bool
    #: The chapter's seed; ``gen(k)`` is seeded with ``seed + k``.
    seed: int
    #: Where ``gen()`` creates its generators unless told otherwise (the CPU, or ``device``).
    generator_device: torch.device

    def __post_init__(self):
        for name in ("device", "generator_device"):
            if not isinstance(getattr(self, name), torch.device):
                raise TypeError(f"{name} must be a torch.device, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.fast, bool):
            raise TypeError(f"fast must be a bool, got {type(self.fast).__name__}")
        _check_seed("seed", self.seed)

    def gen(self, offset: int = 0, device: torch.device | str | None = None) -> torch.Generator:
        """A fresh generator seeded with ``seed + offset``: the same offset gives the same random draws.

        Args:
            offset: a non-negative int; each independent draw of a chapter uses its own offset.
            device: where the generator lives (``torch.randn(..., generator=g, device=...)`` must match it);
                default :attr:`generator_device`. A CUDA generator draws different numbers than a CPU one.

        Returns:
            ``torch.Generator(device).manual_seed(seed + offset)``.

        Raises:
            ValueError: an offset that is not an integer in [0, 2**63 - 1], a device string torch cannot parse.
            TypeError: a device of the wrong type.
        """
        _check_seed("offset", offset)
        device = check_device("device", device)
        return torch.Generator(self.generator_device if device is None else device).manual_seed(self.seed + offset)

    def __iter__(self):
        return iter((self.device, self.fast, self.seed, self.gen))


def available_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the OS has one, else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads() -> int:
    """One fewer than the CPU cores this process may run on (its affinity mask where the OS has one), at least 1;
    or the value of the environment variable ``DIFFU_THREADS`` (an integer ≥ 1) where it is set.

    The book's notebooks use this many PyTorch threads unless told otherwise (:func:`setup`): the core left free
    keeps a thread pool from stalling when the Jupyter server, a browser or a second build runs beside it. A build
    that runs alone may use every core: CI builds the book with ``DIFFU_THREADS=$(nproc)`` (on 2 cores, 20 DDIM steps
    of ``fmnist_unet`` on 256 images took 41.7 s on one thread and 29.7 s on two, with nothing else running).

    Raises:
        ValueError: ``DIFFU_THREADS`` is set but not an integer ≥ 1 (the message names it).
    """
    env = os.environ.get("DIFFU_THREADS")
    if env is not None:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"DIFFU_THREADS must be an integer >= 1 (the book's PyTorch threads), got {env!r}")
        return value
    return max(1, available_cores() - 1)


def setup(
    seed: int = 0,
    *,
    threads: int | None = None,
    device: torch.device | str | None = None,
    device_generators: bool = False,
) -> Chapter:
    """Set up a notebook: pick its device, its ``FAST`` flag, its seed, its generators and its CPU threads.

    ``FAST`` is ``device.type == "cpu"``: a laptop CPU runs the chapter's small configuration, a GPU (CUDA or MPS)
    the full one.

    Args:
        seed: the chapter's seed (a non-negative int); ``gen(k)`` is seeded with ``seed + k``.
        threads: at most this many CPU threads for PyTorch (``torch.set_num_threads(min(threads, current))``).
            ``None`` (the default): one fewer than the CPU cores this process may use (at least one), see
            :func:`default_threads`. A thread pool that spans every core stalls whenever anything else runs: with
            another process busy on one of 2 cores, 400 steps of a small MLP took 23–49 s on 2 threads against
            1.0–1.8 s on one (``python -m diffu.bench threads``), because every parallel operation waits for the
            thread the scheduler has parked.
        device: the device to use; default :func:`diffu.device` (CUDA, then Apple MPS, then the CPU).
        device_generators: create ``gen()``'s generators on ``device`` (for draws made directly on the device)
            instead of on the CPU.

    Returns:
        A :class:`Chapter`, which unpacks as ``DEVICE, FAST, SEED, gen``.

    Raises:
        ValueError: a seed that is not an integer in [0, 2**63 - 1], threads not an integer >= 1, a device string
            torch cannot parse. Nothing is changed (threads included) when a call is refused.
        TypeError: a device or ``device_generators`` of the wrong type.

    Example::

        DEVICE, FAST, SEED, gen = setup(threads=2, device_generators=True)
        x_T = torch.randn(8, 1, 28, 28, generator=gen(1), device=DEVICE)
    """
    _check_seed("seed", seed)
    if threads is not None:
        check_int("threads", threads, 1)
    if not isinstance(device_generators, bool):
        raise TypeError(f"device_generators must be a bool, got {type(device_generators).__name__}")
    device = check_device("device", device)
    if device is None:
        device = best_device()
    torch.set_num_threads(min(default_threads() if threads is None else threads, torch.get_num_threads()))
    generators = device if device_generators else torch.device("cpu")
    return Chapter(device=device, fast=device.type == "cpu", seed=seed, generator_device=generators)


def _num_classes(model) -> int:
    k = model if isinstance(model, int) and not isinstance(model, bool) else getattr(model, "num_classes", None)
    if k is None:
        raise ValueError(f"model must be class-conditional (have a num_classes attribute), got {type(model).__name__}")
    check_int("num_classes", k, 1)
    return k


def null_labels(n: int, model, device: torch.device | str | None = None) -> torch.Tensor:
    """The null label ("no class") for ``n`` images: an ``(n,)`` long tensor filled with ``num_classes``.

    A class-conditional network trained with label dropout (classifier-free guidance, Ho & Salimans 2022) reserves
    index ``num_classes`` for "no label"; with it, the network is the unconditional model ``ε(x_t, t, ∅)``.

    Args:
        n: the batch size (a non-negative int).
        model: a class-conditional network (it has ``num_classes``, e.g. the shipped ``fmnist_unet``) or the
            number of classes itself.
        device: default the device of the model's parameters (the CPU for an int or a network without any).

    Returns:
        ``torch.full((n,), num_classes)`` of dtype ``torch.long``, e.g. ``model_kwargs={"y": null_labels(4, UNET)}``.

    Raises:
        ValueError: ``n`` not an integer >= 0, a model that is not class-conditional (no integer ``num_classes``
            >= 1), a device string torch cannot parse.
        TypeError: a device of the wrong type.

    Used in §4.1, §4.2.1, §4.2.2, §4.2.3 (the shipped class-conditional UNet as an unconditional prior).
    """
    check_int("n", n, 0)
    k = _num_classes(model)
    device = check_device("device", device)
    if device is None and isinstance(model, nn.Module):
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else None
    return torch.full((n,), k, dtype=torch.long, device=device)


class Unconditional(nn.Module):
    """A class-conditional network used unconditionally: ``Unconditional(model)(x, t) = model(x, t, y=∅)``.

    Every row gets :func:`null_labels`, so the wrapper is an ordinary ε-model (or whatever ``model.prediction``
    says, which it keeps) for samplers and solvers that take no labels.

    Args:
        model: a class-conditional network ``model(x_t, t, y=labels)`` with a ``num_classes`` attribute.

    Used in Lab 4 (DPS with the shipped UNet as the prior).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        _num_classes(model)
        self.model = model
        if hasattr(model, "prediction"):
            self.prediction = model.prediction

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        """``model(x, t, y=null_labels(N), **kwargs)`` for ``x`` of shape ``(N, …)`` and float ``t`` ``(N,)``."""
        if "y" in kwargs:
            raise ValueError("Unconditional passes the null label itself; do not give y")
        check_tensor(x, "x")
        if x.ndim == 0:
            raise ValueError("x must have a batch dimension (N, ...), got a 0-d tensor")
        return self.model(x, t, y=null_labels(x.shape[0], self.model, device=x.device), **kwargs)


def result_path(name: str, directory: str | os.PathLike = "results") -> Path:
    """The path of a committed benchmark result, checked to exist.

    Chapters run with their own folder (``book/``) as the working directory, so the default ``results`` is
    ``book/results``, where ``python -m diffu.bench …`` writes its files.

    Args:
        name: the file name; ``".json"`` is added when it has no suffix (``"guidance"`` is ``guidance.json``).
        directory: the folder of the results, relative to the working directory or absolute.

    Raises:
        FileNotFoundError: naming the path looked at and the benchmark command that writes the file.
    """
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise ValueError(f"name must be a file name such as 'guidance' or 'guidance.json', got {name!r}")
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a str or a path, got {type(directory).__name__}")
    path = Path(directory) / (name if Path(name).suffix else f"{name}.json")
    if not path.is_file():
        bench = _BENCHMARKS.get(path.name)
        how = (
            f"`python -m diffu.bench {bench}` writes it"
            if bench
            else "the benchmarks of `python -m diffu.bench` write it"
        )
        raise FileNotFoundError(
            f"committed result {path} not found (looked for {path.absolute()}); run the notebook from its own folder "
            f"(book/) or pass directory=; {how}"
        )
    return path


def load_result(name: str, directory: str | os.PathLike = "results"):
    """A committed benchmark result: the parsed JSON, or the tensors of a ``.safetensors`` file.

    Heavy numbers (full tables, FD over many samples) come from ``python -m diffu.bench …``; a chapter shows them
    from these committed files and re-runs a small instance live (CONTRIBUTING.md, "Notebooks").

    Args:
        name: the file name; ``".json"`` is added when it has no suffix (``load_result("guidance")``).
        directory: the folder of the results, relative to the working directory (a chapter's is ``book/``).

    Returns:
        A ``dict`` (or whatever the JSON holds); for ``.safetensors``, a ``dict`` of CPU tensors.

    Raises:
        FileNotFoundError: naming the path and the benchmark command that writes the file.
        ValueError: for a suffix other than ``.json`` and ``.safetensors``.

    Used in §2.2, §2.3, §2.4, §2.5, §2.6, §2.6.1 and §4.3.
    """
    suffix = Path(name).suffix if isinstance(name, str) else ""
    if suffix not in ("", ".json", ".safetensors"):
        raise ValueError(f"name must be a .json or .safetensors file, got {name!r}")
    path = result_path(name, directory)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return json.loads(path.read_text())
