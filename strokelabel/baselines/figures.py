"""Figures of a label map for the result JSON: volumes in mL, lesion counts, DEFUSE 3 criteria."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from strokelabel.baselines.clot import N_REGIONS, region_flags
from strokelabel.baselines.masks import label_components
from strokelabel.baselines.perfusion import CORE, PENUMBRA
from strokelabel.units import voxel_volume_ml

# DEFUSE 3 imaging criteria (Albers et al., NEJM 2018).
DEFUSE3_MAX_CORE_ML = 70.0
DEFUSE3_MIN_MISMATCH_RATIO = 1.8
DEFUSE3_MIN_MISMATCH_ML = 15.0


def lesion_figures(label: np.ndarray, spacing_mm: Sequence[float]) -> dict:
    """Volume in mL per label value, the total lesion (label > 0) volume and its connected-component count."""
    label = np.asarray(label)
    voxel_ml = voxel_volume_ml(spacing_mm, label.ndim)
    values, counts = np.unique(label[label > 0], return_counts=True)
    _, count = label_components(label > 0)
    return {
        "volumes_ml": {int(v): float(c * voxel_ml) for v, c in zip(values, counts)},
        "lesion_volume_ml": float(np.count_nonzero(label > 0) * voxel_ml),
        "lesion_count": count,
    }


def core_penumbra_figures(
    label: np.ndarray,
    spacing_mm: Sequence[float],
    max_core_ml: float = DEFUSE3_MAX_CORE_ML,
    min_mismatch_ratio: float = DEFUSE3_MIN_MISMATCH_RATIO,
    min_mismatch_ml: float = DEFUSE3_MIN_MISMATCH_ML,
) -> dict:
    """Core, penumbra, hypoperfusion and mismatch volumes (mL), mismatch ratio and the DEFUSE 3 imaging criteria.

    Hypoperfusion (Tmax > 6 s) = core + penumbra: penumbra is hypoperfused tissue that is
    not core, and core is taken to lie within the hypoperfusion, so the label map alone
    gives every figure (a network's output too). Mismatch volume = hypoperfusion - core.
    Mismatch ratio = hypoperfusion / core; with no core it is undefined and reported as
    None, and the ratio criterion counts as met when there is hypoperfusion (the ratio is
    unbounded) and as not met when there is none.
    """
    label = np.asarray(label)
    voxel_ml = voxel_volume_ml(spacing_mm, label.ndim)
    core_ml = float(np.count_nonzero(label == CORE) * voxel_ml)
    penumbra_ml = float(np.count_nonzero(label == PENUMBRA) * voxel_ml)
    hypo_ml = core_ml + penumbra_ml
    mismatch_ml = hypo_ml - core_ml
    ratio = hypo_ml / core_ml if core_ml > 0 else None
    core_ok = core_ml < max_core_ml
    ratio_ok = ratio >= min_mismatch_ratio if ratio is not None else hypo_ml > 0
    mismatch_ok = mismatch_ml >= min_mismatch_ml
    return {
        "core_volume_ml": core_ml,
        "penumbra_volume_ml": penumbra_ml,
        "hypoperfusion_volume_ml": hypo_ml,
        "mismatch_volume_ml": mismatch_ml,
        "mismatch_ratio": ratio,
        "defuse3_core_below_70ml": bool(core_ok),
        "defuse3_ratio_at_least_1_8": bool(ratio_ok),
        "defuse3_mismatch_at_least_15ml": bool(mismatch_ok),
        "defuse3_imaging_criteria_met": bool(core_ok and ratio_ok and mismatch_ok),
    }


def clot_figures(
    clot_mask: np.ndarray,
    affine: np.ndarray,
    atlas: np.ndarray | None = None,
    region_base: int = 1,
    n_regions: int = N_REGIONS,
) -> dict:
    """Clot volume (mL), voxel and component counts, centre in scanner coordinates (mm), and atlas regions it lies in.

    ``affine`` is the image's voxel-to-world (RAS, mm) matrix; spacing is taken from it.
    The centre is the centre of mass of all clot voxels (None when there is no clot). With
    an atlas, ``atlas_regions_with_clot`` lists the region numbers (in the atlas' own
    numbering) holding a clot voxel: seed 002's label rule applied to this mask.
    """
    clot = np.asarray(clot_mask) > 0
    affine = np.asarray(affine, dtype=np.float64)
    spacing_mm = np.linalg.norm(affine[:3, : clot.ndim], axis=0)
    voxels = np.argwhere(clot)
    centre = None
    if voxels.size:
        centre_vox = np.zeros(4)
        centre_vox[: clot.ndim] = voxels.mean(axis=0)
        centre_vox[3] = 1.0
        centre = [round(float(c), 2) for c in (affine @ centre_vox)[:3]]
    _, count = label_components(clot)
    figures = {
        "clot_volume_ml": float(voxels.shape[0] * voxel_volume_ml(spacing_mm, clot.ndim)),
        "clot_voxels": int(voxels.shape[0]),
        "clot_count": count,
        "clot_centre_ras_mm": centre,
    }
    if atlas is not None:
        flags = region_flags(clot, atlas, region_base=region_base, n_regions=n_regions)
        figures["atlas_regions_with_clot"] = (np.flatnonzero(flags) + region_base).tolist()
    return figures
