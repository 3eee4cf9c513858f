"""Every case issue 18 lists by name (ids start with "#18", quoting the issue), and the state/side-effect probes:
einops cache poisoning, torch's global RNG, operators keeping references to the caller's tensors."""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path

import torch

from .fixtures import Returns, fx, gen, rand_img, randn, tmpdir
from .kit import NAN, Doc, Either, Err, NanOrErr, Ok, get, nan_at, to_255


def finite_and_bounded(bound):
    def pred(x):
        return bool(torch.isfinite(x).all()) and float(x.abs().max()) <= bound

    return pred


@contextlib.contextmanager
def tampered_manifest(change):
    """diffu.pretrained reading ``change(manifest)`` instead of the shipped manifest: a temporary weights folder
    (links to the shipped files and the changed manifest.json) served both as ``WEIGHTS_DIR`` and through the
    ``importlib.resources`` lookup of ``diffu/weights/…``; nothing in the repository is touched."""
    pre = get("diffu.pretrained")
    real_dir = Path(pre.WEIGHTS_DIR)
    man = json.loads((real_dir / "manifest.json").read_text())
    tmp = Path(tmpdir("weights_"))
    for f in real_dir.iterdir():
        if f.suffix == ".safetensors":
            os.symlink(f, tmp / f.name)
    (tmp / "manifest.json").write_text(json.dumps(change(copy.deepcopy(man))))
    real_resources = getattr(pre, "resources", None)

    class _Files:
        def __init__(self, pkg):
            self.root = real_resources.files(pkg)

        def joinpath(self, *parts):
            rel = "/".join(parts)
            if rel.startswith("weights/"):
                return tmp / rel[len("weights/") :]
            return self.root.joinpath(*parts)

        __truediv__ = joinpath

    class _Resources:
        def __getattr__(self, name):
            return getattr(real_resources, name)

        @staticmethod
        def files(pkg):
            return _Files(pkg)

    def clear():
        for name in dir(pre):
            obj = getattr(pre, name)
            if callable(getattr(obj, "cache_clear", None)):
                obj.cache_clear()

    saved = {"WEIGHTS_DIR": pre.WEIGHTS_DIR}
    if real_resources is not None:
        saved["resources"] = real_resources
    clear()
    try:
        pre.WEIGHTS_DIR = tmp
        if real_resources is not None:
            pre.resources = _Resources()
        yield
    finally:
        for k, v in saved.items():
            setattr(pre, k, v)
        clear()


def load_tampered(change, name="fmnist_classifier"):
    def thunk():
        with tampered_manifest(change):
            return get("diffu.pretrained:load")(name)

    return thunk


def drop_sha(man):
    del man["fmnist_classifier"]["sha256"]
    return man


def other_file(man):
    """fmnist_classifier's entry pointing at another model's weights with that file's (correct) hash."""
    man["fmnist_classifier"]["file"] = man["fmnist_unet"]["file"]
    man["fmnist_classifier"]["sha256"] = man["fmnist_unet"]["sha256"]
    return man


def wrong_sha(man):
    man["fmnist_classifier"]["sha256"] = "0" * 64
    return man


def drop_arch(man):
    del man["fmnist_classifier"]["arch"]
    return man


def bad_config(man):
    man["fmnist_classifier"]["config"] = {"width": "wide"}
    return man


def loop(man):
    man["fmnist_controlnet"]["components"] = {"base": "fmnist_controlnet"}
    return man


def rng_unchanged(fn):
    def thunk():
        before = torch.random.get_rng_state()
        fn()
        return torch.equal(before, torch.random.get_rng_state())

    return thunk


def unchanged_after(make_op, mutate, x_shape=(2, 1, 8, 8)):
    """Build an operator from a tensor, change the tensor in place, and check that A(x) did not change."""

    def thunk():
        t, op = make_op()
        x = rand_img(*x_shape, seed=4)
        before = op.A(x).clone()
        mutate(t)
        return torch.equal(before, op.A(x))

    return thunk


