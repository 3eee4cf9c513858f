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
import os
import re
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..checks import check_choice, check_device, check_dtype

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


# the keys every manifest entry needs to be loaded, with their types (config_class and components are optional: a
# string and a dict of strings); the other keys (description, metrics, loss curve, …) are free
_ENTRY_KEYS = {"file": str, "sha256": str, "arch": str, "config": dict, "command": str}


def sha256(path) -> str:
    """The SHA-256 hex digest of the file at ``path`` (a string or path-like; read in 1 MiB chunks).

    Raises:
        TypeError: ``path`` is not a string or path-like.
        FileNotFoundError: there is no such file.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a string or a path, got {type(path).__name__}")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest() -> dict:
    with resources.files("diffu").joinpath("weights/manifest.json").open() as f:
        return json.load(f)


def _checked_manifest() -> dict:
    man = _manifest()
    if not isinstance(man, dict) or not all(isinstance(k, str) for k in man):
        raise ValueError(f"the weights manifest must map model names to entries, got {type(man).__name__}")
    return man


def available() -> list[str]:
    """Names of the shipped models."""
    return sorted(_checked_manifest())


def info(name: str) -> dict:
    """The manifest entry of ``name``: file, sha256, network (arch, config), retrain command and measured metrics.

    Raises:
        ValueError: ``name`` is not one of :func:`available` (the message lists them).
    """
    man = _checked_manifest()
    check_choice("name", name, tuple(sorted(man)))
    return man[name]


def _check_entry(name: str, entry) -> None:
    """Raise ``ValueError`` naming the entry and the key unless ``entry`` — the manifest entry of ``name`` — has
    every key of ``_ENTRY_KEYS`` with its type, a 64-digit hex ``sha256``, a ``file`` that is a plain
    ``.safetensors`` file name inside :data:`WEIGHTS_DIR`, a string ``config_class`` and ``components`` mapping
    argument names to model names where present."""
    if not isinstance(entry, dict):
        raise ValueError(f"manifest entry {name!r} must be a dict, got {type(entry).__name__}")
    for key, kind in _ENTRY_KEYS.items():
        if key not in entry:
            raise ValueError(f"manifest entry {name!r} has no {key!r} (a {kind.__name__}); it is needed to load it")
        if not isinstance(entry[key], kind):
            raise ValueError(f"manifest entry {name!r}: {key!r} must be a {kind.__name__}, got "
                             f"{type(entry[key]).__name__} {entry[key]!r:.60}")  # fmt: skip
    if not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
        raise ValueError(
            f"manifest entry {name!r}: 'sha256' must be 64 lower-case hex digits, got {entry['sha256']!r:.80}"
        )
    file = entry["file"]
    if Path(file).name != file or file.startswith(".") or not file.endswith(".safetensors"):
        raise ValueError(f"manifest entry {name!r}: 'file' must be a .safetensors file name in the weights folder, got "
                         f"{file!r:.80}")  # fmt: skip
    if "config_class" in entry and not isinstance(entry["config_class"], str):
        raise ValueError(f"manifest entry {name!r}: 'config_class' must be a str, got {entry['config_class']!r:.60}")
    comps = entry.get("components", {})
    if not isinstance(comps, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in comps.items()):
        raise ValueError(f"manifest entry {name!r}: 'components' must map argument names to model names, got "
                         f"{comps!r:.80}")  # fmt: skip


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

    Like any network constructor it draws its random initialisation from torch's global RNG, so that it equals the
    recipe's ``build()`` under the same seed. Each component is drawn fresh first (and its draw dropped), then
    loaded as by :func:`load`: the same draws as constructing the component and loading its weights, which is how
    the shipped networks with components were initialised.

    Args:
        entry: a dict with ``arch`` (``"diffu.module:Class"``, a ``torch.nn.Module``), ``config`` (a dict), and
            optionally ``config_class`` (``"diffu.module:Config"``: the network is built as
            ``Class(config=Config(**config))``, else as ``Class(**config)``) and ``components`` (constructor
            argument → name of a shipped network, loaded and passed in), e.g. :func:`info`'s result.

    Raises:
        ValueError: a malformed entry (names outside diffu, a class that is not a network, a config the network
            refuses, components that are not names or that form a loop).
    """
    return _build(entry, ())


