"""One sampler call per (method, NFE) for chapter §7's frontier plot: class-balanced samples of the teacher and of
every few-step student, drawn the same way so that FD-FMNIST, accuracy and seconds per image compare.

:func:`frontier_samples` draws ``n`` samples with labels ``i mod 10`` from the noise of
:func:`diffu.guidance.class_batches` (sample ``i`` depends only on the seed, the batch size and ``i``), and returns
them with the number of network evaluations per image that the method spent. ``python -m diffu.bench distill``
and the §7 pages call it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..checks import check_choice, check_int, check_real
from ..flow import euler
from ..guidance import ClassifierFreeGuidance, class_batches
from ..nn.guide import GuidedUNet
from ..samplers import ddim
from ..schedules import linear_schedule
from .adversarial import add_sample
from .consistency import consistency_sample
from .guide import guided_eps_cost

__all__ = ["FRONTIER_METHODS", "frontier_samples"]

#: The methods :func:`frontier_samples` knows, and how each spends its NFE.
#: "ddim" — the teacher, deterministic DDIM on the "trailing" grid (x̂_0 clipped), NFE = steps;
#: "cfg" — the teacher with classifier-free guidance at ``scale``, two passes a step, NFE = 2·steps;
#: "flow_euler" — the flow-matching model of §2.5 (fmnist_flow), Euler steps, NFE = steps;
#: "progressive" — a progressive-distillation student, DDIM on its own trailing grid, NFE = steps;
#: "consistency" — a consistency model, multistep consistency sampling, NFE = steps;
#: "adversarial" — an ADD student, denoise/re-noise on its training timesteps (steps ≤ 4), NFE = steps;
#: "guided" — the frozen teacher with a plug-and-play guide at ``scale``, one pass a step, NFE = (1 + the guide's
#: share of the teacher's multiply-adds)·steps (:func:`~diffu.distill.guide.guided_eps_cost`).
FRONTIER_METHODS = ("ddim", "cfg", "flow_euler", "progressive", "consistency", "adversarial", "guided")


def _sampler(method: str, model: Callable, steps: int, scale: float) -> Callable:
    sched = linear_schedule()
    if method in ("ddim", "progressive"):
        return lambda x, kw, g: ddim(model, x, sched, steps=steps, spacing="trailing", clip_x0=True, model_kwargs=kw,
                                     generator=g, progress=False)  # fmt: skip
    if method == "cfg":
        guided = ClassifierFreeGuidance(model, scale, {"y": torch.tensor([model.num_classes])})
        return lambda x, kw, g: ddim(guided, x, sched, steps=steps, spacing="trailing", clip_x0=True, model_kwargs=kw,
                                     generator=g, progress=False)  # fmt: skip
    if method == "guided":
        return lambda x, kw, g: ddim(model, x, sched, steps=steps, spacing="trailing", clip_x0=True,
                                     model_kwargs={**kw, "scale": scale}, generator=g, progress=False)  # fmt: skip
    if method == "flow_euler":
        return lambda x, kw, g: euler(model, x, steps=steps, model_kwargs=kw, generator=g, progress=False).clamp(-1, 1)
    if method == "adversarial":
        return lambda x, kw, g: add_sample(model, x, sched, steps=steps, model_kwargs=kw, generator=g)
    return lambda x, kw, g: consistency_sample(model, x, sched, steps=steps, model_kwargs=kw, generator=g)


def frontier_samples(method: str, model: Callable, n: int, *, steps: int, seed: int = 0, batch: int = 128,
                     scale: float = 1.0, device=None) -> dict:  # fmt: skip
    """``n`` class-balanced samples of ``model`` with ``method`` (:data:`FRONTIER_METHODS`) at ``steps`` steps.

    Args:
        method: one of :data:`FRONTIER_METHODS`.
        model: the class-conditional network the method samples (with ``num_classes`` and ``config``).
        n: samples (an integer ≥ 1); labels ``i mod num_classes``.
        steps: sampler steps (an integer in [1, 1000]; at most 4 for "adversarial").
        seed: the noise seed (:func:`diffu.guidance.class_batches`).
        batch: the batch size.
        scale: the guidance scale of "cfg" and "guided" (a finite number ≥ 0; ignored otherwise).
        device: where the sampling runs.

    Returns:
        A dict with ``"x"`` the ``(n, C, H, W)`` samples on the CPU, ``"y"`` the ``(n,)`` labels, ``"nfe"`` the
        evaluations of the teacher's size per image (a float for "guided": the guide's share counts) and
        ``"seconds_per_image"`` the wall time over ``n``.

    Raises:
        ValueError, TypeError: an unknown ``method``, counts or ``scale`` out of range, a model without
            ``num_classes``/``config``.
    """
    check_choice("method", method, FRONTIER_METHODS)
    check_int("n", n, 1)
    check_int("steps", steps, 1, 4 if method == "adversarial" else 1000)
    check_int("batch", batch, 1)
    check_real("scale", scale, 0)
    k, cfg = getattr(model, "num_classes", None), getattr(model, "config", None)
    if method == "guided":
        cfg = getattr(getattr(model, "base", None), "config", None)
        if not isinstance(model, GuidedUNet):
            raise ValueError(f"model must be a GuidedUNet for method 'guided', got {type(model).__name__}")
    if not isinstance(k, int) or cfg is None:
        raise ValueError(f"model must be a class-conditional network with .num_classes and .config, got "
                         f"{type(model).__name__}")  # fmt: skip
    run = _sampler(method, model, steps, scale)
    xs, ys = [], []
    t0 = time.perf_counter()
    shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    for x_T, y, g in class_batches(n, batch, seed, device, shape=shape, num_classes=k):
        xs.append(run(x_T, {"y": y}, g).cpu())
        ys.append(y.cpu())
    secs = time.perf_counter() - t0
    if method == "guided":
        nfe = guided_eps_cost(model)["nfe_per_step"] * steps
    else:
        nfe = 2 * steps if method == "cfg" else steps
    return {"x": torch.cat(xs), "y": torch.cat(ys), "nfe": nfe, "seconds_per_image": secs / n}
