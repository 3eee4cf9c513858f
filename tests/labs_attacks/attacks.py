"""Cheating and tampered submissions of the nbgrader labs, built from a course's released student versions and
solution sources (so they follow the labs as they change): each attack is a function ``(source, release) → notebook``
of one lab, registered in ``ATTACKS`` with the score it must get. ``tests/labs_attacks/test_attacks.py`` grades them
all; ``python -m tests.labs_attacks.attacks COURSE OUT`` writes them as files (to grade an old version of the labs).

Solution cells are addressed by their nbgrader ``grade_id`` (stable across versions of a lab); the code an attack
puts in them uses only the functions and fixtures the instructions name."""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat

# ---------------------------------------------------------------------------------------------------------------------
# notebook surgery


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _strip_markers(source: str) -> str:
    """A solution cell as a student would hand it in: the solution without nbgrader's delimiters."""
    return "\n".join(line for line in source.split("\n") if not re.search(r"### (BEGIN|END) SOLUTION", line))


def honest(source, release):
    """The released notebook with every solution cell filled in from the source: an honest, correct submission."""
    nb = copy.deepcopy(release)
    answers = {_meta(c)["grade_id"]: c.source for c in source.cells if _meta(c).get("solution")}
    for cell in nb.cells:
        if _meta(cell).get("solution"):
            cell.source = _strip_markers(answers[_meta(cell)["grade_id"]])
    return nb


def answer(nb, grade_id: str, code: str):
    """Replace the answer in solution cell ``grade_id``."""
    (cell,) = [c for c in nb.cells if _meta(c).get("grade_id") == grade_id]
    cell.source = code
    return nb


def answers(nb, codes: dict[str, str]):
    for grade_id, code in codes.items():
        answer(nb, grade_id, code)
    return nb


def insert_before_last_test(nb, code: str):
    """A new (unmarked) cell right before the last graded cell: what editing the unlocked cells above it can do."""
    last = max(i for i, c in enumerate(nb.cells) if _meta(c).get("grade"))
    nb.cells.insert(last, nbformat.v4.new_code_cell(code))
    return nb


def insert_after_setup(nb, code: str):
    nb.cells.insert(2, nbformat.v4.new_code_cell(code))
    return nb


def prepend_to_first_answer(nb, code: str):
    cell = next(c for c in nb.cells if _meta(c).get("solution"))
    cell.source = code + "\n\n" + cell.source
    return nb


# ---------------------------------------------------------------------------------------------------------------------
# answers that call the library (each scored full points before the grading was hardened)

