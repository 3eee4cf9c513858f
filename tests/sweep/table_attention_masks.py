"""Probes of chapter §6's interpretable segmentation: diffu.data.textured (Fashion-MNIST on textured backgrounds,
plain foreground masks) and diffu.segmentation.attention (masks from the attention to the object's word, Otsu's
threshold, the IoU table).

The attention probes use the sweep's one-block ``mmdit`` on 8 × 8 images (a 2 × 2 patch grid) and its
``linear_schedule(10)``, so timesteps lie in [0, 9] and the only block is layer 0.
"""

from __future__ import annotations

import torch

from .fixtures import F, fx, gen, rand_img
from .kit import BOOL, CALL, CHOICE, IMAGE, INF, INT, NAN, TENSOR, TM, UNIT, B, Doc, L, Ok, Table, get, to_255
from .kit import GEN as BADGEN

TX = "diffu.data.textured:"
AT = "diffu.segmentation.attention:"
SCHED = F("sched")  # linear_schedule(10)
MMDIT = F("mmdit")
IMGS = L(lambda: rand_img(2, 1, 8, 8, seed=3))
MASKS = L(lambda: (rand_img(2, 8, 8, seed=4) > 0).long())
CAPS = ["a photo of a bag", "an ankle boot"]
IMG_IN = IMAGE(nan="err", channels=True) + [
    B("0-255", TM(to_255)),
    B("size 4", TM(lambda x: x[..., :4, :4])),
    B("float64 for a float32 model", TM(lambda x: x.double())),
]
CAPTIONS = [
    B("3", 3),
    B("one for two images", ["a bag"]),
    B("outside the vocabulary", ["a cat", "a cat"]),
    B("no class noun", ["a photo of", "a photo of"]),
    B("None", None),
]
GEN0 = L(lambda: gen(0))


def in_unit(x) -> bool:
    return bool(torch.isfinite(x).all()) and float(x.min()) >= 0 and float(x.max()) <= 1


