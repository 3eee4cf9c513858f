"""Lab 6 (training for classifier-free guidance): the answers of its delegation and comparison-patching attacks, by
the ``grade_id`` of the solution cell they replace (``tests/labs_attacks/attacks.py`` imports them)."""

# answers that call the diffu functions the lab asks to write: correct, and refused with Delegation (one through an
# alias captured before the checks run, one through a method of Schedule, one through a subclass)
DELEGATE = {
    "drop_labels": """
from diffu.train import label_kwargs as _label_kwargs


class _Conditional:
    def __init__(self, num_classes):
        self.num_classes = num_classes


def drop_labels(y, p_uncond, null_label, generator=None):
    return _label_kwargs(_Conditional(null_label), y, p_uncond, generator)["y"].clone()
""",
    "cfg_loss": """
from diffu.schedules import Schedule


def _schedule(alpha_bar):
    ab = alpha_bar.double().cpu()
    return Schedule(1 - ab / torch.cat([ab.new_ones(1), ab[:-1]]))


def cfg_loss(model, x0, y, alpha_bar, p_uncond, generator=None):
    t = torch.randint(0, len(alpha_bar), (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = _schedule(alpha_bar).q_sample(x0, t, noise)
    labels = drop_labels(y, p_uncond, model.num_classes, generator)
    return ((noise - model(x_t, t.to(x0.dtype), y=labels)) ** 2).mean()
""",
    "train_cfg": """
import diffu.train
from diffu.schedules import Schedule as _Schedule


def train_cfg(model, x, y, alpha_bar, steps, p_uncond=0.1, batch_size=256, lr=2e-3, generator=None):
    ab = alpha_bar.double().cpu()
    sched = _Schedule(1 - ab / torch.cat([ab.new_ones(1), ab[:-1]]))

    def loss_fn(net, xb, yb, generator):
        return diffu.train.diffusion_loss(net, sched, xb, generator, y=yb, p_uncond=p_uncond)

    seed = int(torch.randint(0, 2**31, (1,), generator=generator, device=x.device))
    config = diffu.train.TrainConfig(steps=steps, batch_size=batch_size, lr=lr, grad_clip=None, ema_decay=None,
                                     seed=seed)
    return diffu.train.train(model, loss_fn, (x, y), config, progress=False).losses
""",
    "sample_guided": """
import diffu.guidance


class _Guided(diffu.guidance.ClassifierFreeGuidance):
    \"\"\"The library's CFG wrapper under another name.\"\"\"


@torch.no_grad()
def sample_guided(model, k, scale, n, steps=50, generator=None):
    device = generator.device if generator is not None else None
    cfg = _Guided(model, scale, {"y": torch.tensor([model.num_classes], device=device)})
    y = torch.full((n,), k, device=device)
    return ddim(cfg, (n, 2), SCHED, steps=steps, model_kwargs={"y": y}, generator=generator, progress=False)
""",
}

# answers of the right shapes and types with nothing implemented
FAKE = {
    "drop_labels": """
def drop_labels(y, p_uncond, null_label, generator=None):
    return y.clone()
""",
    "cfg_loss": """
def cfg_loss(model, x0, y, alpha_bar, p_uncond, generator=None):
    return (model(x0, torch.zeros(len(x0), device=x0.device), y=y) ** 2).mean()
""",
    "train_cfg": """
def train_cfg(model, x, y, alpha_bar, steps, p_uncond=0.1, batch_size=256, lr=2e-3, generator=None):
    return [0.1] * steps
""",
    "sample_guided": """
@torch.no_grad()
def sample_guided(model, k, scale, n, steps=50, generator=None):
    return torch.zeros(n, 2)
""",
}


