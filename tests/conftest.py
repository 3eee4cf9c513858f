import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class DummyEps(torch.nn.Module):
    """A deterministic, non-trivial 'network': ε̂ = tanh(x · a(t)) + b(t), so samplers can be compared exactly."""

    prediction = "eps"

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.7))

    def forward(self, x, t, y=None):
        s = (t.to(x.dtype) / 1000.0).reshape(-1, *([1] * (x.ndim - 1)))
        return torch.tanh(x * (0.5 + s)) * self.w + 0.1 * torch.sin(3 * s + x)


@pytest.fixture
def dummy():
    return DummyEps()


@pytest.fixture
def gen():
    """A factory of seeded CPU generators: ``gen(3)`` is ``torch.Generator().manual_seed(3)``."""

    def make(seed: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    return make
