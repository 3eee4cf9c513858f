"""Probes of chapter §6.2's segmentation package: diffu.segmentation.masks (encodings and the baseline loss),
.ensemble (Wolleb et al.'s implicit ensembles) and .recursive (recursive noise diffusion).

The ensemble probes use the sweep's one-channel ``concat`` network with two classes in analog bits (one channel);
the recursive probes build a two-class :class:`~diffu.nn.concat.ConcatUNet` of their own (training changes it).
"""

from __future__ import annotations

import torch

from .fixtures import GEN, F, rand_img
from .kit import BOOL, CALL, CHOICE, IMAGE, INT, NONNEG, TENSOR, TM, B, Doc, Err, L, Table, get
from .kit import GEN as BADGEN

MA = "diffu.segmentation.masks:"
EN = "diffu.segmentation.ensemble:"
RE = "diffu.segmentation.recursive:"
SCHED = L(lambda: get("diffu.schedules:linear_schedule")(20))


def labels(n=2, size=8, k=4, seed=0):
    return torch.randint(0, k, (n, size, size), generator=torch.Generator().manual_seed(seed))


LAB = L(labels)
LAB2 = L(lambda: labels(k=2))
BAD_LABELS = [
    B("float", TM(lambda y: y.float())),
    B("out of range", TM(lambda y: y + 4)),
    B("rank-1", TM(lambda y: y[0])),
    B("list", TM(lambda y: y.tolist())),
    B("None", None),
]


def net2():
    with get("diffu.train:seeded")(0):
        return get("diffu.nn.concat:ConcatUNet")(
            in_channels=2, out_channels=2, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
            image_size=8, time_scale=1000.0,
        )  # fmt: skip


