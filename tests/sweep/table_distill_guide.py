"""Probes of chapter §7.1's plug-and-play distillation: diffu.nn.guide (the guide network and the guided UNet) and
diffu.distill.guide (the CFG target, the distillation loss and the cost count).

The networks are tiny 8×8 class-conditional UNets (two levels, three classes) built here with torch's global RNG
forked; a GuidedUNet freezes its base in place, so every probe builds its own.
"""

from __future__ import annotations

import torch

from .fixtures import GEN, IMG, T2, Y3, X, randn
from .kit import CALL, IMAGE, INF, INT, NAN, TM, B, Doc, L, NanOrErr, Table, get, nan_at
from .kit import GEN as BADGEN

NG = "diffu.nn.guide:"
DG = "diffu.distill.guide:"


def unet(num_classes=3, channels=8):
    """A tiny UNet whose parameters are all drawn N(0, 0.2²), so that the label changes its output."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = get("diffu.nn.unet:UNetConfig")(channels=channels, channel_mult=(1, 2), num_res_blocks=1,
                                              attn_resolutions=(), image_size=8, num_classes=num_classes)  # fmt: skip
        net = get("diffu.nn.unet:UNet")(cfg)
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.2)
        return net.eval()


def guided(**kw):
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return get(NG + "GuidedUNet")(unet(), channels=4, **kw).eval()


def guide():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return get(NG + "GuideNet")(unet(), channels=4)


def schedule():
    return get("diffu.schedules:linear_schedule")(10)


Y_BAD = [
    B("out of range", L(lambda: torch.tensor([0, 4]))),
    B("float", TM(lambda y: y.float())),
    B("batch 3", L(lambda: torch.tensor([0, 1, 2]))),
    B("list", TM(lambda y: y.tolist())),
]
SCALE_BAD = [
    NAN,
    B("inf", INF),
    B("-1", -1.0),
    B("True", True),
    B("'3'", "3"),
    B("tensor batch 3", L(lambda: torch.ones(3))),
    B("bool tensor", L(lambda: torch.ones(2, dtype=torch.bool))),
]
FORWARD_BAD = dict(
    x=IMAGE(channels=True) + [B("7x7", L(lambda: randn(2, 1, 7, 7)))],
    t=[B("nan", TM(nan_at), NanOrErr()), B("batch 3", L(lambda: torch.tensor([1.0, 2.0, 3.0]))), B("'3'", "3")],
    y=Y_BAD,
    scale=SCALE_BAD + [B("nan tensor", L(lambda: torch.tensor([1.0, NAN])), NanOrErr())],
)


def build(T: Table) -> None:
    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.guide
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.guide"
    T.sweep(
        M,
        L(lambda: lambda **kw: get(NG + "GuideNet")(**kw)(X(), T2(), Y3(), 2.0)),
        "",
        dict(base=L(unet), channels=4),
        dict(
            base=[B("'unet'", "unet"), B("None", None), B("unconditional", L(lambda: unet(num_classes=None)))],
            channels=INT(1),
            channel_mult=[B("3 levels", (1, 2, 2)), B("()", ()), B("(1, 0)", (1, 0)), B("'12'", "12")],
            num_res_blocks=INT(1),
            groups=INT(1) + [B("3 (does not divide 4)", 3)],
            config=[B("2", 2), B("a dict", {"channels": 4})],
        ),
        names=(NG + "GuideNet", NG + "GuideNetConfig"),
        label="GuideNet",
        ok_pred=lambda f: [tuple(v.shape) for v in f] == [(2, 8, 8, 8), (2, 16, 4, 4)],
    )
    T.sweep(
        M,
        L(guide),
        "x t y",
        dict(x=X, t=T2, y=Y3, scale=2.0),
        FORWARD_BAD,
        names=(NG + "GuideNet",),
        label="GuideNet.forward",
    )
    T.sweep(
        M,
        L(lambda: lambda **kw: get(NG + "GuidedUNet")(**kw)(X(), T2(), Y3())),
        "",
        dict(base=L(unet)),
        dict(
            base=[B("'unet'", "unet"), B("None", None), B("unconditional", L(lambda: unet(num_classes=None)))],
            guide=[B("'g'", "g"), B("for another UNet", L(lambda: get(NG + "GuideNet")(unet(channels=16))))],
            channels=INT(1),
            config=[B("2", 2)],
        ),
        names=(NG + "GuidedUNet",),
        label="GuidedUNet",
    )
    T.sweep(
        M,
        L(guided),
        "x t y",
        dict(x=X, t=T2, y=Y3, scale=2.0),
        FORWARD_BAD,
        names=(NG + "GuidedUNet",),
        label="GuidedUNet.forward",
    )
    T.case(
        M,
        "nn.guide.GuidedUNet: the zero-initialised guide leaves the frozen UNet exactly as it is",
        NG + "GuidedUNet",
        lambda: (lambda m: torch.equal(m(X(), T2(), Y3(), scale=4.0), m.base(X(), T2(), Y3())))(guided()),
        Doc(bool, "identity at initialisation"),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.distill.guide
    # ------------------------------------------------------------------------------------------------------------
    M = "distill.guide"
    T.sweep(
        M,
        DG + "cfg_target",
        "base x_t t y scale",
        dict(base=L(unet), x_t=X, t=T2, y=Y3, scale=2.0),
        dict(
            base=CALL + [B("unconditional", L(lambda: unet(num_classes=None)))],
            x_t=IMAGE(channels=True),
            t=[B("batch 3", L(lambda: torch.tensor([1.0, 2.0, 3.0]))), B("'3'", "3")],
            y=Y_BAD + [B("None", None)],
            scale=SCALE_BAD
            + [
                B("nan tensor", L(lambda: torch.tensor([1.0, NAN]))),
                B("negative tensor", L(lambda: torch.tensor([1.0, -1.0]))),
            ],
        ),
        ok_pred=lambda v: v.shape == (2, 1, 8, 8) and not v.requires_grad,
    )
    T.sweep(
        M,
        DG + "guide_loss",
        "model x0 y",
        dict(model=L(guided), x0=IMG, y=Y3, schedule=L(schedule), generator=GEN),
        dict(
            model=CALL + [B("a UNet", L(unet))],
            x0=IMAGE(channels=True),
            y=Y_BAD + [B("None", None)],
            schedule=[B("'linear'", "linear")],
            scales=[B("()", ()), B("(1, -2)", (1.0, -2.0)), B("(nan,)", (NAN,)), B("3.0", 3.0), B("'123'", "123")],
            generator=BADGEN,
        ),
        ok_pred=lambda v: v.ndim == 0 and bool(torch.isfinite(v)) and v.requires_grad,
    )
    T.case(
        M,
        "distill.guide.guide_loss: the same generator seed gives the same loss",
        DG + "guide_loss",
        lambda: (
            lambda m: torch.equal(
                *[
                    get(DG + "guide_loss")(
                        m, IMG(), Y3(), schedule=schedule(), generator=torch.Generator().manual_seed(4)
                    )
                    for _ in range(2)
                ]
            )
        )(guided()),
        Doc(bool, "deterministic in the generator"),
    )
    T.sweep(
        M,
        DG + "guided_eps_cost",
        "model",
        dict(model=L(guided)),
        dict(model=CALL + [B("None", None), B("a UNet", L(unet))]),
        ok_pred=lambda c: (
            c["guide_share"] == c["guide_macs"] / c["base_macs"] and c["nfe_per_step"] == 1 + c["guide_share"]
        ),
    )
