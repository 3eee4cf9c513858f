"""Small objects the probes call diffu with: tiny networks, schedules, operators and tensors.

Everything is built on first use (so the same table runs against another checkout, ``--root``) and cached;
``fx(name)`` returns the cached object and ``F(name)`` an :class:`~tests.sweep.kit.L` that does so when the probe
runs. Probes that would change an object (training mode, buffers, hooks) build their own. Tensors are fresh per
call (``X()``, ``IMG()``, …), drawn from fixed generators, so no probe touches torch's global RNG.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import torch

from .kit import L, get

_CACHE: dict = {}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fx(name: str):
    if name not in _CACHE:
        _CACHE[name] = _BUILDERS[name]()
    return _CACHE[name]


def F(name: str) -> L:
    return L(lambda: fx(name))


def clear():
    _CACHE.clear()


def tmp_root() -> str:
    """The one temporary folder of this sweep (made before the workers fork, so that all of them write under it and
    :func:`remove_tmp` cleans up after them); nothing is ever written into the repository."""
    if not os.environ.get("DIFFU_SWEEP_TMP") or not os.path.isdir(os.environ["DIFFU_SWEEP_TMP"]):
        os.environ["DIFFU_SWEEP_TMP"] = tempfile.mkdtemp(prefix="diffu_sweep_")
    return os.environ["DIFFU_SWEEP_TMP"]


def tmpdir(prefix: str = "probe_") -> str:
    """A fresh folder under :func:`tmp_root`."""
    return tempfile.mkdtemp(prefix=prefix, dir=tmp_root())


def remove_tmp():
    root = os.environ.pop("DIFFU_SWEEP_TMP", None)
    if root:
        shutil.rmtree(root, ignore_errors=True)


def _seeded(fn):
    """Build a network with torch's global RNG forked and seeded (its random initialisation), leaving it unchanged."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return fn()


# ----------------------------------------------------------------------------------------------------------------
# Tensors (fresh each call)
# ----------------------------------------------------------------------------------------------------------------


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def rand_img(*shape, seed=0):
    """Images in [-1, 1]."""
    return torch.rand(*shape, generator=gen(seed)) * 2 - 1


X = L(lambda: randn(2, 1, 8, 8))  # a noisy state x_t / x_T (N, C, H, W)
X2 = L(lambda: randn(2, 1, 8, 8, seed=1))
IMG = L(lambda: rand_img(2, 1, 8, 8))  # clean images in [-1, 1]
IMG2 = L(lambda: rand_img(2, 1, 8, 8, seed=1))
PTS = L(lambda: randn(16, 2))  # 2D toy points (N, D)
PTS2 = L(lambda: randn(16, 2, seed=1))
T2 = L(lambda: torch.tensor([3.0, 5.0]))  # float timesteps (N,) of the T = 10 schedule
TC = L(lambda: torch.tensor([0.3, 0.7]))  # continuous times in [0, 1], (N,)
Y3 = L(lambda: torch.tensor([0, 2]))  # labels of a 3-class model, (N,)
GEN = L(gen)
FMNIST = L(lambda: rand_img(4, 1, 28, 28, seed=2))  # Fashion-MNIST-shaped images


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


class DummyEps(torch.nn.Module):
    """A deterministic, non-trivial ε-model for any (N, …) shape: ε̂ = tanh(x (0.5 + t/s)) w + 0.1 sin(3 t/s + x)."""

    prediction = "eps"

    def __init__(self, scale: float = 1000.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.7))
        self.scale = scale

    def forward(self, x, t, **kwargs):
        s = (t.to(x.dtype) / self.scale).reshape(-1, *([1] * (x.ndim - 1)))
        return torch.tanh(x * (0.5 + s)) * self.w + 0.1 * torch.sin(3 * s + x)


class DummyVelocity(DummyEps):
    prediction = "velocity"

    def __init__(self):
        super().__init__(scale=1.0)


class DummyKernelModel(DummyEps):
    """An ε-model over (N, 1, 3, 3) kernels with the kernel_size attribute Blind-DPS reads."""

    kernel_size = 3


class Returns(torch.nn.Module):
    """A "model" that returns ``fn(x)`` (wrong shapes, zeros, integer tensors …)."""

    prediction = "eps"

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, **kwargs):
        return self.fn(x)


def _unet(**kw):
    cfg = get("diffu.nn.unet:UNetConfig")(
        channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8, **kw
    )
    return _seeded(lambda: get("diffu.nn.unet:UNet")(cfg).eval())


