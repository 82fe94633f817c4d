"""The mid-sagittal plane of a head image, and mirroring about it.

Heads in a scanner are neither centred in the field of view nor perfectly straight, so
the hemispheric comparison of the Siamese model (seed 000) needs the plane that splits
the head into its two hemispheres, not the middle of the array.

The plane is found from the image alone: it is the plane about which the image is most
similar to its own reflection. The search is over the plane's left-right offset and its
yaw (rotation about the superior-inferior axis), coarse to fine: an exhaustive grid on
a downsampled image, then local grids on finer images. For each candidate the head
voxels of a few axial slices are compared with their reflections, all candidates at
once (vectorised). The comparison uses a bounded (Geman-McClure) penalty on the
intensity difference, so a lesion on one side costs about the same wherever the
candidate plane puts it and cannot pull the plane towards itself.

Roll (a tilt of the head towards a shoulder) is not searched: the plane always contains
the superior-inferior axis. Pitch does not move a mid-sagittal plane.

Array convention: axes (left-right, anterior-posterior[, superior-inferior]) in voxel
order, as after MONAI ``Orientation(axcodes="RAS")``; spacing in mm per axis. Angles are
in the physical (mm) frame, so anisotropic voxels are handled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["MidSagittalPlane", "find_midsagittal_plane", "mirror_about_plane"]


@dataclass(frozen=True)
class MidSagittalPlane:
    """A sagittal plane of an image grid: its left-right offset and its yaw.

    The plane contains the superior-inferior axis direction and passes through the point
    ``(x0, yc)`` of every axial slice, where ``yc = (shape[1] - 1) / 2`` is the middle of
    the anterior-posterior axis and ``x0 = (shape[0] - 1) / 2 + offset_vox``. Its unit
    normal in mm is ``(cos a, sin a, 0)`` with ``a = angle_deg``, positive from +x
    (left-right axis) towards +y (anterior-posterior axis).

    Attributes:
        offset_vox: left-right distance of the plane from the array middle, in voxels
            along axis 0 (measured at the middle of axis 1).
        angle_deg: yaw in degrees.
        spacing_mm: voxel size per axis.
        shape: the array's spatial shape.
        score: the symmetry score of the plane (1 = the image equals its reflection).
    """

    offset_vox: float
    angle_deg: float
    spacing_mm: tuple[float, ...]
    shape: tuple[int, ...]
    score: float = field(default=float("nan"), compare=False)

    @property
    def offset_mm(self) -> float:
        return self.offset_vox * self.spacing_mm[0]

    @property
    def normal(self) -> np.ndarray:
        """Unit normal in mm, one entry per axis."""
        a = math.radians(self.angle_deg)
        n = np.zeros(len(self.shape))
        n[0], n[1] = math.cos(a), math.sin(a)
        return n

    @property
    def point_mm(self) -> np.ndarray:
        """A point of the plane in mm (voxel index times spacing)."""
        p = (np.asarray(self.shape, dtype=float) - 1.0) / 2.0 * np.asarray(self.spacing_mm, dtype=float)
        p[0] += self.offset_mm
        return p

    def signed_distance_mm(self, index: np.ndarray) -> np.ndarray:
        """Signed distance in mm of voxel indices (..., ndim) from the plane (positive on the +normal side)."""
        p = np.asarray(index, dtype=float) * np.asarray(self.spacing_mm, dtype=float)
        return (p - self.point_mm) @ self.normal

    def reflection_affine(self, ndim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The reflection in voxel indices: ``v' = matrix @ v + offset``.

        It is its own inverse, so it maps output to input indices for
        :func:`scipy.ndimage.affine_transform` as well. ``ndim = 2`` gives the in-plane
        (axial slice) reflection of a 3-D plane: a yaw-only plane does not mix the
        superior-inferior axis.
        """
        ndim = len(self.shape) if ndim is None else int(ndim)
        if ndim not in (2, len(self.shape)):
            raise ValueError(f"ndim must be 2 or {len(self.shape)}, got {ndim}")
        s = np.asarray(self.spacing_mm[:ndim], dtype=float)
        n = self.normal[:ndim]
        householder = np.eye(ndim) - 2.0 * np.outer(n, n)
        matrix = householder * s[None, :] / s[:, None]  # S^-1 H S
        offset = 2.0 * float(self.point_mm[:ndim] @ n) * n / s
        return matrix, offset


