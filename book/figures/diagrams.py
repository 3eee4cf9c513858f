"""Conceptual diagrams of the book (chains, blocks, geometry), drawn with matplotlib alone.

``python book/figures/diagrams.py`` writes every diagram as an SVG file next to this script;
``python book/figures/diagrams.py unet dit_block`` writes only those (names with or without ``.svg``);
``--out DIR`` writes into another folder and ``--png DIR`` also writes a PNG preview of each.

The files are deterministic: fixed sizes, a fixed ``svg.hashsalt``, no date in the metadata and a fixed NumPy seed
for the noise in the thumbnails, so re-running the script reproduces them byte for byte
(``tests/project/test_diagrams.py`` checks it). The numbers in the architecture diagrams (channels, widths, tokens)
are read from the shipped configurations in ``diffu/weights/manifest.json``, so a retrained model with another
configuration makes the test fail until the diagrams are regenerated.

Every concept has one colour in every diagram (:data:`PALETTE`).
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import accumulate
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402
from matplotlib.path import Path as MPath  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MANIFEST = ROOT / "diffu" / "weights" / "manifest.json"

#: One (fill, edge) colour pair per concept, shared by all diagrams.
PALETTE = {
    "image": ("#dce9f7", "#2e6da4"),  # images, image tokens, x_t and the convolutional blocks acting on them
    "text": ("#d9f0eb", "#16806f"),  # captions, text tokens, text encoders
    "cond": ("#fbe3e1", "#c0392b"),  # timestep / class / pooled-text conditioning, adaLN parameters, ε(x, c)
    "attn": ("#fdebd0", "#d35400"),  # attention
    "net": ("#e4f1d8", "#4f8a10"),  # learned maps: MLPs, denoisers, the learned reverse step p_θ
    "norm": ("#ece1f5", "#7d3c98"),  # normalisation, scale/shift modulation, gates
    "noise": ("#ececec", "#5f5f5f"),  # noise, the fixed forward process, the unconditional ε(x, ∅)
    "meas": ("#fdf2c7", "#a67c00"),  # measurement y, operator A, data-fidelity steps
    "plain": ("#ffffff", "#444444"),  # inputs and outputs without a concept of their own
}
SKIP = PALETTE["image"][1]  # skip connections carry image features: the image colour, dashed
INK = "#222222"
SUBTLE = "#666666"

#: Which chapter each diagram belongs to (the lead inserts them into these notebooks).
PLACEMENT = {
    "forward_reverse_chain.svg": "book/02_1_diffusion_basics.ipynb",
    "unet.svg": "book/02_6_unet.ipynb",
    "dit_block.svg": "book/02_6_1_dit.ipynb",
    "mmdit_block.svg": "book/02_6_1_dit.ipynb",
    "sd3_pipeline.svg": "book/02_6_1_dit.ipynb",
    "dps_geometry.svg": "book/04_2_2_dps.ipynb",
    "cfg_extrapolation.svg": "book/02_3_guidance.ipynb",
    "pnp_loop.svg": "book/04_1_pnp_restoration.ipynb",
}

RC = {
    "svg.hashsalt": "diffu",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "mathtext.fontset": "dejavusans",
    "font.size": 10,
    "lines.solid_capstyle": "round",
}


# ---------------------------------------------------------------------------------------------------------------
# Drawing helpers (coordinates are inches on a canvas of the figure's size)
# ---------------------------------------------------------------------------------------------------------------


def canvas(w: float, h: float):
    """A figure of ``w × h`` inches whose data coordinates are inches, origin bottom left, no axes drawn."""
    fig = plt.figure(figsize=(w, h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, w)
    ax.set_ylim(0, h)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def box(ax, x, y, w, h, text="", kind="plain", fs=10, dashed=False, pad=0.05, lw=1.1, color=INK, **kw):
    """A rounded box of outer size ``w × h`` centred at ``(x, y)`` in the colours of ``kind``, with centred text."""
    fc, ec = PALETTE[kind]
    patch = FancyBboxPatch((x - w / 2 + pad, y - h / 2 + pad), w - 2 * pad, h - 2 * pad,
                           boxstyle=f"round,pad={pad}", fc=fc, ec=ec, lw=lw,
                           ls=(0, (4, 2.5)) if dashed else "-", zorder=2)  # fmt: skip
    ax.add_patch(patch)
    if text:
        ax.text(x, y, text, ha="center", va="center", fontsize=fs, color=color, zorder=4, linespacing=1.25, **kw)
    return patch


def arrow(ax, a, b, color=INK, lw=1.2, ls="-", style="-|>", rad=0.0, ms=10, z=3, **kw):
    """An arrow from point ``a`` to point ``b`` (``rad`` bends it)."""
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=ms, lw=lw, color=color, ls=ls,
                                 shrinkA=0, shrinkB=0, connectionstyle=f"arc3,rad={rad}", zorder=z, **kw))  # fmt: skip


def path_arrow(ax, points, color=INK, lw=1.2, ls="-", style="-|>", ms=10, z=3):
    """An arrow along the polyline ``points`` (head at the last point)."""
    path = MPath(points, [MPath.MOVETO] + [MPath.LINETO] * (len(points) - 1))
    ax.add_patch(FancyArrowPatch(path=path, arrowstyle=style, mutation_scale=ms, lw=lw, color=color, ls=ls,
                                 zorder=z))  # fmt: skip


def line(ax, points, color=INK, lw=1.2, ls="-", z=3):
    xs, ys = zip(*points)
    ax.plot(xs, ys, color=color, lw=lw, ls=ls, zorder=z, solid_capstyle="butt")


def circle_op(ax, x, y, sym="+", r=0.11, kind="plain", fs=11):
    """A small circled operator (⊕ for a residual sum, × for a gate)."""
    fc, ec = PALETTE[kind]
    ax.add_patch(Circle((x, y), r, fc=fc, ec=ec, lw=1.1, zorder=4))
    ax.text(x, y - 0.005, sym, ha="center", va="center", fontsize=fs, color=INK, zorder=5)


def text(ax, x, y, s, fs=10, color=INK, ha="center", va="center", **kw):
    return ax.text(x, y, s, fontsize=fs, color=color, ha=ha, va=va, zorder=5, linespacing=1.25, **kw)


def stacked(y0: float, keys: str, steps) -> dict:
    """Heights of rows stacked upwards from ``y0``: ``keys`` (space-separated) with the gaps ``steps`` below them."""
    return dict(zip(keys.split(), list(accumulate(steps, initial=y0))[1:]))


def config(name: str) -> dict:
    """The shipped configuration of the weight ``name`` (``diffu/weights/manifest.json``)."""
    return json.loads(MANIFEST.read_text())[name]["config"]


# ---------------------------------------------------------------------------------------------------------------
# 1. The forward and reverse chains (§2.1)
# ---------------------------------------------------------------------------------------------------------------


def garment(size: int = 28) -> np.ndarray:
    """A T-shirt silhouette in [-1, 1] on a black background, ``(size, size)``: a stand-in for a Fashion-MNIST image."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) * 28 / size
    dx = np.abs(xx - 14)
    shoulders = yy > 6.5 + 0.22 * np.maximum(dx - 3, 0)
    body = (dx < 6.2) & shoulders & (yy < 25)
    sleeves = shoulders & (dx < 11.5) & (yy < 13.2 - 0.55 * np.maximum(dx - 6.2, 0))
    neck = (xx - 14) ** 2 + (yy - 6.2) ** 2 < 3.2**2
    shirt = (body | sleeves) & ~neck
    shade = 0.55 + 0.25 * np.cos((xx - 14) / 7) - 0.15 * (yy / 28)
    return np.where(shirt, shade, -1.0)