def _perturbed(model, std=0.2):
    """The network with every parameter drawn N(0, std²) (a zero-initialised output layer would hide everything)."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=std)
    return model


def _vocab():
    return tuple(get("diffu.captions:vocabulary")())


_BUILDERS = {
    "sched": lambda: get("diffu.schedules:linear_schedule")(10),
    "dummy": DummyEps,
    "velocity": DummyVelocity,
    "kernel_model": DummyKernelModel,
    "unet": lambda: _unet(),
    "unet_rand": lambda: _perturbed(_unet()),
    "unet_cond": lambda: _perturbed(_unet(num_classes=3)),
    "dit": lambda: _seeded(
        lambda: get("diffu.nn.dit:DiT")(
            image_size=8, patch_size=4, hidden_size=16, depth=1, num_heads=2, num_classes=3
        ).eval()
    ),
    "mmdit": lambda: _seeded(
        lambda: get("diffu.nn.mmdit:MMDiT")(
            image_size=8, patch_size=4, hidden_size=16, depth=1, num_heads=2, vocab=_vocab(), max_len=12
        ).eval()
    ),
    "noisy_clf": lambda: _perturbed(
        _seeded(
            lambda: get("diffu.nn.classifier:NoisyClassifier")(
                channels=8, channel_mult=(1, 2), attn_resolutions=(), image_size=8, num_classes=3
            ).eval()
        )
    ),
    "fmnist_clf": lambda: _seeded(lambda: get("diffu.nn.classifier:FMNISTClassifier")(width=8, feature_dim=16).eval()),
    "autoencoder": lambda: _seeded(
        lambda: get("diffu.nn.autoencoder:Autoencoder")(channels=8, latent_channels=2, groups=4).eval()
    ),
    "drunet": lambda: _seeded(
        lambda: get("diffu.nn.drunet:DRUNet")(get("diffu.nn.drunet:DRUNetConfig")(channels=(4, 8), num_blocks=1))
    ).eval(),
    "restorer": lambda: _seeded(
        lambda: get("diffu.nn.controlnet:Restorer")(channels=8, channel_mult=(1, 2), groups=4).eval()
    ),
    "controlled": lambda: _seeded(
        lambda: get("diffu.nn.controlnet:ControlledUNet")(_unet(), restorer=fx("restorer")).eval()
    ),
    "kernel_unet": lambda: _seeded(
        lambda: get("diffu.nn.unet:KernelUNet")(
            kernel_size=3, canvas=4, channels=8, channel_mult=(1, 2), attn_resolutions=()
        ).eval()
    ),
    "mlp": lambda: _seeded(lambda: get("diffu.nn.mlp:MLPDenoiser")(dim=2, hidden=8, depth=1, t_dim=4)),
    "gmm": lambda: get("diffu.gmm:GaussianMixture").ring(3),
    "vp": lambda: get("diffu.sde:VPSDE")(),
    "tokenizer": lambda: get("diffu.nn.text:WordTokenizer")(_vocab(), 12),
    # operators on (2, 1, 8, 8) images
    "identity": lambda: get("diffu.inverse.operators:Identity")(),
    "block": lambda: get("diffu.inverse.operators:BlockAverage")(2),
    "bicubic": lambda: get("diffu.inverse.operators:Bicubic")(2),
    "mask": lambda: (torch.rand(1, 1, 8, 8, generator=gen(5)) > 0.4).float(),
    "inpaint": lambda: get("diffu.inverse.operators:Inpainting")(fx("mask")),
    "blur": lambda: get("diffu.inverse.blur:Blur")(get("diffu.inverse.blur:gaussian_kernel")(3, 1.0)),
    "blur_padded": lambda: get("diffu.inverse.blur:Blur")(get("diffu.inverse.blur:gaussian_kernel")(3, 1.0), "padded"),
    "mri_mask": lambda: get("diffu.inverse.masks:cartesian_mask")(8, 8, 2.0, generator=gen(0)),
    "mri": lambda: get("diffu.inverse.fourier:MRI")(fx("mri_mask")),
    "pr": lambda: get("diffu.inverse.fourier:PhaseRetrieval")(2.0),
    "spr": lambda: get("diffu.inverse.fourier:ShiftedPhaseRetrieval")(2.0),
    "radon": lambda: get("diffu.inverse.fourier:Radon")(4),
    "turbulence": lambda: get("diffu.inverse.blur:Turbulence")(),
    # chapter §5: a UNet conditioned on a (N, 1, 8, 8) image, a 3D UNet on (N, 1, 4, 4, 4) volumes, and BlockAverage(2)
    # on every depth slice of a (N, 1, D, 8, 8) volume
    "concat": lambda: _perturbed(
        _seeded(
            lambda: get("diffu.nn.concat:ConcatUNet")(
                channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8
            ).eval()
        )
    ),
    "unet3d": lambda: _perturbed(
        _seeded(
            lambda: get("diffu.nn.unet3d:UNet3D")(
                channels=8, channel_mult=(1, 2), num_res_blocks=1, volume_size=4, groups=4
            ).eval()
        )
    ),
    "slicestack": lambda: get("diffu.inverse.dds:SliceStack")(fx("block")),
}
