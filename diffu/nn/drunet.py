"""A small DRUNet-like Gaussian denoiser ``D(x, σ)`` with a noise-level map input, and its training data and loss
(Zhang et al. 2021, "Plug-and-Play Image Restoration with Deep Denoiser Prior"; chapter §4.1).

The plug-and-play solvers of :mod:`diffu.inverse.pnp` (DPIR) use it as the prior step of half-quadratic
splitting. The architecture follows the official ``cszn/DPIR`` ``models/network_unet.py::UNetRes``: a head
convolution, per scale ``num_blocks`` residual blocks (conv–ReLU–conv plus identity) followed by a 2×2 stride-2
convolution, a body of residual blocks, transposed-convolution upsampling with *additive* skips, a tail convolution;
no normalisation and no biases anywhere. One deviation: the official tail outputs the denoised image, ours outputs
the noise, subtracted from the input (global residual learning as in DnCNN, Zhang et al. 2017) with the tail
initialised to zero, so that ``D`` starts as the identity instead of a random map (short training runs start from
the noisy input's PSNR). The official network is ``nc = (64, 128, 256, 512)``, 4 blocks per scale (32.6 M
parameters); ours is ``(16, 32, 64, 96)``, 2 blocks (0.79 M) for 28×28 images.

Noise levels are **on diffu's [-1, 1] image scale**: DPIR's σ is on [0, 1], half of ours (its 49/255 is our 98/255).

NaN or inf in the input of :class:`DRUNet` propagates to the output: its forward checks shapes and dtypes only
(:mod:`diffu.nn.inputs`; ``sigma`` is checked). The training data (:func:`drunet_data`) and loss
(:func:`drunet_loss`) refuse NaN or inf in ``x``, once per call.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_callable, check_finite, check_generator, check_int, check_real
from .inputs import check_input, make_config

__all__ = ["DRUNet", "DRUNetConfig", "drunet_data", "drunet_loss", "natural_patches"]

# the largest training noise level (on [-1, 1]): DRUNet trains on σ ∈ [0, 50/255] of [0, 1] images
SIGMA_MAX = 2 * 50 / 255


@dataclass
class DRUNetConfig:
    """Hyper-parameters of :class:`DRUNet` (stored next to shipped weights). ``channels[i]`` is the width at scale
    ``i`` (resolution ``/2^i``); images are padded to a multiple of ``2^(len(channels) − 1)``."""

    in_channels: int = 1
    channels: tuple = (16, 32, 64, 96)
    num_blocks: int = 2

    def __post_init__(self):
        self.channels = tuple(self.channels)
        if isinstance(self.in_channels, bool) or not isinstance(self.in_channels, int) or self.in_channels < 1:
            raise ValueError(f"in_channels must be an integer >= 1, got {self.in_channels!r}")
        if not self.channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.channels):
            raise ValueError(f"channels must be a non-empty tuple of integers >= 1, got {self.channels!r}")
        if isinstance(self.num_blocks, bool) or not isinstance(self.num_blocks, int) or self.num_blocks < 0:
            raise ValueError(f"num_blocks must be an integer >= 0, got {self.num_blocks!r}")

    def to_dict(self):
        return asdict(self)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class ResBlock(nn.Module):
    """``x + conv(ReLU(conv(x)))``, bias-free (the official ``ResBlock`` with mode "CRC")."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1, self.conv2 = _conv(ch, ch), _conv(ch, ch)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


