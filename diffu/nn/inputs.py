"""What a network is given: the checks at the top of every public ``forward`` of :mod:`diffu.nn`, and of the
networks' configs (CONTRIBUTING.md, conventions 1, 2 and 8).

A network called with the wrong input otherwise fails deep inside a convolution, an attention or an embedding
lookup, or — worse — broadcasts and returns a plausible tensor. Each forward starts with these checks instead. They
look at shapes and dtypes only (cheap enough for every sampler step; no pass over the data: NaN in ``x`` or ``t``
propagates to the output), except that class labels and token ids — a few integers per sample — are range-checked.

* :func:`check_input` — ``x`` is a floating tensor ``(N, *shape)``: rank, channels, exact sizes, spatial multiples;
* :func:`timesteps_for` — ``t`` is a number or one timestep per sample, returned as a tensor on ``x``'s device;
* :func:`labels_for` — class labels, the null label of classifier-free guidance included, or ``None``;
* :func:`check_tokens` — token ids inside a vocabulary;
* :func:`check_int_tuple` and :func:`make_config` — the pieces of the config dataclasses' validation.
"""

from __future__ import annotations

import torch

from ..checks import check_floating, check_int, check_labels, check_rank, check_real, check_tensor

__all__ = ["check_input", "check_int_tuple", "check_tokens", "labels_for", "make_config", "timesteps_for"]

# names of the dimensions after the batch dimension, by their number (convention 1)
_DIMS = {1: ("D",), 2: ("T", "D"), 3: ("C", "H", "W")}


def check_input(
    x, shape, name: str = "x", *, dims=None, multiple: int = 1, why: str = "", size=None, of: str = "the network"
) -> None:
    """``x`` is a floating-point tensor of shape ``(N, *shape)``, ``None`` in ``shape`` leaving a size free, whose
    last two sizes (height and width) are multiples of ``multiple`` or, with ``size``, exactly ``size``.

    Args:
        x: the input to check.
        shape: the sizes after the batch dimension, e.g. ``(1, None, None)`` for one-channel images of any size or
            ``(None, 96)`` for tokens of width 96.
        name: the argument's name in the message.
        dims: names of the free sizes in the message (default ``C, H, W``; ``T, D``; ``D`` by rank).
        multiple: height and width must be divisible by it (a UNet that halves the resolution k times needs 2^k).
        why: a parenthesised reason for ``multiple`` in the message.
        size: the ``(height, width)`` a network was built for (a DiT's patch grid, a classifier's input), or None.
        of: who needs ``size``, for the message (``"the DiT"``).

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: wrong rank or size (a missing batch dimension is pointed out), an integer dtype (with a pointer
            to :func:`diffu.data.from_uint8`), or a height or width that is not a multiple of ``multiple`` or not
            ``size``.
    """
    shape = tuple(shape)
    dims = tuple(dims) if dims is not None else _DIMS.get(len(shape), tuple(f"d{i}" for i in range(len(shape))))
    want = "(N, " + ", ".join(n if s is None else str(s) for s, n in zip(shape, dims)) + ")"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of shape {want}, got {type(x).__name__}")
    fits = all(s is None or x.shape[i + 1] == s for i, s in enumerate(shape)) if x.ndim == len(shape) + 1 else False
    if not fits:
        single = x.ndim == len(shape) and all(s is None or x.shape[i] == s for i, s in enumerate(shape))
        hint = f" (one sample? add the batch dimension: {name}[None])" if single else ""
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}{hint}")
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        sizes = [n if s is None else str(s) for s, n in zip(shape, dims)][:-2] + [str(v) for v in size]
        sized = "(N, " + ", ".join(sizes) + ")"
        raise ValueError(f"{name} must be images of {of}'s size {size[0]}×{size[1]}, shape {sized}, got shape "
                         f"{tuple(x.shape)}")  # fmt: skip
    check_floating(x, name)
    if multiple > 1 and (x.shape[-1] % multiple or x.shape[-2] % multiple):
        raise ValueError(
            f"{name} must have a height and width divisible by {multiple}{why}, got {x.shape[-2]}×{x.shape[-1]}"
        )


