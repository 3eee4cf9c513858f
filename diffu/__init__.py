"""diffu — a small, GPU-ready PyTorch package implementing the algorithms of the diffusion-models book.

Modules map to chapters: :mod:`diffu.schedules` and :mod:`diffu.samplers` (§2.1–2.2), :mod:`diffu.sde`,
:mod:`diffu.flow`, :mod:`diffu.ode`, :mod:`diffu.compare` and :mod:`diffu.gmm` (§2.5, appendix A.2.1),
:mod:`diffu.nn` (§2.6),
:mod:`diffu.data`, :mod:`diffu.train`, :mod:`diffu.pretrained` and :mod:`diffu.metrics` (support).
"""

from __future__ import annotations

import torch

#: The package version.
__version__ = "0.1.0"

__all__ = ["__version__", "device"]


def device() -> torch.device:
    """The best available device for notebooks: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
