"""Classifier guidance and classifier-free guidance (chapter §2.3).

- Classifier guidance (Dhariwal & Nichol 2021): a noise-aware classifier ``p_φ(y | x_t, t)`` adds
  ``s ∇_x log p_φ(y | x_t)`` to the score. :class:`ClassifierGuidance` is the ``cond_fn`` that
  :func:`diffu.samplers.ddpm` (mean shift) and :func:`diffu.samplers.ddim` (ε shift) accept.
- Classifier-free guidance (Ho & Salimans 2022) mixes the conditional and unconditional predictions of one network
  trained with a null condition: ``ε̃ = ε_u + s (ε_c − ε_u)``. ``s = 1`` is the conditional model, ``s = 0`` the
  unconditional one; the paper writes ``ε̃ = (1 + w) ε_c − w ε_u``, i.e. ``s = 1 + w``
  (:meth:`ClassifierFreeGuidance.from_w`).
- :func:`guided_samples` draws class-balanced samples (:func:`class_batches`) with either kind of guidance: the
  sweeps of §2.3 and of ``python -m diffu.bench guidance``.

Related ideas live in their own modules: the caption sampler of the text-to-image model (CFG against the empty
caption) in :mod:`diffu.text_to_image`, and diffusion models as plug-and-play priors (Graikos et al. 2022, §2.4)
in :mod:`diffu.diffusion_priors`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .checks import (
    check_callable,
    check_choice,
    check_device,
    check_finite,
    check_floating,
    check_int,
    check_rank,
    check_real,
    check_tensor,
)
from .samplers import ddim, ddpm
from .sampling import check_schedule
from .schedules import linear_schedule

__all__ = [
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "balanced_labels",
    "check_labels",
    "class_batches",
    "classifier_accuracy_by_t",
    "guided_samples",
]

# The largest seed of class_batches and guided_samples: their generators are seeded seed · 100003 + start, which
# torch.Generator.manual_seed takes up to 2**64 − 1; 2**40 is plenty for any experiment.
_MAX_SEED = 2**40


class ClassifierFreeGuidance:
    """``ClassifierFreeGuidance(model, scale, null)(x_t, t, **cond) = ε_u + scale (ε_c − ε_u)``.

    Both branches run in one batched forward pass of ``2N`` inputs. ``null`` gives the unconditional inputs: a dict
    with the same keys as ``cond`` whose tensors have batch size 1 (broadcast) or N, e.g. ``{"y": tensor([10])}`` for
    the class-conditional UNet or ``{"text": model.tokenizer([""])}`` for the text-to-image MMDiT. The wrapper has
    the model's ``prediction`` attribute, so every sampler of the book accepts it in place of the model.

    Args:
        model: the conditional network ``model(x_t, t, **cond)`` (any callable).
        scale: the guidance scale, a finite number >= 0 (1: the conditional model, 0: the unconditional one).
        null: a non-empty dict of tensors with a batch dimension (1 or N); null labels ``y`` must lie in
            ``[0, model.num_classes]`` when the model has ``num_classes``.

    When called, ``x`` is checked first — by the model's own ``check_input(x, name)`` where it has one (the diffu
    networks), so a wrong rank or channel count is reported against ``x`` — then the labels ``y`` against ``x``'s
    batch size. NaN or inf in ``x`` or ``t`` propagates to the output: the call is made at every sampler step, so
    it checks shapes and dtypes only, not the values.

    Raises:
        ValueError: a scale that is not a finite number >= 0, an empty ``null``, null tensors without a batch
            dimension or null labels out of range; when called, an ``x`` the model's ``check_input`` refuses,
            conditioning whose keys, batch size or shape do not match ``x`` and ``null``, ``t`` of another batch
            size, labels ``y`` that are not integers or out of range.
        TypeError: a model that is not callable, a ``null`` that is not a dict of tensors.
    """

    def __init__(self, model, scale: float, null: dict):
        check_callable("model", model)
        check_real("scale", scale, 0)
        if not isinstance(null, dict):
            raise TypeError(f"null must be a dict such as {{'y': torch.tensor([10])}}, got {type(null).__name__}")
        if not null:
            raise ValueError("null must give the unconditional inputs, e.g. {'y': torch.tensor([10])}")
        for key, u in null.items():
            if not isinstance(u, torch.Tensor) or u.ndim == 0:
                got = f"shape {tuple(u.shape)}" if isinstance(u, torch.Tensor) else type(u).__name__
                raise TypeError(f"null[{key!r}] must be a tensor with a batch dimension (1 or N), got {got}")
        k = getattr(model, "num_classes", None)
        if "y" in null and isinstance(k, int) and not isinstance(k, bool):
            check_labels(null["y"].reshape(-1), k + 1, name="null['y']")
        self.model, self.scale, self.null = model, float(scale), null
        self.prediction = getattr(model, "prediction", "eps")
        self.learn_sigma = getattr(model, "learn_sigma", False)

    @classmethod
    def from_w(cls, model, w: float, null: dict) -> ClassifierFreeGuidance:
        """The paper's parametrisation ``ε̃ = (1 + w) ε_c − w ε_u`` (Ho & Salimans 2022, Eq. 6): ``scale = 1 + w``;
        ``w = 0`` is the conditional model, ``w = -1`` the unconditional one.

        Raises:
            ValueError: ``w`` is not a finite number >= -1; otherwise as the class.
        """
        check_real("w", w)
        if w < -1:
            raise ValueError(f"w must be >= -1 (scale = 1 + w >= 0), got {w}")
        return cls(model, 1.0 + w, null)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        if set(cond) != set(self.null):
            raise ValueError(f"conditioning keys {sorted(cond)} do not match the null condition's {sorted(self.null)}")
        check_tensor(x, "x")
        if x.ndim == 0:
            raise ValueError("x must have a batch dimension (N, ...), got a 0-d tensor")
        _check_model_input(self.model, x)
        n = x.shape[0]
        k = getattr(self.model, "num_classes", None)
        if "y" in cond and k is not None:  # class labels: 0 … k − 1, or k (the null label) for an unguided row
            check_labels(cond["y"], k + 1, n=n, device=x.device, name="y", of="x's batch size")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(n) if t.ndim == 0 else t
        if tuple(t.shape) != (n,):
            raise ValueError(f"t must be a number or have shape ({n},) (x's batch), got shape {tuple(t.shape)}")
        both = {}
        for key, c in cond.items():
            if not isinstance(c, torch.Tensor) or c.ndim == 0 or c.shape[0] != n:
                got = f"shape {tuple(c.shape)}" if isinstance(c, torch.Tensor) else type(c).__name__
                raise ValueError(f"{key} must be a tensor with x's batch size {n}, got {got}")
            u = self.null[key].to(c.device)
            if u.shape[0] not in (1, n) or u.shape[1:] != c.shape[1:]:
                raise ValueError(
                    f"null[{key!r}] must have shape (1 or {n}, *{tuple(c.shape[1:])}) to pair with {key}, got "
                    f"{tuple(u.shape)}"
                )
            both[key] = torch.cat([c, u.expand(n, *u.shape[1:]) if u.shape[0] == 1 else u])
        out_c, out_u = self.model(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
        if self.learn_sigma:  # [ε̂, v]: guide the ε half only and keep the conditional variance output, as DiT does
            c = out_c.shape[1] // 2
            return torch.cat([torch.lerp(out_u[:, :c], out_c[:, :c], self.scale), out_c[:, c:]], dim=1)
        return torch.lerp(out_u, out_c, self.scale)  # exact ε_c at scale 1 and ε_u at scale 0


# ----------------------------------------------------------------------------------------------------------------
# Classifier guidance
# ----------------------------------------------------------------------------------------------------------------


def check_labels(
    y, num_classes: int, n: int | None = None, device=None, name: str = "labels", *, of: str | None = None
) -> torch.Tensor:
    """``y`` as ``long`` class labels in ``[0, num_classes)``, validated: integers only, a scalar (expanded to
    ``(n,)`` when ``n`` is given) or shape ``(n,)`` (any ``(N,)`` without ``n``), on ``device``.

    Shared by the guidance wrappers here and the classifier constraint of :mod:`diffu.diffusion_priors`; unlike
    :func:`diffu.checks.check_labels` it also converts (a Python int, a scalar) and returns the labels. (It keeps its
    own messages — ``"labels must be integers"``, ``"… must be a scalar or (n,)"`` — which its callers' tests pin.)

    Args:
        y: an integer, a sequence of integers or an integer tensor.
        num_classes: the number of classes, an integer >= 1.
        n: the batch size the labels must match (an integer >= 0), or None.
        device: where the labels go: None, a ``torch.device`` or a string torch parses.
        name: the argument's name in the messages (callers pass their own, e.g. ``"y"``).
        of: where ``n`` comes from, for the message (``"x's batch size"``); default ``"n = …"``.

    Returns:
        The labels as a ``long`` tensor of shape ``()`` or ``(N,)`` (``(n,)`` when ``n`` is given).

    Raises:
        ValueError: ``num_classes``, ``n`` or ``device`` not as above; labels that are not integers, of another
            shape, or out of range (the message names ``name``).
        TypeError: ``y`` is not a number, a sequence or a tensor; ``device`` of the wrong type.
    """
    check_int("num_classes", num_classes, 1)
    if n is not None:
        check_int("n", n, 0)
    device = check_device("device", device)
    try:
        y = torch.as_tensor(y, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"{name} must be an integer, a sequence of integers or a tensor, got {type(y).__name__}"
        ) from None
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f"{name} must be integers, got dtype {y.dtype}")
    if y.ndim == 0 and n is not None:
        y = y.expand(n)
    if n is not None and y.shape != (n,):
        raise ValueError(f"{name} must be a scalar or ({n},) ({of or f'n = {n}'}), got shape {tuple(y.shape)}")
    if y.ndim > 1:
        raise ValueError(f"{name} must be a scalar or (N,), got shape {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        got = y.tolist() if y.numel() <= 16 else f"values in [{int(y.min())}, {int(y.max())}]"
        raise ValueError(f"{name} must be in [0, {num_classes - 1}], got {got}")
    return y.long()


def _check_model_input(model, x: torch.Tensor, name: str = "x") -> None:
    """Let a network that checks its own input — the diffu networks' ``check_input(x, name)`` — check ``x`` before
    the labels are matched against its batch size, so that a wrong rank or channel count is reported against
    ``x`` (not as a label mismatch). Other callables are left to fail in their own call."""
    check = getattr(model, "check_input", None)
    if callable(check) and isinstance(model, torch.nn.Module):
        check(x, name)


class ClassifierGuidance:
    """``ClassifierGuidance(classifier, scale, y)(x_t, t) = scale · ∇_x log p_φ(y | x_t, t)``: the ``cond_fn`` of
    :func:`~diffu.samplers.ddpm` and :func:`~diffu.samplers.ddim` (Dhariwal & Nichol 2021; guided-diffusion's
    ``cond_fn`` with its ``classifier_scale``).

    ``classifier(x_t, t) -> logits`` must be noise-aware (e.g. the shipped ``fmnist_noisy_classifier``); ``y`` is
    one class for the whole batch or ``(N,)`` labels; with ``y=None`` the labels come from the sampler's
    ``model_kwargs["y"]`` (guiding a class-conditional model towards its own labels). ``scale = 0`` returns zeros
    without running the classifier, so the sampler is exactly the unguided one.

    Args:
        classifier: ``classifier(x_t, t) -> (N, num_classes)`` logits, with an integer ``num_classes`` attribute.
        scale: the classifier scale, a finite number >= 0 (negative scales would push away from ``y``).
        y: an integer class, ``(N,)`` integer labels in ``[0, num_classes)``, or None.

    When called, ``x`` is checked first — by the classifier's own ``check_input(x, name)`` where it has one (the
    diffu networks) — then the labels against its batch size. NaN or inf in ``x`` or ``t`` propagates to the
    gradient: the call is made at every sampler step, so it checks shapes and dtypes only, not the values.

    Raises:
        ValueError: a scale that is not a finite number >= 0, a classifier without an integer ``num_classes``,
            labels ``y`` that are not integers in range; when called, an ``x`` the classifier's ``check_input``
            refuses, no labels, labels of another batch size, logits that are not ``(N, num_classes)``.
        TypeError: a classifier that is not callable; a ``y`` that is neither a number, a sequence nor a tensor.
    """

    def __init__(self, classifier, scale: float, y=None):
        check_callable("classifier", classifier)
        check_real("scale", scale, 0)
        self.classifier, self.scale = classifier, float(scale)
        self.num_classes = getattr(classifier, "num_classes", None)
        if self.num_classes is None:
            raise ValueError("classifier must have a num_classes attribute")
        check_int("classifier.num_classes", self.num_classes, 1)
        self.y = None if y is None else check_labels(y, self.num_classes, name="y")

    def log_prob(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        """``log p_φ(y | x_t, t)`` per image, ``(N,)``, for a floating-point batch ``x`` ``(N, …)``."""
        y = self.y if y is None else y
        if y is None:
            raise ValueError("no labels: give y to ClassifierGuidance or pass y in the sampler's model_kwargs")
        check_floating(x, "x")
        if x.ndim == 0:
            raise ValueError("x must have a batch dimension (N, ...), got a 0-d tensor")
        _check_model_input(self.classifier, x)
        y = check_labels(y, self.num_classes, n=x.shape[0], device=x.device, name="y", of="x's batch size")
        logits = self.classifier(x, t)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (x.shape[0], self.num_classes):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"classifier must return ({x.shape[0]}, {self.num_classes}) logits, got {got}")
        logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        return F.log_softmax(logits, dim=-1).gather(1, y[:, None])[:, 0]

    def gradient(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        """``∇_x log p_φ(y | x_t, t)`` (each image's log-probability depends only on that image)."""
        check_floating(x, "x")
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            return torch.autograd.grad(self.log_prob(x_in, t, y).sum(), x_in)[0].to(x.dtype)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y=None, **_) -> torch.Tensor:
        if self.scale == 0:
            return torch.zeros_like(x)
        return self.scale * self.gradient(x, t, self.y if self.y is not None else y)


