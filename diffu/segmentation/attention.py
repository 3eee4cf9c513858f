"""Foreground/background masks from a text-to-image model's attention to the object's word (chapter §6).

Dombrowski, Reynaud, Baugh & Kainz 2023, "Foreground-background separation through concept distillation from
generative image foundation models" (ICCV): a text-to-image diffusion model that has learned to draw "a photo of a
bird" must, when it denoises a real photo of a bird, let the image positions that show the bird read the word
"bird". So noise a real image to a timestep ``t``, run the denoiser with the caption, and read the attention that
each image position pays to the object's word: its map, upsampled to the image, is a foreground mask learned
without any segmentation label (the paper's *preliminary mask*, which it then refines).

Here the model is the shipped text-to-image MMDiT (``fmnist_t2i``, :class:`~diffu.nn.MMDiT`), whose blocks run one
*joint* attention over ``[image patches; text tokens]`` (SD3; :func:`diffu.nn.mmdit.joint_attention`). For block
``l``, head ``h`` and image query ``i`` the attention row is

    ``a_{l,h}(i, ·) = softmax_j(q_i · k_j / √d_h)`` over all ``T_x + L`` keys ``j`` (patches and tokens),

and the map of the word at token positions ``W`` (one position, or two for "ankle boot") is

* ``keys="joint"`` (default): ``A(i) = mean_{l ∈ layers, h ∈ heads} Σ_{w ∈ W} a_{l,h}(i, T_x + w)``, the share of
  the query's whole attention that goes to the word;
* ``keys="text"``: ``Σ_{w ∈ W} a(i, T_x + w) / Σ_{j < L} a(i, T_x + j)`` before the mean, the softmax restricted to
  the text keys, which is exactly the cross-attention probability that Stable Diffusion's maps (and the paper's)
  are made of.

:func:`attention_masks` reshapes ``A`` to the patch grid, upsamples it to the image and rescales each map to [0, 1];
:func:`threshold_maps` turns maps into masks (Otsu's threshold per map, or a fixed one);
:func:`attention_iou_table` measures the IoU against true masks by timestep and layer, with a global-threshold
baseline on the images themselves (data: :func:`diffu.data.textured.textured_fashion`).

**What to expect from the tiny model** (chapter §6 measures it on textured test images): the word's map localises
the item only through the *joint* share, at high noise (t ≈ 600) and in the last block, because in this small model
every text token draws almost the same spatial pattern (image positions on the item attend more to the text as a
whole: the map of "photo" or "a" does as well as the noun's); renormalised over the text keys (``keys="text"``) the
word-specific part is close to chance. At low noise the textured background, which the model never saw in
training, draws the attention instead.

**Bad input** raises ``ValueError``/``TypeError`` naming the argument (:mod:`diffu.checks`); images are checked
finite and in [-1, 1].
"""

from __future__ import annotations

import time
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..captions import CLASS_NOUNS
from ..checks import (
    check_bool,
    check_choice,
    check_finite,
    check_image,
    check_int,
    check_range,
    check_rank,
    check_real,
    check_tensor,
)
from ..metrics import iou
from ..nn.mmdit import MMDiT
from ..nn.text import WordTokenizer
from ..sampling import check_schedule, noise_like
from ..schedules import Schedule

__all__ = [
    "KEYS",
    "UPSAMPLING",
    "AttentionIoU",
    "attention_iou_table",
    "attention_masks",
    "threshold_maps",
    "word_positions",
]

#: How the word's share of attention is read, ``"joint"`` (of all keys, image and text) or ``"text"`` (of the text
#: keys only, the cross-attention probability).
KEYS = ("joint", "text")
#: How the patch-grid map is brought to the image size, ``"bilinear"`` or ``"nearest"`` (the official code's repeat).
UPSAMPLING = ("bilinear", "nearest")
_CHUNK = 256  # images per forward pass (the attention of a 28 × 28 MMDiT is ~60 kB per image and block)