def draw_forward_reverse_chain():
    fig, ax = canvas(8.0, 3.45)
    x0 = garment()
    eps = np.random.default_rng(0).standard_normal(x0.shape)
    betas = np.linspace(1e-4, 0.02, 1000)  # the linear schedule of DDPM (diffu.schedules.linear_schedule)
    abar = np.cumprod(1 - betas)
    # (label, code timestep): t = -1 is the clean image; the middle pair are two consecutive steps
    nodes = [(r"$x_0$", -1), (r"$x_1$", 40), None, (r"$x_{t-1}$", 259), (r"$x_t$", 260), None, (r"$x_T$", 999)]
    xs = [0.62, 1.88, 2.77, 3.62, 5.28, 6.13, 7.3]
    s, yc = 0.84, 1.72  # thumbnail side, centre height
    top, bot = yc + s / 2, yc - s / 2
    fwd, rev = PALETTE["noise"][1], PALETTE["net"][1]
    for node, x in zip(nodes, xs):
        if node is None:
            text(ax, x, yc, r"$\cdots$", fs=14)
            continue
        name, t = node
        a = 1.0 if t < 0 else abar[t]
        img = np.sqrt(a) * x0 + np.sqrt(1 - a) * eps
        ax.imshow(img, cmap="gray", vmin=-1, vmax=1, interpolation="none", zorder=2,
                  extent=(x - s / 2, x + s / 2, bot, top))  # fmt: skip
        ax.add_patch(Rectangle((x - s / 2, bot), s, s, fill=False, ec=SUBTLE, lw=0.8, zorder=3))
        text(ax, x, bot - 0.17, name, fs=11)
    text(ax, xs[0], bot - 0.42, "data", fs=9, color=SUBTLE)
    text(ax, xs[-1], bot - 0.42, r"$\approx\mathcal{N}(0, I)$", fs=9, color=SUBTLE)
    # one forward (upper) and one reverse (lower) arrow in every gap between neighbours
    half = [s / 2, s / 2, 0.16, s / 2, s / 2, 0.16, s / 2]
    for i in range(len(xs) - 1):
        a, b = xs[i] + half[i] + 0.05, xs[i + 1] - half[i + 1] - 0.05
        arrow(ax, (a, yc + 0.14), (b, yc + 0.14), color=fwd, lw=1.3)
        arrow(ax, (b, yc - 0.14), (a, yc - 0.14), color=rev, lw=1.3)
    gap = (xs[3] + xs[4]) / 2
    text(ax, gap, top + 0.5, r"$q(x_t\mid x_{t-1})$", fs=11, color=fwd)
    text(ax, gap, top + 0.24, r"$=\mathcal{N}(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I)$", fs=9, color=fwd)
    text(ax, gap, bot - 0.46, r"$p_\theta(x_{t-1}\mid x_t)$", fs=11, color=rev)
    # the closed-form marginal: one jump from x_0 to any x_t
    yb = top + 0.98
    path_arrow(ax, [(xs[0], top + 0.04), (xs[0], yb), (xs[4] + 0.12, yb), (xs[4] + 0.12, top + 0.04)],
               color=fwd, lw=1.3, ls=(0, (5, 3)))  # fmt: skip
    text(ax, (xs[0] + xs[4]) / 2 - 0.35, yb + 0.2,
         r"$q(x_t\mid x_0)=\mathcal{N}\!\left(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t)\,I\right)$"
         "   closed form: one jump", fs=10.5, color=fwd)  # fmt: skip
    # legend
    yl = 0.25
    arrow(ax, (0.35, yl), (0.85, yl), color=fwd, lw=1.3)
    text(ax, 0.95, yl, "forward process $q$: fixed, adds Gaussian noise", fs=9.5, ha="left")
    arrow(ax, (4.85, yl), (4.35, yl), color=rev, lw=1.3)
    text(ax, 4.95, yl, r"reverse process $p_\theta$: learned, denoises", fs=9.5, ha="left")
    return fig


# ---------------------------------------------------------------------------------------------------------------
# 2. The UNet of diffu (§2.6)
# ---------------------------------------------------------------------------------------------------------------


def unet_plan(cfg: dict) -> dict:
    """The blocks of :class:`diffu.nn.unet.UNet` for ``cfg``, traced with the constructor's own arithmetic.

    Returns the encoder rows (every one a saved skip), the middle and the decoder rows (each ResBlock consumes one
    skip, in reverse order) with their input/output channels and resolutions."""
    ch, mult, nrb = cfg["channels"], cfg["channel_mult"], cfg["num_res_blocks"]
    attn, res = set(cfg["attn_resolutions"]), cfg["image_size"]
    enc = [dict(kind="conv_in", cin=cfg["in_channels"], cout=ch, res=res, attn=False)]
    skips, cur = [ch], ch
    for level, m in enumerate(mult):
        for _ in range(nrb):
            enc.append(dict(kind="res", cin=cur, cout=ch * m, res=res, attn=res in attn))
            cur = ch * m
            skips.append(cur)
        if level != len(mult) - 1:
            res = (res + 1) // 2
            enc.append(dict(kind="down", cin=cur, cout=cur, res=res, attn=False))
            skips.append(cur)
    mid = dict(ch=cur, res=res)
    dec = []
    for level, m in reversed(list(enumerate(mult))):
        for _ in range(nrb + 1):
            skip = skips.pop()
            dec.append(dict(kind="res", cin=cur + skip, skip=skip, cout=ch * m, res=res, attn=res in attn))
            cur = ch * m
        if level != 0:
            res *= 2
            dec.append(dict(kind="up", cin=cur, cout=cur, res=res, attn=False))
    return dict(enc=enc, mid=mid, dec=dec, emb=4 * ch, ch=ch, cout=cfg["out_channels"], cin=cfg["in_channels"],
                size=cfg["image_size"], classes=cfg["num_classes"])  # fmt: skip