def mirror_about_plane(
    volume: np.ndarray, plane: MidSagittalPlane, order: int = 1, mode: str = "nearest", cval: float = 0.0
) -> np.ndarray:
    """Reflect an image about ``plane`` (scipy.ndimage affine resampling).

    Args:
        volume: spatial array of the plane's grid, or a channel-first stack of them
            (one more leading axis); a 2-D axial slice of a 3-D plane's grid also works.
        plane: from :func:`find_midsagittal_plane`.
        order: spline order (1 linear, 0 nearest for labels).
        mode, cval: out-of-grid handling, as :func:`scipy.ndimage.affine_transform`.
    """
    volume = np.asarray(volume)
    spatial_ndim = len(plane.shape) if volume.ndim in (len(plane.shape), len(plane.shape) + 1) else volume.ndim
    if volume.ndim == spatial_ndim + 1:
        return np.stack([mirror_about_plane(c, plane, order, mode, cval) for c in volume])
    if tuple(volume.shape[:2]) != tuple(plane.shape[:2]):
        raise ValueError(f"volume shape {volume.shape} does not match the plane's grid {plane.shape}")
    dtype = volume.dtype if np.issubdtype(volume.dtype, np.floating) else np.float64
    if order == 1 and mode == "nearest":
        return _reflect_bilinear(volume, plane).astype(dtype, copy=False)
    matrix, offset = plane.reflection_affine(volume.ndim)
    out = ndimage.affine_transform(volume.astype(dtype, copy=False), matrix, offset=offset, order=order, mode=mode, cval=cval)
    return out.astype(volume.dtype, copy=False) if order == 0 else out


def _reflect_bilinear(volume: np.ndarray, plane: MidSagittalPlane) -> np.ndarray:
    """``affine_transform(volume, reflection, order=1, mode="nearest")`` (float64) by :func:`mirror_tensor` over
    the axial slices (a yaw-only reflection maps each slice onto itself; edge values beyond the grid): equal
    within float64 rounding, several times faster on a whole volume."""
    import torch

    nx, ny = volume.shape[:2]
    slices = np.moveaxis(volume.reshape(nx, ny, -1), -1, 0).astype(np.float64)  # axial slices as channels
    out = mirror_tensor(torch.from_numpy(slices)[None], plane)[0]
    return np.moveaxis(out.numpy(), 0, -1).reshape(volume.shape)


