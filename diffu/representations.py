"""What the DDPM UNet's intermediate features know: per-level feature maps, pooled features and linear probes.

A denoiser trained to predict ε from x_t must recognise *what* is in the image to restore it, so its intermediate
activations are representations (Fuest et al. 2024, "Diffusion Models and Representation Learning: A Survey",
arXiv:2407.00783; the DDAE recipe of Xiang et al. 2023: noise the image to a small-moderate t, read a middle layer,
pool, fit a linear classifier). This module reads those features out of :class:`diffu.nn.UNet` with forward hooks,
probes them linearly, summarises the network level by level, and can cut its skip connections for ablations.

Level names follow the forward pass: ``"down0 28×28"`` … (encoder, the output of the last block at that resolution,
before downsampling), ``"mid 7×7"`` (bottleneck), ``"up2 7×7"`` … ``"up0 28×28"`` (decoder, before upsampling).
Chapter §2.6 (the DDPM UNet) introduces everything here; §9 (semantic correspondence) builds on the features.

Regenerate the chapter's committed probe table (from the repository root)::

    python -m diffu.bench probe
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn
from tqdm.auto import tqdm

from .checks import check_bool, check_finite, check_floating, check_generator, check_int, check_real
from .nn.unet import AttnBlock, ResBlock, UNet
from .sampling import check_schedule

__all__ = [
    "ProbeResult",
    "linear_probe",
    "pooled_features",
    "probe_sweep",
    "unet_features",
    "unet_levels",
    "unet_summary",
    "zero_skips",
]


# ----------------------------------------------------------------------------------------------------------------
# The UNet's structure, read from its modules
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    level: str  # e.g. "down1 14×14", "mid 7×7", "embedding"
    name: str  # e.g. "ResBlock 32→64 + attention"
    modules: tuple  # the nn.Modules whose parameters this row owns
    resolution: int | None  # output side length (None for the embeddings)
    channels: int  # output channels (embedding width for the embeddings)
    tap: nn.Module | None = None  # the module whose output is this level's feature map (last block of a level)
    skip_from: int | None = None  # decoder ResBlocks: index of the first skip channel in their input


def _check_unet(model):
    if not isinstance(model, UNet):
        raise TypeError(f"model must be a diffu.nn.UNet, got {type(model).__name__}")


def _blocks(model: UNet) -> list[_Block]:
    """Walk the UNet's module lists in forward order, one row per block; every parameter belongs to one row."""
    cfg = model.config
    rows = [_Block("embedding", "time MLP (sinusoid → Linear → SiLU → Linear)", (model.time_mlp,), None,
                   model.time_mlp[-1].out_features)]  # fmt: skip
    if model.num_classes is not None:
        rows.append(_Block("embedding", f"label embedding ({model.num_classes} classes + null)",
                           (model.label_emb,), None, model.label_emb.embedding_dim))  # fmt: skip
    res, lvl = cfg.image_size, 0
    name = f"down0 {res}×{res}"
    rows.append(_Block(name, f"conv_in {cfg.in_channels}→{model.conv_in.out_channels}", (model.conv_in,), res,
                       model.conv_in.out_channels))  # fmt: skip
    for block in model.down:
        if isinstance(block[0], ResBlock):
            rb = block[0]
            label = f"ResBlock {rb.conv1.in_channels}→{rb.conv1.out_channels}" + (" + attention" * (len(block) > 1))
            rows.append(_Block(name, label, tuple(block), res, rb.conv1.out_channels, tap=block[-1]))
        else:  # the stride-2 convolution opens the next level
            res, lvl = (res + 1) // 2, lvl + 1
            name = f"down{lvl} {res}×{res}"
            rows.append(_Block(name, "downsample (stride-2 conv)", tuple(block), res, block[0].out_channels))

    mid = f"mid {res}×{res}"
    for i, layer in enumerate(model.mid):
        kind = "ResBlock" if isinstance(layer, ResBlock) else "attention"
        ch = layer.conv1.out_channels if isinstance(layer, ResBlock) else layer.qkv.in_channels
        rows.append(_Block(mid, kind, (layer,), res, ch, tap=layer if i == len(model.mid) - 1 else None))

    cur = rows[-1].channels
    name = f"up{lvl} {res}×{res}"
    for block in model.up:
        if isinstance(block[0], ResBlock):
            rb = block[0]
            label = f"ResBlock ({cur} + skip {rb.conv1.in_channels - cur})→{rb.conv1.out_channels}"
            label += " + attention" * any(isinstance(m, AttnBlock) for m in block)
            rows.append(_Block(name, label, tuple(block), res, rb.conv1.out_channels, tap=block[-1], skip_from=cur))
            cur = rb.conv1.out_channels
        else:  # nearest-neighbour upsampling + conv opens the next (finer) level
            res, lvl = res * 2, lvl - 1
            name = f"up{lvl} {res}×{res}"
            rows.append(_Block(name, "upsample (nearest ×2 + conv)", tuple(block), res, block[-1].out_channels))
    rows.append(_Block(name, f"GroupNorm → SiLU → conv_out {cur}→{model.conv_out.out_channels}",
                       (model.norm_out, model.conv_out), res, model.conv_out.out_channels))  # fmt: skip
    # only the last block of a level provides that level's feature map
    last = {r.level: i for i, r in enumerate(rows) if r.tap is not None}
    return [r if r.tap is None or last[r.level] == i else replace(r, tap=None) for i, r in enumerate(rows)]


