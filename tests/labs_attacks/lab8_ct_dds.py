"""Lab 8 (sparse-view CT with DDS: conjugate gradients, the data-consistency step, the DDS loop): the answers of its
delegation and comparison-patching attacks, by the ``grade_id`` of the solution cell they replace
(``tests/labs_attacks/attacks.py`` imports them)."""

# answers that call the diffu functions the lab asks to write: correct, and refused with Delegation (through aliases
# captured before the checks run, through a solver built on diffu's CG, and through a wrapper of diffu's DDS)
DELEGATE = {
    "cg": """
from diffu.inverse.classical import cg as _cg


def cg_solve(apply_A, b, x0, iters):
    if iters == 0:
        return x0.clone()
    return _cg(apply_A, b, x0=x0, tol=100 * torch.finfo(b.dtype).eps, max_iter=iters)
""",
    "data_consistency": """
import diffu.inverse as _inverse


def data_consistency(x0, y, radon, iters, gamma=None):
    if gamma is None and iters > 0:  # least squares by diffu's Tikhonov solver with λ = 0: CG from x0
        return _inverse.tikhonov(radon, y, 0.0, method="cg", x0=x0, tol=100 * torch.finfo(y.dtype).eps,
                                 max_iter=iters)
    return _inverse.data_consistency(x0, y, radon, iters=iters, gamma=gamma)
""",
    "dds_loop": """
from diffu.inverse import dds as _dds


@torch.no_grad()
def dds_sample(model, y, radon, alpha_bar, timesteps, eta, cg_iters, generator=None):
    return _dds(model, y, radon, SCHED, steps=len(timesteps), eta=eta, cg_iters=cg_iters, generator=generator,
                progress=False)
""",
}

# answers of the right shapes and types with nothing implemented
FAKE = {
    "cg": """
def cg_solve(apply_A, b, x0, iters):
    return x0.clone()
""",
    "data_consistency": """
def data_consistency(x0, y, radon, iters, gamma=None):
    return x0.clone()
""",
    "dds_loop": """
@torch.no_grad()
def dds_sample(model, y, radon, alpha_bar, timesteps, eta, cg_iters, generator=None):
    x = radon.AT(y)
    return x / x.flatten(1).abs().amax(1).clamp(min=1e-12).reshape(-1, 1, 1, 1)
""",
}
