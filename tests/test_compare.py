"""diffu.compare: every sampler at an NFE budget, on the exact 2D mixture (fast, and with known answers)."""

import pytest
import torch

from diffu.compare import SAMPLERS, sample_at_nfe
from diffu.gmm import ExactModel, GaussianMixture
from diffu.metrics import mmd
from diffu.schedules import linear_schedule

GMM = GaussianMixture.ring()
SCHED = linear_schedule()
EPS, VEL = ExactModel(GMM, schedule=SCHED), ExactModel(GMM, flow_sigma_min=0.0)


def _run(name, nfe, seed=0, n=400):
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(100))
    return sample_at_nfe(name, nfe, x_T, eps_model=EPS, velocity_model=VEL, schedule=SCHED,
                         generator=torch.Generator().manual_seed(seed))  # fmt: skip


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_budget_respected_deterministic_and_converges(name):
    x, used = _run(name, 10)
    assert 9 <= used <= 10  # Heun in σ spends 2·steps - 1
    x2, _ = _run(name, 10)
    assert torch.equal(x, x2) and torch.isfinite(x).all()
    ref = GMM.sample(2000, torch.Generator().manual_seed(1))
    noise = mmd(torch.randn(400, 2, generator=torch.Generator().manual_seed(5)), ref).item()
    x50, _ = _run(name, 50)
    # with 50 evaluations of the exact model every sampler is within 5 % of noise's MMD² to the data
    # (measured: ≤ 0.007 against noise 0.44; the bound leaves room for 400-sample MMD noise)
    assert mmd(x50, ref).item() < 0.05 * noise


@pytest.mark.parametrize("name", ["ddpm", "em", "pc"])
def test_stochastic_samplers_depend_on_the_generator(name):
    assert not torch.equal(_run(name, 10, seed=0)[0], _run(name, 10, seed=1)[0])


def test_bad_input():
    x_T = torch.randn(4, 2)
    with pytest.raises(ValueError, match="name must be one of"):
        sample_at_nfe("ddim2", 10, x_T, eps_model=EPS, schedule=SCHED)
    with pytest.raises(ValueError, match="nfe must be an integer >= 2"):
        sample_at_nfe("ddim", 1, x_T, eps_model=EPS, schedule=SCHED)
    with pytest.raises(ValueError, match="needs velocity_model"):
        sample_at_nfe("fm-euler", 10, x_T, eps_model=EPS, schedule=SCHED)
    with pytest.raises(ValueError, match="needs eps_model and schedule"):
        sample_at_nfe("pc", 10, x_T, velocity_model=VEL)


def test_bad_input_named():
    x_T = torch.randn(4, 2)
    kw = dict(eps_model=EPS, schedule=SCHED)
    with pytest.raises(ValueError, match="nfe must be an integer >= 2"):
        sample_at_nfe("ddim", 2.0, x_T, **kw)
    # a discrete sampler cannot spend more evaluations than the schedule has steps: named as nfe, not as steps
    with pytest.raises(ValueError, match=r"nfe must be an integer in \[2, 1000\], got 2000"):
        sample_at_nfe("ddim", 2000, x_T, **kw)
    with pytest.raises(ValueError, match="spacing must be one of"):
        sample_at_nfe("ddim", 4, x_T, spacing="quadratic", **kw)
    with pytest.raises(TypeError, match="schedule must be a diffu.schedules.Schedule"):
        sample_at_nfe("ddim", 4, x_T, eps_model=EPS, schedule="linear")
    with pytest.raises(TypeError, match="eps_model must be callable"):
        sample_at_nfe("ddim", 4, x_T, eps_model=1, schedule=SCHED)
    with pytest.raises(TypeError, match="clip_x0 must be True or False"):
        sample_at_nfe("ddpm", 4, x_T, clip_x0=1, **kw)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        sample_at_nfe("ddpm", 4, x_T, generator=1, **kw)
    for bad, match in ((x_T.long(), "x_T must be a floating-point tensor"), (x_T * float("nan"), "x_T must be finite"),
                       ([[0.5, 0.5]], "x_T must be a tensor or a shape tuple")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            sample_at_nfe("pc", 4, bad, **kw)
