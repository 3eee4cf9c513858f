"""Probes of chapter §7's distillation baselines: diffu.nn.student (the two-head student), diffu.distill.progressive
and diffu.distill.consistency.

The networks are tiny 8×8 class-conditional UNets (two levels) on a T = 10 linear schedule, built here with torch's
global RNG forked; probes that train or change a network build their own.
"""

from __future__ import annotations

import torch

from .fixtures import GEN, IMG, T2, Y3, X, randn
from .kit import BOOL, CALL, IMAGE, INT, NAN, B, Doc, L, Table, get
from .kit import GEN as BADGEN

ST = "diffu.nn.student:"
PD = "diffu.distill.progressive:"
CM = "diffu.distill.consistency:"
_CACHE: dict = {}


def sched():
    return get("diffu.schedules:linear_schedule")(10)


def unet(**kw):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = get("diffu.nn.unet:UNetConfig")(
            channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8, num_classes=3, **kw
        )
        net = get("diffu.nn.unet:UNet")(cfg).eval()
        torch.nn.init.normal_(net.conv_out.weight, std=0.05)
        return net.requires_grad_(False)


def student():
    return get(ST + "StudentUNet").from_teacher(unet(), T=10)


def fx(name: str):
    """Cached objects that no probe changes."""
    if name not in _CACHE:
        _CACHE[name] = {"teacher": unet, "student": student, "sched": sched}[name]()
    return _CACHE[name]


TEACH = L(lambda: fx("teacher"))
STUD = L(lambda: fx("student"))
SCHED = L(lambda: fx("sched"))
TVEC = L(lambda: torch.tensor([9, 5]))
KW = L(lambda: {"y": torch.tensor([0, 2])})
BAD_SCHED = [B("'linear'", "linear"), B("None", None)]
BAD_T = [
    B("out of range", L(lambda: torch.tensor([9, 10]))),
    B("fractional", L(lambda: torch.tensor([9.5, 5.0]))),
    B("batch 3", L(lambda: torch.tensor([9, 5, 4]))),
    B("'9'", "9"),
]


