"""Probes of chapter §7's adversarial diffusion distillation: diffu.distill.adversarial (the frozen-feature
discriminator, the hinge/R1/score-distillation losses, the stateful ADD loss and few-step sampling).

The networks are tiny 8×8 class-conditional UNets (two levels) on a T = 10 linear schedule, built here with torch's
global RNG forked; probes that train or change a network (the discriminator's heads, the loss object) build their own.
"""

from __future__ import annotations

import torch

from .fixtures import GEN, IMG, Y3, X, gen, randn
from .kit import BOOL, CALL, IMAGE, INT, NAN, B, Doc, L, NanOrErr, Table, get, nan_at
from .kit import GEN as BADGEN
from .table_distill import sched, student, unet

AD = "diffu.distill.adversarial:"
_CACHE: dict = {}


def disc():
    return get(AD + "FeatureDiscriminator")(unet(), cmap_dim=4)


def add_loss(**kw):
    return get(AD + "AdversarialDistillation")(unet(), sched(), cmap_dim=4, **kw)


def fx(name: str):
    """Cached objects that no probe changes."""
    if name not in _CACHE:
        _CACHE[name] = {"teacher": unet, "student": student, "sched": sched, "disc": disc}[name]()
    return _CACHE[name]


TEACH = L(lambda: fx("teacher"))
STUD = L(lambda: fx("student"))
SCHED = L(lambda: fx("sched"))
KW = L(lambda: {"y": torch.tensor([0, 2])})
BAD_SCHED = [B("'linear'", "linear"), B("None", None)]
LOGITS = L(lambda: [randn(2, 4), randn(2, 1, seed=1)])
BAD_LOGITS = [
    B("None", None),
    B("[]", []),
    B("a number", 1.0),
    B("int64", L(lambda: [torch.ones(2, 4, dtype=torch.long)])),
    B("0-d", L(lambda: [torch.tensor(1.0)])),
    B("nan", L(lambda: [nan_at(randn(2, 4)), randn(2, 1, seed=1)]), NanOrErr()),
]


def _r1_args():
    """Two heads D_k(F) = Σ w_k · F (per sample) on leaf features that require grad."""
    f = [randn(2, 3, seed=2).requires_grad_(True), randn(2, 2, 2, seed=3).requires_grad_(True)]
    return [(f[0] * 2.0).sum(1, keepdim=True), (f[1] * -1.0).flatten(1)], f


def _modes_add_up():
    x, y = IMG(), Y3()
    out = {m: add_loss(mode=m)(fx("student"), x, y, generator=gen(3)) for m in ("both", "adversarial", "distillation")}
    return torch.equal(out["both"], out["adversarial"] + out["distillation"])


def _state_round_trip():
    a, c = add_loss(seed=1), add_loss(seed=2)
    a(fx("student"), IMG(), Y3(), generator=gen(1))
    c.load_state_dict(a.state_dict())
    return torch.equal(a(fx("student"), IMG(), Y3(), generator=gen(2)), c(fx("student"), IMG(), Y3(), generator=gen(2)))