def word_positions(tokenizer: WordTokenizer, captions, token: str | None = None) -> list[list[int]]:
    """The token positions of the object's word in each caption (0 is ``<start>``, so word ``k`` is at ``k + 1``).

    Args:
        tokenizer: the model's :class:`~diffu.nn.text.WordTokenizer` (``model.tokenizer``).
        captions: a caption (string) or a non-empty list or tuple of them.
        token: None: the class noun of :data:`diffu.captions.CLASS_NOUNS` that each caption names (the longest
            match, e.g. both words of "ankle boot", at its first occurrence); or a word or phrase (string) that
            every caption must contain (its first occurrence).

    Returns:
        One list of positions per caption (two for a two-word noun).

    Raises:
        TypeError: ``tokenizer`` not a WordTokenizer; ``captions`` not a string or a list/tuple of strings;
            ``token`` neither None nor a string.
        ValueError: no captions; a caption without a class noun (``token=None``) or without ``token``; ``token``
            with no word.

    Used in chapter §6 (attention segmentation).
    """
    if not isinstance(tokenizer, WordTokenizer):
        raise TypeError(f"tokenizer must be a diffu.nn.text.WordTokenizer (model.tokenizer), got "
                        f"{type(tokenizer).__name__}")  # fmt: skip
    captions = _caption_list(captions)
    if token is None:
        phrases = sorted({tuple(tokenizer.split(noun)) for nouns in CLASS_NOUNS for noun in nouns}, key=len)[::-1]
    elif isinstance(token, str):
        phrases = [tuple(tokenizer.split(token))]
        if not phrases[0]:
            raise ValueError(f"token must hold a word, got {token!r}")
    else:
        raise TypeError(f"token must be None (the class noun) or a word, got {type(token).__name__}")
    out = []
    for i, cap in enumerate(captions):
        words = tokenizer.split(cap)
        spans = [(k, len(p)) for p in phrases for k in range(len(words) - len(p) + 1)]
        hits = [(k, m) for k, m in spans if tuple(words[k : k + m]) in phrases]
        if not hits:
            what = "a class noun of diffu.captions.CLASS_NOUNS" if token is None else f"token {token!r}"
            raise ValueError(f"captions[{i}] {cap!r} has no {what}")
        k, m = min(hits, key=lambda h: (-h[1], h[0]))  # the longest phrase, then the first occurrence
        out.append([k + 1 + j for j in range(m)])
    return out


def _caption_list(captions, n: int | None = None) -> list[str]:
    if isinstance(captions, str):
        return [captions] * (1 if n is None else n)
    if not isinstance(captions, (list, tuple)) or not all(isinstance(c, str) for c in captions):
        raise TypeError(f"captions must be a caption or a list of captions (strings), got {type(captions).__name__}")
    if not captions or (n is not None and len(captions) != n):
        raise ValueError(f"captions must hold one caption per image ({n}), got {len(captions)}")
    return list(captions)


def _index_list(name: str, value, size: int) -> list[int]:
    """None → all of ``range(size)``; an integer or a non-empty list/tuple of distinct integers in [0, size)."""
    if value is None:
        return list(range(size))
    vals = [value] if not isinstance(value, (list, tuple, range)) else list(value)
    if not vals:
        raise ValueError(f"{name} must name at least one index in [0, {size - 1}], got none")
    for v in vals:
        check_int(name, v, 0, size - 1)
    if len(set(vals)) != len(vals):
        raise ValueError(f"{name} must not repeat an index, got {value!r}")
    return [int(v) for v in vals]


def _check_model_inputs(model, images, schedule, t, t_name: str = "t") -> list[int]:
    if not isinstance(model, MMDiT):
        raise TypeError(f"model must be a diffu.nn.MMDiT (joint attention over image and text), got "
                        f"{type(model).__name__}")  # fmt: skip
    check_schedule(schedule)
    check_image(images, "images")
    cfg = model.config
    want = (cfg.in_channels, cfg.image_size, cfg.image_size)
    if tuple(images.shape[1:]) != want or images.shape[0] == 0:
        raise ValueError(f"images must be (N, {want[0]}, {want[1]}, {want[2]}) for this model, got "
                         f"{tuple(images.shape)}")  # fmt: skip
    param = next(model.parameters())
    if images.device != param.device or images.dtype != param.dtype:
        raise ValueError(f"images must have the model's device and dtype ({param.device}, {param.dtype}), got "
                         f"{images.device}, {images.dtype}: move one of them with .to()")  # fmt: skip
    check_finite(images, "images")
    check_range(images, -1.0, 1.0, "images", "diffu's image range")
    ts = schedule.check_t(t, t_name).reshape(-1)
    if ts.numel() == 0:
        raise ValueError(f"{t_name} must hold at least one timestep, got none")
    return ts.tolist()


