"""Plots used by the chapters: image grids, sampling trajectories and their animations (CONTRIBUTING.md, convention 12).

Logic (grid assembly, frame selection) is plain tensor code and unit-tested; matplotlib is imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .checks import check_choice, check_finite, check_floating, check_int, check_not_0_255, check_rank, check_real

__all__ = [
    "animate_trajectory",
    "animation_html",
    "image_grid",
    "plot_trajectory",
    "show_feature_maps",
    "show_images",
    "unet_diagram",
]


#: The overshoot :func:`image_grid` clamps as sampler overshoot, as :func:`diffu.data.to_uint8` does: a batch with
#: no value below 0 and some above it is 0–255 data, not a [-1, 1] image.
_OVERSHOOT = 2.0


def _check_not_uint8(x: torch.Tensor, name: str = "x") -> None:
    """``x`` (finite) is not a 0–255 float image: values above :data:`_OVERSHOOT` with none below 0 are refused.
    Noisy states (x_T ~ N(0, I) reaches ±4) are signed and pass: they are clamped for display."""
    check_not_0_255(x, name, _OVERSHOOT, f"[-1, 1] images (up to ±{_OVERSHOOT:g} is clamped as overshoot)")


def image_grid(x: torch.Tensor, nrow: int = 8, pad: int = 1, pad_value: float = 1.0) -> torch.Tensor:
    """Tile ``(N, C, H, W)`` images in [-1, 1] into one ``(H', W', C)`` array in [0, 1] with ``nrow`` per row.

    Values outside [-1, 1] (a sampler's overshoot, a noisy state x_t) are clamped for display. A batch with values
    above 2 and none below 0 is 0–255 data (clamping would show it white) and is refused, as by
    :func:`diffu.data.to_uint8`; a [0, 1] image cannot be told from a bright [-1, 1] one and is shown as it is.

    Args:
        x: a finite floating-point batch ``(N, C, H, W)``, N >= 1, in [-1, 1] (convert 0–255 images with
            :func:`diffu.data.from_uint8`).
        nrow: images per row, an integer >= 1; pad: pixels between images, an integer >= 0.
        pad_value: the padding's grey level in the grid's [0, 1] display range (0 black, 1 white).

    Raises:
        ValueError: an argument that is not as above (integer images, 0–255 float data, NaN, a wrong rank, an empty
            batch, a ``pad_value`` outside [0, 1]).
        TypeError: a ``pad_value`` that is not a number.
    """
    check_rank(x, 4, "x", "(N, C, H, W)")
    check_int("nrow", nrow, 1)
    check_int("pad", pad, 0)
    check_real("pad_value", pad_value, 0, 1)
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one image, got shape {tuple(x.shape)}")
    check_floating(x, "x")
    check_finite(x, "x")
    _check_not_uint8(x)
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
    """Show a grid of images (grey for one channel); returns the matplotlib axes.

    Args:
        x, nrow: as in :func:`image_grid`; title: the axes' title or None; ax: matplotlib axes or None (a new
            figure).
        scale: the figure size per pixel, a finite number > 0.

    Raises:
        ValueError, TypeError: as :func:`image_grid`; a scale that is not a finite number > 0; an ``ax`` that is not
            a matplotlib ``Axes`` or None (``TypeError``).
    """
    import matplotlib.pyplot as plt

    check_real("scale", scale, 0, low_open=True)
    _check_ax(ax)
    grid = image_grid(x, nrow)
    if ax is None:
        _, ax = plt.subplots(figsize=(scale * grid.shape[1] / 14, scale * grid.shape[0] / 14))
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def _check_trajectory(traj) -> None:
    """``traj`` is a recorded trajectory (``xs``, ``x0s``, ``ts``) with at least one state."""
    if not all(hasattr(traj, a) for a in ("xs", "x0s", "ts")) or not hasattr(traj, "__len__"):
        raise TypeError(f"traj must be a diffu.samplers.Trajectory (with xs, x0s, ts), got {type(traj).__name__}")
    if len(traj) < 1:
        raise ValueError(
            "traj must hold at least one recorded state, got an empty Trajectory (pass it to a sampler as "
            "callback=traj first)"
        )


def _check_ax(ax) -> None:
    """``ax`` is None or a matplotlib ``Axes``."""
    from matplotlib.axes import Axes

    if ax is not None and not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None (a new figure), got {type(ax).__name__} {ax!r:.40}")


def _frames(n_total: int, n_frames: int) -> list[int]:
    """``n_frames`` indices spread evenly over ``range(n_total)``, always including the first and last."""
    if n_total < 1 or n_frames < 1:
        raise ValueError("need at least one state and one frame")
    if n_frames >= n_total:
        return list(range(n_total))
    return sorted({round(i * (n_total - 1) / (n_frames - 1)) for i in range(n_frames)}) if n_frames > 1 else [0]


def plot_trajectory(traj, n_frames: int = 8, n_images: int = 4, which: Sequence[str] = ("x", "x0")):
    """Rows of images along a sampler run recorded by :class:`diffu.samplers.Trajectory`: the state x_t and/or
    the denoised estimate x̂_0 at ``n_frames`` evenly spaced steps.

    Args:
        traj: a recorded :class:`~diffu.samplers.Trajectory` (at least one state).
        n_frames, n_images: integers >= 1.
        which: the rows, a non-empty sequence of "x" and "x0" (or one of them as a string).

    Raises:
        ValueError, TypeError: naming the argument that is not as above.
    """
    import matplotlib.pyplot as plt

    _check_trajectory(traj)
    check_int("n_frames", n_frames, 1)
    check_int("n_images", n_images, 1)
    which = (which,) if isinstance(which, str) else which
    if not isinstance(which, Sequence) or not which:
        raise TypeError(f"which must be a non-empty sequence of 'x' and 'x0', got {which!r:.60}")
    for k in which:
        check_choice("which", k, ("x", "x0"))
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
    """A matplotlib animation of x_t (left) and x̂_0 (right) along a recorded run; :func:`animation_html` embeds it
    in a notebook and in the static book.

    Args:
        traj: a recorded :class:`~diffu.samplers.Trajectory`; n_frames, nrow: integers >= 1; interval: milliseconds
            per frame, an integer >= 1.

    Raises:
        ValueError, TypeError: naming the argument that is not as above.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    _check_trajectory(traj)
    check_int("n_frames", n_frames, 1)
    check_int("nrow", nrow, 1)
    check_int("interval", interval, 1)

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


