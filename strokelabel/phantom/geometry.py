"""Scanner grids, the head's pose in the scanner, and partial-volume helpers.

Frames: *world* is the scanner's RAS frame in mm (x right, y anterior, z superior); the
*head* frame is the patient's own, centred on the brain, u right, v anterior, w superior.
``world = R @ head + centre``. The healthy anatomy is symmetric in the head frame under
u -> -u, so the true mid-sagittal plane is u = 0: through ``centre`` with normal ``R[:, 0]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (shape, spacing mm) of each study kind at each size. DWI/ADC stay on a ~2 mm grid at full size.
GRIDS = {
    ("ctp", "small"): ((128, 128, 24), (1.7, 1.7, 5.0)),
    ("ctp", "full"): ((512, 512, 64), (0.43, 0.43, 2.0)),
    ("mri", "small"): ((128, 128, 24), (1.8, 1.8, 5.0)),
    ("mri", "full"): ((128, 128, 72), (1.8, 1.8, 2.0)),
    ("cta", "small"): ((128, 128, 40), (1.7, 1.7, 3.2)),
    ("cta", "full"): ((512, 512, 257), (0.45, 0.45, 0.8)),
}
SIZES = ("small", "full")

# Points rendered per chunk (voxels × sub-samples) to bound memory at full size.
CHUNK_POINTS = 1_500_000


@dataclass(frozen=True)
class Grid:
    """A voxel grid: RAS affine, diagonal, world origin at the middle of the array."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        a = np.diag([*self.spacing_mm, 1.0])
        a[:3, 3] = -(np.asarray(self.shape) - 1) / 2.0 * np.asarray(self.spacing_mm)
        return a

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def subsamples_z(self) -> int:
        """Sub-samples along z (at most 3), so thick slices average their partial volume."""
        return int(np.clip(round(self.spacing_mm[2] / self.spacing_mm[0]), 1, 3))

    @property
    def edge_mm(self) -> float:
        """Width over which an edge is smeared: an in-plane voxel, or a z sub-sample if thicker."""
        return float(max(self.spacing_mm[0], self.spacing_mm[2] / self.subsamples_z))

    def chunks(self) -> list[slice]:
        per_slice = self.shape[0] * self.shape[1] * self.subsamples_z
        n = max(1, CHUNK_POINTS // per_slice)
        return [slice(z, min(z + n, self.shape[2])) for z in range(0, self.shape[2], n)]

    def world_points(self, zs: slice, subsample: int | None = None) -> np.ndarray:
        """World mm of voxel centres (subsample None) or of z sub-sample ``subsample`` in slices ``zs``.

        Shape (X, Y, nz, 3).
        """
        i = np.arange(self.shape[0], dtype=np.float64)
        j = np.arange(self.shape[1], dtype=np.float64)
        k = np.arange(zs.start, zs.stop, dtype=np.float64)
        if subsample is not None:
            n = self.subsamples_z
            k = k + (subsample + 0.5) / n - 0.5
        ii, jj, kk = np.meshgrid(i, j, k, indexing="ij")
        a = self.affine
        return np.stack([a[0, 0] * ii + a[0, 3], a[1, 1] * jj + a[1, 3], a[2, 2] * kk + a[2, 3]], axis=-1)

    def index_of(self, world_mm) -> np.ndarray:
        """Continuous voxel index of world points (..., 3)."""
        a = self.affine
        return (np.asarray(world_mm, dtype=np.float64) - a[:3, 3]) / np.diag(a)[:3]


def grid_for(kind: str, size: str) -> Grid:
    if (kind, size) not in GRIDS:
        raise ValueError(f"no grid for kind {kind!r} at size {size!r}; kinds ctp, mri, cta; sizes {SIZES}")
    shape, spacing = GRIDS[(kind, size)]
    return Grid(shape, spacing)


@dataclass(frozen=True)
class Pose:
    """Where the head lies in the scanner: ``world = rotation @ head + centre_mm``."""

    rotation: np.ndarray
    centre_mm: np.ndarray

    def to_head(self, world_mm) -> np.ndarray:
        return (np.asarray(world_mm) - self.centre_mm) @ self.rotation

    def to_world(self, head_mm) -> np.ndarray:
        return np.asarray(head_mm) @ self.rotation.T + self.centre_mm

    def midsagittal_plane(self, grid: Grid) -> dict:
        """The true mid-sagittal plane in world mm and in voxel indices of ``grid``.

        ``plane_world_mm`` [a, b, c, d]: a·x + b·y + c·z + d = 0 (unit normal pointing right);
        ``plane_voxel`` the same in voxel indices (i, j, k); ``offset_vox`` and ``angle_deg`` as
        in :class:`strokelabel.midsagittal.MidSagittalPlane` (offset from the array middle along
        axis 0 at the middle of axis 1, yaw from +x towards +y), measured at the middle slice.
        """
        normal = self.rotation[:, 0]
        d = -float(normal @ self.centre_mm)
        a = grid.affine
        scale = np.diag(a)[:3]
        normal_vox = normal * scale
        d_vox = float(normal @ a[:3, 3]) + d
        mid = (np.asarray(grid.shape) - 1) / 2.0
        # Axis-0 index where the plane crosses the line (·, mid_j, mid_k).
        i0 = -(d_vox + normal_vox[1] * mid[1] + normal_vox[2] * mid[2]) / normal_vox[0]
        in_plane = normal[:2] * scale[:2]
        return {
            "plane_world_mm": [*map(float, normal), d],
            "point_world_mm": [float(v) for v in self.centre_mm],
            "plane_voxel": [*map(float, normal_vox), d_vox],
            "offset_vox": float(i0 - mid[0]),
            "angle_deg": float(np.degrees(np.arctan2(normal[1], normal[0]))),
            "normal_voxel_in_plane": [float(v) for v in in_plane / np.linalg.norm(in_plane)],
        }


def rotation_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Head -> world rotation: yaw about z (superior), pitch about x (right), roll about y (anterior)."""
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(r), 0, np.sin(r)], [0, 1, 0], [-np.sin(r), 0, np.cos(r)]])
    return rz @ rx @ ry


def soft_inside(signed_distance_mm, edge_mm: float) -> np.ndarray:
    """Fraction of a voxel inside a surface, from the signed distance of its centre (negative inside).

    Linear ramp over one edge width: the partial volume of a plane cutting a voxel.
    """
    return np.minimum(np.maximum(0.5 - np.asarray(signed_distance_mm) / edge_mm, 0.0), 1.0)


def ellipsoid_distance_mm(points_mm, centre, semi_axes) -> np.ndarray:
    """Signed distance (mm, negative inside) to an ellipsoid, measured along the ray from its centre.

    Exact on the axes and close elsewhere for the mild eccentricities of a head.
    """
    points = np.asarray(points_mm)
    d = points - np.asarray(centre, dtype=points.dtype)
    r = np.sqrt(np.einsum("...j,...j->...", d, d))
    q = d / np.asarray(semi_axes, dtype=points.dtype)
    rho = np.sqrt(np.einsum("...j,...j->...", q, q))
    return r * (1.0 - 1.0 / np.maximum(rho, 1e-6))


def segment_distance_mm(points, p0, p1) -> np.ndarray:
    """Distance from points (..., 3) to the segment p0-p1 (a capsule's axis)."""
    p0 = np.asarray(p0, dtype=np.float64)
    axis = np.asarray(p1, dtype=np.float64) - p0
    rel = np.asarray(points) - p0
    length2 = float(axis @ axis)
    t = np.clip(rel @ axis / length2, 0.0, 1.0) if length2 > 0 else np.zeros(rel.shape[:-1])
    return np.linalg.norm(rel - t[..., None] * axis, axis=-1)
