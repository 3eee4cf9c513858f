"""Probes of chapter §6.1's controllability: diffu.nn.adapter (the T2I-Adapter and the adapted UNet) and diffu.control
(the control loss, condition maps, fidelity measures and the sudden-convergence detector).

The networks are tiny 8×8 UNets (two levels) built here with torch's global RNG forked; probes that train or change a
network build their own.
"""

from __future__ import annotations

import torch

from .fixtures import GEN, IMG, T2, Y3, X, rand_img, randn
from .kit import BOOL, CALL, IMAGE, INT, NAN, POS, TM, UNIT, B, Doc, L, NanOrErr, Table, get, nan_at
from .kit import GEN as BADGEN

AD = "diffu.nn.adapter:"
CO = "diffu.control:"
_CACHE: dict = {}


def unet(**kw):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = get("diffu.nn.unet:UNetConfig")(
            channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8, **kw
        )
        return get("diffu.nn.unet:UNet")(cfg).eval()


def adapted(**kw):
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return get(AD + "AdaptedUNet")(unet(), **kw).eval()


def fx(name: str):
    """Cached objects that no probe changes."""
    if name not in _CACHE:
        _CACHE[name] = {
            "adapted": lambda: adapted(cond_channels=2),
            "adapter": lambda: adapted(cond_channels=2).adapter,
        }[name]()
    return _CACHE[name]


def labels(n=2, size=8, k=3, seed=0):
    return torch.randint(0, k, (n, size, size), generator=torch.Generator().manual_seed(seed))


COND2 = L(lambda: rand_img(2, 2, 8, 8, seed=3))
LAB = L(labels)
BAD_LABELS = [
    B("float", TM(lambda y: y.float())),
    B("out of range", TM(lambda y: y + 4)),
    B("rank-1", TM(lambda y: y[0, 0])),
    B("list", TM(lambda y: y.tolist())),
    B("None", None),
]
BAD_COND = [
    B("None", None),
    B("channels 1", L(lambda: randn(2, 1, 8, 8))),
    B("size 4", L(lambda: randn(2, 2, 4, 4))),
    B("7x7", L(lambda: randn(2, 2, 7, 7))),
    B("batch 3", L(lambda: randn(3, 2, 8, 8))),
    B("int64", L(lambda: torch.ones(2, 2, 8, 8, dtype=torch.long))),
    B("list", TM(lambda c: c.tolist())),
    B("nan", TM(nan_at), NanOrErr()),
]


def segmenter(images):
    """Three class scores from the intensity (class k scores −|x − k/2|)."""
    k = torch.arange(3, dtype=images.dtype).reshape(1, 3, 1, 1)
    return -(images[:, :1] - k / 2).abs()


STEPS = list(range(0, 101, 10))
SCORES = [0.1] * 5 + [0.9] * 6


