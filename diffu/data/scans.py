"""Real scans that ship inside installed wheels, held out from every model (chapter §5).

- ``"CT_small"``: pydicom's bundled test CT slice (128 × 128, int16 stored values; rescale slope 1, intercept
  −1024, so Hounsfield units are stored − 1024), shown through a soft-tissue-to-bone window.
- ``"MR_small"``: pydicom's bundled test MR slice (64 × 64), through its own DICOM window (centre 600, width 1600).
- ``"s1045"``: matplotlib's bundled MRI slice (``mpl-data/sample_data/s1045.ima.gz``, 256 × 256 uint16): a head
  slice *with* skull and scalp, in another contrast than the MNI T1, used to show what a skull-stripped prior does
  out of distribution. Scaled by its 99.5th percentile.

pydicom's test files are distributed with pydicom (MIT licence), matplotlib's sample data with matplotlib
(matplotlib licence). They are test images, not patient data for any use; **nothing here is for clinical use.**
"""

from __future__ import annotations

import numpy as np
import torch

from ..checks import check_choice, check_int
from .mni import resize_square

__all__ = ["SCANS", "scan"]

#: The names :func:`scan` accepts.
SCANS = ("CT_small", "MR_small", "s1045")
# CT window in Hounsfield units (lower, upper): soft tissue to dense bone
_CT_WINDOW = (-400.0, 1200.0)


def _raw(name: str) -> np.ndarray:
    if name == "s1045":
        import matplotlib.cbook as cbook

        with cbook.get_sample_data("s1045.ima.gz") as f:
            a = np.frombuffer(f.read(), np.uint16).reshape(256, 256).astype(np.float32)
        return np.clip(a / np.percentile(a, 99.5), 0, 1)
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    d = dcmread(get_testdata_file(f"{name}.dcm"))
    a = d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1)) + float(
        getattr(d, "RescaleIntercept", 0))  # fmt: skip
    lo, hi = _CT_WINDOW if name == "CT_small" else (
        float(d.WindowCenter) - float(d.WindowWidth) / 2, float(d.WindowCenter) + float(d.WindowWidth) / 2)  # fmt: skip
    return np.clip((a - lo) / (hi - lo), 0, 1)


def scan(name: str, size: int | None = None) -> torch.Tensor:
    """One of :data:`SCANS` as (1, 1, H, W) in [-1, 1], windowed as the module docstring says, and resized (area
    average, or antialiased bilinear when the sizes do not divide) to ``size`` × ``size`` when ``size`` is given."""
    check_choice("name", name, SCANS)
    if size is not None:
        check_int("size", size, 4)
    x = torch.from_numpy(np.ascontiguousarray(_raw(name)))[None, None]
    if size is not None and x.shape[-1] != size:
        x = resize_square(x, size)
    return x.clamp(0, 1) * 2 - 1
