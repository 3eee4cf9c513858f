"""Probes of diffu.inverse: operators, blur, masks, Fourier operators, classical solvers and every diffusion solver."""

from __future__ import annotations

import torch

from .fixtures import GEN, IMG, IMG2, F, X, fx, gen, rand_img, randn
from .kit import (
    BATCH,
    BOOL,
    CALL,
    CHOICE,
    DEVICE,
    IMAGE,
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

OP = "diffu.inverse.operators:"
BL = "diffu.inverse.blur:"
CL = "diffu.inverse.classical:"
FO = "diffu.inverse.fourier:"
MK = "diffu.inverse.masks:"
SCHED = F("sched")
DUMMY = F("dummy")

# the measurement y of an inverse problem: NaN must raise (issue 18: "raise, preferred for measurements")
MEAS = IMAGE(nan="err")
MEAS_NC = TENSOR(nan="err")  # a measurement whose channels are not an image's (e.g. MRI's, a sinogram's)
NOT_OP = [B("'op'", "op"), B("None", None)]


def m(fixture, name):
    return L(lambda: getattr(fx(fixture), name))


def y_of(fixture, x=None):
    """The clean measurement op.A(x) of the (2, 1, 8, 8) test images."""
    return L(lambda: fx(fixture).A(rand_img(2, 1, 8, 8) if x is None else x()))


def build(T):
    # ------------------------------------------------------------------------------------------------------------
    # operators
    # ------------------------------------------------------------------------------------------------------------
    M = "inverse.operators"
    for fixture, cls in (
        ("identity", "Identity"),
        ("block", "BlockAverage"),
        ("bicubic", "Bicubic"),
        ("inpaint", "Inpainting"),
        ("blur", "Blur"),
        ("blur_padded", "Blur"),
        ("turbulence", "Turbulence"),
    ):
        mod = "diffu.inverse.blur:" if cls in ("Blur", "Turbulence") else OP
        Mm = "inverse.blur" if cls in ("Blur", "Turbulence") else M
        lab = f"{cls}{'[padded]' if fixture == 'blur_padded' else ''}"
        T.sweep(
            Mm,
            m(fixture, "A"),
            "x",
            dict(x=IMG),
            dict(x=IMAGE(extra=[B("'x'", "x")]) + [B("rank 5", TM(lambda x: x[None]))]),
            names=(mod + cls,),
            label=f"{lab}.A",
        )
        T.sweep(
            Mm,
            m(fixture, "AT"),
            "y",
            dict(y=y_of(fixture)),
            dict(
                y=[
                    B("int64", TM(lambda y: to_255(y).long())),
                    B("rank 3", TM(lambda y: y[0])),
                    B("nan", TM(nan_at), NanOrErr()),
                    B("list", TM(lambda y: y.tolist())),
                ]
            ),
            names=(mod + cls,),
            label=f"{lab}.AT",
        )
        if fixture not in ("turbulence", "blur_padded"):
            T.sweep(
                Mm,
                m(fixture, "pinv"),
                "y",
                dict(y=y_of(fixture)),
                dict(
                    y=[
                        B("int64", TM(lambda y: to_255(y).long())),
                        B("rank 3", TM(lambda y: y[0])),
                        B("nan", TM(nan_at), NanOrErr()),
                    ]
                ),
                names=(mod + cls,),
                label=f"{lab}.pinv",
            )
        if fixture in ("identity", "block", "bicubic", "inpaint", "blur"):
            T.sweep(
                Mm,
                m(fixture, "Vt"),
                "x",
                dict(x=IMG),
                dict(x=[B("int64", TM(lambda x: to_255(x).long())), B("rank 3", TM(lambda x: x[0]))]),
                names=(mod + cls,),
                label=f"{lab}.Vt",
            )
            T.sweep(
                Mm,
                m(fixture, "singulars"),
                "like",
                dict(like=IMG),
                dict(like=[B("rank 3", TM(lambda x: x[0])), B("'x'", "x")]),
                names=(mod + cls,),
                label=f"{lab}.singulars",
            )
            T.sweep(
                Mm,
                m(fixture, "V"),
                "z shape",
                dict(z=L(lambda fixture=fixture: fx(fixture).Vt(rand_img(2, 1, 8, 8))), shape=(2, 1, 8, 8)),
                dict(
                    z=[B("length 10", L(lambda: randn(2, 10)))], shape=[B("(2, 1, 6, 6)", (2, 1, 6, 6)), B("'x'", "x")]
                ),
                names=(mod + cls,),
                label=f"{lab}.V",
            )
    for cls, good in (("BlockAverage", 2), ("Bicubic", 2)):
        T.sweep(
            M,
            OP + cls,
            "factor",
            dict(factor=good),
            dict(factor=INT(1) + [B("3 (not dividing 8)", 3)]),
            post=lambda op: op.A(rand_img(2, 1, 8, 8)),
        )
    T.sweep(M, OP + "Identity", "", {}, {}, post=lambda op: op.A(rand_img(2, 1, 8, 8)), label="Identity")
    T.sweep(
        M,
        OP + "Gaussian",
        "sigma",
        dict(sigma=0.1),
        dict(sigma=NONNEG()),
        post=lambda n: n(rand_img(2, 1, 8, 8), gen(0)),
    )
    T.sweep(
        M,
        L(lambda: get(OP + "Gaussian")(0.1)),
        "y generator",
        dict(y=IMG, generator=GEN),
        dict(
            y=[B("int64", TM(lambda y: to_255(y).long())), B("nan", TM(nan_at)), B("list", TM(lambda y: y.tolist()))],
            generator=BADGEN,
        ),
        names=(OP + "Gaussian",),
        label="Gaussian.__call__",
    )
    T.sweep(
        M, OP + "Poisson", "rate", dict(rate=50.0), dict(rate=POS()), post=lambda n: n(rand_img(2, 1, 8, 8), gen(0))
    )
    T.sweep(
        M,
        L(lambda: get(OP + "Poisson")(50.0)),
        "y generator",
        dict(y=IMG, generator=GEN),
        dict(
            y=[
                B("int64", TM(lambda y: to_255(y).long())),
                B("nan", TM(nan_at)),
                B("inf", TM(lambda y: nan_at(y, INF))),
                B("below -1", TM(lambda y: y - 3)),
                B("list", TM(lambda y: y.tolist())),
            ],
            generator=BADGEN,
        ),
        names=(OP + "Poisson",),
        label="Poisson.__call__",
    )
    T.sweep(
        M,
        OP + "Inpainting",
        "mask",
        dict(mask=F("mask")),
        dict(
            mask=[
                B("values 0.5", TM(lambda m: m * 0.5)),
                B("nan", TM(nan_at)),
                B("rank 2", TM(lambda m: m[0, 0])),
                B("int64", TM(lambda m: m.long())),
                B("'m'", "m"),
            ]
        ),
        post=lambda op: op.A(rand_img(2, 1, 8, 8)),
    )
    T.sweep(
        M,
        m("inpaint", "A"),
        "x",
        dict(x=IMG),
        dict(x=[B("size 6", L(lambda: rand_img(2, 1, 6, 6)))]),
        names=(OP + "Inpainting",),
        label="Inpainting.A[size]",
        ok=False,
        alias=dict(x=("x", "mask")),
    )
    for base, fixture in (("LinearOperator", "blur"), ("Operator", "pr"), ("SeparableOperator", "block")):
        T.case(
            M,
            f"inverse.operators.{base}(ok)",
            OP + base,
            (lambda base=base, fixture=fixture: isinstance(fx(fixture), get(OP + base))),
            Doc(bool, "the operator base classes"),
        )
    T.case(
        M,
        "inverse.operators.LinearOperator().pinv (no pinv)",
        OP + "LinearOperator",
        lambda: get(OP + "LinearOperator")().pinv(randn(1, 1, 4, 4)),
        Err("pinv", "tikhonov", types=(NotImplementedError,)),
    )
    T.sweep(
        M,
        OP + "adjoint_by_autograd",
        "A y in_shape",
        dict(A=L(lambda: fx("block").A), y=L(lambda: randn(2, 1, 4, 4)), in_shape=(2, 1, 8, 8)),
        dict(
            A=CALL,
            y=[
                B("shape", L(lambda: randn(2, 1, 3, 3))),
                B("int64", L(lambda: torch.ones(2, 1, 4, 4, dtype=torch.long))),
            ],
            in_shape=[B("(2, 1, 6, 6)", (2, 1, 6, 6)), B("'x'", "x"), B("(2, -1)", (2, -1))],
        ),
    )
    T.sweep(M, OP + "bicubic_kernel", "factor", dict(factor=2), dict(factor=INT(1)))
    T.sweep(
        M,
        OP + "svd_1d",
        "kind param n dtype device",
        dict(kind="block", param=2, n=8, dtype=torch.float32, device=torch.device("cpu")),
        dict(
            kind=CHOICE(),
            param=[B("3 (not dividing 8)", 3), B("0", 0), B("2.5", 2.5)],
            n=[B("0", 0), B("-1", -1), B("2.5", 2.5)],
            dtype=[B("int64", torch.int64), B("'float'", "float")],
            device=[B("'nodevice'", "nodevice")],
        ),
    )
    T.sweep(
        M, OP + "uniform_float", "generator", dict(generator=GEN), dict(generator=BADGEN), ok_pred=lambda u: 0 <= u < 1
    )

    # ------------------------------------------------------------------------------------------------------------
    # blur
    # ------------------------------------------------------------------------------------------------------------
    M = "inverse.blur"
    SIZE = [B("2", 2), B("0", 0), B("-1", -1), B("2.5", 2.5), B("True", True), B("'3'", "3")]
    T.sweep(
        M,
        BL + "gaussian_kernel",
        "size std",
        dict(size=3, std=1.0, device=None, dtype=torch.float32),
        dict(size=SIZE, std=POS(), device=DEVICE, dtype=[B("int64", torch.int64), B("'float'", "float")]),
    )
    T.sweep(
        M,
        BL + "motion_kernel",
        "size",
        dict(size=5, intensity=0.5, generator=GEN, device=None, dtype=torch.float32),
        dict(
            size=SIZE[:1] + SIZE[2:],
            intensity=[NAN, INF, B("-1", -1.0), B("True", True)],
            generator=BADGEN,
            device=DEVICE,
            dtype=[B("int64", torch.int64)],
        ),
    )
    T.sweep(
        M,
        BL + "random_kernels",
        "n size",
        dict(n=3, size=5, generator=GEN, motion_fraction=0.5),
        dict(
            n=INT(1),
            size=SIZE,
            generator=BADGEN,
            motion_fraction=UNIT(),
            device=DEVICE,
            dtype=[B("int64", torch.int64)],
        ),
    )
    K3 = L(lambda: get(BL + "gaussian_kernel")(3, 1.0))
    T.sweep(
        M,
        BL + "Blur",
        "kernel",
        dict(kernel=K3, boundary="circular"),
        dict(
            kernel=[
                B("rank 1", TM(lambda k: k[0])),
                B("2x2", L(lambda: torch.ones(2, 2) / 4)),
                B("int64", TM(lambda k: k.long())),
                B("nan", TM(nan_at)),
                B("inf", TM(lambda k: nan_at(k, INF))),
                B("'k'", "k"),
            ],
            boundary=CHOICE(),
        ),
        post=lambda op: op.A(rand_img(2, 1, 8, 8)),
    )
    T.sweep(
        M,
        m("blur", "transfer"),
        "like",
        dict(like=IMG),
        dict(like=[B("rank 3", TM(lambda x: x[0])), B("size 2", L(lambda: rand_img(1, 1, 2, 2)))]),
        names=(BL + "Blur",),
        label="Blur.transfer",
    )
    T.sweep(
        M,
        m("blur", "A"),
        "x",
        dict(x=IMG),
        dict(x=[B("size 2 (kernel larger)", L(lambda: rand_img(1, 1, 2, 2)))]),
        names=(BL + "Blur",),
        label="Blur.A[size]",
        ok=False,
    )
    T.sweep(
        M,
        BL + "Turbulence",
        "",
        dict(strength=1.0, correlation=4.0, sigmas=(0.5, 1.0), seed=0),
        dict(
            strength=NONNEG(),
            correlation=NONNEG(),
            sigmas=[B("()", ()), B("(-1,)", (-1.0,)), B("(nan,)", (NAN,)), B("'x'", "x")],
            seed=[B("-1", -1), B("2.5", 2.5), B("'0'", "0")],
        ),
        post=lambda op: op.A(rand_img(2, 1, 8, 8)),
    )
    T.sweep(
        M,
        m("turbulence", "fields"),
        "like",
        dict(like=IMG),
        dict(like=[B("rank 1", L(lambda: torch.zeros(8)))]),
        names=(BL + "Turbulence",),
        label="Turbulence.fields",
    )

    # ------------------------------------------------------------------------------------------------------------
    # masks
    # ------------------------------------------------------------------------------------------------------------
    M = "inverse.masks"
    HW = dict(height=INT(1), width=INT(1))
    T.sweep(
        M,
        MK + "box_mask",
        "height width",
        dict(height=8, width=8, fraction=0.5, generator=GEN, device=None),
        dict(**HW, fraction=UNIT(), generator=BADGEN, device=DEVICE),
    )
    T.sweep(
        M,
        MK + "random_mask",
        "height width",
        dict(height=8, width=8, missing=0.5, generator=GEN, device=None),
        dict(**HW, missing=UNIT(), generator=BADGEN, device=DEVICE),
    )
    T.sweep(
        M,
        MK + "brush_mask",
        "height width",
        dict(height=8, width=8, strokes=2, generator=GEN, device=None),
        dict(**HW, strokes=INT(0), generator=BADGEN, device=DEVICE),
    )
    T.sweep(
        M,
        MK + "cartesian_mask",
        "height width",
        dict(height=8, width=8, acceleration=2.0, center_fraction=0.25, generator=GEN, device=None),
        dict(
            **HW,
            acceleration=[NAN, INF, B("0.5", 0.5), B("True", True), B("'2'", "2")],
            center_fraction=UNIT(),
            generator=BADGEN,
            device=DEVICE,
        ),
    )

    # ------------------------------------------------------------------------------------------------------------
    # fourier
    # ------------------------------------------------------------------------------------------------------------
    M = "inverse.fourier"
    for fn in ("fft2c", "ifft2c"):
        arg = "x" if fn == "fft2c" else "k"
        T.sweep(
            M,
            FO + fn,
            arg,
            {arg: IMG},
            {
                arg: [
                    B("rank 1", L(lambda: torch.zeros(8))),
                    B("int64", TM(lambda x: to_255(x).long())),
                    B("list", TM(lambda x: x.tolist())),
                ]
            },
        )
    T.sweep(
        M,
        FO + "MRI",
        "mask",
        dict(mask=F("mri_mask")),
        dict(mask=[B("values 0.5", TM(lambda m: m * 0.5)), B("rank 2", TM(lambda m: m[0, 0])), B("'m'", "m")]),
        post=lambda op: op.A(rand_img(2, 1, 8, 8)),
    )
    T.sweep(
        M,
        m("mri", "A"),
        "x",
        dict(x=IMG),
        dict(x=IMAGE() + [B("size 6", L(lambda: rand_img(2, 1, 6, 6)))]),
        names=(FO + "MRI",),
        label="MRI.A",
        alias=dict(x=("x", "mask")),
    )
    for meth in ("AT", "pinv"):
        T.sweep(
            M,
            m("mri", meth),
            "y",
            dict(y=y_of("mri")),
            dict(
                y=[
                    B("rank 4 (real image)", L(lambda: rand_img(2, 1, 8, 8))),
                    B("nan", TM(nan_at), NanOrErr()),
                    B("int64", TM(lambda y: y.long())),
                ]
            ),
            names=(FO + "MRI",),
            label=f"MRI.{meth}",
        )
    T.sweep(
        M,
        FO + "PhaseRetrieval",
        "oversample",
        dict(oversample=2.0),
        dict(oversample=[NAN, INF, B("0.5", 0.5), B("True", True), B("'2'", "2")]),
        post=lambda op: op.A(rand_img(2, 1, 8, 8)),
    )
    T.sweep(
        M, m("pr", "A"), "x", dict(x=IMG), dict(x=IMAGE()), names=(FO + "PhaseRetrieval",), label="PhaseRetrieval.A"
    )
    for meth in ("padding", "image_size"):
        T.sweep(
            M,
            m("pr", meth),
            "height width",
            dict(height=8 if meth == "padding" else 16, width=8 if meth == "padding" else 16),
            dict(height=[B("-1", -1), B("2.5", 2.5), B("0", 0)], width=[B("'8'", "8")]),
            names=(FO + "PhaseRetrieval",),
            label=f"PhaseRetrieval.{meth}",
        )
    T.sweep(
        M,
        m("pr", "support"),
        "like",
        dict(like=L(lambda: randn(2, 1, 16, 16))),
        dict(like=[B("size 17", L(lambda: randn(2, 1, 17, 17)))]),
        names=(FO + "PhaseRetrieval",),
        label="PhaseRetrieval.support",
    )
    T.sweep(
        M,
        FO + "ShiftedPhaseRetrieval",
        "oversample",
        dict(oversample=2.0),
        dict(oversample=[NAN, B("0.5", 0.5), B("True", True)]),
        post=lambda op: op.A(rand_img(2, 1, 8, 8)),
    )
    T.sweep(
        M,
        m("spr", "A"),
        "x",
        dict(x=IMG),
        dict(x=IMAGE()),
        names=(FO + "ShiftedPhaseRetrieval",),
        label="ShiftedPhaseRetrieval.A",
    )
    T.sweep(
        M,
        FO + "Radon",
        "angles",
        dict(angles=4),
        dict(
            angles=[
                B("0", 0),
                B("-1", -1),
                B("()", ()),
                B("(nan,)", (NAN,)),
                B("'x'", "x"),
                B("2.5", 2.5),
                B("True", True),
            ]
        ),
        post=lambda op: op.A(rand_img(2, 1, 8, 8)),
    )
    T.sweep(
        M,
        m("radon", "A"),
        "x",
        dict(x=IMG),
        dict(x=IMAGE() + [B("8x6", L(lambda: rand_img(2, 1, 8, 6)))]),
        names=(FO + "Radon",),
        label="Radon.A",
    )
    T.sweep(
        M,
        m("radon", "AT"),
        "y",
        dict(y=y_of("radon")),
        dict(
            y=[
                B("5 angles", L(lambda: randn(2, 1, 5, 8))),
                B("rank 3", TM(lambda y: y[0])),
                B("int64", TM(lambda y: y.long())),
            ]
        ),
        names=(FO + "Radon",),
        label="Radon.AT",
        alias=dict(y=("y", "sinogram")),
    )
    T.sweep(
        M,
        FO + "register_phase",
        "pr est x",
        dict(pr=F("pr"), est=IMG, x=IMG2),
        dict(
            pr=[B("'pr'", "pr"), B("ShiftedPhaseRetrieval", F("spr"))],
            est=IMAGE(nan="err", channels=True) + [BATCH(arg=("est", "x"))],
            x=IMAGE(nan="err"),
        ),
    )

    # ------------------------------------------------------------------------------------------------------------
    # classical
    # ------------------------------------------------------------------------------------------------------------
    M = "inverse.classical"

    def spd(v):
        return 2.0 * v

    B_ = L(lambda: randn(2, 1, 8, 8))
    T.sweep(
        M,
        CL + "cg",
        "apply_A b",
        dict(apply_A=spd, b=B_, x0=None, tol=1e-6, max_iter=10),
        dict(
            apply_A=CALL + [B("wrong shape", lambda v: v[..., :4]), B("(1, …) output", lambda v: v[:1])],
            b=TENSOR(rank=False),
            x0=[
                B("batch 1 (broadcast)", L(lambda: randn(1, 1, 8, 8))),
                B("shape", L(lambda: randn(2, 1, 8, 4))),
                B("nan", L(lambda: nan_at(randn(2, 1, 8, 8))), NanOrErr()),
            ],
            tol=[NAN, B("-1", -1.0), B("'1e-6'", "1e-6")],
            max_iter=INT(0),
        ),
        alias=dict(apply_A=("apply_A", "A")),
    )
    TIK = dict(op=F("blur"), y=y_of("blur"), lam=0.1, method="auto")
    T.sweep(
        M,
        CL + "tikhonov",
        "op y lam",
        TIK,
        dict(
            op=NOT_OP,
            y=MEAS,
            lam=NONNEG(),
            method=CHOICE(),
            tol=[NAN, B("-1", -1.0)],
            max_iter=INT(0),
            x0=[B("shape", L(lambda: randn(2, 1, 8, 4)))],
        ),
    )
    T.sweep(
        M,
        CL + "tikhonov",
        "op y lam",
        dict(op=F("block"), y=y_of("block"), lam=0.1, method="cg"),
        dict(y=MEAS[:2], method=[B("'fft' (not a blur)", "fft")]),
        label="tikhonov[cg]",
    )
    T.sweep(
        M,
        CL + "wiener",
        "y kernel nsr",
        dict(y=y_of("blur"), kernel=K3, nsr=0.01),
        dict(
            y=MEAS,
            kernel=[
                B("2x2", L(lambda: torch.ones(2, 2) / 4)),
                B("int64", TM(lambda k: k.long())),
                B("nan", TM(nan_at)),
            ],
            nsr=[
                NAN,
                INF,
                B("-1", -1.0),
                B("True", True),
                B("nan tensor", L(lambda: torch.tensor(NAN))),
                B("wrong-shape tensor", L(lambda: torch.ones(3, 3))),
            ],
        ),
    )
    T.sweep(
        M,
        CL + "op_norm",
        "op like",
        dict(op=F("block"), like=IMG, iters=5, generator=GEN),
        dict(
            op=NOT_OP, like=[B("int64", TM(lambda x: to_255(x).long())), B("'x'", "x")], iters=INT(1), generator=BADGEN
        ),
        ok_pred=lambda v: abs(v - 0.5) < 1e-3,
    )
    T.sweep(M, CL + "grad", "x", dict(x=IMG), dict(x=IMAGE()))
    T.sweep(
        M,
        CL + "grad_T",
        "q",
        dict(q=L(lambda: randn(2, 1, 2, 8, 8))),
        dict(
            q=[
                B("rank 4", L(lambda: randn(2, 1, 8, 8))),
                B("axis 2 of size 3", L(lambda: randn(2, 1, 3, 8, 8))),
                B("int64", L(lambda: torch.ones(2, 1, 2, 8, 8, dtype=torch.long))),
                B("nan", TM(nan_at), NanOrErr()),
            ]
        ),
    )
    T.sweep(M, CL + "tv", "x", dict(x=IMG), dict(x=IMAGE()))
    T.sweep(
        M,
        CL + "tv_denoise",
        "y lam",
        dict(y=IMG, lam=0.1, iters=3),
        dict(y=MEAS, lam=NONNEG(), iters=[B("-1", -1), B("2.5", 2.5), B("True", True), B("'3'", "3")]),
    )
    T.sweep(
        M,
        CL + "tv_reconstruct",
        "op y lam",
        dict(op=F("block"), y=y_of("block"), lam=0.1, iters=3, callback=None),
        dict(
            op=NOT_OP,
            y=MEAS[:4],
            lam=NONNEG(),
            iters=[B("-1", -1), B("2.5", 2.5), B("True", True)],
            x0=[B("shape", L(lambda: randn(2, 1, 6, 6))), B("nan", L(lambda: nan_at(randn(2, 1, 8, 8))), NanOrErr())],
            norm=[
                NAN,
                # documented: "0 is accepted: the book shows what a wrong norm does" (tv_reconstruct's Raises)
                B("0", 0.0, Doc(lambda r: bool(torch.isfinite(r).all()), "tv_reconstruct: norm 0 is documented")),
                B("-1", -1.0),
                B("inf", INF),
            ],
            theta=[NAN, B("-1", -1.0), B("2", 2.0)],
            callback=[B("'cb'", "cb")],
        ),
    )
    T.sweep(
        M,
        CL + "fbp",
        "op sinogram",
        dict(op=F("radon"), sinogram=y_of("radon")),
        dict(
            op=[B("a Blur", F("blur")), B("'radon'", "radon")],
            sinogram=[
                B("5 angles", L(lambda: randn(2, 1, 5, 8))),
                B("rank 3", TM(lambda y: y[0])),
                B("nan", TM(nan_at)),
                B("int64", TM(lambda y: y.long())),
            ],
        ),
    )
    T.sweep(
        M,
        CL + "zero_filled",
        "op y",
        dict(op=F("mri"), y=y_of("mri")),
        dict(op=[B("a Blur", F("blur"))], y=[B("real image", L(lambda: randn(2, 1, 8, 8))), B("nan", TM(nan_at))]),
    )
    PR_Y = L(lambda: fx("pr").A((rand_img(2, 1, 8, 8) + 1) / 2))
    PRB = dict(
        op=NOT_OP + [B("a Blur", F("blur"))],
        y=[
            B("nan", TM(nan_at)),
            # documented: negative entries act as |y| (gerchberg_saxton's and hio's docstrings: noisy small magnitudes)
            B("negative magnitudes", TM(lambda y: -y), Doc(lambda r: bool(torch.isfinite(r).all()), "|y| documented")),
            B("size 17 (no image pads to it)", L(lambda: randn(2, 1, 17, 17).abs())),
            B("int64", TM(lambda y: y.long())),
            B("complex", TM(lambda y: y.to(torch.complex64))),
        ],
        iters=[B("-1", -1), B("2.5", 2.5), B("True", True)],
        bounds=[B("(1, 0)", (1.0, 0.0)), B("'x'", "x"), B("(nan, None)", (NAN, None)), B("(0,)", (0.0,))],
        generator=BADGEN,
    )
    T.sweep(
        M, CL + "gerchberg_saxton", "op y", dict(op=F("pr"), y=PR_Y, iters=3, bounds=(0.0, None), generator=GEN), PRB
    )
    T.sweep(
        M,
        CL + "hio",
        "op y",
        dict(op=F("pr"), y=PR_Y, iters=3, beta=0.9, bounds=(0.0, None), er_iters=2, generator=GEN),
        {**PRB, "beta": [NAN, B("0", 0.0), B("1.5", 1.5), B("True", True)], "er_iters": [B("-1", -1), B("2.5", 2.5)]},
    )

    # ------------------------------------------------------------------------------------------------------------
    # the diffusion solvers
    # ------------------------------------------------------------------------------------------------------------
    SOLVER = dict(
        model=CALL,
        schedule=[B("'linear'", "linear")],
        generator=BADGEN,
        callback=[B("'cb'", "cb")],
        model_kwargs=[B("'y'", "y")],
    )
    XT_BAD = [
        B("wrong shape", L(lambda: randn(1, 1, 8, 8))),
        B("int64", L(lambda: torch.ones(2, 1, 8, 8, dtype=torch.long))),
    ]

    M = "inverse.ddrm"
    T.sweep(
        M,
        "diffu.inverse.ddrm:ddrm",
        "model y op schedule",
        dict(
            model=DUMMY,
            y=y_of("block"),
            op=F("block"),
            schedule=SCHED,
            sigma_y=0.05,
            steps=3,
            eta=0.85,
            eta_b=1.0,
            generator=GEN,
            progress=False,
            x_T=None,
        ),
        {
            **SOLVER,
            "y": MEAS,
            "op": NOT_OP + [B("Radon (no SVD)", F("radon"))],
            "sigma_y": NONNEG(),
            "steps": INT(1, big=11),
            "eta": UNIT(),
            "eta_b": UNIT(),
            "x_T": XT_BAD,
        },
    )

    M = "inverse.dps"
    DPS = dict(
        model=DUMMY,
        y=y_of("block"),
        op=F("block"),
        schedule=SCHED,
        steps=3,
        scale=0.3,
        noise="gaussian",
        clip_x0=True,
        per_image=True,
        spacing="leading",
        generator=GEN,
        progress=False,
        x_T=None,
    )
    T.sweep(
        M,
        "diffu.inverse.dps:dps",
        "model y op schedule",
        DPS,
        {
            **SOLVER,
            "y": MEAS,
            "op": NOT_OP,
            "steps": INT(1, big=11),
            "scale": NONNEG(),
            "noise": CHOICE(),
            "clip_x0": BOOL,
            "per_image": BOOL,
            "spacing": CHOICE(),
            "x_T": XT_BAD + [B("'x'", "x")],
        },
    )
    T.sweep(
        M,
        "diffu.inverse.dps:residual_norm",
        "y ay",
        dict(y=IMG, ay=IMG2, noise="gaussian", per_image=True),
        dict(
            y=MEAS[:2] + [B("int64", TM(lambda y: to_255(y).long()))],
            ay=[B("batch 1 (broadcast)", TM(lambda a: a[:1])), B("shape", TM(lambda a: a[..., :4]))],
            noise=CHOICE(),
            per_image=BOOL,
        ),
    )

    M = "inverse.pnp"
    PN = "diffu.inverse.pnp:"
    T.sweep(
        M,
        PN + "hqs_data_step",
        "op y z rho",
        dict(op=F("blur_padded"), y=y_of("blur_padded"), z=IMG, rho=0.5, max_iter=5),
        dict(
            op=NOT_OP + [B("PhaseRetrieval (not linear)", F("pr"))],
            y=MEAS[:2] + [B("wrong size", L(lambda: randn(2, 1, 6, 6)))],
            z=IMAGE(nan="err"),
            rho=[NAN, B("0", 0.0), B("-1", -1.0), B("batch 3 tensor", L(lambda: torch.ones(3))), B("'1'", "1")],
            tol=[NAN, B("-1", -1.0)],
            max_iter=INT(0),
        ),
    )
    T.sweep(
        M,
        PN + "dpir",
        "denoiser y op",
        dict(
            denoiser=F("drunet"),
            y=y_of("blur"),
            op=F("blur"),
            sigma_y=0.05,
            iters=2,
            x_init=None,
            x8=False,
            progress=False,
            callback=None,
        ),
        dict(
            denoiser=CALL,
            y=MEAS,
            op=NOT_OP,
            sigma_y=NONNEG(),
            iters=INT(1),
            sigma_start=POS(),
            sigma_end=POS(),
            lam=POS(),
            x_init=[B("wrong shape", L(lambda: randn(1, 1, 8, 8))), B("nan", L(lambda: nan_at(randn(2, 1, 8, 8))))],
            x8=BOOL,
            callback=[B("'cb'", "cb")],
        ),
    )
    T.sweep(
        M,
        PN + "dpir_schedule",
        "sigma_y",
        dict(sigma_y=0.05, iters=4),
        dict(sigma_y=NONNEG(), iters=INT(1), sigma_start=POS(), sigma_end=POS(), lam=POS()),
    )
    T.sweep(
        M,
        PN + "dihedral",
        "x mode",
        dict(x=IMG, mode=3, inverse=False),
        dict(
            x=[B("rank 1", L(lambda: torch.zeros(8))), B("list", TM(lambda x: x.tolist()))],
            mode=[B("8", 8), B("-1", -1), B("2.5", 2.5), B("True", True)],
            inverse=BOOL,
        ),
    )
    T.sweep(
        M,
        PN + "diffpir_timesteps",
        "T steps",
        dict(T=10, steps=4, spacing="quad"),
        dict(T=INT(1), steps=INT(2, big=11), spacing=CHOICE()),
    )
    T.sweep(
        M,
        PN + "diffpir",
        "model y op schedule",
        dict(
            model=DUMMY,
            y=y_of("blur"),
            op=F("blur"),
            schedule=SCHED,
            sigma_y=0.05,
            steps=3,
            lam=1.0,
            zeta=0.1,
            spacing="quad",
            generator=GEN,
            progress=False,
            x_T=None,
        ),
        {
            **SOLVER,
            "y": MEAS,
            "op": NOT_OP,
            "sigma_y": NONNEG(),
            "steps": INT(2, big=11),
            "lam": POS(),
            "zeta": UNIT(),
            "spacing": CHOICE(),
            "x_T": XT_BAD,
        },
    )

    M = "inverse.repaint"
    RP = "diffu.inverse.repaint:"
    T.sweep(
        M,
        RP + "repaint_schedule",
        "steps",
        dict(steps=4, jump_length=2, jump_n_sample=2),
        dict(steps=INT(1), jump_length=INT(1), jump_n_sample=INT(1)),
    )
    T.sweep(
        M,
        RP + "repaint",
        "model y mask schedule",
        dict(
            model=DUMMY,
            y=y_of("inpaint"),
            mask=F("mask"),
            schedule=SCHED,
            steps=3,
            jump_length=2,
            jump_n_sample=2,
            generator=GEN,
            progress=False,
        ),
        {
            **SOLVER,
            "y": MEAS,
            "mask": [
                B("values 0.5", TM(lambda m: m * 0.5)),
                B("size 6", L(lambda: torch.ones(1, 1, 6, 6))),
                B("nan", TM(nan_at)),
            ],
            "steps": INT(1, big=11),
            "jump_length": INT(1),
            "jump_n_sample": INT(1),
            "spacing": CHOICE(),
            "clip_x0": BOOL,
            "x_T": XT_BAD,
        },
    )

    M = "inverse.resample"
    RS = "diffu.inverse.resample:"
    T.sweep(
        M,
        RS + "resample_variance",
        "gamma alpha_bar_t alpha_bar_prev",
        dict(gamma=40.0, alpha_bar_t=0.5, alpha_bar_prev=0.8),
        dict(
            gamma=POS(),
            alpha_bar_t=[NAN, B("0", 0.0), B("1.5", 1.5), B("-0.5", -0.5)],
            alpha_bar_prev=[NAN, B("0.3 (< alpha_bar_t)", 0.3), B("1.5", 1.5)],
        ),
    )
    Z = L(lambda: randn(2, 2, 2, 2))
    Z2 = L(lambda: randn(2, 2, 2, 2, seed=1))
    T.sweep(
        M,
        RS + "resample_moments",
        "z0 z_t alpha_bar s",
        dict(z0=Z, z_t=Z2, alpha_bar=0.5, s=0.1),
        dict(
            z0=TENSOR(rank=False),
            z_t=[B("batch 1 (broadcast)", TM(lambda z: z[:1]))],
            alpha_bar=[NAN, B("0", 0.0), B("1", 1.0), B("1.5", 1.5)],
            s=[NAN, INF, B("0", 0.0), B("-1", -1.0)],
        ),
    )
    T.sweep(
        M,
        RS + "stochastic_resample",
        "z0 z_t alpha_bar s",
        dict(z0=Z, z_t=Z2, alpha_bar=0.5, s=0.1, generator=GEN),
        dict(generator=BADGEN, s=[NAN, B("0", 0.0)], z0=[B("int64", TM(lambda z: z.long()))]),
    )
    T.sweep(
        M,
        RS + "pixel_optimization",
        "y op x_init",
        dict(y=y_of("block"), op=F("block"), x_init=IMG, iters=3, lr=0.01, tol=1e-3),
        dict(
            y=MEAS[:4],
            op=NOT_OP,
            x_init=[
                B("wrong shape", L(lambda: randn(2, 1, 6, 6))),
                B("nan", TM(nan_at)),
                B("int64", TM(lambda x: x.long())),
            ],
            iters=INT(1),
            lr=POS(),
            tol=[NAN, B("-1", -1.0)],
        ),
    )
    DEC = L(lambda: fx("autoencoder").decode)
    T.sweep(
        M,
        RS + "latent_optimization",
        "y op decode z_init",
        dict(y=y_of("identity"), op=F("identity"), decode=DEC, z_init=Z, iters=3, lr=0.005, tol=1e-3),
        dict(
            y=MEAS[:4],
            op=NOT_OP,
            decode=CALL,
            z_init=[B("wrong channels", L(lambda: randn(2, 3, 2, 2))), B("nan", TM(nan_at))],
            iters=INT(1),
            lr=POS(),
            tol=[NAN, B("-1", -1.0)],
        ),
    )
    T.sweep(
        M,
        RS + "resample",
        "model autoencoder y op schedule",
        dict(
            model=DUMMY,
            autoencoder=F("autoencoder"),
            y=y_of("identity"),
            op=F("identity"),
            schedule=SCHED,
            steps=3,
            hard_every=1,
            pixel_iters=2,
            latent_iters=2,
            generator=GEN,
            progress=False,
            x_T=None,
        ),
        {
            **SOLVER,
            "autoencoder": [B("'ae'", "ae")],
            "y": MEAS,
            "op": NOT_OP,
            "steps": INT(1, big=11),
            "scale": NONNEG(),
            "gamma": POS(),
            "hard_every": INT(1),
            "hard_start": UNIT(),
            "latent_start": UNIT(),
            "travel": INT(0),
            "pixel_iters": INT(1),
            "latent_iters": INT(1),
            "pixel_lr": POS(),
            "latent_lr": POS(),
            "tol": [NAN, B("-1", -1.0)],
            "final_optimization": BOOL,
            "x_T": [B("wrong shape", L(lambda: randn(2, 2, 3, 3)))],
        },
    )

    M = "inverse.two_stage"
    TS = "diffu.inverse.two_stage:"
    T.sweep(
        M,
        TS + "degrade",
        "x",
        dict(x=IMG, generator=GEN, blur_sigma=None, factor=None, noise_sigma=None, return_params=False),
        dict(
            x=IMAGE(nan="err"),
            generator=BADGEN,
            factor=[B("0", 0), B("-1", -1), B("2.5", 2.5), B("3 (not dividing 8)", 3), B("True", True)],
            blur_sigma=[NAN, B("-1", -1.0), B("inf", INF), B("batch 3 tensor", L(lambda: torch.ones(3)))],
            noise_sigma=[NAN, B("-1", -1.0), B("inf", INF)],
            return_params=BOOL,
        ),
    )
    T.sweep(
        M,
        TS + "restorer_loss",
        "model x",
        dict(model=F("restorer"), x=IMG, generator=GEN),
        dict(model=CALL, x=IMAGE(nan="err", channels=True), generator=BADGEN),
    )
    T.sweep(
        M,
        TS + "controlnet_loss",
        "model x",
        dict(model=F("controlled"), x=IMG, generator=GEN, schedule=SCHED),
        dict(
            model=[B("a UNet", F("unet")), B("'m'", "m")],
            x=IMAGE(nan="err", channels=True),
            generator=BADGEN,
            schedule=[B("'linear'", "linear")],
        ),
    )
    T.sweep(
        M,
        TS + "two_stage_restore",
        "restorer controlled_model y_degraded schedule",
        dict(
            restorer=F("restorer"),
            controlled_model=F("controlled"),
            y_degraded=IMG,
            schedule=SCHED,
            steps=3,
            eta=0.0,
            control_scale=1.0,
            generator=GEN,
            progress=False,
            x_T=None,
            return_stage1=False,
        ),
        {
            **SOLVER,
            "restorer": CALL + [B("wrong-shape output", lambda y: y[..., :4])],
            "controlled_model": CALL,
            "y_degraded": IMAGE(nan="err", channels=True),
            "steps": INT(1, big=11),
            "eta": UNIT(),
            "control_scale": NONNEG(),
            "x_T": XT_BAD,
            "return_stage1": BOOL,
            "model_kwargs": [B("'y'", "y"), B("{'cond': …}", L(lambda: {"cond": randn(2, 1, 8, 8)}))],
        },
    )
    SOLVER["model"] = CALL

    M = "inverse.blind"
    BD = "diffu.inverse.blind:"
    KS = L(lambda: get(BL + "random_kernels")(2, 3, generator=gen(0)))
    T.sweep(
        M,
        BD + "kernel_to_diffusion",
        "k",
        dict(k=KS),
        dict(
            k=[
                B("all zero", L(lambda: torch.zeros(2, 3, 3))),
                B("negative", TM(lambda k: -k)),
                B("nan", TM(nan_at)),
                B("rank 1", L(lambda: torch.ones(3))),
                B("int64", L(lambda: torch.ones(2, 3, 3, dtype=torch.long))),
            ]
        ),
    )
    T.sweep(
        M,
        BD + "kernel_from_diffusion",
        "k",
        dict(k=L(lambda: randn(2, 3, 3).clamp(-1, 1))),
        dict(
            k=[
                B("nan", TM(nan_at)),
                B("rank 1", L(lambda: torch.ones(3))),
                B("int64", L(lambda: torch.ones(2, 3, 3, dtype=torch.long))),
            ]
        ),
    )
    T.sweep(
        M,
        BD + "blur_each",
        "x k",
        dict(x=IMG, k=KS, boundary="circular"),
        dict(
            x=IMAGE(nan="either")[:4],
            k=[
                B("batch 3", L(lambda: torch.ones(3, 3, 3) / 9)),
                B("even 2x2", L(lambda: torch.ones(2, 2, 2) / 4)),
                B("nan", TM(nan_at), NanOrErr()),
            ],
            boundary=CHOICE(),
        ),
    )
    T.sweep(
        M,
        BD + "kernel_error",
        "k_est k_true",
        dict(k_est=KS, k_true=L(lambda: get(BL + "random_kernels")(2, 3, generator=gen(1))), max_shift=1),
        dict(
            k_true=[B("all zero", L(lambda: torch.zeros(2, 3, 3))), B("shape", L(lambda: torch.ones(2, 5, 5)))],
            k_est=[B("nan", TM(nan_at), NanOrErr())],
            max_shift=[B("-1", -1), B("2.5", 2.5), B("True", True)],
        ),
    )
    T.sweep(
        M,
        BD + "kernel_prior_data",
        "",
        dict(n=4, size=3, seed=0),
        dict(n=INT(1), size=[B("2", 2), B("0", 0), B("2.5", 2.5)], seed=[B("-1", -1), B("2.5", 2.5)]),
    )
    T.sweep(
        M,
        BD + "kernel_prior_loss",
        "model k",
        dict(model=F("kernel_unet"), k=L(lambda: randn(2, 1, 3, 3).clamp(-1, 1)), generator=GEN),
        dict(
            model=CALL,
            k=[
                B("rank 3", L(lambda: randn(2, 3, 3))),
                B("5x5", L(lambda: randn(2, 1, 5, 5)), arg=("k", "k_t")),
                B("nan", TM(nan_at)),
            ],
            generator=BADGEN,
        ),
    )
    BLIND = dict(
        model=DUMMY,
        kernel_model=F("kernel_model"),
        y=y_of("blur"),
        schedule=SCHED,
        kernel_size=3,
        steps=3,
        scale=0.3,
        reg=1.0,
        boundary="circular",
        generator=GEN,
        progress=False,
        x_T=None,
        k_T=None,
    )
    T.sweep(
        M,
        BD + "blind_dps",
        "model kernel_model y schedule",
        BLIND,
        {
            **SOLVER,
            "kernel_model": CALL,
            "y": MEAS,
            "kernel_size": [B("5 (≠ kernel_model's 3)", 5), B("2", 2), B("2.5", 2.5)],
            "steps": INT(1, big=11),
            "scale": POS(),
            "reg": NONNEG(),
            "boundary": CHOICE(),
            "per_image": BOOL,
            "scale_by_alpha_bar": BOOL,
            "x_T": XT_BAD,
            "k_T": [B("wrong shape", L(lambda: randn(2, 1, 5, 5)))],
        },
    )
    T.sweep(
        M,
        BD + "bird",
        "model y schedule",
        dict(
            model=DUMMY,
            y=y_of("blur"),
            schedule=SCHED,
            kernel_size=3,
            ddim_steps=2,
            iters=2,
            hidden=8,
            generator=GEN,
            progress=False,
            x_T=None,
        ),
        {
            **SOLVER,
            "y": MEAS,
            "kernel_size": [B("2", 2), B("9 (> image)", 9), B("2.5", 2.5)],
            "ddim_steps": INT(1, big=11),
            "iters": INT(1),
            "lr_x": POS(),
            "lr_k": POS(),
            "boundary": CHOICE(),
            "through_model": BOOL,
            "hidden": INT(1),
            "x_T": XT_BAD,
        },
    )

    def blind_state():
        return get(BD + "BlindState")(0, 5, randn(1, 1, 4, 4), randn(1, 1, 4, 4), randn(1, 1, 3, 3), randn(1, 3, 3))

    T.case(M, "inverse.blind.BlindState(ok)", BD + "BlindState", blind_state, Doc(lambda s: s.t == 5, "a NamedTuple"))
    _ = X


K3 = L(lambda: get(BL + "gaussian_kernel")(3, 1.0))
