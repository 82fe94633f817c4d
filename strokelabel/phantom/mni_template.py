"""Template space of the phantom's "template" anatomy family: the MNI ICBM152 2009a symmetric
template with what it lacks synthesised, in MNI mm (x right, y anterior, z superior).

Source: the nilearn wheel ships ``mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``
(197 x 233 x 189 voxels of 1 mm, uint8 0..255, RAS, brain-masked T1); nothing is downloaded.
Synthesised here, by shapes placed at MNI coordinates and checked on pictures:

- the intracranial space: the T1 mask (the brain with little CSF), closed over the basal
  cisterns, and the spinal canal below the foramen magnum;
- the ventricles: CSF of the mask not connected to the outer CSF (the lateral ventricles,
  18 mL), plus the third ventricle (a slit too thin to segment);
- face, neck, skull-base bones (petrous pyramids, clivus, sphenoid, orbits, maxilla, palate,
  zygoma, mandible, cervical spine), eyes, and air: frontal, ethmoid, sphenoid and maxillary
  sinuses, nasal cavity, pharynx, ear canals and mastoid air cells;
- the 15 vascular territories: Voronoi cells of MNI seeds for the cortical territories (as
  the ellipsoid family does with its seeds), overridden by shapes for the deep territories
  (lenticulostriate basal ganglia and internal capsule, anterior choroidal posterior limb and
  medial temporal lobe, thalamus) and the infratentorial compartment (below the tentorium,
  and the brainstem) for the vertebrobasilar one;
- the arteries (circle of Willis and its branches) and dural sinuses as polylines.

Every array is computed once per process (functools.lru_cache). Arrays are sampled with
``scipy.ndimage.map_coordinates`` (order 1) by :class:`Block`.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from strokelabel.phantom.geometry import ellipsoid_distance_mm, segment_distance_mm

TEMPLATE_NAME = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_ORIGIN_MNI = np.array([-98.0, -134.0, -72.0])  # MNI mm of voxel (0, 0, 0), 1 mm voxels
# Weighted centroid of grey + white matter (MNI mm): the origin of the head frame.
BRAIN_CENTROID_MNI = np.array([0.0, -21.7, 9.7])
FAR_MM = 100.0  # distance value outside a block (outside every structure)

# Brain block (1 mm): the intracranial bounding box; its lowest slice (z = -69) cuts the medulla,
# so sampling below it repeats that slice: the spinal cord in its canal.
BRAIN_BOX_MNI = ((-76, 76), (-111, 77), (-69, 86))
# Head block (2 mm): everything from the vertex down to the neck.
HEAD_BOX_MNI = ((-97.5, 96.5), (-137.5, 118.5), (-157.5, 116.5))
SPINAL_CANAL = {"centre_xy": (0.0, -45.0), "radius_mm": 9.0, "top_z": -64.0}
# Intracranial spaces the brain-masked T1 leaves out: the suprasellar and interpeduncular
# cisterns with the pituitary fossa (ellipsoids: centre, semi-axes).
BASAL_CISTERNS_MNI = [((0.0, 4.0, -22.0), (15.0, 16.0, 8.0)), ((0.0, -2.0, -32.0), (6.0, 7.0, 4.0)), ((0.0, -14.0, -20.0), (9.0, 8.0, 8.0))]

# Cortical territory seeds of the left hemisphere (MNI mm); the right side mirrors x.
CORTICAL_SEEDS_LEFT = {
    "ACA": [(-6, 48, 28), (-6, 24, 54), (-6, -14, 66), (-6, -44, 56), (-6, 40, -14), (-6, 58, 6)],
    "MCA-superior": [(-40, 42, 18), (-48, 18, 30), (-42, -10, 52), (-56, 8, 8), (-46, -32, 48), (-30, 38, -18)],
    "MCA-inferior": [(-62, -12, -10), (-58, -42, 6), (-50, -62, 28), (-44, 10, -32), (-60, -30, -16)],
    "PCA": [(-10, -92, 4), (-26, -86, 18), (-32, -56, -14), (-10, -66, 26), (-36, -36, -22)],
}
# Deep territories (left side): ellipsoids (centre, semi-axes), MNI mm. Later entries win.
DEEP_TERRITORIES_LEFT = [
    ("MCA-deep", (-22, 2, 0), (9, 16, 11)),  # lentiform nucleus
    ("MCA-deep", (-13, 12, 10), (6, 11, 10)),  # caudate head
    ("MCA-deep", (-17, -8, 20), (5, 14, 6)),  # caudate body
    ("MCA-deep", (-19, 6, 6), (5, 10, 10)),  # anterior limb of the internal capsule
    ("MCA-deep", (-24, -2, 20), (8, 16, 8)),  # lower corona radiata
    ("AChA", (-23, -14, 2), (5, 9, 6)),  # posterior limb of the internal capsule
    ("AChA", (-24, -8, -18), (8, 10, 7)),  # amygdala and hippocampal head
    ("thalamic", (-11, -18, 6), (8, 14, 9)),  # thalamus
]
DEEP_SIDE_MARGIN_MM = 8.0
BRAINSTEM_AXIS_MNI = ((0.0, -27.0, -8.0), (0.0, -42.0, -75.0))
BRAINSTEM_RADIUS_MM = 13.0


TENTORIUM = {"vermis_z": -5.0, "lateral_drop": 12.0, "lateral_scale": 35.0, "power": 1.2, "apex_y": -62.0, "slope_drop": 13.0, "slope_scale": 35.0}


def tentorium_z_mm(x, y):
    """Height of the tentorium (MNI mm): highest over the vermis, sloping down laterally and
    towards the petrous ridge and the occiput (fitted on sagittal slices of the template)."""
    t = TENTORIUM
    peak = t["vermis_z"] - t["lateral_drop"] * (np.abs(x) / t["lateral_scale"]) ** t["power"]
    return peak - t["slope_drop"] * ((np.asarray(y) - t["apex_y"]) / t["slope_scale"]) ** 2


def _tentorium_gradient(x, y):
    t = TENTORIUM
    ax = np.maximum(np.abs(x), 1e-6) / t["lateral_scale"]
    dzdx = -t["lateral_drop"] * t["power"] / t["lateral_scale"] * ax ** (t["power"] - 1.0) * np.sign(x)
    dzdy = -2.0 * t["slope_drop"] * (np.asarray(y) - t["apex_y"]) / t["slope_scale"] ** 2
    return dzdx, dzdy


# Arteries of the left side (MNI mm): name, parent, radius mm, polyline; names as the ellipsoid family's.
LEFT_ARTERIES_MNI = [
    ("ICA", None, 2.2, [(-22, -12, -120), (-24, -14, -62), (-18, -4, -44), (-16, 2, -30), (-14, 2, -19)]),
    ("M1", "ICA", 1.5, [(-14, 2, -19), (-26, 4, -17), (-40, 5, -12)]),
    ("M2-superior", "M1", 1.1, [(-40, 5, -12), (-40, 10, 0), (-42, 2, 14), (-48, -6, 26)]),
    ("M2-inferior", "M1", 1.1, [(-40, 5, -12), (-46, -10, -8), (-50, -30, 0)]),
    ("LSA", "M1", 0.45, [(-22, 4, -17), (-22, 3, 4)]),
    ("AChA", "ICA", 0.5, [(-16, 0, -21), (-24, -12, -16), (-27, -20, -9)]),
    ("A1", "ICA", 1.1, [(-14, 2, -19), (-3, 14, -13)]),
    ("A2", "A1", 1.0, [(-3, 14, -13), (-3, 34, -2), (-3, 38, 18), (-3, 16, 34), (-3, -14, 36), (-3, -42, 30)]),
    ("PCom", "ICA", 0.7, [(-14, 2, -19), (-9, -12, -19)]),
    ("P1", "BA", 1.1, [(0, -14, -19), (-9, -12, -19)]),
    ("P2", "P1", 1.0, [(-9, -12, -19), (-20, -26, -13), (-25, -44, -6), (-18, -66, 2)]),
    ("TPA", "P1", 0.45, [(-4, -14, -19), (-8, -17, 0)]),
]
MIDLINE_ARTERIES_MNI = [
    ("BA", None, 1.6, [(0, -22, -72), (0, -20, -40), (0, -14, -19)]),
    ("ACom", None, 0.7, [(-3, 14, -13), (3, 14, -13)]),
]
# Dural sinuses: the superior sagittal sinus follows the intracranial surface (see superior_sagittal_sinus_mni).
STRAIGHT_SINUS_MNI = [(0, -48, 6), (0, -100, -4)]
TRANSVERSE_LEFT_MNI = [(0, -104, -4), (-32, -100, -14), (-56, -74, -26), (-56, -50, -42), (-46, -38, -66)]

# Skull base, face and neck (MNI mm): (kind, shape, parameters). Kinds: head (soft-tissue
# outline), bone (solid), orbit (a 2 mm bony wall; fat inside), sinus (air with a 2.5 mm bony
# wall), airway (air with soft walls), mastoid (porous bone with air cells), eye (fluid).
# Shapes: ellipsoid (centre, semi-axes), capsule (p0, p1, radius). Structures with x != 0 are mirrored.
_E, _C = "ellipsoid", "capsule"
FACE_AND_NECK = [
    ("head", _E, (0, 40, -62), (62, 62, 68)),  # face and jaw
    ("head", _E, (0, 92, -48), (11, 14, 24)),  # nose
    ("head", _C, (0, -22, -60), (0, -22, -170), 58.0),  # neck
    ("head", _E, (-58, -40, -56), (16, 20, 20)),  # behind the ear, over the mastoid
    ("bone", _C, (-56, -32, -50), (-16, -10, -40), 8.0),  # petrous pyramid
    ("bone", _C, (0, 0, -38), (0, -32, -66), 7.0),  # clivus
    ("bone", _E, (0, 14, -44), (17, 17, 15)),  # sphenoid body (holds the sphenoid sinus)
    ("bone", _E, (0, 80, -6), (19, 9, 16)),  # frontal bone around the frontal sinus
    ("bone", _E, (0, 50, -88), (28, 30, 4)),  # hard palate
    ("bone", _C, (-52, 30, -48), (-64, -12, -50), 4.0),  # zygomatic arch
    ("bone", _E, (-48, 44, -52), (9, 10, 10)),  # zygoma
    ("bone", _C, (-52, -6, -56), (-50, 6, -112), 7.0),  # mandibular ramus
    ("bone", _C, (-50, 6, -112), (-22, 64, -124), 7.0),  # mandibular body
    ("bone", _C, (-22, 64, -124), (0, 74, -126), 8.0),  # chin
    ("bone", _C, (0, -26, -78), (0, -28, -170), 12.0),  # dens and vertebral bodies
    ("bone", _C, (0, -48, -74), (0, -48, -170), 17.0),  # vertebral arches around the canal
    ("bone", _C, (0, -55, -76), (0, -80, -90), 6.0),  # spinous process
    ("orbit", _E, (-31, 58, -37), (15, 18, 15)),
    ("eye", _E, (-32, 62, -36), (12, 12, 12)),
    ("sinus", _E, (0, 82, -6), (14, 5, 11)),  # frontal sinus
    ("sinus", _E, (0, 52, -38), (9, 18, 11)),  # ethmoid air cells
    ("sinus", _E, (0, 14, -45), (13, 13, 11)),  # sphenoid sinus
    ("sinus", _E, (-29, 52, -68), (13, 15, 15)),  # maxillary sinus
    ("sinus", _E, (0, 56, -62), (8, 28, 20)),  # nasal cavity
    ("airway", _C, (0, 22, -76), (0, 2, -104), 8.0),  # nasopharynx
    ("airway", _C, (0, 2, -104), (0, -4, -170), 7.0),  # oro- and hypopharynx
    ("airway", _C, (-80, -22, -50), (-58, -22, -50), 4.0),  # external ear canal
    ("mastoid", _E, (-56, -42, -58), (10, 14, 16)),
]
SINUS_WALL_MM = 2.5
ORBIT_WALL_MM = 2.0


def template_folder() -> Path:
    import nilearn.datasets

    return Path(nilearn.datasets.__file__).parent / "data"


@functools.lru_cache(maxsize=1)
def load_template() -> dict[str, np.ndarray]:
    """t1, gm, wm of the template as float32 0..1 on its 1 mm grid (origin TEMPLATE_ORIGIN_MNI)."""
    import nibabel as nib

    out = {}
    for key in ("t1", "gm", "wm"):
        img = nib.load(str(template_folder() / TEMPLATE_NAME.format(key)))
        if img.shape != (197, 233, 189) or not np.allclose(img.affine[:3, 3], TEMPLATE_ORIGIN_MNI):
            raise RuntimeError(f"unexpected MNI template {key}: shape {img.shape}, origin {img.affine[:3, 3]}")
        out[key] = np.asarray(img.dataobj, dtype=np.float32) / 255.0
    return out


@dataclass(frozen=True)
class Block:
    """Arrays on a regular MNI grid (``origin_mm`` of voxel 0, isotropic ``spacing_mm``)."""

    origin_mm: np.ndarray
    spacing_mm: float
    arrays: dict
    mode: str = "nearest"  # outside the block: repeat the edge, or the constant FAR_MM

    def index(self, points_mm) -> np.ndarray:
        """(3, N) continuous voxel indices of MNI points (N, 3)."""
        # Contiguous: map_coordinates is twice as slow on a transposed view.
        return np.ascontiguousarray(((np.asarray(points_mm, dtype=np.float32) - self.origin_mm.astype(np.float32)) / np.float32(self.spacing_mm)).T)

    def sample(self, names, points_mm) -> dict[str, np.ndarray]:
        """Linear interpolation of the arrays ``names`` at MNI points (N, 3)."""
        index = self.index(points_mm)
        cval = FAR_MM if self.mode == "constant" else 0.0
        arrays = [self.arrays[n] for n in names]
        return dict(zip(names, interpolate(arrays, index, self.mode, cval)))


SAMPLING_THREADS = min(4, os.cpu_count() or 1)


@functools.lru_cache(maxsize=4)
def _sampling_pool(pid: int) -> ThreadPoolExecutor:
    """One pool per process: a forked child (e.g. a data loader worker) gets its own threads."""
    return ThreadPoolExecutor(max_workers=SAMPLING_THREADS, thread_name_prefix=f"phantom-sampling-{pid}")


def interpolate(arrays, index: np.ndarray, mode: str = "nearest", cval: float = 0.0) -> list[np.ndarray]:
    """``map_coordinates`` (order 1) of each array at ``index`` (3, N). It releases the GIL, so
    several arrays are sampled in parallel threads (the results do not depend on the threads)."""

    def one(array):
        return ndimage.map_coordinates(array, index, order=1, mode=mode, cval=cval, prefilter=False)

    if len(arrays) == 1 or SAMPLING_THREADS == 1 or index.shape[1] < 20_000:
        return [one(a) for a in arrays]
    return list(_sampling_pool(os.getpid()).map(one, arrays))


def _box_grid(box, spacing: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    origin = np.array([lo for lo, _ in box], dtype=np.float64)
    shape = tuple(int(round((hi - lo) / spacing)) + 1 for lo, hi in box)
    return origin, shape


def _crop_template(array: np.ndarray, box) -> np.ndarray:
    lo = [int(b[0] - o) for b, o in zip(box, TEMPLATE_ORIGIN_MNI)]
    hi = [int(b[1] - o) + 1 for b, o in zip(box, TEMPLATE_ORIGIN_MNI)]
    return np.ascontiguousarray(array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])


def _signed_distance_mm(inside: np.ndarray, spacing: float, fraction: np.ndarray | None = None) -> np.ndarray:
    """Signed distance (mm, negative inside) to the surface of a binary mask, half a voxel from
    the boundary voxels' centres; next to the surface, from the voxel's inside ``fraction`` if given."""
    out = np.where(
        inside,
        -(ndimage.distance_transform_edt(inside, sampling=spacing) - 0.5 * spacing),
        ndimage.distance_transform_edt(~inside, sampling=spacing) - 0.5 * spacing,
    ).astype(np.float32)
    if fraction is not None:
        near = np.abs(out) <= spacing
        out[near] = ((0.5 - fraction[near]) * spacing).astype(np.float32)
    return out


def _shape_distance_mm(points: np.ndarray, shape: str, params) -> np.ndarray:
    if shape == _E:
        return ellipsoid_distance_mm(points, np.asarray(params[0], np.float32), np.asarray(params[1], np.float32))
    p0, p1, radius = params
    return segment_distance_mm(points, p0, p1).astype(np.float32) - np.float32(radius)


def _shape_box(shape: str, params, margin: float) -> tuple[np.ndarray, np.ndarray]:
    if shape == _E:
        centre, semi = np.asarray(params[0], float), np.asarray(params[1], float)
        return centre - semi - margin, centre + semi + margin
    p0, p1, radius = np.asarray(params[0], float), np.asarray(params[1], float), params[2]
    return np.minimum(p0, p1) - radius - margin, np.maximum(p0, p1) + radius + margin


def _mirrored(params, shape: str):
    flip = np.array([-1.0, 1.0, 1.0])
    if shape == _E:
        return (tuple(np.asarray(params[0]) * flip), params[1])
    return (tuple(np.asarray(params[0]) * flip), tuple(np.asarray(params[1]) * flip), params[2])


STRUCTURE_MARGIN_MM = 16.0  # signed distances are exact this far from a structure, FAR_MM beyond


def structure_distance_block(origin: np.ndarray, shape: tuple, spacing: float, kind: str) -> np.ndarray:
    """Signed distance (mm) to the union of the FACE_AND_NECK structures of ``kind`` (both
    sides) on a grid, each structure evaluated within STRUCTURE_MARGIN_MM of its bounding box."""
    out = np.full(shape, FAR_MM, np.float32)
    for k, form, *params in FACE_AND_NECK:
        if k != kind:
            continue
        for p in [params] + ([_mirrored(params, form)] if abs(params[0][0]) > 0 else []):
            lo, hi = _shape_box(form, p, STRUCTURE_MARGIN_MM)
            i0 = np.clip(np.floor((lo - origin) / spacing).astype(int), 0, shape)
            i1 = np.clip(np.ceil((hi - origin) / spacing).astype(int) + 1, 0, shape)
            if np.any(i1 <= i0):
                continue
            axes = [origin[a] + spacing * np.arange(i0[a], i1[a], dtype=np.float32) for a in range(3)]
            points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
            box = tuple(slice(a, b) for a, b in zip(i0, i1))
            out[box] = np.minimum(out[box], _shape_distance_mm(points, form, p))
    return out


@functools.lru_cache(maxsize=1)
def intracranial_mask_2mm() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inside, fraction, origin) of the intracranial space on the head block's 2 mm grid: the
    template mask, closed over the basal cisterns (6 mm), with the spinal canal below it."""
    t1 = load_template()["t1"]
    origin, shape = _box_grid(HEAD_BOX_MNI, 2.0)
    # Each 2 mm voxel covers 2 x 2 x 2 template voxels (block origin -97.5 = mean of -98 and -97).
    start = np.rint(origin - 0.5 - TEMPLATE_ORIGIN_MNI).astype(int)
    padded = np.zeros(tuple(2 * s for s in shape), np.float32)
    src = (t1 > 0).astype(np.float32)
    lo = np.maximum(-start, 0)
    hi = np.minimum(np.array(src.shape) - start, padded.shape)
    padded[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = src[lo[0] + start[0] : hi[0] + start[0], lo[1] + start[1] : hi[1] + start[1], lo[2] + start[2] : hi[2] + start[2]]
    fraction = padded.reshape(shape[0], 2, shape[1], 2, shape[2], 2).mean(axis=(1, 3, 5))
    axes = [origin[a] + 2.0 * np.arange(shape[a]) for a in range(3)]
    radial = np.hypot(axes[0][:, None] - SPINAL_CANAL["centre_xy"][0], axes[1][None, :] - SPINAL_CANAL["centre_xy"][1])
    canal = (radial < SPINAL_CANAL["radius_mm"])[:, :, None] & (axes[2] < SPINAL_CANAL["top_z"])[None, None, :]
    fraction = np.maximum(fraction, canal.astype(np.float32))
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)
    for centre, semi in BASAL_CISTERNS_MNI:
        cistern = ellipsoid_distance_mm(points, np.asarray(centre, np.float32), np.asarray(semi, np.float32))
        fraction = np.maximum(fraction, np.clip(0.5 - cistern / 2.0, 0.0, 1.0))
    inside = fraction >= 0.5
    # Closing by 6 mm through distances (dilate, then erode the dilated mask).
    dilated = ndimage.distance_transform_edt(~inside, sampling=2.0) <= 6.0
    closed = ndimage.distance_transform_edt(np.pad(dilated, 4, constant_values=False), sampling=2.0)[4:-4, 4:-4, 4:-4] > 6.0
    closed = ndimage.binary_fill_holes(closed | inside)
    fraction = np.where(closed & ~inside, 1.0, fraction).astype(np.float32)
    return closed, fraction, origin