def unet_levels(model: UNet) -> list[str]:
    """Names of the UNet's feature levels in forward order: ``["down0 28×28", …, "mid 7×7", …, "up0 28×28"]``.

    Chapter §2.6 (the widget's level dropdown)."""
    _check_unet(model)
    return [r.level for r in _blocks(model) if r.tap is not None]


def unet_summary(model: UNet) -> list[dict]:
    """One row per block of the UNet, in forward order, with parameter counts counted from the modules.

    Every parameter of the model is in exactly one row, so the ``params`` column sums to the model's total.

    Returns:
        list of dicts with keys ``level`` (``"embedding"``, ``"down0 28×28"``, …, ``"mid 7×7"``, …, ``"up0 28×28"``),
        ``block`` (what it is), ``resolution`` (output side length, None for embeddings), ``channels`` (output
        channels) and ``params``. Chapter §2.6 (the parameter table and the diagram).
    """
    _check_unet(model)
    return [
        {"level": r.level, "block": r.name, "resolution": r.resolution, "channels": r.channels,
         "params": sum(p.numel() for m in r.modules for p in m.parameters())}
        for r in _blocks(model)
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Feature maps via forward hooks
# ----------------------------------------------------------------------------------------------------------------


class _EnoughFeatures(Exception):
    """Raised inside a hook once every requested level is captured: the rest of the forward pass is skipped."""


def _resolve_levels(names: list[str], levels, what: str) -> set[str]:
    """The full names among ``names`` that ``levels`` (one name or prefix such as ``"mid"``, or a sequence) picks."""
    try:
        levels = [levels] if isinstance(levels, str) else list(levels)
    except TypeError:
        raise TypeError(f"levels must be a {what} name or a sequence of them, got {type(levels).__name__}") from None
    if not levels:
        raise ValueError(f"levels must name at least one {what} from {names}")
    chosen = set()
    for lv in levels:
        match = [n for n in names if lv in (n, n.split()[0])]
        if not match:
            raise ValueError(f"levels must be {what}s from {names} (or their prefixes), got {lv!r}")
        chosen.update(match)
    return chosen


def _select(model, levels):
    taps = {r.level: r.tap for r in _blocks(model) if r.tap is not None}
    if levels is None:
        return taps
    chosen = _resolve_levels(list(taps), levels, "level")
    return {k: v for k, v in taps.items() if k in chosen}  # forward order


def _check_x(model, x, name="x"):
    cfg = model.config
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{name} must be a (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
        raise ValueError(
            f"{name} must have shape (N, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}) for this UNet, "
            f"got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image, got shape {tuple(x.shape)}")
    check_floating(x, name)
    check_finite(x, name)


def unet_features(model: UNet, x: torch.Tensor, t, y: torch.Tensor | None = None, levels=None) -> dict:
    """Intermediate feature maps of the UNet at input ``x_t`` and timestep(s) ``t``, read with forward hooks.

    The hooks are removed when the call returns, also when the forward pass raises. No gradients are recorded.
    The forward pass stops early once the last requested level has been computed.

    Args:
        model: a :class:`diffu.nn.UNet`.
        x: noisy images ``x_t`` of shape ``(N, C, H, W)`` matching the model's config.
        t: timestep(s), a number or an ``(N,)`` tensor (float or integer, ≥ 0), as the network receives it.
        y: optional ``(N,)`` class labels for a class-conditional UNet (None = the null label: unconditional).
           Probing with the true label would leak it into every block through the embedding.
        levels: names from :func:`unet_levels` (or their prefixes such as ``"mid"``), or None for all.

    Returns:
        ``{level name: (N, C_level, H_level, W_level) tensor}`` in forward order. Chapter §2.6.

    Raises:
        ValueError: ``x`` that is not a finite floating-point batch of the model's shape, ``t`` that is not finite,
            >= 0 and of ``x``'s batch size, unknown levels (labels are checked by the network).
        TypeError: a model that is not a UNet, ``t`` or ``levels`` of the wrong type.
    """
    _check_unet(model)
    _check_x(model, x)
    if not isinstance(t, (numbers.Real, torch.Tensor)) or isinstance(t, bool):
        raise TypeError(f"t must be a number or an ({x.shape[0]},) tensor, got {type(t).__name__}")
    t = torch.as_tensor(t, device=x.device)
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"t must be real timesteps, got dtype {t.dtype}")
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a number or have shape ({x.shape[0]},), got {tuple(t.shape)}")
    t = t.to(x.dtype)
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(f"t must be finite and >= 0, got values in [{float(t.min())}, {float(t.max())}]")
    taps = _select(model, levels)
    feats: dict[str, torch.Tensor] = {}

    def hook(name):
        def save(_module, _inputs, output):
            feats[name] = output.detach()
            if len(feats) == len(taps):
                raise _EnoughFeatures

        return save

    handles = []
    try:
        for name, module in taps.items():
            handles.append(module.register_forward_hook(hook(name)))
        with torch.no_grad():
            model(x, t, y)
    except _EnoughFeatures:
        pass
    finally:
        for h in handles:
            h.remove()
    return {k: feats[k] for k in taps}


def pooled_features(model: UNet, x0: torch.Tensor, t: int, schedule, *, y=None, levels=None, generator=None,
                    batch_size: int = 256, progress: bool = False) -> dict:  # fmt: skip
    """Global-average-pooled features of each level for clean images noised to a fixed timestep ``t``.

    The DDAE / Fuest et al. recipe: ``x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε`` (Eq. 4 of Ho et al. 2020) with ε drawn from
    ``generator``, then the mean of every feature map over its H × W positions. Batched, no gradients.

    Args:
        model: a :class:`diffu.nn.UNet` trained on ``schedule``.
        x0: clean images ``(N, C, H, W)`` in [-1, 1].
        t: one integer timestep in ``[0, T-1]``.
        schedule: the :class:`diffu.schedules.Schedule` the model was trained with.
        y: optional ``(N,)`` labels (None = null label; see :func:`unet_features`).
        levels: as in :func:`unet_features`.
        generator: the noise's ``torch.Generator`` (on ``x0``'s device); the same seed gives the same features.
        batch_size: images per forward pass.
        progress: show a tqdm bar.

    Returns:
        ``{level name: (N, C_level) tensor}``. Chapter §2.6 (the linear probe).

    Raises:
        ValueError: as :func:`unet_features` for ``x0``; ``t`` not an integer in ``[0, T − 1]``, ``batch_size`` not an
            integer >= 1, ``y`` not an integer ``(N,)`` tensor.
        TypeError: a model, schedule, generator or flag of the wrong type.
    """
    _check_unet(model)
    check_schedule(schedule)
    _check_x(model, x0, "x0")
    if isinstance(t, bool) or not isinstance(t, int):
        raise ValueError(f"t must be one integer timestep, got {t!r}")
    if not 0 <= t < schedule.T:
        raise ValueError(f"t must be in [0, {schedule.T - 1}], got {t}")
    check_int("batch_size", batch_size, 1)
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape != (x0.shape[0],)):
        raise ValueError(f"y must be None or a ({x0.shape[0]},) tensor, got {getattr(y, 'shape', y)}")
    if y is not None and (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool):
        raise ValueError(f"y must hold integer class labels, got {y.dtype}")
    check_generator(generator)
    check_bool("progress", progress)
    out: dict[str, list] = {}
    for i in tqdm(range(0, x0.shape[0], batch_size), disable=not progress, desc=f"features at t={t}"):
        xb = x0[i : i + batch_size]  # (B, C, H, W)
        noise = torch.randn(xb.shape, generator=generator, device=xb.device, dtype=xb.dtype)
        x_t = schedule.q_sample(xb, torch.full((xb.shape[0],), t, dtype=torch.long), noise)
        feats = unet_features(model, x_t, float(t), None if y is None else y[i : i + batch_size], levels)
        for k, f in feats.items():
            out.setdefault(k, []).append(f.mean(dim=(2, 3)))  # (B, C_level)
    return {k: torch.cat(v) for k, v in out.items()}


