"""Training-free clot baseline of seed 002: threshold the SPIRAL map, map voxels to atlas regions.

SPIRAL values are probabilities in [0, 1]; voxels with SPIRAL >= 0.9 (the seed's best
threshold on its training set) inside the atlas are clot. A region is flagged when it
holds a clot voxel; its probability is the highest SPIRAL value in the region, so a
region just under the threshold is visible as such.

Atlas numbering: regions 1..15 and 0 outside the brain (``region_base=1``, this project),
or regions 0..14 as in the AMI data (``region_base=0``; every voxel is then in a region
unless a ``brain_mask`` says otherwise). Regions are indexed 0..14 internally either way;
``region_ids`` gives them back in the atlas' own numbering.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from strokelabel.boxes import bounding_box, paste
from strokelabel.errors import StrokeLabelError

N_REGIONS = 15
SPIRAL_THRESHOLD = 0.9


def atlas_region_index(
    atlas: np.ndarray, region_base: int = 1, n_regions: int = N_REGIONS, brain_mask: np.ndarray | None = None
) -> np.ndarray:
    """Region index 0..n_regions-1 per voxel (int8), -1 outside the regions (and outside ``brain_mask``).

    Checked and converted without a float or int64 copy of the atlas (a full-size atlas is 67 M voxels).
    """
    if region_base not in (0, 1):
        raise ValueError(f"region_base must be 0 (AMI numbering 0..14) or 1 (1..15, 0 outside); got {region_base}")
    atlas = np.asarray(atlas)
    check_atlas_values(atlas, region_base, n_regions)
    index = atlas.astype(np.int8)
    if atlas.dtype.kind == "f" and not np.array_equal(index, atlas):
        raise StrokeLabelError("the atlas holds non-integer values; expected region numbers")
    if region_base:
        index -= np.int8(region_base)  # 0 outside -> -1
    if brain_mask is not None:
        index[~np.asarray(brain_mask, dtype=bool)] = -1
    return index


def check_atlas_values(atlas: np.ndarray, region_base: int = 1, n_regions: int = N_REGIONS) -> None:
    """Refuse an atlas holding non-finite values or values outside the numbering (from its extremes: two passes)."""
    atlas = np.asarray(atlas)
    if atlas.size == 0:
        return
    low, high = float(atlas.min()), float(atlas.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise StrokeLabelError("the atlas holds non-integer values; expected region numbers")
    if low < 0 or high > region_base + n_regions - 1:
        bad = (atlas < 0) | (atlas > region_base + n_regions - 1)
        expected = f"{region_base}..{region_base + n_regions - 1}" + (", 0 outside" if region_base == 1 else "")
        raise StrokeLabelError(f"the atlas holds values {np.unique(atlas[bad])[:10].tolist()} outside {expected}")


def region_box(atlas: np.ndarray, region_base: int = 1, brain_mask: np.ndarray | None = None):
    """The box (``strokelabel.boxes``) holding every region voxel, None if there is none: the atlas'
    bounding box with numbering 1..15 (0 outside), the whole grid with the AMI numbering unless a
    ``brain_mask`` bounds it. Region work done in this box gives the whole grid's answer."""
    atlas = np.asarray(atlas)
    inside = (atlas > 0) if region_base == 1 else None
    if brain_mask is not None:
        brain = np.asarray(brain_mask, dtype=bool)
        inside = brain if inside is None else inside & brain
    return tuple(slice(0, n) for n in atlas.shape) if inside is None else bounding_box(inside)


def _bins(region: np.ndarray, slice_axis: int | None, n_regions: int) -> tuple[np.ndarray, int]:
    """Flat bin per voxel (slice x regions + region), -1 outside, and the number of slices."""
    if slice_axis is None:
        return region, 1
    n_slices = region.shape[slice_axis]
    shape = [1] * region.ndim
    shape[slice_axis] = n_slices
    slice_index = np.arange(n_slices).reshape(shape)
    return np.where(region >= 0, slice_index * n_regions + region, -1), n_slices