def build(T: Table) -> None:
    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.student
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.student"
    T.sweep(
        M,
        L(lambda: lambda **kw: get(ST + "StudentUNet")(**kw)(randn(2, 1, 8, 8), T2())),
        "",
        dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8, T=10),
        dict(
            schedule=[B("'quadratic'", "quadratic"), B("3", 3)],
            T=INT(2),
            prediction=[B("'v'", "v")],
            channels=INT(1),
            config=[B("2", 2), B("a dict", {"T": 10})],
        ),
        names=(ST + "StudentUNet", ST + "StudentUNetConfig"),
        label="StudentUNet",
    )
    T.sweep(
        M,
        L(lambda: get(ST + "StudentUNet").from_teacher),
        "teacher",
        dict(teacher=L(unet), T=10),
        dict(
            teacher=[B("'unet'", "unet"), B("None", None), B("a v-prediction UNet", L(lambda: unet(prediction="v")))],
            schedule=[B("'quadratic'", "quadratic")],
            T=[B("1", 1), B("2.5", 2.5)],
        ),
        names=(ST + "StudentUNet",),
        label="StudentUNet.from_teacher",
    )
    T.sweep(
        M,
        STUD,
        "x t",
        dict(x=X, t=T2, y=Y3),
        dict(
            x=IMAGE(channels=True) + [B("7x7", L(lambda: randn(2, 1, 7, 7)))],
            t=[
                B("nan", L(lambda: torch.tensor([NAN, 1.0]))),
                B("10 (≥ T)", L(lambda: torch.tensor([10.0, 1.0]))),
                B("-1", L(lambda: torch.tensor([-1.0, 1.0]))),
                B("batch 3", L(lambda: torch.tensor([1.0, 2.0, 3.0]))),
                B("'3'", "3"),
            ],
            y=[B("out of range", L(lambda: torch.tensor([0, 7]))), B("float", L(lambda: torch.tensor([0.0, 1.0])))],
        ),
        names=(ST + "StudentUNet",),
        label="StudentUNet.forward",
    )
    T.case(
        M,
        "nn.student.StudentUNet: from_teacher outputs √ᾱ ε̂_teacher exactly",
        ST + "StudentUNet",
        lambda: (
            lambda s, t: torch.allclose(
                s(X(), T2(), Y3()),
                sched().interp_alpha_bar(T2()).float().sqrt().view(-1, 1, 1, 1) * t(X(), T2(), Y3()),
                atol=1e-6,
            )
        )(fx("student"), fx("teacher")),
        Doc(bool, "the D head starts at zero"),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.distill.progressive
    # ------------------------------------------------------------------------------------------------------------
    M = "distill.progressive"
    T.sweep(
        M,
        PD + "distillation_grid",
        "T steps",
        dict(T=1000, steps=16),
        dict(T=INT(1), steps=INT(1) + [B("T + 1", 1001)]),
        ok_pred=lambda g: g.tolist()[:3] == [999, 937, 874],
    )
    T.sweep(
        M,
        PD + "check_timesteps",
        "schedule t x",
        dict(schedule=SCHED, t=TVEC, x=X),
        dict(
            schedule=BAD_SCHED,
            t=BAD_T + [B("-1 (not clean)", L(lambda: torch.tensor([9, -1])))],
            x=[B("None", None), B("int64", L(lambda: torch.ones(2, 1, 8, 8, dtype=torch.long)))],
        ),  # fmt: skip
        alias={"x": ("x_t",)},
        ok_pred=lambda t: t.tolist() == [9, 5],
    )
    T.sweep(
        M,
        PD + "model_x0",
        "model x_t t schedule",
        dict(model=TEACH, x_t=X, t=TVEC, schedule=SCHED, model_kwargs=KW),
        dict(
            model=CALL,
            x_t=IMAGE(rank=False) + [B("channels+1", L(lambda: randn(2, 2, 8, 8)))],
            t=BAD_T,
            schedule=BAD_SCHED,
        ),
        ok_pred=lambda v: v.shape == (2, 1, 8, 8),
    )
    T.sweep(
        M,
        PD + "ddim_jump",
        "schedule z_t t t_next x0",
        dict(schedule=SCHED, z_t=X, t=TVEC, t_next=L(lambda: torch.tensor([4, -1])), x0=IMG),
        dict(
            schedule=BAD_SCHED,
            z_t=IMAGE(rank=False),
            t=BAD_T[:3],
            t_next=[B("-2", L(lambda: torch.tensor([4, -2])))],
            x0=[B("None", None), B("batch 3", L(lambda: randn(3, 1, 8, 8)))],
        ),
        ok_pred=lambda v: v.shape == (2, 1, 8, 8),
    )
    T.sweep(
        M,
        PD + "progressive_target",
        "teacher z_t t t_mid t_next schedule",
        dict(
            teacher=TEACH,
            z_t=X,
            t=TVEC,
            t_mid=L(lambda: torch.tensor([7, 3])),
            t_next=L(lambda: torch.tensor([4, -1])),
            schedule=SCHED,
            model_kwargs=KW,
        ),  # fmt: skip
        dict(
            teacher=CALL,
            z_t=IMAGE(rank=False),
            t=BAD_T,
            t_mid=[
                B("not between", L(lambda: torch.tensor([9, 3])), arg="decrease"),
                B("batch 1", L(lambda: torch.tensor([7]))),
            ],
            t_next=[B("-2", L(lambda: torch.tensor([4, -2]))), B("fractional", L(lambda: torch.tensor([4.5, -1.0])))],
            schedule=BAD_SCHED,
            clip_x0=BOOL,
        ),
        ok_pred=lambda v: v.shape == (2, 1, 8, 8) and bool(torch.isfinite(v).all()),
    )
    T.sweep(
        M,
        PD + "truncated_snr_weight",
        "schedule t",
        dict(schedule=SCHED, t=TVEC),
        dict(schedule=BAD_SCHED, t=BAD_T[:2] + [B("'9'", "9")]),
        ok_pred=lambda w: bool((w >= 1).all()),
    )
    T.sweep(
        M,
        PD + "progressive_loss",
        "student x0 y",
        dict(student=L(student), x0=IMG, y=Y3, teacher=TEACH, schedule=SCHED, steps=2, generator=GEN),
        dict(
            student=CALL,
            x0=IMAGE(nan=None, rank=False) + [B("batch 3", L(lambda: randn(3, 1, 8, 8)), arg=("y", "x0", "batch"))],
            y=[B("out of range", L(lambda: torch.tensor([0, 9]))), B("float", L(lambda: torch.tensor([0.0, 1.0])))],
            teacher=CALL,
            schedule=BAD_SCHED,
            steps=INT(1) + [B("T/2 + 1", 6)],
            generator=BADGEN,
            p_uncond=[B("1.5", 1.5), NAN],
            clip_x0=BOOL,
        ),
        ok_pred=lambda v: v.ndim == 0 and bool(torch.isfinite(v)),
    )
    T.case(
        M,
        "distill.progressive.progressive_loss: the same generator seed gives the same loss",
        PD + "progressive_loss",
        lambda: torch.equal(
            *[
                get(PD + "progressive_loss")(
                    fx("student"),
                    IMG(),
                    Y3(),
                    teacher=fx("teacher"),
                    schedule=fx("sched"),
                    steps=2,
                    generator=torch.Generator().manual_seed(4),
                )  # fmt: skip
                for _ in range(2)
            ]
        ),
        Doc(bool, "deterministic in the generator"),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.distill.consistency
    # ------------------------------------------------------------------------------------------------------------
    M = "distill.consistency"
    T.sweep(
        M,
        CM + "edm_sigma",
        "schedule t",
        dict(schedule=SCHED, t=TVEC),
        dict(schedule=BAD_SCHED, t=BAD_T[:2] + [B("-2", -2)]),
        ok_pred=lambda s: bool((s > 0).all()),
    )
    T.sweep(
        M,
        CM + "consistency_grid",
        "schedule n",
        dict(schedule=SCHED, n=5),
        dict(schedule=BAD_SCHED, n=INT(2) + [B("T + 1", 11)]),
        ok_pred=lambda g: int(g[0]) == 0 and int(g[-1]) == 9,
    )
    T.sweep(
        M,
        CM + "consistency_function",
        "model x_t t schedule",
        dict(model=STUD, x_t=X, t=TVEC, schedule=SCHED, model_kwargs=KW),
        dict(
            model=CALL,
            x_t=IMAGE(rank=False),
            t=BAD_T,
            schedule=BAD_SCHED,
            sigma_min=[B("0", 0.0), NAN, B("'a'", "a")],
            sigma_data=[B("0", 0.0), NAN, B("-1", -1.0)],
        ),
        ok_pred=lambda v: v.shape == (2, 1, 8, 8),
    )
    T.sweep(
        M,
        CM + "heun_teacher_step",
        "teacher x_t t t_prev schedule",
        dict(teacher=TEACH, x_t=X, t=TVEC, t_prev=L(lambda: torch.tensor([5, 0])), schedule=SCHED, model_kwargs=KW),
        dict(
            teacher=CALL,
            x_t=IMAGE(rank=False),
            t=BAD_T[:3],
            t_prev=[B("not smaller", L(lambda: torch.tensor([9, 0]))), B("-1", L(lambda: torch.tensor([5, -1])))],
            schedule=BAD_SCHED,
        ),
        ok_pred=lambda v: v.shape == (2, 1, 8, 8),
    )
    T.sweep(
        M,
        L(lambda: lambda **kw: get(CM + "ConsistencyDistillation")(**kw)(student(), IMG(), Y3(), generator=gen0())),
        "",
        dict(teacher=TEACH, schedule=SCHED, n=5),
        dict(
            teacher=CALL,
            schedule=BAD_SCHED,
            n=INT(2),
            mu=[B("1.0", 1.0), B("-0.1", -0.1), NAN],
            p_uncond=[B("2", 2.0), NAN],
        ),
        names=(CM + "ConsistencyDistillation",),
        label="ConsistencyDistillation",
    )
    T.sweep(
        M,
        L(lambda: get(CM + "ConsistencyDistillation")(fx("teacher"), fx("sched"), n=5)),
        "student x0 y",
        dict(student=L(student), x0=IMG, y=Y3, generator=GEN),
        dict(
            student=[B("'net'", "net"), B("a function", lambda x, t, y=None: x)],
            x0=IMAGE(nan=None, rank=False),
            y=[B("out of range", L(lambda: torch.tensor([0, 9])))],
            generator=BADGEN,
        ),
        names=(CM + "ConsistencyDistillation",),
        label="ConsistencyDistillation.__call__",
        ok_pred=lambda v: v.ndim == 0 and bool(torch.isfinite(v)),
    )
    T.sweep(
        M,
        CM + "multistep_sample",
        "denoise x_T schedule timesteps",
        dict(denoise=L(lambda: lambda x, t: x * 0.5), x_T=X, schedule=SCHED, timesteps=[9, 5, 2], generator=GEN),
        dict(
            denoise=CALL,
            x_T=IMAGE(rank=False, nan=None),
            schedule=BAD_SCHED,
            timesteps=[B("[]", []), B("increasing", [2, 5]), B("[10]", [10]), B("'9'", "9")],
            generator=BADGEN,
            progress=BOOL,
            clip=BOOL,
        ),
        ok_pred=lambda v: v.shape == (2, 1, 8, 8),
    )
    T.sweep(
        M,
        CM + "consistency_sample",
        "model x_T schedule",
        dict(model=STUD, x_T=L(lambda: (2, 1, 8, 8)), schedule=SCHED, steps=2, model_kwargs=KW, generator=GEN),
        dict(
            model=CALL,
            x_T=[B("(2, 0, 8)", (2, 0, 8)), B("'x'", "x")],
            schedule=BAD_SCHED,
            steps=INT(1) + [B("T + 1", 11)],
            timesteps=[B("two for steps 2", [5, 2]), B("[9]", [9])],
            generator=BADGEN,
            clip=BOOL,
        ),
        ok_pred=lambda v: v.shape == (2, 1, 8, 8),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.distill.frontier
    # ------------------------------------------------------------------------------------------------------------
    M = "distill.frontier"
    T.sweep(
        M,
        "diffu.distill.frontier:frontier_samples",
        "method model n",
        dict(method="ddim", model=TEACH, n=3, steps=2, batch=2),
        dict(
            method=[B("'dpm'", "dpm"), B("None", None)],
            model=CALL + [B("an unconditional net", L(lambda: torch.nn.Identity()))],
            n=INT(1),
            steps=INT(1) + [B("1001", 1001)],
            seed=[B("-1", -1), B("'0'", "0")],
            batch=INT(1),
            scale=[B("-1", -1.0), NAN],
            device=[B("'nodevice'", "nodevice")],
        ),
        ok_pred=lambda r: r["x"].shape == (3, 1, 8, 8) and r["nfe"] == 2,
    )
    T.sweep(
        "nn.controlnet",
        "diffu.nn.controlnet:exclude_frozen",
        "module names",
        dict(module=L(lambda: get("diffu.nn.guide:GuidedUNet")(unet())), names=("base",)),
        dict(
            module=[B("'net'", "net"), B("None", None)],
            names=[B("()", ()), B("['base']", ["base"]), B("'base'", "base")],
        ),
        ok_pred=lambda r: r is None,
    )


def gen0():
    return torch.Generator().manual_seed(0)
