"""Voxel order: every study is read in one canonical orientation, and labels go back to its own.

Scanners and exporters store voxels in any order (ISLES'22 DWI is LAS, ISLES'24 maps are LPS,
3D Slicer writes LPS, dcm2niix often LAS or oblique). Models, mirror comparisons and the
mid-sagittal search assume axis 0 runs left -> right, axis 1 posterior -> anterior and axis 2
inferior -> superior (RAS). :class:`Reorientation` permutes and flips the voxel axes to the
closest RAS order (nibabel's orientation maths, as ``nib.as_closest_canonical``), without
resampling: an oblique study keeps its rotation in the affine, no voxel value changes, and the
inverse brings a label back onto the study's stored grid exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt2axcodes, ornt_transform

CANONICAL_AXCODES = ("R", "A", "S")


@dataclass(frozen=True)
class Reorientation:
    """Between a stored grid (``native_affine``, ``native_shape``) and its closest RAS voxel order."""

    native_affine: np.ndarray
    native_shape: tuple[int, int, int]

    @property
    def _ornt(self) -> np.ndarray:
        return io_orientation(self.native_affine)

    @property
    def native_axcodes(self) -> str:
        """The stored voxel order, e.g. ``"LAS"`` (the closest axis codes of an oblique grid)."""
        return "".join(ornt2axcodes(self._ornt))

    @property
    def is_canonical(self) -> bool:
        return tuple(self.native_axcodes) == CANONICAL_AXCODES

    @property
    def canonical_affine(self) -> np.ndarray:
        """The affine of the reoriented voxels: the same world positions, RAS voxel order."""
        return np.asarray(self.native_affine, dtype=np.float64) @ inv_ornt_aff(self._ornt, self.native_shape)

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        return tuple(int(self.native_shape[int(axis)]) for axis in np.argsort(self._ornt[:, 0]))

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """Stored voxel order -> RAS order (the first three axes; a time axis stays last)."""
        if self.is_canonical:
            return array
        return np.ascontiguousarray(self.canonical_view(array))

    def canonical_view(self, array: np.ndarray) -> np.ndarray:
        """:meth:`to_canonical` without the copy: a view of ``array`` in RAS order (flipped and
        transposed strides), for a caller that copies it anyway."""
        if self.is_canonical:
            return array
        return apply_orientation(array, ornt_transform(self._ornt, axcodes2ornt(CANONICAL_AXCODES)))

    def to_native(self, array: np.ndarray) -> np.ndarray:
        """RAS order -> the study's stored voxel order (e.g. a label to be written beside the study)."""
        if self.is_canonical:
            return array
        return np.ascontiguousarray(apply_orientation(array, ornt_transform(axcodes2ornt(CANONICAL_AXCODES), self._ornt)))


def reorientation_of(img: nib.spatialimages.SpatialImage) -> Reorientation:
    return Reorientation(np.asarray(img.affine, dtype=np.float64), tuple(int(n) for n in img.shape[:3]))
