"""The spatial steps that run on a bounding box give the full grid's answer voxel for voxel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from strokelabel.baselines.masks import (
    clean_mask,
    fill_enclosed,
    fill_holes,
    full_connectivity,
    largest_component,
    remove_small_clusters,
)
from strokelabel.boxes import bounding_box, paste
from strokelabel.baselines.perfusion import relative_cbf, relative_cbf_in_box, mirror, estimate_midsagittal_plane
from strokelabel.cleaning import c_ordered_float32


def blobs(seed: int, shape=(40, 36, 10), fraction=0.55) -> np.ndarray:
    """Random smooth blobs away from the border, with holes and specks (what masks look like)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    mask = field > np.quantile(field, fraction)
    mask[:3], mask[-2:], mask[:, :4], mask[:, -3:] = False, False, False, False
    return mask


def test_the_bounding_box_holds_every_voxel_grown_by_the_margin_and_clipped():
    mask = np.zeros((10, 12, 6), bool)
    mask[3, 4, 2] = mask[6, 9, 2] = True
    assert bounding_box(mask) == (slice(3, 7), slice(4, 10), slice(2, 3))
    assert bounding_box(mask, margin=(1, 3, 5)) == (slice(2, 8), slice(1, 12), slice(0, 6))
    assert bounding_box(np.zeros((3, 3, 3), bool)) is None
    box = bounding_box(mask)
    assert np.array_equal(paste(mask[box], box, mask.shape, fill=False), mask)


@pytest.mark.parametrize("seed", range(4))
def test_filling_holes_by_labelling_the_background_is_scipys_fill(seed):
    mask = blobs(seed, fraction=0.35)
    mask[:, :, 0] = mask[:, :, 0] | blobs(seed + 10)[:, :, 0]  # something on the border slices too
    in_plane = full_connectivity(3)
    in_plane[:, :, [0, 2]] = False
    for structure in (ndimage.generate_binary_structure(3, 1), full_connectivity(3), in_plane):
        assert np.array_equal(fill_enclosed(mask, structure), ndimage.binary_fill_holes(mask, structure=structure))


@pytest.mark.parametrize("seed", range(4))
def test_components_on_the_box_are_the_full_grids(seed):
    mask = blobs(seed)
    labels, count = ndimage.label(mask, structure=full_connectivity(3))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    assert np.array_equal(largest_component(mask), labels == np.argmax(sizes))
    keep = sizes * 0.008 >= 0.1  # 2 mm voxels: 0.008 mL, clusters of >= 13 voxels
    keep[0] = False
    assert np.array_equal(remove_small_clusters(mask, (2.0, 2.0, 2.0), 0.1), keep[labels])


@pytest.mark.parametrize("seed", range(3))
def test_the_brain_mask_cleaned_on_the_candidates_box_is_the_full_grids(seed):
    candidate = blobs(seed, fraction=0.4)
    # The same steps on the whole grid, with scipy's own hole filling.
    opened = ndimage.binary_opening(candidate, structure=ndimage.generate_binary_structure(3, 1))
    labels, _ = ndimage.label(opened, structure=full_connectivity(3))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = ndimage.binary_dilation(labels == np.argmax(sizes), structure=full_connectivity(3)) & candidate
    in_plane = full_connectivity(3)
    in_plane[:, :, [0, 2]] = False
    expected = ndimage.binary_fill_holes(ndimage.binary_fill_holes(mask), structure=in_plane)
    assert np.array_equal(clean_mask(candidate, opening_iterations=1), expected)
    assert np.array_equal(fill_holes(mask), expected)


def full_grid_mirror_rcbf(cbf, brain, spacing_mm, tmax, smoothing_mm=4.0):
    """The ``mirror`` rCBF as defined, on the whole grid (the reference for the box)."""
    cbf = cbf.astype(np.float64)
    plane = estimate_midsagittal_plane(brain, 0)
    hypo = tmax > 6.0
    low = brain & (np.arange(brain.shape[0])[:, None, None] < plane)
    high = brain & (np.arange(brain.shape[0])[:, None, None] > plane)
    healthy = (low if (hypo & low).sum() <= (hypo & high).sum() else high) & ~hypo
    reference = np.full(cbf.shape, np.median(cbf[healthy]))
    sigma = smoothing_mm / np.asarray(spacing_mm, dtype=np.float64)
    weight = ndimage.gaussian_filter(brain.astype(np.float64), sigma)
    smooth = ndimage.gaussian_filter(np.where(brain, cbf, 0.0), sigma) / np.maximum(weight, 1e-6)
    mirrored = mirror(smooth, plane, 0)
    usable = mirror(brain & ~hypo, plane, 0, fill=False) & (mirrored > 0)
    reference = np.where(usable, mirrored, reference)
    return np.where(brain, cbf / np.where(reference > 0, reference, np.nan), np.nan)


@pytest.mark.parametrize("shift", [-9, 0, 7])
def test_the_mirror_rcbf_on_the_brains_box_is_the_full_grids_within_float32_smoothing(shift):
    rng = np.random.default_rng(3)
    shape = (70, 40, 8)
    brain = np.zeros(shape, bool)
    brain[20 + shift : 44 + shift, 8:30, 1:7] = True  # off centre: its mirror image reaches outside its box
    cbf = np.where(brain, rng.uniform(20, 80, shape), 0).astype(np.float32)
    tmax = np.where(brain, rng.uniform(0, 3, shape), 0).astype(np.float32)
    tmax[20 + shift : 27 + shift, 10:20, 2:6] = 9.0
    cbf[20 + shift : 25 + shift, 10:18, 2:6] = 8.0
    spacing = (0.9, 0.9, 2.0)  # Gaussian reach 18 voxels in-plane: beyond the array on some sides
    expected = full_grid_mirror_rcbf(cbf, brain, spacing, tmax)
    got = relative_cbf(cbf, brain, spacing, tmax, reference="mirror")
    # The smoothing is float32 matrix products (strokelabel.smoothing), the reference scipy's float64 filter.
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[brain], expected[brain], rtol=2e-6)
    rcbf, box = relative_cbf_in_box(cbf, brain, spacing, tmax, reference="contralateral")
    assert rcbf.size < brain.size and np.array_equal(paste(rcbf, box, shape, fill=np.nan), relative_cbf(cbf, brain, spacing, tmax), equal_nan=True)


def test_the_c_ordered_copy_of_a_nifti_volume_is_the_same_values():
    rng = np.random.default_rng(0)
    stored = np.asfortranarray(rng.normal(size=(12, 9, 5)).astype(np.float32))
    for view in (stored, stored[::-1, :, ::-1], stored.transpose(1, 0, 2), stored.astype(np.int16), stored[..., None]):
        copy = c_ordered_float32(view)
        assert copy.flags.c_contiguous and copy.dtype == np.float32
        assert np.array_equal(copy, np.asarray(view, dtype=np.float32))
        assert not np.shares_memory(copy, stored)