def build(T: Table) -> None:
    M = "segmentation.masks"
    for name in ("one_hot", "analog_bits"):
        T.sweep(
            M,
            MA + name,
            "labels num_classes",
            dict(labels=LAB, num_classes=4),
            dict(labels=BAD_LABELS, num_classes=INT(2), dtype=[B("int64", torch.int64), B("'float'", "float")]),
            ok_pred=lambda x: x.ndim == 4 and set(x.unique().tolist()) <= {-1.0, 1.0},
        )
    OH = L(lambda: get(MA + "one_hot")(labels(), 4))
    BITS = L(lambda: get(MA + "analog_bits")(labels(), 4))
    T.sweep(M, MA + "from_one_hot", "x", dict(x=OH), dict(x=IMAGE(nan="err", rank=True)),
            ok_pred=lambda y: torch.equal(y, labels()))  # fmt: skip
    T.sweep(
        M,
        MA + "from_analog_bits",
        "x num_classes",
        dict(x=BITS, num_classes=4),
        dict(x=IMAGE(nan="err", channels=True), num_classes=INT(2) + [B("8", 8)]),
        ok_pred=lambda y: torch.equal(y, labels()),
    )
    T.sweep(
        M,
        MA + "encode_masks",
        "labels num_classes encoding",
        dict(labels=LAB, num_classes=4, encoding="bits"),
        dict(labels=BAD_LABELS, num_classes=INT(2), encoding=CHOICE()),
        ok_pred=lambda x: x.shape == (2, 2, 8, 8),
    )
    T.sweep(
        M,
        MA + "decode_masks",
        "x num_classes encoding",
        dict(x=OH, num_classes=4, encoding="onehot"),
        dict(x=IMAGE(nan="err", channels=True), num_classes=INT(2) + [B("5", 5)], encoding=CHOICE()),
        ok_pred=lambda y: torch.equal(y, labels()),
    )
    T.sweep(
        M,
        MA + "encoding_channels",
        "num_classes encoding",
        dict(num_classes=5, encoding="bits"),
        dict(num_classes=INT(2), encoding=CHOICE()),
        ok_pred=lambda c: c == 3,
    )
    T.sweep(
        M,
        MA + "segmentation_loss",
        "logits labels",
        dict(logits=L(lambda: rand_img(2, 4, 8, 8, seed=3)), labels=LAB),
        dict(
            logits=IMAGE(nan="either") + [B("channels-3", TM(lambda x: x[:, :1]))],
            labels=BAD_LABELS + [B("shape", TM(lambda y: y[:, :4]))],
            dice_weight=NONNEG(),
            eps=NONNEG() + [B("0", 0.0)],
        ),
        ok_pred=lambda v: v.ndim == 0 and bool(torch.isfinite(v)),
    )

    M = "segmentation.ensemble"
    MASK = L(lambda: get(MA + "analog_bits")(labels(k=2), 2))
    T.sweep(
        M,
        EN + "mask_diffusion_loss",
        "model schedule masks_encoded images",
        dict(
            model=F("concat"),
            schedule=SCHED,
            masks_encoded=MASK,
            images=L(lambda: rand_img(2, 1, 8, 8, seed=4)),
            generator=GEN,
        ),  # fmt: skip
        dict(
            model=CALL,
            schedule=[B("'linear'", "linear")],
            masks_encoded=IMAGE(nan=None),
            images=IMAGE(nan=None) + [B("batch+1", TM(lambda c: torch.cat([c, c[:1]])))],
            generator=BADGEN,
        ),
        ok_pred=lambda v: v.ndim == 0,
    )
    T.sweep(
        M,
        EN + "segment",
        "model images schedule",
        dict(
            model=F("concat"),
            images=L(lambda: rand_img(2, 1, 8, 8, seed=5)),
            schedule=SCHED,
            num_classes=2,
            encoding="bits",
            steps=2,
            ensemble=2,
            generator=GEN,
            progress=False,
        ),  # fmt: skip
        dict(
            model=CALL,
            images=IMAGE(nan="err"),
            schedule=[B("'linear'", "linear")],
            num_classes=INT(2),
            encoding=CHOICE(),
            steps=INT(1, big=21),
            sampler=CHOICE(),
            ensemble=INT(1),
            generator=BADGEN,
            progress=BOOL,
            callback=[B("'cb'", "cb")],
        ),
        names=(EN + "segment", EN + "Segmentation"),
        ok_pred=lambda s: s.samples.shape == (2, 2, 1, 8, 8) and s.labels.shape == (2, 8, 8),
    )
    T.case(
        M,
        "segmentation.ensemble.segment: the same generator seed gives the same ensemble",
        EN + "segment",
        lambda: torch.equal(
            *[
                get(EN + "segment")(
                    fx_concat(),
                    rand_img(1, 1, 8, 8, seed=6),
                    SCHED.fn(),
                    num_classes=2,
                    encoding="bits",
                    steps=2,
                    ensemble=2,
                    progress=False,
                    generator=torch.Generator().manual_seed(1),
                ).samples  # fmt: skip
                for _ in range(2)
            ]
        ),
        Doc(bool, "deterministic in the generator"),
    )

    M = "segmentation.recursive"
    NET = L(net2)
    T.sweep(
        M,
        RE + "recursive_train_step",
        "model optimizer images labels",
        dict(
            model=NET,
            optimizer=L(lambda: torch.optim.SGD(net2().parameters(), lr=1e-3)),
            images=L(lambda: rand_img(2, 1, 8, 8, seed=7)),
            labels=LAB2,
            num_classes=2,
            steps=2,
            generator=GEN,
        ),  # fmt: skip
        dict(
            model=CALL,
            optimizer=[B("'adam'", "adam")],
            images=IMAGE(nan="err"),
            labels=BAD_LABELS + [B("batch-1", TM(lambda y: y[:1]))],
            num_classes=INT(2),
            steps=INT(1),
            ce_weight=NONNEG(),
            generator=BADGEN,
        ),
        ok_pred=lambda v: v.shape == (2,) and bool(torch.isfinite(v).all()),
    )
    T.sweep(
        M,
        RE + "recursive_segment",
        "model images",
        dict(
            model=NET,
            images=L(lambda: rand_img(2, 1, 8, 8, seed=8)),
            num_classes=2,
            steps=2,
            ensemble=2,
            generator=GEN,
            progress=False,
        ),  # fmt: skip
        dict(
            model=CALL,
            images=IMAGE(nan="err"),
            num_classes=INT(2),
            steps=INT(1),
            ensemble=INT(1),
            generator=BADGEN,
            progress=BOOL,
            callback=[B("'cb'", "cb")],
        ),
        ok_pred=lambda s: s.samples.shape == (2, 2, 2, 8, 8),
    )
    T.sweep(
        M,
        RE + "RecursiveLevelLoss",
        "num_classes",
        dict(num_classes=2, steps=2),
        dict(num_classes=INT(2), steps=INT(1), ce_weight=NONNEG()),
        ok_pred=lambda f: f.level == 0 and f.steps == 2,
    )

    def level_loss(*args, **kw):
        return get(RE + "RecursiveLevelLoss")(2, steps=2)(*args, **kw)

    T.sweep(
        M,
        L(lambda: level_loss),
        "model images labels",
        dict(model=NET, images=L(lambda: rand_img(2, 1, 8, 8, seed=7)), labels=LAB2, generator=GEN),
        dict(
            model=CALL,
            images=IMAGE(nan="err"),
            labels=BAD_LABELS + [B("batch-1", TM(lambda y: y[:1]))],
            generator=BADGEN,
        ),  # fmt: skip
        names=(RE + "RecursiveLevelLoss",),
        label="RecursiveLevelLoss()",
        ok_pred=lambda v: v.ndim == 0 and bool(torch.isfinite(v)),
    )
    build_extra(T)
    build_evaluation(T)
    build_latent(T)


