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


@pytest.fixture(scope="session")
def gen():
    """A factory of seeded CPU generators: ``gen(3)`` is ``torch.Generator().manual_seed(3)`` (stateless, so one
    factory serves every scope, module-scoped fixtures included)."""

    def make(seed: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    return make


@pytest.fixture(scope="module")
def noisy_clf():
    """A tiny noise-aware classifier p(y | x_t, t) on 8×8 images, 3 classes, seeded random weights."""
    from diffu.nn import NoisyClassifier
    from diffu.train import seeded

    with seeded(0):
        clf = NoisyClassifier(channels=8, channel_mult=(1, 2), attn_resolutions=(), image_size=8, num_classes=3)
        for p in clf.parameters():
            torch.nn.init.normal_(p, std=0.2)
    return clf.eval()
