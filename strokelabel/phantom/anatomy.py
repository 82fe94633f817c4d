"""The head: skull, scalp, CSF, cortex and white matter, deep grey nuclei, ventricles, and the
15-region vascular atlas, as analytic functions of head-frame position (mm).

The tissue anatomy is symmetric under u -> -u (every pattern reads |u|), so the mirror of a
healthy voxel about the mid-sagittal plane holds the same tissue; the vascular atlas is
patient-specific and not symmetric (its seeds are jittered per side).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from strokelabel.phantom.geometry import ellipsoid_distance_mm, soft_inside
from strokelabel.phantom.vessels import cortical_point, ellipsoid_layout

# Atlas regions, value = index + 1 (0 = outside the intracranial space). L/R = patient left/right.
REGIONS = (
    "ACA-L", "ACA-R",
    "MCA-deep-L", "MCA-deep-R",
    "MCA-superior-L", "MCA-superior-R",
    "MCA-inferior-L", "MCA-inferior-R",
    "PCA-L", "PCA-R",
    "AChA-L", "AChA-R",
    "thalamic-L", "thalamic-R",
    "vertebrobasilar",
)  # fmt: skip


def region_id(name: str) -> int:
    return REGIONS.index(name) + 1


# The circle of Willis in brain-normalised coordinates: the healthy bolus delay grows with distance from it.
WILLIS = (0.0, 0.05, -0.40)
# The ellipsoid family has no chronic findings and no air cavities (render.py lists the fields).


# Territory seeds of the left hemisphere in brain-normalised coordinates (u/A, v/B, w/C), and an
# additive distance (mm) that keeps the perforator territories compact. Voronoi cells of these
# seeds (nearest seed + offset) are the territories.
_LEFT_TERRITORIES = {
    "ACA": ([(-0.10, 0.80, 0.18), (-0.10, 0.52, 0.62), (-0.10, 0.12, 0.86), (-0.10, -0.28, 0.80), (-0.12, 0.85, -0.22)], 0.0),
    "MCA-superior": ([(-0.60, 0.58, 0.36), (-0.70, 0.22, 0.58), (-0.56, -0.22, 0.72), (-0.86, 0.42, 0.02), (-0.84, 0.02, 0.32)], 0.0),
    "MCA-inferior": ([(-0.93, 0.10, -0.30), (-0.92, -0.26, -0.02), (-0.78, -0.52, 0.24), (-0.70, 0.44, -0.56), (-0.82, -0.24, -0.46)], 0.0),
    "MCA-deep": ([(-0.30, 0.10, -0.02), (-0.24, 0.22, 0.12)], 5.0),
    "PCA": ([(-0.24, -0.92, 0.10), (-0.36, -0.72, -0.34), (-0.18, -0.82, 0.46), (-0.56, -0.50, -0.56)], 0.0),
    "AChA": ([(-0.36, -0.16, -0.30)], 7.0),
    "thalamic": ([(-0.13, -0.20, 0.00)], 5.0),
}
_VERTEBROBASILAR = [(0.0, -0.45, -0.90), (-0.36, -0.72, -0.82), (0.36, -0.72, -0.82), (0.0, -0.15, -0.80)]

# Deep grey nuclei and ventricles of the left side (centre, semi-axes), brain-normalised.
_DEEP_GREY = [((-0.33, 0.05, -0.05), (0.12, 0.17, 0.14)), ((-0.17, 0.22, 0.12), (0.07, 0.12, 0.12)), ((-0.13, -0.16, 0.02), (0.12, 0.15, 0.13))]
_LATERAL_VENTRICLE = ((-0.10, 0.02, 0.22), (0.07, 0.38, 0.09))
_THIRD_VENTRICLE = ((0.0, -0.08, -0.02), (0.025, 0.14, 0.12))


@dataclass(frozen=True, eq=False)
class Anatomy:
    """Patient-specific anatomy parameters (lengths in mm)."""

    brain_axes_mm: np.ndarray  # (A, B, C) semi-axes of the brain
    csf_mm: float  # subarachnoid space
    skull_mm: float
    scalp_mm: float
    cortex_mm: float  # grey-matter ribbon thickness
    sulcus_depth_mm: float
    ventricle_scale: float
    sulcus_directions: np.ndarray  # (3, 3), applied to (|u|, v, w)
    sulcus_wavelengths_mm: np.ndarray
    sulcus_phases: np.ndarray
    territory_seeds_mm: np.ndarray  # (n, 3) head mm
    territory_seed_region: np.ndarray  # (n,) region id 1..15
    territory_offset_mm: np.ndarray  # (15,) additive distance per region

    family: ClassVar[str] = "ellipsoid"

    def normalised(self, points) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) * self.brain_axes_mm

    @property
    def willis_mm(self) -> np.ndarray:
        return np.asarray(WILLIS) * self.brain_axes_mm

    @property
    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Head-frame box holding the brain."""
        return -self.brain_axes_mm, self.brain_axes_mm

    def tissue_fractions(self, head, edge_mm: float) -> dict[str, np.ndarray]:
        """:func:`tissue_fractions`. No chronic findings and no skull-base air: the analytic head does
        not model them, so the MRI renderer draws its own where its appearance asks for them."""
        return tissue_fractions(head, self, edge_mm)

    def territory_distances_mm(self, head) -> np.ndarray:
        return territory_distances_mm(head, self)

    def vessel_layout(self):
        """(layout, cortical_point_mm) for :func:`strokelabel.phantom.vessels.make_tree`."""
        return ellipsoid_layout(self.brain_axes_mm), lambda target, depth_mm: cortical_point(target, self.brain_axes_mm, depth_mm)

    def describe(self) -> dict:
        return {
            "brain_semi_axes_mm": [round(float(v), 2) for v in self.brain_axes_mm],
            "skull_mm": round(self.skull_mm, 2),
            "cortex_mm": round(self.cortex_mm, 2),
            "ventricle_scale": round(self.ventricle_scale, 3),
        }


