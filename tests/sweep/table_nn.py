"""Probes of the networks (diffu.nn.*), the shipped weights (diffu.pretrained) and the recipes (diffu.recipes), with
the command lines of diffu.recipes and diffu.bench."""

from __future__ import annotations

import torch

from . import fixtures
from .fixtures import GEN, IMG, T2, Y3, F, X, fx, randn
from .kit import (
    BOOL,
    CHOICE,
    DEVICE,
    IMAGE,
    INT,
    NAN,
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
)
from .kit import (
    GEN as BADGEN,
)

U = "diffu.nn.unet:"
E = "diffu.nn.embeddings:"


def build_from(cls_path: str, cfg_path: str | None = None, forward=None):
    """A callable ``(**fields) -> result``: the network built from its config dataclass (or keyword arguments) with
    torch's global RNG forked, then ``forward(net)`` (so a bad field that only breaks the forward pass shows)."""

    def make(**kw):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            cls = get(cls_path)
            net = cls(get(cfg_path)(**kw)) if cfg_path else cls(**kw)
        return forward(net) if forward is not None else net

    return L(lambda: make)


T_BAD = [
    B("nan", TM(nan_at), NanOrErr()),
    B("batch 3", L(lambda: torch.tensor([1.0, 2.0, 3.0]))),
    B("rank 2", TM(lambda t: t[:, None])),
    B("'3'", "3"),
]
Y_BAD = [
    B("float", L(lambda: torch.tensor([0.0, 2.0]))),
    B("out of range 4", L(lambda: torch.tensor([0, 4]))),
    B("negative", L(lambda: torch.tensor([-1, 0]))),
    B("batch 3", L(lambda: torch.tensor([0, 1, 2]))),
    B("rank 2", L(lambda: torch.tensor([[0], [2]]))),
]
NET_X = IMAGE(channels=True) + [B("7x7", L(lambda: randn(2, 1, 7, 7)))]


def tmpdir():
    return fixtures.tmpdir()


