"""The probe table of the bad-input sweep (issue 18): every public name of diffu, called with valid arguments and
then with one argument made bad at a time, plus the cases the issue lists by name and the state/side-effect probes.

The probes themselves live in the ``table_*`` modules, one per layer of the package; :func:`all_probes` builds the
whole table (names are resolved only when a probe runs, see :mod:`tests.sweep.kit`). :data:`MODULES` lists the
modules whose ``__all__`` the coverage test walks, and :data:`EXEMPT` the public names that need no probe.
"""

from __future__ import annotations

from . import (
    table_attention_masks,
    table_control,
    table_core,
    table_inverse,
    table_issue,
    table_medical,
    table_nn,
    table_rest,
    table_segmentation,
)
from .kit import Probe, Table

#: Every module of diffu with a public ``__all__`` (the coverage test checks that each name has a probe).
MODULES = (
    "diffu",
    "diffu.checks",
    "diffu.data",
    "diffu.data.mni",
    "diffu.data.phantoms",
    "diffu.data.scans",
    "diffu.data.cardiac",
    "diffu.captions",
    "diffu.schedules",
    "diffu.sampling",
    "diffu.samplers",
    "diffu.ode",
    "diffu.sde",
    "diffu.sde_samplers",
    "diffu.flow",
    "diffu.compare",
    "diffu.gmm",
    "diffu.train",
    "diffu.pretrained",
    "diffu.metrics",
    "diffu.guidance",
    "diffu.diffusion_priors",
    "diffu.text_to_image",
    "diffu.representations",
    "diffu.viz",
    "diffu.book",
    "diffu.recipes",
    "diffu.medical",
    "diffu.medical.anomaly",
    "diffu.medical.translation",
    "diffu.medical.uncertainty",
    "diffu.medical.volumes",
    "diffu.medical.measurements",
    "diffu.segmentation",
    "diffu.control",
    "diffu.segmentation.masks",
    "diffu.segmentation.ensemble",
    "diffu.segmentation.recursive",
    "diffu.segmentation.evaluation",
    "diffu.segmentation.attention",
    "diffu.data.textured",
    "diffu.nn",
    "diffu.nn.adapter",
    "diffu.nn.autoencoder",
    "diffu.nn.classifier",
    "diffu.nn.concat",
    "diffu.nn.controlnet",
    "diffu.nn.dit",
    "diffu.nn.drunet",
    "diffu.nn.embeddings",
    "diffu.nn.inputs",
    "diffu.nn.mlp",
    "diffu.nn.mmdit",
    "diffu.nn.segnet",
    "diffu.nn.text",
    "diffu.nn.transformer",
    "diffu.nn.unet",
    "diffu.nn.unet3d",
    "diffu.inverse",
    "diffu.inverse.blind",
    "diffu.inverse.blur",
    "diffu.inverse.classical",
    "diffu.inverse.ddrm",
    "diffu.inverse.dds",
    "diffu.inverse.dps",
    "diffu.inverse.fourier",
    "diffu.inverse.masks",
    "diffu.inverse.operators",
    "diffu.inverse.pnp",
    "diffu.inverse.repaint",
    "diffu.inverse.resample",
    "diffu.inverse.score_pc",
    "diffu.inverse.two_stage",
)

#: Public names that no probe calls, and why. Constants (tables, tuples of choices, paths, the version string)
#: have no inputs to get wrong; each choice tuple is exercised through the function that reads it.
EXEMPT = {
    "diffu.__version__": "a version string",
    "diffu.captions.CLASS_NOUNS": "constant (read by caption)",
    "diffu.captions.TEMPLATES": "constant (read by caption)",
    "diffu.data.FMNIST_CLASSES": "constant",
    "diffu.data.TOY_DATASETS": "constant (the choices of toy_2d)",
    "diffu.data.mni.GUARD": "constant (read by mni_slices)",
    "diffu.data.mni.HELD_OUT": "constant (read by mni_slices and mni_volume)",
    "diffu.data.mni.MNI_LICENSE": "constant (a licence text)",
    "diffu.data.mni.T2_CONTRAST": "constant (the tissue intensities of synthetic_t2)",
    "diffu.data.mni.TISSUES": "constant (the label names of mni_slices)",
    "diffu.data.scans.SCANS": "constant (the choices of scan)",
    "diffu.data.cardiac.CARDIAC_CLASSES": "constant (the label names of cardiac_phantoms)",
    "diffu.segmentation.masks.ENCODINGS": "constant (the choices of encode_masks)",
    "diffu.data.textured.TEXTURES": "constant (the choices of textured_fashion)",
    "diffu.segmentation.attention.KEYS": "constant (the choices of attention_masks)",
    "diffu.segmentation.attention.UPSAMPLING": "constant (the choices of attention_masks)",
    "diffu.control.EDGE_THRESHOLD": "constant (edge_map's default threshold)",
    "diffu.control.FOREGROUND_LEVEL": "constant (mask_fidelity's default level)",
    "diffu.medical.anomaly.POLARITIES": "constant (the choices of insert_lesions)",
    "diffu.medical.anomaly.SIDES": "constant (the choices of insert_lesions)",
    "diffu.medical.uncertainty.COVERAGE_METHODS": "constant (the choices of posterior_interval and the coverages)",
    "diffu.schedules.PREDICTIONS": "constant (the choices of Schedule.to_eps)",
    "diffu.sampling.SPACINGS": "constant (the choices of ddim_timesteps)",
    "diffu.ode.SOLVERS": "constant (the choices of integrate)",
    "diffu.sde.SDES": "constant (the choices of make_sde)",
    "diffu.compare.SAMPLERS": "constant (the choices of sample_at_nfe)",
    "diffu.pretrained.DIT_ABLATION": "constant",
    "diffu.pretrained.WEIGHTS_DIR": "constant (a path)",
    "diffu.recipes.RECIPES": "constant (the choices of train_recipe)",
    "diffu.nn.dit.CONDITIONINGS": "constant (the choices of DiTConfig.conditioning)",
    "diffu.nn.dit.DIT_BLOCKS": "constant",
    "diffu.nn.dit.DIT_SIZES": "constant",
    "diffu.inverse.dds.ETA_RULES": "constant (the choices of dds)",
    "diffu.inverse.dps.NOISES": "constant (the choices of dps)",
    "diffu.inverse.two_stage.BLUR_SIGMA": "constant (degrade's default range)",
    "diffu.inverse.two_stage.FACTORS": "constant (degrade's default factors)",
    "diffu.inverse.two_stage.NOISE_SIGMA": "constant (degrade's default range)",
}


def all_probes() -> list[Probe]:
    """The whole probe table, in a fixed order."""
    t = Table()
    for table in (
        table_core,
        table_nn,
        table_inverse,
        table_rest,
        table_medical,
        table_segmentation,
        table_control,
        table_attention_masks,
        table_issue,
    ):
        table.build(t)
    return t.probes
