"""Probes of chapter §7.3's conditional diffusion distillation, CoDi: diffu.distill.codi (the super-resolution
condition, the consistency targets, the loss and the sampler).

The network is a tiny 8×8 class-conditional UNet (two levels, three classes) under a zero-initialised ControlNet
(:class:`~diffu.nn.ControlledUNet`, one condition channel) on a T = 10 linear schedule, built here with torch's global
RNG forked; the ControlledUNet freezes its base in place, so every probe builds its own. The condition is the ×2
block-average condition of 8×8 images. diffu.bench.distill.bench_codi is not probed here: the benchmark functions
are reached through the command line (``bench.main`` in :mod:`tests.sweep.table_nn`), as ``bench_frontier`` is.
"""

from __future__ import annotations

import torch

from .fixtures import GEN, IMG, X2, X, rand_img
from .kit import BOOL, CALL, IMAGE, INT, TM, B, Doc, L, NanOrErr, Table, get, nan_at
from .kit import GEN as BADGEN

CO = "diffu.distill.codi:"


def sched():
    return get("diffu.schedules:linear_schedule")(10)


def controlled():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = get("diffu.nn.unet:UNetConfig")(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                                              image_size=8, num_classes=3)  # fmt: skip
        base = get("diffu.nn.unet:UNet")(cfg).eval()
        torch.nn.init.normal_(base.conv_out.weight, std=0.05)
        return get("diffu.nn.controlnet:ControlledUNet")(base, cond_channels=1).eval()


def cond(seed=0):
    """The ×2 condition of a (2, 1, 8, 8) image batch."""
    return get(CO + "sr_condition")(rand_img(2, 1, 8, 8, seed=seed), 2)


COND = L(cond)
TVEC = L(lambda: torch.tensor([3, 9]))
BAD_SCHED = [B("'linear'", "linear"), B("None", None)]
BAD_COND = [
    B("batch 3", L(lambda: torch.cat([cond(), cond()[:1]]))),
    B("channels+1", TM(lambda c: torch.cat([c, c], 1))),
    B("rank-1", TM(lambda c: c[0])),
    B("int64", TM(lambda c: c.long())),
    B("7x7", L(lambda: torch.zeros(2, 1, 7, 7))),
    B("list", TM(lambda c: c.tolist())),
    B("None", None),
    B("nan", TM(nan_at), NanOrErr()),
]