def build(T: Table) -> None:
    M = "data.textured"
    T.sweep(
        M,
        TX + "textured_fashion",
        "n",
        dict(n=2, seed=0, split="test", size=8, textures=("brick",), contrast=(0.1, 0.9), threshold=0.05),
        dict(
            n=INT(1) + [B("2001", 2001)],
            seed=INT(0),
            split=CHOICE(B("None", None)),
            size=INT(8),
            textures=[B("'brick'", "brick"), B("unknown", ("lena",)), B("empty", ()), B("None", None)],
            contrast=[
                B("scalar", 0.5),
                B("reversed", (0.9, 0.1)),
                B("nan end", (NAN, 0.5)),
                B("'a'", ("a", 0.5)),
                B("1.5", (0.0, 1.5)),
                B("triple", (0.1, 0.5, 0.9)),
            ],
            threshold=UNIT(extra=[B("1", 1.0)]),
        ),
        ok_pred=lambda r: r[0].shape == (2, 1, 8, 8) and r[1].shape == (2, 8, 8) and r[2].shape == (2,),
    )
    T.case(
        M,
        "data.textured.textured_fashion: the same seed gives the same images, masks and labels",
        TX + "textured_fashion",
        lambda: all(
            torch.equal(a, b)
            for a, b in zip(
                get(TX + "textured_fashion")(3, seed=4, size=8), get(TX + "textured_fashion")(3, seed=4, size=8)
            )
        ),
        Doc(bool, "deterministic in seed"),
    )
    T.sweep(
        M,
        TX + "foreground_masks",
        "images",
        dict(images=IMGS, threshold=0.05),
        dict(images=IMAGE(nan="err", channels=True) + [B("0-255", TM(to_255))], threshold=UNIT(extra=[B("1", 1.0)])),
        ok_pred=lambda m: m.shape == (2, 8, 8) and m.dtype == torch.int64,
    )

    T.sweep(
        M,
        TX + "shifted_items",
        "images max_shift",
        dict(images=IMGS, max_shift=2, seed=0, threshold=0.05),
        dict(
            images=IMAGE(nan="err", channels=True) + [B("0-255", TM(to_255))],
            max_shift=INT(0) + [B("8 (the image size)", 8)],
            seed=INT(0),
            threshold=UNIT(extra=[B("1", 1.0)]),
        ),
        ok_pred=lambda r: r[0].shape == (2, 1, 8, 8) and r[1].shape == (2, 8, 8) and r[1].dtype == torch.int64,
    )

    M = "segmentation.attention"
    T.sweep(
        M,
        AT + "word_positions",
        "tokenizer captions",
        dict(tokenizer=L(lambda: fx("mmdit").tokenizer), captions=CAPS),
        dict(
            tokenizer=[B("list", ["a", "bag"]), B("None", None)],
            captions=[B("3", 3), B("empty", []), B("no class noun", ["a photo of"]), B("[3]", [3]), B("None", None)],
            token=[B("3", 3), B("'coat'", "coat"), B("'!'", "!")],
        ),
        ok_pred=lambda p: p == [[5], [2, 3]],
    )
    T.sweep(
        M,
        AT + "attention_masks",
        "model images captions schedule",
        dict(model=MMDIT, images=IMGS, captions=CAPS, schedule=SCHED, t=5, generator=GEN0),
        dict(
            model=CALL + [B("a UNet", F("unet"))],
            images=IMG_IN,
            captions=CAPTIONS,
            schedule=[B("'linear'", "linear"), B("None", None)],
            t=[B("10", 10), B("-1", -1), B("2.5", 2.5), B("nan", NAN), B("'5'", "5"), B("[]", []), B("None", None)],
            layers=[B("1", 1), B("-1", -1), B("[0, 0]", [0, 0]), B("[]", []), B("'0'", "0")],
            heads=[B("2", 2), B("2.5", 2.5), B("[0, 0]", [0, 0])],
            token=[B("3", 3), B("'coat'", "coat")],
            keys=CHOICE(),
            upsample=CHOICE(),
            normalize=BOOL + [B("1", 1)],
            generator=BADGEN,
        ),
        ok_pred=lambda m: m.shape == (2, 8, 8) and in_unit(m),
    )
    T.case(
        M,
        "segmentation.attention.attention_masks: the same generator seed gives the same maps",
        AT + "attention_masks",
        lambda: torch.equal(
            get(AT + "attention_masks")(
                fx("mmdit"), rand_img(2, 1, 8, 8, seed=3), CAPS, fx("sched"), t=[2, 7], generator=gen(5)
            ),
            get(AT + "attention_masks")(
                fx("mmdit"), rand_img(2, 1, 8, 8, seed=3), CAPS, fx("sched"), t=[2, 7], generator=gen(5)
            ),
        ),
        Doc(bool, "deterministic in the generator"),
    )
    T.sweep(
        M,
        AT + "threshold_maps",
        "maps",
        dict(maps=L(lambda: torch.rand(2, 8, 8, generator=gen(0))), threshold="otsu"),
        dict(
            maps=TENSOR(nan="err"),
            threshold=[B("'mean'", "mean"), NAN, B("inf", INF), B("None", None), B("True", True)],
        ),
        ok_pred=lambda m: m.shape == (2, 8, 8) and m.dtype == torch.int64,
    )
    T.sweep(
        M,
        AT + "attention_iou_table",
        "model images masks captions schedule",
        dict(
            model=MMDIT,
            images=IMGS,
            masks=MASKS,
            captions=CAPS,
            schedule=SCHED,
            timesteps=[2, 8],
            generator=GEN0,
            progress=False,
        ),
        dict(
            model=CALL,
            images=IMG_IN,
            masks=[
                B("float", TM(lambda m: m.float())),
                B("bool", TM(lambda m: m.bool())),
                B("values 0/2", TM(lambda m: 2 * m)),
                B("shape", TM(lambda m: m[:, :4])),
                B("rank-1", TM(lambda m: m[0])),
                B("an empty mask", TM(lambda m: torch.zeros_like(m))),
                B("list", TM(lambda m: m.tolist())),
                B("None", None),
            ],
            captions=CAPTIONS,
            schedule=[B("'linear'", "linear")],
            timesteps=[B("5", 5), B("[]", []), B("[10]", [10]), B("[2.5]", [2.5]), B("'a'", "a"), B("None", None)],
            token=[B("'coat'", "coat")],
            keys=CHOICE(),
            upsample=CHOICE(),
            threshold=[B("'gmm'", "gmm"), NAN],
            generator=BADGEN,
            progress=BOOL,
        ),
        names=(AT + "attention_iou_table", AT + "AttentionIoU"),
        ok_pred=lambda r: (
            isinstance(r, get(AT + "AttentionIoU"))
            and r.iou.shape == (2, 2, 2)
            and r.mean().shape == (2, 2)
            and r.layers == (0, "mean")
        ),
    )
    T.case(
        M,
        "segmentation.attention.attention_iou_table(ok): IoUs and baselines in [0, 1]",
        (AT + "attention_iou_table", AT + "AttentionIoU"),
        lambda: get(AT + "attention_iou_table")(
            fx("mmdit"),
            rand_img(2, 1, 8, 8, seed=3),
            MASKS(),
            CAPS,
            fx("sched"),
            timesteps=[3],
            generator=gen(1),
            progress=False,
        ),
        Ok(lambda r: all(in_unit(v) for v in (r.iou, r.image_otsu, r.image_otsu_best, r.all_foreground))),
    )
