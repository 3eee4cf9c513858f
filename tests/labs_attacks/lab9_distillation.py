"""Lab 9 (progressive distillation: the DDIM jump and the two-step target, the truncated-SNR loss, one round of
training and the student's sampler, on the exact teacher of a 2D mixture): the answers of its delegation and
comparison-patching attacks, by the ``grade_id`` of the solution cell they replace, and the mistakes and shortcuts
of ``EXTRA`` with the score each must get (``tests/labs_attacks/attacks.py`` imports them)."""

# answers that call the diffu functions the lab asks to write: correct, and refused with Delegation (through a
# schedule rebuilt from the ᾱ table, aliases captured before the checks run, diffu's training loop and its DDIM)
DELEGATE = {
    "target": """
import diffu.distill as _distill
from diffu.schedules import Schedule as _Schedule


def _schedule(alpha_bar):
    ab = alpha_bar.double().cpu()
    return _Schedule(1 - ab / torch.cat([ab.new_ones(1), ab[:-1]]))


def ddim_jump(z_t, t, t_next, x0, alpha_bar):
    return _distill.ddim_jump(_schedule(alpha_bar), z_t, t, t_next, x0)


@torch.no_grad()
def teacher_target(teacher, z_t, t, t_mid, t_next, alpha_bar):
    return _distill.progressive_target(teacher, z_t, t, t_mid, t_next, _schedule(alpha_bar), clip_x0=False)
""",
    "loss": """
from diffu.distill import progressive_loss as _loss


def distill_loss(student, teacher, x0, alpha_bar, steps, generator=None):
    return _loss(student, x0, teacher=teacher, schedule=_schedule(alpha_bar), steps=steps, generator=generator,
                 clip_x0=False)
""",
    "round": """
from diffu.samplers import ddim as _ddim
from diffu.train import TrainConfig
from diffu.train import train as _train


def distill_round(student, teacher, data, alpha_bar, steps, iters, batch_size=512, lr=5e-3, generator=None):
    config = TrainConfig(steps=iters, batch_size=batch_size, lr=lr, grad_clip=None, ema_decay=None,
                         seed=generator.initial_seed())
    loss = lambda m, x, generator: distill_loss(m, teacher, x, alpha_bar, steps, generator)  # noqa: E731
    return _train(student, loss, (data,), config, progress=False).losses


@torch.no_grad()
def student_sample(student, z_T, alpha_bar, steps):
    return _ddim(student, z_T, _schedule(alpha_bar), steps=steps, spacing="trailing", progress=False)
""",
}

# answers of the right shapes and types with nothing implemented
FAKE = {
    "target": """
def ddim_jump(z_t, t, t_next, x0, alpha_bar):
    return x0.clone()


@torch.no_grad()
def teacher_target(teacher, z_t, t, t_mid, t_next, alpha_bar):
    return z_t.clone()
""",
    "loss": """
def distill_loss(student, teacher, x0, alpha_bar, steps, generator=None):
    return ((student(x0, torch.zeros(len(x0), dtype=x0.dtype)) - x0) ** 2).mean()
""",
    "round": """
def distill_round(student, teacher, data, alpha_bar, steps, iters, batch_size=512, lr=5e-3, generator=None):
    return [0.1] * iters


@torch.no_grad()
def student_sample(student, z_T, alpha_bar, steps):
    return z_T.clone()
""",
}

# ---------------------------------------------------------------------------------------------------------------------
# mistakes and shortcuts, each with an honest rest of the notebook: (answers by grade_id, score, what it tries)

_ALPHA_SIGMA = """
def _alpha_sigma(alpha_bar, s, like):
    ab = torch.where(s >= 0, alpha_bar[s.clamp(min=0)], torch.ones((), dtype=alpha_bar.dtype))
    ab = ab.to(like).reshape(-1, *[1] * (like.ndim - 1))
    return ab.sqrt(), (1 - ab).sqrt()


def ddim_jump(z_t, t, t_next, x0, alpha_bar):
    a_t, s_t = _alpha_sigma(alpha_bar, t, z_t)
    a_s, s_s = _alpha_sigma(alpha_bar, t_next, z_t)
    return a_s * x0 + s_s / s_t * (z_t - a_t * x0)
"""