@functools.lru_cache(maxsize=1)
def head_block() -> Block:
    """2 mm head block: signed distances (mm, negative inside) to the intracranial space
    (``icv_sd``), the face and neck outline (``head_sd``), skull-base and facial bones
    (``bone_sd``), air cavities (``air_sd``), mastoid air cells (``mastoid_sd``) and eyes
    (``eye_sd``), and the distance to the nearest air cavity or mastoid (``air_distance``, mm)."""
    inside, fraction, origin = intracranial_mask_2mm()
    icv_sd = _signed_distance_mm(inside, 2.0, fraction)
    d = {kind: structure_distance_block(origin, inside.shape, 2.0, kind) for kind in ("head", "bone", "orbit", "sinus", "airway", "mastoid", "eye")}
    air = np.minimum(d["sinus"], d["airway"])
    # Sinuses and the orbit have thin bony walls; air and the eye take precedence over bone.
    bone = np.minimum(np.minimum(d["bone"], d["sinus"] - SINUS_WALL_MM), np.abs(d["orbit"]) - 0.5 * ORBIT_WALL_MM)
    arrays = {"icv_sd": icv_sd, "head_sd": d["head"]}
    # Nothing of the skull base reaches into the intracranial space.
    for name, value in (("bone_sd", bone), ("air_sd", air), ("mastoid_sd", d["mastoid"]), ("eye_sd", d["eye"])):
        arrays[name] = np.maximum(value, 1.5 - icv_sd).astype(np.float32)
    # Distance to the nearest air cavity (mastoid cells included), where EPI susceptibility artefacts arise.
    cavities = (arrays["air_sd"] < 0) | (arrays["mastoid_sd"] < 0)
    arrays["air_distance"] = ndimage.distance_transform_edt(~cavities, sampling=2.0).astype(np.float32)
    return Block(origin, 2.0, arrays, mode="constant")