class DRUNet(nn.Module):
    """DRUNet-like non-blind Gaussian denoiser ``D(x, σ) ≈ E[x | x + σ n]`` (Zhang et al. 2021, Fig. 1; official
    ``cszn/DPIR/models/network_unet.py::UNetRes``, scaled down; see the module docstring). §4.1.

    The input is the image concatenated with a constant noise-level map ``σ`` (so one network covers all levels).
    Because every layer is bias-free and ReLU is positively homogeneous, ``D(a x, a σ) = a D(x, σ)`` for
    ``a > 0`` and ``D(0, 0) = 0`` (bias-free denoisers generalise across noise levels, Mohan et al. 2020).

    Args (forward):
        x: noisy images ``(N, C, H, W)`` on the [-1, 1] scale, ``C = config.in_channels``, any ``H, W`` (padded by
            replication to a multiple of ``2^(scales − 1)`` and cropped back, like the official ``test_mode``).
        sigma: the noise standard deviation **on the [-1, 1] scale**, a number or a ``(N,)`` tensor, ``>= 0``
            (DPIR's σ on [0, 1] is half of it: its 49/255 is our 98/255).

    Returns:
        The denoised images ``(N, C, H, W)``.
    """

    def __init__(self, config: DRUNetConfig | None = None):
        super().__init__()
        self.config = cfg = make_config(DRUNetConfig, config, {})
        ch, nb = cfg.channels, cfg.num_blocks
        self.head = _conv(cfg.in_channels + 1, ch[0])
        self.down = nn.ModuleList(
            nn.Sequential(*[ResBlock(a) for _ in range(nb)], nn.Conv2d(a, b, 2, stride=2, bias=False))
            for a, b in zip(ch[:-1], ch[1:])
        )
        self.body = nn.Sequential(*[ResBlock(ch[-1]) for _ in range(nb)])
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(b, a, 2, stride=2, bias=False), *[ResBlock(a) for _ in range(nb)])
            for a, b in zip(ch[:-1], ch[1:])
        )
        self.tail = _conv(ch[0], cfg.in_channels)
        nn.init.zeros_(self.tail.weight)  # D starts as the identity: the residual is learned from zero

    @property
    def multiple(self) -> int:
        """Image sizes are padded to a multiple of this (the total downsampling factor)."""
        return 2 ** (len(self.config.channels) - 1)

    def _sigma_map(self, sigma, x: torch.Tensor) -> torch.Tensor:  # (N, 1, H, W)
        N = x.shape[0]
        if isinstance(sigma, torch.Tensor):
            if sigma.is_complex() or sigma.dtype == torch.bool:
                raise ValueError(f"sigma must be a real number or tensor, got {sigma.dtype}")
            if sigma.ndim > 1 or sigma.numel() not in (1, N):
                raise ValueError(f"sigma must be a number or a tensor of shape (N,) = ({N},), got {tuple(sigma.shape)}")
            s = sigma.detach().to(device=x.device, dtype=x.dtype).reshape(-1)
        else:
            if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma):
                raise ValueError(f"sigma must be a finite number or a (N,) tensor, got {sigma!r}")
            s = torch.full((1,), float(sigma), device=x.device, dtype=x.dtype)
        if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            raise ValueError(f"sigma must be finite and >= 0, got {s.tolist()}")
        return s.expand(N).reshape(N, 1, 1, 1).expand(N, 1, *x.shape[-2:])

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        check_input(x, (self.config.in_channels, None, None))
        H, W = x.shape[-2:]
        m = self.multiple
        h = torch.cat([x, self._sigma_map(sigma, x)], 1)  # (N, C + 1, H, W)
        h = F.pad(h, (0, -W % m, 0, -H % m), mode="replicate")  # (N, C + 1, H', W'), H', W' multiples of m
        skips = [self.head(h)]  # (N, ch[0], H', W')
        for down in self.down:
            skips.append(down(skips[-1]))  # (N, ch[i + 1], H' / 2^(i+1), W' / 2^(i+1))
        h = self.body(skips[-1])  # (N, ch[-1], H' / m, W' / m)
        for up, skip in zip(reversed(self.up), reversed(skips[1:])):
            h = up(h + skip)  # additive skip, then (N, ch[i], 2×) …
        h = self.tail(h + skips[0])  # (N, C, H', W'): the estimated noise σ n
        return x - h[..., :H, :W]


# ----------------------------------------------------------------------------------------------------------------
# Training data and loss (recipe "drunet_gray" in diffu.recipes)
# ----------------------------------------------------------------------------------------------------------------

# scikit-image's bundled images that load offline (checked with scikit-image 0.26: "brain", "eagle", "lily", …
# need a download and are left out); "camera" is held out for the deblurring demo of chapter §4.1
PATCH_IMAGES = ("astronaut", "brick", "cat", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
                "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page", "retina", "rocket",
                "text")  # fmt: skip
HELD_OUT = "camera"