@torch.no_grad()
def _word_attention(model, images, ids, positions, schedule, ts, generator, keys, seconds=None) -> torch.Tensor:
    """Raw word attention ``(N, blocks, heads, T_x)``, averaged over the timesteps ``ts`` (fresh noise for each, drawn
    in order for the whole batch); ``seconds`` (a list) receives the forward passes' wall time."""
    n, tx = images.shape[0], (model.config.image_size // model.config.patch_size) ** 2
    pick = torch.zeros(n, ids.shape[1], dtype=images.dtype, device=images.device)  # (N, L): 1 at the word's tokens
    for i, pos in enumerate(positions):
        pick[i, pos] = 1
    total = 0
    for t in ts:
        x_t = schedule.q_sample(images, t, noise_like(images, generator))  # Eq. (4) of Ho et al. 2020
        t0 = time.perf_counter()
        out = []
        for s in range(0, n, _CHUNK):
            x, att = x_t[s : s + _CHUNK], []
            model(x, torch.full((len(x),), float(t), device=x.device, dtype=x.dtype), text=ids[s : s + _CHUNK],
                  attention=att)  # fmt: skip
            a = torch.stack(att, 1)[:, :, :, :tx, tx:]  # (n, blocks, heads, T_x, L): image queries → text keys
            word = (a * pick[s : s + _CHUNK, None, None, None, :]).sum(-1)  # (n, blocks, heads, T_x)
            if keys == "text":
                text = a.sum(-1)  # (n, blocks, heads, T_x): the text's share of each query's attention
                if not bool((text > 0).all()):
                    raise ValueError(
                        f"keys='text' is undefined for these inputs: some image queries' attention to the text "
                        f"underflows to 0 in {images.dtype} (use keys='joint', or the model and images in float64)"
                    )
                word = word / text
            out.append(word)
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
        if seconds is not None:
            seconds.append(time.perf_counter() - t0)
        total = total + torch.cat(out)
    return total / len(ts)


def _to_image(grid_maps: torch.Tensor, size: int, upsample: str, normalize: bool) -> torch.Tensor:
    """``(N, T_x)`` patch values → ``(N, size, size)`` maps, rescaled per map to [0, 1] when ``normalize``."""
    n, g = grid_maps.shape[0], int(round(grid_maps.shape[1] ** 0.5))
    grid = grid_maps.reshape(n, 1, g, g)  # patches in row-major order (diffu.nn.embeddings.patchify)
    kw = {"align_corners": False} if upsample == "bilinear" else {}
    up = F.interpolate(grid, size=(size, size), mode=upsample, **kw)[:, 0]  # (N, H, W)
    if not normalize:
        return up
    lo = up.flatten(1).min(1).values[:, None, None]
    span = up.flatten(1).max(1).values[:, None, None] - lo
    return torch.where(span > 0, (up - lo) / span.clamp_min(torch.finfo(up.dtype).tiny), torch.zeros_like(up))


def attention_masks(
    model,
    images: torch.Tensor,
    captions,
    schedule: Schedule,
    *,
    t,
    layers=None,
    heads=None,
    token: str | None = None,
    keys: str = "joint",
    upsample: str = "bilinear",
    normalize: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Soft foreground maps ``(N, H, W)`` from the attention of the image patches to the object's word
    (Dombrowski et al. 2023; the equations are in the module docstring).

    Steps: (1) noise each image to ``t``: ``x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε`` (Eq. 4 of Ho et al. 2020), ε drawn from
    ``generator``; (2) one forward pass ``model(x_t, t, text=captions, attention=[])`` collects every block's joint
    attention; (3) the image-query → word-key entries, summed over the word's tokens (:func:`word_positions`),
    averaged over ``heads`` and ``layers`` (and over the timesteps when ``t`` lists several, each with fresh
    noise); (4) the patch grid upsampled to the image size; (5) each map rescaled to [0, 1] by its minimum and
    maximum (a constant map becomes 0: no foreground).

    Args:
        model: the text-to-image :class:`~diffu.nn.MMDiT` (``diffu.pretrained.load("fmnist_t2i")``).
        images: ``(N, C, H, W)`` clean images in [-1, 1] of the model's channels and size, finite.
        captions: a caption for every image, or a list of ``N`` captions in the model's vocabulary (e.g.
            :func:`diffu.captions.caption` of the labels: ``"a photo of a bag"``).
        schedule: the :class:`~diffu.schedules.Schedule` the model was trained with (``linear_schedule()``).
        t: an integer timestep in ``[0, T − 1]``, or a list of them (the maps are averaged over them; the official
            code averages over 40 DDIM steps below t ≈ 780).
        layers: the blocks to average (an index or a list of indices in ``[0, depth)``); None: all.
        heads: the attention heads to average (indices in ``[0, num_heads)``); None: all.
        token: the object's word; None: the class noun of each caption (see :func:`word_positions`).
        keys: "joint" (the word's share of all keys, default) or "text" (of the text keys: cross-attention).
        upsample: "bilinear" (default) or "nearest" (each patch a constant block, as the official code).
        normalize: rescale each map to [0, 1] (default); False returns the raw attention probabilities.
        generator: a ``torch.Generator`` on the images' device for the noise, or None.

    Returns:
        ``(N, H, W)`` maps in ``images``' dtype and device; in [0, 1] with ``normalize``.

    Raises:
        TypeError: ``model`` not an MMDiT, a bad ``schedule``, ``captions``, ``token`` or ``generator``,
            ``normalize`` not a bool.
        ValueError: ``images`` not a finite ``(N, C, H, W)`` batch in [-1, 1] of the model's shape, device and
            dtype; captions not one per image, outside the vocabulary or without the word; ``t``, ``layers`` or
            ``heads`` out of range or repeated; an unknown ``keys`` or ``upsample``; a generator on another device;
            ``keys="text"`` where an image query's attention to the whole text underflows to 0 (0 / 0).

    Used in chapter §6 (interpretable segmentation).

    Notes:
        Official code ``MischaD/fobadiffusion``: ``stable-diffusion/ldm/modules/attention.py`` stores each
        cross-attention's softmax (over the 77 CLIP tokens) averaged over the heads; ``scripts/
        compute_attention_masks_raw.py`` re-noises the real latent at each of 40 DDIM timesteps from t ≈ 780 down
        (``sample_with_attention``), and ``src/preliminary_masks.py`` (``relevant_token_step_mean``) keeps the
        object's token, nearest-upsamples every layer to 64 × 64 and averages over steps and layers. Deviations:
        SD3-style joint attention in place of cross-attention (``keys="text"`` recovers the cross-attention
        probability); one or a few timesteps rather than 40; bilinear upsampling by default; the image space of a
        28 × 28 pixel model rather than SD's latent. The paper's later stages (thresholding by a two-component
        Gaussian mixture, inpainting-based refinement, training a segmenter on the masks) are not reproduced;
        :func:`threshold_maps` thresholds by Otsu instead.
    """
    ts = _check_model_inputs(model, images, schedule, t)
    check_choice("keys", keys, KEYS)
    check_choice("upsample", upsample, UPSAMPLING)
    check_bool("normalize", normalize)
    layers = _index_list("layers", layers, model.config.depth)
    heads = _index_list("heads", heads, model.config.num_heads)
    ids, positions = _tokens(model, captions, images.shape[0], token, images.device)
    raw = _word_attention(model, images, ids, positions, schedule, ts, generator, keys)  # (N, blocks, heads, T_x)
    grid = raw[:, layers][:, :, heads].mean((1, 2))  # (N, T_x)
    return _to_image(grid, images.shape[-1], upsample, normalize)


def _tokens(model, captions, n, token, device):
    caps = _caption_list(captions, n)
    try:
        ids = model.tokenizer(caps, device=device)
    except ValueError as err:
        raise ValueError(f"captions: {err}") from None
    return ids, word_positions(model.tokenizer, caps, token)


def threshold_maps(maps: torch.Tensor, threshold="otsu") -> torch.Tensor:
    """Binary masks ``[m > τ]`` of maps ``(N, H, W)``, with ``τ`` Otsu's threshold of each map or a fixed number.

    Otsu (1979) picks, per map, the split of its sorted values that maximises the between-class variance
    ``σ_b²(τ) = w₀ w₁ (μ₀ − μ₁)²`` (``w`` the two classes' shares of the pixels, ``μ`` their means); here it is
    computed exactly over the map's own values (no histogram bins), so on 8-bit data it splits where
    ``skimage.filters.threshold_otsu`` does. A constant map has no split and gives an empty mask.

    Args:
        maps: ``(N, H, W)`` finite floating-point maps (any range: attention maps, or ``images[:, 0]``).
        threshold: "otsu" (default) or a finite number ``τ``.

    Returns:
        ``(N, H, W)`` int64 in {0, 1} on ``maps``' device (for :func:`diffu.metrics.iou` with ``num_classes=2``).

    Raises:
        ValueError: ``maps`` not a finite floating-point ``(N, H, W)`` tensor; ``threshold`` neither "otsu" nor a
            finite number.

    Used in chapter §6 (attention segmentation and the threshold baseline).
    """
    check_rank(maps, 3, "maps", "(N, H, W)")
    check_tensor(maps, "maps", floating=True, finite=True)
    if isinstance(threshold, str):
        check_choice("threshold", threshold, ("otsu",))
    else:
        check_real("threshold", threshold)
        return (maps > float(threshold)).long()
    n = maps.shape[0]
    v = maps.reshape(n, -1).double().sort(1).values  # (N, P)
    p = v.shape[1]
    if p < 2:
        return torch.zeros_like(maps, dtype=torch.long)
    k = torch.arange(1, p, device=v.device, dtype=v.dtype)  # split after the k smallest values
    c = v.cumsum(1)
    w0 = k / p
    mu0, mu1 = c[:, :-1] / k, (c[:, -1:] - c[:, :-1]) / (p - k)
    between = w0 * (1 - w0) * (mu0 - mu1) ** 2  # (N, P - 1)
    between = torch.where(v[:, 1:] > v[:, :-1], between, torch.full_like(between, -1.0))  # only between distinct values
    best = between.argmax(1)
    tau = torch.where(between.max(1).values >= 0, v[torch.arange(n), best], v[:, -1])  # constant map: τ = its value
    return (maps.double() > tau[:, None, None]).long()


class AttentionIoU(NamedTuple):
    """IoU of attention masks against true masks, by timestep and layer (:func:`attention_iou_table`).

    ``timesteps``: the timesteps, one per row of ``iou``; ``layers``: the blocks, one per column of ``iou``, then
    ``"mean"`` (all blocks averaged, then thresholded); ``iou`` ``(len(timesteps), len(layers), N)``: float64 IoU of
    the foreground class per image; ``image_otsu`` ``(N,)``: IoU of Otsu's threshold on the image itself, bright =
    foreground (the baseline); ``image_otsu_best`` ``(N,)``: the same with the better polarity per image (an
    oracle's upper bound for it); ``all_foreground`` ``(N,)``: IoU of calling every pixel foreground (the mask's
    area share: chance level); ``seconds_per_image``: wall time of the forward passes per image and timestep.
    """

    timesteps: tuple
    layers: tuple
    iou: torch.Tensor
    image_otsu: torch.Tensor
    image_otsu_best: torch.Tensor
    all_foreground: torch.Tensor
    seconds_per_image: float

    def mean(self) -> torch.Tensor:
        """``(len(timesteps), len(layers))``: the mean IoU over the images."""
        return self.iou.mean(-1)


def _fg_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return iou(pred, target, 2)[:, 0].double()  # (N,): the foreground class; never NaN (every target has an item)


def attention_iou_table(
    model,
    images: torch.Tensor,
    masks: torch.Tensor,
    captions,
    schedule: Schedule,
    *,
    timesteps=(50, 200, 400, 600, 800),
    token: str | None = None,
    keys: str = "joint",
    upsample: str = "bilinear",
    threshold="otsu",
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> AttentionIoU:
    """IoU of :func:`attention_masks` (thresholded by :func:`threshold_maps`) against true masks, for every timestep
    and every block alone and all blocks averaged; with the global-threshold baselines on the same images.

    The IoU is the foreground class's ``|P ∩ M| / |P ∪ M|`` per image (:func:`diffu.metrics.iou`). One forward pass
    per timestep serves all blocks (each timestep draws fresh noise from ``generator``, in order).

    Args:
        model, images, captions, schedule, token, keys, upsample, generator: as :func:`attention_masks`.
        masks: ``(N, H, W)`` true masks, integer in {0, 1}, on the images' device, each with a foreground pixel.
        timesteps: a non-empty list of integer timesteps in ``[0, T − 1]``.
        threshold: as :func:`threshold_maps` ("otsu" or a number in the maps' [0, 1] scale).
        progress: show a progress bar over the timesteps.

    Returns:
        An :class:`AttentionIoU`.

    Raises:
        TypeError, ValueError: as :func:`attention_masks` and :func:`threshold_maps`; ``masks`` not ``(N, H, W)``
            integer labels in {0, 1} matching the images, or a mask without foreground; ``timesteps`` empty or
            out of range; ``progress`` not a bool.

    Used in chapter §6 (interpretable segmentation).
    """
    if isinstance(timesteps, (int, str)) or not isinstance(timesteps, (list, tuple, range)):
        raise TypeError(f"timesteps must be a list of integer timesteps, got {type(timesteps).__name__}")
    ts = _check_model_inputs(model, images, schedule, list(timesteps), "timesteps")
    check_choice("keys", keys, KEYS)
    check_choice("upsample", upsample, UPSAMPLING)
    check_bool("progress", progress)
    n, size = images.shape[0], images.shape[-1]
    check_rank(masks, 3, "masks", "(N, H, W)")
    if tuple(masks.shape) != (n, size, size) or masks.device != images.device:
        raise ValueError(f"masks must be (N, H, W) = {(n, size, size)} on {images.device}, got "
                         f"{tuple(masks.shape)} on {masks.device}")  # fmt: skip
    integer = not (masks.is_floating_point() or masks.is_complex() or masks.dtype == torch.bool)
    if not integer or ((masks != 0) & (masks != 1)).any():
        raise ValueError(f"masks must be integer label maps in {{0, 1}}, got {masks.dtype}")
    if not bool(masks.flatten(1).any(1).all()):
        raise ValueError("masks must each hold a foreground pixel (the IoU of an empty mask is undefined)")
    threshold_maps(images[:1, 0], threshold)  # checks the threshold before any forward pass
    ids, positions = _tokens(model, captions, n, token, images.device)
    depth = model.config.depth
    rows, seconds = [], []
    for t in tqdm(ts, disable=not progress, desc="attention IoU"):
        raw = _word_attention(model, images, ids, positions, schedule, [t], generator, keys, seconds).mean(2)
        cols = [raw[:, layer] for layer in range(depth)] + [raw.mean(1)]  # (N, T_x) each
        rows.append(torch.stack([_fg_iou(threshold_maps(_to_image(c, size, upsample, True), threshold), masks)
                                 for c in cols]))  # fmt: skip
    plain = threshold_maps(images[:, 0], "otsu")
    bright, dark = _fg_iou(plain, masks), _fg_iou(1 - plain, masks)
    return AttentionIoU(
        timesteps=tuple(ts),
        layers=(*range(depth), "mean"),
        iou=torch.stack(rows),
        image_otsu=bright,
        image_otsu_best=torch.maximum(bright, dark),
        all_foreground=_fg_iou(torch.ones_like(masks), masks),
        seconds_per_image=sum(seconds) / (len(seconds) * n),
    )