def draw_unet():
    cfg = config("fmnist_unet")
    plan = unet_plan(cfg)
    enc, dec = plan["enc"], [b for b in plan["dec"] if b["kind"] == "res"]
    ups = [b for b in plan["dec"] if b["kind"] == "up"]
    rows = len(enc)
    assert len(dec) == rows, "every decoder ResBlock consumes one saved encoder output"
    W, H = 8.0, 6.7
    fig, ax = canvas(W, H)
    xl, xr, bw, bh = 1.75, 6.45, 2.35, 0.36  # column centres, box size
    pitch, level_gap = 0.56, 0.3
    y_first = H - 1.55
    ys, y = [], y_first
    for i, b in enumerate(enc):  # a gap between resolution levels leaves room for the upsampling boxes
        if i and b["kind"] == "down":
            y -= level_gap
        ys.append(y)
        y -= pitch
    e_dot = PALETTE["cond"][1]

    def block(x, yy, b):
        res = f"{b['res']}×{b['res']}"
        if b["kind"] == "conv_in":
            box(ax, x, yy, bw, bh, f"conv 3×3   {b['cin']} → {b['cout']}", "image")
            return
        if b["kind"] == "down":
            box(ax, x, yy, bw, bh, f"conv, stride 2 → {res}", "image")
            return
        label = f"ResBlock {b['cin']} → {b['cout']}"
        if b["attn"]:
            box(ax, x - 0.36, yy, bw - 0.72, bh, label, "image")
            box(ax, x + bw / 2 - 0.36, yy, 0.68, bh, "attn", "attn")
        else:
            box(ax, x, yy, bw, bh, label, "image")
        ax.add_patch(Circle((x - bw / 2 + 0.02, yy + bh / 2 - 0.02), 0.065, fc=e_dot, ec="white", lw=0.8, zorder=5))

    for b, yy in zip(enc, ys):
        block(xl, yy, b)
    for b, yy in zip(dec, reversed(ys)):  # the decoder climbs back up: its last block pairs with conv_in
        block(xr, yy, b)
    # the skips: encoder row i feeds the decoder ResBlock on the same row (concatenated channel-wise)
    for yy, d in zip(ys, reversed(dec)):
        arrow(ax, (xl + bw / 2 + 0.04, yy), (xr - bw / 2 - 0.04, yy), color=SKIP, lw=1.2, ls=(0, (4, 2.5)))
        text(ax, W / 2, yy + 0.1, f"{d['skip']} ch", fs=8.5, color=SKIP)
    # flow arrows down the encoder and up the decoder
    for y0, y1 in zip(ys[:-1], ys[1:]):
        arrow(ax, (xl - 0.55, y0 - bh / 2 - 0.01), (xl - 0.55, y1 + bh / 2 + 0.01), lw=1.0)
    up_y = [(ys[i - 1] + ys[i]) / 2 for i, b in enumerate(enc) if b["kind"] == "down"][::-1]
    yrev = list(reversed(ys))
    j = 0
    for i in range(rows - 1):
        y0, y1 = yrev[i], yrev[i + 1]
        if dec[i]["res"] != dec[i + 1]["res"]:  # an upsampling layer between the two levels
            u, yu = ups[j], up_y[j]
            j += 1
            box(ax, xr + 0.55, yu, 1.9, 0.26, f"upsample ×2 + conv → {u['res']}×{u['res']}", "image", fs=8.5, pad=0.03)
            arrow(ax, (xr + 0.55, y0 + bh / 2 + 0.01), (xr + 0.55, yu - 0.14), lw=1.0)
            arrow(ax, (xr + 0.55, yu + 0.14), (xr + 0.55, y1 - bh / 2 - 0.01), lw=1.0)
        else:
            arrow(ax, (xr + 0.55, y0 + bh / 2 + 0.01), (xr + 0.55, y1 - bh / 2 - 0.01), lw=1.0)
    # resolution labels of the levels, at the left margin
    for res in sorted({b["res"] for b in enc}, reverse=True):
        yy = [y for b, y in zip(enc, ys) if b["res"] == res]
        text(ax, 0.2, sum(yy) / len(yy), f"{res}×{res}", fs=9, color=SUBTLE, rotation=90)
        line(ax, [(0.34, max(yy) + 0.18), (0.34, min(yy) - 0.18)], color="#bbbbbb", lw=1.0)
    # the middle: ResBlock, attention, ResBlock at the lowest resolution
    m = plan["mid"]
    ym = ys[-1] - 0.82
    xs_mid = [W / 2 - 1.2, W / 2, W / 2 + 1.2]
    box(ax, xs_mid[0], ym, 1.1, bh, f"ResBlock {m['ch']}", "image", fs=9.5)
    box(ax, xs_mid[1], ym, 0.8, bh, "attn", "attn")
    box(ax, xs_mid[2], ym, 1.1, bh, f"ResBlock {m['ch']}", "image", fs=9.5)
    for xm in (xs_mid[0], xs_mid[2]):
        ax.add_patch(Circle((xm - 0.53, ym + bh / 2 - 0.02), 0.065, fc=e_dot, ec="white", lw=0.8, zorder=5))
    arrow(ax, (xs_mid[0] + 0.55, ym), (xs_mid[1] - 0.4, ym), lw=1.0)
    arrow(ax, (xs_mid[1] + 0.4, ym), (xs_mid[2] - 0.55, ym), lw=1.0)
    path_arrow(ax, [(xl - 0.55, ys[-1] - bh / 2 - 0.01), (xl - 0.55, ym), (xs_mid[0] - 0.56, ym)], lw=1.0)
    path_arrow(ax, [(xs_mid[2] + 0.56, ym), (xr + 0.55, ym), (xr + 0.55, ys[-1] - bh / 2 - 0.01)], lw=1.0)
    text(ax, W / 2, ym + 0.32, f"middle, {m['res']}×{m['res']}", fs=9, color=SUBTLE)
    # input and output
    yio = ys[0] + 0.62
    s = plan["size"]
    box(ax, xl - 0.55, yio, 1.6, 0.34, f"$x_t$: {plan['cin']}×{s}×{s}", "plain")
    arrow(ax, (xl - 0.55, yio - 0.17), (xl - 0.55, ys[0] + bh / 2 + 0.01), lw=1.0)
    box(ax, xr + 0.4, yio, 2.2, 0.34, rf"GN·SiLU·conv → $\hat\varepsilon$: {plan['cout']}×{s}×{s}", "plain", fs=9)
    arrow(ax, (xr + 0.55, ys[0] + bh / 2 + 0.01), (xr + 0.55, yio - 0.17), lw=1.0)
    # the embedding, added in every ResBlock
    e = plan["emb"]
    y_emb = H - 0.42
    cls = plan["classes"]
    emb = (rf"$e = \mathrm{{MLP}}(\mathrm{{sinusoid}}_{{{plan['ch']}}}(t)) + E[y]$:  {e} numbers;"
           f"  $E$: {cls + 1} × {e} (row {cls} = the null class ∅)")  # fmt: skip
    box(ax, W / 2, y_emb, 6.3, 0.42, emb, "cond", fs=9.5)
    ax.add_patch(Circle((W / 2 - 3.15 + 0.02, y_emb + 0.19), 0.065, fc=e_dot, ec="white", lw=0.8, zorder=5))
    ax.add_patch(Circle((W / 2 - 2.5, 0.3), 0.065, fc=e_dot, ec="white", lw=0.8, zorder=5))
    text(ax, W / 2 - 2.38, 0.3, r"$e$ enters every ResBlock:  $h \leftarrow h + W\,\mathrm{SiLU}(e)$  (one bias per "
         "channel)", fs=9, ha="left")  # fmt: skip
    line(ax, [(W / 2 - 2.9, 0.06), (W / 2 - 2.5, 0.06)], color=SKIP, lw=1.2, ls=(0, (4, 2.5)))
    text(ax, W / 2 - 2.38, 0.06, "skip: saved encoder output, concatenated to the decoder block's input",
         fs=9, ha="left")  # fmt: skip
    return fig


# ---------------------------------------------------------------------------------------------------------------
# 3. The adaLN-Zero DiT block (§2.6.1)
# ---------------------------------------------------------------------------------------------------------------


