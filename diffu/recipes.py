"""How every shipped model was trained: one recipe per weight file, and the command that retrains it from scratch.

A recipe names the untrained network (``build``), the training data (Fashion-MNIST, or what its ``data`` hook makes
of it), the loss and the :class:`~diffu.train.TrainConfig`. :func:`train_recipe` runs it with a fixed seed and
writes ``NAME.safetensors`` and its manifest entry, which describes the network so that :func:`diffu.pretrained.load`
rebuilds it without this module. Retrain one (from the repository root; each manifest entry records its exact
``command``, and the README's table lists them with their cost)::

    python -m diffu.pretrained train fmnist_unet --steps 4000
    python -m diffu.pretrained train fmnist_autoencoder && python -m diffu.pretrained train fmnist_latent_dit
    python -m diffu.pretrained train fmnist_restorer && python -m diffu.pretrained train fmnist_controlnet

(the latent DiT trains on the shipped autoencoder's latents, the ControlNet adapter on the shipped restorer's output).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import captions
from .checks import check_bool, check_choice, check_device, check_int
from .data import fashion_mnist
from .inverse.blind import kernel_prior_data, kernel_prior_loss
from .inverse.two_stage import build_controlled_unet, build_restorer, controlnet_loss, images_only, restorer_loss
from .nn import (
    DIT_SIZES,
    DiT,
    DiTConfig,
    FMNISTClassifier,
    KernelUNet,
    MMDiT,
    MMDiTConfig,
    NoisyClassifier,
    UNet,
    UNetConfig,
)
from .nn.autoencoder import Autoencoder, autoencoder_loss, encode_images
from .nn.concat import ConcatUNet, ConcatUNetConfig
from .nn.drunet import DRUNet, drunet_data, drunet_loss, natural_patches
from .nn.segnet import SegmentationUNet
from .pretrained import DIT_ABLATION, WEIGHTS_DIR, build, info, load, sha256
from .schedules import linear_schedule
from .train import TrainConfig, classifier_loss, diffusion_loss, noisy_classifier_loss, seeded, train

__all__ = [
    "MASK_MONITOR", "MASK_SHIFT", "RECIPES", "label_fidelity_score", "main", "mask_fidelity_score", "network_entry",
    "train_recipe",
]  # fmt: skip


def _unet_fmnist(**kwargs):
    return UNet(UNetConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,),
                           num_classes=10, dropout=0.0, **kwargs))  # fmt: skip


def _flow_unet_fmnist():
    return _unet_fmnist(prediction="velocity", time_scale=1000.0)


def _denoiser_train(steps):
    """The training recipe shared by every shipped denoiser (UNets, DiTs, the text-to-image MMDiT)."""
    return TrainConfig(steps=steps, batch_size=128, lr=3e-4, warmup=200, grad_clip=1.0, ema_decay=0.999, seed=0,
                       ckpt_every=250)  # fmt: skip


def _fm_loss(m, x, y, generator):
    from .flow import flow_matching_loss

    return flow_matching_loss(m, x, generator, y=y, p_uncond=0.1)


def _dit_fmnist(conditioning):
    return lambda: DiT(DiTConfig(conditioning=conditioning, **DIT_SIZES["DiT-T/4"]))


def _dit_loss(m, x, y, generator):
    # label dropout (10 %, the null class) happens inside DiT's LabelEmbedder, as in the paper
    return diffusion_loss(m, linear_schedule(), x, generator, y=y)


def _mmdit_fmnist():
    return MMDiT(MMDiTConfig(vocab=tuple(captions.vocabulary())))


def _t2i_data(x, y):
    return x, y, captions.brightness_levels(x, y)


def _t2i_loss(m, x, y, level, generator):
    caps = captions.captions_for(y, level, generator)
    # 10 % empty captions: the null condition of classifier-free guidance
    drop = torch.rand(len(caps), generator=generator, device=x.device) < 0.1
    ids = m.tokenizer(["" if d else c for c, d in zip(caps, drop.tolist())], device=x.device)
    return diffusion_loss(m, linear_schedule(), x, generator, model_kwargs={"text": ids})


#: Name → recipe of each shipped weight, with the keys ``description``, ``build`` (the untrained network),
#: ``config`` (a :class:`~diffu.train.TrainConfig`), ``loss`` (or ``make_loss``, a factory called once per run for a
#: loss that keeps state between steps), ``use_ema``, optionally ``data`` (a hook mapping the Fashion-MNIST train
#: tensors to the training tensors), ``network`` (what :func:`network_entry` cannot read off the built network: its
#: ``config`` when it has no config dataclass, its shipped ``components``) and ``monitor`` (``{"every": k, "at":
#: [steps], "fn": score}``: the weights that would ship are scored at step 0, every ``k`` steps, at the extra
#: ``steps`` and at the end, into the manifest's ``monitor`` curve);
#: ``python -m diffu.pretrained train NAME`` retrains from it.
#:
#: :meta hide-value:
RECIPES = {
    "fmnist_unet": {
        "description": "class-conditional ε-prediction UNet on the Fashion-MNIST subset, linear schedule T=1000, "
        "10 % null-label dropout (serves unconditional sampling and CFG)",
        "build": _unet_fmnist,
        "config": _denoiser_train(6000),
        "loss": lambda m, x, y, generator: diffusion_loss(m, linear_schedule(), x, generator, y=y, p_uncond=0.1),
        "use_ema": True,
    },
    "fmnist_flow": {
        "description": "class-conditional flow-matching (rectified-flow path, σ_min = 0) velocity UNet on the "
        "Fashion-MNIST subset, same architecture and training budget as fmnist_unet; data at t = 0, noise at t = 1",
        "build": _flow_unet_fmnist,
        "config": _denoiser_train(4000),
        "loss": _fm_loss,
        "use_ema": True,
    },
    "fmnist_classifier": {
        "description": "Fashion-MNIST classifier whose 128-d penultimate features define FD-FMNIST",
        "build": FMNISTClassifier,
        "network": {"config": {"width": 32, "feature_dim": 128, "num_classes": 10}},  # FMNISTClassifier's defaults
        "config": TrainConfig(
            steps=1500,
            batch_size=128,
            lr=2e-3,
            warmup=100,
            grad_clip=1.0,
            ema_decay=None,
            seed=0,
            weight_decay=1e-4,
            ckpt_every=500,
        ),  # fmt: skip
        "loss": lambda m, x, y, generator: classifier_loss(m, x, y, generator),
        "use_ema": False,
    },
}


RECIPES["fmnist_noisy_classifier"] = {
    "description": "noise-aware Fashion-MNIST classifier p(y | x_t, t) for classifier guidance (chapter §2.3): the "
    "UNet's encoder half with time embedding, trained on x_t of the linear schedule (T = 1000) at uniform t",
    "build": NoisyClassifier,
    "config": TrainConfig(steps=4000, batch_size=128, lr=1e-3, warmup=100, grad_clip=1.0, ema_decay=0.999, seed=0,
                          weight_decay=0.05, ckpt_every=250),
    "loss": lambda m, x, y, generator: noisy_classifier_loss(m, linear_schedule(), x, y, generator),
    "use_ema": True,
}  # fmt: skip

RECIPES["fmnist_t2i"] = {
    "description": "tiny text-to-image MMDiT (SD3-style joint attention, 4 blocks of width 96, patch 4) with its own "
    "word-level text encoder, trained from scratch on Fashion-MNIST captions such as 'a photo of a dark ankle boot' "
    "(class nouns with synonyms, optional brightness attribute, 10 % empty captions for CFG)",
    "build": _mmdit_fmnist,
    "data": _t2i_data,
    "config": _denoiser_train(3000),
    "loss": _t2i_loss,
    "use_ema": True,
}

for _cond, _name in DIT_ABLATION.items():
    RECIPES[_name] = {
        "description": f"class-conditional ε-prediction DiT-T/4 with {_cond} conditioning on the Fashion-MNIST "
        "subset (the conditioning ablation of chapter §2.6: the four variants share data, schedule and budget)",
        "build": _dit_fmnist(_cond),
        "config": _denoiser_train(6000),
        "loss": _dit_loss,
        "use_ema": True,
    }


# latent diffusion (chapter §4.2.3, ReSample): a KL-f4-like autoencoder, then a DiT on its unit-std 3×7×7 latents


def _latent_dit():
    return DiT(DiTConfig(image_size=7, patch_size=1, in_channels=3, hidden_size=96, depth=4, num_heads=4))


def _latent_data(x, y):
    """The Fashion-MNIST train set encoded by the SHIPPED autoencoder (so retrain fmnist_autoencoder first)."""
    return encode_images(load("fmnist_autoencoder"), x), y


RECIPES["fmnist_autoencoder"] = {
    "description": "KL-regularised convolutional autoencoder (LDM's KL-f4 at toy scale): 1×28×28 ↔ 3×7×7, L1 + "
    "1e-6 KL, posterior mean as the latent, scale_factor buffer making the training latents unit-std",
    "build": Autoencoder,
    "config": TrainConfig(
        steps=7000, batch_size=128, lr=1e-3, warmup=100, grad_clip=1.0, ema_decay=None, seed=0, ckpt_every=500
    ),
    "loss": autoencoder_loss,
    "use_ema": False,  # the scale_factor buffer is tracked on the raw weights' latents
}

RECIPES["fmnist_latent_dit"] = {
    "description": "class-conditional ε-prediction DiT (patch 1, width 96, depth 4) on the 3×7×7 latents of "
    "fmnist_autoencoder, linear schedule T=1000, 10 % null-label dropout (unconditional with y=None)",
    "build": _latent_dit,
    "data": _latent_data,
    "config": _denoiser_train(8000),
    "loss": _dit_loss,
    "use_ema": True,
}


RECIPES["drunet_gray"] = {
    "description": "small DRUNet-like bias-free Gaussian denoiser D(x, σ) with a noise-level map (σ on the [-1, 1] "
    "scale, uniform in [0, 2·50/255]), L1 loss, trained on the Fashion-MNIST subset plus as many 28×28 patches "
    "(flips/rot90, scales 1 and 1/2) of scikit-image's bundled images; skimage.data.camera is held out (chapter §4.1 "
    "deblurs it)",
    "build": DRUNet,
    "data": drunet_data,
    "config": TrainConfig(
        steps=6000, batch_size=128, lr=1e-3, warmup=100, grad_clip=1.0, ema_decay=0.999, seed=0, ckpt_every=250
    ),
    "loss": drunet_loss,
    "use_ema": True,
}


def _natural_unet():
    # no attention: the network is fully convolutional, so it runs on images larger than its 28×28 training patches
    return UNet(UNetConfig(channels=24, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), image_size=28))


def _natural_data(x, y):
    """60 000 natural 28×28 patches (:func:`~diffu.nn.drunet.natural_patches`, seed 0); Fashion-MNIST is ignored."""
    return (natural_patches(60_000, size=28, seed=0),)


RECIPES["natural_unet"] = {
    "description": "unconditional ε-prediction UNet (width 24, no attention, fully convolutional) on 28×28 grayscale "
    "patches of scikit-image's bundled images (flips/rot90, scales 1 and 1/2; skimage.data.camera held out), linear "
    "schedule T = 1000: the natural-image diffusion prior of DiffPIR in chapter §4.1, applied to the 128×128 camera",
    "build": _natural_unet,
    "data": _natural_data,
    "config": TrainConfig(
        steps=4000, batch_size=64, lr=5e-4, warmup=200, grad_clip=1.0, ema_decay=0.999, seed=0, ckpt_every=250
    ),
    "loss": lambda m, x, generator: diffusion_loss(m, linear_schedule(), x, generator),
    "use_ema": True,
}


# two-stage blind restoration (chapter §4.2.1, StableSR/DiffBIR at toy scale): stage 1 regression, stage 2 ControlNet


RECIPES["fmnist_restorer"] = {
    "description": "stage 1 of the two-stage restorer: a small conv UNet without time input (global residual) "
    "trained with MSE to map diffu.inverse.degrade(x) (random blur σ∈[0.5, 2], ×2/×4 block-average + bilinear "
    "up, noise σ∈[0, 0.1]) back to the clean Fashion-MNIST image",
    "build": build_restorer,
    "data": images_only,
    "config": TrainConfig(
        steps=4000, batch_size=128, lr=1e-3, warmup=100, grad_clip=1.0, ema_decay=0.999, seed=0, ckpt_every=250
    ),
    "loss": restorer_loss,
    "use_ema": True,
}

RECIPES["fmnist_controlnet"] = {
    "description": "stage 2 of the two-stage restorer: a ControlNet adapter (trainable copy of fmnist_unet's "
    "encoder + zero convs) on the frozen fmnist_unet, conditioned on the frozen fmnist_restorer's output for a "
    "random degradation; ε-loss, linear schedule, null label. The file holds only the adapter; the frozen UNet and "
    "restorer are rebuilt from their own shipped weights (so fmnist_restorer must be trained first)",
    "build": build_controlled_unet,  # loads the shipped fmnist_unet and fmnist_restorer
    # ControlledUNet(base=load("fmnist_unet"), restorer=load("fmnist_restorer")) with ControlNet's default widths
    "network": {
        "config": {"cond_channels": 1, "hint_channels": 16},
        "components": {"base": "fmnist_unet", "restorer": "fmnist_restorer"},
    },
    "data": images_only,
    "config": TrainConfig(
        steps=3000, batch_size=128, lr=1e-4, warmup=100, grad_clip=1.0, ema_decay=0.999, seed=0, ckpt_every=250
    ),
    "loss": controlnet_loss,
    "use_ema": True,
}


RECIPES["kernel_prior"] = {
    "description": "Blind-DPS's kernel diffusion prior at toy scale: ε-prediction UNet over 9×9 blur kernels "
    "(zero-padded to a 12×12 canvas), trained on 20 000 procedural kernels (diffu.inverse.random_kernels: half "
    "motion blur of random intensity, half isotropic/anisotropic Gaussians) mapped to [-1, 1] by 2k/max k − 1; "
    "linear schedule T = 1000; the Fashion-MNIST tensors are ignored",
    "build": KernelUNet,
    "data": kernel_prior_data,
    "config": TrainConfig(
        steps=4000, batch_size=256, lr=3e-4, warmup=200, grad_clip=1.0, ema_decay=0.999, seed=0, ckpt_every=250
    ),
    "loss": kernel_prior_loss,
    "use_ema": True,
}


# medical imaging (chapter §5): 32×32 priors on procedural CT phantoms and on augmented MNI152 slices


def _medical_unet():
    return UNet(UNetConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), image_size=32))


def _medical_train(steps):
    """The CPU budget of a §5 prior (≈ 1 s a step on one thread, about an hour): batch 64, otherwise as the
    shipped denoisers."""
    return TrainConfig(steps=steps, batch_size=64, lr=3e-4, warmup=200, grad_clip=1.0, ema_decay=0.999, seed=0,
                       ckpt_every=250)  # fmt: skip


def _ct_data(x, y):
    """20 000 random-ellipse phantoms (:func:`~diffu.data.phantoms.ellipse_phantoms`, seed 0); Fashion-MNIST is
    ignored."""
    from .data.phantoms import ellipse_phantoms

    return (ellipse_phantoms(20_000, 32, seed=0),)


def _mni_data(modality):
    def data(x, y):
        from .data.mni import augmented_slices

        return (augmented_slices(20_000, 32, seed=0)[modality],)

    data.__doc__ = (
        f"20 000 augmented axial {modality.upper()} slices of the MNI152 template outside the held-out "
        "band (:func:`~diffu.data.mni.augmented_slices`, seed 0); Fashion-MNIST is ignored."
    )
    return data


def _unconditional_loss(m, x, generator):
    return diffusion_loss(m, linear_schedule(), x, generator)


RECIPES["ct_prior"] = {
    "description": "unconditional ε-prediction UNet (width 32, attention at 8×8) on 20 000 procedural 32×32 CT "
    "phantoms (random ellipses in a body with a dense rim; diffu.data.phantoms.ellipse_phantoms, seed 0), linear "
    "schedule T = 1000: the CT prior of chapter §5 (Shepp–Logan and pydicom's CT_small are never trained on)",
    "build": _medical_unet,
    "data": _ct_data,
    "config": _medical_train(3000),
    "loss": _unconditional_loss,
    "use_ema": True,
}

RECIPES["mni_t1_prior"] = {
    "description": "unconditional ε-prediction UNet (width 32, attention at 8×8) on 20 000 augmented 32×32 axial "
    "T1 slices of the MNI152 2009c template (elastic deformation, gamma, bias field; "
    "diffu.data.mni.augmented_slices, seed 0), linear schedule T = 1000; the held-out band z 72–95 and 4 guard "
    "slices on each side are never trained on: the T1 slice prior of chapter §5",
    "build": _medical_unet,
    "data": _mni_data("t1"),
    "config": _medical_train(3000),
    "loss": _unconditional_loss,
    "use_ema": True,
}


RECIPES["mni_t2_prior"] = {
    "description": "as mni_t1_prior, on the synthetic T2-weighted contrast of the same augmented slices "
    "(diffu.data.mni.synthetic_t2): the second modality of chapter §5 (unpaired translation, DDIB)",
    "build": _medical_unet,
    "data": _mni_data("t2"),
    "config": _medical_train(3000),
    "loss": _unconditional_loss,
    "use_ema": True,
}


def _paired_unet():
    return ConcatUNet(ConcatUNetConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
                                       image_size=32, cond_channels=1))  # fmt: skip


def _paired_data(x, y):
    """The 20 000 augmented slices of mni_t1_prior as aligned pairs ``(T2, T1)`` (the T2 is the target, the T1 the
    condition; both come from the same deformed tissue maps); Fashion-MNIST is ignored."""
    from .data.mni import augmented_slices

    s = augmented_slices(20_000, 32, seed=0)
    return s["t2"], s["t1"]


def _paired_loss(m, t2, t1, generator):
    from .medical.translation import paired_loss

    return paired_loss(m, linear_schedule(), t2, t1, generator)


RECIPES["mni_t1_to_t2"] = {
    "description": "paired T1 → T2 translator: ε-prediction UNet (as mni_t1_prior) with the T1 slice concatenated "
    "to its input (diffu.nn.concat.ConcatUNet, SR3/Palette-style), trained on the aligned (T2, T1) pairs of the "
    "augmented MNI152 slices, linear schedule T = 1000 (chapter §5, paired cross-modality translation)",
    "build": _paired_unet,
    "data": _paired_data,
    "config": _medical_train(3000),
    "loss": _paired_loss,
    "use_ema": True,
}


def _autoencoder_train(steps):
    """The 32×32 autoencoders' recipe (mni_autoencoder, cardiac_mask_autoencoder): batch 64, lr 1e-3, no EMA (the
    ``scale_factor`` buffer is tracked on the raw weights' latents)."""
    return TrainConfig(steps=steps, batch_size=64, lr=1e-3, warmup=100, grad_clip=1.0, ema_decay=None, seed=0,
                       ckpt_every=250)  # fmt: skip


