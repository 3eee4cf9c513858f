"""Medical imaging with diffusion models (chapter §5): high dimensionality and volumes, anomaly detection by masked
posterior sampling, uncertainty from posterior samples, and cross-modality translation. The reconstruction solvers
(DDS, predictor–corrector with data consistency) live in :mod:`diffu.inverse` with the operators they use; the
data (MNI152 slices, CT phantoms, bundled scans) in :mod:`diffu.data`."""

from .anomaly import (
    POLARITIES,
    SIDES,
    anoddpm_map,
    autoencoder_map,
    best_dice,
    brain_mask,
    insert_lesions,
    masked_dps_map,
    mirror_difference,
    partial_timesteps,
    patch_masks,
    pixel_auroc,
)
from .measurements import analytic_reconstruction, measure_physical, signed_measurement
from .translation import IntensityMap, TissueMap, ddib, fit_intensity_map, fit_tissue_map, paired_loss
from .uncertainty import (
    COVERAGE_METHODS,
    average_ranks,
    coverage_curve,
    error_correlation,
    expected_coverage,
    interval_coverage,
    posterior_interval,
    posterior_moments,
)
from .volumes import (
    apply_slicewise,
    chi_moments,
    noise_norm_stats,
    slice_inconsistency,
    to_slices,
    to_volume,
    z_roughness,
)

__all__: list[str] = [
    # measurements on the physical scale (§5)
    "analytic_reconstruction",
    "measure_physical",
    "signed_measurement",
    # high dimensionality and volumes (§5.1)
    "apply_slicewise",
    "chi_moments",
    "noise_norm_stats",
    "slice_inconsistency",
    "to_slices",
    "to_volume",
    "z_roughness",
    # anomaly detection (§5.1.4)
    "POLARITIES",
    "SIDES",
    "anoddpm_map",
    "autoencoder_map",
    "best_dice",
    "brain_mask",
    "insert_lesions",
    "masked_dps_map",
    "mirror_difference",
    "partial_timesteps",
    "patch_masks",
    "pixel_auroc",
    # uncertainty (§5.1.3)
    "COVERAGE_METHODS",
    "average_ranks",
    "coverage_curve",
    "error_correlation",
    "expected_coverage",
    "interval_coverage",
    "posterior_interval",
    "posterior_moments",
    # cross-modality translation (§5.2)
    "IntensityMap",
    "TissueMap",
    "ddib",
    "fit_intensity_map",
    "fit_tissue_map",
    "paired_loss",
]
