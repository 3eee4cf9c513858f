"""Every sampler of §2.2 and §2.5 behind one call at a given budget of network evaluations (NFE), so chapters
and ``python -m diffu.bench nfe`` compare them at equal cost.

One ε-network (trained on a discrete VP schedule) drives the diffusion samplers — DDPM, DDIM, the probability-flow
ODE, the reverse SDE and predictor–corrector — through :class:`diffu.sde.FromDiscrete`; a velocity network drives
the flow-matching samplers.
"""

from __future__ import annotations

import torch

from . import flow
from .checks import check_bool, check_choice, check_int
from .samplers import ddim, ddpm
from .sampling import SPACINGS, check_sampler_args, check_schedule, initial_noise
from .schedules import Schedule
from .sde import VPSDE, FromDiscrete
from .sde_samplers import euler_maruyama, karras_timesteps, pf_ode, pf_ode_sigma, predictor_corrector

__all__ = ["SAMPLERS", "sample_at_nfe"]

#: Sampler name → a one-line description with its NFE per step; the keys are the ``name`` of
#: :func:`sample_at_nfe`.
SAMPLERS = {
    "ddpm": "DDPM ancestral (respaced), NFE = steps",
    "ddim": "DDIM η = 0 (= Euler on the PF-ODE in σ variables), NFE = steps",
    "pf-euler": "PF-ODE, Euler in t, NFE = steps",
    "pf-heun": "PF-ODE, Heun in σ variables (Karras et al.), NFE = 2·steps - 1",
    "em": "reverse SDE, Euler–Maruyama, NFE = steps",
    "pc": "predictor–corrector (EM + 1 Langevin step, snr 0.16), NFE = 2·steps",
    "fm-euler": "flow matching, Euler, NFE = steps",
    "fm-heun": "flow matching, Heun, NFE = 2·steps",
}


def sample_at_nfe(
    name: str,
    nfe: int,
    x_T: torch.Tensor,
    *,
    eps_model=None,
    velocity_model=None,
    schedule: Schedule | None = None,
    spacing: str = "linspace",
    clip_x0: bool = False,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, int]:
    """Run sampler ``name`` (a key of :data:`SAMPLERS`) with at most ``nfe`` network evaluations from ``x_T`` and
    return ``(x_0, nfe_used)``. Diffusion samplers need ``eps_model`` and ``schedule``; ``"fm-*"`` need
    ``velocity_model``. The SDE samplers use the VP SDE matched to ``schedule``
    (:meth:`~diffu.sde.VPSDE.from_schedule`).
    ``spacing`` picks the discrete samplers' timesteps ("linspace" runs from t = T-1, pure noise, to t = 0, like
    the continuous samplers run from t = 1 to t_min; "karras" is Karras et al.'s ρ = 7 grid, for ddim and
    pf-heun); ``clip_x0`` applies to DDPM only (off for 2D data).

    Raises:
        TypeError: a model that is not callable, ``schedule`` not a Schedule, a bad ``generator``, ``progress`` or
            ``clip_x0`` not bools, ``model_kwargs`` not a dict.
        ValueError: an unknown ``name`` or ``spacing``; ``nfe`` not an integer >= 2 (and, for the discrete samplers,
            more evaluations than the schedule has steps); the model the sampler needs missing; ``x_T`` neither a
            finite floating-point tensor nor a shape.
    """
    check_choice("name", name, sorted(SAMPLERS))
    check_int("nfe", nfe, 2)
    check_choice("spacing", spacing, (*SPACINGS, "karras"))
    check_bool("clip_x0", clip_x0)
    for arg, model in (("eps_model", eps_model), ("velocity_model", velocity_model)):
        if model is not None:
            check_sampler_args(model, generator=generator, progress=progress, model_kwargs=model_kwargs, name=arg)
    if schedule is not None:
        check_schedule(schedule)
    if isinstance(x_T, torch.Tensor):
        initial_noise(x_T, name="x_T")  # only checks a given state (floating, finite, batched): no draw
    elif (
        not isinstance(x_T, (tuple, list, torch.Size))
        or not x_T
        or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in x_T)
    ):
        raise ValueError(f"x_T must be a tensor or a shape tuple of positive ints, got {x_T!r:.80}")
    kw = dict(model_kwargs=model_kwargs, generator=generator, progress=progress)
    if name.startswith("fm-"):
        if velocity_model is None:
            raise ValueError(f"{name} needs velocity_model")
        steps = nfe if name == "fm-euler" else nfe // 2
        return flow.sample(velocity_model, x_T, steps=steps, solver=name[3:], **kw), steps * (1 + (name == "fm-heun"))
    if eps_model is None or schedule is None:
        raise ValueError(f"{name} needs eps_model and schedule")
    if name in ("ddpm", "ddim"):  # one evaluation per discrete step: at most T of them
        check_int("nfe", nfe, 2, schedule.T)
    elif name == "pf-heun":  # (nfe + 1) // 2 steps of the schedule
        check_int("nfe", nfe, 2, 2 * schedule.T)
    if name == "ddpm":
        if spacing == "karras":
            raise ValueError("spacing='karras' applies to ddim and pf-heun, not to ddpm")
        return ddpm(eps_model, x_T, schedule, steps=nfe, spacing=spacing, clip_x0=clip_x0, **kw), nfe
    if name == "ddim":
        if spacing == "karras":
            ts = karras_timesteps(schedule, nfe)
            return ddim(eps_model, x_T, schedule, timesteps=ts.tolist(), eta=0.0, **kw), len(ts)
        return ddim(eps_model, x_T, schedule, steps=nfe, eta=0.0, spacing=spacing, **kw), nfe
    if name == "pf-heun":
        steps = (nfe + 1) // 2
        x = pf_ode_sigma(eps_model, x_T, schedule, steps=steps, solver="heun", spacing=spacing, **kw)
        return x, 2 * steps - 1
    sde = VPSDE.from_schedule(schedule)
    cont = FromDiscrete(eps_model, schedule, sde)
    if name == "pf-euler":
        return pf_ode(cont, x_T, sde, steps=nfe, solver="euler", **kw), nfe
    if name == "em":
        return euler_maruyama(cont, x_T, sde, steps=nfe, **kw), nfe
    steps = nfe // 2
    return predictor_corrector(cont, x_T, sde, steps=steps, corrector_steps=1, **kw), 2 * steps