def build(T: Table) -> None:
    M = "distill.adversarial"
    T.sweep(
        M,
        AD + "unet_encoder_features",
        "unet x t",
        dict(unet=TEACH, x=X, t=2.0, y=Y3),
        dict(
            unet=[B("'unet'", "unet"), B("None", None), B("a StudentUNet", STUD)],
            x=IMAGE(channels=True) + [B("7x7", L(lambda: randn(2, 1, 7, 7)))],
            t=[B("nan", NAN), B("batch 3", L(lambda: torch.tensor([1.0, 2.0, 3.0]))), B("'3'", "3")],
            y=[B("out of range", L(lambda: torch.tensor([0, 7]))), B("float", L(lambda: torch.tensor([0.0, 1.0])))],
        ),
        ok_pred=lambda f: [tuple(v.shape) for v in f] == [(2, 8, 8, 8), (2, 16, 4, 4), (2, 16, 4, 4)],
    )
    T.sweep(
        M,
        L(lambda: lambda **kw: get(AD + "FeatureDiscriminator")(**kw)(randn(2, 1, 8, 8), Y3())),
        "",
        dict(unet=L(unet), cmap_dim=4),
        dict(
            unet=[B("'unet'", "unet"), B("None", None), B("a StudentUNet", L(student))],
            cmap_dim=INT(1),
            feature_t=INT(0),
            seed=INT(0),
        ),
        names=(AD + "FeatureDiscriminator",),
        label="FeatureDiscriminator",
    )
    T.sweep(
        M,
        L(lambda: fx("disc")),
        "x",
        dict(x=X, y=Y3),
        dict(
            x=IMAGE(channels=True) + [B("7x7", L(lambda: randn(2, 1, 7, 7)))],
            y=[
                B("out of range", L(lambda: torch.tensor([0, 4]))),
                B("float", L(lambda: torch.tensor([0.0, 1.0]))),
                B("batch 3", L(lambda: torch.tensor([0, 1, 2]))),
            ],
        ),
        names=(AD + "FeatureDiscriminator",),
        label="FeatureDiscriminator.forward",
        ok_pred=lambda f: [tuple(v.shape) for v in f] == [(2, 64), (2, 16), (2, 16)],
    )
    T.case(
        M,
        "distill.adversarial.FeatureDiscriminator: the state dict holds the heads only",
        AD + "FeatureDiscriminator",
        lambda: all(k.startswith("heads.") for k in fx("disc").state_dict()),
        Doc(bool, "the frozen feature network is rebuilt from its own weights"),
    )
    T.sweep(
        M,
        AD + "hinge_d_loss",
        "real_logits fake_logits",
        dict(real_logits=LOGITS, fake_logits=LOGITS),
        dict(real_logits=BAD_LOGITS, fake_logits=BAD_LOGITS[:5] + [B("one head", L(lambda: [randn(2, 4)]))]),
        ok_pred=lambda v: v.ndim == 0 and bool(torch.isfinite(v)),
    )
    T.case(
        M,
        "distill.adversarial.hinge_d_loss: relu(1 − 2) + relu(1 + 0.5) = 1.5",
        AD + "hinge_d_loss",
        lambda: get(AD + "hinge_d_loss")(torch.tensor([[2.0]]), torch.tensor([[0.5]])).item() == 1.5,
        Doc(bool, "the hinge loss on hand values"),
    )
    T.sweep(
        M,
        AD + "hinge_g_loss",
        "fake_logits",
        dict(fake_logits=LOGITS),
        dict(fake_logits=BAD_LOGITS),
        ok_pred=lambda v: v.ndim == 0,
    )
    T.sweep(
        M,
        L(lambda: lambda **kw: get(AD + "r1_penalty")(**{**dict(zip(("logits", "features"), _r1_args())), **kw})),
        "",
        {},
        dict(
            logits=[B("None", None), B("[]", []), B("one head", L(lambda: _r1_args()[0][:1]), arg=("features",))],
            features=[
                B("None", None),
                B("detached", L(lambda: [f.detach() for f in _r1_args()[1]])),
                B("int64", L(lambda: [torch.ones(2, 3, dtype=torch.long)] * 2)),
            ],
        ),
        names=(AD + "r1_penalty",),
        label="r1_penalty",
        ok_pred=lambda v: abs(v.item() - (4 * 3 + 1 * 4)) < 1e-5,  # ‖∇‖² = Σ w² per head: 3·2² + 4·1²
    )
    T.sweep(
        M,
        AD + "score_distillation_loss",
        "x_student teacher schedule",
        dict(x_student=X, teacher=TEACH, schedule=SCHED, model_kwargs=KW, generator=GEN),
        dict(
            x_student=IMAGE(rank=False) + [B("channels+1", L(lambda: randn(2, 2, 8, 8)))],
            teacher=CALL,
            schedule=BAD_SCHED,
            t=[
                B("out of range", L(lambda: torch.tensor([9, 10]))),
                B("fractional", L(lambda: torch.tensor([9.5, 5.0]))),
                B("batch 3", L(lambda: torch.tensor([9, 5, 4]))),
                B("'9'", "9"),
            ],
            t_min=INT(0) + [B("T (> t_max)", 10, arg=("t_min", "t_max"))],
            t_max=INT(0) + [B("T", 10)],
            generator=BADGEN,
        ),
        ok_pred=lambda v: v.ndim == 0 and bool(torch.isfinite(v)),
    )
    T.sweep(
        M,
        L(lambda: lambda **kw: get(AD + "AdversarialDistillation")(**kw)(student(), IMG(), Y3(), generator=gen(0))),
        "",
        dict(teacher=L(unet), schedule=L(sched), cmap_dim=4),
        dict(
            teacher=CALL + [B("not a UNet (no feature_net)", lambda x, t, y=None: x, arg="feature_net")],
            schedule=BAD_SCHED,
            feature_net=[B("'unet'", "unet"), B("a StudentUNet", L(student))],
            mode=[B("'gan'", "gan"), B("None", None)],
            steps=INT(1) + [B("T + 1", 11)],
            distill_weight=[NAN, B("0", 0.0), B("-1", -1.0), B("'2.5'", "2.5")],
            r1_gamma=[NAN, B("-1", -1.0), B("True", True)],
            d_lr=[NAN, B("0", 0.0), B("'1e-4'", "1e-4")],
            d_betas=[B("(0, 1)", (0.0, 1.0)), B("0.9", 0.9), B("(0.5,)", (0.5,)), B("(nan, 0.9)", (NAN, 0.9))],
            d_weight_decay=[NAN, B("-1", -1.0)],
            t_min=INT(0) + [B("T (> t_max)", 10, arg=("t_min", "t_max"))],
            t_max=[B("-1", -1), B("T", 10), B("2.5", 2.5)],
            p_uncond=[NAN, B("2", 2.0)],
            zero_terminal=BOOL + [B("1", 1)],
            seed=INT(0),
        ),
        names=(AD + "AdversarialDistillation",),
        label="AdversarialDistillation",
    )
    T.sweep(
        M,
        L(lambda: add_loss()),
        "student x0 y",
        dict(student=L(student), x0=IMG, y=Y3, generator=GEN),
        dict(
            student=[B("'net'", "net"), B("3", 3)],
            x0=IMAGE(nan="err", channels=True) + [B("7x7", L(lambda: randn(2, 1, 7, 7)))],
            y=[B("out of range", L(lambda: torch.tensor([0, 9]))), B("float", L(lambda: torch.tensor([0.0, 1.0])))],
            generator=BADGEN,
        ),
        names=(AD + "AdversarialDistillation",),
        label="AdversarialDistillation.__call__",
        ok_pred=lambda v: v.ndim == 0 and bool(torch.isfinite(v)),
    )
    T.case(
        M,
        "distill.adversarial.AdversarialDistillation: both = adversarial + distillation for one generator seed",
        AD + "AdversarialDistillation",
        _modes_add_up,
        Doc(bool, "the mode switch removes the other term exactly"),
    )
    T.case(
        M,
        "distill.adversarial.AdversarialDistillation: a loaded state continues exactly",
        AD + "AdversarialDistillation",
        _state_round_trip,
        Doc(bool, "state_dict / load_state_dict"),
    )
    T.sweep(
        M,
        AD + "add_timesteps",
        "T steps",
        dict(T=1000, steps=3),
        dict(T=INT(1), steps=INT(1) + [B("5 (> grid_steps)", 5)], grid_steps=INT(1) + [B("T + 1", 1001)]),
        ok_pred=lambda ts: ts == [999, 749, 249],
    )
    T.sweep(
        M,
        AD + "add_sample",
        "model x_T schedule",
        dict(model=STUD, x_T=L(lambda: (2, 1, 8, 8)), schedule=SCHED, steps=2, model_kwargs=KW, generator=GEN),
        dict(
            model=CALL,
            x_T=[B("(2, 0, 8)", (2, 0, 8)), B("'x'", "x"), B("int64", L(lambda: torch.ones(2, 1, 8, 8).long()))],
            schedule=BAD_SCHED,
            steps=INT(1) + [B("5 (> grid_steps)", 5)],
            grid_steps=INT(1) + [B("T + 1", 11)],
            model_kwargs=[B("a list", [1])],
            generator=BADGEN,
            progress=BOOL,
            clip=BOOL,
        ),
        ok_pred=lambda v: v.shape == (2, 1, 8, 8) and bool(v.abs().max() <= 1),
    )
    T.case(
        M,
        "distill.adversarial.add_sample: the same generator seed gives the same samples",
        AD + "add_sample",
        lambda: torch.equal(
            *[get(AD + "add_sample")(fx("student"), (2, 1, 8, 8), sched(), steps=4, generator=gen(5)) for _ in range(2)]
        ),
        Doc(bool, "deterministic in the generator"),
    )