DELEGATE = {
    "lab1_ddpm": {
        "forward_process": """
import diffu.samplers as _samplers
from diffu.schedules import Schedule
from diffu.train import diffusion_loss as _loss  # an alias captured before the grader can patch the module


def _schedule(alpha_bar):
    ab = alpha_bar.double().cpu()
    return Schedule(1 - ab / torch.cat([ab.new_ones(1), ab[:-1]]))


def linear_alpha_bar(T=1000, beta_start=1e-4, beta_end=0.02):
    return linear_schedule(T, beta_start, beta_end).alpha_bar


def q_sample(x0, t, noise, alpha_bar):
    return _schedule(alpha_bar).q_sample(x0, t, noise)
""",
        "loss": """
def ddpm_loss(model, x0, alpha_bar, generator=None):
    return _loss(model, _schedule(alpha_bar), x0, generator)
""",
        "training_loop": """
def train_denoiser(model, data, alpha_bar, steps, batch_size=256, lr=2e-3, generator=None):
    opt, sched, losses = torch.optim.Adam(model.parameters(), lr=lr), _schedule(alpha_bar), []
    for _ in range(steps):
        idx = torch.randint(0, len(data), (batch_size,), generator=generator, device=data.device)
        loss = _loss(model, sched, data[idx], generator)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
""",
        "ancestral_step": """
def p_sample(x_t, t, eps, noise, betas):
    return _samplers.ddpm_step(Schedule(betas), x_t, t, eps, noise=noise if t > 0 else None, clip_x0=False)[0]
""",
        "sampler": """
@torch.no_grad()
def sample(model, shape, betas, generator=None):
    return _samplers.ddpm(model, shape, Schedule(betas), clip_x0=False, generator=generator, progress=False)
""",
    },
    "lab2_dit_blocks": {
        "timestep_embedding": """
def sinusoidal_embedding(t, dim, max_period=10000.0):
    return diffu.nn.timestep_embedding(t, dim, max_period)
""",
        "patches": """
from diffu.nn import patchify as _patchify


def patchify(x, p):
    return _patchify(x, p)


def unpatchify(tokens, p, h, w=None):
    return diffu.nn.unpatchify(tokens, p, h, w)
""",
        "adaln_zero_block": '''
class AdaLNZeroBlock(diffu.nn.dit.AdaLNZeroBlock):
    """The library's block, zero-initialised."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__(dim, num_heads, mlp_ratio)
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)
''',
    },
    "lab3_guidance": {
        "guided_eps": """
from diffu.guidance import ClassifierFreeGuidance as _CFG


def guided_eps(model, x, t, y, scale, null_label):
    return _CFG(model, scale, {"y": torch.tensor([null_label], device=y.device)})(x, t, y=y)
""",
        "metrics": """
def class_consistency(x, gmm, k):
    return float((gmm.component_log_posterior(x).argmax(dim=1) == k).double().mean())


def diversity(x):
    return float(diffu.metrics.within_class_diversity(x, torch.zeros(len(x), dtype=torch.long)))
""",
        "sampler": """
def sample_class(model, k, scale, n, steps=50, generator=None):
    cfg = diffu.guidance.ClassifierFreeGuidance(model, scale, {"y": torch.tensor([model.num_classes])})
    y = torch.full((n,), k)
    return ddim(cfg, (n, 2), SCHED, steps=steps, model_kwargs={"y": y}, generator=generator, progress=False)
""",
    },
    "lab4_dps": {
        "tweedie": """
def tweedie_x0(eps, x_t, t, schedule):
    return schedule.eps_to_x0(eps, x_t, t)
""",
        "dps_step": """
from diffu.inverse.dps import residual_norm as _residual
from diffu.samplers import ddpm_step as _step


def dps_step(eps_fn, x_t, t, y, op, schedule, zeta, noise=None):
    x_t = x_t.detach().requires_grad_(True)
    eps = eps_fn(x_t)
    x0_hat = schedule.eps_to_x0(eps, x_t, t).clamp(-1, 1)
    x_prev, _ = _step(schedule, x_t, t, eps, noise=noise if t > 0 else None, clip_x0=True)
    (grad,) = torch.autograd.grad(_residual(y, op.A(x0_hat)), x_t)
    return (x_prev - zeta * grad).detach(), x0_hat.detach()
""",
        "dps_loop": """
def dps_sample(model, y, op, shape, steps, zeta, generator=None):
    return diffu.inverse.dps(model, y, op, SCHED, steps=steps, scale=zeta, per_image=True, generator=generator,
                             progress=False, x_T=shape)
""",
    },
}

# ---------------------------------------------------------------------------------------------------------------------
# answers of the right shapes and types with nothing implemented

FAKE = {
    "lab1_ddpm": {
        "forward_process": """
def linear_alpha_bar(T=1000, beta_start=1e-4, beta_end=0.02):
    return torch.ones(T, dtype=torch.float64)


def q_sample(x0, t, noise, alpha_bar):
    return x0.clone()
""",
        "loss": """
def ddpm_loss(model, x0, alpha_bar, generator=None):
    return (model(x0, torch.zeros(len(x0), device=x0.device)) ** 2).mean()
""",
        "training_loop": """
def train_denoiser(model, data, alpha_bar, steps, batch_size=256, lr=2e-3, generator=None):
    return [0.1] * steps
""",
        "ancestral_step": """
def p_sample(x_t, t, eps, noise, betas):
    return x_t.clone()
""",
        "sampler": """
@torch.no_grad()
def sample(model, shape, betas, generator=None):
    return torch.zeros(shape, device=DEVICE)
""",
    },
    "lab2_dit_blocks": {
        "timestep_embedding": """
def sinusoidal_embedding(t, dim, max_period=10000.0):
    return torch.zeros(len(t), dim, device=t.device)
""",
        "patches": """
def patchify(x, p):
    n, c, h, w = x.shape
    return torch.zeros(n, (h // p) * (w // p), p * p * c, device=x.device)


def unpatchify(tokens, p, h, w=None):
    n, _, d = tokens.shape
    return torch.zeros(n, d // (p * p), h * p, (h if w is None else w) * p, device=tokens.device)
""",
        "adaln_zero_block": """
class AdaLNZeroBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c):
        return x
""",
    },
    "lab3_guidance": {
        "guided_eps": """
def guided_eps(model, x, t, y, scale, null_label):
    return torch.zeros_like(x)
""",
        "metrics": """
def class_consistency(x, gmm, k):
    return 1.0


def diversity(x):
    return 1.0
""",
        "sampler": """
def sample_class(model, k, scale, n, steps=50, generator=None):
    return torch.zeros(n, 2)
""",
    },
    "lab4_dps": {
        "tweedie": """
def tweedie_x0(eps, x_t, t, schedule):
    return x_t.clone()
""",
        "dps_step": """
def dps_step(eps_fn, x_t, t, y, op, schedule, zeta, noise=None):
    return x_t.detach().clone(), x_t.detach().clamp(-1, 1)
""",
        "dps_loop": """
def dps_sample(model, y, op, shape, steps, zeta, generator=None):
    return torch.zeros(shape, device=y.device)
""",
    },
}