def build(T):
    M = "issue18"
    sched = lambda: fx("sched")  # noqa: E731

    # -- silently wrong -----------------------------------------------------------------------------------------
    def dps_poisson(y):
        return lambda: get("diffu.inverse.dps:dps")(
            fx("dummy"), y(), fx("identity"), sched(), steps=3, noise="poisson", generator=gen(0), progress=False
        )

    def one_zero_pixel():
        y = rand_img(2, 1, 8, 8)
        y[0, 0, 3, 3] = 0.0
        return y

    T.case(
        M,
        '#18 dps(..., noise="poisson") when a measurement pixel is exactly 0 (mid-grey)',
        "diffu.inverse.dps:dps",
        dps_poisson(one_zero_pixel),
        Doc(finite_and_bounded(10.0), "output within ±10, not ±3.8e3"),
    )
    T.case(
        M,
        '#18 dps(..., noise="poisson") for an all-zero y',
        "diffu.inverse.dps:dps",
        dps_poisson(lambda: torch.zeros(2, 1, 8, 8)),
        Doc(finite_and_bounded(10.0), "output within ±10, not ±9.3e4"),
    )
    T.case(
        M,
        "#18 predictor_corrector when the score is exactly zero: all-NaN output",
        "diffu.sde_samplers:predictor_corrector",
        lambda: get("diffu.sde_samplers:predictor_corrector")(
            Returns(torch.zeros_like), randn(2, 1, 8, 8), fx("vp"), steps=3, generator=gen(0), progress=False
        ),
        Doc(lambda x: bool(torch.isfinite(x).all()), "finite output"),
    )
    T.case(
        M,
        "#18 langevin_step when the score is exactly zero",
        "diffu.sde_samplers:langevin_step",
        lambda: get("diffu.sde_samplers:langevin_step")(
            fx("vp"), randn(2, 1, 8, 8), 0.5, torch.zeros(2, 1, 8, 8), randn(2, 1, 8, 8, seed=1), 0.16
        ),
        Either(("score",), lambda x: bool(torch.isfinite(x).all()), "a finite step"),
    )
    cg = "diffu.inverse.classical:cg"
    T.case(
        M,
        "#18 cg returns zeros for a right-hand side with NaN",
        cg,
        lambda: get(cg)(lambda v: 2 * v, nan_at(randn(1, 1, 8, 8)), max_iter=10),
        NanOrErr("b"),
    )
    T.case(
        M,
        "#18 cg returns zeros for a non-positive-definite operator",
        cg,
        lambda: get(cg)(lambda v: -v, randn(2, 1, 8, 8), max_iter=10),
        Err("apply_A", "A"),
    )
    T.case(
        M,
        "#18 ddpm_step accepts noise of shape (1, …) and reuses it for every image",
        "diffu.samplers:ddpm_step",
        lambda: get("diffu.samplers:ddpm_step")(
            sched(), randn(2, 1, 8, 8), 5, randn(2, 1, 8, 8, seed=1), noise=randn(1, 1, 8, 8)
        ),
        Err("noise"),
    )
    T.case(
        M,
        "#18 ddim_step accepts noise of shape (1, …) and reuses it for every image",
        "diffu.samplers:ddim_step",
        lambda: get("diffu.samplers:ddim_step")(
            sched(), randn(2, 1, 8, 8), 5, 2, randn(2, 1, 8, 8, seed=1), eta=1.0, noise=randn(1, 1, 8, 8)
        ),
        Err("noise"),
    )
    T.case(
        M,
        "#18 VPSDE.q_sample broadcasts mismatched shapes",
        "diffu.sde:VPSDE",
        lambda: fx("vp").q_sample(randn(2, 1, 8, 8), torch.tensor([0.3, 0.7]), randn(1, 1, 8, 8)),
        Err("noise", "x0"),
    )
    T.case(
        M,
        "#18 target_velocity broadcasts mismatched shapes",
        "diffu.flow:target_velocity",
        lambda: get("diffu.flow:target_velocity")(randn(2, 1, 8, 8), randn(1, 1, 8, 8)),
        Err("noise", "x0"),
    )
    for conv, a in (
        ("velocity_to_x0", "v"),
        ("velocity_to_eps", "v"),
        ("velocity_to_score", "v"),
        ("eps_to_velocity", "eps"),
    ):
        T.case(
            M,
            f"#18 the flow conversions broadcast mismatched shapes: {conv}",
            f"diffu.flow:{conv}",
            (
                lambda conv=conv: get(f"diffu.flow:{conv}")(
                    randn(1, 1, 8, 8), randn(2, 1, 8, 8), torch.tensor([0.3, 0.7])
                )
            ),
            Err(a, "x_t"),
        )
    T.case(
        M,
        "#18 fidelity_constraint's closure broadcasts mismatched shapes",
        "diffu.diffusion_priors:fidelity_constraint",
        lambda: get("diffu.diffusion_priors:fidelity_constraint")(lambda x: x, randn(1, 1, 8, 8))(randn(2, 1, 8, 8)),
        Err("y", "x", "A"),
    )
    T.case(
        M,
        "#18 cg broadcasts mismatched shapes (x0 of shape (1, …))",
        cg,
        lambda: get(cg)(lambda v: 2 * v, randn(2, 1, 8, 8), x0=randn(1, 1, 8, 8), max_iter=10),
        Err("x0"),
    )
    T.case(
        M,
        "#18 cg broadcasts mismatched shapes (apply_A's output (1, …))",
        cg,
        lambda: get(cg)(lambda v: 2 * v[:1], randn(2, 1, 8, 8), max_iter=10),
        Err("apply_A", "A"),
    )
    T.case(
        M,
        "#18 Schedule.q_sample(int64 x0, …) returns exactly the noise",
        "diffu.schedules:Schedule",
        lambda: sched().q_sample(to_255(rand_img(2, 1, 8, 8)).long(), torch.tensor([3, 5]), randn(2, 1, 8, 8)),
        Err("x0"),
    )
    T.case(
        M,
        "#18 Bicubic.pinv(int64 y) returns zeros",
        "diffu.inverse.operators:Bicubic",
        lambda: fx("bicubic").pinv(to_255(rand_img(2, 1, 4, 4)).long()),
        Err("y"),
    )
    T.case(
        M,
        "#18 0–255 images are silently clamped by FDFMNIST",
        "diffu.metrics:FDFMNIST",
        lambda: get("diffu.metrics:FDFMNIST")(reference=rand_img(4, 1, 28, 28, seed=2), batch_size=2)(
            to_255(rand_img(4, 1, 28, 28))
        ),
        Err("samples"),
    )
    T.case(
        M,
        "#18 0–255 images are silently clamped by to_uint8",
        "diffu.data:to_uint8",
        lambda: get("diffu.data:to_uint8")(to_255(rand_img(2, 1, 8, 8))),
        Err("x"),
    )
    T.case(
        M,
        "#18 ClassifierFreeGuidance(scale=nan)",
        "diffu.guidance:ClassifierFreeGuidance",
        lambda: get("diffu.guidance:ClassifierFreeGuidance")(fx("unet_cond"), NAN, {"y": torch.tensor([3])}),
        Err("scale"),
    )
    T.case(
        M,
        "#18 VPSDE(beta_max=inf)",
        "diffu.sde:VPSDE",
        lambda: get("diffu.sde:VPSDE")(beta_max=float("inf")),
        Err("beta_max"),
    )
    T.case(
        M,
        "#18 TrainConfig(lr=nan)",
        "diffu.train:TrainConfig",
        lambda: get("diffu.train:TrainConfig")(lr=NAN),
        Err("lr"),
    )
    T.case(
        M,
        "#18 TrainConfig(steps=2.5)",
        "diffu.train:TrainConfig",
        lambda: get("diffu.train:TrainConfig")(steps=2.5),
        Err("steps"),
    )
    T.case(
        M,
        "#18 ssim(sigma=0)",
        "diffu.metrics:ssim",
        lambda: get("diffu.metrics:ssim")(rand_img(2, 1, 8, 8), rand_img(2, 1, 8, 8, seed=1), win_size=7, sigma=0),
        Err("sigma"),
    )
    T.case(
        M,
        "#18 mmd(bandwidths=(0,))",
        "diffu.metrics:mmd",
        lambda: get("diffu.metrics:mmd")(randn(8, 2), randn(8, 2, seed=1), bandwidths=(0,)),
        Err("bandwidths"),
    )
    T.case(
        M,
        "#18 timestep_embedding(dim=2.5)",
        "diffu.nn.embeddings:timestep_embedding",
        lambda: get("diffu.nn.embeddings:timestep_embedding")(torch.tensor([1.0, 2.0]), 2.5),
        Err("dim"),
    )
    T.case(
        M,
        "#18 op_norm(iters=0) → 0.0",
        "diffu.inverse.classical:op_norm",
        lambda: get("diffu.inverse.classical:op_norm")(fx("block"), rand_img(2, 1, 8, 8), iters=0, generator=gen(0)),
        Err("iters"),
    )
    T.case(
        M,
        "#18 iteration counts of −1: tv_reconstruct(iters=-1)",
        "diffu.inverse.classical:tv_reconstruct",
        lambda: get("diffu.inverse.classical:tv_reconstruct")(fx("block"), rand_img(2, 1, 4, 4), 0.1, iters=-1),
        Err("iters"),
    )
    T.case(
        M,
        "#18 iteration counts of −1: gerchberg_saxton(iters=-1)",
        "diffu.inverse.classical:gerchberg_saxton",
        lambda: get("diffu.inverse.classical:gerchberg_saxton")(
            fx("pr"), fx("pr").A((rand_img(2, 1, 8, 8) + 1) / 2), iters=-1
        ),
        Err("iters"),
    )
    T.case(
        M,
        "#18 iteration counts of −1: cg(max_iter=-1)",
        cg,
        lambda: get(cg)(lambda v: 2 * v, randn(2, 1, 8, 8), max_iter=-1),
        Err("max_iter"),
    )
    T.case(
        M,
        "#18 pnp_timesteps(5, T=1) → −1",
        "diffu.diffusion_priors:plug_and_play_timesteps",
        lambda: get("diffu.diffusion_priors:plug_and_play_timesteps")(5, T=1),
        Err("T"),
    )
    for fn in ("grad", "tv"):
        T.case(
            M,
            f'#18 wrong-rank input accepted by {fn}: a (H, W) image gives 8 "values"',
            f"diffu.inverse.classical:{fn}",
            (lambda fn=fn: get(f"diffu.inverse.classical:{fn}")(rand_img(8, 8))),
            Err("x"),
        )

    # -- hangs --------------------------------------------------------------------------------------------------
    sa = "diffu.ode:solve_adaptive"
    for what, v in (("a NaN", NAN), ("an infinite", float("inf"))):
        T.case(
            M,
            f"#18 ode.solve_adaptive with {what} end time never returns",
            sa,
            (lambda v=v: get(sa)(lambda x, t: -x, randn(2, 3), 0.0, v)),
            Err("t1"),
        )
    T.case(
        M,
        "#18 FDFMNIST on samples containing NaN (~11 s in sqrtm, then an obscure failure)",
        "diffu.metrics:FDFMNIST",
        lambda: get("diffu.metrics:FDFMNIST")(reference=rand_img(4, 1, 28, 28, seed=2), batch_size=2)(
            nan_at(rand_img(4, 1, 28, 28))
        ),
        Err("samples"),
    )

    # -- obscure exceptions -------------------------------------------------------------------------------------
    un = "diffu.nn.unet:UNet"
    T.case(
        M,
        "#18 networks' forward: wrong channels (UNet)",
        un,
        lambda: fx("unet")(randn(2, 2, 8, 8), torch.tensor([1.0, 2.0])),
        Err("x"),
    )
    T.case(
        M,
        "#18 networks' forward: missing batch dimension (UNet)",
        un,
        lambda: fx("unet")(randn(1, 8, 8), torch.tensor([1.0])),
        Err("x"),
    )
    T.case(
        M,
        "#18 networks' forward: 7×7 where the UNet needs a multiple of 2",
        un,
        lambda: fx("unet")(randn(2, 1, 7, 7), torch.tensor([1.0, 2.0])),
        Err("x"),
    )
    T.case(
        M,
        "#18 networks' forward: float labels (UNet)",
        un,
        lambda: fx("unet_cond")(randn(2, 1, 8, 8), torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])),
        Err("y"),
    )
    T.case(
        M,
        "#18 networks' forward: float labels (DiT)",
        "diffu.nn.dit:DiT",
        lambda: fx("dit")(randn(2, 1, 8, 8), torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])),
        Err("y"),
    )
    T.case(
        M,
        "#18 networks' forward: out-of-vocabulary token ids (MMDiT)",
        "diffu.nn.mmdit:MMDiT",
        lambda: fx("mmdit")(randn(2, 1, 8, 8), torch.tensor([1.0, 2.0]), text=torch.full((2, 12), 999)),
        Err("text", "ids"),
    )
    T.case(
        M,
        "#18 batch-size mismatches between x and t (UNet)",
        un,
        lambda: fx("unet")(randn(2, 1, 8, 8), torch.tensor([1.0, 2.0, 3.0])),
        Err("t"),
    )
    T.case(
        M,
        "#18 batch-size mismatches between x and t (DiT)",
        "diffu.nn.dit:DiT",
        lambda: fx("dit")(randn(2, 1, 8, 8), torch.tensor([1.0, 2.0, 3.0])),
        Err("t"),
    )
    T.case(
        M,
        "#18 int64 data reaching torch.randn (ddpm x_T)",
        "diffu.samplers:ddpm",
        lambda: get("diffu.samplers:ddpm")(
            fx("dummy"), to_255(rand_img(2, 1, 8, 8)).long(), sched(), steps=3, progress=False
        ),
        Err("x_T"),
    )
    T.case(
        M,
        "#18 int64 data reaching torch.randn (dsm_loss x0)",
        "diffu.sde:dsm_loss",
        lambda: get("diffu.sde:dsm_loss")(fx("dummy"), fx("vp"), to_255(rand_img(2, 1, 8, 8)).long()),
        Err("x0"),
    )
    T.case(
        M,
        "#18 motion_kernel(1)",
        "diffu.inverse.blur:motion_kernel",
        lambda: get("diffu.inverse.blur:motion_kernel")(1, generator=gen(0)),
        Either(("size",), lambda k: k.shape == (1, 1) and float(k.sum()) == 1.0, "the 1×1 identity kernel"),
    )
    ld = "diffu.pretrained:load"
    T.case(
        M,
        "#18 pretrained.load with a tampered manifest (KeyError: 'sha256')",
        ld,
        load_tampered(drop_sha),
        Err("sha256", "manifest"),
    )
    T.case(
        M,
        "#18 pretrained.load with a tampered manifest (another model's file with its hash → load_state_dict error)",
        ld,
        load_tampered(other_file),
        Err("fmnist_classifier", "state_dict", "state dict", "manifest", "weights"),
    )
    T.case(
        M, "pretrained.load with a tampered manifest (no arch)", ld, load_tampered(drop_arch), Err("arch", "manifest")
    )
    T.case(
        M,
        "pretrained.load with a tampered manifest (config of the wrong type)",
        ld,
        load_tampered(bad_config),
        Err("config", "width", "manifest"),
    )
    T.case(
        M,
        "pretrained.load with a tampered manifest (components loop)",
        ld,
        load_tampered(loop, "fmnist_controlnet"),
        Err("components", "loop", "manifest"),
    )
    T.case(
        M,
        "pretrained.load with a wrong SHA-256 raises ChecksumError",
        ("diffu.pretrained:ChecksumError", ld),
        load_tampered(wrong_sha),
        Err("fmnist_classifier.safetensors", "SHA-256"),
    )

    # -- state poisoning and side effects -----------------------------------------------------------------------
    pf = "diffu.nn.embeddings:patchify"

    def patchify_after_bad():
        x = randn(3, 1, 12, 12)
        with contextlib.suppress(Exception):
            get(pf)(x, 4.0)
        return get(pf)(x, 4)

    T.case(
        M,
        "#18 state poisoning: patchify(x, 4.0) then patchify(x, 4) works",
        pf,
        patchify_after_bad,
        Ok(lambda p: p.shape == (3, 9, 16), "the valid call after the bad one"),
    )
    T.case(
        M,
        "#18 global RNG: pretrained.load leaves torch.random.get_rng_state() unchanged",
        ld,
        rng_unchanged(lambda: get(ld)("fmnist_classifier")),
        Doc(bool, "the global RNG state is unchanged"),
    )
    T.case(
        M,
        "#18 global RNG: FDFMNIST() leaves torch.random.get_rng_state() unchanged",
        "diffu.metrics:FDFMNIST",
        rng_unchanged(lambda: get("diffu.metrics:FDFMNIST")(reference=rand_img(4, 1, 28, 28, seed=2), batch_size=2)),
        Doc(bool, "the global RNG state is unchanged"),
    )

    def blur_op():
        k = get("diffu.inverse.blur:gaussian_kernel")(3, 1.0)
        return k, get("diffu.inverse.blur:Blur")(k)

    def inpaint_op():
        m = (torch.rand(1, 1, 8, 8, generator=gen(5)) > 0.4).float()
        return m, get("diffu.inverse.operators:Inpainting")(m)

    def mri_op():
        m = get("diffu.inverse.masks:cartesian_mask")(8, 8, 2.0, generator=gen(0))
        return m, get("diffu.inverse.fourier:MRI")(m)

    T.case(
        M,
        "#18 Blur keeps a reference to the caller's kernel: changing it in place changes A(x)",
        "diffu.inverse.blur:Blur",
        unchanged_after(blur_op, lambda k: k.mul_(0).add_(1 / 9)),
        Doc(bool, "A(x) unchanged"),
    )

    def blur_svd_consistent():
        k, op = blur_op()
        k.mul_(0).add_(1 / 9)
        x = rand_img(2, 1, 8, 8, seed=4)
        return torch.allclose(op.A(x), op.U(op.singulars(x) * op.Vt(x), x.shape), atol=1e-5)

    T.case(
        M,
        "#18 Blur after its kernel was changed in place: A(x) agrees with its own SVD view",
        "diffu.inverse.blur:Blur",
        blur_svd_consistent,
        Doc(bool, "A(x) == U(s ⊙ Vᵀx)"),
    )
    T.case(
        M,
        "operators are immutable: Inpainting keeps no reference to the caller's mask",
        "diffu.inverse.operators:Inpainting",
        unchanged_after(inpaint_op, lambda m: m.fill_(1.0)),
        Doc(bool, "A(x) unchanged"),
    )
    T.case(
        M,
        "operators are immutable: MRI keeps no reference to the caller's mask",
        "diffu.inverse.fourier:MRI",
        unchanged_after(mri_op, lambda m: m.fill_(1.0)),
        Doc(bool, "A(x) unchanged"),
    )

    def sampler_leaves_input():
        x = randn(2, 1, 8, 8)
        x0 = x.clone()
        get("diffu.samplers:ddim")(fx("dummy"), x, sched(), steps=3, progress=False)
        return torch.equal(x, x0)

    T.case(
        M,
        "samplers never mutate their inputs (ddim's x_T)",
        "diffu.samplers:ddim",
        sampler_leaves_input,
        Doc(bool, "x_T unchanged"),
    )