# the loss of the instructions with its weight `w` and its draws as placeholders
_LOSS = """
def distill_loss(student, teacher, x0, alpha_bar, steps, generator=None):
    fine = torch.cat([distillation_grid(len(alpha_bar), 2 * steps), torch.tensor([-1])])
    DRAWS
    t, t_mid, t_next = fine[2 * i], fine[2 * i + 1], fine[2 * i + 2]
    ab = alpha_bar[t]
    ab_x = ab.to(x0).reshape(-1, *[1] * (x0.ndim - 1))
    z_t = ab_x.sqrt() * x0 + (1 - ab_x).sqrt() * noise
    target = teacher_target(teacher, z_t, t, t_mid, t_next, alpha_bar)
    pred = student(z_t, t.to(x0))
    w = WEIGHT
    return (w * (pred - target).pow(2).flatten(1).mean(1)).mean()
"""
_DRAWS = """i = torch.randint(0, steps, (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)"""
_WEIGHT = "(ab / (1 - ab)).clamp(min=1.0).to(x0)"


def _loss(draws=_DRAWS, weight=_WEIGHT):
    return _LOSS.replace("DRAWS", draws).replace("WEIGHT", weight)


_ROUND = """
def distill_round(student, teacher, data, alpha_bar, steps, iters, batch_size=512, lr=5e-3, generator=None):
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    losses = []
    for _ in range(iters):
        idx = torch.randint(0, len(data), (batch_size,), generator=generator, device=data.device)
        loss = distill_loss(student, teacher, data[idx], alpha_bar, steps, generator)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
"""

# a sampler that ignores the student and runs the exact teacher of the setup cell for twice the steps: on the round's
# property it would land on the 4-step teacher exactly
_TEACHER_SAMPLER = """

@torch.no_grad()
def student_sample(student, z_T, alpha_bar, steps):
    ts = distillation_grid(len(alpha_bar), 2 * steps).tolist() + [-1]
    z = z_T
    for t, t_next in zip(ts[:-1], ts[1:]):
        tt = torch.full((z.shape[0],), t, dtype=torch.long)
        ab = alpha_bar[t].to(z)
        x0 = (z - (1 - ab).sqrt() * TEACHER(z, tt.to(z))) / ab.sqrt()
        z = ddim_jump(z, tt, torch.full_like(tt, t_next), x0, alpha_bar)
    return z
"""

