"""Figures of a label map for the result JSON: volumes in mL, lesion counts, DEFUSE 3 criteria."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from strokelabel.baselines.clot import N_REGIONS, atlas_region_index
from strokelabel.baselines.masks import label_components
from strokelabel.boxes import bounding_box
from strokelabel.baselines.perfusion import CORE, PENUMBRA
from strokelabel.trial_criteria import DEFUSE3
from strokelabel.units import voxel_volume_ml


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


def core_penumbra_figures(label: np.ndarray, spacing_mm: Sequence[float]) -> dict:
    """Core, penumbra, hypoperfusion and mismatch volumes (mL), mismatch ratio and the DEFUSE 3 imaging criteria.

    Hypoperfusion (Tmax > 6 s) = core + penumbra: penumbra is hypoperfused tissue that is
    not core, and core is taken to lie within the hypoperfusion, so the label map alone
    gives every figure (a network's output too). Mismatch volume = hypoperfusion - core.
    Mismatch ratio = hypoperfusion / core; with no core it is undefined and reported as
    None, and the ratio criterion counts as met when there is hypoperfusion (the ratio is
    unbounded) and as not met when there is none. The criteria are :data:`strokelabel.trial_criteria.DEFUSE3`'s.
    """
    label = np.asarray(label)
    voxel_ml = voxel_volume_ml(spacing_mm, label.ndim)
    core_ml = float(np.count_nonzero(label == CORE) * voxel_ml)
    penumbra_ml = float(np.count_nonzero(label == PENUMBRA) * voxel_ml)
    hypo_ml = core_ml + penumbra_ml
    mismatch_ml = hypo_ml - core_ml
    ratio = hypo_ml / core_ml if core_ml > 0 else None
    core_ok, ratio_ok, mismatch_ok = DEFUSE3.check(core_ml, hypo_ml).values()
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
    brain_mask: np.ndarray | None = None,
) -> dict:
    """Figures that size and locate a clot, for the result JSON (units in the key names).

    One implementation for the baseline and the learned models (the app's ClotFiguresd and
    ``clot_seg_net.clot_location`` both call it).

    ``affine`` is the image's voxel-to-world (RAS+, mm) matrix: +x is the patient's right.
    Returns ``clot_volume_ml``, ``clot_voxels``, ``clot_count`` (26-connected components),
    ``clot_centre_ras_mm`` and ``clot_centre_voxel`` (centre of mass), ``clot_slice_index``
    (last-axis index of the centre, rounded), ``clot_slice_range`` ([first, last] slice with
    clot), ``clot_hemisphere`` ("R"/"L": the centre right or left of the midline, which is the
    centroid of ``brain_mask``, else of the atlas regions (``region_base=1``), else the volume
    centre); location figures are None without clot. With an atlas, ``atlas_regions_with_clot``
    lists the region numbers (the atlas' own numbering) holding a clot voxel (seed 002's label
    rule applied to this mask) and ``clot_region`` the one holding most clot voxels.
    """
    clot = np.asarray(clot_mask) > 0
    affine = np.asarray(affine, dtype=np.float64)
    spacing_mm = np.linalg.norm(affine[:3, : clot.ndim], axis=0)
    voxels = np.argwhere(clot)
    box = bounding_box(clot)  # components are counted in the clot's box, not over the whole grid
    count = 0 if box is None else label_components(clot[box])[1]
    figures = {
        "clot_volume_ml": float(voxels.shape[0] * voxel_volume_ml(spacing_mm, clot.ndim)),
        "clot_voxels": int(voxels.shape[0]),
        "clot_count": count,
        "clot_centre_ras_mm": None,
        "clot_centre_voxel": None,
        "clot_slice_index": None,
        "clot_slice_range": None,
        "clot_hemisphere": None,
    }
    region = None
    if atlas is not None:
        region = atlas_region_index(atlas, region_base, n_regions)
        if region.shape != clot.shape:
            raise ValueError(f"atlas {region.shape} and clot mask {clot.shape} must be on the same grid")
        figures["atlas_regions_with_clot"] = []
        figures["clot_region"] = None
    if not voxels.size:
        return figures

    def to_world(vox):
        return affine[:3, : clot.ndim] @ vox + affine[:3, 3]

    centre_vox = voxels.mean(axis=0)
    centre_mm = to_world(centre_vox)
    figures["clot_centre_voxel"] = [round(float(v), 2) for v in centre_vox]
    figures["clot_centre_ras_mm"] = [round(float(c), 2) for c in centre_mm]
    figures["clot_slice_index"] = int(round(centre_vox[-1]))
    figures["clot_slice_range"] = [int(voxels[:, -1].min()), int(voxels[:, -1].max())]
    brain = None
    if brain_mask is not None:
        brain = np.asarray(brain_mask, dtype=bool)
    elif region is not None and region_base == 1:
        brain = region >= 0
    midline_vox = _centroid(brain) if brain is not None and brain.any() else (np.array(clot.shape) - 1) / 2.0
    figures["clot_hemisphere"] = "R" if centre_mm[0] > to_world(midline_vox)[0] else "L"
    if region is not None:
        hit = region[clot]
        counts = np.bincount(hit[hit >= 0], minlength=n_regions)
        figures["atlas_regions_with_clot"] = (np.flatnonzero(counts) + region_base).tolist()
        figures["clot_region"] = int(counts.argmax() + region_base) if counts.any() else None
    return figures


def _centroid(mask: np.ndarray) -> np.ndarray:
    """Centroid (voxel coordinates) of a boolean mask, from its marginal sums (no coordinate list)."""
    total = mask.sum()
    return np.array(
        [(mask.sum(axis=tuple(a for a in range(mask.ndim) if a != ax)) * np.arange(mask.shape[ax])).sum() / total
         for ax in range(mask.ndim)]
    )


# ISLES'24 ships a per-patient Circle-of-Willis label map (``cow-msk``), made with the TopCoW
# challenge's model and numbering; its segments name the artery a clot sits in.
COW_SEGMENTS = {1: "BA", 2: "R-PCA", 3: "L-PCA", 4: "R-ICA", 5: "R-MCA", 6: "L-ICA", 7: "L-MCA", 8: "R-Pcom", 9: "L-Pcom",
                10: "Acom", 11: "R-ACA", 12: "L-ACA", 13: "3rd-A2"}


def cow_segments_near_clot(clot_mask: np.ndarray, cow: np.ndarray, spacing_mm: Sequence[float], within_mm: float = 3.0) -> list[dict]:
    """The Circle-of-Willis segments within ``within_mm`` of the clot (an occluded lumen is often
    left out of a vessel segmentation, so the clot touches its artery rather than lying in it),
    most clot-adjacent first: ``[{"segment": n, "name": "L-MCA", "voxels": k}, ...]``."""
    from scipy import ndimage

    clot = np.asarray(clot_mask) > 0
    if not clot.any():
        return []
    # Distance (mm) from every voxel to the clot, on the study's anisotropic grid.
    distance = ndimage.distance_transform_edt(~clot, sampling=tuple(float(s) for s in spacing_mm))
    near = np.asarray(cow).astype(np.int64)[distance <= within_mm]
    segments, counts = np.unique(near[near > 0], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return [{"segment": int(segments[i]), "name": COW_SEGMENTS.get(int(segments[i]), f"segment {int(segments[i])}"), "voxels": int(counts[i])}
            for i in order]
