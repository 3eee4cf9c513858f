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
