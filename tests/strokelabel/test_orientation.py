"""Voxel order: any stored orientation is read in RAS order and labels go back exactly."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from strokelabel.orientation import Reorientation, reorientation_of

AXCODES = ["".join(p) for p in itertools.permutations("RAS")]
FLIPS = {"R": "L", "A": "P", "S": "I"}


def stored_as(data: np.ndarray, affine: np.ndarray, axcodes: str) -> nib.Nifti1Image:
    """The same image (RAS ``data``, ``affine``) with its voxels stored in ``axcodes`` order."""
    transform = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(axcodes))
    return nib.Nifti1Image(apply_orientation(data, transform), affine @ inv_ornt_aff(transform, data.shape))


@pytest.mark.parametrize("axcodes", AXCODES + ["LAS", "LPS", "RPI", "PIL", "ILA"])
def test_every_stored_orientation_reads_back_as_the_ras_voxels_and_writes_back_exactly(axcodes):
    rng = np.random.default_rng(0)
    data = rng.random((5, 6, 7)).astype(np.float32)
    affine = np.diag([1.5, 2.0, 4.0, 1.0])
    affine[:3, 3] = [-10, 20, -30]
    img = stored_as(data, affine, axcodes)
    r = reorientation_of(img)
    assert r.native_axcodes == axcodes
    canonical = r.to_canonical(np.asanyarray(img.dataobj))
    np.testing.assert_array_equal(canonical, data)
    np.testing.assert_allclose(r.canonical_affine, affine, atol=1e-9)
    assert r.canonical_shape == data.shape
    np.testing.assert_array_equal(r.to_native(canonical), np.asanyarray(img.dataobj))


def test_an_oblique_grid_keeps_its_rotation_and_voxel_values():
    angle = np.radians(12)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-1.8, 1.8, 4.8])  # stored LAS, rotated 12 degrees about z
    data = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    r = Reorientation(affine, data.shape)
    assert r.native_axcodes == "LAS"
    canonical = r.to_canonical(data)
    # Every voxel keeps its world position: the value at world point w is the same in both.
    index = np.array([1, 2, 1, 1.0])
    world = affine @ index
    canonical_index = np.linalg.solve(r.canonical_affine, world)
    assert canonical[tuple(np.rint(canonical_index[:3]).astype(int))] == data[1, 2, 1]
    spacing = np.linalg.norm(r.canonical_affine[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, [1.8, 1.8, 4.8])


def test_a_time_axis_stays_last():
    data = np.zeros((4, 5, 3, 7), np.float32)
    data[0, 1, 2, :] = np.arange(7)
    r = Reorientation(np.diag([-1.0, -1.0, 1.0, 1.0]), (4, 5, 3))  # LPS
    canonical = r.to_canonical(data)
    assert canonical.shape == (4, 5, 3, 7)
    np.testing.assert_array_equal(canonical[3, 3, 2], np.arange(7))