@contextmanager
def zero_skips(model: UNet, levels) -> Iterator[None]:
    """Within the ``with`` block, the skip connections entering the given decoder levels carry zeros.

    A forward pre-hook on each decoder ResBlock of those levels zeroes the channels that the concatenation
    ``[h, skip]`` took from the encoder; the hooks are removed on exit. Used in chapter §2.6 to show what the skips
    carry.

    Args:
        model: a :class:`diffu.nn.UNet`.
        levels: decoder level names (``"up0 28×28"`` or the prefix ``"up0"``), one string or a sequence.
    """
    _check_unet(model)
    rows = [r for r in _blocks(model) if r.skip_from is not None]
    names = sorted({r.level for r in rows}, key=lambda s: s.split()[0])
    chosen = _resolve_levels(names, levels, "decoder level")

    def pre_hook(cut):
        def zero(_module, args):
            h, emb = args
            return (torch.cat([h[:, :cut], torch.zeros_like(h[:, cut:])], dim=1), emb)

        return zero

    handles = []
    try:
        for r in rows:
            if r.level in chosen:
                handles.append(r.modules[0].register_forward_pre_hook(pre_hook(r.skip_from)))
        yield
    finally:
        for h in handles:
            h.remove()


# ----------------------------------------------------------------------------------------------------------------
# Linear probe
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    """A fitted linear probe: ``logits = ((f - mean) / std) @ weight + bias`` (float64)."""

    accuracy: float  # on the test features
    train_accuracy: float
    l2: float  # the ridge penalty used (chosen on a held-out fifth of the training set when several are given)
    weight: torch.Tensor  # (D, K)
    bias: torch.Tensor  # (K,)
    mean: torch.Tensor  # (D,)
    std: torch.Tensor  # (D,)

    def predict(self, feats: torch.Tensor) -> torch.Tensor:
        """Class predictions ``(N,)`` for finite features ``(N, D)`` (``ValueError`` for another shape or NaN)."""
        _check_feats(feats, "feats", self.weight.shape[0])
        z = (feats.to(self.mean) - self.mean) / self.std
        return (z @ self.weight + self.bias).argmax(1)