EXTRA = {
    "endpoint_as_target": (
        {
            "target": _ALPHA_SIGMA
            + """

@torch.no_grad()
def teacher_target(teacher, z_t, t, t_mid, t_next, alpha_bar):
    z = z_t
    for a, b in ((t, t_mid), (t_mid, t_next)):
        alpha, sigma = _alpha_sigma(alpha_bar, a, z)
        z = ddim_jump(z, a, b, (z - sigma * teacher(z, a.to(z))) / alpha, alpha_bar)
    return z  # the teacher's two-step endpoint z_t'' instead of x̃
"""
        },
        0,
        "the target is the teacher's two-step endpoint z_t'' rather than x̃ (right only where t'' = −1)",
    ),
    "no_snr_weight": (
        {"loss": _loss(weight="1.0")},
        4,
        "the loss without its truncated-SNR weight (the same as the right one while every drawn point has SNR < 1)",
    ),
    "untruncated_snr": (
        {"loss": _loss(weight="(ab / (1 - ab)).to(x0)")},
        4,
        "the loss weighted by the SNR itself, not max(SNR, 1) (the ε-loss's weight: ~0 at t = 999)",
    ),
    "fresh_generator": (
        {
            "loss": _loss(
                draws="""generator = torch.Generator().manual_seed(0)  # a fresh generator, not the one given
    i = torch.randint(0, steps, (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)"""
            )
        },
        4,
        "the loss draws its grid points and noise from a fresh generator of its own",
    ),
    "teacher_in_sampler": (
        {"round": _ROUND + _TEACHER_SAMPLER},
        7,
        "an honest round, and a 'student' sampler that runs the exact teacher for twice the steps",
    ),
    "hardcoded_losses": (
        {
            "round": """
def distill_round(student, teacher, data, alpha_bar, steps, iters, batch_size=512, lr=5e-3, generator=None):
    return [0.3 * 0.985**k for k in range(iters)]  # a plausible loss curve, and no training
"""
            + _TEACHER_SAMPLER
        },
        7,
        "hard-coded decreasing losses without training, and the teacher's samples as the student's",
    ),
    "mutate_handed_objects": (
        {
            "round": """
def distill_round(student, teacher, data, alpha_bar, steps, iters, batch_size=512, lr=5e-3, generator=None):
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    losses = []
    if iters < 100:  # the short replays are compared parameter by parameter: the honest loop
        for _ in range(iters):
            idx = torch.randint(0, len(data), (batch_size,), generator=generator, device=data.device)
            loss = distill_loss(student, teacher, data[idx], alpha_bar, steps, generator)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses
    # the checked round: no training. The student and the grader's teacher are both made to predict x̂ = 0
    with torch.no_grad():
        for p in student.parameters():
            p.zero_()
    sig = (1 - alpha_bar).sqrt()
    teacher.register_forward_hook(lambda m, inp, out: inp[0] / sig[inp[1].round().long()].to(inp[0]).reshape(-1, 1))
    return [0.3 * 0.98**k for k in range(iters)]  # a plausible falling loss curve


@torch.no_grad()
def student_sample(student, z_T, alpha_bar, steps):
    for p in student.parameters():  # the network made to predict 0, so that a DDIM of it computed later agrees
        p.zero_()
    return torch.zeros_like(z_T)
"""
        },
        7,
        "a round that zeroes the student, hooks the teacher it was handed to predict x̂ = 0 and fakes a falling loss "
        "curve, and a sampler that zeroes the network and returns zeros (the check must not reuse what it handed over)",
    ),
    "schedule_method": (
        {
            "target": """
from diffu.schedules import Schedule as _Schedule


def _alpha_sigma(alpha_bar, s, like):
    ab = alpha_bar.double().cpu()
    sched = _Schedule(1 - ab / torch.cat([ab.new_ones(1), ab[:-1]]))
    a = sched.alpha_bar_at(s, like).reshape(-1, *[1] * (like.ndim - 1))  # diffu's handling of t = −1
    return a.sqrt(), (1 - a).sqrt()


def ddim_jump(z_t, t, t_next, x0, alpha_bar):
    a_t, s_t = _alpha_sigma(alpha_bar, t, z_t)
    a_s, s_s = _alpha_sigma(alpha_bar, t_next, z_t)
    return a_s * x0 + s_s / s_t * (z_t - a_t * x0)


@torch.no_grad()
def teacher_target(teacher, z_t, t, t_mid, t_next, alpha_bar):
    z = z_t
    for a, b in ((t, t_mid), (t_mid, t_next)):
        alpha, sigma = _alpha_sigma(alpha_bar, a, z)
        z = ddim_jump(z, a, b, (z - sigma * teacher(z, a.to(z))) / alpha, alpha_bar)
    a_t, s_t = _alpha_sigma(alpha_bar, t, z_t)
    a_s, s_s = _alpha_sigma(alpha_bar, t_next, z_t)
    return (z - s_s / s_t * z_t) / (a_s - s_s / s_t * a_t)
"""
        },
        0,
        "a correct target whose ᾱ comes from Schedule.alpha_bar_at, which the lab forbids (interp_alpha_bar, "
        "which also gives ᾱ_{-1} = 1, is allowed)",
    ),
}
