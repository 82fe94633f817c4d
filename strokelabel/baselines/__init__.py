"""Training-free baselines, one per task, so the app is useful with zero labels.

Pure functions over numpy arrays with voxel spacing in mm passed explicitly; the app wraps
them in MONAI transforms. Thresholds are physiological (DEFUSE 3 / RAPID) or the seed's own.
"""

from strokelabel.baselines.clot import (
    N_REGIONS,
    SPIRAL_THRESHOLD,
    ClotRegionResult,
    atlas_region_index,
    clot_region_baseline,
    region_flags,
    region_max,
)
from strokelabel.baselines.figures import clot_figures, core_penumbra_figures, lesion_figures
from strokelabel.baselines.masks import (
    brain_mask_from_ct,
    brain_mask_from_mip,
    brain_mask_from_mri,
    brain_mask_from_perfusion,
    clean_mask,
    fill_holes,
    label_components,
    largest_component,
    remove_small_clusters,
)
from strokelabel.baselines.mri import ADC_LESION_THRESHOLD_MM2_S, adc_lesion_baseline, dwi_hyperintense
from strokelabel.baselines.perfusion import (
    CORE,
    PENUMBRA,
    RCBF_CORE_THRESHOLD,
    TMAX_HYPOPERFUSION_THRESHOLD_S,
    core_penumbra_baseline,
    ctp_lesion_baseline,
    estimate_midsagittal_plane,
    healthy_side_mask,
    mirror,
    relative_cbf,
)

__all__ = [
    "ADC_LESION_THRESHOLD_MM2_S",
    "CORE",
    "N_REGIONS",
    "PENUMBRA",
    "RCBF_CORE_THRESHOLD",
    "SPIRAL_THRESHOLD",
    "TMAX_HYPOPERFUSION_THRESHOLD_S",
    "ClotRegionResult",
    "adc_lesion_baseline",
    "atlas_region_index",
    "brain_mask_from_ct",
    "brain_mask_from_mip",
    "brain_mask_from_mri",
    "brain_mask_from_perfusion",
    "clean_mask",
    "clot_figures",
    "clot_region_baseline",
    "core_penumbra_baseline",
    "core_penumbra_figures",
    "ctp_lesion_baseline",
    "dwi_hyperintense",
    "estimate_midsagittal_plane",
    "fill_holes",
    "healthy_side_mask",
    "label_components",
    "largest_component",
    "lesion_figures",
    "mirror",
    "region_flags",
    "region_max",
    "relative_cbf",
    "remove_small_clusters",
]