def mirror_tensor(x, plane=None, lr_axis: int = 0):
    """Mirror a (B, C, *spatial) tensor left-right.

    Args:
        x: image batch; spatial axes (left-right, anterior-posterior[, superior-inferior])
            when a plane is given.
        plane: ``None`` mirrors about the middle of the array (an exact flip of spatial
            axis ``lr_axis``); a :class:`strokelabel.midsagittal.MidSagittalPlane` (or any
            object with ``shape`` and ``reflection_affine(ndim)``) mirrors about that plane
            by linear resampling (border values outside the grid). A 3-D plane also mirrors
            2-D axial slices of its grid.
        lr_axis: spatial axis index of left-right, for the flip.

    Mirroring twice returns the input: exactly for the flip and for planes whose
    reflection maps voxels onto voxels, up to interpolation otherwise.
    """
    import torch
    import torch.nn.functional as F

    spatial_dims = x.ndim - 2
    if plane is None:
        return torch.flip(x, dims=(2 + lr_axis,))
    spatial = tuple(x.shape[2:])
    if spatial[:2] != tuple(plane.shape[:2]):
        raise ValueError(f"tensor spatial shape {spatial} does not match the plane's grid {tuple(plane.shape)}")
    matrix, offset = plane.reflection_affine(spatial_dims)
    m = torch.as_tensor(matrix, dtype=torch.float64)
    b = torch.as_tensor(offset, dtype=torch.float64)
    h = torch.tensor([(n - 1) / 2.0 if n > 1 else 1.0 for n in spatial], dtype=torch.float64)
    # voxel index v = h * (u + 1) for normalised u in [-1, 1] (align_corners=True)
    a = m * h[None, :] / h[:, None]
    t = ((m @ h) + b - h) / h
    # affine_grid orders coordinates fastest-axis first (x = last tensor axis)
    theta = torch.cat([a.flip(0).flip(1), t.flip(0)[:, None]], dim=1).to(x.dtype)
    theta = theta.unsqueeze(0).expand(x.shape[0], -1, -1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def find_midsagittal_plane(
    volume: np.ndarray,
    spacing_mm: Sequence[float] | None = None,
    max_angle_deg: float = 15.0,
    max_offset_mm: float | None = None,
    mask: np.ndarray | None = None,
    n_slices: int = 12,
    coarse_size: int = 48,
    max_points_per_slice: int = 3000,
    mirror_consistent: bool = True,
) -> MidSagittalPlane:
    """Estimate the mid-sagittal plane as the plane of maximal reflection symmetry.

    ``mirror_consistent`` (default): the search also runs on the image flipped left-right and the
    two planes are combined (:func:`_mirror_consistent`), so a study stored mirrored gets exactly
    the mirrored plane. Why: the search's strided point subsets and pyramid are not symmetric, and on
    the real ISLES'22 cases the plane of a mirrored study differed by up to 0.06 voxel and 0.07
    degree; every hemispheric comparison (the MRI models' mirror channels, the DWI/ADC evidence
    filter) then moved a little, and a component near a limit was decided differently (case 0002:
    10 components removed as distributed, 9 mirrored). One more search costs about 1 s per study.

    Args:
        volume: (LR, AP[, SI]) image of a head; any intensity units.
        spacing_mm: voxel size per axis; 1 mm if not given.
        max_angle_deg: largest yaw searched (both directions).
        max_offset_mm: largest left-right offset searched; default a quarter of the
            left-right field of view.
        mask: head voxels to compare (default: a threshold at 20 % of the 1-99
            percentile range).
        n_slices: axial slices used (those with the largest head area, evenly spread).
        coarse_size: in-plane size of the coarsest level of the pyramid.
        max_points_per_slice: head voxels compared per slice and level (strided subset).

    Returns:
        The plane; its offset and angle resolve to about 0.1 voxel and 0.1 degree.
    """
    search = dict(spacing_mm=spacing_mm, max_angle_deg=max_angle_deg, max_offset_mm=max_offset_mm, n_slices=n_slices,
                  coarse_size=coarse_size, max_points_per_slice=max_points_per_slice)
    plane = _search_plane(volume, mask=mask, **search)
    if not mirror_consistent:
        return plane
    flipped = _search_plane(np.flip(np.asarray(volume), axis=0), mask=None if mask is None else np.flip(np.asarray(mask), axis=0), **search)
    return _mirror_consistent(plane, flipped)


def _mirror_consistent(plane: MidSagittalPlane, found_on_flipped: MidSagittalPlane,
                       agree_vox: float = 1.0, agree_deg: float = 1.0) -> MidSagittalPlane:
    """One plane from the plane found on an image and the one found on its left-right flip.

    A left-right flip maps the plane (offset, angle) to (-offset, -angle) (the plane passes through
    the middle of the anterior-posterior axis, which the flip keeps). Planes that agree (within
    ``agree_vox`` and ``agree_deg``) are averaged; otherwise the better-scoring one is taken (the
    searches ended at different optima). Both rules are symmetric in the two inputs, so the image
    and its flip get exactly mirrored planes."""
    back_offset, back_angle = -found_on_flipped.offset_vox, -found_on_flipped.angle_deg
    agree = abs(plane.offset_vox - back_offset) <= agree_vox and abs(plane.angle_deg - back_angle) <= agree_deg
    if agree or found_on_flipped.score == plane.score:
        offset, angle = 0.5 * (plane.offset_vox + back_offset), 0.5 * (plane.angle_deg + back_angle)
    elif found_on_flipped.score > plane.score:
        offset, angle = back_offset, back_angle
    else:
        offset, angle = plane.offset_vox, plane.angle_deg
    return MidSagittalPlane(offset_vox=float(offset), angle_deg=float(angle), spacing_mm=plane.spacing_mm, shape=plane.shape,
                            score=0.5 * (plane.score + found_on_flipped.score))


def _search_plane(
    volume: np.ndarray,
    spacing_mm: Sequence[float] | None,
    max_angle_deg: float,
    max_offset_mm: float | None,
    mask: np.ndarray | None,
    n_slices: int,
    coarse_size: int,
    max_points_per_slice: int,
) -> MidSagittalPlane:
    """The coarse-to-fine search of :func:`find_midsagittal_plane` on the image as it is."""
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim == 2:
        vol = vol[:, :, None]
        mask = None if mask is None else np.asarray(mask)[:, :, None]
    if vol.ndim != 3:
        raise ValueError(f"expected a 2-D or 3-D image, got shape {np.shape(volume)}")
    shape = tuple(np.shape(volume))
    spacing = tuple(float(s) for s in (spacing_mm if spacing_mm is not None else (1.0,) * len(shape)))
    if len(spacing) != len(shape):
        raise ValueError(f"spacing_mm {spacing_mm!r} does not match the image dimensions {shape}")
    if not np.all(np.isfinite(vol)):
        vol = np.nan_to_num(vol, nan=float(np.nanmin(vol)) if np.isfinite(vol).any() else 0.0)

    if mask is None:
        lo, hi = np.percentile(vol, [1, 99])
        mask = vol > lo + 0.2 * (hi - lo)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the image has no foreground to find a mid-sagittal plane in")

    # normalise by the head's median absolute deviation: a lesion (a minority of head voxels)
    # does not widen it, so its residuals saturate the bounded penalty
    head = vol[mask]
    median = float(np.median(head))
    scale = 1.4826 * float(np.median(np.abs(head - median)))
    if not scale > 0:
        scale = float(head.std()) or 1.0
    vol = (vol - median) / scale
    background = float(np.median(vol[~mask])) if (~mask).any() else float(vol.min())

    # axial slices with the most head, evenly spread
    area = mask.sum(axis=(0, 1))
    candidates = np.flatnonzero(area >= 0.5 * area.max())
    chosen = candidates[np.unique(np.linspace(0, len(candidates) - 1, min(n_slices, len(candidates))).round().astype(int))]
    stack, stack_mask = vol[:, :, chosen], mask[:, :, chosen]

    sx, sy = spacing[0], spacing[1]
    nx, ny = shape[0], shape[1]
    centre = np.array([(nx - 1) / 2 * sx, (ny - 1) / 2 * sy])
    if max_offset_mm is None:
        max_offset_mm = 0.25 * nx * sx

    # pyramid: in-plane factors from coarse to 1, halving
    factor = max(1.0, max(nx, ny) / float(coarse_size))
    factors = []
    while factor > 1.0:
        factors.append(factor)
        factor /= 2.0
    factors.append(1.0)
    levels = [_level(stack, stack_mask, (sx, sy), f, background, max_points_per_slice) for f in factors]

    # coarse: exhaustive grid (1 degree, half a coarse voxel); then local grids of ±2 previous
    # steps at half the step, on finer levels, to better than 0.1 voxel / 0.1 degree
    lvl = levels[0]
    angle_step = 1.0
    offset_step = 0.5 * max(lvl.spacing[0], sx)
    angles = np.arange(-max_angle_deg, max_angle_deg + 1e-9, angle_step)
    offsets = np.arange(-max_offset_mm, max_offset_mm + 1e-9, offset_step)
    best_angle, best_offset, best_score = _grid_search(lvl, centre, offsets, angles)
    r = 1
    while angle_step > 0.1 or offset_step > 0.1 * sx:
        lvl = levels[min(r, len(levels) - 1)]
        angles = np.clip(best_angle + angle_step * np.linspace(-2.0, 2.0, 9), -max_angle_deg, max_angle_deg)
        offsets = best_offset + offset_step * np.linspace(-2.0, 2.0, 9)
        best_angle, best_offset, best_score = _grid_search(lvl, centre, offsets, angles)
        angle_step, offset_step, r = angle_step / 2.0, offset_step / 2.0, r + 1

    return MidSagittalPlane(
        offset_vox=float(best_offset / sx), angle_deg=float(best_angle), spacing_mm=spacing, shape=shape, score=float(best_score)
    )


@dataclass
class _Level:
    image: np.ndarray  # (X, Y, K) normalised, smoothed, resampled
    spacing: tuple[float, float]
    points: list  # per slice: (P, 2) voxel indices of this level
    values: list  # per slice: (P,) intensities at the points
    background: float


def _level(stack: np.ndarray, stack_mask: np.ndarray, spacing, factor: float, background: float, max_points: int) -> _Level:
    nx, ny, _ = stack.shape
    sigma = max(0.5 * factor, 0.7)
    image = ndimage.gaussian_filter(stack, sigma=(sigma, sigma, 0), mode="nearest")
    if factor > 1.0:
        cx, cy = max(int(round(nx / factor)), 4), max(int(round(ny / factor)), 4)
        zoom = (cx / nx, cy / ny, 1.0)
        image = ndimage.zoom(image, zoom, order=1, grid_mode=False)
        m = ndimage.zoom(stack_mask.astype(np.float32), zoom, order=1, grid_mode=False) > 0.5
        level_spacing = (spacing[0] * (nx - 1) / (cx - 1), spacing[1] * (ny - 1) / (cy - 1))
    else:
        m, level_spacing = stack_mask, tuple(spacing)
    points, values = [], []
    for k in range(image.shape[2]):
        idx = np.argwhere(m[:, :, k])
        if len(idx) > max_points:
            idx = idx[np.linspace(0, len(idx) - 1, max_points).round().astype(int)]
        points.append(idx.astype(np.float64))
        values.append(image[idx[:, 0], idx[:, 1], k])
    return _Level(image, level_spacing, points, values, background)


def _grid_search(level: _Level, centre: np.ndarray, offsets_mm: np.ndarray, angles_deg: np.ndarray):
    oo, aa = np.meshgrid(offsets_mm, angles_deg, indexing="ij")
    scores = _symmetry_scores(level, centre, oo.ravel(), np.radians(aa.ravel()))
    i = int(np.argmax(scores))
    return float(aa.ravel()[i]), float(oo.ravel()[i]), float(scores[i])


def _symmetry_scores(level: _Level, centre: np.ndarray, offsets_mm: np.ndarray, angles_rad: np.ndarray) -> np.ndarray:
    """1 - mean Geman-McClure penalty of (image - reflected image) over head voxels, per candidate plane.

    Per slice, all candidates at once: the reflection is affine in the voxel indices, so the reflected
    points of every candidate are one matrix product, sampled by one float64 bilinear ``grid_sample``
    (torch's threads), ``level.background`` off the grid: what ``scipy.ndimage.map_coordinates`` (order
    1, mode "constant") computes, within float64 rounding, in a fifth of the time."""
    import torch
    import torch.nn.functional as F

    sx, sy = level.spacing
    nx, ny = level.image.shape[:2]
    cos, sin = np.cos(angles_rad), np.sin(angles_rad)
    along = cos * (centre[0] + offsets_mm) + sin * centre[1]  # the plane is {p : p . normal = along}, p in mm
    # reflected index q = (p - 2 (p . normal - along) normal) / spacing with p = index * spacing, then
    # grid_sample's coordinates: (axis 1, axis 0) scaled to [-1, 1] over the corner voxels
    to_grid_x, to_grid_y = 2.0 / max(ny - 1, 1), 2.0 / max(nx - 1, 1)
    coefficients = np.stack([
        np.stack([-2.0 * cos * sin * sx / sy, 1.0 - 2.0 * sin * sin, 2.0 * sin * along / sy], axis=0) * to_grid_x
        + np.array([0.0, 0.0, -1.0])[:, None],
        np.stack([1.0 - 2.0 * cos * cos, -2.0 * cos * sin * sy / sx, 2.0 * cos * along / sx], axis=0) * to_grid_y
        + np.array([0.0, 0.0, -1.0])[:, None],
    ], axis=-1)  # (3: i, j, 1; candidates; 2: grid x, y)
    coefficients = torch.from_numpy(np.ascontiguousarray(coefficients)).reshape(3, -1)
    penalty = torch.zeros(len(offsets_mm), dtype=torch.float64)
    count = 0
    for k, (pts, vals) in enumerate(zip(level.points, level.values)):
        if len(pts) == 0:
            continue
        image = torch.from_numpy(np.ascontiguousarray(level.image[:, :, k], dtype=np.float64))[None, None]
        homogeneous = torch.from_numpy(np.column_stack([pts, np.ones(len(pts))]))  # (P, 3)
        grid = (homogeneous @ coefficients).reshape(1, len(pts), len(offsets_mm), 2)  # (1, P, candidates, 2)
        mirrored = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)[0, 0]
        grid = grid[0].abs_()
        mirrored.masked_fill_(torch.maximum(grid[..., 0], grid[..., 1]) > 1.0 + 1e-12, level.background)
        r2 = mirrored.sub_(torch.from_numpy(np.asarray(vals, dtype=np.float64))[:, None]).square_()
        penalty += r2.div_(r2 + 1.0).sum(dim=0)
        count += len(pts)
    return 1.0 - penalty.numpy() / max(count, 1)
