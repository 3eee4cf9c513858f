"""Registry of the shipped weights: list them, check their SHA-256 and load them.

Weights live in ``diffu/weights/NAME.safetensors``; ``diffu/weights/manifest.json`` records for each its hash, the
network that holds it, the training config, the retrain command and measured numbers. Never pickle: only
safetensors files are read (CONTRIBUTING.md, convention 10).

Each manifest entry describes its network, so loading needs no training code::

    "arch": "diffu.nn.unet:UNet",               # the network class, "module:Class" (imported when loaded)
    "config_class": "diffu.nn.unet:UNetConfig",  # optional: the class's config dataclass
    "config": {"channels": 32, ...},            # its fields (or the class's keyword arguments without config_class)
    "components": {"base": "fmnist_unet"},      # optional: constructor arguments that are other shipped networks

and :func:`build` turns it into ``Arch(config=ConfigClass(**config), **components)`` (or ``Arch(**config,
**components)``), JSON arrays becoming tuples. Loading ``fmnist_unet`` therefore imports :mod:`diffu.nn.unet` and
nothing of :mod:`diffu.recipes`, :mod:`diffu.train` or :mod:`diffu.inverse`.

How each model was trained (recipes, losses, data) is in :mod:`diffu.recipes`. Retrain one, or list them, from the
repository root::

    python -m diffu.pretrained list
    python -m diffu.pretrained train fmnist_unet --steps 4000
"""

from __future__ import annotations

import hashlib
import importlib
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file

__all__ = ["ChecksumError", "DIT_ABLATION", "WEIGHTS_DIR", "available", "build", "info", "load", "sha256"]

#: Where the shipped ``.safetensors`` files are.
WEIGHTS_DIR = Path(__file__).parents[1] / "weights"

#: Conditioning scheme → name of its shipped DiT-T/4 weights (the DiT paper's conditioning ablation, its Fig. 5, at
#: toy scale; four variants, one budget, chapter §2.6). Keys in the order of :data:`diffu.nn.CONDITIONINGS`.
DIT_ABLATION = {
    "in-context": "fmnist_dit_in_context",
    "cross-attention": "fmnist_dit_cross_attention",
    "adaLN": "fmnist_dit_adaln",
    "adaLN-Zero": "fmnist_dit_adaln_zero",
}


class ChecksumError(ValueError):
    """A shipped weight file does not match the SHA-256 recorded in the manifest."""


def sha256(path) -> str:
    """The SHA-256 hex digest of the file at ``path`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest() -> dict:
    with resources.files("diffu").joinpath("weights/manifest.json").open() as f:
        return json.load(f)


def available() -> list[str]:
    """Names of the shipped models."""
    return sorted(_manifest())


def info(name: str) -> dict:
    """The manifest entry of ``name``: file, sha256, network (arch, config), retrain command and measured metrics."""
    man = _manifest()
    if name not in man:
        raise ValueError(f"name must be one of {sorted(man)}, got {name!r}")
    return man[name]


def _import(path: str, what: str):
    """The object named by ``"diffu.module:Name"``; only diffu's own modules may be named."""
    module, sep, attr = path.partition(":")
    if not sep or not attr or not (module == "diffu" or module.startswith("diffu.")):
        raise ValueError(f"{what} must be 'diffu.module:Name', got {path!r}")
    obj = getattr(importlib.import_module(module), attr, None)
    if obj is None:
        raise ValueError(f"{what} {path!r}: module {module} has no {attr!r}")
    return obj


def _tuples(value):
    """JSON arrays back to the tuples that diffu's config dataclasses use."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def build(entry: dict) -> torch.nn.Module:
    """The network a manifest entry describes, with fresh weights (its ``components`` are loaded with :func:`load`).

    Args:
        entry: a dict with ``arch`` (``"diffu.module:Class"``, a ``torch.nn.Module``), ``config`` (a dict), and
            optionally ``config_class`` (``"diffu.module:Config"``: the network is built as
            ``Class(config=Config(**config))``, else as ``Class(**config)``) and ``components`` (constructor
            argument → name of a shipped network, loaded and passed in), e.g. :func:`info`'s result.
    """
    return _build(entry, ())


def _build(entry: dict, loading: tuple) -> torch.nn.Module:
    if not isinstance(entry, dict) or "arch" not in entry or not isinstance(entry.get("config", {}), dict):
        raise ValueError(f"entry must be a dict with 'arch' and a 'config' dict, got {entry!r}")
    cls = _import(entry["arch"], "arch")
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"arch must name a torch.nn.Module subclass, got {entry['arch']!r}")
    kwargs = {arg: _load(name, loading) for arg, name in entry.get("components", {}).items()}
    config = _tuples(entry.get("config", {}))
    if "config_class" in entry:
        return cls(config=_import(entry["config_class"], "config_class")(**config), **kwargs)
    return cls(**config, **kwargs)


def _load(name: str, loading: tuple) -> torch.nn.Module:
    """Load ``name``; ``loading`` are the names whose components are being loaded (to refuse a loop)."""
    if name in loading:
        raise ValueError(f"the manifest's components form a loop: {' -> '.join((*loading, name))}")
    entry = info(name)
    path = WEIGHTS_DIR / entry["file"]
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} is missing; retrain with: {entry['command']}")
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise ChecksumError(
            f"{path.name}: SHA-256 {digest} does not match the manifest's {entry['sha256']}; the file is corrupt or "
            f"was changed. Retrain with: {entry['command']}"
        )
    model = _build(entry, (*loading, name))
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)


def load(name: str, device=None, dtype=None) -> torch.nn.Module:
    """Build the network ``name`` (:func:`build` on its manifest entry) and load its shipped weights after checking
    their SHA-256 (``ChecksumError`` on mismatch). Returns the model in eval mode, without gradients, on ``device``
    (default: CPU tensors as stored)."""
    return _load(name, ()).to(device=device, dtype=dtype)
