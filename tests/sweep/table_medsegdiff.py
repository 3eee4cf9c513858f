"""Probes of chapter §6.2's MedSegDiff network, diffu.nn.medsegdiff: the FF-Parser, the config and the network's
forward (``x``, ``t`` and the condition image ``cond``).

The networks are built here (two mask channels, one image channel, 8×8, both flags on) with torch's RNG forked and
their parameters redrawn, so that the zero-initialised output layer does not hide the input.
"""

from __future__ import annotations

import torch

from .fixtures import randn
from .kit import BOOL, INT, TM, B, Err, L, NanOrErr, Ok, Table, get, nan_at

MS = "diffu.nn.medsegdiff:"
CFG = dict(in_channels=2, out_channels=2, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
           image_size=8)  # fmt: skip


def _net(**flags):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = get(MS + "MedSegDiffUNet")(**CFG, **flags)
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.2)
    return net.eval()


def _bad_x():
    """Bad ``x`` for a two-channel 8×8 network: NaN propagates (documented), wrong rank/channels/dtype, a list,
    None, a 6×6 state (not the FF-Parser's size) and a 7×7 one (not divisible by 2)."""
    return [
        B("nan", TM(nan_at), NanOrErr("x")),
        B("rank-1", TM(lambda x: x[0])),
        B("rank+1", TM(lambda x: x[None])),
        B("int64", TM(lambda x: x.round().long())),
        B("list", TM(lambda x: x.tolist())),
        B("None", None),
        B("channels+1", TM(lambda x: torch.cat([x, x[:, :1]], 1))),
        B("6x6", L(lambda: randn(2, 2, 6, 6))),
        B("7x7", L(lambda: randn(2, 2, 7, 7))),
    ]


def build(T: Table) -> None:
    M = "nn.medsegdiff"
    T.sweep(
        M,
        L(lambda: _net()),
        "x t",
        dict(x=L(lambda: randn(2, 2, 8, 8)), t=5.0, cond=L(lambda: randn(2, 1, 8, 8, seed=2))),
        dict(
            x=_bad_x(),
            t=[B("list of 3", [1.0, 2.0, 3.0]), B("'5'", "5")],
            cond=[
                B("None", None),
                B("list", TM(lambda c: c.tolist())),
                B("int64", TM(lambda c: c.round().long())),
                B("rank-1", TM(lambda c: c[0])),
                B("channels+1", TM(lambda c: torch.cat([c, c[:, :1]], 1))),
                B("batch+1", TM(lambda c: torch.cat([c, c[:1]]))),
                B("4x4", L(lambda: randn(2, 1, 4, 4))),
            ],
            y=[B("label without classes", torch.tensor([0, 1]))],
        ),
        names=(MS + "MedSegDiffUNet",),
        label="MedSegDiffUNet",
        ok_pred=lambda out: out.shape == (2, 2, 8, 8) and bool(torch.isfinite(out).all()),
    )
    T.case(
        M,
        "nn.medsegdiff.MedSegDiffUNet: NaN in cond propagates (documented)",
        MS + "MedSegDiffUNet",
        lambda: _net()(randn(2, 2, 8, 8), 5.0, cond=nan_at(randn(2, 1, 8, 8))),
        NanOrErr("cond"),
    )
    T.case(
        M,
        "nn.medsegdiff.MedSegDiffUNet without the FF-Parser takes any size divisible by 2",
        MS + "MedSegDiffUNet",
        lambda: _net(ff_parser=False)(randn(2, 2, 6, 6), 5.0, cond=randn(2, 1, 6, 6)).shape,
        Ok(lambda s: s == (2, 2, 6, 6)),
    )
    T.sweep(
        M,
        MS + "MedSegDiffConfig",
        "",
        dict(cond_channels=1, image_size=8, channel_mult=(1, 2)),
        dict(
            cond_channels=INT(1),
            ff_parser=BOOL + [B("1", 1), B("None", None)],
            cond_attention=BOOL + [B("0", 0)],
            image_size=[B("7", 7)],
        ),
    )
    T.case(
        M,
        "nn.medsegdiff.MedSegDiffUNet(config=UNetConfig)",
        MS + "MedSegDiffUNet",
        lambda: get(MS + "MedSegDiffUNet")(get("diffu.nn.unet:UNetConfig")()),
        Err("config"),
    )
    T.case(
        M,
        "nn.medsegdiff.MedSegDiffUNet(config and keywords)",
        MS + "MedSegDiffUNet",
        lambda: get(MS + "MedSegDiffUNet")(get(MS + "MedSegDiffConfig")(image_size=8), channels=8),
        Err("config"),
    )
    T.sweep(
        M,
        MS + "FFParser",
        "channels height width",
        dict(channels=3, height=8, width=6),
        dict(channels=INT(1), height=INT(1), width=INT(1)),
        post=lambda ff: ff(randn(2, 3, 8, 6)).shape,
        ok_pred=lambda s: s == (2, 3, 8, 6),
    )
    T.sweep(
        M,
        L(lambda: get(MS + "FFParser")(3, 8, 6)),
        "x",
        dict(x=L(lambda: randn(2, 3, 8, 6))),
        dict(
            x=[
                B("nan", TM(nan_at), NanOrErr("x")),
                B("rank-1", TM(lambda x: x[0])),
                B("int64", TM(lambda x: x.round().long())),
                B("list", TM(lambda x: x.tolist())),
                B("None", None),
                B("channels+1", TM(lambda x: torch.cat([x, x[:, :1]], 1))),
                B("6x8 (transposed)", TM(lambda x: x.transpose(-1, -2))),
            ]
        ),
        names=(MS + "FFParser",),
        label="FFParser.__call__",
        ok_pred=lambda out: out.shape == (2, 3, 8, 6) and not out.is_complex(),
    )