def build_extra(T: Table) -> None:
    """diffu.data.phantoms.ellipse_mask (the phantoms' shared ellipse) and diffu.nn.segnet (the UNet baseline)."""
    M = "data.phantoms"
    PH = "diffu.data.phantoms:"

    def grid():
        c = torch.linspace(-1, 1, 8)
        return torch.meshgrid(-c, c, indexing="ij")

    T.sweep(
        M,
        PH + "ellipse_mask",
        "xx yy x0 y0 a b phi",
        dict(
            xx=L(lambda: grid()[1]),
            yy=L(lambda: grid()[0]),
            x0=L(lambda: torch.zeros(3)),
            y0=L(lambda: torch.zeros(3)),
            a=L(lambda: torch.full((3,), 0.5)),
            b=L(lambda: torch.full((3,), 0.3)),
            phi=L(lambda: torch.tensor([0.0, 0.5, 1.0])),
        ),  # fmt: skip
        dict(
            xx=[B("rank-1", TM(lambda x: x[0])), B("list", TM(lambda x: x.tolist())), B("None", None)],
            yy=[B("shape", TM(lambda x: x[:, :4]))],
            x0=[B("length 2", L(lambda: torch.zeros(2)))],
        ),
        ok_pred=lambda m: m.shape == (3, 8, 8) and m.dtype == torch.bool and bool(m[:, 3:5, 3:5].all()),
    )

    M = "nn.segnet"
    SN = "diffu.nn.segnet:SegmentationUNet"

    def segnet():
        with get("diffu.train:seeded")(0):
            return get(SN)(in_channels=1, out_channels=3, channels=8, channel_mult=(1, 2), num_res_blocks=1,
                           attn_resolutions=(), image_size=8)  # fmt: skip

    T.sweep(
        M,
        L(lambda: segnet()),
        "x",
        dict(x=L(lambda: rand_img(2, 1, 8, 8, seed=9))),
        dict(
            x=IMAGE(nan=None, channels=True),
            t=[B("5.0", 5.0)],
            y=[B("labels", L(lambda: torch.tensor([0, 1])))],
        ),
        names=(SN,),
        label="SegmentationUNet",
        ok_pred=lambda z: z.shape == (2, 3, 8, 8),
    )
    T.case(
        M,
        "nn.segnet.SegmentationUNet(out_channels=1)",
        SN,
        lambda: get(SN)(out_channels=1, image_size=8, channel_mult=(1, 2)),
        Err("out_channels"),
    )


def build_evaluation(T: Table) -> None:
    M = "segmentation.evaluation"
    EV = "diffu.segmentation.evaluation:"
    SAMPLES = L(lambda: get(MA + "one_hot")(labels(), 4)[None].repeat(4, 1, 1, 1, 1))
    T.sweep(
        M,
        EV + "ensemble_dice",
        "samples target num_classes",
        dict(samples=SAMPLES, target=LAB, num_classes=4, sizes=(1, 2, 4)),
        dict(
            samples=TENSOR(nan="err") + [B("batch+1", TM(lambda x: torch.cat([x, x[:, :1]], 1)))],
            target=BAD_LABELS,
            num_classes=INT(2),
            encoding=CHOICE(),
            sizes=[B("(5,)", (5,)), B("()", ()), B("3", 3), B("(0,)", (0,))],
            ignore_background=BOOL,
        ),
        ok_pred=lambda d: sorted(d) == [1, 2, 4] and all(v.shape == (2, 3) for v in d.values()),
    )
    U = L(lambda: rand_img(2, 1, 8, 8, seed=11)[:, 0].abs())
    T.sweep(
        M,
        EV + "uncertainty_error",
        "uncertainty pred target",
        dict(uncertainty=U, pred=LAB, target=L(lambda: labels(seed=1)), bins=4),
        dict(
            uncertainty=TENSOR(nan="err", ints=False) + [B("int64", TM(lambda u: u.long()))],
            pred=[B("float", TM(lambda y: y.float())), B("shape", TM(lambda y: y[:, :4])), B("None", None)],
            target=[B("bool", TM(lambda y: y > 0)), B("list", TM(lambda y: y.tolist()))],
            bins=INT(1) + [B("too many", 10_000)],
        ),
        names=(EV + "uncertainty_error", EV + "UncertaintyError"),
        ok_pred=lambda r: r.bin_error.shape == (4,) and 0 <= r.auroc <= 1,
    )