def _check_feats(f, name: str, d: int | None = None) -> None:
    """``f`` is a finite ``(N, D)`` tensor (``D = d`` when given)."""
    if not isinstance(f, torch.Tensor) or f.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) tensor, got {getattr(f, 'shape', type(f).__name__)}")
    if d is not None and f.shape[1] != d:
        raise ValueError(f"{name} must have width D = {d} (the probe's), got shape {tuple(f.shape)}")
    if f.is_complex() or f.dtype == torch.bool:
        raise ValueError(f"{name} must be real features, got {f.dtype}")
    check_finite(f, name)


def _check_probe_labels(y, n: int, name: str) -> None:
    """``y`` is an integer ``(n,)`` tensor of labels >= 0 (``name``: the argument, in the message)."""
    if not isinstance(y, torch.Tensor) or y.shape != (n,) or y.is_floating_point() or y.is_complex() \
            or y.dtype == torch.bool:  # fmt: skip
        raise ValueError(f"{name} must be an integer tensor of shape ({n},), got "
                         f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")  # fmt: skip
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"{name} must hold labels >= 0, got {int(y.min())}")


def _ridge(x, y_onehot, l2):
    """Closed-form ridge regression with an unpenalised bias on standardised ``x`` (N, D) → (W (D, K), b (K,))."""
    mean, std = x.mean(0), x.std(0)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant features carry no information
    z = (x - mean) / std
    n, d = z.shape
    target = y_onehot - y_onehot.mean(0)  # centred targets: the bias is then the mean one-hot vector
    w = torch.linalg.solve(z.T @ z / n + l2 * torch.eye(d, dtype=z.dtype, device=z.device), z.T @ target / n)
    return w, y_onehot.mean(0), mean, std