def region_flags(
    mask: np.ndarray,
    atlas: np.ndarray,
    region_base: int = 1,
    slice_axis: int | None = None,
    n_regions: int = N_REGIONS,
    brain_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Which regions hold a voxel of ``mask``: (n_regions,) bool per study, or (n_slices, n_regions) per slice along ``slice_axis``.

    Applied to the true clot this is seed 002's label generation; to a predicted clot, its prediction.
    """
    region = atlas_region_index(atlas, region_base, n_regions, brain_mask)
    bins, n_slices = _bins(region, slice_axis, n_regions)
    hit = bins[np.asarray(mask, dtype=bool) & (bins >= 0)]
    flags = np.bincount(hit, minlength=n_slices * n_regions) > 0
    return flags if slice_axis is None else flags.reshape(n_slices, n_regions)


def region_max(
    values: np.ndarray,
    atlas: np.ndarray,
    region_base: int = 1,
    slice_axis: int | None = None,
    n_regions: int = N_REGIONS,
    brain_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Highest value per region (0 where a region is absent); shapes as in :func:`region_flags`."""
    region = atlas_region_index(atlas, region_base, n_regions, brain_mask)
    bins, n_slices = _bins(region, slice_axis, n_regions)
    inside = bins >= 0
    out = np.zeros(n_slices * n_regions)
    np.maximum.at(out, bins[inside], np.asarray(values, dtype=np.float64)[inside])
    return out if slice_axis is None else out.reshape(n_slices, n_regions)


class ClotRegionResult(NamedTuple):
    """Clot voxels, the 15 region flags and a probability per region (index 0..14).

    A named tuple, so ``clot, flags, probabilities = clot_region_baseline(...)`` works;
    flags and probabilities are None when no atlas was given.
    """

    clot_mask: np.ndarray
    flags: np.ndarray | None
    probabilities: np.ndarray | None

    def figures(self, region_base: int = 1) -> dict:
        """Result-JSON figures: affected regions and per-region probabilities, keyed by atlas region number."""
        figures = {"clot_voxels": int(np.count_nonzero(self.clot_mask))}
        if self.flags is not None:
            ids = (np.arange(self.flags.size) + region_base).tolist()
            figures["affected_regions"] = [i for i, f in zip(ids, self.flags.tolist()) if f]
            figures["region_probabilities"] = {str(i): round(float(p), 4) for i, p in zip(ids, self.probabilities)}
        return figures


def clot_region_baseline(
    spiral: np.ndarray,
    atlas: np.ndarray | None,
    threshold: float = SPIRAL_THRESHOLD,
    region_base: int = 1,
    brain_mask: np.ndarray | None = None,
    n_regions: int = N_REGIONS,
) -> ClotRegionResult:
    """Seed 002's SPIRAL baseline: clot = SPIRAL >= ``threshold`` inside the atlas regions.

    Without an atlas the clot is thresholded inside ``brain_mask`` (or everywhere) and the
    region flags and probabilities are None.
    """
    spiral = np.asarray(spiral)
    if spiral.dtype.kind != "f":
        spiral = spiral.astype(np.float64)
    if atlas is not None and np.shape(atlas) != spiral.shape:
        raise StrokeLabelError(f"SPIRAL shape {spiral.shape} differs from the atlas shape {np.shape(atlas)}")
    low, high = float(spiral.min()), float(spiral.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise StrokeLabelError("SPIRAL contains NaN or infinite voxels")
    if low < -1e-6 or high > 1 + 1e-6:
        raise StrokeLabelError(f"SPIRAL values lie in [{low:.4g}, {high:.4g}]; expected probabilities in [0, 1]")
    at_least = np.float64(threshold)  # compared in float64 whatever the map's precision, as the seed did
    if atlas is None:
        inside = np.ones(spiral.shape, bool) if brain_mask is None else np.asarray(brain_mask, dtype=bool)
        return ClotRegionResult(clot_mask=(spiral >= at_least) & inside, flags=None, probabilities=None)
    # Regions, clot and maxima in the box that holds the regions (the atlas' bounding box): the
    # same answer as on the whole grid, a quarter of the voxels of a full-size CTA.
    check_atlas_values(atlas, region_base, n_regions)
    box = region_box(atlas, region_base, brain_mask)
    probabilities = np.zeros(n_regions)
    if box is None:
        return ClotRegionResult(clot_mask=np.zeros(spiral.shape, bool), flags=np.zeros(n_regions, bool), probabilities=probabilities)
    region = atlas_region_index(np.asarray(atlas)[box], region_base, n_regions, None if brain_mask is None else np.asarray(brain_mask)[box])
    values = spiral[box]
    inside = region >= 0
    clot = (values >= at_least) & inside
    flags = np.bincount(region[clot], minlength=n_regions) > 0
    np.maximum.at(probabilities, region[inside], values[inside])
    return ClotRegionResult(clot_mask=paste(clot, box, spiral.shape), flags=flags, probabilities=probabilities)