def make_anatomy(rng: np.random.Generator) -> Anatomy:
    scale = rng.uniform(0.92, 1.08)
    axes = np.array([66.0, 84.0, 66.0]) * scale * rng.uniform(0.96, 1.04, 3)
    seeds, owners = [], []
    offsets = np.zeros(len(REGIONS))
    for side, sign in (("L", 1.0), ("R", -1.0)):
        for name, (points, offset) in _LEFT_TERRITORIES.items():
            rid = region_id(f"{name}-{side}")
            offsets[rid - 1] = offset
            for p in points:
                jitter = rng.normal(0.0, 0.035, 3)
                seeds.append((np.array(p) * [sign, 1, 1] + jitter) * axes)
                owners.append(rid)
    for p in _VERTEBROBASILAR:
        seeds.append((np.array(p) + rng.normal(0.0, 0.03, 3)) * axes)
        owners.append(region_id("vertebrobasilar"))
    order = np.argsort(owners, kind="stable")
    seeds, owners = np.array(seeds)[order], np.array(owners)[order]
    directions = rng.normal(size=(3, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return Anatomy(
        brain_axes_mm=axes,
        csf_mm=rng.uniform(1.8, 3.5),
        skull_mm=rng.uniform(5.0, 7.5),
        scalp_mm=rng.uniform(4.0, 6.5),
        cortex_mm=rng.uniform(3.0, 4.2),
        sulcus_depth_mm=rng.uniform(12.0, 18.0),
        ventricle_scale=rng.uniform(0.8, 1.6),
        sulcus_directions=directions,
        sulcus_wavelengths_mm=rng.uniform(14.0, 20.0, 3),
        sulcus_phases=rng.uniform(0, 2 * np.pi, 3),
        territory_seeds_mm=seeds,
        territory_seed_region=owners,
        territory_offset_mm=offsets,
    )


def _mirrored_union_distance(sym, shapes, anatomy: Anatomy, scale_axes=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Signed distance to the union of left-side ellipsoids, at points already folded to u <= 0."""
    out = None
    for centre, semi in shapes:
        d = ellipsoid_distance_mm(sym, anatomy.normalised(centre), anatomy.normalised(semi) * scale_axes)
        out = d if out is None else np.minimum(out, d)
    return out


def _sulcus_distance_mm(folded, anatomy: Anatomy) -> np.ndarray:
    """First-order distance to the zero set of a sum of sinusoids of (|u|, v, w): the sulcal lines."""
    sym = folded * np.array([-1.0, 1.0, 1.0], dtype=np.float32)
    k = (2 * np.pi / anatomy.sulcus_wavelengths_mm).astype(np.float32)
    phase = sym @ (anatomy.sulcus_directions.T * k).astype(np.float32) + anatomy.sulcus_phases.astype(np.float32)
    value = np.sin(phase).sum(axis=-1)
    gradient = (np.cos(phase) * k) @ anatomy.sulcus_directions.astype(np.float32)
    return np.abs(value) / np.maximum(np.sqrt(np.einsum("ij,ij->i", gradient, gradient)), 1e-3)


def tissue_fractions(head, anatomy: Anatomy, edge_mm: float) -> dict[str, np.ndarray]:
    """Fractions of air, scalp (soft tissue, with the neck), bone, CSF, grey and white matter at
    head-frame points (sum 1), and ``icv`` (intracranial). Vessels are not part of this model.
    """
    head = np.asarray(head, dtype=np.float32)
    shape = head.shape[:-1]
    flat = head.reshape(-1, 3)
    axes = anatomy.brain_axes_mm.astype(np.float32)
    zero = np.zeros(3, np.float32)
    sd_brain = ellipsoid_distance_mm(flat, zero, axes)
    icv = soft_inside(ellipsoid_distance_mm(flat, zero, axes + anatomy.csf_mm), edge_mm)
    outer_skull = soft_inside(ellipsoid_distance_mm(flat, zero, axes + anatomy.csf_mm + anatomy.skull_mm), edge_mm)
    scalp_outer = soft_inside(ellipsoid_distance_mm(flat, zero, axes + anatomy.csf_mm + anatomy.skull_mm + anatomy.scalp_mm), edge_mm)
    # The neck: soft tissue below the skull, around the cervical spine.
    u, v, w = flat[:, 0], flat[:, 1], flat[:, 2]
    neck_radius = np.sqrt((u / (0.62 * axes[0])) ** 2 + ((v + 0.12 * axes[1]) / (0.62 * axes[1])) ** 2)
    neck = soft_inside((neck_radius - 1.0) * 0.62 * axes[0], edge_mm) * soft_inside(w + 0.55 * axes[2], edge_mm)
    spine = soft_inside(np.hypot(u, v + 0.42 * axes[1]) - 9.0, edge_mm) * soft_inside(w + 1.05 * axes[2], edge_mm)
    scalp_outer = np.maximum(scalp_outer, neck)
    outer_skull = np.maximum(np.minimum(outer_skull, scalp_outer), spine * neck)
    icv = np.minimum(icv, outer_skull)

    brain = np.zeros_like(sd_brain)
    grey = np.zeros_like(sd_brain)
    white = np.zeros_like(sd_brain)
    ventricles = np.zeros_like(sd_brain)
    idx = np.flatnonzero(sd_brain < edge_mm)  # only these can hold brain
    if idx.size:
        p = flat[idx]
        folded = np.concatenate([-np.abs(p[:, :1]), p[:, 1:]], axis=1)
        depth = -sd_brain[idx]  # mm below the brain's outer surface
        # Sulci: thin CSF clefts reaching sulcus_depth into the cortex.
        sulcus = _sulcus_distance_mm(folded, anatomy)
        sulcal_csf = soft_inside(sulcus - 0.7, edge_mm) * soft_inside(depth - anatomy.sulcus_depth_mm, edge_mm)
        # Interhemispheric fissure down to the corpus callosum, which arches over the ventricles.
        pu, pv, pw = p[:, 0], p[:, 1], p[:, 2]
        callosum_w = axes[2] * (0.22 - 0.9 * np.maximum(np.abs(pv) / axes[1] - 0.1, 0.0) ** 2)
        fissure_csf = soft_inside(np.abs(pu) - 1.0, edge_mm) * soft_inside(callosum_w - pw, edge_mm)
        b = np.minimum(soft_inside(-depth, edge_mm) * (1 - sulcal_csf) * (1 - fissure_csf), icv[idx])
        # Cortex: the first cortex_mm below any pial surface (outer surface, sulcus wall, fissure wall).
        pial = np.minimum(depth, np.maximum(sulcus - 0.7, 0.0) + np.maximum(depth - anatomy.sulcus_depth_mm, 0.0))
        pial = np.minimum(pial, np.maximum(np.abs(pu) - 1.0, 0.0) + np.maximum(callosum_w - pw, 0.0))
        white_core = soft_inside(anatomy.cortex_mm - pial, edge_mm)
        vs = anatomy.ventricle_scale
        vent = soft_inside(
            np.minimum(
                _mirrored_union_distance(folded, [_LATERAL_VENTRICLE], anatomy, (vs, 1.0, vs)),
                _mirrored_union_distance(folded, [_THIRD_VENTRICLE], anatomy, (vs, 1.0, 1.0)),
            ),
            edge_mm,
        )
        deep_grey = soft_inside(_mirrored_union_distance(folded, _DEEP_GREY, anatomy), edge_mm)
        parenchyma = b * (1 - vent)
        brain[idx] = b
        ventricles[idx] = vent
        grey[idx] = parenchyma * (deep_grey + (1 - deep_grey) * (1 - white_core))
        white[idx] = parenchyma * (1 - deep_grey) * white_core
    out = {
        "air": 1 - scalp_outer,
        "scalp": scalp_outer - outer_skull,
        "bone": outer_skull - icv,
        "csf": icv - brain + brain * ventricles,
        "gm": grey,
        "wm": white,
        "icv": icv,
    }
    return {k: x.reshape(shape) for k, x in out.items()}


def territory_distances_mm(head, anatomy: Anatomy) -> np.ndarray:
    """Distance (mm) from each point to each region's nearest seed, plus the region's offset: (..., 15)."""
    head = np.asarray(head, dtype=np.float32)
    flat = head.reshape(-1, 3)
    seeds = anatomy.territory_seeds_mm.astype(np.float32)  # sorted by region (make_anatomy)
    regions = anatomy.territory_seed_region
    # |p − s|² = |s|² − 2 s·p + |p|², with |p|² added after the minimum over a region's seeds.
    d2 = (seeds**2).sum(axis=1)[:, None] - 2.0 * (seeds @ flat.T)
    bounds = np.flatnonzero(np.r_[True, regions[1:] != regions[:-1], True])
    dist = np.empty((len(REGIONS), flat.shape[0]), np.float32)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        np.min(d2[start:stop], axis=0, out=dist[regions[start] - 1])
    dist += np.einsum("ij,ij->i", flat, flat)
    np.sqrt(np.maximum(dist, 0.0, out=dist), out=dist)
    dist += anatomy.territory_offset_mm.astype(np.float32)[:, None]
    return dist.T.reshape(*head.shape[:-1], len(REGIONS))


def atlas_labels(distances: np.ndarray, intracranial: np.ndarray) -> np.ndarray:
    """Region 1..15 of the nearest territory inside the intracranial space, 0 outside."""
    return np.where(intracranial, np.argmin(distances, axis=-1) + 1, 0).astype(np.uint8)


def territory_depth_mm(distances: np.ndarray, regions) -> np.ndarray:
    """Signed depth (mm) inside the union of ``regions`` (ids): half the gap between the nearest
    outside territory and the nearest inside one, positive inside (distance to the Voronoi border)."""
    inside = np.zeros(distances.shape[-1], dtype=bool)
    inside[np.asarray(list(regions), dtype=int) - 1] = True
    return 0.5 * (distances[..., ~inside].min(axis=-1) - distances[..., inside].min(axis=-1))