THIRD_VENTRICLE_MNI = ((0.0, -9.0, -3.0), (2.5, 11.0, 9.0))
VENTRICLE_MARGIN_MM = 14  # ventricle distances are exact this far out (enlargement, WMH caps)
BRAIN_SMOOTHING_MM = 2.0


def _ventricles(gm: np.ndarray, wm: np.ndarray, t1: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Lateral ventricles (CSF > 0.5 components of the template mask that do not reach its outer
    surface) and the third ventricle (an ellipsoid: a slit too thin to segment)."""
    mask = t1 > 0
    csf = np.clip(mask.astype(np.float32) - gm - wm, 0.0, 1.0) > 0.5
    labels, n = ndimage.label(csf)
    index = np.arange(1, n + 1)
    sizes = ndimage.sum(csf, labels, index)
    touches = ndimage.maximum(ndimage.binary_dilation(~mask, iterations=4), labels, index).astype(bool)
    ventricles = np.isin(labels, index[(sizes > 200) & ~touches])
    centre, semi = (np.asarray(v, np.float32) for v in THIRD_VENTRICLE_MNI)
    lo = np.floor(centre - semi - origin).astype(int)
    hi = np.ceil(centre + semi - origin).astype(int) + 1
    axes = [origin[a] + np.arange(lo[a], hi[a], dtype=np.float32) for a in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    ventricles[box] |= ellipsoid_distance_mm(points, centre, semi) < 0
    return ventricles


@functools.lru_cache(maxsize=1)
def brain_block() -> Block:
    """1 mm brain block: grey and white matter probabilities (``gm``, ``wm``; zero in the
    ventricles), the signed distance to the ventricles (``ventricle_sd``, mm, exact to
    VENTRICLE_MARGIN_MM) and the brain fraction smoothed over 2 mm (``brain_smooth``), whose
    rising threshold opens sulci and thins the cortex with atrophy."""
    t = load_template()
    gm, wm = _crop_template(t["gm"], BRAIN_BOX_MNI), _crop_template(t["wm"], BRAIN_BOX_MNI)
    t1 = _crop_template(t["t1"], BRAIN_BOX_MNI)
    origin = np.array([lo for lo, _ in BRAIN_BOX_MNI], dtype=np.float64)
    ventricles = _ventricles(gm, wm, t1, origin)
    idx = np.argwhere(ventricles)
    lo = np.maximum(idx.min(axis=0) - VENTRICLE_MARGIN_MM, 0)
    hi = np.minimum(idx.max(axis=0) + VENTRICLE_MARGIN_MM + 1, ventricles.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    ventricle_sd = np.full(gm.shape, float(VENTRICLE_MARGIN_MM), np.float32)
    ventricle_sd[box] = np.minimum(_signed_distance_mm(ventricles[box], 1.0), VENTRICLE_MARGIN_MM)
    gm = np.where(ventricles, 0.0, gm).astype(np.float32)
    wm = np.where(ventricles, 0.0, wm).astype(np.float32)
    brain_smooth = ndimage.gaussian_filter(gm + wm, BRAIN_SMOOTHING_MM).astype(np.float32)
    return Block(origin, 1.0, {"gm": gm, "wm": wm, "ventricle_sd": ventricle_sd, "brain_smooth": brain_smooth})


def infratentorial_distance_mm(points: np.ndarray, tentorium_offset_mm: float = 0.0) -> np.ndarray:
    """Signed distance (mm, first order) to the infratentorial compartment at MNI points: below
    the tentorium behind the petrous ridges, and the brainstem."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    dzdx, dzdy = _tentorium_gradient(x, y)
    below = (z - tentorium_z_mm(x, y) - tentorium_offset_mm) / np.sqrt(1.0 + dzdx**2 + dzdy**2)
    fossa = np.maximum(below, y + 38.0)
    stem = segment_distance_mm(points, *BRAINSTEM_AXIS_MNI) - BRAINSTEM_RADIUS_MM
    return np.minimum(fossa, stem).astype(np.float32)


def territory_values_mm(points: np.ndarray, seeds: np.ndarray, seed_region: np.ndarray, offsets: np.ndarray, deep: list, tentorium_offset_mm: float) -> np.ndarray:
    """Distance-like values (MNI mm) of the 15 territories at MNI points, (N, 15): the argmin is the
    territory and half the gap between the nearest territory outside a set and the nearest inside
    it is the depth inside that set (as the ellipsoid family's seed distances).

    Cortical territories: distance to the nearest seed + offset (Voronoi cells). A deep territory
    D (ellipsoids, signed distance s_D) takes m + 2 s_D, with m the cortical minimum, so it wins
    inside its shapes and half its gap is s_D; the vertebrobasilar one does the same over all of them.
    """
    from strokelabel.phantom.anatomy import REGIONS, region_id

    flat = np.asarray(points, np.float32).reshape(-1, 3)
    out = np.full((flat.shape[0], len(REGIONS)), np.inf, np.float32)
    seeds = np.asarray(seeds, np.float32)
    d2 = (seeds**2).sum(axis=1)[:, None] - 2.0 * (seeds @ flat.T) + np.einsum("ij,ij->i", flat, flat)[None, :]
    for rid in np.unique(seed_region):
        out[:, rid - 1] = np.sqrt(np.maximum(d2[seed_region == rid].min(axis=0), 0.0)) + offsets[rid - 1]
    cortical = out.min(axis=1)
    deep_sd: dict[int, np.ndarray] = {}
    for rid, centre, semi in deep:
        # A deep shape lies in one hemisphere: points of the other are far from it.
        side = np.flatnonzero(flat[:, 0] * np.sign(centre[0]) > -DEEP_SIDE_MARGIN_MM)
        d = np.full(flat.shape[0], 2.0 * DEEP_SIDE_MARGIN_MM, np.float32)
        d[side] = ellipsoid_distance_mm(flat[side], np.asarray(centre, np.float32), np.asarray(semi, np.float32))
        deep_sd[rid] = d if rid not in deep_sd else np.minimum(deep_sd[rid], d)
    for rid, d in deep_sd.items():
        out[:, rid - 1] = cortical + 2.0 * d + offsets[rid - 1]
    vb = region_id("vertebrobasilar")
    out[:, vb - 1] = out.min(axis=1) + 2.0 * infratentorial_distance_mm(flat, tentorium_offset_mm)
    return out.reshape(*np.shape(points)[:-1], len(REGIONS))


@functools.lru_cache(maxsize=1)
def superior_sagittal_sinus_mni() -> list[tuple[float, float, float]]:
    """The superior sagittal sinus along the midline, 4 mm inside the intracranial surface, from
    the frontal base over the vertex to the torcula."""
    inside, _, origin = intracranial_mask_2mm()
    ix = int(round((0.5 - origin[0]) / 2.0))  # the voxel column at x = +0.5 (symmetric template)
    column = inside[ix]
    points = []
    for angle in np.radians(np.arange(-20, 200, 20)):  # from anterior-low over the top to posterior-low
        direction = np.array([np.cos(angle), np.sin(angle)])
        centre = BRAIN_CENTROID_MNI[1:]
        r = np.arange(0.0, 140.0, 1.0)
        yz = centre[None, :] + r[:, None] * direction[None, :]
        j = np.clip(np.rint((yz[:, 0] - origin[1]) / 2.0).astype(int), 0, column.shape[0] - 1)
        k = np.clip(np.rint((yz[:, 1] - origin[2]) / 2.0).astype(int), 0, column.shape[1] - 1)
        last = np.flatnonzero(column[j, k])
        if last.size:
            surface = r[last.max()]
            y, z = centre + (surface - 4.0) * direction
            points.append((0.0, float(y), float(z)))
    return points


def cortical_point_mni(direction_mni, depth_mm: float) -> np.ndarray:
    """The point ``depth_mm`` below the brain surface on the ray from the brain centroid through
    ``direction_mni`` (MNI mm)."""
    block = brain_block()
    d = np.asarray(direction_mni, dtype=np.float64) - BRAIN_CENTROID_MNI
    d /= max(np.linalg.norm(d), 1e-9)
    r = np.arange(0.0, 130.0, 0.5)
    points = BRAIN_CENTROID_MNI[None, :] + r[:, None] * d[None, :]
    v = block.sample(("gm", "wm"), points)
    brain = np.flatnonzero(v["gm"] + v["wm"] >= 0.5)
    surface = r[brain.max()] if brain.size else 60.0
    return BRAIN_CENTROID_MNI + max(surface - depth_mm, 0.0) * d