#: The adaLN-Zero parameters of a transformer block and the rows they act on.
MODULATION = dict(mod1=r"$\gamma_1,\beta_1$", gate1=r"$\alpha_1$", mod2=r"$\gamma_2,\beta_2$", gate2=r"$\alpha_2$")


def modulation_chip(ax, x, y, s, w=0.85):
    box(ax, x, y, w, 0.32, s, "cond", fs=10.5, pad=0.04)


def draw_dit_block():
    cfg = config("fmnist_dit_adaln_zero")
    d, heads, p = cfg["hidden_size"], cfg["num_heads"], cfg["patch_size"]
    tokens = (cfg["image_size"] // p) ** 2
    hidden = int(d * cfg["mlp_ratio"])
    W, H = 8.0, 7.75
    fig, ax = canvas(W, H)
    xm, bw, bh = 3.2, 2.6, 0.36  # the main column
    xres = xm - bw / 2 - 0.4  # the residual lines
    xc, xreg = 5.45, 7.0  # the modulation chips, the regression layer
    rows = stacked(1.5, "in ln1 mod1 attn gate1 add1 ln2 mod2 mlp gate2 add2 out",
                   [0, 0.85, 0.5, 0.52, 0.52, 0.44, 0.5, 0.5, 0.52, 0.52, 0.44, 0.56])  # fmt: skip
    box(ax, xm, rows["in"], bw, 0.44, f"tokens $z$: (N, T, D)\nT = {tokens} patches, D = {d}", "image", fs=9.5)
    box(ax, xm, rows["out"], bw, bh, "tokens $z$: (N, T, D)", "image")
    for k in ("ln1", "ln2"):
        box(ax, xm, rows[k], bw, bh, "LayerNorm (no affine)", "norm")
    box(ax, xm, rows["mod1"], bw, bh, r"scale, shift: $\cdot\,(1+\gamma_1) + \beta_1$", "norm")
    box(ax, xm, rows["mod2"], bw, bh, r"scale, shift: $\cdot\,(1+\gamma_2) + \beta_2$", "norm")
    box(ax, xm, rows["attn"], bw, bh, f"multi-head self-attention ({heads} heads)", "attn", fs=9.5)
    box(ax, xm, rows["mlp"], bw, bh, f"MLP  {d} → {hidden} → {d}  (GELU)", "net", fs=9.5)
    box(ax, xm, rows["gate1"], bw, bh, r"gate: $\alpha_1\,\odot$", "norm")
    box(ax, xm, rows["gate2"], bw, bh, r"gate: $\alpha_2\,\odot$", "norm")
    circle_op(ax, xm, rows["add1"])
    circle_op(ax, xm, rows["add2"])
    order = ["in", "ln1", "mod1", "attn", "gate1", "add1", "ln2", "mod2", "mlp", "gate2", "add2", "out"]
    half = {"in": 0.22, "add1": 0.11, "add2": 0.11}
    for a, b in zip(order[:-1], order[1:]):
        arrow(ax, (xm, rows[a] + half.get(a, bh / 2)), (xm, rows[b] - half.get(b, bh / 2)), lw=1.0, ms=8)
    # the two residual connections
    for start, add in (("in", "add1"), ("add1", "add2")):
        yb = rows[start] + half.get(start, bh / 2) + 0.12
        ax.add_patch(Circle((xm, yb), 0.03, fc=INK, ec=INK, zorder=5))
        path_arrow(ax, [(xm, yb), (xres, yb), (xres, rows[add]), (xm - 0.12, rows[add])], lw=1.0, ms=8)
    text(ax, xres - 0.12, (rows["in"] + rows["add1"]) / 2, "residual", fs=9, color=SUBTLE, rotation=90)
    text(ax, xres - 0.12, (rows["add1"] + rows["add2"]) / 2, "residual", fs=9, color=SUBTLE, rotation=90)
    # the conditioning: c -> SiLU -> Linear(D, 6D) -> six vectors
    red = PALETTE["cond"][1]
    yt, yc = rows["in"], rows["ln1"]
    box(ax, 5.35, yt, 1.3, 0.52, "timestep $t$\nsinusoid 256 → MLP", "cond", fs=9)
    box(ax, 7.0, yt, 1.75, 0.52, f"label $y$: table\n{cfg['num_classes'] + 1} × D (row {cfg['num_classes']} = ∅)",
        "cond", fs=9)  # fmt: skip
    box(ax, xreg, yc, 1.45, 0.4, r"$c = t_{emb} + y_{emb}$", "cond", fs=10)
    arrow(ax, (5.35, yt + 0.26), (xreg - 0.5, yc - 0.2), color=red, lw=1.0, ms=8)
    arrow(ax, (xreg, yt + 0.26), (xreg, yc - 0.2), color=red, lw=1.0, ms=8)
    y_lo, y_hi = rows["mod1"] - 0.2, rows["gate2"] + 0.2
    box(ax, xreg, (y_lo + y_hi) / 2, 1.45, y_hi - y_lo,
        "SiLU\n→ Linear\nD → 6D\n\ninitialised\nto zero\n\nsplit into six\n(N, D) vectors", "cond", fs=9.5)  # fmt: skip
    arrow(ax, (xreg, yc + 0.2), (xreg, y_lo), color=red, lw=1.0, ms=8)
    for key, label in MODULATION.items():
        modulation_chip(ax, xc, rows[key], label)
        arrow(ax, (xreg - 0.73, rows[key]), (xc + 0.43, rows[key]), color=red, lw=1.0, ms=8)
        arrow(ax, (xc - 0.43, rows[key]), (xm + bw / 2 + 0.02, rows[key]), color=red, lw=1.0, ms=8)
    # the block in two lines
    text(ax, W / 2, 0.62, r"$z \leftarrow z + \alpha_1 \odot \mathrm{Attn}\left(\mathrm{LN}(z)\,(1+\gamma_1)"
         r" + \beta_1\right),\qquad z \leftarrow z + \alpha_2 \odot \mathrm{MLP}\left(\mathrm{LN}(z)\,"
         r"(1+\gamma_2) + \beta_2\right)$", fs=10.5)  # fmt: skip
    text(ax, W / 2, 0.25, "The Linear layer starts at zero, so every α is 0 and the block is the identity at "
         "initialisation (adaLN-Zero).", fs=9.5, color=SUBTLE)  # fmt: skip
    return fig


# ---------------------------------------------------------------------------------------------------------------
# 4. The MMDiT block of SD3 (§2.6.1)
# ---------------------------------------------------------------------------------------------------------------


def draw_mmdit_block():
    cfg = config("fmnist_t2i")
    d, heads, p = cfg["hidden_size"], cfg["num_heads"], cfg["patch_size"]
    T, L = (cfg["image_size"] // p) ** 2, cfg["max_len"]
    hidden = int(d * cfg["mlp_ratio"])
    W, H = 8.0, 8.15
    fig, ax = canvas(W, H)
    xi, xt, bw, bh = 2.7, 5.3, 1.95, 0.36  # image and text stream centres, box size
    res = {xi: xi - bw / 2 - 0.3, xt: xt + bw / 2 + 0.3}  # residual lines, outside the streams
    mods = {xi: 0.42, xt: W - 0.42}  # the modulation layers at the outer edges
    red = PALETTE["cond"][1]
    rows = stacked(0.6, "c in mod1 qkv joint proj gate1 add1 mod2 mlp gate2 add2 out",
                   [0, 0.72, 0.6, 0.5, 0.8, 0.8, 0.48, 0.42, 0.48, 0.5, 0.5, 0.42, 0.52])  # fmt: skip
    names = {xi: ("image", "x", f"image tokens: (N, T, D), T = {T}"),
             xt: ("text", "c", f"text tokens: (N, L, D), L = {L}")}  # fmt: skip
    for x, (kind, s, label) in names.items():
        box(ax, x, rows["in"], bw + 0.25, bh, label, kind, fs=9)
        box(ax, x, rows["out"], bw, bh, "image tokens" if kind == "image" else "text tokens", kind, fs=9.5)
        box(ax, x, rows["mod1"], bw, bh, r"LN, $\cdot(1+\gamma_1)+\beta_1$", "norm")
        box(ax, x, rows["mod2"], bw, bh, r"LN, $\cdot(1+\gamma_2)+\beta_2$", "norm")
        box(ax, x, rows["qkv"], bw, bh, f"Linear → $Q_{s}, K_{s}, V_{s}$", "attn")
        box(ax, x, rows["proj"], bw, bh, "Linear (output)", "attn")
        box(ax, x, rows["mlp"], bw, bh, f"MLP {d} → {hidden} → {d}", "net", fs=9.5)
        box(ax, x, rows["gate1"], bw, bh, r"gate: $\alpha_1\,\odot$", "norm")
        box(ax, x, rows["gate2"], bw, bh, r"gate: $\alpha_2\,\odot$", "norm")
        circle_op(ax, x, rows["add1"])
        circle_op(ax, x, rows["add2"])
        half = {"in": bh / 2, "add1": 0.11, "add2": 0.11}
        flow = "in mod1 qkv | proj gate1 add1 mod2 mlp gate2 add2 out".split()
        for a, b in zip(flow[:-1], flow[1:]):
            if "|" in (a, b):  # the joint attention, drawn below
                continue
            arrow(ax, (x, rows[a] + half.get(a, bh / 2)), (x, rows[b] - half.get(b, bh / 2)), lw=1.0, ms=8)
        arrow(ax, (x, rows["qkv"] + bh / 2), (x, rows["joint"] - 0.3), lw=1.0, ms=8)
        arrow(ax, (x, rows["joint"] + 0.3), (x, rows["proj"] - bh / 2), lw=1.0, ms=8)
        xr = res[x]
        side = 1 if x == xt else -1
        for start, add in (("in", "add1"), ("add1", "add2")):
            yb = rows[start] + half.get(start, bh / 2) + 0.1
            ax.add_patch(Circle((x, yb), 0.03, fc=INK, ec=INK, zorder=5))
            path_arrow(ax, [(x, yb), (xr, yb), (xr, rows[add]), (x - side * 0.12, rows[add])], lw=1.0, ms=8)
        # this stream's own modulation: SiLU -> Linear(D, 6D), zero-initialised
        xmod = mods[x]
        y_lo, y_hi = rows["mod1"] - 0.2, rows["gate2"] + 0.2
        box(ax, xmod, (y_lo + y_hi) / 2, 0.62, y_hi - y_lo, "", "cond")
        text(ax, xmod, (y_lo + y_hi) / 2, "own adaLN-Zero:  SiLU → Linear D → 6D", fs=9.5, rotation=90)
        for key, lab in MODULATION.items():
            a = xmod - side * 0.31
            b = x + side * (bw / 2 + 0.02)
            arrow(ax, (a, rows[key]), (b, rows[key]), color=red, lw=1.0, ms=8)
            text(ax, (a + xr) / 2 - side * 0.02, rows[key] + 0.13, lab, fs=8.5, color=red)
        path_arrow(ax, [(W / 2 + side * 1.45, rows["c"]), (xmod, rows["c"]), (xmod, y_lo)], color=red, lw=1.0, ms=8)
    box(ax, W / 2, rows["c"], 2.9, 0.42, r"$c = t_{emb} + \mathrm{MLP}(\mathrm{pooled\ text})$:  (N, D)", "cond",
        fs=9.5)  # fmt: skip
    # the joint attention: both streams' Q, K, V concatenated along the sequence, one softmax, split back
    box(ax, W / 2, rows["joint"], xt - xi + bw + 0.1, 0.76,
        f"joint attention over the T + L = {T + L} tokens ({heads} heads)\n"
        r"$Q = [Q_x; Q_c]$,  $K = [K_x; K_c]$,  $V = [V_x; V_c]$" "\n"
        r"$\mathrm{softmax}(QK^\top/\sqrt{d_h})\,V$, split back into the two streams", "attn", fs=9.5)  # fmt: skip
    text(ax, W / 2, H - 0.2, "Every weight belongs to one stream; only the attention runs over both.", fs=9.5)
    text(ax, W / 2, H - 0.44, "In the last block the text stream stops after the attention (context_pre_only).",
         fs=9, color=SUBTLE)  # fmt: skip
    return fig


# ---------------------------------------------------------------------------------------------------------------
# 5. The SD3 pipeline and what diffu's tiny text-to-image model keeps of it (§2.6.1)
# ---------------------------------------------------------------------------------------------------------------


def stage(ax, x, y, w, h, main, ours, kind, fs=9.2, dashed=False):
    """A pipeline stage of outer size ``w × h``: SD3's version on top, diffu's (``fmnist_t2i``) below it in grey."""
    box(ax, x, y, w, h, "", kind, dashed=dashed)
    text(ax, x, y + h / 2 - 0.08, main, fs=fs, va="top")
    text(ax, x, y - h / 2 + 0.08, "diffu: " + ours, fs=8.2, color=SUBTLE, va="bottom")


def draw_sd3_pipeline():
    cfg = config("fmnist_t2i")
    d, p, size, depth = cfg["hidden_size"], cfg["patch_size"], cfg["image_size"], cfg["depth"]
    T, L = (size // p) ** 2, cfg["max_len"]
    W, H = 8.0, 5.25
    fig, ax = canvas(W, H)
    red, teal, blue = PALETTE["cond"][1], PALETTE["text"][1], PALETTE["image"][1]
    xa, xb, xc = 0.72, 2.47, 4.33  # input column, encoder column, projection column (centres)
    wa, wb, wc = 1.28, 2.0, 1.52
    yT, yP, yC, yI = 4.5, 3.58, 2.72, 1.62  # text row, pooled row, conditioning row, image row
    # the text path
    stage(ax, xa, yT, wa, 0.78, "caption", "'a dark bag'", "text")
    stage(ax, xb, yT, wb, 0.78, "CLIP-L/14, CLIP-G/14,\nT5-XXL (frozen)",
          "word tokens + 1-layer\nencoder, trained jointly", "text")  # fmt: skip
    stage(ax, xc, yT, wc, 0.78, "77 + 77 tokens\n→ Linear", f"{L} tokens → Linear", "text")
    arrow(ax, (xa + wa / 2, yT), (xb - wb / 2, yT), color=teal)
    arrow(ax, (xb + wb / 2, yT), (xc - wc / 2, yT), color=teal)
    # the conditioning vector c: timestep embedding + MLP(pooled text)
    stage(ax, xb, yP, wb, 0.56, "pooled (2048) → MLP", "mean of tokens → MLP", "cond")
    arrow(ax, (xb, yT - 0.39), (xb, yP + 0.28), color=teal)
    text(ax, xb + 0.08, (yT - 0.39 + yP + 0.28) / 2, "pooled", fs=8.5, color=teal, ha="left")
    stage(ax, xa, yC, wa, 0.56, "timestep $t$", "same", "cond")
    stage(ax, xb, yC, wb, 0.56, "sinusoid → MLP", "same", "cond")
    arrow(ax, (xa + wa / 2, yC), (xb - wb / 2, yC), color=red)
    xo = xc - 0.3  # the sum
    circle_op(ax, xo, yC, kind="cond")
    arrow(ax, (xb + wb / 2, yC), (xo - 0.11, yC), color=red)
    path_arrow(ax, [(xb + wb / 2, yP), (xo, yP), (xo, yC + 0.11)], color=red)
    # the image path
    stage(ax, xa, yI, wa, 0.98, "image → VAE\nencoder: 16 ch,\n÷8 (training)", "none", "image", fs=8.8,
          dashed=True)  # fmt: skip
    stage(ax, xb, yI, wb, 0.98, "noised latent $x_t$ =\n" r"$(1-t)\,x_0 + t\,\varepsilon$",
          r"pixels, $\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$", "image")  # fmt: skip
    stage(ax, xc, yI, wc, 0.98, "patchify $p = 2$,\nLinear, + 2D\npositions", f"$p = {p}$: {T} tokens", "image",
          fs=8.8)  # fmt: skip
    arrow(ax, (xa + wa / 2, yI), (xb - wb / 2, yI), color=blue)
    arrow(ax, (xb + wb / 2, yI), (xc - wc / 2, yI), color=blue)
    # the MMDiT stack
    xs, ws, y_lo, y_hi = 5.78, 0.98, yI - 0.6, yT + 0.45
    for k in (2, 1, 0):  # a stack of cards
        box(ax, xs + 0.05 * k, (y_lo + y_hi) / 2 + 0.05 * k, ws, y_hi - y_lo, "", "attn", lw=0.9)
    text(ax, xs, (y_lo + y_hi) / 2 + 0.35, "N ×\nMMDiT\nblock", fs=10)
    text(ax, xs, (y_lo + y_hi) / 2 - 0.4, f"diffu:\n{depth} blocks,\nD = {d}", fs=8.2, color=SUBTLE)
    arrow(ax, (xc + wc / 2, yT), (xs - ws / 2, yT), color=teal)
    arrow(ax, (xc + wc / 2, yI), (xs - ws / 2, yI), color=blue)
    arrow(ax, (xo + 0.11, yC), (xs - ws / 2, yC), color=red)
    text(ax, (xo + xs - ws / 2) / 2, yC + 0.2, "$c$: adaLN", fs=8.8, color=red)
    # the output side
    xr, wr = 7.3, 1.24
    x_out = xs + ws / 2 + 0.12
    stage(ax, xr, 4.3, wr, 0.98, "adaLN,\nLinear,\nunpatchify", "same", "image", fs=8.8)
    arrow(ax, (x_out, 4.3), (xr - wr / 2, 4.3))
    stage(ax, xr, 3.17, wr, 0.62, r"velocity $\hat v$", r"$\hat\varepsilon$", "net")
    arrow(ax, (xr, 4.3 - 0.49), (xr, 3.17 + 0.31))
    stage(ax, xr, 2.13, wr, 0.8, "ODE steps,\n$t$: 1 → 0, CFG", "DDIM, CFG", "net", fs=8.8)
    arrow(ax, (xr, 3.17 - 0.31), (xr, 2.13 + 0.4))
    stage(ax, xr, 1.06, wr, 0.8, "VAE decoder\n→ image", "none", "image", fs=8.8, dashed=True)
    arrow(ax, (xr, 2.13 - 0.4), (xr, 1.06 + 0.4))
    # legend
    box(ax, 0.42, 0.5, 0.44, 0.24, "", "plain")
    text(ax, 0.75, 0.5, "in SD3 and in diffu's fmnist_t2i (grey: what diffu does instead)", fs=8.8, ha="left")
    box(ax, 0.42, 0.18, 0.44, 0.24, "", "plain", dashed=True)
    text(ax, 0.75, 0.18, f"SD3 only: diffu denoises {size}×{size} pixels, without an autoencoder", fs=8.8, ha="left")
    return fig


# ---------------------------------------------------------------------------------------------------------------
# 6. The geometry of DPS (§4.2.2)
# ---------------------------------------------------------------------------------------------------------------


def draw_dps_geometry():
    W, H = 8.0, 5.2
    fig, ax = canvas(W, H)
    cx, cy, R = 4.1, -3.3, 6.2  # the data manifold: an arc of this circle
    r_prev, r_t = 0.45, 0.92  # distances of the noisy shells M_{t-1}, M_t from the manifold

    def at(angle, radius):
        a = np.radians(angle)
        return np.array([cx + radius * np.cos(a), cy + radius * np.sin(a)])

    th = np.linspace(30, 150, 400)

    def arc(r):
        return cx + r * np.cos(np.radians(th)), cy + r * np.sin(np.radians(th))

    def band(r, color):
        (xo, yo), (xi, yi) = arc(R + r), arc(R - r)
        ax.fill(np.r_[xo, xi[::-1]], np.r_[yo, yi[::-1]], color=color, zorder=0, lw=0)

    grey = PALETTE["noise"][1]
    band(r_t, "#f4f4f4")
    band(r_prev, "#e8e8e8")
    for r in (r_t, -r_t, r_prev, -r_prev):
        ax.plot(*arc(R + r), color=grey, lw=0.8, ls=(0, (4, 3)), zorder=1)
    blue = PALETTE["image"][1]
    ax.plot(*arc(R), color=blue, lw=2.6, zorder=2)
    p = at(55, R - 0.15)
    text(ax, p[0] - 0.05, p[1], r"data manifold $\mathcal{M}$", fs=10.5, color=blue, ha="right", va="top")
    for r, lab in ((r_t, r"$\mathcal{M}_t$"), (r_prev, r"$\mathcal{M}_{t-1}$")):
        q = at(148, R + r)
        text(ax, q[0] + 0.02, q[1] + 0.2, lab, fs=10.5, color=grey, ha="left")
    # the measurement-consistent set {x : A(x) = y}, through the true x_0
    gold = PALETTE["meas"][1]
    x_star = at(70, R)
    u = np.array([np.cos(np.radians(58)), np.sin(np.radians(58))])
    line(ax, [tuple(x_star - 2.7 * u), tuple(x_star + 1.55 * u)], color=gold, lw=2.0)
    e = x_star + 1.55 * u
    text(ax, e[0] - 0.1, e[1] - 0.02, r"$\{x : \mathcal{A}(x) = y\}$", fs=10.5, color=gold, ha="right")
    ax.plot(*x_star, marker="*", ms=14, color=gold, mec=INK, mew=0.6, zorder=6)
    text(ax, x_star[0] + 0.22, x_star[1] + 0.13, "true $x_0$", fs=10, ha="left")
    # x_t, Tweedie's estimate, the unconditional step and the DPS correction
    x_t = at(113, R + r_t)
    x0_hat = at(110, R - 1.25)
    x_prev_u = at(109.5, R + r_prev)
    x_prev = at(96, R + r_prev)
    delta = x_prev - x_prev_u
    green = PALETTE["net"][1]
    arrow(ax, tuple(x_t), tuple(x0_hat), color=grey, lw=1.1, ls=(0, (2, 2)), ms=9)
    arrow(ax, tuple(x_t), tuple(x_prev_u), color=green, lw=1.7, ms=11)
    arrow(ax, tuple(x_prev_u), tuple(x_prev), color=gold, lw=1.9, ms=11)
    arrow(ax, tuple(x_t), tuple(x_t + delta), color=gold, lw=1.1, ls=(0, (4, 2.5)), ms=9)
    line(ax, [tuple(x_t + delta), tuple(x_prev)], color="#aaaaaa", lw=0.8, ls=(0, (2, 2)))
    for pt, fc in ((x_t, INK), (x_prev_u, green), (x_prev, gold), (x0_hat, "white")):
        ax.plot(*pt, marker="o", ms=7, color=fc, mec=INK, mew=0.9, zorder=6)
    text(ax, x_t[0] - 0.13, x_t[1] + 0.04, "$x_t$", fs=12.5, ha="right")
    text(ax, x_prev_u[0] - 0.14, x_prev_u[1] - 0.3, r"$x'_{t-1}$", fs=12, ha="right", color=green)
    text(ax, x_prev[0] + 0.12, x_prev[1] - 0.2, "$x_{t-1}$", fs=12.5, ha="left", color=gold)
    mid = x_t + 0.55 * delta
    text(ax, mid[0] - 0.1, mid[1] + 0.36, "gradient at $x_t$ …", fs=9, color=gold)
    text(ax, x0_hat[0] + 0.16, x0_hat[1] + 0.03, r"$\hat x_0(x_t) = \mathbb{E}[x_0\mid x_t]$", fs=10.5, ha="left")
    text(ax, x0_hat[0] + 0.16, x0_hat[1] - 0.25, r"Tweedie's estimate: off $\mathcal{M}$, a blurry mean", fs=9.5,
         ha="left", color=SUBTLE)  # fmt: skip
    # what the arrows are
    xl, yl = 0.2, H - 0.25
    text(ax, xl, yl, r"$\bullet$ unconditional ancestral step:  $x'_{t-1} \sim p_\theta(x_{t-1}\mid x_t)$, onto the"
         " next shell", fs=9.5, ha="left", color=green)  # fmt: skip
    text(ax, xl, yl - 0.29, r"$\bullet$ … applied to $x'_{t-1}$:  $x_{t-1} = x'_{t-1} - \zeta\,\nabla_{x_t}\,\|y -"
         r" \mathcal{A}(\hat x_0(x_t))\|$  (through the network)", fs=9.5, ha="left", color=gold)  # fmt: skip
    text(ax, xl, yl - 0.58, r"$\bullet$ noisy states concentrate on shells around $\mathcal{M}$; the steps stay near"
         r" the shells and move towards $\mathcal{A}(x) = y$", fs=9.5, ha="left", color=SUBTLE)  # fmt: skip
    return fig


# ---------------------------------------------------------------------------------------------------------------
# 7. Classifier-free guidance as extrapolation (§2.3)
# ---------------------------------------------------------------------------------------------------------------


def draw_cfg_extrapolation():
    W, H = 8.0, 3.6
    fig, ax = canvas(W, H)
    x0, unit, ya = 1.55, 1.6, 1.42  # position of s = 0, length of one unit of s, height of the axis
    sx = lambda s: x0 + unit * s  # noqa: E731
    red, grey = PALETTE["cond"][1], PALETTE["noise"][1]
    # the two regimes
    ax.add_patch(Rectangle((sx(0), ya - 0.95), unit, 0.32, fc="#f1f1f1", ec="none", zorder=0))
    ax.add_patch(Rectangle((sx(1), ya - 0.95), sx(3.75) - sx(1), 0.32, fc=PALETTE["cond"][0], ec="none", zorder=0))
    text(ax, sx(0.5), ya - 0.79, "interpolation", fs=9, color=SUBTLE)
    text(ax, sx(2.35), ya - 0.79, "extrapolation: guidance sharpens", fs=9, color=red)
    # the line through the two predictions
    line(ax, [(sx(-0.25), ya), (sx(3.1), ya)], color="#999999", lw=1.2)
    arrow(ax, (sx(3.1), ya), (sx(3.75), ya), color="#999999", lw=1.2, ls=(0, (4, 3)))
    for s in range(4):
        line(ax, [(sx(s), ya - 0.07), (sx(s), ya + 0.07)], color="#999999", lw=1.2)
        text(ax, sx(s), ya - 0.24, f"$s = {s}$", fs=10)
        text(ax, sx(s), ya - 0.47, f"$w = {s - 1}$" if s != 1 else "$w = 0$", fs=9, color=SUBTLE)
    text(ax, sx(-0.3), ya - 0.24, "book:", fs=9, ha="right")
    text(ax, sx(-0.3), ya - 0.47, "Ho & Salimans:", fs=9, ha="right", color=SUBTLE)
    # the difference vector and its extension
    arrow(ax, (sx(0), ya + 0.3), (sx(1), ya + 0.3), color=red, lw=1.5)
    text(ax, sx(0.5), ya + 0.5, r"$\Delta = \varepsilon_\theta(x_t, c) - \varepsilon_\theta(x_t, \varnothing)$", fs=10,
         color=red)  # fmt: skip
    arrow(ax, (sx(1), ya + 0.3), (sx(3), ya + 0.3), color=red, lw=1.5, ls=(0, (5, 3)))
    text(ax, sx(2), ya + 0.5, r"$+\,w\,\Delta = (s-1)\,\Delta$", fs=10, color=red)
    for s, fc, ec, lab in ((0, "white", grey, r"$\varepsilon_\theta(x_t, \varnothing)$"),
                           (1, PALETTE["cond"][0], red, r"$\varepsilon_\theta(x_t, c)$"),
                           (3, red, red, r"$\tilde\varepsilon$ at $s = 3$")):  # fmt: skip
        ax.plot(sx(s), ya, marker="o", ms=10, mfc=fc, mec=ec, mew=1.6, zorder=6)
        text(ax, sx(s), ya + 0.85, lab, fs=10.5)
    text(ax, sx(0), ya + 1.1, "unconditional", fs=9, color=SUBTLE)
    text(ax, sx(1), ya + 1.1, "conditional", fs=9, color=SUBTLE)
    text(ax, sx(3), ya + 1.1, "guided", fs=9, color=SUBTLE)
    text(ax, W / 2, H - 0.22, r"$\tilde\varepsilon = \varepsilon_\theta(x_t,\varnothing) + s\,\left["
         r"\varepsilon_\theta(x_t,c) - \varepsilon_\theta(x_t,\varnothing)\right] = (1+w)\,\varepsilon_\theta(x_t,c)"
         r" - w\,\varepsilon_\theta(x_t,\varnothing),\qquad w = s - 1$", fs=10.5)  # fmt: skip
    text(ax, W / 2, H - 0.55, r"for exact predictions, $\Delta = -\sqrt{1-\bar\alpha_t}\,\nabla_{x_t}"
         r"\log p_t(c\mid x_t)$: the gradient of an implicit classifier", fs=9.5, color=SUBTLE)  # fmt: skip
    text(ax, W / 2, 0.22, r"$c$: the class label $y$ or the caption; $\varnothing$: the null label (class 10) or the"
         " empty caption.", fs=9, color=SUBTLE)  # fmt: skip
    return fig


# ---------------------------------------------------------------------------------------------------------------
# 8. Plug-and-play restoration: half-quadratic splitting (§4.1)
# ---------------------------------------------------------------------------------------------------------------


def draw_pnp_loop():
    W, H = 8.0, 5.0
    fig, ax = canvas(W, H)
    gold, green = PALETTE["meas"][1], PALETTE["net"][1]
    yb, bh = H - 1.35, 1.15
    xd, bw, xp, pw = 2.05, 3.2, 6.15, 2.9
    box(ax, xd, yb, bw, bh, "", "meas")
    text(ax, xd, yb + 0.36, "data step (least squares)", fs=10, weight="bold", color=gold)
    text(ax, xd, yb + 0.04, r"$x_k = \arg\min_x\ \|y - Ax\|^2 + \rho_k\,\|x - z_{k-1}\|^2$", fs=10)
    text(ax, xd, yb - 0.3, r"$(A^\top A + \rho_k I)\,x_k = A^\top y + \rho_k\,z_{k-1}$", fs=9.5, color=SUBTLE)
    box(ax, xp, yb, pw, bh, "", "net")
    text(ax, xp, yb + 0.36, "prior step (denoiser)", fs=10, weight="bold", color=green)
    text(ax, xp, yb + 0.04, r"$z_k = D(x_k,\ \sigma_k)$", fs=10.5)
    text(ax, xp, yb - 0.3, r"Gaussian denoising at level $\sigma_k$", fs=9.5, color=SUBTLE)
    x1, x2 = xd + bw / 2 + 0.02, xp - pw / 2 - 0.02
    arrow(ax, (x1, yb + 0.3), (x2, yb + 0.3), color=INK, lw=1.3)
    text(ax, (x1 + x2) / 2, yb + 0.47, "$x_k$", fs=11)
    arrow(ax, (x2, yb - 0.3), (x1, yb - 0.3), color=INK, lw=1.3)
    text(ax, (x1 + x2) / 2, yb - 0.5, "$z_k$", fs=11)
    text(ax, (x1 + x2) / 2, yb - 0.02, "$k \\to k+1$", fs=8.5, color=SUBTLE)
    arrow(ax, (xd, H - 0.22), (xd, yb + bh / 2 + 0.02), color=gold, lw=1.3)
    text(ax, xd + 0.1, H - 0.24, r"$y,\ A$;  start: $z_0$ = $y$ (or its upsampling)", fs=9.5, ha="left")
    arrow(ax, (xp, yb + bh / 2 + 0.02), (xp, H - 0.22), color=green, lw=1.3)
    text(ax, xp + 0.1, H - 0.24, "output $z_K$", fs=9.5, ha="left")
    # the two methods
    K, lam, sig_n, sig_1 = 8, 0.23, 0.02, 2 * 49 / 255
    text(ax, 0.15, 2.62, rf"DPIR: denoiser DRUNet, $K = {K}$, $\sigma_k$ log-spaced from 98/255 down to $\sigma_n$,"
         rf" $\rho_k = \lambda\,\sigma_n^2/\sigma_k^2$ with $\lambda = {lam}$.", fs=9.5, ha="left")  # fmt: skip
    text(ax, 0.15, 2.3, r"DiffPIR: one data step per reverse step of a diffusion model; $D$ is Tweedie's "
         r"$\hat x_0(x_t)$ at level $\bar\sigma_t = \sqrt{1-\bar\alpha_t}/\sqrt{\bar\alpha_t}$,", fs=9.5,
         ha="left")  # fmt: skip
    text(ax, 0.15, 2.02, r"and the corrected $\hat x_0$ is re-noised to the next timestep (a share $\zeta$ of fresh "
         "noise).", fs=9.5, ha="left")  # fmt: skip
    # DPIR's schedule (diffu.inverse.pnp.dpir_schedule), drawn for the noise level of §4.1's deblurring
    sig = np.logspace(np.log10(sig_1), np.log10(sig_n), K)
    rho = lam * sig_n**2 / sig**2
    ins = fig.add_axes((0.62 / W, 0.42 / H, 3.3 / W, 1.2 / H))
    k = np.arange(1, K + 1)
    ins.semilogy(k, sig, "o-", color=green, ms=4, lw=1.4, label=r"$\sigma_k$ (denoiser level)")
    ins.semilogy(k, rho, "s-", color=gold, ms=4, lw=1.4, label=r"$\rho_k$ (data weight)")
    ins.set_xticks(k)
    ins.tick_params(labelsize=8.5)
    ins.set_xlabel("iteration $k$", fontsize=9, labelpad=1)
    for side in ("top", "right"):
        ins.spines[side].set_visible(False)
    ins.legend(fontsize=9, frameon=False, loc="upper left", bbox_to_anchor=(1.04, 1.02))
    text(ax, 4.15, 0.95, "early: trust the prior\n(large $\\sigma_k$, small $\\rho_k$)", fs=9, ha="left",
         color=SUBTLE)  # fmt: skip
    text(ax, 6.15, 0.95, "late: trust the data\n($\\sigma_k \\to \\sigma_n$)", fs=9, ha="left", color=SUBTLE)
    text(ax, 4.15, 0.3, rf"schedule drawn for $\sigma_n = {sig_n}$ ([-1, 1] scale), as in §4.1", fs=8.5, ha="left",
         color=SUBTLE)  # fmt: skip
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Registry and command line
# ---------------------------------------------------------------------------------------------------------------

DIAGRAMS = {
    "forward_reverse_chain.svg": draw_forward_reverse_chain,
    "unet.svg": draw_unet,
    "dit_block.svg": draw_dit_block,
    "mmdit_block.svg": draw_mmdit_block,
    "sd3_pipeline.svg": draw_sd3_pipeline,
    "dps_geometry.svg": draw_dps_geometry,
    "cfg_extrapolation.svg": draw_cfg_extrapolation,
    "pnp_loop.svg": draw_pnp_loop,
}


def write(names, out: Path, png: Path | None = None) -> list[Path]:
    """Draw the diagrams ``names`` and write them into ``out`` (and PNG previews into ``png``)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with plt.rc_context(RC):
        for name in names:
            fig = DIAGRAMS[name]()
            path = out / name
            fig.savefig(path, format="svg", metadata={"Date": None, "Creator": "book/figures/diagrams.py"})
            if png is not None:
                png.mkdir(parents=True, exist_ok=True)
                fig.savefig(png / name.replace(".svg", ".png"), dpi=110)
            plt.close(fig)
            written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="diagrams to write (default: all): " + ", ".join(DIAGRAMS))
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: book/figures)")
    parser.add_argument("--png", type=Path, default=None, help="also write PNG previews into this folder")
    args = parser.parse_args(argv)
    names = [n if n.endswith(".svg") else n + ".svg" for n in args.names] or list(DIAGRAMS)
    unknown = [n for n in names if n not in DIAGRAMS]
    if unknown:
        parser.error(f"unknown diagrams {unknown}; choose from {list(DIAGRAMS)}")
    for path in write(names, args.out, args.png):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
