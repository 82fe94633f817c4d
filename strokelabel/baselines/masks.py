"""Brain masks and connected-component clean-up shared by the baselines.

Every mask is a boolean array on the image grid. Connectivity is full (26-neighbourhood
in 3D, 8 in 2D), as in the ISLES'22 evaluation, so that a lesion touching only at a
corner counts as one cluster everywhere in the project.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from strokelabel.errors import StrokeLabelError
from strokelabel.units import voxel_volume_ml


def full_connectivity(ndim: int) -> np.ndarray:
    """Structuring element connecting every neighbour (26 in 3D)."""
    return ndimage.generate_binary_structure(ndim, ndim)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of ``mask`` with full connectivity: (labels 1..n, n)."""
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask, structure=full_connectivity(mask.ndim))
    return labels, int(count)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of ``mask`` (empty stays empty)."""
    labels, count = label_components(mask)
    if count == 0:
        return np.zeros(labels.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def remove_small_clusters(mask: np.ndarray, spacing_mm: Sequence[float], min_cluster_ml: float) -> np.ndarray:
    """Drop connected clusters smaller than ``min_cluster_ml`` mL (voxel spacing in mm)."""
    mask = np.asarray(mask, dtype=bool)
    if min_cluster_ml <= 0:
        return mask.copy()
    labels, count = label_components(mask)
    if count == 0:
        return mask.copy()
    sizes_ml = np.bincount(labels.ravel()) * voxel_volume_ml(spacing_mm, mask.ndim)
    keep = sizes_ml >= min_cluster_ml
    keep[0] = False
    return keep[labels]


def fill_holes(mask: np.ndarray, slice_axis: int | None = -1) -> np.ndarray:
    """Fill enclosed holes in 3D, then in each slice along ``slice_axis``.

    The per-slice pass fills cavities that touch the brain surface somewhere above or
    below (a ventricle open in 3D through a partial volume gap), which a 3D fill misses.
    """
    mask = np.asarray(mask, dtype=bool)
    filled = ndimage.binary_fill_holes(mask)
    if slice_axis is not None and mask.ndim == 3:
        # A structuring element with no extent along the slice axis fills each slice on
        # its own, in one vectorised call.
        in_plane = full_connectivity(3)
        index = [slice(None)] * 3
        index[slice_axis] = [0, 2]
        in_plane[tuple(index)] = False
        filled = ndimage.binary_fill_holes(filled, structure=in_plane)
    return filled


def clean_mask(candidate: np.ndarray, opening_iterations: int = 0, slice_axis: int | None = -1) -> np.ndarray:
    """Threshold result -> brain mask: optional opening, largest component, hole filling."""
    candidate = np.asarray(candidate, dtype=bool)
    mask = candidate
    if opening_iterations > 0:
        # Opening cuts thin bridges (scalp to brain through a foramen) before the largest
        # component is taken.
        mask = ndimage.binary_opening(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1), iterations=opening_iterations)
    mask = largest_component(mask)
    if opening_iterations > 0:
        # Give back the edges and corners the opening shaved off, but only as far as the
        # opening reached, so a cut bridge stays cut.
        mask = ndimage.binary_dilation(mask, structure=full_connectivity(mask.ndim), iterations=opening_iterations) & candidate
    if not mask.any():
        raise StrokeLabelError("no brain found: the brain mask threshold selects no voxels")
    return fill_holes(mask, slice_axis=slice_axis)


def brain_mask_from_perfusion(*maps: np.ndarray, slice_axis: int | None = -1) -> np.ndarray:
    """Brain mask from perfusion maps (CBF, CBV, MTT, Tmax...), which are 0 outside the brain.

    Brain = voxels where any map is positive, cleaned (largest component, holes filled so
    that ventricles, where CBF is ~0, belong to the brain). None entries (an optional map
    the study lacks) are skipped. Not for maps in HU such as the MIP, which is positive in
    skull and scalp: use :func:`brain_mask_from_mip` for those.
    """
    maps = tuple(m for m in maps if m is not None)
    if not maps:
        raise ValueError("brain_mask_from_perfusion needs at least one map")
    candidate = np.zeros(np.shape(maps[0]), dtype=bool)
    for values in maps:
        values = np.asarray(values, dtype=np.float64)
        candidate |= np.isfinite(values) & (values > 0)
    return clean_mask(candidate, slice_axis=slice_axis)


# Brain parenchyma and CSF in unenhanced or enhanced CT, HU. Vessels and bone lie above,
# air and fat below; enhanced vessels inside the brain become holes that are filled.
CT_BRAIN_RANGE_HU = (-5.0, 100.0)
# CTP maximum-intensity projection: parenchyma enhances to ~40-120 HU at peak.
MIP_BRAIN_RANGE_HU = (0.0, 150.0)


def brain_mask_from_ct(
    ct_hu: np.ndarray,
    low_hu: float = CT_BRAIN_RANGE_HU[0],
    high_hu: float = CT_BRAIN_RANGE_HU[1],
    opening_iterations: int = 1,
    slice_axis: int | None = -1,
) -> np.ndarray:
    """Brain mask from a CT volume in HU (NCCT or a CTA phase): HU window, opening, largest component, holes filled."""
    ct_hu = np.asarray(ct_hu, dtype=np.float64)
    candidate = (ct_hu >= low_hu) & (ct_hu <= high_hu)
    return clean_mask(candidate, opening_iterations=opening_iterations, slice_axis=slice_axis)


def brain_mask_from_mip(
    mip_hu: np.ndarray,
    low_hu: float = MIP_BRAIN_RANGE_HU[0],
    high_hu: float = MIP_BRAIN_RANGE_HU[1],
    opening_iterations: int = 1,
    slice_axis: int | None = -1,
) -> np.ndarray:
    """Brain mask from the CTP maximum-intensity projection (HU), as seed 004 masks its output."""
    return brain_mask_from_ct(mip_hu, low_hu, high_hu, opening_iterations, slice_axis)


def brain_mask_from_mri(dwi: np.ndarray, adc: np.ndarray | None = None, fraction: float = 0.1, slice_axis: int | None = -1) -> np.ndarray:
    """Brain mask from DWI (and ADC): DWI above ``fraction`` of its 99th percentile (noise floor), ADC > 0."""
    dwi = np.asarray(dwi, dtype=np.float64)
    finite = np.isfinite(dwi)
    positive = dwi[finite & (dwi > 0)]
    if positive.size == 0:
        raise StrokeLabelError("DWI has no positive voxels: no brain to find")
    candidate = finite & (dwi > fraction * np.percentile(positive, 99))
    if adc is not None:
        adc = np.asarray(adc, dtype=np.float64)
        candidate &= np.isfinite(adc) & (adc > 0)
    return clean_mask(candidate, slice_axis=slice_axis)