# ----------------------------------------------------------------------------------------------------------------
# The UNet drawn in code, and its feature maps (chapter §2.6)
# ----------------------------------------------------------------------------------------------------------------


#: matplotlib's animation controls draw Font Awesome icons from a CDN; :func:`animation_html` writes them as text
_ANIMATION_ICONS = {
    "fa-minus": "\u2212",  # slower
    "fa-fast-backward": "\u23ee",
    "fa-step-backward": "\u25c2",
    "fa-play fa-flip-horizontal": "\u25c0",  # play backwards
    "fa-pause": "\u275a\u275a",
    "fa-play": "\u25b6",
    "fa-step-forward": "\u25b8",
    "fa-fast-forward": "\u23ed",
    "fa-plus": "+",  # faster
}


def animation_html(anim) -> str:
    """An animation as self-contained HTML for a notebook or the static book, with no request to the network.

    ``anim.to_jshtml()`` (matplotlib) links the Font Awesome stylesheet from a CDN for its play/step buttons: offline
    the buttons come out blank. This returns the same player with that link removed and each icon written as a text
    symbol (▶, ❚❚, ⏮, …), the frames embedded as before.

    Args:
        anim: a matplotlib animation (e.g. from :func:`animate_trajectory`).

    Returns:
        The HTML, for ``IPython.display.HTML``.

    Raises:
        TypeError: ``anim`` is not a matplotlib animation.
    """
    import re

    from matplotlib.animation import Animation

    if not isinstance(anim, Animation):
        raise TypeError(f"anim must be a matplotlib animation, got {type(anim).__name__}")
    html = re.sub(r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">\s*', "", anim.to_jshtml())

    def icon(m):
        return _ANIMATION_ICONS.get(m.group(1).replace("fa ", "", 1), "?")

    return re.sub(r'<i class="(fa [^"]+)"></i>', icon, html)


def _unet_levels_info(model) -> list[dict]:
    """Per feature level (forward order): name, resolution, channels, ResBlock count, attention, parameters."""
    from .representations import unet_levels, unet_summary

    rows = unet_summary(model)
    out = []
    for name in unet_levels(model):
        mine = [r for r in rows if r["level"] == name]
        res_blocks = [r for r in mine if r["block"].startswith("ResBlock")]
        out.append({
            "name": name,
            "resolution": mine[-1]["resolution"],
            "channels": res_blocks[-1]["channels"],
            "res_blocks": len(res_blocks),
            "attention": any("attention" in r["block"] for r in mine),
            "params": sum(r["params"] for r in mine),
        })  # fmt: skip
    return out


def unet_diagram(model, ax=None):
    """Draw the UNet's U shape from its modules: one box per level (resolution × channels, ResBlocks, attention,
    parameters counted from the model), down/up arrows, skip connections across, the time (and label) embedding
    entering every ResBlock. ``model`` is a :class:`diffu.nn.UNet` or a :class:`diffu.nn.UNetConfig` (built to count
    parameters, in a forked RNG: torch's global RNG is left as it was). ``ax``: matplotlib axes or None (a new
    figure). Returns the matplotlib figure. Chapter §2.6.

    Raises:
        TypeError: a model that is neither a UNet nor a UNetConfig, an ``ax`` that is not a matplotlib ``Axes`` or
            None.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    from .nn.unet import UNet, UNetConfig
    from .representations import unet_summary

    _check_ax(ax)
    if isinstance(model, UNetConfig):
        with torch.random.fork_rng(devices=[]):  # the random initialisation must not advance the caller's RNG
            model = UNet(model)
    if not isinstance(model, UNet):
        raise TypeError(f"model must be a diffu.nn.UNet or UNetConfig, got {type(model).__name__}")
    cfg, info = model.config, _unet_levels_info(model)
    n_levels = len(cfg.channel_mult)
    enc, mid, dec = info[:n_levels], info[n_levels], info[n_levels + 1 :][::-1]  # dec[l] is decoder level l
    rows = unet_summary(model)
    total = sum(r["params"] for r in rows)
    emb_params = sum(r["params"] for r in rows if r["level"] == "embedding")
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 1.9 * (n_levels + 2)))
    fig = ax.figure
    w, h, dy, xr = 2.6, 1.15, 1.8, 7.4  # box size, vertical step, x of the decoder column
    pos = {}

    def box(key, x, y, lv, color):
        edge, lw = ("darkorange", 2.2) if lv["attention"] else ("0.3", 1.0)
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04", fc=color, ec=edge, lw=lw))
        blocks = f"{lv['res_blocks']} ResBlock" + ("s" * (lv["res_blocks"] > 1)) + (" + attn" * lv["attention"])
        text = f"{lv['name']}   {lv['channels']} ch\n{blocks}\n{lv['params']:,} params"
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5)
        pos[key] = (x, y)

    def arrow(a, b, style="-|>", **kw):
        ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle=style, **kw))

    for l, lv in enumerate(enc):
        box(("enc", l), 0, -l * dy, lv, "#dce9f7")
        box(("dec", l), xr, -l * dy, dec[l], "#e3f2e1")
    box("mid", xr / 2, -n_levels * dy, mid, "#ece1f5")
    for l in range(n_levels - 1):
        (x0, y0), (x1, y1) = pos[("enc", l)], pos[("enc", l + 1)]
        arrow((x0, y0 - h / 2 - 0.05), (x1, y1 + h / 2 + 0.05), color="0.2")
        ax.text(x0 - 0.12, (y0 + y1) / 2, "stride-2 conv", ha="right", va="center", fontsize=8)
        (x0, y0), (x1, y1) = pos[("dec", l + 1)], pos[("dec", l)]
        arrow((x0, y0 + h / 2 + 0.05), (x1, y1 - h / 2 - 0.05), color="0.2")
        ax.text(x0 + 0.12, (y0 + y1) / 2, "upsample ×2", ha="left", va="center", fontsize=8)
    (xe, ye), (xm, ym), (xd, yd) = pos[("enc", n_levels - 1)], pos["mid"], pos[("dec", n_levels - 1)]
    arrow((xe + w / 4, ye - h / 2 - 0.05), (xm - w / 2 - 0.05, ym), color="0.2")
    arrow((xm + w / 2 + 0.05, ym), (xd - w / 4, yd - h / 2 - 0.05), color="0.2")
    for l in range(n_levels):
        (x0, y0), (x1, _) = pos[("enc", l)], pos[("dec", l)]
        arrow((x0 + w / 2 + 0.05, y0 - 0.25), (x1 - w / 2 - 0.05, y0 - 0.25), color="tab:green", ls="--", lw=1.4)
        n_skip = dec[l]["res_blocks"]
        ax.text(xr / 2, y0 - 0.18, f"{n_skip} skip tensors, concatenated", ha="center", va="bottom", fontsize=8,
                color="tab:green")  # fmt: skip
    # the embedding, added inside every ResBlock
    ey = dy * 0.95
    label = " + label embedding (null class = unconditional)" if model.num_classes is not None else ""
    ax.text(xr / 2, ey, f"t → sinusoidal embedding → MLP{label}\n{emb_params:,} params; added in every ResBlock",
            ha="center", va="center", fontsize=8.5, color="tab:red",
            bbox=dict(boxstyle="round", fc="#fbe3e1", ec="tab:red"))  # fmt: skip
    for x, y in pos.values():
        arrow((xr / 2, ey - 0.3), (x, y + h / 2 + 0.02), style="-|>", color="tab:red", ls=":", lw=0.8, alpha=0.6,
              connectionstyle="arc3,rad=0.08")  # fmt: skip
    arrow((-w / 2 - 0.9, dy * 0.55), (-w / 2 + 0.3, h / 2 + 0.05), color="0.2")
    ax.text(-w / 2 - 0.9, dy * 0.6, f"$x_t$ {cfg.image_size}×{cfg.image_size}×{cfg.in_channels}", ha="center",
            va="bottom", fontsize=9)  # fmt: skip
    arrow((xr + w / 2 - 0.3, h / 2 + 0.05), (xr + w / 2 + 0.9, dy * 0.55), color="0.2")
    ax.text(xr + w / 2 + 0.9, dy * 0.6, r"$\hat\varepsilon$ (or $\hat x_0$, $v$)", ha="center", va="bottom",
            fontsize=9)  # fmt: skip
    ax.set_xlim(-w / 2 - 1.6, xr + w / 2 + 1.6)
    ax.set_ylim(-n_levels * dy - h, dy * 1.35)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(f"UNet, {total:,} parameters; orange frame = self-attention", fontsize=10)
    return fig


def show_feature_maps(features: dict, index: int = 0, n_channels: int = 6, image: torch.Tensor | None = None,
                      title: str | None = None):  # fmt: skip
    """One row per level of ``features`` (``{name: (N, C, H, W)}``, e.g. from
    :func:`diffu.representations.unet_features`): the ``n_channels`` channels with the largest spatial variance for
    image ``index``, each on its own colour scale. ``image`` (optional, in [-1, 1]) is drawn first in every row: one
    ``(C, H, W)`` image for all rows, or ``(rows, C, H, W)`` with one per row. Returns the figure. Chapter §2.6.

    Raises:
        ValueError: features that are not a non-empty dict of finite floating ``(N, C, H, W)`` tensors, an ``index``
            outside ``[0, N − 1]``, ``n_channels`` not an integer >= 1, an image of another shape, with NaN, or of
            0–255 data (as :func:`image_grid` says).
    """
    import matplotlib.pyplot as plt

    if not isinstance(features, dict) or not features:
        raise ValueError("features must be a non-empty dict {level: (N, C, H, W) tensor}")
    if any(not isinstance(f, torch.Tensor) or f.ndim != 4 for f in features.values()):
        raise ValueError("features must map level names to (N, C, H, W) tensors")
    for name, f in features.items():
        check_floating(f, f"features[{name!r}]")
        check_finite(f, f"features[{name!r}]")
    n = min(f.shape[0] for f in features.values())
    check_int("index", index, 0)
    if not 0 <= index < n:
        raise ValueError(f"index must be in [0, {n - 1}], got {index}")
    check_int("n_channels", n_channels, 1)
    extra = image is not None
    if extra:
        check_floating(image, "image")
        check_finite(image, "image")
        _check_not_uint8(image, "image")
        image = image.detach().float().cpu()
        if image.ndim == 3:
            image = image.expand(len(features), *image.shape)
        if image.ndim != 4 or image.shape[0] != len(features):
            raise ValueError(f"image must be (C, H, W) or ({len(features)}, C, H, W), got {tuple(image.shape)}")
    fig, axes = plt.subplots(len(features), n_channels + extra, figsize=(1.25 * (n_channels + extra + 1.2),
                             1.25 * len(features)), squeeze=False)  # fmt: skip
    for i, (row, (name, f)) in enumerate(zip(axes, features.items())):
        maps = f[index].detach().float().cpu()  # (C, H, W)
        order = maps.flatten(1).var(1).argsort(descending=True)[:n_channels]
        if extra:
            row[0].imshow(image[i, 0], cmap="gray", vmin=-1, vmax=1)
        for j, c in enumerate(order.tolist()):
            row[j + extra].imshow(maps[c], cmap="viridis")
            row[j + extra].set_title(f"ch {c}", fontsize=7, pad=2)
        for a in row:
            a.set_xticks([])
            a.set_yticks([])
        row[0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
