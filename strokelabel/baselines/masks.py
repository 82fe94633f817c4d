"""Brain masks and connected-component clean-up shared by the baselines.

Every mask is a boolean array on the image grid. Connectivity is full (26-neighbourhood
in 3D, 8 in 2D), as in the ISLES'22 evaluation, so that a lesion touching only at a
corner counts as one cluster everywhere in the project.

Speed (a 512 x 512 x 64 CTP grid is 16.7 M voxels, the brain about a fifth of them): the
spatial steps run on the bounding box of what they act on (:func:`bounding_box`), grown by as
many voxels as a step reaches, so the answer is the full grid's voxel for voxel (every voxel
outside the box is background, and the tests compare both); holes are filled by labelling the
background once instead of scipy's ``binary_fill_holes``, whose dilation repeats until no voxel
changes (2.7 s for the MIP brain mask of a full CTP study, 0.4 s now, same mask).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from strokelabel.boxes import bounding_box, paste
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
    """The largest connected component of ``mask`` (empty stays empty; of equal sizes, the first in voxel order)."""
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask)
    if box is None:
        return np.zeros(mask.shape, dtype=bool)
    # Components are numbered in voxel order, which a box keeps: ties resolve as on the full grid.
    labels, _ = label_components(mask[box])
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return paste(labels == int(np.argmax(sizes)), box, mask.shape, fill=False)


def remove_small_clusters(mask: np.ndarray, spacing_mm: Sequence[float], min_cluster_ml: float) -> np.ndarray:
    """Drop connected clusters smaller than ``min_cluster_ml`` mL (voxel spacing in mm)."""
    mask = np.asarray(mask, dtype=bool)
    voxel_ml = voxel_volume_ml(spacing_mm, mask.ndim)
    box = bounding_box(mask)
    if min_cluster_ml <= 0 or box is None:
        return mask.copy()
    labels, _ = label_components(mask[box])
    keep = np.bincount(labels.ravel()) * voxel_ml >= min_cluster_ml
    keep[0] = False
    return paste(keep[labels], box, mask.shape, fill=False)


def fill_holes(mask: np.ndarray, slice_axis: int | None = -1) -> np.ndarray:
    """Fill enclosed holes in 3D, then in each slice along ``slice_axis``.

    The per-slice pass fills cavities that touch the brain surface somewhere above or
    below (a ventricle open in 3D through a partial volume gap), which a 3D fill misses.
    """
    mask = np.asarray(mask, dtype=bool)
    filled = fill_enclosed(mask, ndimage.generate_binary_structure(mask.ndim, 1))
    if slice_axis is not None and mask.ndim == 3:
        # A structuring element with no extent along the slice axis fills each slice on
        # its own, in one vectorised call.
        in_plane = full_connectivity(3)
        index = [slice(None)] * 3
        index[slice_axis] = [0, 2]
        in_plane[tuple(index)] = False
        filled = fill_enclosed(filled, in_plane)
    return filled


def fill_enclosed(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes(mask, structure)``, by one labelling of the background.

    A background voxel stays background when its component (connected by ``structure``) reaches
    a face of the array that ``structure`` steps across (a structure with no extent along an
    axis, e.g. in-plane, is not fed from that axis's faces), as scipy's dilation from the border
    reaches it; every other component is a hole and is filled."""
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(~mask, structure=structure)
    if count == 0:
        return mask.copy()
    outside = np.zeros(count + 1, dtype=bool)
    structure = np.asarray(structure, dtype=bool)
    for axis in range(mask.ndim):
        if np.take(structure, 0, axis=axis).any() or np.take(structure, -1, axis=axis).any():
            outside[np.take(labels, 0, axis=axis)] = True
            outside[np.take(labels, -1, axis=axis)] = True
    outside[0] = False  # label 0: the mask itself
    return ~outside[labels]