def build(T: Table) -> None:
    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.adapter
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.adapter"
    T.sweep(
        M,
        AD + "adapter_levels",
        "base",
        dict(base=L(unet)),
        dict(base=[B("'unet'", "unet"), B("None", None), B("an adapter", L(lambda: fx("adapter")))]),
        ok_pred=lambda r: r == ((1, 3), (8, 16)),
    )
    T.sweep(
        M,
        L(lambda: lambda **kw: get(AD + "T2IAdapter")(**kw)(randn(2, kw.get("cond_channels", 1), 8, 8))),
        "",
        dict(base=L(unet), cond_channels=2),
        dict(
            base=[B("'unet'", "unet"), B("an AdaptedUNet", L(lambda: fx("adapted")))],
            cond_channels=INT(1),
            num_res_blocks=INT(1),
            kernel_size=INT(1) + [B("2 (even)", 2)],
            unshuffle=INT(1),
            zero_init=BOOL + [B("1", 1)],
            config=[B("2", 2), B("a dict", {"cond_channels": 2})],
        ),
        names=(AD + "T2IAdapter", AD + "T2IAdapterConfig"),
        label="T2IAdapter",
    )
    T.sweep(
        M,
        L(lambda: fx("adapter")),
        "cond",
        dict(cond=COND2),
        dict(cond=[b for b in BAD_COND if b.label not in ("batch 3", "size 4")]),  # alone, any batch and size fit
        names=(AD + "T2IAdapter",),
        label="T2IAdapter.forward",
        ok_pred=lambda f: [tuple(v.shape) for v in f] == [(2, 8, 8, 8), (2, 16, 4, 4)],
    )
    T.sweep(
        M,
        L(lambda: lambda **kw: get(AD + "AdaptedUNet")(**kw)(X(), torch.tensor([1.0, 2.0]), cond=randn(2, 1, 8, 8))),
        "",
        dict(base=L(unet)),
        dict(
            base=[B("'unet'", "unet"), B("None", None)],
            adapter=[
                B("'a'", "a"),
                B("for another UNet", L(lambda: get(AD + "T2IAdapter")(_wide()))),
            ],
            cond_channels=INT(1),
            zero_init=BOOL,
            config=[B("2", 2)],
        ),
        names=(AD + "AdaptedUNet",),
        label="AdaptedUNet",
    )
    T.sweep(
        M,
        L(lambda: fx("adapted")),
        "x t",
        dict(x=X, t=T2, cond=COND2, control_scale=1.0),
        dict(
            x=IMAGE(channels=True) + [B("7x7", L(lambda: randn(2, 1, 7, 7)))],
            t=[B("nan", TM(nan_at), NanOrErr()), B("batch 3", L(lambda: torch.tensor([1.0, 2.0, 3.0]))), B("'3'", "3")],
            cond=BAD_COND,
            control_scale=[NAN, B("inf", float("inf")), B("'1'", "1"), B("True", True)],
            y=[B("labels (unconditional net)", Y3)],
        ),
        names=(AD + "AdaptedUNet",),
        label="AdaptedUNet.forward",
    )
    T.case(
        M,
        "nn.adapter.AdaptedUNet: zero_init starts as the frozen UNet, exactly",
        AD + "AdaptedUNet",
        lambda: (lambda m: torch.equal(m(X(), T2(), cond=COND2()), m.base(X(), T2())))(
            _perturbed_base_adapted(zero_init=True)
        ),
        Doc(bool, "identity at initialisation"),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.control
    # ------------------------------------------------------------------------------------------------------------
    M = "control"
    T.sweep(
        M,
        CO + "control_loss",
        "model images cond",
        dict(model=L(lambda: fx("adapted")), images=IMG, cond=COND2, generator=GEN),
        dict(
            model=CALL + [B("a UNet (no cond)", L(unet))],
            images=IMAGE(nan="err") + [B("batch+1", TM(lambda x: torch.cat([x, x[:1]])), arg=("images", "cond"))],
            cond=IMAGE(nan="err") + [B("channels 1", L(lambda: rand_img(2, 1, 8, 8)))],
            generator=BADGEN,
            schedule=[B("'linear'", "linear")],
        ),
        ok_pred=lambda v: v.ndim == 0 and bool(torch.isfinite(v)),
    )
    T.case(
        M,
        "control.control_loss: the same generator seed gives the same loss",
        CO + "control_loss",
        lambda: torch.equal(
            *[
                get(CO + "control_loss")(fx("adapted"), IMG(), COND2(), torch.Generator().manual_seed(4))
                for _ in range(2)
            ]
        ),
        Doc(bool, "deterministic in the generator"),
    )
    T.sweep(
        M,
        CO + "label_map_condition",
        "labels num_classes",
        dict(labels=LAB, num_classes=3),
        dict(labels=BAD_LABELS, num_classes=INT(2), dtype=[B("int64", torch.int64), B("'float'", "float")]),
        ok_pred=lambda c: c.shape == (2, 3, 8, 8) and set(c.unique().tolist()) == {-1.0, 1.0},
    )
    T.sweep(
        M,
        CO + "edge_map",
        "images",
        dict(images=IMG, threshold=0.25),
        dict(images=IMAGE(nan="err"), threshold=POS(extra=[B("1.5", 1.5)])),
        ok_pred=lambda e: e.shape == (2, 1, 8, 8) and set(e.unique().tolist()) <= {-1.0, 1.0},
    )
    MASK = L(lambda: labels(k=2))
    T.sweep(
        M,
        CO + "mask_fidelity",
        "generated target_masks",
        dict(generated=IMG, target_masks=MASK, level=-0.9),
        dict(
            generated=IMAGE(nan="err", channels=True),
            target_masks=[
                B("float", TM(lambda m: m.float())),
                B("values 0..2", L(lambda: labels(k=3))),
                B("shape", L(lambda: labels(size=4, k=2))),
                B("list", TM(lambda m: m.tolist())),
                B("None", None),
            ],
            level=[NAN, B("-1", -1.0), B("1", 1.0), B("True", True), B("'0'", "0")],
        ),
        names=(CO + "mask_fidelity", CO + "Fidelity"),
        ok_pred=lambda f: f.dice.shape == (2,) and f.iou.shape == (2,),
    )
    T.sweep(
        M,
        CO + "label_fidelity",
        "generated target_labels segmenter num_classes",
        dict(generated=IMG, target_labels=LAB, segmenter=segmenter, num_classes=3),
        dict(
            generated=IMAGE(nan="err"),
            target_labels=BAD_LABELS + [B("shape", L(lambda: labels(size=4)))],
            segmenter=CALL + [B("wrong channels", lambda x: x), B("NaN scores", lambda x: segmenter(x) * NAN)],
            num_classes=INT(2) + [B("4 (segmenter has 3)", 4, arg=("segmenter",))],
            ignore_background=BOOL,
        ),
        names=(CO + "label_fidelity", CO + "Fidelity"),
        alias=dict(segmenter=("segmenter", "segmenter output")),
        ok_pred=lambda f: f.dice.shape == (2, 2),
    )
    T.sweep(
        M,
        CO + "sudden_convergence",
        "steps scores",
        dict(steps=STEPS, scores=SCORES, low=0.3, high=0.7, window=0.1),
        dict(
            steps=[
                B("decreasing", STEPS[::-1]),
                B("one step", [0]),
                B("2-D", L(lambda: torch.zeros(11, 2))),
                B("string", "0123"),
                B("nan", [NAN] + STEPS[1:]),
                B("None", None),
            ],
            scores=[
                B("short", SCORES[:-1]),
                B("nan", [NAN] + SCORES[1:]),
                B("bools", [True] * 11),
                B("None", None),
            ],
            low=[NAN, B("'0.3'", "0.3"), B("0.8 (> high)", 0.8)],
            high=[NAN, B("True", True)],
            window=UNIT(extra=[B("0", 0.0)]),
        ),
        names=(CO + "sudden_convergence", CO + "Convergence"),
        alias=dict(low=("low", "high")),
        ok_pred=lambda v: v.sudden and v.start == 40.0 and v.end == 50.0,
    )

    # diffu.recipes.mask_fidelity_score: the monitor of the mask-control recipes (28×28 Fashion-MNIST test items)
    T.sweep(
        "recipes",
        "diffu.recipes:mask_fidelity_score",
        "model",
        dict(model=L(_adapted28), n=2, steps=2, seed=1),
        dict(model=CALL + [B("None", None)], n=INT(1), steps=INT(1, big=1001), seed=INT(0), per_image=BOOL),
        ok_pred=lambda r: set(r) == {"dice", "iou"} and all(0 <= v <= 1 for v in r.values()),
    )

    # diffu.recipes.label_fidelity_score: the monitor of mni_label_controlnet (32×32 held-out brain tissue maps,
    # judged by the shipped brain_unet)
    T.sweep(
        "recipes",
        "diffu.recipes:label_fidelity_score",
        "model",
        dict(model=L(_controlled32), n=2, steps=2, seed=1),
        dict(model=CALL + [B("None", None)], n=INT(1), steps=INT(1, big=1001), seed=INT(0), per_image=BOOL),
        ok_pred=lambda r: set(r) == {"dice"} and 0 <= r["dice"] <= 1,
    )


def _wide():
    """A UNet of other widths (16 channels): an adapter built for it does not fit the 8-channel one."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return get("diffu.nn.unet:UNet")(
            channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8
        ).eval()


def _perturbed_base_adapted(**kw):
    m = adapted(cond_channels=2, **kw)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in m.base.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return m


def _adapted28():
    """A tiny AdaptedUNet for 28×28 images and 2-channel mask maps (mask_fidelity_score's Fashion-MNIST items)."""
    with torch.random.fork_rng():
        torch.manual_seed(2)
        cfg = get("diffu.nn.unet:UNetConfig")(
            channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=28
        )
        return get(AD + "AdaptedUNet")(get("diffu.nn.unet:UNet")(cfg), cond_channels=2).eval()


def _controlled32():
    """A tiny ControlledUNet for 32×32 slices and 4-channel tissue maps (label_fidelity_score's brain maps)."""
    with torch.random.fork_rng():
        torch.manual_seed(2)
        cfg = get("diffu.nn.unet:UNetConfig")(
            channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=32
        )
        return get("diffu.nn.controlnet:ControlledUNet")(get("diffu.nn.unet:UNet")(cfg), cond_channels=4).eval()