# a student's attempts (the walk-through of the released lab): each calls diffu's implementations
EXTRA = {
    "thread_pool": (
        {
            "drop_labels": """
import operator
import importlib

ThreadPoolExecutor = importlib.import_module("concurrent." + "futures").ThreadPoolExecutor

_pool = ThreadPoolExecutor(max_workers=1)
_pool.submit(int).result()  # the worker thread exists from now on


def _lib(name, *args, **kwargs):
    import diffu.train, diffu.guidance  # noqa
    return _pool.submit(operator.attrgetter(name)(diffu), *args, **kwargs).result()


class _Null:
    def __init__(self, k):
        self.num_classes = k


def drop_labels(y, p_uncond, null_label, generator=None):
    return _lib("train.label_kwargs", _Null(null_label), y, p_uncond, generator)["y"].clone()
""",
            "cfg_loss": """
def _schedule(alpha_bar):
    ab = alpha_bar.double().cpu()
    return SCHED.__class__(1 - ab / torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]]))


def cfg_loss(model, x0, y, alpha_bar, p_uncond, generator=None):
    return _lib("train.diffusion_loss", model, _schedule(alpha_bar), x0, generator, y=y, p_uncond=p_uncond)
""",
            "train_cfg": """
def train_cfg(model, x, y, alpha_bar, steps, p_uncond=0.1, batch_size=256, lr=2e-3, generator=None):
    sched = _schedule(alpha_bar)
    cfg = operator.attrgetter("train.TrainConfig")(diffu)(steps=steps, batch_size=batch_size, lr=lr, grad_clip=None,
                                                         ema_decay=None, seed=generator.initial_seed())
    loss = lambda m, a, b, generator=None: operator.attrgetter("train.diffusion_loss")(diffu)(
        m, sched, a, generator, y=b, p_uncond=p_uncond)
    return _lib("train.train", model, loss, (x.cpu(), y.cpu()), cfg, progress=False).losses
""",
            "sample_guided": """
@torch.no_grad()
def sample_guided(model, k, scale, n, steps=50, generator=None):
    def work():
        cfg = operator.attrgetter("guidance.ClassifierFreeGuidance")(diffu)(
            model, scale, {"y": torch.tensor([model.num_classes])})
        y = torch.full((n,), k, device=generator.device)
        return ddim(cfg, (n, 2), SCHED, steps=steps, model_kwargs={"y": y}, generator=generator, progress=False)
    return _pool.submit(work).result()
""",
        },
        0,
        "diffu's functions run in a worker thread started before the checks (the pool reached through importlib)",
    ),
    "rewrite_labkit": (
        {
            "drop_labels": """
import io
from pathlib import Path

import diffu.guidance
import diffu.train

for _p in [Path.cwd(), *Path.cwd().parents]:
    if (_p / "labkit.py").is_file():
        _f = _p / "labkit.py"
        _new = _f.read_text().replace(
            '"lab6_cfg_training": ("diffu.train", "diffu.guidance", "diffu.schedules:Schedule.q_sample"),',
            '"lab6_cfg_training": (),')
        with io.FileIO(str(_f), "w") as _out:  # a write the reading does not see as one
            _out.write(_new.encode())
        break


class _Null:
    def __init__(self, k):
        self.num_classes = k


def drop_labels(y, p_uncond, null_label, generator=None):
    return diffu.train.label_kwargs(_Null(null_label), y, p_uncond, generator)["y"].clone()
""",
            "cfg_loss": """
def _schedule(alpha_bar):
    ab = alpha_bar.double().cpu()
    return SCHED.__class__(1 - ab / torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]]))


def cfg_loss(model, x0, y, alpha_bar, p_uncond, generator=None):
    return diffu.train.diffusion_loss(model, _schedule(alpha_bar), x0, generator, y=y, p_uncond=p_uncond)
""",
            "train_cfg": """
def train_cfg(model, x, y, alpha_bar, steps, p_uncond=0.1, batch_size=256, lr=2e-3, generator=None):
    sched = _schedule(alpha_bar)
    cfg = diffu.train.TrainConfig(steps=steps, batch_size=batch_size, lr=lr, grad_clip=None, ema_decay=None,
                                    seed=generator.initial_seed())
    loss = lambda m, a, b, generator=None: diffu.train.diffusion_loss(m, sched, a, generator, y=b, p_uncond=p_uncond)
    return diffu.train.train(model, loss, (x.cpu(), y.cpu()), cfg, progress=False).losses
""",
            "sample_guided": """
@torch.no_grad()
def sample_guided(model, k, scale, n, steps=50, generator=None):
    cfg = diffu.guidance.ClassifierFreeGuidance(model, scale, {"y": torch.tensor([model.num_classes])})
    y = torch.full((n,), k, device=generator.device)
    return ddim(cfg, (n, 2), SCHED, steps=steps, model_kwargs={"y": y}, generator=generator, progress=False)
""",
        },
        0,
        "the grader's labkit.py rewritten on disk to forbid nothing (through io.FileIO), then diffu's functions called",
    ),
    "runpy_rewritten_copy": (
        {
            "drop_labels": """
import ast, operator, runpy, tempfile
from pathlib import Path


def _load(name):
    tree = ast.parse((Path(diffu.__file__).parent / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            node.module, node.level = "diffu" + ("." + node.module if node.module else ""), 0
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.body.insert(0, ast.parse("_unused = 12345").body[0])
    path = Path(tempfile.mkdtemp()) / f"my_{name}.py"
    path.write_text(ast.unparse(ast.fix_missing_locations(tree)))
    return runpy.run_path(str(path), run_name=f"my_{name}")


_T, _G, _S = _load("train"), _load("guidance"), _load("schedules")


class _Null:
    def __init__(self, k):
        self.num_classes = k


def drop_labels(y, p_uncond, null_label, generator=None):
    return _T["label_kwargs"](_Null(null_label), y, p_uncond, generator)["y"].clone()
""",
            "cfg_loss": """
def _schedule(alpha_bar):
    ab = alpha_bar.double().cpu()
    betas = 1 - ab / torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    S = type("S", (SCHED.__class__,), {"q_sample": operator.attrgetter("q_sample")(_S["Schedule"])})
    return S(betas)


def cfg_loss(model, x0, y, alpha_bar, p_uncond, generator=None):
    return _T["diffusion_loss"](model, _schedule(alpha_bar), x0, generator, y=y, p_uncond=p_uncond)
""",
            "train_cfg": """
def train_cfg(model, x, y, alpha_bar, steps, p_uncond=0.1, batch_size=256, lr=2e-3, generator=None):
    sched = _schedule(alpha_bar)
    cfg = _T["TrainConfig"](steps=steps, batch_size=batch_size, lr=lr, grad_clip=None, ema_decay=None,
                            seed=generator.initial_seed())
    loss = lambda m, a, b, generator=None: _T["diffusion_loss"](m, sched, a, generator, y=b, p_uncond=p_uncond)
    return _T["train"](model, loss, (x.cpu(), y.cpu()), cfg, progress=False).losses
""",
            "sample_guided": """
@torch.no_grad()
def sample_guided(model, k, scale, n, steps=50, generator=None):
    cfg = _G["ClassifierFreeGuidance"](model, scale, {"y": torch.tensor([model.num_classes])})
    y = torch.full((n,), k, device=generator.device)
    return ddim(cfg, (n, 2), SCHED, steps=steps, model_kwargs={"y": y}, generator=generator, progress=False)
""",
        },
        0,
        "diffu's modules run anew by runpy from sources rewritten with ast (other code, the same behaviour)",
    ),
}