def _mni_autoencoder_data(x, y):
    """The 20 000 augmented T1 slices of mni_t1_prior; Fashion-MNIST is ignored."""
    return _mni_data("t1")(x, y)


RECIPES["mni_autoencoder"] = {
    "description": "KL-regularised convolutional autoencoder (as fmnist_autoencoder) for the 32×32 augmented MNI152 "
    "T1 slices: 1×32×32 ↔ 3×8×8, L1 + 1e-6 KL, scale_factor making the training latents unit-std; the anomaly "
    "baseline and the first stage of mni_latent_dit (chapter §5)",
    "build": Autoencoder,
    "data": _mni_autoencoder_data,
    "config": _autoencoder_train(3000),
    "loss": autoencoder_loss,
    "use_ema": False,  # the scale_factor buffer is tracked on the raw weights' latents
}


def _mni_latent_dit():
    return DiT(DiTConfig(image_size=8, patch_size=1, in_channels=3, hidden_size=96, depth=4, num_heads=4,
                         num_classes=None))  # fmt: skip


def _mni_latent_data(x, y):
    """The augmented T1 slices of mni_t1_prior encoded by the SHIPPED mni_autoencoder (retrain it first)."""
    return (encode_images(load("mni_autoencoder"), _mni_data("t1")(x, y)[0]),)