# what the unlocked "nothing to write" cells of the labs can set: the lab's final results, typed or the library's own
RESULTS = {
    "lab1_ddpm": """
fresh = toy_2d("moons", 2000, generator=torch.Generator().manual_seed(SEED + 1))
samples, m_samples, m_noise = fresh.clone(), 0.0, 1.0
net = MLPDenoiser(dim=2)
losses = [0.1] * STEPS
""",
    "lab2_dit_blocks": """
dit = load("fmnist_dit_adaln_zero", device=DEVICE)
mine = dit
x = torch.zeros(10, 1, 28, 28, device=DEVICE)
samples = {"shipped DiT": x, "your blocks": x}
""",
    "lab3_guidance": """
SCALES = (0.0, 1.0, 2.0, 4.0, 8.0)
table = {0.0: (0.125, 2.5, 2.0), 1.0: (0.8, 0.886, 2.0), 2.0: (0.9, 0.7, 2.5), 4.0: (0.97, 0.5, 3.0),
         8.0: (0.995, 0.3, 3.5)}
""",
    "lab4_dps": """
db = {"zero-filled A⁺y": 12.0, "your DPS": 18.0, "diffu.inverse.dps": 18.0}
rms = torch.full((N_IMG,), SIGMA_Y)
""",
}


def _more_labs():
    """A lab added later brings its answers in a module of its own, ``tests/labs_attacks/<lab>.py``, with ``DELEGATE``
    (answers that call the diffu functions the tasks ask to write) and ``FAKE`` (wrong answers), each a dict
    ``{grade_id of a solution cell: code}``; it gets the same attacks as the labs above."""
    import importlib

    for path in sorted(Path(__file__).parent.glob("lab*.py")):
        module = importlib.import_module(f"{__package__}.{path.stem}")
        DELEGATE[path.stem], FAKE[path.stem] = module.DELEGATE, module.FAKE
        for name, (codes, score, what) in getattr(module, "EXTRA", {}).items():
            EXTRA[name] = (path.stem, codes, score, what)


#: attacks of their own that a lab's module brings: {name: (lab, {grade_id: code}, score, what)}
EXTRA: dict[str, tuple] = {}
_more_labs()

PATCH_COMPARISONS = """
torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
torch.Tensor.allclose = lambda *args, **kwargs: True
"""

# ---------------------------------------------------------------------------------------------------------------------
# the attacks


def _fake(nb, lab):
    return answers(nb, FAKE[lab])


@dataclass(frozen=True)
class Attack:
    """One submission: ``build(source, release) → notebook`` (or the text of a file) for ``lab``; ``score`` is what it
    must get (``"full"`` for the lab's autograded points, None for "not graded"); ``what`` says what it tries."""

    name: str
    lab: str
    build: Callable
    score: float | str
    what: str