def _gray_images(names, scales) -> list[torch.Tensor]:
    """The named ``skimage.data`` images as float64 grayscale ``(H, W)`` tensors in [-1, 1], at each scale."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import rescale
    from skimage.util import img_as_float

    out = []
    for name in names:
        im = img_as_float(getattr(skimage.data, name)())
        if im.ndim == 3:
            im = rgb2gray(im[..., :3])
        for s in scales:
            small = im if s == 1 else rescale(im, s, anti_aliasing=True)
            out.append(torch.from_numpy(small.clip(0, 1) * 2 - 1))
    return out


def natural_patches(n: int, size: int = 28, seed: int = 0, names=PATCH_IMAGES, scales=(1.0, 0.5)) -> torch.Tensor:
    """``n`` random ``size × size`` grayscale patches in [-1, 1], ``(n, 1, size, size)`` float32, cut from
    scikit-image's bundled images (``names``, each also rescaled by ``scales``), each under a random one of the 8
    flips/rotations by 90°. Deterministic: a fixed CPU generator seeded with ``seed``. ``skimage.data.camera`` is
    not among the default images (held out for chapter §4.1).

    Args:
        n: the number of patches, an integer ≥ 1.
        size: the patch side, an integer ≥ 1.
        seed: the generator's seed, an integer ≥ 0.
        names: names of ``skimage.data`` images that load offline (a tuple of strings, not ``"camera"``).
        scales: the rescaling factors, finite numbers > 0.

    Raises:
        ValueError: a bad argument, an unknown image name, or no image of at least ``size × size`` pixels.
    """
    check_int("n", n, 1)
    check_int("size", size, 1)
    check_int("seed", seed, 0)
    if isinstance(names, str) or not isinstance(names, (tuple, list)) or not names:
        raise ValueError(f"names must be a non-empty tuple of skimage.data image names, got {names!r:.80}")
    import skimage.data

    unknown = [m for m in names if not isinstance(m, str) or not callable(getattr(skimage.data, m, None))]
    if unknown:
        raise ValueError(f"names must be skimage.data image names, got unknown {unknown!r:.80}")
    if HELD_OUT in names:
        raise ValueError(f"names must not contain the held-out image {HELD_OUT!r}")
    if isinstance(scales, (str, bytes)) or not isinstance(scales, (tuple, list)) or not scales:
        raise ValueError(f"scales must be a non-empty tuple of numbers > 0, got {scales!r:.80}")
    for s in scales:
        check_real("each entry of scales", s, 0, low_open=True)
    images = [im for im in _gray_images(names, scales) if min(im.shape) >= size]
    if not images:
        raise ValueError(f"size {size} is larger than every image of names at scales {tuple(scales)}")
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(0, len(images), (n,), generator=g)
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    aug = torch.randint(0, 8, (n,), generator=g)
    out = torch.empty(n, 1, size, size)
    for i in range(n):
        im = images[which[i]]
        r, c = (u[i] * torch.tensor([im.shape[0] - size + 1, im.shape[1] - size + 1])).long().tolist()
        p = im[r : r + size, c : c + size]
        p = p.rot90(int(aug[i]) % 4, (0, 1))
        out[i, 0] = (p.flip(1) if aug[i] >= 4 else p).float()
    return out


def drunet_data(x: torch.Tensor, y: torch.Tensor | None = None, n_patches: int | None = None) -> tuple[torch.Tensor]:
    """The recipe's training set: the Fashion-MNIST images ``x`` ``(N, 1, 28, 28)`` followed by as many natural
    patches (:func:`natural_patches`, seed 0; ``n_patches`` overrides the count); labels ``y`` are dropped.
    Returns a 1-tuple ``(images,)``, ``(N + n_patches, 1, 28, 28)``.

    Raises:
        ValueError: ``x`` is not a finite float ``(N, 1, S, S)`` batch (NaN or inf would be trained on), or
            ``n_patches`` is neither None nor an integer ≥ 1.
    """
    check_input(x, (1, None, None))
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x must hold square images (the patches are square), got {x.shape[-2]}×{x.shape[-1]}")
    check_finite(x, "x")
    if n_patches is not None:
        check_int("n_patches", n_patches, 1)
    n = x.shape[0] if n_patches is None else n_patches
    return (torch.cat([x, natural_patches(n, size=x.shape[-1]).to(x)]),)


def drunet_loss(model, x: torch.Tensor, generator=None, sigma_max: float = SIGMA_MAX) -> torch.Tensor:
    """DRUNet's training loss ``E |D(x + σ n, σ) − x|`` (L1, Zhang et al. 2021 §3.2) with ``σ ~ U[0, sigma_max]``
    per image; ``sigma_max`` defaults to ``2·50/255`` (DRUNet's 50/255 on [0, 1] images). ``x`` ``(N, C, H, W)``
    in [-1, 1]; the noise is drawn on ``x``'s device from ``generator``.

    Raises:
        TypeError: ``model`` is not callable; ``generator`` is not a generator.
        ValueError: ``x`` is not a finite float image batch, or ``sigma_max`` is not a finite number > 0.
    """
    check_callable("model", model)
    check_input(x, (None, None, None))
    check_finite(x, "x")  # once per training step
    check_generator(generator)
    check_real("sigma_max", sigma_max, 0, low_open=True)
    sigma = sigma_max * torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)  # (N,)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return F.l1_loss(model(x + sigma[:, None, None, None] * noise, sigma), x)