RECIPES["mni_latent_dit"] = {
    "description": "unconditional ε-prediction DiT (patch 1, width 96, depth 4) on the unit-std 3×8×8 latents of "
    "mni_autoencoder (the augmented MNI152 T1 slices), linear schedule T = 1000: the latent diffusion model of "
    "chapter §5",
    "build": _mni_latent_dit,
    "data": _mni_latent_data,
    "config": _denoiser_train(4000),
    "loss": _unconditional_loss,
    "use_ema": True,
}


# segmentation (chapter §6): 32×32 segmenters of the procedural cardiac phantoms and the MNI152 tissue maps


def _seg_unet(in_channels, out_channels, cond_channels=None, **extra):
    """The §6 segmenters' UNet (as the §5 priors: width 32, attention at 8×8): a ConcatUNet with the image as
    ``cond`` for the diffusion segmenters, a SegmentationUNet for the baseline."""
    kw = dict(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), image_size=32,
              in_channels=in_channels, out_channels=out_channels, **extra)  # fmt: skip
    if cond_channels is None:
        return SegmentationUNet(UNetConfig(**kw))
    return ConcatUNet(ConcatUNetConfig(**kw, cond_channels=cond_channels))


def _cardiac_data(x, y):
    """20 000 cardiac phantoms ``(images, labels)`` (:func:`~diffu.data.cardiac.cardiac_phantoms`, seed 0; the
    evaluation sets use other seeds); Fashion-MNIST is ignored."""
    from .data.cardiac import cardiac_phantoms

    return cardiac_phantoms(20_000, 32, seed=0)


def _wolleb_loss(m, images, labels, generator):
    from .segmentation import mask_diffusion_loss, one_hot

    return mask_diffusion_loss(m, linear_schedule(), one_hot(labels, 4), images, generator)


def _baseline_loss(m, images, labels, generator):
    from .segmentation import segmentation_loss

    return segmentation_loss(m(images), labels)


def _seg_train(steps, batch_size=64):
    """The CPU budget of a §6 segmenter (≤ 45 CPU minutes on one thread): as a §5 prior."""
    return TrainConfig(steps=steps, batch_size=batch_size, lr=3e-4, warmup=200, grad_clip=1.0, ema_decay=0.999,
                       seed=0, ckpt_every=250)  # fmt: skip