def timesteps_for(t, n: int, device=None, name: str = "t") -> torch.Tensor:
    """``t`` as the timestep tensor of a batch of ``n``: a number or a 0-d tensor is broadcast to ``(n,)``; a
    ``(n,)`` (or ``(1,)``, broadcast by the network) tensor, list or array is kept (convention 2: float ``t``;
    integer timesteps are accepted and embedded as floats).

    Args:
        t: the timesteps.
        n: the batch size of the input.
        device: where the result lives (the input's device).
        name: the argument's name in the message.

    Returns:
        ``torch.as_tensor(t, device=device)``, expanded to ``(n,)`` when it is a scalar.

    Raises:
        TypeError: ``t`` is neither a number nor a tensor (or a sequence of numbers).
        ValueError: a NaN or infinite number, a bool or complex dtype, or a shape other than ``()``, ``(1,)`` and
            ``(n,)``.
    """
    if not isinstance(t, torch.Tensor):
        if isinstance(t, (int, float)) or type(t).__module__ == "numpy" and getattr(t, "ndim", 1) == 0:
            check_real(name, t)
        try:
            t = torch.as_tensor(t, device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a number or a tensor of shape ({n},), got {type(t).__name__}") from err
    else:
        t = torch.as_tensor(t, device=device)
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold real (float or integer) timesteps, got {t.dtype}")
    if t.ndim == 0:
        return t.expand(n)
    if t.ndim != 1 or t.shape[0] not in (n, 1):
        raise ValueError(f"{name} must be a number or a tensor of shape (N,) = ({n},), got shape {tuple(t.shape)}")
    return t


def labels_for(
    y,
    num_classes: int | None,
    n: int | None,
    device=None,
    name: str = "y",
    *,
    null: bool = True,
    owner: str = "this network",
    values: bool = True,
) -> torch.Tensor | None:
    """The class labels a conditional network embeds: ``y`` checked by :func:`diffu.checks.check_labels`, or the
    null labels when ``y`` is None.

    Args:
        y: ``(n,)`` integer labels, or None.
        num_classes: the network's number of classes (None: an unconditional network, which refuses labels).
        n: the batch size (None: any ``(N,)``; then ``y`` must be given).
        device: where the labels go (the input's device).
        name: the argument's name in the message.
        null: the label ``num_classes`` — "no class", the label dropout of classifier-free guidance — is allowed.
        owner: the network, for the message.
        values: check the range too (False where an embedder called next checks it, so that the labels are read
            once per call).

    Returns:
        ``y`` on ``device``; ``(n,)`` null labels ``num_classes`` when ``y`` is None; None for an unconditional
        network.

    Raises:
        ValueError: labels given to an unconditional network, a non-tensor, a floating dtype, a shape other than
            ``(n,)``, or labels outside ``[0, num_classes]`` (``[0, num_classes)`` without ``null``).
    """
    if num_classes is None:
        if y is not None:
            raise ValueError(f"{name} was given but {owner} has no class conditioning (num_classes=None)")
        return None
    if y is None and n is not None:
        return torch.full((n,), num_classes, device=device, dtype=torch.long)
    high = num_classes if null else num_classes - 1
    what = f" ({num_classes} = the null label)" if null else ""
    want = f"{name} must be {'(N,)' if n is None else f'({n},)'} integer labels in [0, {high}]{what}"
    try:
        check_tensor(y, name)
        if n is None:
            check_rank(y, 1, name, "(N,)")
        if values:
            check_labels(y, num_classes, n, name, null=null)
        elif y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or (n is not None and y.shape != (n,)):
            raise ValueError(f"got {y.dtype} of shape {tuple(y.shape)}")
    except ValueError as err:
        raise ValueError(f"{want}: {err}") from None
    return y if device is None else y.to(device)


def check_tokens(ids, vocab_size: int, max_len: int | None = None, name: str = "ids") -> None:
    """``ids`` is an integer tensor ``(N, L)`` of token ids in ``[0, vocab_size)`` with ``L <= max_len``.

    Raises:
        TypeError: ``ids`` is not a tensor.
        ValueError: wrong rank, a non-integer dtype, too long a sequence, or an id outside the vocabulary.
    """
    longest = "" if max_len is None else f" with L <= {max_len}"
    want = f"{name} must be (N, L) integer token ids in [0, {vocab_size - 1}]{longest}"
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{want}, got {type(ids).__name__}")
    if ids.ndim != 2 or (max_len is not None and ids.shape[1] > max_len):
        raise ValueError(f"{want}, got shape {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{want}, got {ids.dtype}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"{want}, got ids in [{int(ids.min())}, {int(ids.max())}] (outside the vocabulary)")


def check_int_tuple(name: str, value, low: int = 1, *, empty: bool = False) -> tuple:
    """``value`` is a tuple or list of integers ``>= low`` (non-empty unless ``empty``); returns it as a tuple
    (configs read back from JSON hold lists).

    Raises:
        TypeError: ``value`` is not a tuple or list.
        ValueError: an entry that is not an integer ``>= low``, or an empty sequence.
    """
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of integers >= {low}, got {type(value).__name__} {value!r:.60}")
    for v in value:
        check_int(f"each entry of {name}", v, low)
    if not value and not empty:
        raise ValueError(f"{name} must be a non-empty tuple of integers >= {low}, got {value!r}")
    return tuple(int(v) for v in value)


def make_config(cls, config, kwargs: dict):
    """The config of a network built as ``Net(config)`` or ``Net(**fields)`` (CONTRIBUTING.md, "How to add a
    model"): ``config`` itself (an instance of the dataclass ``cls``, validated again by its ``__post_init__`` in
    case a field was changed after construction), or ``cls(**kwargs)``.

    Raises:
        TypeError: ``config`` is not a ``cls``, both ``config`` and keyword arguments are given (the keywords would
            be ignored), or a keyword is not a field of ``cls``.
    """
    if config is None:
        try:
            return cls(**kwargs)
        except TypeError as err:  # an unknown field: the dataclass's own message names it
            raise TypeError(f"{cls.__name__}: {err}") from None
    if not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__} or None, got {type(config).__name__}")
    if kwargs:
        raise TypeError(f"give either config or keyword arguments, not both (got config and {sorted(kwargs)})")
    if hasattr(config, "__post_init__"):
        config.__post_init__()
    return config
