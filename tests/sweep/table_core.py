"""Probes of the lower layers: diffu, checks, data, captions, schedules, sampling, samplers, ode, sde,
sde_samplers, flow, compare, gmm."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch

from .fixtures import GEN, IMG, PTS, TC, X2, F, Returns, X, fx, gen, randn, tmpdir
from .kit import (
    BATCH,
    BOOL,
    CALL,
    CHOICE,
    DEVICE,
    INF,
    INT,
    NAN,
    NONNEG,
    POS,
    TENSOR,
    TM,
    UNIT,
    B,
    Doc,
    Err,
    L,
    NanOrErr,
    get,
    nan_at,
    to_255,
)
from .kit import (
    GEN as BADGEN,
)

SCHED = F("sched")
DUMMY = F("dummy")
VP = F("vp")

# bad values of a generic state tensor (any (N, …) shape is valid, so no rank probes)
STATE = TENSOR(rank=False)


def first_batch(x):
    return x[:1]


ONE = B("batch 1 (broadcast)", TM(first_batch))


def fdiff(x, t):
    return -x, x


def build(T):
    # ------------------------------------------------------------------------------------------------------------
    # diffu
    # ------------------------------------------------------------------------------------------------------------
    T.sweep("diffu", "diffu:device", ok_pred=lambda d: isinstance(d, torch.device))

    # ------------------------------------------------------------------------------------------------------------
    # diffu.checks: the validation kernel itself
    # ------------------------------------------------------------------------------------------------------------
    M = "checks"
    c = "diffu.checks:"
    T.sweep(
        M,
        c + "check_int",
        "name value low",
        dict(name="steps", value=3, low=1),
        dict(value=[B("0", 0), B("2.5", 2.5), B("True", True), B("'3'", "3"), B("nan", NAN)]),
        alias=dict(value="steps"),
    )
    T.sweep(M, c + "check_steps", "steps T", dict(steps=3, T=10), dict(steps=INT(1, big=11)))
    T.sweep(M, c + "check_eta", "eta", dict(eta=0.5), dict(eta=UNIT()))
    T.sweep(
        M,
        c + "check_real",
        "name value low high",
        dict(name="scale", value=0.5, low=0.0, high=1.0),
        dict(value=[NAN, INF, B("2", 2.0), B("True", True), B("'1'", "1"), B("complex", 1j)]),
        alias=dict(value="scale"),
    )
    for fn in ("check_positive", "check_nonnegative"):
        T.sweep(
            M,
            c + fn,
            "name value",
            dict(name="sigma", value=0.5),
            dict(value=[NAN, INF, B("-1", -1.0), B("True", True), B("'1'", "1")]),
            alias=dict(value="sigma"),
        )
    T.sweep(
        M,
        c + "check_unit",
        "name value",
        dict(name="p", value=0.5),
        dict(value=[NAN, B("1.5", 1.5), B("True", True)]),
        alias=dict(value="p"),
    )
    T.sweep(
        M,
        c + "check_bool",
        "name value",
        dict(name="clip", value=True),
        dict(value=[B("1", 1), B("'yes'", "yes"), B("None", None)]),
        alias=dict(value="clip"),
    )
    T.sweep(
        M,
        c + "check_choice",
        "name value choices",
        dict(name="spacing", value="leading", choices=("leading",)),
        dict(value=[B("'bogus'", "bogus"), B("list", [1])]),
        alias=dict(value="spacing"),
    )
    T.sweep(
        M,
        c + "check_callable",
        "name value",
        dict(name="model", value=print),
        dict(value=[B("'model'", "model")]),
        alias=dict(value="model"),
    )
    T.sweep(M, c + "check_generator", "generator", dict(generator=GEN), dict(generator=BADGEN))
    T.sweep(M, c + "check_device", "name device", dict(name="device", device="cpu"), dict(device=DEVICE))
    T.sweep(
        M,
        c + "check_dtype",
        "name dtype",
        dict(name="dtype", dtype=torch.float32),
        dict(dtype=[B("int64", torch.int64), B("'float32'", "float32")]),
    )
    T.sweep(
        M,
        c + "check_tensor",
        "x",
        dict(x=X, ndim=4, floating=True, finite=True),
        dict(x=TENSOR(nan="err") + [B("'x'", "x")]),
    )
    T.sweep(M, c + "check_rank", "x ndim", dict(x=X, ndim=4), dict(x=[B("rank 3", TM(lambda x: x[0])), B("'x'", "x")]))
    T.sweep(
        M,
        c + "check_floating",
        "x",
        dict(x=X),
        dict(x=[B("int64", TM(lambda x: x.long())), B("bool", TM(lambda x: x > 0))]),
    )
    T.sweep(
        M, c + "check_finite", "x", dict(x=X), dict(x=[B("nan", TM(nan_at)), B("inf", TM(lambda x: nan_at(x, INF)))])
    )
    T.sweep(M, c + "check_batch", "x n", dict(x=X, n=2), dict(x=[BATCH(), B("0-d", L(lambda: torch.tensor(1.0)))]))
    T.sweep(
        M,
        c + "check_range",
        "x low high",
        dict(x=IMG, low=-1.0, high=1.0),
        dict(x=[B("0-255", TM(to_255)), B("nan", TM(nan_at))]),
    )
    T.sweep(
        M,
        c + "check_not_0_255",
        "x",
        dict(x=IMG),
        dict(x=[B("0-255", TM(to_255)), B("list", [0.0, 255.0])]),
    )
    T.sweep(
        M,
        c + "check_labels",
        "y num_classes",
        dict(y=L(lambda: torch.tensor([0, 2])), num_classes=3),
        dict(
            y=[
                B("float", L(lambda: torch.tensor([0.0, 2.0]))),
                B("out of range", L(lambda: torch.tensor([0, 3]))),
                B("negative", L(lambda: torch.tensor([-1, 0]))),
            ]
        ),
    )
    T.sweep(M, c + "check_shape", "x shape", dict(x=X, shape=(2, 1, 8, 8)), dict(x=[BATCH(), B("'x'", "x")]))
    T.sweep(
        M,
        c + "check_image",
        "x",
        dict(x=X),
        dict(x=[B("rank 3", TM(lambda x: x[0])), B("int64", TM(lambda x: x.long()))]),
    )
    T.sweep(
        M,
        c + "check_mask",
        "mask",
        dict(mask=F("mask")),
        dict(
            mask=[
                B("values 0.5", TM(lambda m: m * 0.5)),
                B("rank 2", TM(lambda m: m[0, 0])),
                B("int64", TM(lambda m: m.long())),
            ]
        ),
    )
    T.sweep(
        M,
        c + "mask_for",
        "mask x",
        dict(mask=F("mask"), x=X),
        dict(x=[B("other size", L(lambda: randn(2, 1, 6, 6)))]),
        alias=dict(x=("mask", "x")),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.data
    # ------------------------------------------------------------------------------------------------------------
    M = "data"
    d = "diffu.data:"
    T.sweep(
        M,
        d + "toy_2d",
        "name n",
        dict(name="moons", n=8, noise=0.05, generator=GEN),
        dict(name=CHOICE(), n=INT(1, none=True), noise=NONNEG(), generator=BADGEN),
    )
    T.sweep(
        M,
        d + "fashion_mnist",
        "split n",
        dict(split="test", n=4, classes=None),
        dict(
            split=CHOICE(),
            n=INT(1, big=10**6),
            classes=[B("[10]", [10]), B("[-1]", [-1]), B("[2.5]", [2.5]), B("'ab'", "ab")],
        ),
    )
    T.sweep(M, d + "digits", ok_pred=lambda r: r[0].shape[1:] == (1, 8, 8))
    T.sweep(
        M,
        d + "to_uint8",
        "x",
        dict(x=IMG),
        dict(
            x=[
                B("nan", TM(nan_at)),
                B("inf", TM(lambda x: nan_at(x, INF))),
                B("int64", TM(lambda x: to_255(x).long())),
                B("uint8", TM(lambda x: to_255(x).to(torch.uint8))),
                B("0-255 float", TM(to_255)),
                B("list", TM(lambda x: x.tolist())),
                B("'x'", "x"),
            ]
        ),
        ok_pred=lambda r: r.dtype == torch.uint8,
    )
    T.sweep(
        M,
        d + "from_uint8",
        "x",
        dict(x=L(lambda: torch.tensor([[0, 128, 255]], dtype=torch.uint8)), dtype=torch.float32),
        dict(
            x=[
                B("float", L(lambda: torch.tensor([0.0, 1.0]))),
                B("int16 300", L(lambda: torch.tensor([300], dtype=torch.int16))),
                B("int64 -1", L(lambda: torch.tensor([-1]))),
                B("list", [0, 255]),
            ],
            dtype=[B("int64", torch.int64), B("'float32'", "float32")],
        ),
    )

    def idx_dir():
        """A tiny fake Fashion-MNIST in the original idx format (10 classes × 3 images per split)."""
        root = Path(tmpdir("idx_"))
        for prefix in ("train", "t10k"):
            labels = np.repeat(np.arange(10, dtype=np.uint8), 3)
            images = np.zeros((30, 4, 4), dtype=np.uint8)
            for name, arr in ((f"{prefix}-images-idx3-ubyte.gz", images), (f"{prefix}-labels-idx1-ubyte.gz", labels)):
                head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
                with gzip.open(root / name, "wb") as f:
                    f.write(head + arr.tobytes())
        return root

    IDX = L(idx_dir)
    OUT = L(lambda: Path(tmpdir("out_")) / "subset.npz")
    T.sweep(
        M,
        d + "build_fashion_mnist_subset",
        "src out",
        dict(src=IDX, out=OUT, n_train_per_class=2, n_test_per_class=1, seed=0),
        dict(
            src=[
                B(
                    "missing dir",
                    "/nonexistent/sweep",
                    Err("src", "/nonexistent/sweep", types=(ValueError, TypeError, OSError)),
                )
            ],
            n_train_per_class=INT(1),
            n_test_per_class=INT(1),
            seed=[B("-1", -1), B("2.5", 2.5)],
        ),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.captions
    # ------------------------------------------------------------------------------------------------------------
    M = "captions"
    cp = "diffu.captions:"
    T.sweep(
        M,
        cp + "caption",
        "label",
        dict(label=9, attribute="dark", template=0, synonym=0),
        dict(
            label=[B("10", 10), B("-1", -1), B("2.5", 2.5), B("True", True), B("'3'", "3")],
            attribute=CHOICE(),
            template=[B("4", 4), B("-1", -1), B("2.5", 2.5), B("True", True)],
            synonym=[B("2.5", 2.5), B("'1'", "1")],
        ),
    )
    T.sweep(
        M,
        cp + "captions_for",
        "labels levels",
        dict(labels=L(lambda: torch.tensor([0, 9])), levels=L(lambda: torch.tensor([0, 2])), generator=GEN),
        dict(
            labels=[
                B("10", L(lambda: torch.tensor([0, 10]))),
                B("float", L(lambda: torch.tensor([0.0, 9.0]))),
                B("batch 3", L(lambda: torch.tensor([0, 1, 2])), arg=("labels", "levels")),
            ],
            levels=[
                B("3", L(lambda: torch.tensor([0, 3]))),
                B("-1", L(lambda: torch.tensor([0, -1]))),
                B("float", L(lambda: torch.tensor([0.5, 1.0]))),
            ],
            generator=BADGEN,
        ),
    )
    T.sweep(
        M,
        cp + "brightness_levels",
        "x y",
        dict(x=L(lambda: fx_img(6)), y=L(lambda: torch.tensor([0, 0, 0, 1, 1, 1]))),
        dict(
            x=[BATCH(arg=("x", "y")), B("int64", TM(lambda x: to_255(x).long())), B("nan", TM(nan_at), NanOrErr())],
            y=[
                B("float", L(lambda: torch.tensor([0.0, 0, 0, 1, 1, 1]))),
                B("batch 5", L(lambda: torch.tensor([0, 0, 0, 1, 1])), arg=("x", "y")),
            ],
        ),
    )
    T.sweep(M, cp + "vocabulary", ok_pred=lambda v: "photo" in v)

    # ------------------------------------------------------------------------------------------------------------
    # diffu.schedules
    # ------------------------------------------------------------------------------------------------------------
    M = "schedules"
    s = "diffu.schedules:"
    BETA = [NAN, B("0", 0.0), B("1.5", 1.5), B("-0.1", -0.1), B("True", True), B("'0.1'", "0.1")]
    for fn in ("linear_schedule", "scaled_linear_schedule", "sigmoid_schedule"):
        T.sweep(
            M,
            s + fn,
            "T",
            dict(T=10, beta_start=1e-4, beta_end=0.02),
            dict(T=INT(1, none=True), beta_start=BETA, beta_end=BETA),
        )
    T.sweep(
        M,
        s + "cosine_schedule",
        "T",
        dict(T=10, s=0.008, max_beta=0.999),
        dict(
            T=INT(1),
            s=[NAN, INF, B("-1", -1.0), B("True", True)],
            max_beta=[NAN, B("0", 0.0), B("1", 1.0), B("1.5", 1.5), B("True", True)],
        ),
    )
    T.sweep(M, s + "make_schedule", "name T", dict(name="cosine", T=10), dict(name=CHOICE(), T=INT(1)))
    T.sweep(
        M,
        s + "Schedule",
        "betas",
        dict(betas=L(lambda: torch.linspace(1e-4, 0.02, 10, dtype=torch.float64))),
        dict(
            betas=[
                B("nan entry", TM(nan_at)),
                B("0 entry", TM(lambda b: torch.cat([b[:1] * 0, b[1:]]))),
                B("2-D", TM(lambda b: b[None])),
                B("empty", L(lambda: torch.zeros(0))),
                B("'x'", "x"),
            ]
        ),
    )

    def meth(name):
        return L(lambda: getattr(fx("sched"), name))

    sn = ("diffu.schedules:Schedule",)
    T_BAD = [
        NAN,
        B("-1", -1),
        B("10 (= T)", 10),
        B("2.5", 2.5),
        B("'3'", "3"),
        B("batch 3", L(lambda: torch.tensor([1, 2, 3]))),
    ]
    T.sweep(
        M,
        meth("q_sample"),
        "x0 t noise",
        dict(x0=IMG, t=L(lambda: torch.tensor([3, 5])), noise=X),
        dict(
            x0=TENSOR(rank=False),
            t=T_BAD,
            noise=[ONE, B("shape", TM(lambda x: x[..., :4])), B("int64", TM(lambda x: x.long()))],
        ),
        names=sn,
        label="Schedule.q_sample",
    )
    T.sweep(
        M,
        meth("q_posterior"),
        "x0 x_t t",
        dict(x0=IMG, x_t=X, t=3),
        dict(x0=[ONE, B("int64", TM(lambda x: to_255(x).long()))], x_t=TENSOR(rank=False), t=T_BAD[:5]),
        names=sn,
        label="Schedule.q_posterior",
    )
    for conv, a in (
        ("eps_to_x0", "eps"),
        ("x0_to_eps", "x0"),
        ("v_to_eps", "v"),
        ("eps_to_v", "eps"),
        ("eps_to_score", "eps"),
        ("score_to_eps", "score"),
    ):
        T.sweep(
            M,
            meth(conv),
            f"{a} x_t t",
            {a: X2, "x_t": X, "t": 3},
            {a: [ONE, B("nan", TM(nan_at), NanOrErr())], "t": [B("10 (= T)", 10), B("2.5", 2.5)]},
            names=sn,
            label=f"Schedule.{conv}",
        )
    for conv in ("to_eps", "from_eps"):
        T.sweep(
            M,
            meth(conv),
            "output x_t t prediction" if conv == "to_eps" else "eps x_t t prediction",
            {"output" if conv == "to_eps" else "eps": X2, "x_t": X, "t": 3, "prediction": "v"},
            {"prediction": CHOICE()},
            names=sn,
            label=f"Schedule.{conv}",
        )
    T.sweep(M, meth("snr"), "t", dict(t=3), dict(t=T_BAD[:5]), names=sn, label="Schedule.snr")
    T.sweep(
        M,
        meth("alpha_bar_at"),
        "t",
        dict(t=-1, like=X),
        dict(t=[NAN, B("-2", -2), B("10", 10), B("2.5", 2.5)], like=[B("'x'", "x")]),
        names=sn,
        label="Schedule.alpha_bar_at",
    )
    T.sweep(
        M,
        meth("interp_alpha_bar"),
        "t",
        dict(t=2.5),
        dict(t=[NAN, B("-1.5", -1.5), B("9.5", 9.5), B("'1'", "1")]),
        names=sn,
        label="Schedule.interp_alpha_bar",
    )
    T.sweep(
        M,
        meth("check_t"),
        "t",
        dict(t=L(lambda: torch.tensor([0, 9]))),
        dict(t=[NAN, B("10", 10), B("'3'", "3")]),
        names=sn,
        label="Schedule.check_t",
    )
    T.sweep(
        M,
        meth("respace"),
        "timesteps",
        dict(timesteps=[0, 4, 9]),
        dict(timesteps=[B("[4, 4]", [4, 4]), B("[9, 0]", [9, 0]), B("[10]", [10]), B("[]", []), B("[2.5]", [2.5])]),
        names=sn,
        label="Schedule.respace",
    )
    T.sweep(
        M,
        meth("at"),
        "name t x",
        dict(name="alpha_bar", t=3, x=X),
        dict(name=[B("'bogus'", "bogus")], t=[B("10", 10)]),
        names=sn,
        label="Schedule.at",
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.sampling
    # ------------------------------------------------------------------------------------------------------------
    M = "sampling"
    sp = "diffu.sampling:"
    T.sweep(
        M,
        sp + "ddim_timesteps",
        "T steps",
        dict(T=10, steps=5, spacing="trailing", offset=0),
        dict(
            T=INT(1),
            steps=INT(1, big=11),
            spacing=CHOICE(),
            offset=[B("-1", -1), B("2.5", 2.5), B("True", True), B("10", 10)],
        ),
    )
    T.sweep(
        M,
        sp + "respaced",
        "schedule steps",
        dict(schedule=SCHED, steps=5, spacing="leading"),
        dict(schedule=[B("'linear'", "linear"), B("None", None)], steps=INT(1, big=11), spacing=CHOICE()),
    )
    T.sweep(
        M,
        sp + "initial_noise",
        "x_T",
        dict(x_T=(2, 1, 8, 8), generator=GEN),
        dict(
            x_T=[
                B("(2, 0, 8)", (2, 0, 8)),
                B("(2, -1)", (2, -1)),
                B("(2.5, 1)", (2.5, 1)),
                B("'x'", "x"),
                B("int64 tensor", L(lambda: torch.ones(2, 2, dtype=torch.long))),
            ],
            generator=BADGEN,
        ),
    )
    T.sweep(
        M,
        sp + "initial_noise",
        "x_T",
        dict(x_T=None, generator=GEN, shape=(2, 1, 8, 8)),
        dict(x_T=[B("wrong shape", L(lambda: randn(1, 1, 8, 8)))]),
        ok=False,
        label="initial_noise[shape]",
    )
    T.sweep(
        M,
        sp + "noise_like",
        "x generator",
        dict(x=X, generator=GEN),
        dict(x=[B("int64", TM(lambda x: x.long())), B("list", TM(lambda x: x.tolist()))], generator=BADGEN),
    )
    T.sweep(
        M,
        sp + "model_eps",
        "model x t schedule",
        dict(model=DUMMY, x=X, t=3, schedule=SCHED, model_kwargs=None),
        dict(
            model=CALL,
            x=[B("int64", TM(lambda x: x.long()))],
            t=[NAN, B("-1", -1), B("10", 10), B("2.5", 2.5)],
            schedule=[B("'linear'", "linear")],
            model_kwargs=[B("'y'", "y"), B("list", [1])],
        ),
        alias=dict(model_kwargs=("model_kwargs",)),
    )

    def cond(x, t, **kw):
        return torch.zeros_like(x)

    T.sweep(
        M,
        sp + "model_cond",
        "cond_fn x t",
        dict(cond_fn=cond, x=X, t=3, model_kwargs=None),
        dict(cond_fn=CALL + [B("wrong shape", lambda x, t: x[0])], model_kwargs=[B("'y'", "y")]),
    )
    st = get  # noqa: F841

    def state():
        return get("diffu.sampling:SamplerState")(0, 5, randn(2, 1, 8, 8), randn(2, 1, 8, 8))

    T.sweep(
        M,
        sp + "check_schedule",
        "schedule",
        dict(schedule=SCHED),
        dict(schedule=[B("'linear'", "linear"), B("an SDE", VP), B("None", None)]),
    )
    T.sweep(
        M,
        sp + "check_sampler_args",
        "model",
        dict(model=DUMMY, generator=GEN, progress=False, callback=None, model_kwargs=None, cond_fn=None),
        dict(
            model=CALL,
            generator=BADGEN,
            progress=BOOL,
            callback=[B("'cb'", "cb")],
            model_kwargs=[B("'y'", "y"), B("{1: 2}", {1: 2})],
            cond_fn=[B("'f'", "f")],
        ),
    )
    T.case(
        M, "sampling.SamplerState(ok)", "diffu.sampling:SamplerState", state, Doc(lambda s: s.t == 5, "a NamedTuple")
    )
    T.sweep(
        M,
        sp + "Trajectory",
        "",
        dict(every=1, max_items=None),
        dict(every=INT(1), max_items=[B("0", 0), B("-1", -1), B("2.5", 2.5), B("True", True)]),
        post=lambda tr: (tr(state()), tr)[1],
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.samplers
    # ------------------------------------------------------------------------------------------------------------
    M = "samplers"
    sa = "diffu.samplers:"
    XT = STATE + [B("(2, 0, 8)", (2, 0, 8)), B("'x'", "x")]
    COMMON = dict(
        model=CALL,
        x_T=XT,
        schedule=[B("'linear'", "linear")],
        generator=BADGEN,
        model_kwargs=[B("'y'", "y")],
        callback=[B("'cb'", "cb")],
    )
    base = dict(model=DUMMY, x_T=X, schedule=SCHED, generator=GEN, progress=False, model_kwargs=None, callback=None)
    T.sweep(
        M,
        sa + "ddpm",
        "model x_T schedule",
        {**base, "steps": 3, "spacing": "leading", "variance": "fixedsmall", "clip_x0": True, "cond_fn": None},
        {
            **COMMON,
            "steps": INT(1, big=11),
            "spacing": CHOICE(),
            "variance": CHOICE(),
            "clip_x0": BOOL,
            "cond_fn": [B("'f'", "f")],
        },
    )
    T.sweep(
        M,
        sa + "ddim",
        "model x_T schedule",
        {**base, "steps": 3, "eta": 0.5, "spacing": "leading", "timesteps": None, "clip_x0": False, "cond_fn": None},
        {
            **COMMON,
            "steps": INT(1, big=11),
            "eta": UNIT(),
            "spacing": CHOICE(),
            "clip_x0": BOOL,
            "timesteps": [B("[5, 5]", [5, 5]), B("[0, 9]", [0, 9]), B("[10]", [10]), B("[2.5]", [2.5]), B("[]", [])],
            "cond_fn": [B("'f'", "f")],
        },
    )
    T.sweep(
        M,
        sa + "ddim_invert",
        "model x0 schedule",
        dict(model=DUMMY, x0=IMG, schedule=SCHED, steps=3, spacing="leading", progress=False, callback=None),
        dict(
            model=CALL,
            x0=STATE,
            schedule=[B("'linear'", "linear")],
            steps=INT(1, big=11),
            spacing=CHOICE(),
            callback=[B("'cb'", "cb")],
        ),
    )
    T.sweep(
        M,
        sa + "ddpm_step",
        "schedule x_t t eps",
        dict(
            schedule=SCHED,
            x_t=X,
            t=5,
            eps=X2,
            variance="fixedlarge",
            clip_x0=True,
            noise=L(lambda: randn(2, 1, 8, 8, seed=3)),
        ),
        dict(
            schedule=[B("'linear'", "linear")],
            x_t=STATE,
            t=[NAN, B("-1", -1), B("10", 10), B("2.5", 2.5)],
            eps=[ONE, B("shape", TM(lambda x: x[..., :4])), B("int64", TM(lambda x: x.long()))],
            variance=CHOICE(),
            clip_x0=BOOL,
            noise=[ONE, B("shape", TM(lambda x: x[..., :4])), B("int64", TM(lambda x: x.long())), B("None", None)],
        ),
    )
    T.sweep(
        M,
        sa + "ddim_step",
        "schedule x_t t t_prev eps",
        dict(
            schedule=SCHED,
            x_t=X,
            t=5,
            t_prev=2,
            eps=X2,
            eta=0.5,
            clip_x0=False,
            noise=L(lambda: randn(2, 1, 8, 8, seed=3)),
        ),
        dict(
            x_t=STATE,
            t=[NAN, B("10", 10), B("2.5", 2.5)],
            t_prev=[NAN, B("-2", -2), B("5 (= t)", 5), B("2.5", 2.5)],
            eps=[ONE, B("int64", TM(lambda x: x.long()))],
            eta=UNIT(),
            clip_x0=BOOL,
            noise=[ONE, B("int64", TM(lambda x: x.long())), B("None", None)],
        ),
    )
    for fn in ("ddim", "ddpm"):
        for what, f in (
            ("wrong shape", lambda x: x[:, :, :4]),
            ("int64", lambda x: x.long()),
            ("(N,)", lambda x: x[:, 0, 0, 0]),
        ):
            T.case(
                M,
                f"samplers.{fn}(model returns {what})",
                sa + fn,
                (lambda fn=fn, f=f: get(sa + fn)(Returns(f), randn(2, 1, 8, 8), fx("sched"), steps=2, progress=False)),
                Err("model", "output"),
            )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.ode
    # ------------------------------------------------------------------------------------------------------------
    M = "ode"
    o = "diffu.ode:"
    T.sweep(
        M,
        o + "integrate",
        "f x ts",
        dict(f=fdiff, x=X, ts=[1.0, 0.5, 0.0], solver="heun", progress=False, callback=None),
        dict(
            f=CALL,
            x=TENSOR(rank=False),
            ts=[B("[1.0]", [1.0]), B("[1, nan]", [1.0, NAN]), B("[1, inf]", [1.0, INF]), B("'ab'", "ab"), B("5", 5)],
            solver=CHOICE(),
            callback=[B("'cb'", "cb")],
        ),
    )
    T.sweep(
        M,
        o + "solve_adaptive",
        "f x t0 t1",
        dict(f=lambda x, t: -x, x=X, t0=0.0, t1=1.0, rtol=1e-3, atol=1e-3),
        dict(
            f=CALL,
            x=TENSOR(rank=False),
            t0=[NAN, INF, B("'0'", "0")],
            t1=[NAN, INF, B("'1'", "1")],
            rtol=[NAN, B("-1", -1.0)],
            atol=[NAN, B("-1", -1.0)],
        ),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.sde
    # ------------------------------------------------------------------------------------------------------------
    M = "sde"
    sd = "diffu.sde:"
    for cls, a, b in (
        ("VPSDE", "beta_min", "beta_max"),
        ("SubVPSDE", "beta_min", "beta_max"),
        ("VESDE", "sigma_min", "sigma_max"),
    ):
        lo, hi = (0.1, 20.0) if cls != "VESDE" else (0.01, 50.0)
        T.sweep(M, sd + cls, "", {a: lo, b: hi}, {a: POS(), b: POS()})
    T.case(
        M, "sde.SDE(ok)", "diffu.sde:SDE", lambda: isinstance(fx("vp"), get("diffu.sde:SDE")), Doc(bool, "base class")
    )
    T.sweep(
        M,
        sd + "make_sde",
        "name",
        dict(name="ve", sigma_max=10.0),
        dict(name=CHOICE(), sigma_max=[NAN, B("-1", -1.0)]),
        alias=dict(name=("name", "sde")),
    )

    def vp_meth(name):
        return L(lambda: getattr(fx("vp"), name))

    vn = ("diffu.sde:VPSDE",)
    TB = [
        NAN,
        B("-0.5", -0.5),
        B("1.5", 1.5),
        B("'0.5'", "0.5"),
        B("batch 3", L(lambda: torch.tensor([0.1, 0.2, 0.3]))),
    ]
    T.sweep(
        M,
        vp_meth("q_sample"),
        "x0 t noise",
        dict(x0=IMG, t=TC, noise=X),
        dict(
            x0=TENSOR(rank=False),
            t=TB,
            noise=[ONE, B("shape", TM(lambda x: x[..., :4])), B("int64", TM(lambda x: x.long()))],
        ),
        names=vn,
        label="VPSDE.q_sample",
    )
    T.sweep(
        M,
        vp_meth("marginal"),
        "x0 t",
        dict(x0=IMG, t=TC),
        dict(x0=[B("int64", TM(lambda x: to_255(x).long()))], t=TB),
        names=vn,
        label="VPSDE.marginal",
    )
    T.sweep(
        M,
        vp_meth("prior_sample"),
        "shape",
        dict(shape=(2, 1, 8, 8), generator=GEN),
        dict(shape=[B("(2, -1)", (2, -1)), B("(2.5,)", (2.5,)), B("'x'", "x")], generator=BADGEN),
        names=vn,
        label="VPSDE.prior_sample",
    )
    T.sweep(
        M,
        vp_meth("prior_sample"),
        "shape",
        dict(shape=(2, 1, 8, 8), generator=GEN, device=None, dtype=None),
        dict(device=[B("'nodevice'", "nodevice")], dtype=[B("int64", torch.int64), B("'float'", "float")]),
        names=vn,
        label="VPSDE.prior_sample[device]",
    )
    T.sweep(
        M,
        vp_meth("prior_logp"),
        "z",
        dict(z=X),
        dict(z=[B("int64", TM(lambda x: x.long())), B("nan", TM(nan_at), NanOrErr())]),
        names=vn,
        label="VPSDE.prior_logp",
    )
    T.sweep(
        M, vp_meth("drift_diffusion"), "x t", dict(x=X, t=0.5), dict(t=TB[:4]), names=vn, label="VPSDE.drift_diffusion"
    )

    def from_discrete(model=None, schedule=None, sde=None):
        return get(sd + "FromDiscrete")(model or fx("dummy"), schedule or fx("sched"), sde or fx("vp"))

    T.sweep(
        M,
        sd + "FromDiscrete",
        "model schedule sde",
        dict(model=DUMMY, schedule=SCHED, sde=VP),
        dict(model=CALL, schedule=[B("'linear'", "linear")], sde=[B("'vp'", "vp")]),
        post=lambda m: m(randn(2, 1, 8, 8), torch.tensor([0.3, 0.7])),
    )
    T.sweep(
        M,
        L(lambda: from_discrete()),
        "x t",
        dict(x=X, t=TC),
        dict(
            x=[B("int64", TM(lambda x: x.long()))],
            t=[
                B("nan", L(lambda: torch.tensor([NAN, 0.5])), NanOrErr()),
                B("-0.5", L(lambda: torch.tensor([-0.5, 0.5]))),
                B("1.5", L(lambda: torch.tensor([1.5, 0.5]))),
                B("batch 3", L(lambda: torch.tensor([0.1, 0.2, 0.3]))),
            ],
        ),
        names=(sd + "FromDiscrete",),
        label="FromDiscrete.forward",
        ok=False,
    )
    T.sweep(
        M,
        sd + "dsm_loss",
        "model sde x0",
        dict(model=DUMMY, sde=VP, x0=IMG, generator=GEN, t_min=1e-3),
        dict(
            model=CALL,
            sde=[B("'vp'", "vp")],
            x0=TENSOR(rank=False),
            generator=BADGEN,
            t_min=[NAN, B("-1", -1.0), B("0", 0.0), B("1", 1.0), B("True", True)],
        ),
    )
    T.sweep(
        M,
        sd + "model_score",
        "model x t sde",
        dict(model=DUMMY, x=X, t=0.5, sde=VP),
        dict(
            model=CALL,
            x=[B("int64", TM(lambda x: x.long()))],
            t=[NAN, B("-0.5", -0.5), B("1.5", 1.5), B("'0.5'", "0.5")],
            sde=[B("'vp'", "vp")],
            model_kwargs=[B("'y'", "y")],
        ),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.sde_samplers
    # ------------------------------------------------------------------------------------------------------------
    M = "sde_samplers"
    ss = "diffu.sde_samplers:"
    X1 = STATE + [B("(2, 0)", (2, 0)), B("'x'", "x")]
    SB = dict(model=CALL, x_1=X1, sde=[B("'vp'", "vp")], generator=BADGEN, callback=[B("'cb'", "cb")])
    TMIN = [NAN, B("0", 0.0), B("1", 1.0), B("-1", -1.0), B("True", True)]
    sbase = dict(model=DUMMY, x_1=X, sde=VP, steps=3, t_min=1e-3, generator=GEN, progress=False, callback=None)
    T.sweep(
        M,
        ss + "em_step",
        "sde x t dt score noise",
        dict(sde=VP, x=X, t=0.5, dt=-0.1, score=X2, noise=L(lambda: randn(2, 1, 8, 8, seed=3))),
        dict(
            sde=[B("'vp'", "vp")],
            t=[NAN, B("1.5", 1.5)],
            dt=[NAN, B("0.1 (> 0)", 0.1), B("'x'", "x")],
            score=[ONE, B("nan", TM(nan_at), NanOrErr())],
            noise=[ONE, B("int64", TM(lambda x: x.long()))],
        ),
    )
    T.sweep(M, ss + "euler_maruyama", "model x_1 sde", sbase, {**SB, "steps": INT(1), "t_min": TMIN})
    T.sweep(
        M,
        ss + "predictor_corrector",
        "model x_1 sde",
        {**sbase, "snr": 0.16, "corrector_steps": 1},
        {**SB, "steps": INT(1), "t_min": TMIN, "snr": POS(), "corrector_steps": INT(0)},
    )
    T.sweep(
        M,
        ss + "langevin_step",
        "sde x t score noise snr",
        dict(sde=VP, x=X, t=0.5, score=X2, noise=L(lambda: randn(2, 1, 8, 8, seed=3)), snr=0.16, alpha=1.0),
        dict(
            snr=[NAN, B("-1", -1.0), B("0", 0.0)],
            alpha=[NAN, B("-1", -1.0), B("0", 0.0)],
            score=[ONE, B("shape", TM(lambda x: x[..., :4]))],
            noise=[ONE],
        ),
    )
    T.sweep(
        M,
        ss + "pf_ode",
        "model x_1 sde",
        {**sbase, "solver": "euler", "rtol": 1e-3, "atol": 1e-3, "return_nfe": False},
        {**SB, "steps": INT(1), "t_min": TMIN, "solver": CHOICE(), "rtol": [NAN, B("-1", -1.0)], "return_nfe": BOOL},
    )
    T.sweep(
        M,
        ss + "karras_timesteps",
        "schedule steps",
        dict(schedule=SCHED, steps=4, rho=7.0),
        dict(schedule=[B("'linear'", "linear")], steps=INT(1, big=11), rho=POS()),
    )
    T.sweep(
        M,
        ss + "pf_ode_sigma",
        "model x_T schedule",
        dict(
            model=DUMMY, x_T=X, schedule=SCHED, steps=3, solver="heun", spacing="karras", generator=GEN, progress=False
        ),
        dict(
            model=CALL,
            x_T=XT,
            schedule=[B("'linear'", "linear")],
            steps=INT(1, big=11),
            solver=CHOICE(),
            spacing=CHOICE(),
            generator=BADGEN,
        ),
    )
    T.sweep(
        M,
        ss + "log_likelihood",
        "model x sde",
        dict(
            model=F("mlp"), x=PTS, sde=VP, t_min=1e-3, trace="hutchinson", probes=1, generator=GEN, rtol=1e-2, atol=1e-2
        ),
        dict(
            model=CALL,
            x=TENSOR(rank=False, ints=True),
            sde=[B("'vp'", "vp")],
            t_min=TMIN,
            trace=CHOICE(),
            probes=INT(1),
            generator=BADGEN,
            rtol=[NAN, B("-1", -1.0)],
        ),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.flow
    # ------------------------------------------------------------------------------------------------------------
    M = "flow"
    fl = "diffu.flow:"
    SIG = [NAN, B("-0.1", -0.1), B("1", 1.0), B("True", True), B("'0'", "0")]
    TF = [
        NAN,
        B("-0.1", -0.1),
        B("1.5", 1.5),
        B("'0.5'", "0.5"),
        B("batch 3", L(lambda: torch.tensor([0.1, 0.2, 0.3]))),
    ]
    T.sweep(M, fl + "flow_coefficients", "t x", dict(t=TC, x=X, sigma_min=0.0), dict(t=TF, sigma_min=SIG))
    T.sweep(
        M,
        fl + "flow_path",
        "x0 noise t",
        dict(x0=IMG, noise=X, t=TC, sigma_min=0.0),
        dict(x0=TENSOR(rank=False), noise=[ONE, B("int64", TM(lambda x: x.long()))], t=TF, sigma_min=SIG),
    )
    T.sweep(
        M,
        fl + "target_velocity",
        "x0 noise",
        dict(x0=IMG, noise=X, sigma_min=0.0),
        dict(
            x0=TENSOR(rank=False),
            noise=[ONE, B("shape", TM(lambda x: x[..., :4])), B("int64", TM(lambda x: x.long()))],
            sigma_min=SIG,
        ),
    )
    for conv, a in (
        ("velocity_to_x0", "v"),
        ("velocity_to_eps", "v"),
        ("velocity_to_score", "v"),
        ("eps_to_velocity", "eps"),
    ):
        T.sweep(
            M,
            fl + conv,
            f"{a} x_t t",
            {a: X2, "x_t": X, "t": TC, "sigma_min": 0.0},
            {
                a: [ONE, B("shape", TM(lambda x: x[..., :4])), B("nan", TM(nan_at), NanOrErr())],
                "x_t": [B("int64", TM(lambda x: x.long()))],
                "t": TF[:4],
                "sigma_min": SIG[:3],
            },
        )
    T.sweep(
        M,
        fl + "flow_matching_loss",
        "model x0",
        dict(model=F("velocity"), x0=IMG, generator=GEN, y=None, p_uncond=0.0, sigma_min=0.0, noise=None),
        dict(
            model=CALL,
            x0=TENSOR(rank=False),
            generator=BADGEN,
            p_uncond=UNIT(),
            sigma_min=SIG,
            noise=[B("batch 1", L(lambda: randn(1, 1, 8, 8))), B("int64", L(lambda: randn(2, 1, 8, 8).long()))],
        ),
    )
    VEL = F("velocity")
    fbase = dict(model=VEL, x_1=X, steps=3, generator=GEN, progress=False)
    FB = dict(model=CALL, x_1=X1, steps=INT(1), generator=BADGEN)
    T.sweep(
        M,
        fl + "sample",
        "model x_1",
        {**fbase, "solver": "heun", "sigma_min": 0.0, "callback": None},
        {**FB, "solver": CHOICE(), "sigma_min": SIG, "callback": [B("'cb'", "cb")]},
    )
    T.sweep(M, fl + "euler", "model x_1", fbase, FB)
    T.sweep(M, fl + "heun", "model x_1", fbase, FB)
    T.sweep(M, fl + "reflow_pairs", "model x_1", {**fbase, "solver": "euler"}, {**FB, "solver": CHOICE()})
    T.sweep(
        M,
        fl + "FlowAsEps",
        "model schedule",
        dict(model=VEL, schedule=SCHED),
        dict(model=[B("eps model", DUMMY), B("'m'", "m")], schedule=[B("'linear'", "linear")]),
        post=lambda m: m(randn(2, 1, 8, 8), torch.tensor([3.0, 5.0])),
    )
    T.sweep(
        M,
        L(lambda: get(fl + "FlowAsEps")(fx("velocity"), fx("sched"))),
        "x t",
        dict(x=X, t=L(lambda: torch.tensor([3.0, 5.0]))),
        dict(
            t=[
                NAN,
                B("-2", L(lambda: torch.tensor([-2.0, 1.0]))),
                B("10", L(lambda: torch.tensor([10.0, 1.0]))),
                B("batch 3", L(lambda: torch.tensor([1.0, 2.0, 3.0]))),
            ],
            x=[B("int64", TM(lambda x: x.long()))],
        ),
        names=(fl + "FlowAsEps",),
        label="FlowAsEps.forward",
        ok=False,
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.compare
    # ------------------------------------------------------------------------------------------------------------
    M = "compare"
    T.sweep(
        M,
        "diffu.compare:sample_at_nfe",
        "name nfe x_T",
        dict(name="pc", nfe=4, x_T=X, eps_model=DUMMY, schedule=SCHED, spacing="linspace", generator=GEN),
        dict(
            name=CHOICE(),
            nfe=INT(2),
            x_T=STATE,
            eps_model=CALL,
            schedule=[B("'linear'", "linear")],
            spacing=CHOICE(),
            generator=BADGEN,
        ),
    )
    T.sweep(
        M,
        "diffu.compare:sample_at_nfe",
        "name nfe x_T",
        dict(name="fm-heun", nfe=4, x_T=X, velocity_model=VEL),
        dict(velocity_model=[B("None", None), B("'m'", "m")]),
        label="sample_at_nfe[fm]",
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.gmm
    # ------------------------------------------------------------------------------------------------------------
    M = "gmm"
    g = "diffu.gmm:"
    W = L(lambda: torch.ones(3))
    MU = L(lambda: torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    T.sweep(
        M,
        g + "GaussianMixture",
        "weights means covs",
        dict(weights=W, means=MU, covs=0.2),
        dict(
            weights=[
                B("nan", TM(nan_at)),
                B("inf", TM(lambda w: nan_at(w, INF))),
                B("negative", TM(lambda w: -w)),
                B("length 2", TM(lambda w: w[:2])),
            ],
            means=[B("rank 1", TM(lambda m: m[0])), B("nan", TM(nan_at)), B("inf", TM(lambda m: nan_at(m, INF)))],
            covs=[
                NAN,
                INF,
                B("-0.2", -0.2),
                B("0", 0.0),
                B("indefinite", L(lambda: -torch.eye(2).expand(3, 2, 2))),
                B("nan matrix", L(lambda: nan_at(torch.eye(2).expand(3, 2, 2).clone()))),
                B("'x'", "x"),
            ],
        ),
    )

    def gm(name):
        return L(lambda: getattr(fx("gmm"), name))

    gn = (g + "GaussianMixture",)
    T.sweep(
        M,
        gm("sample"),
        "n",
        dict(n=4, generator=GEN),
        dict(n=INT(1), generator=BADGEN),
        names=gn,
        label="GaussianMixture.sample",
    )
    for meth in ("log_prob", "score", "component_log_posterior"):
        T.sweep(
            M,
            gm(meth),
            "x",
            dict(x=PTS),
            dict(
                x=[B("D=3", L(lambda: randn(4, 3))), B("rank 1", TM(lambda x: x[0])), B("nan", TM(nan_at), NanOrErr())]
            ),
            names=gn,
            label=f"GaussianMixture.{meth}",
        )
    T.sweep(
        M,
        gm("posterior_mean"),
        "x a b",
        dict(x=PTS, a=0.8, b=0.6),
        dict(x=[B("D=3", L(lambda: randn(4, 3)))], a=[NAN, INF], b=[NAN, INF, B("-1", -1.0)]),
        names=gn,
        label="GaussianMixture.posterior_mean",
    )
    T.sweep(
        M,
        gm("noised"),
        "a b",
        dict(a=0.8, b=0.6),
        dict(a=[NAN, INF], b=[NAN, B("-1", -1.0)]),
        names=gn,
        label="GaussianMixture.noised",
    )
    T.sweep(
        M,
        L(lambda: get(g + "GaussianMixture").ring),
        "k",
        dict(k=3, radius=2.0, std=0.2),
        dict(k=INT(1), radius=[NAN, INF], std=[NAN, B("0", 0.0), B("-1", -1.0)]),
        names=gn,
        label="GaussianMixture.ring",
    )
    T.sweep(
        M,
        g + "ExactModel",
        "gmm",
        dict(gmm=F("gmm"), schedule=SCHED),
        dict(gmm=[B("'g'", "g")], schedule=[B("'linear'", "linear")]),
        post=lambda m: m(randn(4, 2), torch.tensor(3.0)),
    )
    T.sweep(
        M,
        g + "ExactModel",
        "gmm",
        dict(gmm=F("gmm"), flow_sigma_min=0.0),
        dict(flow_sigma_min=[NAN, B("-0.1", -0.1), B("1.5", 1.5), B("True", True)]),
        post=lambda m: m(randn(4, 2), torch.tensor(0.5)),
        label="ExactModel[flow]",
    )
    T.sweep(
        M,
        L(lambda: get(g + "ExactModel")(fx("gmm"), schedule=fx("sched"))),
        "x t",
        dict(x=PTS, t=L(lambda: torch.tensor(3.0))),
        dict(
            x=[B("D=3", L(lambda: randn(4, 3)))],
            t=[
                B("nan", L(lambda: torch.tensor(NAN))),
                B("-2", L(lambda: torch.tensor(-2.0))),
                B("batch 3", L(lambda: torch.tensor([1.0, 2.0, 3.0]))),
            ],
        ),
        names=(g + "ExactModel",),
        label="ExactModel.forward",
        ok=False,
    )
    T.sweep(
        M,
        g + "ExactClassifier",
        "gmm schedule",
        dict(gmm=F("gmm"), schedule=SCHED),
        dict(gmm=[B("'g'", "g")], schedule=[B("'linear'", "linear")]),
        post=lambda m: m(randn(4, 2), torch.tensor(3.0)),
    )
    T.sweep(
        M,
        L(lambda: get(g + "ExactClassifier")(fx("gmm"), fx("sched"))),
        "x t",
        dict(x=PTS, t=L(lambda: torch.tensor(3.0))),
        dict(
            x=[B("D=3", L(lambda: randn(4, 3)))],
            t=[B("-2", L(lambda: torch.tensor(-2.0))), B("nan", L(lambda: torch.tensor(NAN)))],
        ),
        names=(g + "ExactClassifier",),
        label="ExactClassifier.forward",
        ok=False,
    )


def fx_img(n):
    return torch.rand(n, 1, 4, 4, generator=gen(7)) * 2 - 1


__all__ = ["build", "math"]