def build(T: Table) -> None:
    M = "distill.codi"
    T.sweep(
        M,
        CO + "sr_condition",
        "images",
        dict(images=IMG, factor=2),
        dict(
            images=IMAGE()
            + [B("7x7 (not divisible by 2)", L(lambda: torch.zeros(1, 1, 7, 7)), arg=("images", "factor"))],
            factor=INT(1) + [B("3 (does not divide 8)", 3), B("16 (larger than the image)", 16)],
        ),
        ok_pred=lambda c: (
            c.shape == (2, 1, 8, 8)
            and torch.equal(c[..., ::2, ::2].repeat_interleave(2, -1).repeat_interleave(2, -2), c)
        ),
    )
    T.case(
        M,
        "distill.codi.sr_condition: factor 1 is the identity",
        CO + "sr_condition",
        lambda: torch.equal(get(CO + "sr_condition")(IMG(), 1), IMG()),
        Doc(bool, "A⁺ A = I for 1×1 blocks"),
    )
    T.sweep(
        M,
        CO + "codi_targets",
        "model z_t t eps cond",
        dict(model=L(controlled), z_t=X, t=TVEC, eps=X2, cond=COND, schedule=L(sched), skip=3),
        dict(
            model=CALL,
            z_t=IMAGE(channels=True) + [B("7x7", L(lambda: torch.zeros(2, 1, 7, 7)))],
            t=[
                B("out of range", L(lambda: torch.tensor([3, 10]))),
                B("-1", L(lambda: torch.tensor([-1, 3]))),
                B("fractional", L(lambda: torch.tensor([3.5, 9.0]))),
                B("batch 3", L(lambda: torch.tensor([3, 9, 4]))),
                B("'3'", "3"),
                B("None", None),
            ],
            eps=[
                B("batch 1 (would broadcast)", TM(lambda e: e[:1])),
                B("one row (would broadcast)", TM(lambda e: e[:, :, :1])),
                B("7x7", L(lambda: torch.zeros(2, 1, 7, 7))),
                B("int64", TM(lambda e: e.long())),
                B("list", TM(lambda e: e.tolist())),
                B("None", None),
                B("nan", TM(nan_at), NanOrErr()),
            ],
            cond=BAD_COND,
            schedule=BAD_SCHED,
            skip=INT(1) + [B("None", None)],
        ),
        ok_pred=lambda r: (
            len(r) == 3
            and all(v.shape == (2, 1, 8, 8) for v in r)
            and r[0].requires_grad
            and not (r[1].requires_grad or r[2].requires_grad)
        ),
    )
    T.sweep(
        M,
        CO + "codi_loss",
        "model images cond",
        dict(model=L(controlled), images=IMG, cond=COND, schedule=L(sched), skip=3, generator=GEN),
        dict(
            model=CALL,
            images=IMAGE(channels=True) + [B("batch 3", L(lambda: rand_img(3, 1, 8, 8)), arg=("images", "cond"))],
            cond=BAD_COND,
            schedule=BAD_SCHED,
            skip=INT(1) + [B("None", None)],
            generator=BADGEN,
        ),
        ok_pred=lambda v: v.ndim == 0 and bool(torch.isfinite(v)) and v.requires_grad,
    )
    T.case(
        M,
        "distill.codi.codi_loss: the same generator seed gives the same loss",
        CO + "codi_loss",
        lambda: (
            lambda m: torch.equal(
                *[
                    get(CO + "codi_loss")(
                        m, IMG(), cond(), schedule=sched(), skip=3, generator=torch.Generator().manual_seed(4)
                    )
                    for _ in range(2)
                ]
            )
        )(controlled()),
        Doc(bool, "deterministic in the generator"),
    )
    T.case(
        M,
        "distill.codi.codi_loss: the gradient reaches the ControlNet only",
        CO + "codi_loss",
        lambda: (
            lambda m: (
                get(CO + "codi_loss")(m, IMG(), cond(), schedule=sched(), skip=3, generator=GEN()).backward(),
                all(p.grad is None for p in m.base.parameters())
                and any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in m.control.parameters()),
            )[1]
        )(controlled()),
        Doc(bool, "frozen base"),
    )
    T.sweep(
        M,
        CO + "sr_sample",
        "model cond",
        dict(model=L(controlled), cond=COND, steps=2, schedule=L(sched), generator=GEN, progress=False),
        dict(
            model=CALL,
            cond=BAD_COND[1:],
            steps=INT(1) + [B("11 (> T)", 11)],
            schedule=[B("'linear'", "linear"), B("a VPSDE", L(lambda: get("diffu.sde:VPSDE")()))],
            generator=BADGEN,
            progress=BOOL,
        ),
        ok_pred=lambda v: v.shape == (2, 1, 8, 8) and float(v.abs().max()) <= 1,
    )
    T.case(
        M,
        "distill.codi.sr_sample: the same generator seed gives the same samples",
        CO + "sr_sample",
        lambda: (
            lambda m: torch.equal(
                *[
                    get(CO + "sr_sample")(
                        m, cond(), steps=2, schedule=sched(), progress=False, generator=torch.Generator().manual_seed(3)
                    )
                    for _ in range(2)
                ]
            )
        )(controlled()),
        Doc(bool, "deterministic in the generator"),
    )
    T.case(
        M,
        "distill.codi.sr_sample: NaN in cond propagates (documented in the module docstring)",
        CO + "sr_sample",
        lambda: get(CO + "sr_sample")(controlled(), nan_at(cond()), steps=2, schedule=sched(), progress=False),
        NanOrErr("cond"),
    )
