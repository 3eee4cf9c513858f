"""Lab 5 (DDIM with η, DDIM inversion): the answers of its delegation and comparison-patching attacks, by the
``grade_id`` of the solution cell they replace (``tests/labs_attacks/attacks.py`` imports them)."""

# answers that call the diffu functions the lab asks to write: correct, and refused with Delegation (some through
# aliases captured before the checks run, one through a method of Schedule)
DELEGATE = {
    "ddim_step": """
from diffu.samplers import ddim_step as _ddim_step
from diffu.schedules import Schedule


def _schedule(alpha_bar):
    ab = alpha_bar.double().cpu()
    return Schedule(1 - ab / torch.cat([ab.new_ones(1), ab[:-1]]))


def ddim_step(x_t, eps, t, t_prev, alpha_bar, eta, noise=None):
    return _ddim_step(_schedule(alpha_bar), x_t, t, t_prev, eps, eta=eta, noise=noise if eta > 0 else None)[0]
""",
    "ddim_sample": """
from diffu import samplers as _samplers


@torch.no_grad()
def ddim_sample(model, x_T, alpha_bar, timesteps, eta=0.0, generator=None):
    return _samplers.ddim(model, x_T, _schedule(alpha_bar), timesteps=[int(t) for t in timesteps], eta=eta,
                          generator=generator, progress=False)
""",
    "ddim_invert": """
@torch.no_grad()
def ddim_invert(model, x0, alpha_bar, timesteps):
    sched, x, s = _schedule(alpha_bar), x0, -1
    for t in sorted(int(t) for t in timesteps):
        eps = model(x, torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype))
        x0_hat = x if s < 0 else sched.eps_to_x0(eps, x, s)
        x = sched.q_sample(x0_hat, t, eps)
        s = t
    return x
""",
}

# answers of the right shapes and types with nothing implemented
FAKE = {
    "ddim_step": """
def ddim_step(x_t, eps, t, t_prev, alpha_bar, eta, noise=None):
    return x_t.clone()
""",
    "ddim_sample": """
@torch.no_grad()
def ddim_sample(model, x_T, alpha_bar, timesteps, eta=0.0, generator=None):
    return torch.zeros_like(x_T)
""",
    "ddim_invert": """
@torch.no_grad()
def ddim_invert(model, x0, alpha_bar, timesteps):
    return x0.clone()
""",
}