def linear_probe(train_feats: torch.Tensor, train_y: torch.Tensor, test_feats: torch.Tensor, test_y: torch.Tensor,
                 l2: float | Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)) -> ProbeResult:  # fmt: skip
    """Linear classifier on standardised features: ridge regression onto one-hot targets, solved in closed form.

    Minimises ``(1/N) ‖Z W + b - Y‖² + l2 ‖W‖²`` with ``Z`` the training features standardised per dimension and
    ``Y`` one-hot labels; predicts ``argmax(Z W + b)``. Deterministic (no optimiser, no seed). When ``l2`` is a
    sequence, the value with the best accuracy on the last fifth of the training set (fitted on the first four
    fifths) is chosen, then the probe is refitted on the whole training set; the test set is never used for choices.

    Args:
        train_feats: ``(N, D)`` features; ``train_y``: ``(N,)`` integer labels in ``[0, K)``.
        test_feats: ``(M, D)`` features; ``test_y``: ``(M,)`` integer labels.
        l2: the ridge penalty (> 0), or several to choose from.

    Returns:
        :class:`ProbeResult` with the test accuracy and the fitted weights. Chapter §2.6.

    Raises:
        ValueError: features that are not finite ``(N, D)`` tensors of one width (N >= 5 for training, >= 1 for
            testing), labels that are not non-negative integer ``(N,)`` tensors, an ``l2`` that is not > 0.
        TypeError: an ``l2`` that is neither a number nor a sequence of numbers.
    """
    for name, f in (("train_feats", train_feats), ("test_feats", test_feats)):
        if not isinstance(f, torch.Tensor) or f.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (N, D) tensor, got {getattr(f, 'shape', type(f).__name__)}")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"train_feats and test_feats must have the same width D, got {train_feats.shape[1]} "
                         f"and {test_feats.shape[1]}")  # fmt: skip
    _check_probe_labels(train_y, train_feats.shape[0], "train_y")
    _check_probe_labels(test_y, test_feats.shape[0], "test_y")
    if train_feats.shape[0] < 5:
        raise ValueError(f"train_feats must hold at least 5 samples, got {train_feats.shape[0]}")
    if test_feats.shape[0] < 1:
        raise ValueError("test_feats must hold at least 1 sample, got 0")
    _check_feats(train_feats, "train_feats")
    _check_feats(test_feats, "test_feats")
    single = isinstance(l2, (int, float)) and not isinstance(l2, bool)
    try:
        if isinstance(l2, (str, bytes, bool)):
            raise TypeError
        l2s = [l2] if single else list(l2)
    except TypeError:
        raise TypeError(f"l2 must be a positive number or a non-empty sequence of them, got {l2!r:.60}") from None
    if not l2s:
        raise ValueError(f"l2 must be a positive number or a non-empty sequence of them, got {l2!r}")
    for i, v in enumerate(l2s):
        check_real("l2" if single else f"l2[{i}]", v, 0, low_open=True)
    l2s = [float(v) for v in l2s]

    k = int(max(train_y.max(), test_y.max())) + 1
    x, xt = train_feats.double(), test_feats.double().to(train_feats.device)
    y, yt = train_y.to(train_feats.device), test_y.to(train_feats.device)
    onehot = torch.nn.functional.one_hot(y, k).double()

    def accuracy(params, feats, labels):
        w, b, mean, std = params
        return float((((feats - mean) / std @ w + b).argmax(1) == labels).double().mean())

    best = l2s[0]
    if len(l2s) > 1:
        n_fit = x.shape[0] - x.shape[0] // 5
        scores = [accuracy(_ridge(x[:n_fit], onehot[:n_fit], v), x[n_fit:], y[n_fit:]) for v in l2s]
        best = l2s[max(range(len(l2s)), key=lambda i: (scores[i], l2s[i]))]  # ties → the stronger penalty
    params = _ridge(x, onehot, best)
    w, b, mean, std = params
    return ProbeResult(accuracy(params, xt, yt), accuracy(params, x, y), best, w, b, mean, std)


