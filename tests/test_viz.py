import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from diffu.samplers import Trajectory, ddim  # noqa: E402
from diffu.schedules import linear_schedule  # noqa: E402
from diffu.viz import _frames, animate_trajectory, image_grid, plot_trajectory, show_images  # noqa: E402


def test_image_grid_layout():
    x = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])  # three constant 2×3 images
    g = image_grid(x, nrow=2, pad=1, pad_value=0.5)
    assert g.shape == (2 * 3 + 1, 2 * 4 + 1, 1)
    assert float(g[1, 1, 0]) == 0.0 and float(g[1, 5, 0]) == 0.5 and float(g[4, 1, 0]) == 1.0
    assert float(g[4, 5, 0]) == 0.5  # the missing fourth image is padding
    with pytest.raises(ValueError, match="shape"):
        image_grid(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="nrow"):
        image_grid(x, nrow=0)


def test_frames():
    assert _frames(10, 3) == [0, 4, 9] or _frames(10, 3) == [0, 5, 9]
    assert _frames(3, 10) == [0, 1, 2] and _frames(5, 1) == [0]
    with pytest.raises(ValueError):
        _frames(0, 2)


def test_plots_run():
    class M(torch.nn.Module):
        def forward(self, x, t):
            return 0.5 * x

    traj = Trajectory()
    ddim(M(), (4, 1, 8, 8), linear_schedule(100), steps=10, progress=False, callback=traj,
         generator=torch.Generator().manual_seed(0))  # fmt: skip
    fig = plot_trajectory(traj, n_frames=4, n_images=2)
    assert len(fig.axes) == 2
    html = animate_trajectory(traj, n_frames=3, nrow=4).to_jshtml()
    assert "<script" in html
    assert show_images(traj.xs[-1], nrow=2, title="x") is not None
