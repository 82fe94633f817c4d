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

from strokelabel.errors import StrokeLabelError

N_REGIONS = 15
SPIRAL_THRESHOLD = 0.9


def atlas_region_index(
    atlas: np.ndarray, region_base: int = 1, n_regions: int = N_REGIONS, brain_mask: np.ndarray | None = None
) -> np.ndarray:
    """Region index 0..n_regions-1 per voxel, -1 outside the regions (and outside ``brain_mask``)."""
    if region_base not in (0, 1):
        raise ValueError(f"region_base must be 0 (AMI numbering 0..14) or 1 (1..15, 0 outside); got {region_base}")
    atlas = np.asarray(atlas)
    if not np.all(np.isfinite(atlas)) or not np.all(np.equal(np.mod(atlas, 1), 0)):
        raise StrokeLabelError("the atlas holds non-integer values; expected region numbers")
    index = atlas.astype(np.int64) - region_base
    out_of_range = np.unique(atlas[(index >= n_regions) | (index < -region_base)])
    if out_of_range.size:
        expected = f"{region_base}..{region_base + n_regions - 1}" + (", 0 outside" if region_base == 1 else "")
        raise StrokeLabelError(f"the atlas holds values {out_of_range[:10].tolist()} outside {expected}")
    index[index < 0] = -1
    if brain_mask is not None:
        index[~np.asarray(brain_mask, dtype=bool)] = -1
    return index


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
    spiral = np.asarray(spiral, dtype=np.float64)
    if atlas is not None and np.shape(atlas) != spiral.shape:
        raise StrokeLabelError(f"SPIRAL shape {spiral.shape} differs from the atlas shape {np.shape(atlas)}")
    if not np.all(np.isfinite(spiral)):
        raise StrokeLabelError("SPIRAL contains NaN or infinite voxels")
    low, high = float(spiral.min()), float(spiral.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise StrokeLabelError(f"SPIRAL values lie in [{low:.4g}, {high:.4g}]; expected probabilities in [0, 1]")
    if atlas is None:
        inside = np.ones(spiral.shape, bool) if brain_mask is None else np.asarray(brain_mask, dtype=bool)
        return ClotRegionResult(clot_mask=(spiral >= threshold) & inside, flags=None, probabilities=None)
    region = atlas_region_index(atlas, region_base, n_regions, brain_mask)
    inside = region >= 0
    clot = (spiral >= threshold) & inside
    flags = np.bincount(region[clot], minlength=n_regions) > 0
    probabilities = np.zeros(n_regions)
    np.maximum.at(probabilities, region[inside], spiral[inside])
    return ClotRegionResult(clot_mask=clot, flags=flags, probabilities=probabilities)