def probe_sweep(model: UNet, schedule, train, test, ts: Sequence[int], *, levels=None, generator=None,
                batch_size: int = 256, progress: bool = False) -> dict:  # fmt: skip
    """Linear-probe accuracy of every level's pooled features at every timestep in ``ts``, plus raw pixels.

    Args:
        model, schedule: the UNet and its training schedule.
        train, test: ``(x0 (N, C, H, W), labels (N,))`` pairs.
        ts: integer timesteps at which the images are noised.
        levels, generator, batch_size, progress: as in :func:`pooled_features` (the generator is used for the
            training images then the test images, timestep after timestep).

    Returns:
        ``{"ts": [...], "levels": [...], "accuracy": {str(t): {level: acc}}, "pixels": acc}``. Chapter §2.6.

    Raises:
        ValueError, TypeError: as :func:`pooled_features` and :func:`linear_probe`; ``train`` or ``test`` that are
            not ``(images, labels)`` pairs of tensors (labels: integers >= 0, one per image), ``ts`` that is not a
            non-empty sequence of integers in ``[0, T − 1]`` (all checked before the first forward pass).
    """
    _check_unet(model)
    check_schedule(schedule)
    if isinstance(ts, (str, bytes)) or not isinstance(ts, Sequence) or len(ts) == 0:
        raise ValueError(f"ts must hold at least one timestep (a sequence of integers), got {ts!r:.60}")
    for i, t in enumerate(ts):
        check_int(f"ts[{i}]", t, 0, schedule.T - 1)
    for name, pair in (("train", train), ("test", test)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(v, torch.Tensor) for v in pair):
            raise TypeError(f"{name} must be a pair (images, labels) of tensors, got {type(pair).__name__}")
    (x, y), (xt, yt) = train, test
    _check_x(model, x, "train[0]")
    _check_x(model, xt, "test[0]")
    _check_probe_labels(y, x.shape[0], "train[1]")  # before the first forward pass, named as the caller wrote it
    _check_probe_labels(yt, xt.shape[0], "test[1]")
    acc = {}
    for t in ts:
        f_train = pooled_features(model, x, t, schedule, levels=levels, generator=generator, batch_size=batch_size,
                                  progress=progress)  # fmt: skip
        f_test = pooled_features(model, xt, t, schedule, levels=levels, generator=generator, batch_size=batch_size,
                                 progress=progress)  # fmt: skip
        acc[str(t)] = {k: linear_probe(f_train[k], y, f_test[k], yt).accuracy for k in f_train}
    pixels = linear_probe(x.flatten(1), y, xt.flatten(1), yt).accuracy
    return {"ts": list(ts), "levels": list(next(iter(acc.values()))), "accuracy": acc, "pixels": pixels}