def _attacks() -> list[Attack]:
    out = []
    for lab in DELEGATE:
        out += [
            Attack(f"delegate_{lab}", lab, lambda s, r, lab=lab: answers(honest(s, r), DELEGATE[lab]), 0,
                   "every answer calls the diffu function the task asks to write (some through aliases)"),
            Attack(f"patch_compare_{lab}", lab,
                   lambda s, r, lab=lab: prepend_to_first_answer(_fake(honest(s, r), lab), PATCH_COMPARISONS), 0,
                   "wrong answers, and torch.allclose / torch.equal / Tensor.allclose rebound to return True"),
        ]  # fmt: skip
        if lab in ("lab3_guidance", "lab4_dps"):  # the two examples (each run costs seconds)
            out.append(Attack(f"set_results_{lab}", lab,
                              lambda s, r, lab=lab: insert_before_last_test(_fake(honest(s, r), lab), RESULTS[lab]), 0,
                              "wrong answers, and the lab's final results set in an unlocked cell"))  # fmt: skip
    lab2 = "lab2_dit_blocks"

    def delete_tests(s, r):
        nb = honest(s, r)
        nb.cells = [c for c in nb.cells if not _meta(c).get("grade")]
        return nb

    def strip_metadata(s, r):
        nb = honest(s, r)
        for cell in nb.cells:
            cell.metadata.pop("nbgrader", None)
        return nb

    def rename_test(s, r):
        nb = honest(s, r)
        (cell,) = [c for c in nb.cells if _meta(c).get("grade_id") == "test_patches"]
        cell.metadata.nbgrader["grade_id"] = "test_patches_renamed"
        return nb

    def flip_flags(s, r):
        nb = honest(s, r)
        for cell in nb.cells:
            if _meta(cell).get("grade_id") == "test_patches":
                cell.metadata.nbgrader["solution"] = True  # nbgrader would look for a comment it never made
            if _meta(cell).get("grade_id") == "test_adaln_zero_block":
                cell.metadata.nbgrader["grade"] = False  # the test would leave the autograded points
        return nb

    def edit_tests(s, r):
        nb = _fake(honest(s, r), lab2)
        for cell in nb.cells:
            if _meta(cell).get("grade"):
                cell.source = "pass"
                cell.metadata.nbgrader["points"] = 100
        return nb

    mirror_code = """
import diffu.nn.dit


diffu.nn.timestep_embedding = lambda t, dim, max_period=10000.0: sinusoidal_embedding(t, dim, max_period)
diffu.nn.patchify = lambda x, p: patchify(x, p)
diffu.nn.unpatchify = lambda tokens, p, h, w=None: unpatchify(tokens, p, h, w)
diffu.nn.dit.AdaLNZeroBlock.forward = lambda self, x, c: x
"""

    def mirror(s, r):
        nb = _fake(honest(s, r), lab2)
        nb.cells.insert(next(i for i, c in enumerate(nb.cells) if _meta(c).get("grade_id") == "adaln_zero_block") + 1,
                        nbformat.v4.new_code_cell(mirror_code))  # fmt: skip
        return nb

    subclass_code = '''
class _Agree(torch.Tensor):
    """A tensor that every comparison finds equal to anything."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal, torch.Tensor.allclose, torch.Tensor.equal):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})
'''

    def subclass(s, r):
        nb = _fake(honest(s, r), lab2)
        for cell in nb.cells:
            if _meta(cell).get("grade_id") in ("timestep_embedding", "patches"):
                cell.source = re.sub(r"return (torch\.zeros\(.*\))", r"return \1.as_subclass(_Agree)", cell.source)
        return prepend_to_first_answer(nb, subclass_code)

    swallow_code = """
get_ipython().set_custom_exc((BaseException,), lambda shell, etype, value, tb, tb_offset=None: None)
"""

    def swallow(s, r):
        return prepend_to_first_answer(copy.deepcopy(r), swallow_code)

    silence_code = """
get_ipython()._showtraceback = lambda *args, **kwargs: None
get_ipython().showtraceback = lambda *args, **kwargs: None
"""

    def silence(s, r):
        return prepend_to_first_answer(copy.deepcopy(r), silence_code)

    skip_code = """
def _skip_tests(lines):
    return [] if any("assert" in line or "lk." in line for line in lines) else lines


get_ipython().input_transformers_cleanup.append(_skip_tests)
"""

    def skip(s, r):
        return prepend_to_first_answer(copy.deepcopy(r), skip_code)

    forge_code = """
import sys


def _pass_tests(lines):
    text = "".join(lines)
    if "lk.done(" not in text:
        return lines
    grade_id = text.split("lk.done(")[1].split(")")[0]
    return [f"print('labkit: all checks of ' + {grade_id} + ' passed')"]


_shell = sys.modules["IPython"].get_ipython()
getattr(_shell, "input_transformers_" + "cleanup").append(_pass_tests)
"""

    def forge(s, r):
        return prepend_to_first_answer(copy.deepcopy(r), forge_code)

    lab3 = "lab3_guidance"
    builtins_code = """
import builtins

builtins.abs = lambda x: 0.0
builtins.all = lambda iterable: True
"""

    def rebind_builtins(s, r):
        return prepend_to_first_answer(_fake(honest(s, r), lab3), builtins_code)

    fixtures_sampler = """
def sample_class(model, k, scale, n, steps=50, generator=None):
    return ddim(MODEL, (n, 2), SCHED, steps=steps, model_kwargs={"y": torch.full((n,), k)}, generator=generator,
                progress=False)
"""
    fixtures_code = """
class _Zero(torch.nn.Module):
    num_classes = K

    def forward(self, x, t, y=None):
        return torch.zeros_like(x)


MODEL = _Zero()
"""

    def rebind_fixtures(s, r):
        nb = insert_after_setup(_fake(honest(s, r), lab3), fixtures_code)
        return answer(nb, "sampler", fixtures_sampler)

    out += [
        Attack("delete_tests", lab2, delete_tests, "full", "a correct lab with every test cell deleted"),
        Attack(
            "strip_metadata",
            lab2,
            strip_metadata,
            "full",
            "a correct lab with every cell's nbgrader metadata stripped (as some editors do)",
        ),  # fmt: skip
        Attack("rename_test", lab2, rename_test, "full", "a correct lab with a test cell's grade_id changed"),
        Attack("edit_tests", lab2, edit_tests, 0, "wrong answers, every test cell emptied and given 100 points"),
        Attack(
            "flip_flags",
            lab2,
            flip_flags,
            "full",
            "a correct lab with a test cell marked as an answer and another as not graded",
        ),  # fmt: skip
        Attack("mirror", lab2, mirror, 0, "wrong answers, and the diffu references patched to return them"),
        Attack(
            "tensor_subclass",
            lab2,
            subclass,
            0,
            "wrong answers returned as a tensor subclass that every comparison finds equal",
        ),  # fmt: skip
        Attack(
            "corrupt_file",
            lab2,
            lambda s, r: "{ this is not a notebook",
            None,
            "a file nbgrader cannot read (reported as not graded; the next submission is graded)",
        ),  # fmt: skip
        Attack("swallow_errors", lab2, swallow, 0, "the stubs, and IPython told to swallow every exception"),
        Attack("silence_errors", lab2, silence, 0, "the stubs, and IPython's traceback display replaced by a no-op"),
        Attack("skip_checks", lab2, skip, 0, "the stubs, and an IPython input transformer that empties test cells"),
        Attack(
            "forge_done",
            lab2,
            forge,
            0,
            "the stubs, and an input transformer (reached through sys.modules) "
            "that replaces each test cell by the line a passing test prints",
        ),  # fmt: skip
        Attack(
            "rebind_builtins", lab3, rebind_builtins, 0, "wrong answers, and builtins.abs / all rebound"
        ),  # fmt: skip
        Attack(
            "rebind_fixtures",
            lab3,
            rebind_fixtures,
            0,
            "wrong answers, right for the lab's model replaced (in a new cell) by one that predicts zeros",
        ),  # fmt: skip
    ]
    for name, (lab, codes, score, what) in EXTRA.items():
        out.append(Attack(name, lab, lambda s, r, codes=codes: answers(honest(s, r), codes), score, what))
    return out


ATTACKS = _attacks()


def build_all(course: Path, out: Path) -> dict[str, Path]:
    """Write every attack of ``ATTACKS`` as ``out/NAME/LAB/LAB.ipynb`` (a student folder per attack, ready for
    nbgrader's ``submitted/``) from ``course/source`` and ``course/release``."""
    paths = {}
    for attack in ATTACKS:
        lab = attack.lab
        source = nbformat.read(course / "source" / lab / f"{lab}.ipynb", as_version=4)
        release = nbformat.read(course / "release" / lab / f"{lab}.ipynb", as_version=4)
        nb = attack.build(source, release)
        path = out / attack.name / lab / f"{lab}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(nb, str):
            path.write_text(nb)
        else:
            nbformat.write(nb, path)
        paths[attack.name] = path
    return paths


if __name__ == "__main__":
    for name, path in build_all(Path(sys.argv[1]), Path(sys.argv[2])).items():
        print(name, path)