def _build(entry: dict, loading: tuple) -> torch.nn.Module:
    if not isinstance(entry, dict) or "arch" not in entry or not isinstance(entry.get("config", {}), dict):
        raise ValueError(f"entry must be a dict with 'arch' and a 'config' dict, got {entry!r:.200}")
    where = f"manifest entry {loading[-1]!r}" if loading else "entry"
    if not isinstance(entry["arch"], str) or not isinstance(entry.get("config_class", ""), str):
        raise ValueError(f"{where}: 'arch' and 'config_class' must be strings 'diffu.module:Name'")
    comps = entry.get("components", {})
    if not isinstance(comps, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in comps.items()):
        raise ValueError(f"{where}: 'components' must map argument names to model names, got {comps!r:.80}")
    cls = _import(entry["arch"], "arch")
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"arch must name a torch.nn.Module subclass, got {entry['arch']!r}")
    config_cls = _import(entry["config_class"], "config_class") if "config_class" in entry else None
    kwargs = {}
    for arg, name in comps.items():
        if name not in loading and name in _manifest():
            # a component's fresh initialisation is drawn (and dropped) before its shipped weights are loaded, as
            # constructing it and loading its state would: build() then equals the recipe's build() under one seed
            _build(info(name), (*loading, name))
        kwargs[arg] = _load(name, loading)
    config = _tuples(entry.get("config", {}))
    try:
        if config_cls is not None:
            return cls(config=config_cls(**config), **kwargs)
        return cls(**config, **kwargs)
    except (TypeError, ValueError) as err:  # an unknown field or a value the network refuses
        raise ValueError(f"{where}: its config does not build {entry['arch']}: {err}") from err


def _load(name: str, loading: tuple) -> torch.nn.Module:
    """Load ``name`` without changing torch's global RNG (the network is built, with its random initialisation,
    under ``torch.random.fork_rng``); ``loading`` are the names whose components are being loaded (to refuse a
    loop)."""
    with torch.random.fork_rng(devices=_rng_devices()):
        return _load_forked(name, loading)


def _load_forked(name: str, loading: tuple) -> torch.nn.Module:
    if name in loading:
        raise ValueError(f"the manifest's components form a loop: {' -> '.join((*loading, name))}")
    entry = info(name)
    _check_entry(name, entry)
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
    try:
        state = load_file(str(path))
    except SafetensorError as err:
        raise ValueError(f"{path.name} (manifest entry {name!r}) is not a readable safetensors file: {err}") from err
    _check_state(name, entry, model.state_dict(), state)
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def _check_state(name: str, entry: dict, expected: dict, state: dict) -> None:
    """The file's tensors are exactly the network's: same keys, shapes and dtypes."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    differ = [f"{k} {tuple(state[k].shape)} {state[k].dtype} ≠ {tuple(v.shape)} {v.dtype}" for k, v in expected.items()
              if k in state and (state[k].shape != v.shape or state[k].dtype != v.dtype)]  # fmt: skip
    if missing or unexpected or differ:
        parts = [f"{len(missing)} missing keys (e.g. {missing[:3]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"] if unexpected else []
        parts += [f"{len(differ)} tensors of another shape or dtype (e.g. {differ[:2]})"] if differ else []
        raise ValueError(f"{entry['file']} does not hold the weights of the network that manifest entry {name!r} "
                         f"describes ({entry['arch']}): {'; '.join(parts)}")  # fmt: skip


def _rng_devices() -> list:
    """The CUDA devices whose RNG building a network may draw from (the default device's, if it is a GPU)."""
    default = torch.get_default_device() if hasattr(torch, "get_default_device") else torch.device("cpu")
    return [default.index or 0] if default.type == "cuda" else []


def load(name: str, device=None, dtype=None) -> torch.nn.Module:
    """Build the network ``name`` (:func:`build` on its manifest entry) and load its shipped weights after checking
    their SHA-256 (``ChecksumError`` on mismatch). Returns the model in eval mode, without gradients, on ``device``
    (default: CPU tensors as stored).

    The network is built under ``torch.random.fork_rng``: loading never changes torch's global RNG (convention 5),
    and the loaded weights are those of the file, whatever the RNG state.

    Args:
        name: one of :func:`available`.
        device: None, a ``torch.device`` or a string such as ``"cuda"``.
        dtype: None or a floating-point ``torch.dtype`` to cast the weights to.

    Raises:
        ValueError: an unknown ``name`` (the message lists the shipped ones), a malformed manifest entry (naming
            the entry and the key), a file that does not hold the weights of the network its entry describes, or
            a bad ``device``/``dtype``.
        TypeError: ``device`` or ``dtype`` of the wrong kind.
        ChecksumError: the file's SHA-256 is not the manifest's.
        FileNotFoundError: the file is missing (the message gives the retrain command).
    """
    device = check_device("device", device)
    dtype = check_dtype("dtype", dtype)
    info(name)  # an unknown name fails before anything is built
    return _load(name, ()).to(device=device, dtype=dtype)