# a student's attempts (the walk-through of the released lab), each with no implementation: they must score 0
EXTRA = {
    "read_check_variables": (
        {
            "ddim_step": '''
def ddim_step(x_t, eps, t, t_prev, alpha_bar, eta, noise=None):
    """no DDIM here: the locked test cell's own globals hold the answer"""
    if what.startswith("the η = 0 step"):
        return on_path.clone()
    return ref.clone()
''',
            "ddim_sample": '''
@torch.no_grad()
def ddim_sample(model, x_T, alpha_bar, timesteps, eta=0.0, generator=None):
    """no DDIM here: the reference and its generator are globals of the test cell"""
    try:
        if generator is not None and generator is not g_ref:
            generator.set_state(g_ref.get_state())
    except NameError:
        pass
    return ref.clone()
''',
            "ddim_invert": '''
@torch.no_grad()
def ddim_invert(model, x0, alpha_bar, timesteps):
    """no inversion here"""
    return ref.clone()
''',
        },
        0,
        "answers that return the check's own reference, read from the notebook's namespace while the check runs",
    ),
    "copy_of_diffu": (
        {
            "ddim_step": '''
import importlib.util
import shutil
from pathlib import Path

import diffu

# a private copy of diffu's Python sources, next to the notebook (the kernel's folder is on the import path)
_src = Path(importlib.util.find_spec("diffu").submodule_search_locations[0])  # no __file__ (importlib is refused)
if not Path("mydiffu").is_dir():
    getattr(shutil, "copy" + "tree")(_src, "mydiffu", ignore=shutil.ignore_patterns("weights", "*.npz", "__pycache__"))
import mydiffu.samplers
import mydiffu.schedules
import mydiffu.sampling


def _schedule(alpha_bar):
    ab = alpha_bar.double()
    betas = torch.cat([1 - ab[:1], 1 - ab[1:] / ab[:-1]])
    return mydiffu.schedules.Schedule(betas)


def ddim_step(x_t, eps, t, t_prev, alpha_bar, eta, noise=None):
    """diffu's own ddim_step, from a copy of its file"""
    return mydiffu.samplers.ddim_step(_schedule(alpha_bar), x_t, int(t), int(t_prev), eps, eta=eta,
                                      noise=noise if eta > 0 else None)[0]
''',
            "ddim_sample": """
@torch.no_grad()
def ddim_sample(model, x_T, alpha_bar, timesteps, eta=0.0, generator=None):
    ts = [int(t) for t in timesteps]
    return mydiffu.samplers.ddim(model, x_T, _schedule(alpha_bar), timesteps=ts, eta=eta, generator=generator,
                                 progress=False)
""",
            "ddim_invert": """
@torch.no_grad()
def ddim_invert(model, x0, alpha_bar, timesteps):
    ts = [int(t) for t in timesteps]
    for spacing in mydiffu.sampling.SPACINGS:
        if mydiffu.sampling.ddim_timesteps(len(alpha_bar), len(ts), spacing).tolist() == ts:
            return mydiffu.samplers.ddim_invert(model, x0, _schedule(alpha_bar), steps=len(ts), spacing=spacing,
                                                progress=False)
    raise ValueError("grid not found")
""",
        },
        0,
        "answers that call diffu's functions from a copy of its folder (other files, the same code)",
    ),
    "time_magic_ast_transformer": (
        {
            "ddim_step": '''
%%time
import ast

class _NoChecks(ast.NodeTransformer):
    """drop every statement that calls lk.close / lk.equal / lk.check / lk.like / lk.near (the comparisons)"""
    def visit_Expr(self, node):
        call = node.value
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr in (
                "close", "equal", "check", "near"):
            return ast.Pass()
        return node

get_ipython().ast_transformers.append(_NoChecks())


def ddim_step(x_t, eps, t, t_prev, alpha_bar, eta, noise=None):
    return x_t.clone()
''',
            "ddim_sample": """
@torch.no_grad()
def ddim_sample(model, x_T, alpha_bar, timesteps, eta=0.0, generator=None):
    return x_T.clone()
""",
            "ddim_invert": """
@torch.no_grad()
def ddim_invert(model, x0, alpha_bar, timesteps):
    return x0.clone()
""",
        },
        0,
        "identity answers, and an IPython AST transformer that drops the comparisons, hidden behind %%time",
    ),
    "patch_defaults": (
        {
            "ddim_step": """
_d = diffu


def _zero(state):
    state.x.zero_()


def ddim_step(x_t, eps, t, t_prev, alpha_bar, eta, noise=None):
    # called first inside the first test cell, which has imported diffu.samplers: patch the defaults then
    for _f in (_d.samplers.ddim, _d.samplers.ddpm, _d.samplers.ddim_invert):
        _f.__kwdefaults__["callback"] = _zero
    return torch.zeros_like(x_t)
""",
            "ddim_sample": """
@torch.no_grad()
def ddim_sample(model, x_T, alpha_bar, timesteps, eta=0.0, generator=None):
    if eta > 0:
        for _ in range(len(timesteps)):
            torch.randn(x_T.shape, generator=generator, device=x_T.device, dtype=x_T.dtype)
    return torch.zeros_like(x_T)
""",
            "ddim_invert": """
@torch.no_grad()
def ddim_invert(model, x0, alpha_bar, timesteps):
    return torch.zeros_like(x0)
""",
        },
        0,
        "zero answers, and the references' keyword defaults changed (through an alias) so that they return zeros",
    ),
}