RECIPES["cardiac_wolleb"] = {
    "description": "Wolleb et al.'s implicit-ensemble segmenter: ε-prediction UNet (width 32, attention at 8×8) "
    "diffusing the one-hot 4-class mask (±1) with the image concatenated at every step (diffu.nn.concat.ConcatUNet), "
    "trained on 20 000 procedural cardiac phantoms (diffu.data.cardiac.cardiac_phantoms, seed 0), linear schedule "
    "T = 1000 (chapter §6.2)",
    "build": lambda: _seg_unet(4, 4, cond_channels=1),
    "data": _cardiac_data,
    "config": _seg_train(2000),
    "loss": _wolleb_loss,
    "use_ema": True,
}

RECIPES["cardiac_unet"] = {
    "description": "the plain UNet baseline of chapter §6.2: the same UNet (width 32, attention at 8×8) as "
    "cardiac_wolleb with the image as its only input and 4 class logits out (diffu.nn.segnet.SegmentationUNet), "
    "cross-entropy + soft Dice, the same 20 000 cardiac phantoms and steps",
    "build": lambda: _seg_unet(1, 4),
    "data": _cardiac_data,
    "config": _seg_train(2000),
    "loss": _baseline_loss,
    "use_ema": True,
}


def _recursive_loss():
    from .segmentation import RecursiveLevelLoss

    return RecursiveLevelLoss(4, steps=10)


RECIPES["cardiac_recursive"] = {
    "description": "Kolbeinsson & Mikolajczyk's recursive noise diffusion: the UNet of cardiac_wolleb (time scaled "
    "by 1000, τ ∈ (0, 1]) predicts the residual of the softmaxed, noised previous prediction with the image "
    "concatenated; T = 10 linear levels, one recursion level per optimiser step (diffu.segmentation."
    "RecursiveLevelLoss), so 3600 steps of batch 32 are 360 recursions; the same 20 000 cardiac phantoms "
    "(chapter §6.2)",
    "build": lambda: _seg_unet(4, 4, cond_channels=1, time_scale=1000.0),
    "data": _cardiac_data,
    "config": _seg_train(3600, batch_size=32),
    "make_loss": _recursive_loss,
    "use_ema": True,
}


def _medsegdiff(ff_parser, cond_attention):
    """The §6.2 MedSegDiff segmenter: the diffusion UNet of cardiac_wolleb over the one-hot mask, with a conditioning
    encoder reading the image (:class:`~diffu.nn.medsegdiff.MedSegDiffUNet`); the two flags are the ablation's."""
    from .nn.medsegdiff import MedSegDiffConfig, MedSegDiffUNet

    return MedSegDiffUNet(MedSegDiffConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                                           attn_resolutions=(8,), image_size=32, in_channels=4, out_channels=4,
                                           cond_channels=1, ff_parser=ff_parser,
                                           cond_attention=cond_attention))  # fmt: skip


# The MedSegDiff ablation of §6.2: shipped model → ``(ff_parser, cond_attention, what the description says)``.
_MEDSEGDIFF_ABLATION = {
    "cardiac_medsegdiff": (True, True, "with the FF-Parser and the attentive (dynamic conditional) fusion"),
    "cardiac_medsegdiff_noff": (False, True, "without the FF-Parser (the attentive fusion kept)"),
    "cardiac_medsegdiff_noattn": (True, False, "without the attentive fusion (the FF-Parser kept; features added)"),
    "cardiac_medsegdiff_plain": (False, False, "with neither (the conditioning encoder's features added)"),
}

for _name, (_ff, _attn, _what) in _MEDSEGDIFF_ABLATION.items():
    RECIPES[_name] = {
        "description": f"MedSegDiff(-v1) at toy scale {_what}: a conditioning encoder reads the image and its "
        "features are fused into the diffusion UNet's encoder (diffu.nn.medsegdiff.MedSegDiffUNet, width 32, "
        "attention at 8×8), ε-prediction of the one-hot 4-class mask, linear schedule T = 1000, the 20 000 cardiac "
        "phantoms of cardiac_wolleb; 1850 steps, so that each variant fits 45 CPU minutes (chapter §6.2)",
        "build": (lambda ff=_ff, attn=_attn: _medsegdiff(ff, attn)),
        "data": _cardiac_data,
        "config": _seg_train(1850),
        "loss": _wolleb_loss,
        "use_ema": True,
    }


def _brain_data(x, y):
    """20 000 augmented MNI152 T1 slices and their 4-class tissue labels (:func:`~diffu.data.mni.augmented_slices`,
    seed 0, the slices of mni_t1_prior; the held-out band and its guard are never seen); Fashion-MNIST is ignored."""
    from .data.mni import augmented_slices

    s = augmented_slices(20_000, 32, seed=0)
    return s["t1"], s["labels"]


RECIPES["brain_wolleb"] = {
    "description": "cardiac_wolleb's recipe on brain MRI: the one-hot 4-class tissue mask (background, CSF, grey "
    "and white matter) diffused with the T1 slice concatenated, on the 20 000 augmented MNI152 slices of "
    "mni_t1_prior (diffu.data.mni.augmented_slices, seed 0) (chapter §6.2)",
    "build": lambda: _seg_unet(4, 4, cond_channels=1),
    "data": _brain_data,
    "config": _seg_train(2000),
    "loss": _wolleb_loss,
    "use_ema": True,
}

RECIPES["brain_unet"] = {
    "description": "cardiac_unet's recipe (the plain UNet baseline, cross-entropy + soft Dice) on the augmented "
    "MNI152 T1 slices and tissue labels of brain_wolleb (chapter §6.2)",
    "build": lambda: _seg_unet(1, 4),
    "data": _brain_data,
    "config": _seg_train(2000),
    "loss": _baseline_loss,
    "use_ema": True,
}

RECIPES["brain_recursive"] = {
    **RECIPES["cardiac_recursive"],
    "description": "cardiac_recursive's recipe (recursive noise diffusion, T = 10, 3600 steps of batch 32) on the "
    "augmented MNI152 T1 slices and 4-class tissue labels of brain_wolleb: the diffusion method closest to the "
    "plain UNet on the cardiac phantoms, run on brain MRI (chapter §6.2)",
    "data": _brain_data,
}


#: The largest shift, in pixels, of the items the mask-control recipes of chapter §6.1 train and are scored on (a
#: ControlNet and a T2I-Adapter on the frozen fmnist_unet, which only ever drew centred items).
MASK_SHIFT = 6


def _mask_data(x, y):
    """The 20 000 training images shifted by up to :data:`MASK_SHIFT` pixels (seed 0), with their foreground
    masks as two-channel label-map conditions (:func:`diffu.data.textured.shifted_items`,
    :func:`diffu.control.label_map_condition`)."""
    from .control import label_map_condition
    from .data.textured import shifted_items

    images, masks = shifted_items(x, MASK_SHIFT, seed=0)
    return images, label_map_condition(masks, 2)


def _mask_control_loss(m, images, cond, generator):
    from .control import control_loss

    return control_loss(m, images, cond, generator)


