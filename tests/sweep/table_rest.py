"""Probes of the upper layers: metrics, viz, train, guidance, diffusion_priors, text_to_image, representations and
book."""

from __future__ import annotations

from pathlib import Path

import torch

from .fixtures import FMNIST, GEN, IMG, IMG2, PTS, PTS2, T2, Y3, F, X, fx, gen, rand_img, randn, tmpdir
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

ME = "diffu.metrics:"
SCHED = F("sched")


def metric_image(extra=()):
    """Bad images for a metric: NaN/inf must raise, so must 0–255 values (metrics are a bounded domain)."""
    return IMAGE(nan="err", channels=True) + [B("0-255 float", TM(to_255))] + list(extra)


def results_dir() -> str:
    return str(Path(get("diffu").__file__).parents[1] / "book" / "results")


def fresh_mlp():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return get("diffu.nn.mlp:MLPDenoiser")(dim=2, hidden=8, depth=1, t_dim=4)


def mse_loss(model, x, generator=None):
    t = torch.rand(x.shape[0], generator=generator) * 10
    return model(x, t).pow(2).mean()


def trajectory(n=3):
    traj = get("diffu.sampling:Trajectory")()
    for i in range(n):
        traj(
            get("diffu.sampling:SamplerState")(
                i, 9 - i, rand_img(2, 1, 8, 8, seed=i), rand_img(2, 1, 8, 8, seed=10 + i)
            )
        )
    return traj


