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