def _check_score_args(model, n, steps, seed, per_image, takes: str) -> torch.device:
    """The checks shared by the fidelity monitors of the control recipes; returns the model's device."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module taking {takes} as model(x, t, cond=c), got "
                        f"{type(model).__name__}")  # fmt: skip
    check_int("n", n, 1)
    check_int("steps", steps, 1)
    check_int("seed", seed, 0)
    check_bool("per_image", per_image)
    return next(model.parameters()).device


def _sample_from_maps(model, cond: torch.Tensor, steps: int) -> torch.Tensor:
    """One DDIM-``steps`` sample of ``model`` per condition map of ``cond`` (N, C, H, W) (noise seed 0, on the
    maps' device): the draw of the fidelity monitors."""
    from .samplers import ddim

    g = torch.Generator(device=cond.device).manual_seed(0)
    return ddim(model, (cond.shape[0], 1, *cond.shape[2:]), linear_schedule(), steps=steps,
                model_kwargs={"cond": cond}, generator=g, progress=False)  # fmt: skip


def mask_fidelity_score(model, n: int = 64, steps: int = 20, seed: int = 1, *, per_image: bool = False) -> dict:
    """How well ``model(x, t, cond=map)`` follows shifted masks: ``n`` test items shifted by up to
    :data:`MASK_SHIFT` pixels (:func:`~diffu.data.textured.shifted_items`, ``seed``), one DDIM-``steps`` sample each
    from its mask (noise seed 0), scored by :func:`diffu.control.mask_fidelity`. Returns ``{"dice", "iou"}``, the
    means over the images (the monitor of the mask-control recipes, chapter §6.1), or with ``per_image`` the lists
    of the ``n`` images' values."""
    from .control import label_map_condition, mask_fidelity
    from .data.textured import shifted_items

    dev = _check_score_args(model, n, steps, seed, per_image, "2-channel mask maps (a ControlledUNet or AdaptedUNet)")
    _, masks = shifted_items(fashion_mnist("test")[0][:n], MASK_SHIFT, seed=seed)
    x = _sample_from_maps(model, label_map_condition(masks, 2).to(dev), steps)
    fid = mask_fidelity(x, masks.to(dev))
    if per_image:
        return {"dice": fid.dice.tolist(), "iou": fid.iou.tolist()}
    return {"dice": float(fid.dice.nanmean()), "iou": float(fid.iou.nanmean())}


#: The monitor of the mask-control recipes, the fidelity of :func:`mask_fidelity_score` every 10 steps for the first
#: 200 (where the control is learnt, too fast for a coarser log to time the rise), then every 100.
MASK_MONITOR = {"every": 100, "at": list(range(10, 200, 10)), "fn": mask_fidelity_score}


def _frozen_fmnist_unet():
    """The shipped fmnist_unet for a control branch, after the draw :func:`diffu.pretrained.build` makes for a
    component (its fresh initialisation, dropped), so that a recipe's build and ``pretrained.build`` of its manifest
    entry start the control branch from the same random state."""
    build(info("fmnist_unet"))
    return load("fmnist_unet")


def _mask_controlnet():
    from .nn.controlnet import ControlledUNet

    return ControlledUNet(_frozen_fmnist_unet(), cond_channels=2)


def _mask_adapter():
    from .nn.adapter import AdaptedUNet

    return AdaptedUNet(_frozen_fmnist_unet(), cond_channels=2)


def _mask_train():
    """Both mask-control recipes: 1200 steps of batch 32, AdamW at ControlNet's rate scaled to our batch (1e-4), no
    EMA (the fidelity curve scores the weights as they train)."""
    return TrainConfig(steps=1200, batch_size=32, lr=1e-4, warmup=0, grad_clip=1.0, ema_decay=None, seed=0,
                       ckpt_every=100)  # fmt: skip


RECIPES["fmnist_mask_controlnet"] = {
    "description": "ControlNet (trainable copy of fmnist_unet's encoder, zero convs) on the frozen fmnist_unet, "
    "conditioned on the two-channel foreground mask of the training item shifted by up to ±6 pixels; ε-loss, "
    "null label; mask fidelity (Dice/IoU, 64 shifted test masks, DDIM 20) logged every 10 steps up to 200, then every "
    "100 (chapter §6.1). "
    "The file holds only the control branch",
    "build": _mask_controlnet,
    "network": {"config": {"cond_channels": 2, "hint_channels": 16}, "components": {"base": "fmnist_unet"}},
    "data": _mask_data,
    "config": _mask_train(),
    "loss": _mask_control_loss,
    "monitor": MASK_MONITOR,
    "use_ema": False,
}

RECIPES["fmnist_mask_adapter"] = {
    "description": "T2I-Adapter (official design: no zero init, one block per level, features added to the frozen "
    "encoder) on the frozen fmnist_unet, with fmnist_mask_controlnet's data, loss, steps and monitor (chapter §6.1). "
    "The file holds only the adapter",
    "build": _mask_adapter,
    "network": {"components": {"base": "fmnist_unet"}},
    "data": _mask_data,
    "config": _mask_train(),
    "loss": _mask_control_loss,
    "monitor": MASK_MONITOR,
    "use_ema": False,
}


# Anatomy-conditioned synthesis (chapter §6.1): a ControlNet on the frozen brain prior, conditioned on tissue maps


def _label_control_data(x, y):
    """The 20 000 augmented T1 slices of mni_t1_prior with their 4-class tissue maps (background, CSF, grey and
    white matter) as one-hot conditions (:func:`diffu.control.label_map_condition`); Fashion-MNIST is ignored."""
    from .control import label_map_condition

    images, labels = _brain_data(x, y)
    return images, label_map_condition(labels, 4)


def label_fidelity_score(model, n: int = 64, steps: int = 20, seed: int = 1, *, per_image: bool = False) -> dict:
    """How well ``model(x, t, cond=map)`` follows held-out tissue maps (label → image synthesis): the maps of ``n``
    augmented slices of the held-out band (:func:`diffu.data.mni.augment` of the ``split="test"`` slices at 128×128,
    area-averaged to 32×32, seed ``seed``), one DDIM-``steps`` sample each (noise seed 0), segmented by the shipped
    ``brain_unet`` and scored by :func:`diffu.control.label_fidelity` (Dice per tissue class, background left out).
    Returns ``{"dice"}``, the mean over images of each image's mean Dice over CSF, grey and white matter (the monitor
    of mni_label_controlnet, chapter §6.1), or with ``per_image`` ``{"dice": (n,) list, "per_class": (n, 3)
    lists}``."""
    from .control import label_fidelity, label_map_condition
    from .data.mni import augment, mni_slices

    dev = _check_score_args(model, n, steps, seed, per_image, "4-channel tissue maps (a ControlledUNet)")
    fr, _ = augment(mni_slices(size=128, modality="fractions", split="test"), mni_slices(size=128, split="test"), n,
                    seed=seed)  # fmt: skip
    labels = torch.nn.functional.avg_pool2d(fr, 4).argmax(1).to(dev)
    x = _sample_from_maps(model, label_map_condition(labels, 4), steps)
    fid = label_fidelity(x, labels, load("brain_unet", device=dev).eval(), 4)
    d = fid.dice.nanmean(1)
    if per_image:
        return {"dice": d.tolist(), "per_class": fid.dice.tolist()}
    return {"dice": float(d.nanmean())}


def _frozen_mni_prior():
    """The shipped mni_t1_prior for a control branch, after the draw :func:`diffu.pretrained.build` makes for a
    component (as :func:`_frozen_fmnist_unet`)."""
    build(info("mni_t1_prior"))
    return load("mni_t1_prior")


def _label_controlnet():
    from .nn.controlnet import ControlledUNet

    return ControlledUNet(_frozen_mni_prior(), cond_channels=4)


RECIPES["mni_label_controlnet"] = {
    "description": "ControlNet on the frozen mni_t1_prior conditioned on the one-hot 4-class tissue map "
    "(background, CSF, grey and white matter) of its 20 000 augmented slices: label → image synthesis (anatomy-"
    "conditioned brain MRI, chapter §6.1); fidelity = brain_unet's Dice of the generated slice against the "
    "requested map (64 held-out maps, DDIM 20) at steps 25, 50, 75 and every 100. The file holds only the control "
    "branch",
    "build": _label_controlnet,
    "network": {"config": {"cond_channels": 4, "hint_channels": 16}, "components": {"base": "mni_t1_prior"}},
    "data": _label_control_data,
    "config": TrainConfig(
        steps=1500, batch_size=32, lr=1e-4, warmup=0, grad_clip=1.0, ema_decay=None, seed=0, ckpt_every=100
    ),  # fmt: skip
    "loss": _mask_control_loss,
    "monitor": {"every": 100, "at": [25, 50, 75], "fn": label_fidelity_score},
    "use_ema": False,
}


# SDSeg (chapter §6.3): a mask autoencoder, then a structure-conditional latent denoiser on its latents


def _structure_masks(x, y):
    """The binary masks (±1) of the three structures of 20 000 cardiac phantoms (seed 0): 60 000 one-channel
    32×32 images, phantom-major; Fashion-MNIST is ignored."""
    _, labels = _cardiac_data(x, y)
    return ((2.0 * torch.stack([labels == s for s in (1, 2, 3)], 1).float() - 1).flatten(0, 1)[:, None],)


RECIPES["cardiac_mask_autoencoder"] = {
    "description": "KL-regularised autoencoder (as mni_autoencoder, 1500 steps: 1×32×32 ↔ 3×8×8, L1 + 1e-6 KL, "
    "scale_factor making the training latents unit-std) of the binary masks (±1) of the LV blood pool, myocardium "
    "and RV of the 20 000 cardiac phantoms: the first stage of SDSeg (chapter §6.3)",
    "build": Autoencoder,
    "data": _structure_masks,
    "config": _autoencoder_train(1500),
    "loss": autoencoder_loss,
    "use_ema": False,
}


def _sdseg_unet():
    return ConcatUNet(ConcatUNetConfig(channels=32, channel_mult=(1, 2), num_res_blocks=2, attn_resolutions=(4,),
                                       image_size=8, in_channels=3, out_channels=3, cond_channels=16,
                                       num_classes=3))  # fmt: skip


def _sdseg_data(x, y):
    """The 20 000 cardiac phantoms and their structures' mask latents under the SHIPPED cardiac_mask_autoencoder
    (retrain it first): ``(images, latents (N, 3, 3, 8, 8))``."""
    from .segmentation import encode_structures

    images, labels = _cardiac_data(x, y)
    return images, encode_structures(load("cardiac_mask_autoencoder"), labels, 4)


def _sdseg_loss(m, images, latents, generator):
    from .segmentation import sdseg_loss, sdseg_schedule

    return sdseg_loss(m, sdseg_schedule(), images, latents, generator)


RECIPES["cardiac_sdseg"] = {
    "description": "SDSeg at toy scale: an ε-prediction UNet (width 32, attention at 4×4) over the 3×8×8 mask "
    "latents of cardiac_mask_autoencoder, the image folded to 16×8×8 (pixel_unshuffle) concatenated, the structure "
    "(LV blood pool, myocardium, RV) as its class label; L1 ε-loss + L1 latent x0 loss, SDSeg's schedule "
    "(scaled_linear, β 0.0015 → 0.0155, T = 1000); the 20 000 cardiac phantoms (chapter §6.3)",
    "build": _sdseg_unet,
    "data": _sdseg_data,
    "config": _seg_train(3000),
    "loss": _sdseg_loss,
    "use_ema": True,
}


# ----------------------------------------------------------------------------------------------------------------
# Chapter §7: few-step students of fmnist_unet (diffu.distill)
# ----------------------------------------------------------------------------------------------------------------


def _distill_train(steps):
    """The schedule every §7 student shares: batch 64, lr 1e-4 after 50 warm-up steps, EMA 0.999, seed 0."""
    return TrainConfig(steps=steps, batch_size=64, lr=1e-4, warmup=50, grad_clip=1.0, ema_decay=0.999, seed=0,
                       ckpt_every=100)  # fmt: skip


def _student_of(name):
    """A trainable copy of the shipped ``name``: the ε UNet becomes a :class:`~diffu.nn.StudentUNet` with a zero x̂_0
    head; a student is copied as it is. (The manifest names ``name`` as the ``teacher`` component, so that
    :func:`diffu.pretrained.build` starts from the same weights.)"""
    from .nn.student import StudentUNet

    return StudentUNet.from_teacher(load(name)).train().requires_grad_(True)


def _pd_loss(teacher, steps):
    def make():
        import functools

        from .distill import progressive_loss

        return functools.partial(progressive_loss, teacher=load(teacher), schedule=linear_schedule(), steps=steps)

    return make


#: Progressive distillation, 16 → 8 → 4 → 2 → 1 DDIM steps: each round's student starts from (and is taught by) the
#: previous round's, round 1 from fmnist_unet with 16 DDIM steps (trailing spacing).
PD_ROUNDS = {"fmnist_pd8": ("fmnist_unet", 8), "fmnist_pd4": ("fmnist_pd8", 4), "fmnist_pd2": ("fmnist_pd4", 2),
             "fmnist_pd1": ("fmnist_pd2", 1)}  # fmt: skip
PD_STEPS = 600  # optimiser steps per round (batch 64): about 15 CPU minutes on one thread

for _name, (_teacher, _steps) in PD_ROUNDS.items():
    RECIPES[_name] = {
        "description": f"progressive distillation round {5 - _steps.bit_length()} of 4 (Salimans & Ho 2022): a "
        f"{_steps}-step DDIM student (StudentUNet: ε head + direct x̂_0 head, v output) matching two DDIM steps of "
        f"{_teacher} on the nested 'trailing' grid, truncated-SNR weighted x loss, teacher x̂_0 clipped, class-"
        f"conditional (no label dropout), initialised from {_teacher} (chapter §7)",
        "build": (lambda t=_teacher: _student_of(t)),
        "network": {"components": {"teacher": _teacher}},
        "config": _distill_train(PD_STEPS),
        "make_loss": _pd_loss(_teacher, _steps),
        "use_ema": True,
    }


def _cd_loss():
    from .distill import ConsistencyDistillation

    return ConsistencyDistillation(load("fmnist_unet"), linear_schedule(), n=18, mu=0.95)


RECIPES["fmnist_cd"] = {
    "description": "consistency distillation (Song et al. 2023) of fmnist_unet: StudentUNet initialised from it, "
    "N = 18 Karras (ρ = 7) timesteps, Heun teacher step of the probability-flow ODE, EMA target μ = 0.95, squared "
    "L2 distance, σ_d = 0.5, class-conditional (chapter §7)",
    "build": lambda: _student_of("fmnist_unet"),
    "network": {"components": {"teacher": "fmnist_unet"}},
    "config": _distill_train(1500),
    "make_loss": _cd_loss,
    "use_ema": True,
}


def _add_loss(mode):
    def make():
        from .distill import AdversarialDistillation

        # one frozen fmnist_unet: the score-distillation teacher and the discriminator's feature network
        return AdversarialDistillation(load("fmnist_unet"), linear_schedule(), mode=mode)

    return make


ADD_STEPS = 1000  # fmnist_add: about 2.4 s a step on one idle thread (batch 64)

RECIPES["fmnist_add"] = {
    "description": "adversarial diffusion distillation (Sauer et al. 2023) of fmnist_unet: StudentUNet initialised "
    "from fmnist_unet, trained at the 4 student timesteps 999/749/499/249 on real images (pure noise at 999); hinge "
    "GAN loss from a class-projected discriminator (one head per encoder level and the middle block of the frozen "
    "fmnist_unet at t = 0; AdamW lr 1e-4, betas (0, 0.99); R1 γ = 1e-5 on the heads' inputs) + λ = 2.5 × score "
    "distillation against fmnist_unet with c(t) = ᾱ_t; class-conditional; 1–4-step denoise/re-noise sampling "
    "(chapter §7)",
    "build": lambda: _student_of("fmnist_unet"),
    "network": {"components": {"teacher": "fmnist_unet"}},
    "config": _distill_train(ADD_STEPS),
    "make_loss": _add_loss("both"),
    "use_ema": True,
}

#: The ADD ablation (Sauer et al. 2023, Table 1 d): the three loss arms trained alike for a shorter, equal length.
ADD_ABLATION_STEPS = 500
for _mode, _what in (("adversarial", "the adversarial loss alone (λ = 0)"),
                     ("distillation", "the score-distillation loss alone (no discriminator)"),
                     ("both", "both losses (as fmnist_add)")):  # fmt: skip
    RECIPES[f"fmnist_add_{_mode}_{ADD_ABLATION_STEPS}"] = {
        **RECIPES["fmnist_add"],
        "description": f"ADD ablation arm (chapter §7.2): {_what}, {ADD_ABLATION_STEPS} steps; otherwise as "
        "fmnist_add (StudentUNet from fmnist_unet, timesteps 999/749/499/249, batch 64, seed 0)",
        "config": _distill_train(ADD_ABLATION_STEPS),
        "make_loss": _add_loss(_mode),
    }


PNP_STEPS = 600  # fmnist_pnp_guide: about 2 s a step on one idle thread (batch 64)


def _pnp_guide():
    from .nn.guide import GuidedUNet

    return GuidedUNet(_frozen_fmnist_unet())


def _pnp_loss():
    import functools

    from .distill.guide import DEFAULT_SCALES, guide_loss

    return functools.partial(guide_loss, schedule=linear_schedule(), scales=DEFAULT_SCALES)


RECIPES["fmnist_pnp_guide"] = {
    "description": "plug-and-play diffusion distillation (Hsiao et al. 2024) of classifier-free guidance: a GuideNet "
    "(16 488 parameters, 1.5 % of fmnist_unet; 1.2 % of its multiply-adds) reading x_t, t, the label and the scale, "
    "whose zero-initialised maps are added to the frozen fmnist_unet's encoder at the end of each level; one "
    "conditional pass trained to match CFG of fmnist_unet at s drawn per sample from {1, 2, 3, 4, 5}; ε-MSE, linear "
    "schedule, uniform t (chapter §7.1). The file holds only the guide",
    "build": _pnp_guide,
    "network": {"components": {"base": "fmnist_unet"}},
    "config": dataclasses.replace(_distill_train(PNP_STEPS), lr=1e-3),
    "make_loss": _pnp_loss,
    "use_ema": True,
}


def _sr_controlnet():
    from .nn.controlnet import ControlledUNet

    return ControlledUNet(_frozen_fmnist_unet(), cond_channels=1)


def _sr_data(x, y):
    """The Fashion-MNIST training images with their ×4 super-resolution conditions (the 7×7 block averages
    upsampled by pixel replication, :func:`diffu.distill.codi.sr_condition`)."""
    from .distill.codi import sr_condition

    return x, sr_condition(x)


def _sr_teacher_loss(m, images, cond, generator):
    from .control import control_loss

    return control_loss(m, images, cond, generator)


def _codi_loss(m, images, cond, generator):
    from .distill.codi import codi_loss

    return codi_loss(m, images, cond, schedule=linear_schedule(), generator=generator)


SR_STEPS = 2000  # both ×4 SR recipes of §7.3 (batch 64): 0.4 and 0.6 s a step at batch 32 on one idle thread


def _sr_train():
    """Both ×4 SR recipes of §7.3: batch 64, AdamW at ControlNet's rate (1e-4) after 50 warm-up steps, EMA 0.999."""
    return TrainConfig(steps=SR_STEPS, batch_size=64, lr=1e-4, warmup=50, grad_clip=1.0, ema_decay=0.999, seed=0,
                       ckpt_every=100)  # fmt: skip


RECIPES["fmnist_sr4_teacher"] = {
    "description": "the conditional teacher of chapter §7.3 (the two-stage baseline's first stage): a ControlNet "
    "(trainable copy of fmnist_unet's encoder, zero convs) on the frozen fmnist_unet, conditioned on the ×4 "
    "super-resolution condition (7×7 block averages upsampled by pixel replication); ε-loss, null label, uniform t. "
    "The file holds only the control branch",
    "build": _sr_controlnet,
    "network": {"config": {"cond_channels": 1, "hint_channels": 16}, "components": {"base": "fmnist_unet"}},
    "data": _sr_data,
    "config": _sr_train(),
    "loss": _sr_teacher_loss,
    "use_ema": True,
}

RECIPES["fmnist_codi"] = {
    "description": "CoDi (Mei et al. 2024), parameter-efficient single stage: the same ControlNet on the frozen "
    "fmnist_unet, zero-initialised, trained with the conditional consistency of the signal (ẑ_s = α_s x̂_θ(z_t, c, t) "
    "+ σ_s ε, s = t − 250, in ε units, θ⁻ = θ) plus the noise term at its fixed point (the ε-loss) on the ×4 "
    "super-resolution pairs of fmnist_sr4_teacher, same steps and optimiser; no conditional teacher (chapter §7.3). "
    "The file holds only the control branch",
    "build": _sr_controlnet,
    "network": {"config": {"cond_channels": 1, "hint_channels": 16}, "components": {"base": "fmnist_unet"}},
    "data": _sr_data,
    "config": _sr_train(),
    "loss": _codi_loss,
    "use_ema": True,
}


def network_entry(model: torch.nn.Module, network: dict | None = None) -> dict:
    """The manifest keys that describe ``model`` for :func:`diffu.pretrained.build`: ``arch`` (its class as
    ``"module:Class"``), ``config_class`` and ``config`` (its config dataclass and fields) when ``model.config`` is
    a dataclass, updated by ``network`` (a recipe's ``network``: the ``config`` of a network without a config
    dataclass, its ``components``).

    Raises:
        TypeError: ``model`` is not a ``torch.nn.Module`` or ``network`` not a dict (or None).
        ValueError: neither gives a config.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if network is not None and not isinstance(network, dict):
        raise TypeError(f"network must be a dict (a recipe's 'network') or None, got {type(network).__name__}")
    cls = type(model)
    entry = {"arch": f"{cls.__module__}:{cls.__qualname__}"}
    cfg = getattr(model, "config", None)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        entry["config_class"] = f"{type(cfg).__module__}:{type(cfg).__qualname__}"
        entry["config"] = asdict(cfg)
    entry.update(network or {})
    if "config" not in entry:
        raise ValueError(f"{cls.__name__} has no config dataclass: give its keyword arguments as network['config']")
    return entry


def _monitor_steps(monitor: dict, steps: int) -> list[int]:
    """The steps a monitor scores at (besides step 0): ``monitor["every"]`` k — every k-th step — and/or
    ``monitor["at"]``, a list of extra steps (a denser start, say), always with the last step; sorted, unique."""
    points = set(range(monitor["every"], steps, monitor["every"])) if "every" in monitor else set()
    points |= {int(s) for s in monitor.get("at", ()) if 0 < int(s) < steps}
    return sorted(points | {steps})


def _monitored(model, loss, data, cfg, ckpt, progress, monitor, use_ema):
    """Train in chunks ending at the monitor's steps (:func:`_monitor_steps`; each chunk resumes from the checkpoint
    the previous one left, so the run is the uninterrupted one, step for step) and score the weights that would
    ship after each chunk (and at step 0, before training) with ``monitor["fn"](model) -> {name: float}``. Returns
    the last TrainResult and the curve ``[{"step": s, **scores}, …]`` (a resumed run scores from its resume point
    on)."""
    fn = monitor["fn"]
    done = 0
    if ckpt.exists():
        with safe_open(str(ckpt), "pt") as f:
            done = int(f.metadata()["step"])
    curve = [] if done else [{"step": 0, **fn(copy.deepcopy(model).eval())}]
    for stop in [s for s in _monitor_steps(monitor, cfg.steps) if s > done]:
        res = train(model, loss, data, cfg, checkpoint=ckpt, progress=progress, stop_after=stop)
        if not curve or res.step > curve[-1]["step"]:
            curve.append({"step": res.step, **fn(res.ema if use_ema else res.model)})
    return res, curve


def train_recipe(name, steps=None, out_dir=WEIGHTS_DIR, workdir="runs", progress=True, device=None):
    """Train the recipe ``name`` from scratch (resuming from ``workdir/NAME.ckpt.safetensors`` if present) and write
    ``out_dir/NAME.safetensors`` (the EMA weights if the recipe uses them, on the CPU) and its entry in
    ``out_dir/manifest.json``: hash, network (:func:`network_entry`), training config, retrain command, loss curve.

    Args:
        name: a key of :data:`RECIPES`.
        steps: override the recipe's number of steps (an integer ≥ 1, recorded in the command).
        out_dir, workdir: folders (strings or paths) for the weights and manifest, and for the checkpoints.
        progress: show a progress bar.
        device: train on this device (``None``: where the network is built, the CPU).

    Returns:
        ``(path, entry)``: the weights file and its manifest entry.

    Raises:
        ValueError: an unknown ``name`` (the message lists the recipes), a bad ``steps`` or ``device``.
        TypeError: ``out_dir``/``workdir`` not a string or path, ``progress`` not a bool, ``device`` of the wrong
            kind.
    """
    check_choice("name", name, tuple(sorted(RECIPES)))
    if steps is not None:
        check_int("steps", steps, 1)
    for arg, value in (("out_dir", out_dir), ("workdir", workdir)):
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{arg} must be a folder (a string or a path), got {type(value).__name__}")
    check_bool("progress", progress)
    device = check_device("device", device)
    recipe = RECIPES[name]
    cfg = recipe["config"]
    if steps is not None:
        cfg = TrainConfig(**{**asdict(cfg), "steps": steps})
    with seeded(cfg.seed):
        model = recipe["build"]()
    if device is not None:
        model = model.to(device)
    data = fashion_mnist("train")
    if "data" in recipe:
        data = recipe["data"](*data)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # a stateful loss (one recursion level per step) is made fresh for every run
    loss = recipe["make_loss"]() if "make_loss" in recipe else recipe["loss"]
    ckpt = Path(workdir) / f"{name}.ckpt.safetensors"
    monitor = recipe.get("monitor")
    if monitor is None:
        res = train(model, loss, data, cfg, checkpoint=ckpt, progress=progress)
    else:
        res, curve = _monitored(model, loss, data, cfg, ckpt, progress, monitor, recipe["use_ema"])
    final = res.ema if recipe["use_ema"] else res.model
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in final.state_dict().items()}, str(path))
    cmd = f"python -m diffu.pretrained train {name}" + (f" --steps {cfg.steps}" if steps is not None else "")
    if device is not None and torch.device(device).type != "cpu":
        cmd += f" --device {torch.device(device).type}"
    entry = {
        "file": path.name,
        "sha256": sha256(path),
        **network_entry(final, recipe.get("network")),
        "description": recipe["description"],
        # what the file holds (a ControlNet adapter saves none of its frozen base)
        "parameters": sum(p.numel() for k, p in final.named_parameters() if k in final.state_dict()),
        "train_config": asdict(cfg),
        "command": cmd,
        "final_loss_mean_last_100": sum(res.losses[-100:]) / len(res.losses[-100:]),
        # the training loss averaged over windows of 50 steps (loss curves in the book)
        "loss_curve_50": [
            round(sum(res.losses[i : i + 50]) / len(res.losses[i : i + 50]), 5) for i in range(0, len(res.losses), 50)
        ],  # fmt: skip
        "train_seconds_this_run": round(time.perf_counter() - start, 1),
        # a stateful loss's own per-step record (e.g. ADD's discriminator logits), averaged over windows of 50
        **({"loss_history_50": _windowed(loss.history)} if getattr(loss, "history", None) else {}),
        **({"monitor": curve} if monitor is not None else {}),
        "torch": torch.__version__,
        "device": str(next(final.parameters()).device),
    }
    if name == "fmnist_classifier":
        xt, yt = fashion_mnist("test")
        with torch.no_grad():
            dev = next(final.parameters()).device
            entry["test_accuracy"] = float((final(xt.to(dev)).argmax(1).cpu() == yt).float().mean())
    man_path = out_dir / "manifest.json"
    man = json.loads(man_path.read_text()) if man_path.exists() else {}
    # keep the old entry's extra keys (notes), not its network description (older manifests: "unet_config", …)
    old = {
        k: v
        for k, v in man.get(name, {}).items()
        if k not in ("config_class", "components") and not (k.endswith("_config") and k != "train_config")
    }
    man[name] = {**old, **entry}
    man_path.write_text(json.dumps(man, indent=2, sort_keys=True) + "\n")
    return path, entry


def _windowed(history: list[dict], window: int = 50) -> dict:
    """``{key: [mean of each window of steps]}`` of a loss's per-step records (NaN entries skipped; a window of only
    NaN gives None)."""
    out = {}
    for key in history[0]:
        vals = [h.get(key, float("nan")) for h in history]
        out[key] = []
        for i in range(0, len(vals), window):
            w = [v for v in vals[i : i + window] if v == v]
            out[key].append(round(sum(w) / len(w), 5) if w else None)
    return out


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the ValueError into a usage error naming the option)."""
    value = int(text)
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


