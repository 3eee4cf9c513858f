"""Plots used by the chapters: image grids, sampling trajectories and their animations (DESIGN.md, convention 12).

Logic (grid assembly, frame selection) is plain tensor code and unit-tested; matplotlib is imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["animate_trajectory", "image_grid", "plot_trajectory", "show_images"]


def image_grid(x: torch.Tensor, nrow: int = 8, pad: int = 1, pad_value: float = 1.0) -> torch.Tensor:
    """Tile ``(N, C, H, W)`` images in [-1, 1] into one ``(H', W', C)`` array in [0, 1] with ``nrow`` per row."""
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if nrow < 1 or pad < 0:
        raise ValueError(f"nrow must be >= 1 and pad >= 0, got {nrow} and {pad}")
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)  # (N, H, W, C)
    n, h, w, c = x.shape
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    grid = torch.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = x[i]
    return grid


def show_images(x: torch.Tensor, nrow: int = 8, title: str | None = None, ax=None, scale: float = 0.6):
    """Show a grid of images (grey for one channel); returns the matplotlib axes."""
    import matplotlib.pyplot as plt

    grid = image_grid(x, nrow)
    if ax is None:
        _, ax = plt.subplots(figsize=(scale * grid.shape[1] / 14, scale * grid.shape[0] / 14))
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def _frames(n_total: int, n_frames: int) -> list[int]:
    """``n_frames`` indices spread evenly over ``range(n_total)``, always including the first and last."""
    if n_total < 1 or n_frames < 1:
        raise ValueError("need at least one state and one frame")
    if n_frames >= n_total:
        return list(range(n_total))
    return sorted({round(i * (n_total - 1) / (n_frames - 1)) for i in range(n_frames)}) if n_frames > 1 else [0]


def plot_trajectory(traj, n_frames: int = 8, n_images: int = 4, which: Sequence[str] = ("x", "x0")):
    """Rows of images along a sampler run recorded by :class:`diffu.samplers.Trajectory`: the state x_t and/or
    the denoised estimate x̂_0 at ``n_frames`` evenly spaced steps."""
    import matplotlib.pyplot as plt

    idx = _frames(len(traj), n_frames)
    rows = [(k, traj.xs if k == "x" else traj.x0s) for k in which]
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.1 * len(idx) * 1.0, 1.1 * n_images * len(rows) / 1.6))
    axes = [axes] if len(rows) == 1 else axes
    for ax, (k, seq) in zip(axes, rows):
        cols = torch.stack([seq[i][:n_images] for i in idx], 1).flatten(0, 1)  # (n_images * frames, C, H, W)
        show_images(cols, nrow=len(idx), ax=ax)
        label = "$x_t$" if k == "x" else r"$\hat x_0$"
        ax.set_title(f"{label} at t = " + ", ".join(str(traj.ts[i]) for i in idx), fontsize=8)
    fig.tight_layout()
    return fig


def animate_trajectory(traj, n_frames: int = 20, nrow: int = 8, interval: int = 150):
    """A matplotlib animation of x_t (left) and x̂_0 (right) along a recorded run; ``.to_jshtml()`` embeds it in the
    static book."""
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    idx = _frames(len(traj), n_frames)
    fig, (a, b) = plt.subplots(1, 2, figsize=(7, 3.6))
    ims = []
    for ax, seq, name in ((a, traj.xs, "$x_t$"), (b, traj.x0s, r"$\hat x_0$")):
        g = image_grid(seq[idx[0]], nrow)
        ims.append(ax.imshow(g[..., 0], cmap="gray", vmin=0, vmax=1))
        ax.set_axis_off()
        ax.set_title(name)
    title = fig.suptitle("")

    def update(k):
        i = idx[k]
        ims[0].set_data(image_grid(traj.xs[i], nrow)[..., 0])
        ims[1].set_data(image_grid(traj.x0s[i], nrow)[..., 0])
        title.set_text(f"t = {traj.ts[i]}")
        return [*ims, title]

    anim = FuncAnimation(fig, update, frames=len(idx), interval=interval, blit=False)
    plt.close(fig)
    return anim