def build(T):
    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.unet
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.unet"
    tiny = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8)

    def fwd(net):
        return net(randn(2, net.config.in_channels, 8, 8), torch.tensor([3.0, 5.0]))

    T.sweep(
        M,
        build_from(U + "UNet", U + "UNetConfig", fwd),
        "",
        dict(tiny),
        dict(
            in_channels=INT(1),
            channels=INT(1),
            channel_mult=[B("()", ()), B("(0,)", (0,)), B("(1.5,)", (1.5,)), B("'12'", "12")],
            num_res_blocks=[B("-1", -1), B("2.5", 2.5)],
            image_size=INT(1),
            dropout=[NAN, B("-0.1", -0.1), B("1.5", 1.5)],
            num_classes=[B("0", 0), B("-1", -1), B("2.5", 2.5)],
            groups=[B("0", 0), B("3", 3)],
            prediction=CHOICE(),
            time_scale=POS(),
        ),
        names=(U + "UNet", U + "UNetConfig"),
        label="UNet(config)",
    )
    T.sweep(
        M,
        F("unet"),
        "x t",
        dict(x=X, t=T2),
        dict(x=NET_X, t=T_BAD, y=[B("labels (unconditional net)", Y3)]),
        names=(U + "UNet",),
        label="UNet.forward",
    )
    T.sweep(
        M, F("unet_cond"), "x t", dict(x=X, t=T2, y=Y3), dict(y=Y_BAD), names=(U + "UNet",), label="UNet.forward[y]"
    )
    T.sweep(
        M,
        build_from(U + "KernelUNet", U + "KernelUNetConfig", lambda n: n(randn(2, 1, 3, 3), torch.tensor([1.0, 2.0]))),
        "",
        dict(kernel_size=3, canvas=4, channels=8, channel_mult=(1, 2), attn_resolutions=()),
        dict(
            kernel_size=[B("2", 2), B("0", 0), B("-1", -1), B("2.5", 2.5)],
            canvas=[B("2", 2), B("5 (odd)", 5)],
            channels=INT(1),
        ),
        names=(U + "KernelUNet", U + "KernelUNetConfig"),
        label="KernelUNet(config)",
    )
    T.sweep(
        M,
        F("kernel_unet"),
        "k_t t",
        dict(k_t=L(lambda: randn(2, 1, 3, 3)), t=T2),
        dict(k_t=TENSOR() + [B("5x5", L(lambda: randn(2, 1, 5, 5)))], t=T_BAD),
        names=(U + "KernelUNet",),
        label="KernelUNet.forward",
    )
    T.sweep(
        M,
        U + "group_norm",
        "channels groups",
        dict(channels=8, groups=4),
        dict(channels=INT(1), groups=INT(1) + [B("3", 3)]),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.inputs: the checks every forward starts with
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.inputs"
    ni = "diffu.nn.inputs:"
    T.sweep(
        M,
        ni + "check_input",
        "x shape",
        dict(x=X, shape=(1, None, None), multiple=2),
        dict(x=IMAGE(channels=True, nan=None) + [B("7x7", L(lambda: randn(2, 1, 7, 7)))]),
    )
    T.sweep(
        M,
        ni + "timesteps_for",
        "t n",
        dict(t=T2, n=2),
        dict(
            t=[
                NAN,
                B("batch 3", L(lambda: torch.tensor([1.0, 2.0, 3.0]))),
                B("rank 2", TM(lambda t: t[:, None])),
                B("'3'", "3"),
                B("bool", L(lambda: torch.tensor([True, False]))),
            ]
        ),
    )
    T.sweep(
        M,
        ni + "labels_for",
        "y num_classes n",
        dict(y=Y3, num_classes=3, n=2),
        dict(y=Y_BAD, num_classes=[B("None (unconditional)", None)]),
    )
    T.sweep(
        M,
        ni + "check_tokens",
        "ids vocab_size",
        dict(ids=L(lambda: torch.tensor([[1, 2, 0]])), vocab_size=10, max_len=4),
        dict(
            ids=[
                B("10", L(lambda: torch.tensor([[1, 10, 0]]))),
                B("negative", L(lambda: torch.tensor([[1, -1, 0]]))),
                B("float", L(lambda: torch.tensor([[1.0, 2.0, 0.0]]))),
                B("rank 1", L(lambda: torch.tensor([1, 2]))),
                B("too long", L(lambda: torch.ones(1, 5, dtype=torch.long))),
                B("list", [[1, 2]]),
            ]
        ),
    )
    T.sweep(
        M,
        ni + "check_int_tuple",
        "name value",
        dict(name="channel_mult", value=(1, 2)),
        dict(value=[B("()", ()), B("(0,)", (0,)), B("(1.5,)", (1.5,)), B("'12'", "12"), B("(True,)", (True,))]),
        alias=dict(value=("channel_mult",)),
    )
    T.sweep(
        M,
        ni + "make_config",
        "cls config kwargs",
        dict(cls=L(lambda: get(U + "UNetConfig")), config=None, kwargs=L(lambda: dict(channels=8))),
        dict(
            config=[B("'c'", "c"), B("a DiTConfig", L(lambda: get("diffu.nn.dit:DiTConfig")()))],
            kwargs=[B("unknown field", {"bogus": 1})],
        ),
        alias=dict(kwargs=("bogus",)),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.embeddings
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.embeddings"
    T.sweep(
        M,
        E + "timestep_embedding",
        "t dim",
        dict(t=T2, dim=8, max_period=1000.0),
        dict(
            t=[B("nan", TM(nan_at), NanOrErr()), B("rank 2", TM(lambda t: t[:, None])), B("'x'", "x")],
            dim=INT(2),
            max_period=[NAN, B("inf", float("inf")), B("1", 1.0), B("-1", -1.0)],
        ),
    )
    T.sweep(
        M,
        build_from(E + "TimestepEmbedder", None, lambda m: m(torch.tensor([1.0, 2.0]))),
        "",
        dict(hidden_size=8, frequency_size=16, max_period=1000.0),
        dict(hidden_size=INT(1), frequency_size=INT(2), max_period=[NAN, B("0", 0.0)]),
        names=(E + "TimestepEmbedder",),
        label="TimestepEmbedder",
    )
    T.sweep(
        M,
        build_from(E + "LabelEmbedder", None, lambda m: m(torch.tensor([0, 2]), generator=torch.Generator())),
        "",
        dict(num_classes=3, hidden_size=8, dropout_prob=0.1),
        dict(num_classes=INT(1), hidden_size=INT(1), dropout_prob=UNIT() + [B("1", 1.0)]),
        names=(E + "LabelEmbedder",),
        label="LabelEmbedder",
    )
    T.sweep(
        M,
        L(lambda: build_label_embedder()),
        "y",
        dict(y=Y3, generator=GEN),
        dict(y=Y_BAD[:3] + [Y_BAD[4], B("4 (> null 3)", L(lambda: torch.tensor([4, 0])))], generator=BADGEN),
        names=(E + "LabelEmbedder",),
        label="LabelEmbedder.forward",
    )
    T.sweep(
        M,
        build_from(E + "PatchEmbed", None, lambda m: m(randn(2, 1, 8, 8))),
        "",
        dict(in_channels=1, hidden_size=8, patch_size=4),
        dict(in_channels=INT(1), hidden_size=INT(1), patch_size=INT(1) + [B("3", 3)]),
        names=(E + "PatchEmbed",),
        label="PatchEmbed",
        alias=dict(patch_size=("patch_size", "patch size")),
    )
    T.sweep(
        M,
        L(lambda: build_from(E + "PatchEmbed")()(in_channels=1, hidden_size=8, patch_size=4)),
        "x",
        dict(x=X),
        dict(x=IMAGE(nan="either", channels=True) + [B("6x6", L(lambda: randn(2, 1, 6, 6)), arg=("x", "image size"))]),
        names=(E + "PatchEmbed",),
        label="PatchEmbed.forward",
    )
    T.sweep(
        M,
        E + "patchify",
        "x p",
        dict(x=X, p=4),
        dict(
            x=[B("rank 3", TM(lambda x: x[0])), B("list", TM(lambda x: x.tolist()))],
            p=[B("4.0", 4.0), B("0", 0), B("-1", -1), B("3", 3), B("True", True), B("'4'", "4")],
        ),
    )
    T.sweep(
        M,
        E + "unpatchify",
        "tokens p h",
        dict(tokens=L(lambda: randn(2, 4, 16)), p=4, h=2),
        dict(
            tokens=[B("rank 2", TM(lambda x: x[0])), B("list", TM(lambda x: x.tolist()))],
            p=[B("2.5", 2.5), B("0", 0), B("3", 3)],
            h=[B("3", 3), B("2.0", 2.0), B("0", 0)],
            w=[B("3", 3), B("-2", -2)],
        ),
        alias=dict(p=("p", "tokens"), h=("h", "tokens"), w=("w", "tokens")),
    )
    T.sweep(
        M,
        E + "sincos_2d_pos_embed",
        "dim grid_h",
        dict(dim=8, grid_h=2),
        dict(dim=[B("6", 6), B("0", 0), B("-4", -4), B("2.5", 2.5)], grid_h=INT(1), grid_w=[B("0", 0), B("2.5", 2.5)]),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.transformer
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.transformer"
    tr = "diffu.nn.transformer:"
    T.sweep(M, tr + "feed_forward", "dim", dict(dim=8, mlp_ratio=2.0), dict(dim=INT(1), mlp_ratio=POS()))
    T.sweep(
        M,
        build_from(tr + "Attention", None, lambda m: m(randn(2, 3, 8))),
        "",
        dict(dim=8, num_heads=2),
        dict(dim=INT(1), num_heads=INT(1) + [B("3", 3)], cross=BOOL),
        names=(tr + "Attention",),
        label="Attention",
    )
    T.sweep(
        M,
        L(lambda: build_from(tr + "Attention")()(dim=8, num_heads=2)),
        "x",
        dict(x=L(lambda: randn(2, 3, 8))),
        dict(
            x=TENSOR() + [B("width 9", L(lambda: randn(2, 3, 9)))],
            mask=[B("wrong shape", L(lambda: torch.ones(2, 1, 1, 4, dtype=torch.bool)))],
            context=[B("given (self-attention)", L(lambda: randn(2, 3, 8)))],
        ),
        names=(tr + "Attention",),
        label="Attention.forward",
    )
    T.sweep(
        M,
        L(lambda: build_from(tr + "Attention")()(dim=8, num_heads=2, cross=True)),
        "x",
        dict(x=L(lambda: randn(2, 3, 8)), context=L(lambda: randn(2, 2, 8))),
        dict(
            context=[B("None", None), B("width 9", L(lambda: randn(2, 2, 9))), B("batch 3", L(lambda: randn(3, 2, 8)))]
        ),
        names=(tr + "Attention",),
        label="Attention.forward[cross]",
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.dit
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.dit"
    dt = "diffu.nn.dit:"
    dit_tiny = dict(image_size=8, patch_size=4, hidden_size=16, depth=1, num_heads=2, num_classes=3)
    T.sweep(
        M,
        build_from(dt + "DiT", dt + "DiTConfig", lambda n: n(randn(2, 1, 8, 8), torch.tensor([1.0, 2.0]))),
        "",
        dict(dit_tiny),
        dict(
            image_size=INT(1) + [B("10", 10)],
            patch_size=INT(1) + [B("3", 3)],
            hidden_size=[B("15", 15), B("0", 0)],
            depth=[B("-1", -1), B("2.5", 2.5)],
            num_heads=INT(1) + [B("3", 3)],
            mlp_ratio=POS(),
            num_classes=[B("0", 0), B("-1", -1), B("2.5", 2.5)],
            class_dropout_prob=UNIT() + [B("1", 1.0)],
            conditioning=CHOICE(),
            learn_sigma=BOOL,
            in_channels=INT(1),
        ),
        names=(dt + "DiT", dt + "DiTConfig", "diffu.nn.dit:PatchTransformerConfig"),
        label="DiT(config)",
    )
    T.sweep(
        M,
        L(lambda: get(dt + "PatchTransformerConfig")(image_size=8, patch_size=4, hidden_size=16, num_heads=2).check),
        "",
        {},
        {},
        names=(dt + "PatchTransformerConfig",),
        label="PatchTransformerConfig.check",
    )
    T.sweep(
        M,
        L(lambda: lambda **kw: get(dt + "PatchTransformerConfig")(**kw).check()),
        "",
        dict(image_size=8, patch_size=4, hidden_size=16, num_heads=2),
        dict(
            patch_size=[B("3", 3), B("0", 0), B("-4", -4)], num_heads=[B("0", 0), B("3", 3)], hidden_size=[B("-4", -4)]
        ),
        names=(dt + "PatchTransformerConfig",),
        label="PatchTransformerConfig",
        ok=False,
    )
    T.sweep(
        M,
        F("dit"),
        "x t",
        dict(x=X, t=T2, y=Y3),
        dict(x=NET_X + [B("6x6", L(lambda: randn(2, 1, 6, 6)))], t=T_BAD, y=Y_BAD),
        names=(dt + "DiT",),
        label="DiT.forward",
    )
    T.sweep(
        M,
        L(lambda: train_mode_dit()),
        "x t",
        dict(x=X, t=T2, y=Y3, generator=GEN),
        dict(generator=BADGEN),
        names=(dt + "DiT",),
        label="DiT.forward[train]",
    )
    for blk in ("AdaLNZeroBlock", "AdaLNBlock", "InContextBlock", "CrossAttentionBlock"):
        cross = blk == "CrossAttentionBlock"
        C = L(lambda cross=cross: randn(2, 2, 16) if cross else randn(2, 16))
        T.sweep(
            M,
            build_from(
                dt + blk, None, lambda m, cross=cross: m(randn(2, 4, 16), randn(2, 2, 16) if cross else randn(2, 16))
            ),
            "",
            dict(dim=16, num_heads=2, mlp_ratio=2.0),
            dict(dim=INT(1), num_heads=INT(1) + [B("3", 3)], mlp_ratio=POS()),
            names=(dt + blk,),
            label=blk,
        )
        T.sweep(
            M,
            L(lambda blk=blk: build_from(dt + blk)()(dim=16, num_heads=2)),
            "x c",
            dict(x=L(lambda: randn(2, 4, 16)), c=C),
            dict(
                x=[B("rank 2", L(lambda: randn(4, 16))), B("width 15", L(lambda: randn(2, 4, 15)))],
                c=(
                    []
                    if blk == "InContextBlock"
                    else [
                        B("width 15", L(lambda cross=cross: randn(2, 2, 15) if cross else randn(2, 15))),
                        B("batch 3", L(lambda cross=cross: randn(3, 2, 16) if cross else randn(3, 16))),
                    ]
                ),
            ),
            names=(dt + blk,),
            label=f"{blk}.forward",
        )
    T.sweep(
        M,
        dt + "modulate",
        "x shift scale",
        dict(x=L(lambda: randn(2, 4, 16)), shift=L(lambda: randn(2, 16)), scale=L(lambda: randn(2, 16))),
        dict(
            shift=[B("width 15", L(lambda: randn(2, 15))), B("batch 3", L(lambda: randn(3, 16)))],
            scale=[B("rank 3", L(lambda: randn(2, 1, 16)))],
            x=[B("rank 2", L(lambda: randn(4, 16)))],
        ),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.mmdit, diffu.nn.text
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.mmdit"
    mm = "diffu.nn.mmdit:"
    vocab = L(lambda: tuple(get("diffu.captions:vocabulary")()))
    T.sweep(
        M,
        build_from(
            mm + "MMDiT",
            mm + "MMDiTConfig",
            lambda n: n(randn(2, 1, 8, 8), torch.tensor([1.0, 2.0]), text=["a bag", "a coat"]),
        ),
        "",
        dict(image_size=8, patch_size=4, hidden_size=16, depth=1, num_heads=2, vocab=vocab, max_len=12),
        dict(
            vocab=[B("()", ()), B("'bag'", "bag")],
            max_len=INT(2),
            text_depth=[B("-1", -1), B("2.5", 2.5)],
            depth=INT(1),
            num_heads=[B("3", 3), B("0", 0)],
            patch_size=[B("3", 3)],
        ),
        names=(mm + "MMDiT", mm + "MMDiTConfig"),
        label="MMDiT(config)",
    )
    T.sweep(
        M,
        F("mmdit"),
        "x t",
        dict(x=X, t=T2, text=["a photo of a bag", "a coat"]),
        dict(
            x=NET_X,
            t=T_BAD,
            text=[
                B("unknown word", ["a photo of a cat", "a coat"]),
                B("3 captions", ["a bag", "a coat", "a dress"]),
                B("out-of-vocabulary ids", L(lambda: torch.full((2, 12), 999))),
                B("negative ids", L(lambda: torch.full((2, 12), -1))),
                B("float ids", L(lambda: torch.ones(2, 12))),
                B("ids rank 1", L(lambda: torch.ones(12, dtype=torch.long))),
                B("int 3", 3),
            ],
            attention=[B("'x'", "x")],
        ),
        names=(mm + "MMDiT",),
        label="MMDiT.forward",
        alias=dict(text=("text", "caption", "captions")),
    )
    T.sweep(
        M,
        build_from(mm + "MMDiTBlock", None, lambda m: m(randn(2, 4, 16), randn(2, 3, 16), randn(2, 16))),
        "",
        dict(dim=16, num_heads=2, mlp_ratio=2.0, context_pre_only=False),
        dict(dim=INT(1), num_heads=INT(1) + [B("3", 3)], mlp_ratio=POS(), context_pre_only=BOOL),
        names=(mm + "MMDiTBlock",),
        label="MMDiTBlock",
    )
    T.sweep(
        M,
        L(lambda: build_from(mm + "MMDiTBlock")()(dim=16, num_heads=2)),
        "x ctx c",
        dict(x=L(lambda: randn(2, 4, 16)), ctx=L(lambda: randn(2, 3, 16)), c=L(lambda: randn(2, 16))),
        dict(
            ctx=[B("width 15", L(lambda: randn(2, 3, 15))), B("batch 3", L(lambda: randn(3, 3, 16)))],
            c=[B("width 15", L(lambda: randn(2, 15))), B("batch 3", L(lambda: randn(3, 16)))],
            x=[B("rank 2", L(lambda: randn(4, 16)))],
            attention=[B("'x'", "x")],
        ),
        names=(mm + "MMDiTBlock",),
        label="MMDiTBlock.forward",
    )
    QKV = {k: L(lambda: randn(2, 4, 16)) for k in ("q_x", "k_x", "v_x")}
    QKV.update({k: L(lambda: randn(2, 3, 16)) for k in ("q_c", "k_c", "v_c")})
    T.sweep(
        M,
        mm + "joint_attention",
        "q_x k_x v_x q_c k_c v_c num_heads",
        {**QKV, "num_heads": 2, "weights": None},
        dict(
            num_heads=INT(1) + [B("3", 3)],
            q_c=[B("width 15", L(lambda: randn(2, 3, 15)))],
            k_c=[B("batch 3", L(lambda: randn(3, 3, 16)))],
            weights=[B("'x'", "x")],
        ),
    )

    M = "nn.text"
    tx = "diffu.nn.text:"
    T.sweep(
        M,
        tx + "WordTokenizer",
        "words",
        dict(words=vocab, max_len=12),
        dict(words=[B("a string", "bag"), B("3", 3)], max_len=INT(2)),
        post=lambda tok: tok(["a bag"]),
    )

    def tok(name):
        return L(lambda: getattr(fx("tokenizer"), name))

    T.sweep(
        M,
        F("tokenizer"),
        "captions",
        dict(captions=["a photo of a bag"]),
        dict(
            captions=[
                B("unknown word", ["a photo of a cat"]),
                B("too long", [" ".join(["a"] * 12)]),
                B("3", 3),
                B("None", None),
                B("[3]", [3]),
            ],
            device=DEVICE,
        ),
        names=(tx + "WordTokenizer",),
        label="WordTokenizer.__call__",
        alias=dict(captions=("captions", "caption")),
    )
    T.sweep(
        M,
        tok("decode"),
        "ids",
        dict(ids=L(lambda: torch.tensor([[1, 2, 3, 0]]))),
        dict(
            ids=[
                B("999", L(lambda: torch.tensor([[1, 999]]))),
                B("negative", L(lambda: torch.tensor([[1, -5]]))),
                B("float", L(lambda: torch.tensor([[1.0, 2.0]]))),
            ]
        ),
        names=(tx + "WordTokenizer",),
        label="WordTokenizer.decode",
    )
    T.sweep(
        M,
        build_from(tx + "TextEncoder", None, lambda m: m(torch.tensor([[1, 2, 0]]))),
        "",
        dict(vocab_size=10, dim=8, max_len=4, depth=1, num_heads=2),
        dict(
            vocab_size=INT(1),
            dim=INT(1),
            max_len=INT(1),
            depth=[B("-1", -1), B("2.5", 2.5)],
            num_heads=INT(1) + [B("3", 3)],
        ),
        names=(tx + "TextEncoder",),
        label="TextEncoder",
    )
    T.sweep(
        M,
        L(lambda: build_from(tx + "TextEncoder")()(vocab_size=10, dim=8, max_len=4, num_heads=2)),
        "ids",
        dict(ids=L(lambda: torch.tensor([[1, 2, 0]]))),
        dict(
            ids=[
                B("out-of-vocabulary 10", L(lambda: torch.tensor([[1, 10, 0]]))),
                B("negative", L(lambda: torch.tensor([[1, -1, 0]]))),
                B("float", L(lambda: torch.tensor([[1.0, 2.0, 0.0]]))),
                B("rank 1", L(lambda: torch.tensor([1, 2]))),
                B("too long", L(lambda: torch.ones(1, 5, dtype=torch.long))),
            ]
        ),
        names=(tx + "TextEncoder",),
        label="TextEncoder.forward",
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.classifier
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.classifier"
    cl = "diffu.nn.classifier:"
    T.sweep(
        M,
        build_from(cl + "FMNISTClassifier", None, lambda m: m(randn(2, 1, 28, 28))),
        "",
        dict(width=8, feature_dim=16, num_classes=10),
        dict(width=INT(1) + [B("4", 4)], feature_dim=INT(1) + [B("4", 4)], num_classes=INT(1)),
        names=(cl + "FMNISTClassifier",),
        label="FMNISTClassifier",
    )
    FM = L(lambda: randn(2, 1, 28, 28))
    for meth in ("forward", "features"):
        T.sweep(
            M,
            L(lambda meth=meth: getattr(fx("fmnist_clf"), meth)),
            "x",
            dict(x=FM),
            dict(x=IMAGE(channels=True) + [B("8x8", L(lambda: randn(2, 1, 8, 8)))]),
            names=(cl + "FMNISTClassifier",),
            label=f"FMNISTClassifier.{meth}",
        )
    T.sweep(
        M,
        build_from(
            cl + "NoisyClassifier",
            cl + "NoisyClassifierConfig",
            lambda m: m(randn(2, 1, 8, 8), torch.tensor([1.0, 2.0])),
        ),
        "",
        dict(channels=8, channel_mult=(1, 2), attn_resolutions=(), image_size=8, num_classes=3),
        dict(
            channels=INT(1),
            num_classes=INT(1),
            image_size=INT(1),
            channel_mult=[B("()", ())],
            groups=[B("0", 0), B("3", 3)],
            num_res_blocks=[B("-1", -1), B("2.5", 2.5)],
        ),
        names=(cl + "NoisyClassifier", cl + "NoisyClassifierConfig"),
        label="NoisyClassifier(config)",
    )
    T.sweep(
        M,
        F("noisy_clf"),
        "x t",
        dict(x=X, t=T2),
        dict(x=NET_X, t=T_BAD),
        names=(cl + "NoisyClassifier",),
        label="NoisyClassifier.forward",
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.controlnet
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.controlnet"
    cn = "diffu.nn.controlnet:"
    T.sweep(
        M,
        cn + "zero_conv",
        "cin cout",
        dict(cin=2, cout=3, kernel_size=3),
        dict(cin=INT(1), cout=INT(1), kernel_size=INT(1) + [B("2 (even)", 2)]),
        post=lambda c: c(randn(1, 2, 5, 5)),
    )
    T.sweep(
        M,
        build_from(cn + "Restorer", cn + "RestorerConfig", lambda m: m(randn(2, 1, 8, 8))),
        "",
        dict(channels=8, channel_mult=(1, 2), groups=4),
        dict(
            channels=INT(1),
            in_channels=INT(1),
            channel_mult=[B("()", ()), B("(0,)", (0,))],
            groups=[B("0", 0), B("3", 3)],
        ),
        names=(cn + "Restorer", cn + "RestorerConfig"),
        label="Restorer(config)",
    )
    T.sweep(
        M,
        F("restorer"),
        "y",
        dict(y=IMG),
        dict(y=IMAGE(channels=True)),
        names=(cn + "Restorer",),
        label="Restorer.forward",
    )
    T.sweep(
        M,
        L(
            lambda: (
                lambda **kw: get(cn + "ControlNet")(**kw)(
                    randn(2, 1, 8, 8), torch.tensor([1.0, 2.0]), randn(2, 1, 8, 8)
                )
            )
        ),
        "",
        dict(base=F("unet"), cond_channels=1, hint_channels=4),
        dict(base=[B("'unet'", "unet"), B("DiT", F("dit"))], cond_channels=INT(1), hint_channels=INT(1)),
        names=(cn + "ControlNet",),
        label="ControlNet",
    )
    T.sweep(
        M,
        L(lambda: fx("controlled").control),
        "x t cond",
        dict(x=X, t=T2, cond=IMG),
        dict(
            cond=[
                B("channels 2", L(lambda: randn(2, 2, 8, 8))),
                B("size 4", L(lambda: randn(2, 1, 4, 4))),
                B("batch 3", L(lambda: randn(3, 1, 8, 8))),
            ],
            x=NET_X[:4],
        ),
        names=(cn + "ControlNet",),
        label="ControlNet.forward",
    )
    T.sweep(
        M,
        L(
            lambda: (
                lambda **kw: get(cn + "ControlledUNet")(**kw)(
                    randn(2, 1, 8, 8), torch.tensor([1.0, 2.0]), cond=randn(2, 1, 8, 8)
                )
            )
        ),
        "",
        dict(base=L(lambda: fresh_unet()), restorer=None, cond_channels=1, hint_channels=4),
        dict(base=[B("'unet'", "unet")], restorer=[B("'r'", "r")], cond_channels=INT(1)),
        names=(cn + "ControlledUNet",),
        label="ControlledUNet",
    )
    T.sweep(
        M,
        F("controlled"),
        "x t",
        dict(x=X, t=T2, cond=IMG, control_scale=1.0),
        dict(
            x=NET_X,
            t=T_BAD,
            cond=[
                B("None", None),
                B("channels 2", L(lambda: randn(2, 2, 8, 8))),
                B("int64", L(lambda: torch.ones(2, 1, 8, 8, dtype=torch.long))),
                B("nan", L(lambda: nan_at(randn(2, 1, 8, 8))), NanOrErr()),
            ],
            control_scale=[NAN, B("inf", float("inf")), B("'1'", "1"), B("True", True)],
            y=[B("labels (unconditional net)", Y3)],
        ),
        names=(cn + "ControlledUNet",),
        label="ControlledUNet.forward",
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.autoencoder
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.autoencoder"
    ae = "diffu.nn.autoencoder:"
    T.sweep(
        M,
        build_from(ae + "Autoencoder", ae + "AutoencoderConfig", lambda m: m(randn(2, 1, 8, 8))),
        "",
        dict(channels=8, latent_channels=2, groups=4),
        dict(channels=INT(1) + [B("6", 6)], latent_channels=INT(1), groups=INT(1), in_channels=INT(1)),
        names=(ae + "Autoencoder", ae + "AutoencoderConfig"),
        label="Autoencoder(config)",
    )
    AE_X = IMAGE(channels=True) + [B("6x6", L(lambda: randn(2, 1, 6, 6)))]
    for meth in ("encode", "moments", "forward"):
        T.sweep(
            M,
            L(lambda meth=meth: getattr(fx("autoencoder"), meth)),
            "x",
            dict(x=IMG),
            dict(x=AE_X),
            names=(ae + "Autoencoder",),
            label=f"Autoencoder.{meth}",
        )
    T.sweep(
        M,
        L(lambda: fx("autoencoder").decode),
        "z",
        dict(z=L(lambda: randn(2, 2, 2, 2))),
        dict(z=TENSOR() + [B("channels 3", L(lambda: randn(2, 3, 2, 2)))]),
        names=(ae + "Autoencoder",),
        label="Autoencoder.decode",
    )
    T.sweep(
        M,
        L(lambda: fx("autoencoder").latent_shape),
        "image_shape",
        dict(image_shape=(2, 1, 8, 8)),
        dict(image_shape=[B("(1, 8, 8)", (1, 8, 8)), B("(2, 1, 6, 6)", (2, 1, 6, 6)), B("'x'", "x")]),
        names=(ae + "Autoencoder",),
        label="Autoencoder.latent_shape",
    )
    T.sweep(
        M,
        L(lambda: fresh_autoencoder().set_scale_factor),
        "x",
        dict(x=IMG, batch_size=2),
        dict(x=[B("nan", TM(nan_at)), B("int64", TM(lambda x: x.long()))], batch_size=INT(1)),
        names=(ae + "Autoencoder",),
        label="Autoencoder.set_scale_factor",
    )
    T.sweep(
        M,
        ae + "autoencoder_loss",
        "model x",
        dict(model=L(fresh_autoencoder), x=IMG, generator=GEN, kl_weight=1e-6, momentum=0.1),
        dict(model=[B("'m'", "m")], x=AE_X, generator=BADGEN, kl_weight=[NAN, B("-1", -1.0)], momentum=UNIT()),
    )
    T.sweep(
        M,
        ae + "encode_images",
        "autoencoder x",
        dict(autoencoder=F("autoencoder"), x=IMG, batch_size=1),
        dict(autoencoder=[B("'a'", "a")], x=AE_X[2:5], batch_size=INT(1)),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.drunet
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.drunet"
    dr = "diffu.nn.drunet:"
    T.sweep(
        M,
        build_from(dr + "DRUNet", dr + "DRUNetConfig", lambda m: m(randn(2, 1, 8, 8), 0.1)),
        "",
        dict(channels=(4, 8), num_blocks=1),
        dict(
            channels=[B("()", ()), B("(0,)", (0,)), B("(4.5,)", (4.5,))],
            num_blocks=[B("-1", -1), B("2.5", 2.5)],
            in_channels=INT(1),
        ),
        names=(dr + "DRUNet", dr + "DRUNetConfig"),
        label="DRUNet(config)",
    )
    T.sweep(
        M,
        dr + "DRUNet",
        "config",
        dict(config=None),
        dict(config=[B("'x'", "x"), B("dict", {"channels": (4, 8)})]),
        post=lambda m: m(randn(2, 1, 8, 8), 0.1),
        label="DRUNet",
    )
    T.sweep(
        M,
        F("drunet"),
        "x sigma",
        dict(x=IMG, sigma=0.1),
        dict(
            x=IMAGE(channels=True),
            sigma=[
                NAN,
                B("inf", float("inf")),
                B("-0.1", -0.1),
                B("'0.1'", "0.1"),
                B("True", True),
                B("batch 3", L(lambda: torch.tensor([0.1, 0.1, 0.1]))),
                B("nan tensor", L(lambda: torch.tensor([0.1, NAN]))),
            ],
        ),
        names=(dr + "DRUNet",),
        label="DRUNet.forward",
    )
    FM28 = L(lambda: randn(2, 1, 28, 28).clamp(-1, 1))
    T.sweep(
        M,
        dr + "drunet_data",
        "x",
        dict(x=FM28, n_patches=2),
        dict(
            x=[B("rank 3", TM(lambda x: x[0])), B("int64", TM(lambda x: x.long())), B("nan", TM(nan_at))],
            n_patches=[B("-1", -1), B("2.5", 2.5), B("True", True)],
        ),
        alias=dict(n_patches=("n_patches", "n")),
    )
    T.sweep(
        M,
        dr + "drunet_loss",
        "model x",
        dict(model=F("drunet"), x=IMG, generator=GEN, sigma_max=0.2),
        dict(
            model=[B("'m'", "m")],
            x=IMAGE(channels=True),
            generator=BADGEN,
            sigma_max=[NAN, B("inf", float("inf")), B("-1", -1.0)],
        ),
    )
    T.sweep(
        M,
        dr + "natural_patches",
        "n",
        dict(n=2, size=8, seed=0, names=("moon",), scales=(1.0,)),
        dict(
            n=INT(1),
            size=INT(1) + [B("10**4", 10**4)],
            seed=[B("-1", -1), B("2.5", 2.5)],
            names=[B("('camera',)", ("camera",)), B("('bogus',)", ("bogus",)), B("()", ()), B("'moon'", "moon")],
            scales=[B("(0,)", (0.0,)), B("(-1,)", (-1.0,)), B("(nan,)", (NAN,)), B("()", ())],
        ),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.nn.mlp
    # ------------------------------------------------------------------------------------------------------------
    M = "nn.mlp"
    ml = "diffu.nn.mlp:MLPDenoiser"
    T.sweep(
        M,
        build_from(ml, None, lambda m: m(randn(4, 2), torch.tensor([1.0, 2.0, 3.0, 4.0]))),
        "",
        dict(dim=2, hidden=8, depth=1, t_dim=4),
        dict(
            dim=INT(1),
            hidden=INT(1),
            depth=INT(1),
            t_dim=INT(2),
            num_classes=[B("0", 0), B("-1", -1), B("2.5", 2.5)],
            prediction=CHOICE(),
            time_scale=POS(),
        ),
        names=(ml,),
        label="MLPDenoiser",
    )
    P4 = L(lambda: randn(4, 2))
    T4 = L(lambda: torch.tensor([1.0, 2.0, 3.0, 4.0]))
    T.sweep(
        M,
        F("mlp"),
        "x t",
        dict(x=P4, t=T4),
        dict(
            x=TENSOR() + [B("D=3", L(lambda: randn(4, 3)))],
            t=T_BAD[:1] + [B("batch 3", L(lambda: torch.tensor([1.0, 2.0, 3.0])))],
            y=[B("labels (unconditional net)", L(lambda: torch.tensor([0, 1, 0, 1])))],
        ),
        names=(ml,),
        label="MLPDenoiser.forward",
    )
    T.sweep(
        M,
        L(lambda: build_from(ml)()(dim=2, hidden=8, depth=1, t_dim=4, num_classes=3)),
        "x t",
        dict(x=P4, t=T4, y=L(lambda: torch.tensor([0, 1, 2, 3]))),
        dict(
            y=[
                B("out of range 4", L(lambda: torch.tensor([0, 1, 2, 4]))),
                B("float", L(lambda: torch.tensor([0.0, 1, 2, 3]))),
                B("batch 3", L(lambda: torch.tensor([0, 1, 2]))),
            ]
        ),
        names=(ml,),
        label="MLPDenoiser.forward[y]",
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.pretrained
    # ------------------------------------------------------------------------------------------------------------
    M = "pretrained"
    pr = "diffu.pretrained:"
    T.sweep(M, pr + "available", ok_pred=lambda names: "fmnist_unet" in names)
    T.sweep(M, pr + "info", "name", dict(name="fmnist_classifier"), dict(name=CHOICE(B("None", None))))
    T.sweep(
        M,
        pr + "load",
        "name",
        dict(name="fmnist_classifier", device=None, dtype=None),
        dict(
            name=CHOICE(B("path", "diffu/weights/fmnist_classifier.safetensors")),
            device=DEVICE,
            dtype=[B("int64", torch.int64), B("'float32'", "float32"), B("bool", torch.bool)],
        ),
    )
    T.sweep(
        M,
        pr + "build",
        "entry",
        dict(entry=L(lambda: get(pr + "info")("fmnist_classifier"))),
        dict(
            entry=[
                B("'x'", "x"),
                B("foreign arch", {"arch": "os:system", "config": {}}),
                B("config class as arch", {"arch": "diffu.nn.unet:UNetConfig", "config": {}}),
                B(
                    "unknown config key",
                    {"arch": "diffu.nn.unet:UNet", "config_class": "diffu.nn.unet:UNetConfig", "config": {"bogus": 1}},
                ),
                B("config 'x'", {"arch": "diffu.nn.unet:UNet", "config": "x"}),
                B("missing class", {"arch": "diffu.nn.unet:Bogus", "config": {}}),
                B("components 'x'", {"arch": "diffu.nn.unet:UNet", "config": {}, "components": "x"}),
            ]
        ),
        alias=dict(entry=("entry", "arch", "config", "config_class", "bogus", "components")),
    )
    T.sweep(
        M,
        pr + "sha256",
        "path",
        dict(path=L(lambda: str(get(pr + "WEIGHTS_DIR") / "manifest.json"))),
        dict(
            path=[
                B(
                    "missing file",
                    "/nonexistent/sweep.bin",
                    Err("path", "/nonexistent/sweep.bin", types=(ValueError, TypeError, OSError)),
                ),
                B("3.5", 3.5),
                B("a directory", "/tmp", Err("path", "/tmp", types=(ValueError, TypeError, OSError))),
            ]
        ),
    )

    # ------------------------------------------------------------------------------------------------------------
    # diffu.recipes and the command lines
    # ------------------------------------------------------------------------------------------------------------
    M = "recipes"
    rc = "diffu.recipes:"
    T.sweep(
        M,
        rc + "network_entry",
        "model",
        dict(model=F("unet"), network=None),
        dict(
            model=[B("'m'", "m"), B("a Module without config", L(lambda: torch.nn.Linear(2, 2)))],
            network=[B("'x'", "x"), B("[1]", [1])],
        ),
        ok_pred=lambda e: e["arch"] == "diffu.nn.unet:UNet",
        alias=dict(model=("model", "network")),
    )
    OUTD = L(tmpdir)
    # no valid baseline: a real training run takes seconds (the recipes are tested in tests/test_recipes.py)
    T.sweep(
        M,
        rc + "train_recipe",
        "name",
        dict(name="fmnist_classifier", steps=1, out_dir=OUTD, workdir=OUTD, progress=False),
        dict(
            name=CHOICE(B("None", None)),
            steps=[B("0", 0), B("-1", -1), B("2.5", 2.5), B("'3'", "3")],
            device=[B("'nodevice'", "nodevice"), B("3.5", 3.5)],
        ),
        ok=False,
    )

    def cli(module, *argv):
        return lambda: get(module)([*argv])

    def main_rc(*argv):
        return L(lambda: get(rc + "main")([*(a() if callable(a) else a for a in argv)]))

    d = tmpdir
    T.case(M, "recipes.main(['bogus'])", rc + "main", lambda: get(rc + "main")(["bogus"]), Err("name", "bogus"))
    T.case(M, "recipes.main([])", rc + "main", lambda: get(rc + "main")([]), Err("name"))
    # (a valid --steps 1 run trains for seconds, so the non-steps flags are probed where they fail before training)
    for flag, val in (
        ("--steps", "0"),
        ("--steps", "-1"),
        ("--steps", "x"),
        ("--threads", "-1"),
        ("--device", "nodevice"),
    ):
        steps = [] if flag == "--steps" else ["--steps", "1"]
        T.case(
            M,
            f"recipes.main([name, {flag} {val}])",
            rc + "main",
            (
                lambda flag=flag, val=val, steps=steps: get(rc + "main")(
                    ["fmnist_classifier", flag, val, *steps, "--out-dir", d(), "--workdir", d()]
                )
            ),
            Err(flag.strip("-"), flag),
        )

    M = "bench"
    bc = "diffu.bench.cli:main"
    T.case(M, "bench.main(['bogus'])", bc, lambda: get(bc)(["bogus"]), Err("what", "bogus"))
    T.case(M, "bench.main(['fd', '--n', 'x'])", bc, lambda: get(bc)(["fd", "--n", "x"]), Err("--n", "n"))
    T.case(M, "bench.main(['--bogus'])", bc, lambda: get(bc)(["--bogus"]), Err("--bogus"))
    T.case(
        M,
        "bench.main(['dit', '--tiny', '--device', 'nodevice'])",
        bc,
        lambda: get(bc)(["dit", "--tiny", "--device", "nodevice", "--out", tmpdir()]),
        Err("device", "--device"),
    )
    T.case(
        M,
        "bench.main(['dit', '--patch', '0'])",
        bc,
        lambda: get(bc)(["dit", "--patch", "0", "--out", tmpdir()]),
        Err("patch", "--patch", "patch_size"),
    )
    T.case(
        M,
        "bench.main(['dit', '--patch', '5'])",
        bc,
        lambda: get(bc)(["dit", "--patch", "5", "--out", tmpdir()]),
        Err("patch", "--patch", "patch_size"),
    )
    T.case(
        M,
        "bench.main(['dit', '--batch', '0'])",
        bc,
        lambda: get(bc)(["dit", "--batch", "0", "--out", tmpdir()]),
        Err("batch", "--batch", "batch_size"),
    )
    T.case(
        M,
        "bench.main(['probe', '--ts', '-5'])",
        bc,
        lambda: get(bc)(["probe", "--ts", "-5", "--n-train", "20", "--n-test", "20", "--out", tmpdir()]),
        Err("ts", "--ts"),
    )
    _ = (cli, main_rc, Doc, IMG)


def build_label_embedder():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return get(E + "LabelEmbedder")(3, 8, 0.5)  # training mode: label dropout draws from the generator


def train_mode_dit():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return get("diffu.nn.dit:DiT")(image_size=8, patch_size=4, hidden_size=16, depth=1, num_heads=2, num_classes=3)


def fresh_unet():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = get(U + "UNetConfig")(
            channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8
        )
        return get(U + "UNet")(cfg).eval()


def fresh_autoencoder():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return get("diffu.nn.autoencoder:Autoencoder")(channels=8, latent_channels=2, groups=4)