def build(T):
    # ------------------------------------------------------------------------------------------------------------
    # diffu.metrics
    # ------------------------------------------------------------------------------------------------------------
    M = "metrics"
    T.sweep(
        M,
        ME + "psnr",
        "x y",
        dict(x=IMG, y=IMG2, data_range=2.0),
        dict(
            x=metric_image([BATCH(arg=("x", "y"))]),
            y=metric_image()[:2] + [B("shape", TM(lambda y: y[..., :4]), arg=("x", "y"))],
            data_range=POS(),
        ),
    )
    T.sweep(
        M,
        ME + "ssim",
        "x y",
        dict(x=IMG, y=IMG2, data_range=2.0, win_size=7, sigma=1.5),
        dict(
            x=metric_image([BATCH(arg=("x", "y"))]),
            y=metric_image()[:2],
            data_range=POS(),
            win_size=[B("2", 2), B("4 (even)", 4), B("1", 1), B("9 (> image)", 9), B("2.5", 2.5), B("True", True)],
            sigma=POS(),
        ),
    )
    T.sweep(
        M,
        ME + "mmd",
        "x y",
        dict(x=PTS, y=PTS2, bandwidths=(0.5, 1.0)),
        dict(
            x=[
                B("nan", TM(nan_at)),
                B("inf", TM(lambda x: nan_at(x, INF))),
                B("rank 1", TM(lambda x: x[0])),
                B("D=3", L(lambda: randn(16, 3)), arg=("x", "y")),
                B("1 sample", TM(lambda x: x[:1])),
            ],
            y=[B("nan", TM(nan_at))],
            bandwidths=[B("(0,)", (0.0,)), B("(-1,)", (-1.0,)), B("(nan,)", (NAN,)), B("()", ()), B("'x'", "x")],
        ),
    )
    FEATS = L(lambda: randn(16, 4))
    T.sweep(
        M,
        ME + "gaussian_stats",
        "features",
        dict(features=FEATS),
        dict(
            features=[
                B("nan", TM(nan_at)),
                B("inf", TM(lambda x: nan_at(x, INF))),
                B("rank 1", TM(lambda x: x[0])),
                B("1 sample", TM(lambda x: x[:1])),
                B("list", TM(lambda x: x.tolist())),
            ]
        ),
    )

    def stats(seed):
        return L(lambda: get(ME + "gaussian_stats")(randn(16, 4, seed=seed)))

    FD = dict(
        mu1=L(lambda: stats(0)()[0]),
        sigma1=L(lambda: stats(0)()[1]),
        mu2=L(lambda: stats(1)()[0]),
        sigma2=L(lambda: stats(1)()[1]),
    )
    import numpy as np

    T.sweep(
        M,
        ME + "frechet_distance",
        "mu1 sigma1 mu2 sigma2",
        FD,
        dict(
            mu1=[B("nan", TM(lambda m: np.where(np.arange(len(m)) == 0, np.nan, m))), B("D=3", TM(lambda m: m[:3]))],
            sigma1=[
                B("nan", TM(lambda s: np.where(np.eye(len(s)) > 0, np.nan, s))),
                B("indefinite", TM(lambda s: -s)),
                B("not symmetric", TM(lambda s: s + np.triu(np.ones_like(s), 1))),
                B("3x3", TM(lambda s: s[:3, :3])),
            ],
            sigma2=[B("inf", TM(lambda s: np.where(np.eye(len(s)) > 0, np.inf, s)))],
        ),
        ok_pred=lambda d: d >= 0,
        alias=dict(mu1=("mu1", "mu2", "means"), sigma1=("sigma1", "sigma2", "covariances")),
    )
    T.sweep(
        M,
        ME + "within_class_diversity",
        "features labels",
        dict(features=FEATS, labels=L(lambda: torch.arange(16) % 2)),
        dict(
            features=[B("nan", TM(nan_at)), B("rank 1", TM(lambda x: x[0]))],
            labels=[
                B("float", L(lambda: (torch.arange(16) % 2).float())),
                B("batch 15", L(lambda: torch.arange(15) % 2)),
                B("all distinct", L(lambda: torch.arange(16))),
            ],
        ),
    )
    REF = FMNIST
    T.sweep(
        M,
        ME + "FDFMNIST",
        "",
        dict(reference=REF, device=None, batch_size=2),
        dict(
            reference=[  # reference=None is valid: the shipped test split
                b
                for b in metric_image([B("8x8", L(lambda: rand_img(4, 1, 8, 8))), B("1 image", TM(lambda r: r[:1]))])
                if b.label != "None"
            ],
            device=DEVICE,
            batch_size=INT(1),
        ),
        post=lambda fd: fd(rand_img(4, 1, 28, 28, seed=3)),
    )

    def fd_meth(name):
        return L(lambda: getattr(fdfmnist(), name))

    fdn = (ME + "FDFMNIST",)
    T.sweep(
        M,
        L(lambda: fdfmnist()),
        "samples",
        dict(samples=L(lambda: rand_img(4, 1, 28, 28, seed=3))),
        dict(samples=metric_image([B("8x8", L(lambda: rand_img(4, 1, 8, 8))), B("1 image", TM(lambda r: r[:1]))])),
        names=fdn,
        label="FDFMNIST.__call__",
        alias=dict(samples=("samples",)),
    )
    T.sweep(
        M,
        fd_meth("features"),
        "x",
        dict(x=FMNIST),
        dict(x=metric_image([B("8x8", L(lambda: rand_img(4, 1, 8, 8)))])),
        names=fdn,
        label="FDFMNIST.features",
    )
    T.sweep(
        M,
        fd_meth("accuracy"),
        "x y",
        dict(x=FMNIST, y=L(lambda: torch.tensor([0, 1, 2, 3]))),
        dict(
            x=metric_image()[:4],
            y=[
                B("float", L(lambda: torch.tensor([0.0, 1, 2, 3]))),
                B("batch 3", L(lambda: torch.tensor([0, 1, 2]))),
                B("out of range 10", L(lambda: torch.tensor([0, 1, 2, 10]))),
            ],
        ),
        names=fdn,
        label="FDFMNIST.accuracy",
    )
    T.sweep(
        M,
        fd_meth("diversity"),
        "x y",
        dict(x=FMNIST, y=L(lambda: torch.tensor([0, 0, 1, 1]))),
        dict(
            x=metric_image()[:4],
            y=[B("float", L(lambda: torch.tensor([0.0, 0, 1, 1]))), B("batch 3", L(lambda: torch.tensor([0, 0, 1])))],
        ),
        names=fdn,
        label="FDFMNIST.diversity",
    )
    T.sweep(
        M,
        ME + "fd_fmnist",
        "samples",
        dict(samples=L(lambda: rand_img(4, 1, 28, 28, seed=3)), reference=REF),
        dict(samples=metric_image()[:5], reference=[B("nan", TM(nan_at)), B("8x8", L(lambda: rand_img(4, 1, 8, 8)))]),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.viz
    # ------------------------------------------------------------------------------------------------------------
    M = "viz"
    vz = "diffu.viz:"
    VIMG = IMAGE(nan="either") + [B("0-255 float", TM(to_255))]
    T.sweep(
        M,
        vz + "image_grid",
        "x",
        dict(x=IMG, nrow=2, pad=1, pad_value=1.0),
        dict(x=VIMG, nrow=INT(1), pad=INT(0), pad_value=[NAN, B("2.0", 2.0), B("'1'", "1")]),
    )
    T.sweep(
        M,
        vz + "show_images",
        "x",
        dict(x=IMG, nrow=2, title=None, ax=None, scale=0.6),
        dict(x=VIMG, nrow=INT(1), ax=[B("'ax'", "ax")], scale=POS()),
    )
    TRAJ = L(trajectory)
    T.sweep(
        M,
        vz + "plot_trajectory",
        "traj",
        dict(traj=TRAJ, n_frames=2, n_images=2, which=("x", "x0")),
        dict(
            traj=[B("empty", L(lambda: get("diffu.sampling:Trajectory")())), B("'t'", "t")],
            n_frames=INT(1),
            n_images=INT(1),
            which=[B("('bogus',)", ("bogus",)), B("()", ())],
        ),
    )
    T.sweep(
        M,
        vz + "animate_trajectory",
        "traj",
        dict(traj=TRAJ, n_frames=2, nrow=2, interval=100),
        dict(
            traj=[B("empty", L(lambda: get("diffu.sampling:Trajectory")()))],
            n_frames=INT(1),
            nrow=INT(1),
            interval=[B("-1", -1), NAN],
        ),
    )
    FEATMAP = L(lambda: {"down0 8×8": randn(2, 3, 8, 8), "mid 4×4": randn(2, 4, 4, 4)})
    T.sweep(
        M,
        vz + "show_feature_maps",
        "features",
        dict(features=FEATMAP, index=0, n_channels=2),
        dict(
            features=[B("{}", {}), B("rank 3 map", L(lambda: {"a": randn(2, 8, 8)})), B("'f'", "f")],
            index=[B("2 (= N)", 2), B("-1", -1), B("2.5", 2.5)],
            n_channels=INT(1),
            image=[B("rank 2", L(lambda: randn(8, 8))), B("batch 3", L(lambda: randn(3, 1, 8, 8)))],
        ),
    )
    T.sweep(
        M,
        vz + "unet_diagram",
        "model",
        dict(model=F("unet")),
        dict(model=[B("'m'", "m"), B("DiT", F("dit"))], ax=[B("'ax'", "ax")]),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.train
    # ------------------------------------------------------------------------------------------------------------
    M = "train"
    tr = "diffu.train:"
    T.sweep(
        M,
        tr + "TrainConfig",
        "",
        dict(steps=2, batch_size=4),
        dict(
            steps=INT(1),
            batch_size=INT(1),
            lr=POS(),
            warmup=INT(0),
            weight_decay=NONNEG(),
            grad_clip=[NAN, B("0", 0.0), B("-1", -1.0), B("True", True)],
            ema_decay=[NAN, B("1", 1.0), B("-0.1", -0.1), B("True", True)],
            seed=[B("-1", -1), B("2.5", 2.5), B("'0'", "0")],
            ckpt_every=INT(0),
        ),
    )
    T.case(
        M,
        "train.TrainResult(ok)",
        tr + "TrainResult",
        lambda: get(tr + "TrainResult")(torch.nn.Linear(1, 1), None),
        Doc(lambda r: r.step == 0, "a dataclass"),
    )
    UC = F("unet_cond")
    T.sweep(
        M,
        tr + "diffusion_loss",
        "model schedule x0",
        dict(model=UC, schedule=SCHED, x0=IMG, generator=GEN, y=Y3, p_uncond=0.1),
        dict(
            model=CALL,
            schedule=[B("'linear'", "linear")],
            x0=TENSOR(rank=False),
            generator=BADGEN,
            p_uncond=UNIT(),
            y=[B("float", L(lambda: torch.tensor([0.0, 2.0]))), B("batch 3", L(lambda: torch.tensor([0, 1, 2])))],
            model_kwargs=[B("'y'", "y")],
        ),
    )
    T.sweep(
        M,
        tr + "label_kwargs",
        "model y p_uncond",
        dict(model=UC, y=Y3, p_uncond=0.5, generator=GEN),
        dict(
            model=[B("unconditional", F("unet"))],
            y=[B("float", L(lambda: torch.tensor([0.0, 2.0]))), B("out of range", L(lambda: torch.tensor([0, 7])))],
            p_uncond=UNIT(),
            generator=BADGEN,
        ),
    )
    T.sweep(
        M,
        tr + "classifier_loss",
        "model x y",
        dict(model=F("fmnist_clf"), x=FMNIST, y=L(lambda: torch.tensor([0, 1, 2, 3])), generator=GEN, flip=True),
        dict(
            model=CALL,
            x=IMAGE(nan="either")[:5],
            y=[
                B("float", L(lambda: torch.tensor([0.0, 1, 2, 3]))),
                B("out of range 10", L(lambda: torch.tensor([0, 1, 2, 10]))),
                B("batch 3", L(lambda: torch.tensor([0, 1, 2]))),
            ],
            generator=BADGEN,
            flip=BOOL,
        ),
    )
    CK = L(lambda: Path(tmpdir("ck_")) / "ck.safetensors")
    T.sweep(
        M,
        tr + "save_checkpoint",
        "path model",
        dict(path=CK, model=L(fresh_mlp), step=3, losses=[0.5]),
        dict(
            path=[
                B(
                    "missing dir",
                    "/nonexistent/dir/ck.safetensors",
                    Err("path", "/nonexistent/dir/ck.safetensors", types=(ValueError, TypeError, OSError)),
                ),
                B("3", 3),
            ],
            model=[B("'m'", "m")],
            step=[B("-1", -1), B("2.5", 2.5), B("'3'", "3")],
            losses=[B("'x'", "x")],
            generator=BADGEN[:2],
            extra=[B("'x'", "x")],
        ),
    )

    def saved():
        p = Path(tmpdir("ck_")) / "ck.safetensors"
        get(tr + "save_checkpoint")(p, fresh_mlp(), step=3, losses=[0.5])
        return p

    T.sweep(
        M,
        tr + "load_checkpoint",
        "path model",
        dict(path=L(saved), model=L(fresh_mlp)),
        dict(
            path=[
                B(
                    "missing file",
                    "/nonexistent/ck.safetensors",
                    Err("path", "/nonexistent/ck.safetensors", types=(ValueError, TypeError, OSError)),
                ),
                B("not a checkpoint", L(lambda: str(get("diffu.pretrained:WEIGHTS_DIR") / "manifest.json"))),
            ],
            model=[B("other architecture", L(lambda: torch.nn.Linear(2, 2))), B("'m'", "m")],
            generator=BADGEN[:2],
        ),
        ok_pred=lambda r: r[0] == 3,
        alias=dict(path=("path", "checkpoint")),
    )

    def seeded_block(**kw):
        with get(tr + "seeded")(**kw):
            return torch.rand(1)

    T.sweep(
        M,
        L(lambda: seeded_block),
        "",
        dict(seed=3, device=None),
        dict(seed=[B("-1", -1), B("2.5", 2.5), B("'x'", "x"), B("None", None)], device=DEVICE),
        names=(tr + "seeded",),
        label="seeded",
    )
    CFG = L(lambda: get(tr + "TrainConfig")(steps=2, batch_size=4, ema_decay=None, warmup=0))
    T.sweep(
        M,
        tr + "train",
        "model loss_fn data config",
        dict(model=L(fresh_mlp), loss_fn=mse_loss, data=L(lambda: (randn(8, 2),)), config=CFG, progress=False),
        dict(
            model=[B("'m'", "m"), B("no parameters", L(lambda: torch.nn.Identity()))],
            loss_fn=CALL,
            data=[
                B("()", ()),
                B("mismatched", L(lambda: (randn(8, 2), randn(7)))),
                B("a tensor", L(lambda: randn(8, 2))),
                B("nan", L(lambda: (nan_at(randn(8, 2)),))),
            ],
            config=[B("'c'", "c"), B("dict", {"steps": 2})],
            stop_after=[B("-1", -1), B("2.5", 2.5)],
            checkpoint=[B("3", 3)],
        ),
        alias=dict(loss_fn=("loss_fn", "loss"), data=("data", "loss", "loss_fn")),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.guidance
    # ------------------------------------------------------------------------------------------------------------
    M = "guidance"
    gd = "diffu.guidance:"
    NULL = L(lambda: {"y": torch.tensor([3])})
    SCALE = [NAN, INF, B("-1", -1.0), B("True", True), B("'1'", "1")]
    T.sweep(
        M,
        gd + "ClassifierFreeGuidance",
        "model scale null",
        dict(model=UC, scale=2.0, null=NULL),
        dict(
            model=CALL,
            scale=SCALE,
            null=[
                B("{}", {}),
                B("'y'", "y"),
                B("None", None),
                B("batch 3 null", L(lambda: {"y": torch.tensor([3, 3, 3])})),
            ],
        ),
        post=lambda g: g(randn(2, 1, 8, 8), torch.tensor([3.0, 5.0]), y=torch.tensor([0, 2])),
    )
    T.sweep(
        M,
        L(lambda: get(gd + "ClassifierFreeGuidance").from_w),
        "model w null",
        dict(model=UC, w=1.0, null=NULL),
        dict(w=[NAN, INF, B("-2", -2.0), B("True", True)]),
        names=(gd + "ClassifierFreeGuidance",),
        label="ClassifierFreeGuidance.from_w",
        post=lambda g: g(randn(2, 1, 8, 8), torch.tensor([3.0, 5.0]), y=torch.tensor([0, 2])),
    )
    T.sweep(
        M,
        L(lambda: get(gd + "ClassifierFreeGuidance")(fx("unet_cond"), 2.0, {"y": torch.tensor([3])})),
        "x t",
        dict(x=X, t=T2, y=Y3),
        dict(
            x=IMAGE(channels=True),
            t=[B("batch 3", L(lambda: torch.tensor([1.0, 2.0, 3.0])))],
            y=[
                B("float", L(lambda: torch.tensor([0.0, 2.0]))),
                B("out of range", L(lambda: torch.tensor([0, 7]))),
                B("batch 3", L(lambda: torch.tensor([0, 1, 2]))),
            ],
        ),
        names=(gd + "ClassifierFreeGuidance",),
        label="ClassifierFreeGuidance.__call__",
    )
    CLF = F("noisy_clf")
    T.sweep(
        M,
        gd + "ClassifierGuidance",
        "classifier scale y",
        dict(classifier=CLF, scale=2.0, y=1),
        dict(
            classifier=[B("no num_classes", L(lambda: torch.nn.Identity())), B("'c'", "c")],
            scale=SCALE,
            y=[B("3 (out of range)", 3), B("-1", -1), B("1.0", 1.0), B("'1'", "1")],
        ),
        post=lambda g: g(randn(2, 1, 8, 8), torch.tensor([3.0, 5.0])),
    )
    CG = L(lambda: get(gd + "ClassifierGuidance")(fx("noisy_clf"), 2.0))
    for meth in ("__call__", "gradient", "log_prob"):
        T.sweep(
            M,
            L(lambda meth=meth: getattr(CG(), meth)),
            "x t",
            dict(x=X, t=T2, y=Y3),
            dict(
                x=IMAGE(channels=True),
                t=[B("batch 3", L(lambda: torch.tensor([1.0, 2.0, 3.0])))],
                y=[
                    B("batch 3", L(lambda: torch.tensor([0, 1, 2]))),
                    B("float", L(lambda: torch.tensor([0.0, 1.0]))),
                    B("out of range", L(lambda: torch.tensor([0, 3]))),
                ],
            ),
            names=(gd + "ClassifierGuidance",),
            label=f"ClassifierGuidance.{meth}",
        )
    T.sweep(
        M,
        gd + "balanced_labels",
        "n",
        dict(n=5, num_classes=3, device=None),
        dict(n=INT(0), num_classes=INT(1), device=DEVICE),
    )
    T.sweep(
        M,
        gd + "check_labels",
        "y num_classes",
        dict(y=Y3, num_classes=3, n=2, device=None),
        dict(
            y=[B("float", L(lambda: torch.tensor([0.0, 2.0]))), B("3", L(lambda: torch.tensor([0, 3]))), B("'y'", "y")],
            num_classes=[B("0", 0), B("-1", -1), B("2.5", 2.5)],
            n=[B("-1", -1), B("3", 3), B("2.5", 2.5)],
            device=DEVICE,
        ),
        alias=dict(y=("y", "labels")),
    )
    T.sweep(
        M,
        gd + "class_batches",
        "n batch seed",
        dict(n=5, batch=2, seed=0, device=None, shape=(1, 4, 4), num_classes=3),
        dict(
            n=INT(0),
            batch=INT(1),
            seed=[B("-1", -1), B("2.5", 2.5), B("'0'", "0")],
            device=DEVICE,
            shape=[B("(1, 0, 4)", (1, 0, 4)), B("'x'", "x"), B("(1, 2.5)", (1, 2.5))],
            num_classes=INT(1),
        ),
        post=list,
    )
    T.sweep(
        M,
        gd + "classifier_accuracy_by_t",
        "classifier schedule x0 y",
        dict(classifier=CLF, schedule=SCHED, x0=IMG, y=Y3, edges=(0, 5, 10), batch=2, seed=0),
        dict(
            classifier=[B("'c'", "c")],
            schedule=[B("'linear'", "linear")],
            x0=IMAGE(nan="err", channels=True),
            y=[B("batch 3", L(lambda: torch.tensor([0, 1, 2]))), B("float", L(lambda: torch.tensor([0.0, 1.0])))],
            edges=[B("(0, 11)", (0, 11)), B("(5, 0)", (5, 0)), B("(0.5, 10)", (0.5, 10)), B("(0,)", (0,))],
            batch=INT(1),
            seed=[B("-1", -1), B("2.5", 2.5)],
        ),
    )
    T.sweep(
        M,
        gd + "guided_samples",
        "model n",
        dict(model=UC, n=3, kind="cfg", scale=2.0, sampler="ddim", steps=2, batch=2, seed=0),
        dict(
            model=[B("unconditional", F("unet")), B("'m'", "m")],
            n=INT(1),
            kind=CHOICE(),
            scale=SCALE,
            sampler=CHOICE(),
            steps=INT(1, big=1001),
            batch=INT(1),
            seed=[B("-1", -1), B("2.5", 2.5)],
            device=DEVICE,
        ),
    )
    T.sweep(
        M,
        gd + "guided_samples",
        "model n",
        dict(model=UC, n=3, kind="classifier", scale=2.0, classifier=CLF, sampler="ddpm", steps=2, batch=2, seed=0),
        dict(classifier=[B("None", None), B("'c'", "c")]),
        label="guided_samples[classifier]",
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.diffusion_priors
    # ------------------------------------------------------------------------------------------------------------
    M = "diffusion_priors"
    dp = "diffu.diffusion_priors:"
    T.sweep(
        M,
        dp + "classifier_constraint",
        "classifier y",
        dict(classifier=CLF, y=Y3),
        dict(
            classifier=[B("no num_classes", L(lambda: torch.nn.Identity()))],
            y=[
                B("float", L(lambda: torch.tensor([0.0, 2.0]))),
                B("3", L(lambda: torch.tensor([0, 3]))),
                B("batch 3", L(lambda: torch.tensor([0, 1, 2]))),
            ],
        ),
        post=lambda c: c(randn(2, 1, 8, 8)),
        alias=dict(y=("y", "labels")),
    )
    T.sweep(
        M,
        dp + "fidelity_constraint",
        "A y",
        dict(A=L(lambda: fx("block").A), y=L(lambda: randn(2, 1, 4, 4))),
        dict(
            A=CALL,
            y=[
                B("batch 1 (broadcast)", L(lambda: randn(1, 1, 4, 4))),
                B("shape", L(lambda: randn(2, 1, 4, 1))),
                B("nan", L(lambda: nan_at(randn(2, 1, 4, 4)))),
            ],
        ),
        post=lambda c: c(randn(2, 1, 8, 8)),
    )
    T.sweep(
        M,
        dp + "plug_and_play_timesteps",
        "steps",
        dict(steps=5, T=10),
        dict(steps=INT(1), T=[B("1", 1), B("0", 0), B("-1", -1), B("2.5", 2.5), B("True", True)]),
        ok_pred=lambda t: (t >= 0).all() and (t <= 9).all(),
    )

    def cons(x, t=None):
        return x.pow(2).flatten(1).mean(1)

    T.sweep(
        M,
        dp + "plug_and_play",
        "model constraint x_init schedule",
        dict(
            model=F("dummy"),
            constraint=cons,
            x_init=X,
            schedule=SCHED,
            steps=3,
            lr=0.01,
            weight=1.0,
            generator=GEN,
            progress=False,
        ),
        dict(
            model=CALL,
            constraint=CALL,
            x_init=[
                B("(2, 0, 8)", (2, 0, 8)),
                B("'x'", "x"),
                B("nan", TM(nan_at), NanOrErr()),
                B("int64", TM(lambda x: x.long())),
            ],
            schedule=[B("'linear'", "linear")],
            steps=INT(1),
            lr=POS(),
            weight=NONNEG(),
            anneal_weight=BOOL,
            noisy_constraint=BOOL,
            timesteps=[B("[10, 5, 0]", [10, 5, 0]), B("length 2", [5, 0]), B("[2.5, 1, 0]", [2.5, 1, 0])],
            generator=BADGEN,
            callback=[B("'cb'", "cb")],
            model_kwargs=[B("'y'", "y")],
        ),
    )
    T.sweep(
        M,
        dp + "plug_and_play_class_samples",
        "unet clf n",
        dict(unet=UC, clf=CLF, n=3, steps=2, seed=0),
        dict(
            unet=[B("unconditional", F("unet"))],
            clf=[B("'c'", "c")],
            n=INT(1),
            steps=INT(1),
            lr=POS(),
            weight=NONNEG(),
            noisy=BOOL,
            seed=[B("-1", -1), B("2.5", 2.5)],
            device=DEVICE,
        ),
    )
    T.sweep(
        M,
        dp + "plug_and_play_inpaint",
        "unet x_true",
        dict(unet=UC, x_true=IMG, sigma=0.05, steps=2, seed=0),
        dict(
            unet=[B("unconditional", F("unet"))],
            x_true=IMAGE(nan="err", channels=True) + [B("8x6", L(lambda: rand_img(2, 1, 8, 6)))],
            sigma=NONNEG(),
            steps=INT(1),
            lr=POS(),
            weight=NONNEG(),
            seed=[B("-1", -1)],
            device=DEVICE,
        ),
    )
    T.sweep(M, dp + "top_half_mask", "size", dict(size=8), dict(size=INT(2)))

    def pnp_result():
        return get(dp + "PlugAndPlayResult")(randn(1, 1, 4, 4), [1], [0.1], [0.2])

    T.case(
        M,
        "diffusion_priors.PlugAndPlayResult(ok)",
        dp + "PlugAndPlayResult",
        pnp_result,
        Doc(lambda r: r.t == [1], "a NamedTuple"),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.text_to_image
    # ------------------------------------------------------------------------------------------------------------
    M = "text_to_image"
    T.sweep(
        M,
        "diffu.text_to_image:sample_captions",
        "model captions",
        dict(model=F("mmdit"), captions=["a bag", "a dark coat"], scale=3.0, steps=2, seed=0, batch=2),
        dict(
            model=[B("a UNet", F("unet")), B("'m'", "m")],
            captions=[B("[]", []), B("a string", "a bag"), B("[3]", [3]), B("unknown word", ["a zebra"])],
            scale=SCALE,
            steps=INT(1, big=1001),
            seed=[B("-1", -1), B("2.5", 2.5)],
            batch=INT(1),
            device=DEVICE,
        ),
        alias=dict(captions=("captions", "caption")),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.representations
    # ------------------------------------------------------------------------------------------------------------
    M = "representations"
    rp = "diffu.representations:"
    NOT_UNET = [B("DiT", F("dit")), B("'m'", "m")]
    for fn in ("unet_levels", "unet_summary"):
        T.sweep(M, rp + fn, "model", dict(model=F("unet")), dict(model=NOT_UNET))
    T.sweep(
        M,
        rp + "unet_features",
        "model x t",
        dict(model=F("unet_rand"), x=X, t=T2, y=None, levels=None),
        dict(
            model=NOT_UNET,
            x=IMAGE(channels=True),
            t=[
                B("nan", L(lambda: torch.tensor([NAN, 1.0]))),
                B("-1", -1),
                B("batch 3", L(lambda: torch.tensor([1.0, 2.0, 3.0]))),
            ],
            y=[B("labels (unconditional net)", Y3)],
            levels=[B("['bogus']", ["bogus"]), B("[]", []), B("3", 3)],
        ),
    )
    T.sweep(
        M,
        rp + "pooled_features",
        "model x0 t schedule",
        dict(model=F("unet_rand"), x0=IMG, t=5, schedule=SCHED, generator=GEN, batch_size=1),
        dict(
            model=NOT_UNET,
            x0=IMAGE(nan="err", channels=True),
            t=[B("-1", -1), B("10 (= T)", 10), B("2.5", 2.5), B("True", True)],
            schedule=[B("'linear'", "linear")],
            generator=BADGEN,
            batch_size=INT(1),
            y=[B("batch 3", L(lambda: torch.tensor([0, 1, 2])))],
        ),
    )
    DATA = L(lambda: (rand_img(6, 1, 8, 8), torch.tensor([0, 1, 0, 1, 0, 1])))
    DATA2 = L(lambda: (rand_img(4, 1, 8, 8, seed=1), torch.tensor([0, 1, 0, 1])))
    T.sweep(
        M,
        rp + "probe_sweep",
        "model schedule train test ts",
        dict(
            model=F("unet_rand"),
            schedule=SCHED,
            train=DATA,
            test=DATA2,
            ts=[2],
            levels=["mid"],
            generator=GEN,
            batch_size=4,
        ),
        dict(
            model=NOT_UNET,
            ts=[B("[10]", [10]), B("[2.5]", [2.5]), B("[]", []), B("5", 5)],
            train=[
                B("images only", L(lambda: rand_img(6, 1, 8, 8))),
                B("float labels", L(lambda: (rand_img(6, 1, 8, 8), torch.zeros(6)))),
            ],
            test=[B("8x6 images", L(lambda: (rand_img(4, 1, 8, 6), torch.tensor([0, 1, 0, 1]))))],
            batch_size=INT(1),
        ),
    )
    TRF = L(lambda: randn(12, 3))
    TRY = L(lambda: torch.tensor([0, 1, 2] * 4))
    T.sweep(
        M,
        rp + "linear_probe",
        "train_feats train_y test_feats test_y",
        dict(
            train_feats=TRF,
            train_y=TRY,
            test_feats=L(lambda: randn(6, 3, seed=1)),
            test_y=L(lambda: torch.tensor([0, 1, 2] * 2)),
            l2=(0.01, 0.1),
        ),
        dict(
            train_feats=[
                B("nan", TM(nan_at)),
                B("rank 1", TM(lambda f: f[0])),
                B("batch 11", TM(lambda f: f[:11]), arg=("train_feats", "train_y")),
            ],
            train_y=[
                B("float", L(lambda: torch.tensor([0.0, 1, 2] * 4))),
                B("negative", L(lambda: torch.tensor([-1, 1, 2] * 4))),
            ],
            test_feats=[B("D=4", L(lambda: randn(6, 4))), B("nan", TM(nan_at))],
            l2=[B("(-1,)", (-1.0,)), B("(nan,)", (NAN,)), B("()", ()), B("-1", -1.0), B("'x'", "x")],
        ),
    )

    def probe_result():
        return get(rp + "linear_probe")(
            randn(12, 3), torch.tensor([0, 1, 2] * 4), randn(6, 3, seed=1), torch.tensor([0, 1, 2] * 2), l2=0.1
        )

    T.sweep(
        M,
        L(lambda: probe_result().predict),
        "f",
        dict(f=L(lambda: randn(5, 3))),
        dict(
            f=[
                B("D=4", L(lambda: randn(5, 4))),
                B("rank 1", L(lambda: randn(3))),
                B("nan", L(lambda: nan_at(randn(5, 3))), NanOrErr()),
            ]
        ),
        names=(rp + "ProbeResult",),
        label="ProbeResult.predict",
        alias=dict(f=("f", "feats")),
    )

    def zero_skips_run(model, levels):
        with get(rp + "zero_skips")(model, levels):
            return model(randn(2, 1, 8, 8), torch.tensor([1.0, 2.0]))

    T.sweep(
        M,
        L(lambda: zero_skips_run),
        "model levels",
        dict(model=L(fresh_unet_rand), levels=["up0"]),
        dict(model=NOT_UNET, levels=[B("['bogus']", ["bogus"]), B("[]", []), B("3", 3)]),
        names=(rp + "zero_skips",),
        label="zero_skips",
    )

    T.sweep(
        M,
        vz + "animation_html",
        "anim",
        dict(anim=L(lambda: get(vz + "animate_trajectory")(trajectory(), n_frames=2))),
        dict(anim=[B("'html'", "<p>"), B("None", None)]),
        ok_pred=lambda html: "<script" in html and "font-awesome" not in html,
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.book
    # ------------------------------------------------------------------------------------------------------------
    M = "book"
    bk = "diffu.book:"
    T.sweep(M, bk + "default_threads", ok_pred=lambda n: isinstance(n, int) and n >= 1)
    T.sweep(M, bk + "available_cores", ok_pred=lambda n: isinstance(n, int) and n >= 1)
    T.sweep(
        M,
        bk + "setup",
        "seed",
        dict(seed=0, device="cpu", threads=None, device_generators=False),
        dict(seed=INT(0), threads=INT(1), device=DEVICE, device_generators=BOOL),
        post=lambda ch: ch.gen(1),
    )
    CH = L(lambda: get(bk + "setup")(0, device="cpu"))
    T.sweep(
        M,
        L(lambda: CH().gen),
        "offset",
        dict(offset=1, device=None),
        dict(offset=[B("-1", -1), B("2.5", 2.5), B("True", True), B("'1'", "1")], device=DEVICE),
        names=(bk + "Chapter",),
        label="Chapter.gen",
    )
    T.sweep(
        M,
        bk + "null_labels",
        "n model",
        dict(n=3, model=UC, device=None),
        dict(
            n=[B("-1", -1), B("2.5", 2.5), B("True", True)],
            model=[B("unconditional", F("unet")), B("'m'", "m")],
            device=DEVICE,
        ),
        ok_pred=lambda y: (y == 3).all(),
    )
    T.sweep(
        M,
        bk + "Unconditional",
        "model",
        dict(model=UC),
        dict(model=[B("'m'", "m"), B("a function", lambda x, t: x)]),
        post=lambda m: m(randn(2, 1, 8, 8), torch.tensor([1.0, 2.0])),
    )
    T.sweep(
        M,
        L(lambda: get(bk + "Unconditional")(fx("unet_cond"))),
        "x t",
        dict(x=X, t=T2),
        dict(x=IMAGE()[2:5], y=[B("labels", Y3)]),
        names=(bk + "Unconditional",),
        label="Unconditional.forward",
    )
    RD = L(results_dir)
    T.sweep(
        M,
        bk + "result_path",
        "name directory",
        dict(name="guidance", directory=RD),
        dict(
            name=[
                B("'../x'", "../x"),
                B("''", ""),
                B("3", 3),
                B(
                    "missing",
                    "nonexistent_result",
                    Err("name", "nonexistent_result", types=(ValueError, TypeError, OSError)),
                ),
            ],
            directory=[
                B("3", 3),
                B(
                    "missing dir",
                    "/nonexistent",
                    Err("directory", "/nonexistent", types=(ValueError, TypeError, OSError)),
                ),
            ],
        ),
    )
    T.sweep(
        M,
        bk + "load_result",
        "name directory",
        dict(name="guidance", directory=RD),
        dict(name=[B("'x.txt'", "x.txt"), B("3", 3), B("None", None)], directory=[B("3", 3)]),
    )
    _ = (PTS, gen)


def fdfmnist():
    from .fixtures import _CACHE

    if "fdfmnist" not in _CACHE:
        _CACHE["fdfmnist"] = get(ME + "FDFMNIST")(reference=rand_img(4, 1, 28, 28, seed=2), batch_size=2)
    return _CACHE["fdfmnist"]


def fresh_unet_rand():
    from .fixtures import _perturbed, _unet

    return _perturbed(_unet())
