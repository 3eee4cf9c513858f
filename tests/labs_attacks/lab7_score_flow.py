"""Lab 7 (flow matching, Euler and Heun at equal NFE): the answers of its delegation and comparison-patching attacks,
by the ``grade_id`` of the solution cell they replace (``tests/labs_attacks/attacks.py`` imports them)."""

# answers that call the diffu functions the lab asks to write: correct, and refused with Delegation (some through
# aliases captured before the checks run, one through diffu's training loop, one through the ODE integrator)
DELEGATE = {
    "path_loss": """
import diffu.flow as _flow
from diffu.flow import flow_matching_loss as _fm_loss


def interpolate(x0, noise, t):
    return _flow.flow_path(x0, noise, t)


def fm_loss(net, x0, generator=None):
    return _fm_loss(net, x0, generator)
""",
    "training_loop": """
from diffu.train import TrainConfig
from diffu.train import train as _train


def train_flow(net, data, steps, batch_size=256, lr=3e-3, generator=None):
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, grad_clip=None, ema_decay=None,
                         seed=generator.initial_seed())
    return _train(net, lambda m, x, generator: fm_loss(m, x, generator), (data,), config, progress=False).losses
""",
    "samplers": """
from diffu.flow import euler as _euler
from diffu.ode import integrate as _integrate


@torch.no_grad()
def euler(v, x_1, steps):
    return _euler(v, x_1, steps=steps, progress=False), steps


@torch.no_grad()
def heun(v, x_1, steps):
    def f(x, t):
        d = v(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))
        return d, d

    return _integrate(f, x_1, torch.linspace(1.0, 0.0, steps + 1).tolist(), solver="heun", progress=False)
""",
    "score": """
from diffu.flow import velocity_to_score as _velocity_to_score


def velocity_to_score(v, x_t, t):
    return _velocity_to_score(v, x_t, t)
""",
}

# answers of the right shapes and types with nothing implemented
FAKE = {
    "path_loss": """
def interpolate(x0, noise, t):
    return x0.clone()


def fm_loss(net, x0, generator=None):
    return (net(x0, torch.zeros(len(x0), dtype=x0.dtype, device=x0.device)) ** 2).mean()
""",
    "training_loop": """
def train_flow(net, data, steps, batch_size=256, lr=3e-3, generator=None):
    return [0.1] * steps
""",
    "samplers": """
@torch.no_grad()
def euler(v, x_1, steps):
    return x_1.clone(), steps


@torch.no_grad()
def heun(v, x_1, steps):
    return x_1.clone(), 2 * steps
""",
    "score": """
def velocity_to_score(v, x_t, t):
    return -x_t.clone()
""",
}


# a student's attempts (the walk-through of the released lab)
EXTRA = {
    "pause_the_watch": (
        {
            "path_loss": '''
import diffu.flow as _flow


def _free(fn, *args, **kwargs):
    """fn(*args, **kwargs) with labkit's watch (sys.getprofile()) paused through the closure cell `watching`."""
    w = sys.getprofile()
    cells = [c for c in (getattr(w, "__closure__", None) or ()) if isinstance(c.cell_contents, list)
             and c.cell_contents in ([True], [False])]
    for c in cells:
        c.cell_contents[0] = False
    try:
        return fn(*args, **kwargs)
    finally:
        for c in cells:
            c.cell_contents[0] = True


def interpolate(x0, noise, t):
    return _free(_flow.flow_path, x0, noise, t)


def fm_loss(net, x0, generator=None):
    return _free(_flow.flow_matching_loss, net, x0, generator)
''',
            "training_loop": """
def train_flow(net, data, steps, batch_size=256, lr=3e-3, generator=None):
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    out = []
    for _ in range(steps):
        idx = torch.randint(0, len(data), (batch_size,), generator=generator, device=data.device)
        loss = fm_loss(net, data[idx], generator)
        opt.zero_grad(); loss.backward(); opt.step(); out.append(loss.item())
    return out
""",
            "samplers": """
def euler(v, x_1, steps):
    return _free(_flow.euler, v, x_1, steps=steps, progress=False), steps


def heun(v, x_1, steps):
    return _free(_flow.heun, v, x_1, steps=steps, progress=False), 2 * steps
""",
            "score": """
def velocity_to_score(v, x_t, t):
    return _free(_flow.velocity_to_score, v, x_t, t)
""",
        },
        0,
        "diffu's flow functions called with the checks' watch paused through its closure (sys.getprofile)",
    ),
    "run_the_solution_source": (
        {
            "path_loss": r"""
import code as _code, json as _json
from pathlib import Path as _P

_rel = "source/lab7_score_flow/lab7_score_flow.ipynb"
_found = next((p / _rel for p in [_P.cwd(), *_P.cwd().parents] if (p / _rel).is_file()), None)
if _found is None:
    raise NotImplementedError()
_cells = _json.loads(_found.read_text())["cells"]
_src = "import torch\n\n" + "\n\n".join("".join(c["source"]) for c in _cells
                     if c["cell_type"] == "code" and c.get("metadata", {}).get("nbgrader", {}).get("solution"))
_interp = _code.InteractiveInterpreter()
_interp.runsource(_src, "<sol>", "exec")
_ns = _interp.locals
interpolate, fm_loss = _ns["interpolate"], _ns["fm_loss"]
""",
            "training_loop": """
train_flow = _ns["train_flow"]
""",
            "samplers": """
euler, heun = _ns["euler"], _ns["heun"]
""",
            "score": """
velocity_to_score = _ns["velocity_to_score"]
""",
        },
        0,
        "the instructor's source notebook found on the grader's disk, its solutions run by module code's interpreter",
    ),
}