def main(argv=None, prog="python -m diffu.pretrained train"):
    """The ``train`` command: ``python -m diffu.pretrained train NAME [--steps N] [--out-dir D] [--workdir W]
    [--threads T] [--device DEV]`` retrains ``NAME`` with :func:`train_recipe` and prints its manifest entry.
    ``argv`` (default ``sys.argv[1:]``) is a list of strings; bad options exit with argparse's usage message."""
    if argv is not None and (isinstance(argv, str) or not all(isinstance(a, str) for a in argv)):
        raise TypeError(f"argv must be a list of strings or None, got {argv!r:.80}")
    p = argparse.ArgumentParser(
        prog=prog, description="Retrain a shipped model from scratch (resumes from WORKDIR/NAME.ckpt if present)."
    )
    p.add_argument("name", choices=sorted(RECIPES))
    p.add_argument("--steps", type=_positive_int, default=None, help="override the recipe's number of steps")
    p.add_argument("--out-dir", default=str(WEIGHTS_DIR))
    p.add_argument("--workdir", default="runs", help="where periodic checkpoints go")
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--device", default=None, help="train on this device (e.g. cuda); the weights are saved on the CPU")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path, entry = train_recipe(args.name, args.steps, args.out_dir, args.workdir, device=args.device)
    print(json.dumps({k: v for k, v in entry.items() if k != "train_config"}, indent=2))
    print("wrote", path, "via", shlex.join(sys.argv))