def _check_classifier(classifier, name: str = "classifier") -> int:
    """A classifier with an integer ``num_classes`` and parameters (its device is read from them); returns
    ``num_classes``."""
    if not isinstance(classifier, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module (a noise-aware classifier), got {type(classifier).__name__}")
    k = getattr(classifier, "num_classes", None)
    if k is None:
        raise ValueError(f"{name} must have a num_classes attribute")
    check_int(f"{name}.num_classes", k, 1)
    if next(iter(classifier.parameters()), None) is None:
        raise ValueError(f"{name} must have parameters (its device is read from them)")
    return k


@torch.no_grad()
def classifier_accuracy_by_t(classifier, schedule, x0, y, edges=(0, 1, 100, 300, 500, 700, 1000), batch=500, seed=0):
    """Test accuracy of a noise-aware ``classifier(x_t, t)`` on ``x_t = q_sample(x0, t)`` with ``t`` drawn uniformly
    from each range ``[edges[i], edges[i+1])`` (the first default range is t = 0, the nearly clean image).
    Returns ``{"a-b": accuracy}``; seeded, so the same call gives the same numbers.

    Args:
        classifier: a noise-aware ``torch.nn.Module`` with ``num_classes``; schedule: its
            :class:`~diffu.schedules.Schedule`.
        x0: clean images ``(N, C, H, W)``, floating point and finite, N >= 1; y: ``(N,)`` integer labels.
        edges: at least two strictly increasing integers in ``[0, T]``.
        batch: images per forward pass (an integer >= 1); seed: an integer >= 0.

    Raises:
        ValueError, TypeError: naming the argument that is not as above.
    """
    k = _check_classifier(classifier)
    check_schedule(schedule)
    check_rank(x0, 4, "x0", "(N, C, H, W)")
    check_floating(x0, "x0")
    if len(x0) == 0:
        raise ValueError("x0 must hold at least one image, got shape " + str(tuple(x0.shape)))
    _check_model_input(classifier, x0, "x0")
    check_finite(x0, "x0")
    try:
        edges = list(edges)
    except TypeError:
        raise TypeError(f"edges must be a sequence of integers, got {type(edges).__name__}") from None
    for i, e in enumerate(edges):
        check_int(f"edges[{i}]", e, 0, schedule.T)
    edges = [int(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 0 or edges[-1] > schedule.T:
        raise ValueError(f"edges must increase strictly within [0, {schedule.T}], got {edges}")
    check_int("batch", batch, 1)
    check_int("seed", seed, 0, _MAX_SEED)
    y = check_labels(y, k, n=len(x0), name="y", of="x0's batch size")
    dev = next(classifier.parameters()).device
    g = torch.Generator().manual_seed(seed)
    out = {}
    for a, b in zip(edges, edges[1:]):
        correct = 0
        for xb, yb in zip(x0.split(batch), y.split(batch)):
            t = torch.randint(a, b, (len(xb),), generator=g)
            noise = torch.randn(xb.shape, generator=g)
            x_t = schedule.q_sample(xb, t, noise).to(dev)
            correct += int((classifier(x_t, t.float().to(dev)).argmax(1).cpu() == yb).sum())
        out[f"{a}-{b - 1}" if b - a > 1 else f"{a}"] = correct / len(x0)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Class-balanced guided sampling (the sweeps of §2.3)
# ----------------------------------------------------------------------------------------------------------------


def balanced_labels(n: int, num_classes: int = 10, device=None) -> torch.Tensor:
    """Class-balanced labels ``i mod num_classes`` for ``i = 0 … n − 1``, ``(n,)`` long.

    Raises:
        ValueError: ``n`` not an integer >= 0, ``num_classes`` not an integer >= 1, a device torch cannot parse.
        TypeError: a device of the wrong type.
    """
    check_int("n", n, 0)
    check_int("num_classes", num_classes, 1)
    device = check_device("device", device)
    return (torch.arange(n, device=device) % num_classes).long()


def _check_shape(shape) -> tuple:
    if not isinstance(shape, (tuple, list, torch.Size)) or not shape:
        raise TypeError(f"shape must be a non-empty tuple of positive integers such as (1, 28, 28), got {shape!r:.60}")
    for i, d in enumerate(shape):
        check_int(f"shape[{i}]", d, 1)
    return tuple(shape)


def class_batches(
    n: int, batch: int, seed: int, device=None, shape: tuple = (1, 28, 28), num_classes: int = 10
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Generator]]:
    """Batches ``(x_T, labels, generator)`` for ``n`` class-balanced samples (label ``i mod num_classes``) of images
    of ``shape`` ``(C, H, W)``: ``x_T`` ``(m, C, H, W)`` standard normal, ``labels`` ``(m,)``.

    Each batch has its own generator on ``device``, seeded ``seed · 100003 + start`` (``start``: the index of its
    first sample) and used first for ``x_T``; the sampler may go on drawing from it. So sample ``i`` depends only on
    ``(seed, batch, i)``, not on how many samples are drawn in all.

    Args:
        n: the number of samples (an integer >= 0); batch: the batch size (an integer >= 1).
        seed: an integer in [0, 2**40]; device: where the noise and generators live.
        shape: a sample's shape, a non-empty tuple of positive integers; num_classes: an integer >= 1.

    Raises:
        ValueError, TypeError: naming the argument, when the call is made (not at the first batch).
    """
    check_int("batch", batch, 1)
    check_int("seed", seed, 0, _MAX_SEED)
    shape = _check_shape(shape)
    labels = balanced_labels(n, num_classes, device)
    device = check_device("device", device)
    return _class_batches(n, batch, seed, device, shape, labels)


def _class_batches(n, batch, seed, device, shape, labels):
    for start in range(0, n, batch):
        m = min(batch, n - start)
        g = torch.Generator(device=device).manual_seed(seed * 100_003 + start)
        yield torch.randn(m, *shape, generator=g, device=device), labels[start : start + m], g


def guided_samples(model, n, *, kind="cfg", scale=1.0, classifier=None, sampler="ddim", steps=50, batch=128,
                   seed=0, device=None):  # fmt: skip
    """``n`` class-balanced samples (label ``i mod num_classes``) of a class-conditional ε-model such as the shipped
    ``fmnist_unet``, on the CPU:

    - ``kind="cfg"``: classifier-free guidance at ``scale`` (null label ``model.num_classes``);
    - ``kind="classifier"``: the unconditional model (null label) with classifier guidance at ``scale`` from the
      noise-aware ``classifier`` towards each sample's label.

    ``sampler``: "ddim" (η = 0, DDIM-``steps``, x̂_0 clipped) or "ddpm" (ancestral, respaced to ``steps``), on the
    linear schedule. The noise comes from :func:`class_batches` (``seed``, ``batch``); the image shape from
    ``model.config`` (``in_channels``, ``image_size``). Chapter §2.3 and ``python -m diffu.bench guidance``.

    Args:
        model: the class-conditional network (callable, with ``.config`` and an integer ``.num_classes``).
        n: the number of samples, an integer >= 1.
        kind, sampler: the choices above; scale: a finite number >= 0.
        classifier: the noise-aware classifier of ``kind="classifier"`` (with ``num_classes``).
        steps: sampling steps in [1, 1000]; batch: an integer >= 1; seed: an integer in [0, 2**40].
        device: where the sampling runs (a torch.device, a string or None).

    Raises:
        ValueError, TypeError: naming the argument that is not as above (checked before any sampling).
    """
    check_choice("kind", kind, ("cfg", "classifier"))
    check_choice("sampler", sampler, ("ddim", "ddpm"))
    if kind == "classifier" and classifier is None:
        raise ValueError("kind='classifier' needs a noise-aware classifier, got classifier=None")
    cfg, k = getattr(model, "config", None), getattr(model, "num_classes", None)
    if cfg is None or k is None:
        raise ValueError("model must be a class-conditional network with .config (in_channels, image_size) and "
                         f".num_classes, got {type(model).__name__}")  # fmt: skip
    check_callable("model", model)
    check_int("model.num_classes", k, 1)
    check_int("n", n, 1)
    check_real("scale", scale, 0)
    if kind == "classifier":
        check_callable("classifier", classifier)
        if getattr(classifier, "num_classes", None) is None:
            raise ValueError("classifier must have a num_classes attribute")
    sched = linear_schedule()
    check_int("steps", steps, 1, sched.T)
    null = torch.tensor([k])
    out = []
    for x_T, y, g in class_batches(n, batch, seed, device, shape=(cfg.in_channels, cfg.image_size, cfg.image_size),
                                   num_classes=k):  # fmt: skip
        if kind == "cfg":
            net, kwargs, cond_fn = ClassifierFreeGuidance(model, scale, {"y": null}), {"y": y}, None
        else:
            net, kwargs = model, {"y": torch.full_like(y, k)}
            cond_fn = ClassifierGuidance(classifier, scale, y)
        if sampler == "ddim":
            x = ddim(net, x_T, sched, steps=steps, clip_x0=True, model_kwargs=kwargs, cond_fn=cond_fn, generator=g,
                     progress=False)  # fmt: skip
        else:
            x = ddpm(net, x_T, sched, steps=steps, model_kwargs=kwargs, cond_fn=cond_fn, generator=g, progress=False)
        out.append(x.cpu())
    return torch.cat(out)