def fx_concat():
    from .fixtures import fx

    return fx("concat")


def latent_net():
    """A tiny structure-conditional ConcatUNet over the 2×2 latents (2 channels) of the sweep's autoencoder for 8×8
    images: the folded image has 16 channels."""
    with get("diffu.train:seeded")(0):
        return get("diffu.nn.concat:ConcatUNet")(
            in_channels=2, out_channels=2, cond_channels=16, channels=8, channel_mult=(1,), num_res_blocks=1,
            attn_resolutions=(), image_size=2, num_classes=3,
        ).eval()  # fmt: skip


def build_latent(T: Table) -> None:
    M = "segmentation.latent"
    LA = "diffu.segmentation.latent:"
    AE = L(lambda: fx_autoencoder())
    IMG8 = L(lambda: rand_img(2, 1, 8, 8, seed=12))
    T.sweep(M, LA + "sdseg_schedule", "T", dict(T=10), dict(T=INT(1)), ok_pred=lambda s: s.T == 10)
    T.sweep(
        M,
        LA + "image_condition",
        "images size",
        dict(images=IMG8, size=2),
        dict(images=IMAGE(nan="err"), size=INT(1) + [B("3 (no divisor)", 3), B("16", 16)]),
        ok_pred=lambda c: c.shape == (2, 16, 2, 2),
    )
    T.sweep(
        M,
        LA + "encode_structures",
        "autoencoder labels num_classes",
        dict(autoencoder=AE, labels=LAB, num_classes=4, batch_size=3),
        dict(
            autoencoder=[B("None", None), B("'ae'", "ae")], labels=BAD_LABELS, num_classes=INT(2), batch_size=INT(1)
        ),  # fmt: skip
        ok_pred=lambda z: z.shape == (2, 3, 2, 2, 2),
    )
    LAT = L(lambda: get(LA + "encode_structures")(fx_autoencoder(), labels(), 4))
    T.sweep(
        M,
        LA + "sdseg_loss",
        "model schedule images mask_latents",
        dict(model=L(latent_net), schedule=SCHED, images=IMG8, mask_latents=LAT, generator=GEN, x0_weight=1.0),
        dict(
            model=CALL,
            schedule=[B("None", None), B("'linear'", "linear")],
            images=IMAGE(nan="err") + [B("batch+1", TM(lambda x: torch.cat([x, x[:1]])))],
            mask_latents=TENSOR(nan="err") + [B("rank 4", TM(lambda z: z[:, 0]))],
            generator=BADGEN,
            x0_weight=NONNEG(),
        ),
        ok_pred=lambda v: v.ndim == 0 and bool(torch.isfinite(v)),
    )
    T.sweep(
        M,
        LA + "sdseg_segment",
        "model autoencoder images schedule",
        dict(
            model=L(latent_net),
            autoencoder=AE,
            images=IMG8,
            schedule=SCHED,
            num_structures=3,
            structures=[0, 2],
            steps=2,
            generator=GEN,
            progress=False,
        ),  # fmt: skip
        dict(
            model=CALL,
            autoencoder=[B("None", None), B("'ae'", "ae")],
            images=IMAGE(nan="err"),
            schedule=[B("None", None)],
            num_structures=INT(1),
            structures=[B("[]", []), B("[3]", [3]), B("[0, 0]", [0, 0]), B("'0'", "0"), B("[0.5]", [0.5])],
            steps=INT(1) + [B("21", 21)],
            generator=BADGEN,
            progress=BOOL,
        ),
        names=(LA + "sdseg_segment", LA + "LatentSegmentation"),
        ok_pred=lambda r: r.scores.shape == (2, 2, 8, 8) and r.structures == (0, 2) and r.labels.shape == (2, 8, 8),
    )


def fx_autoencoder():
    from .fixtures import fx

    return fx("autoencoder")