def clean_mask(candidate: np.ndarray, opening_iterations: int = 0, slice_axis: int | None = -1) -> np.ndarray:
    """Threshold result -> brain mask: optional opening, largest component, hole filling."""
    full = np.asarray(candidate, dtype=bool)
    # Every step below stays inside the candidate's box grown by what the opening reaches (and one
    # voxel of background around it, which the hole filling needs): the same mask, on fewer voxels.
    box = bounding_box(full, margin=opening_iterations + 1)
    if box is None:
        raise StrokeLabelError("no brain found: the brain mask threshold selects no voxels")
    candidate = full[box]
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
    return paste(fill_holes(mask, slice_axis=slice_axis), box, full.shape, fill=False)


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
        values = np.asarray(values)
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
    # Compared without a float64 copy; float64 limits make the comparison exactly the float64 one.
    ct_hu = np.asarray(ct_hu)
    candidate = (ct_hu >= np.float64(low_hu)) & (ct_hu <= np.float64(high_hu))
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


def _ball(radius_mm: float, spacing_mm) -> np.ndarray:
    """A ball of ``radius_mm`` as a structuring element on a grid of ``spacing_mm`` (at least the 6-neighbourhood)."""
    half = [max(1, int(np.floor(radius_mm / float(s)))) if radius_mm >= float(s) else 0 for s in spacing_mm]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * float(s) for h, s in zip(half, spacing_mm)], indexing="ij")
    ball = sum(g**2 for g in grids) <= radius_mm**2
    if ball.sum() <= 1:
        ball = ndimage.generate_binary_structure(len(spacing_mm), 1)
    return ball


# Parenchyma has an ADC of 0.6-1.0 x 10^-3 mm²/s and CSF ~3: above this multiple of the head's
# median ADC a voxel is CSF (or noise), which separates the brain from skull and scalp.
MRI_CSF_ADC_FACTOR = 1.9
# Opening radius that cuts the brain from scalp, eyes and neck through the thin bridges left by
# the CSF/skull gap on a non-skull-stripped DWI (a few voxels at 2 mm, well below a gyrus).
MRI_OPENING_MM = 4.0


def brain_mask_from_mri(
    dwi: np.ndarray,
    adc: np.ndarray | None = None,
    spacing_mm=None,
    fraction: float = 0.1,
    slice_axis: int | None = -1,
) -> np.ndarray:
    """Brain mask from DWI (and ADC), skull-stripped or not.

    Tissue = DWI above ``fraction`` of its 99th percentile (the noise floor) and, with ADC, ADC > 0
    (fitted) and below ``MRI_CSF_ADC_FACTOR`` x the median ADC of those voxels (not CSF; unit-free,
    so it works before the ADC unit is known). On a head with skull and scalp, the subarachnoid CSF
    and the skull are a dark gap around the brain; an opening of ``MRI_OPENING_MM`` cuts what
    bridges it, the largest component is the brain, the opening's edges are given back, and holes
    (ventricles, enclosed CSF) are filled. On a skull-stripped study the same steps keep the brain.
    """
    dwi = np.asarray(dwi, dtype=np.float32)
    finite = np.isfinite(dwi)
    positive = dwi[finite & (dwi > 0)]
    if positive.size == 0:
        raise StrokeLabelError("DWI has no positive voxels: no brain to find")
    candidate = finite & (dwi > fraction * np.percentile(positive, 99))
    if adc is not None:
        adc = np.asarray(adc, dtype=np.float32)
        fitted = candidate & np.isfinite(adc) & (adc > 0)
        if fitted.any():
            candidate = fitted & (adc < MRI_CSF_ADC_FACTOR * float(np.median(adc[fitted])))
    spacing = tuple(spacing_mm) if spacing_mm is not None else (1.0,) * dwi.ndim
    ball = _ball(MRI_OPENING_MM, spacing)
    opened = ndimage.binary_opening(candidate, structure=ball)
    brain = largest_component(opened if opened.any() else candidate)
    if not brain.any():
        raise StrokeLabelError("no brain found: the brain mask threshold selects no voxels")
    brain = ndimage.binary_dilation(brain, structure=ball) & candidate
    brain = largest_component(brain)
    # Close sulci and the ventricles' walls before filling, so enclosed CSF counts as brain.
    closed = ndimage.binary_closing(brain, structure=_ball(2 * MRI_OPENING_MM, spacing), border_value=0)
    return fill_holes(closed | brain, slice_axis=slice_axis)
