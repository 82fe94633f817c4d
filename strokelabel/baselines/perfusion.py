"""Training-free CT perfusion baselines: ischemic core and penumbra by physiological thresholds.

Core = rCBF < 30 % of the healthy side; hypoperfusion = Tmax > 6 s; penumbra =
hypoperfusion that is not core (DESIGN.md, the thresholds of the DEFUSE 3 / RAPID
definitions). Units: CBF mL/100g/min, CBV mL/100g, Tmax s, spacing mm, volumes mL.

rCBF reference (``reference=``):

- ``"contralateral"`` (default): the median CBF of the unaffected hemisphere. The brain is
  split at the mid-sagittal plane estimated from the brain mask's mirror symmetry; the
  unaffected hemisphere is the one with less Tmax > 6 s tissue (lower median CBF when no
  Tmax is given), and its own hypoperfused voxels are left out. This is the clinical
  definition ("relative to the contralateral hemisphere") and is robust to noise because
  it is one number per study.
- ``"mirror"``: voxel-wise, CBF divided by the smoothed CBF at the mirror voxel across the
  mid-sagittal plane, so grey matter is compared with grey matter. Where the mirror voxel
  is outside the brain or itself hypoperfused, the contralateral median is used.
- ``"healthy_median"``: the median CBF of all brain voxels with Tmax <= 6 s.

``reference_cbf`` (mL/100g/min), with ``"contralateral"``: the healthy side's CBF measured otherwise, used instead of
the median of the map (maps computed from a 4D series can carry one read from the healthy side's mean curve,
strokelabel.ctp4d.mean_curve_reference).

The mid-sagittal plane is searched as a shift along the left-right axis only (axis 0 in
RAS); a head rotated about the vertical axis is not corrected.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from strokelabel.baselines.masks import brain_mask_from_perfusion, remove_small_clusters
from strokelabel.boxes import bounding_box, paste
from strokelabel.errors import StrokeLabelError
from strokelabel.smoothing import kernel_radius, normalised_gaussian
from strokelabel.units import check_perfusion_map

CORE = 1
PENUMBRA = 2

RCBF_CORE_THRESHOLD = 0.30
TMAX_HYPOPERFUSION_THRESHOLD_S = 6.0
# Clusters smaller than this are noise specks, not lesions (0.1 mL = 100 voxels of 1 mm³).
MIN_CLUSTER_ML = 0.1
REFERENCES = ("contralateral", "mirror", "healthy_median")


def estimate_midsagittal_plane(brain_mask: np.ndarray, axis: int = 0, search_fraction: float = 0.2) -> float:
    """Mid-sagittal plane as a voxel coordinate along ``axis`` (half-voxel steps).

    Chooses, within ``search_fraction`` of the brain's width around its centroid, the
    plane whose mirror image of the brain mask overlaps the mask most. The overlap is
    measured on the mask's column counts along the remaining axes (a 2D map for a 3D
    mask), which keeps the search fast on 512 x 512 grids.
    """
    mask = np.asarray(brain_mask, dtype=bool)
    if not mask.any():
        raise StrokeLabelError("empty brain mask: no mid-sagittal plane to find")
    axis = axis % mask.ndim
    others = [a for a in range(mask.ndim) if a != axis]
    counts = mask.sum(axis=tuple(others[1:])) if len(others) > 1 else mask.astype(np.int64)
    counts_axis = 0 if not others or axis < others[0] else 1
    profile = counts.sum(axis=1 - counts_axis).astype(np.float64) if counts.ndim == 2 else counts.astype(np.float64)
    coords = np.arange(profile.size)
    centroid = float((profile * coords).sum() / profile.sum())
    occupied = np.flatnonzero(profile)
    half_window = max(1.0, search_fraction * (occupied[-1] - occupied[0] + 1))
    # Plane p mirrors x to 2p - x; test every integer s = 2p in the window.
    candidates = np.arange(int(np.floor(2 * (centroid - half_window))), int(np.ceil(2 * (centroid + half_window))) + 1)
    scores = [np.minimum(counts, mirror(counts, s / 2.0, axis=counts_axis, fill=0)).sum() for s in candidates]
    # Ties (a box-shaped brain) resolve to the candidate nearest the centroid.
    best = np.flatnonzero(np.asarray(scores) == max(scores))
    return float(candidates[best[np.argmin(np.abs(candidates[best] / 2.0 - centroid))]] / 2.0)


def mirror(values: np.ndarray, plane: float, axis: int = 0, fill=np.nan) -> np.ndarray:
    """Mirror ``values`` about the plane at voxel coordinate ``plane`` along ``axis``.

    Voxel x takes the value at 2*plane - x; voxels whose mirror falls outside the array get ``fill``.
    """
    values = np.asarray(values)
    n = values.shape[axis]
    source = int(round(2 * plane)) - np.arange(n)
    valid = (source >= 0) & (source < n)
    out = np.take(values, np.clip(source, 0, n - 1), axis=axis)
    shape = [1] * values.ndim
    shape[axis] = n
    return np.where(valid.reshape(shape), out, fill)


def _hemispheres(brain: np.ndarray, plane: float, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(low side, high side) of the brain along ``axis``; voxels on the plane belong to neither."""
    shape = [1] * brain.ndim
    shape[axis] = brain.shape[axis]
    coords = np.arange(brain.shape[axis]).reshape(shape)
    return brain & (coords < plane), brain & (coords > plane)


def healthy_side_mask(
    cbf: np.ndarray,
    brain_mask: np.ndarray,
    tmax: np.ndarray | None = None,
    tmax_threshold_s: float = TMAX_HYPOPERFUSION_THRESHOLD_S,
    axis: int = 0,
    plane: float | None = None,
) -> np.ndarray:
    """The unaffected hemisphere's normally perfused voxels (see module docstring)."""
    brain = np.asarray(brain_mask, dtype=bool)
    plane = estimate_midsagittal_plane(brain, axis) if plane is None else plane
    low, high = _hemispheres(brain, plane, axis)
    if tmax is not None:
        hypo = np.asarray(tmax) > tmax_threshold_s
        healthy = low if (hypo & low).sum() <= (hypo & high).sum() else high
        healthy = healthy & ~hypo
    else:
        cbf = np.asarray(cbf, dtype=np.float64)
        median_low = np.median(cbf[low]) if low.any() else -np.inf
        median_high = np.median(cbf[high]) if high.any() else -np.inf
        healthy = low if median_low >= median_high else high
    if not healthy.any():
        # The whole brain is hypoperfused, or the plane left one side empty.
        healthy = brain & ~(np.asarray(tmax) > tmax_threshold_s) if tmax is not None else brain
        if not healthy.any():
            healthy = brain
    return healthy


def relative_cbf(
    cbf: np.ndarray,
    brain_mask: np.ndarray,
    spacing_mm: Sequence[float],
    tmax: np.ndarray | None = None,
    reference: str = "contralateral",
    tmax_threshold_s: float = TMAX_HYPOPERFUSION_THRESHOLD_S,
    axis: int = 0,
    smoothing_mm: float = 4.0,
    reference_cbf: float | None = None,
) -> np.ndarray:
    """rCBF (fraction of the healthy-side CBF) inside the brain, NaN outside. See the module docstring for ``reference``
    and ``reference_cbf``."""
    rcbf, box = relative_cbf_in_box(cbf, brain_mask, spacing_mm, tmax, reference, tmax_threshold_s, axis, smoothing_mm, reference_cbf)
    return paste(rcbf, box, np.shape(brain_mask), fill=np.nan)


def relative_cbf_in_box(
    cbf: np.ndarray,
    brain_mask: np.ndarray,
    spacing_mm: Sequence[float],
    tmax: np.ndarray | None = None,
    reference: str = "contralateral",
    tmax_threshold_s: float = TMAX_HYPOPERFUSION_THRESHOLD_S,
    axis: int = 0,
    smoothing_mm: float = 4.0,
    reference_cbf: float | None = None,
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """:func:`relative_cbf` on the brain's bounding box: (rCBF on the box, the box), the same values.

    The rCBF of a voxel depends on the brain's voxels only: the box holds them, for ``mirror`` also
    their mirror images and the reach of the Gaussian smoothing around both (scipy's truncation at 4
    SD), so the smoothed CBF inside it is the full grid's (within the float32 rounding of the smoothing,
    relative 1e-6). The mid-sagittal plane is found on the full grid. Float64 only for the brain's voxels."""
    if reference not in REFERENCES:
        raise ValueError(f"unknown rCBF reference {reference!r}; expected one of {REFERENCES}")
    given_reference = reference_cbf
    full_brain = np.asarray(brain_mask, dtype=bool)
    axis = axis % full_brain.ndim
    plane = estimate_midsagittal_plane(full_brain, axis) if reference != "healthy_median" else None
    sigma = smoothing_mm / np.asarray(spacing_mm, dtype=np.float64)
    box = bounding_box(full_brain)
    if box is None:  # no brain: the full grid, as the definition reads (an error or all NaN)
        box = tuple(slice(0, n) for n in full_brain.shape)
    elif reference == "mirror":
        reach = [kernel_radius(s) for s in sigma]  # the smoothing's radius per axis
        low, high = box[axis].start, box[axis].stop
        flip = int(round(2 * plane))  # voxel x mirrors to flip - x (see :func:`mirror`)
        low, high = min(low, flip - (high - 1)), max(high, flip - low + 1)
        box = tuple(
            slice(max(0, (low if a == axis else b.start) - reach[a]), min(n, (high if a == axis else b.stop) + reach[a]))
            for a, (b, n) in enumerate(zip(box, full_brain.shape))
        )
    cbf = np.asarray(cbf)[box]  # a view: float64 only for the voxels read below
    brain = full_brain[box]
    tmax = np.asarray(tmax)[box] if tmax is not None else None
    plane = None if plane is None else plane - box[axis].start  # exact: a half-voxel minus an integer
    hypo = tmax > tmax_threshold_s if tmax is not None else np.zeros(brain.shape, bool)
    cbf_in_brain = cbf[brain].astype(np.float64)
    # The reference CBF is needed at the brain's voxels only (in voxel order, as a boolean index gives them).
    if reference == "healthy_median":
        normal = brain & ~hypo
        reference_cbf = np.median(cbf[normal if normal.any() else brain].astype(np.float64))
    elif reference == "contralateral" and given_reference is not None:
        reference_cbf = float(given_reference)
    else:
        healthy = healthy_side_mask(cbf, brain, tmax, tmax_threshold_s, axis, plane)
        reference_cbf = np.median(cbf[healthy].astype(np.float64))
        if reference == "mirror":
            # Smooth within the brain only (normalised convolution), so the zero background and single noisy
            # voxels do not set a voxel's reference; float32 matrix products (strokelabel.smoothing), 0.3 s
            # where scipy's float64 filter took 1.5 s on a full-size CTP box.
            smooth = normalised_gaussian(cbf, brain, sigma)
            # :func:`mirror` of ``smooth`` and of the usable voxels, read at the brain's voxels only.
            where = np.nonzero(brain)
            source = int(round(2 * plane)) - where[axis]
            valid = (source >= 0) & (source < brain.shape[axis])
            at_mirror = tuple(np.clip(source, 0, brain.shape[axis] - 1) if a == axis else w for a, w in enumerate(where))
            mirrored = np.where(valid, smooth[at_mirror].astype(np.float64), np.nan)
            usable = valid & brain[at_mirror] & ~hypo[at_mirror] & (mirrored > 0)
            reference_cbf = np.where(usable, mirrored, reference_cbf)
            # Freed before the rCBF array is made: the smoothed box and six brain-voxel-long index and value
            # arrays (int64/float64, ~30 MB each on a full-size CTP grid) made this line the model's peak.
            del smooth, where, source, valid, at_mirror, mirrored, usable
    reference_cbf = np.broadcast_to(reference_cbf, (int(np.count_nonzero(brain)),))
    if not np.all(reference_cbf > 0):
        raise StrokeLabelError("CBF of the healthy side is not positive: cannot compute relative CBF (is this a CBF map?)")
    rcbf = np.full(brain.shape, np.nan)
    rcbf[brain] = cbf_in_brain / reference_cbf
    return rcbf, box


def _tissue(brain_mask, cbf, tmax, cbv=None, check_units: bool = True, study: str | None = None) -> np.ndarray:
    """Brain voxels that carry a perfusion signal, after checking the maps' units.

    Holes filled into the brain mask (ventricles) have CBF ~0 and would pass as core;
    voxels where CBF and Tmax are both 0 carry no signal (CSF, no fit) and are left out.
    A threshold in the wrong unit (Tmax in ms) would label the whole brain, hence the check.
    """
    if brain_mask is None:
        brain_mask = brain_mask_from_perfusion(cbf, tmax, cbv)
    brain = np.asarray(brain_mask, dtype=bool)
    if check_units:
        for name, values in (("cbf", cbf), ("tmax", tmax), ("cbv", cbv)):
            if values is not None:
                # Non-zero voxels only: a generous brain mask (skull from a MIP, filled
                # ventricles) would otherwise pull the median towards 0.
                check_perfusion_map(values, name, mask=brain & (np.asarray(values) != 0), study=study)
    signal = np.asarray(cbf) > 0
    if tmax is not None:
        signal |= np.asarray(tmax) > 0
    return brain & signal


def _low_rcbf(cbf, tissue, spacing_mm, tmax, reference, tmax_threshold_s, axis, rcbf_threshold, reference_cbf=None) -> np.ndarray:
    """``tissue & (relative_cbf(...) < rcbf_threshold)``, the rCBF computed on the tissue's box only."""
    rcbf, box = relative_cbf_in_box(cbf, tissue, spacing_mm, tmax, reference, tmax_threshold_s, axis, reference_cbf=reference_cbf)
    return paste(tissue[box] & (rcbf < rcbf_threshold), box, tissue.shape, fill=False)


def _check_shapes(**arrays) -> None:
    shapes = {name: np.shape(a) for name, a in arrays.items() if a is not None}
    if len(set(shapes.values())) > 1:
        raise StrokeLabelError(f"input shapes differ: {shapes}")


def core_penumbra_baseline(
    cbf: np.ndarray,
    tmax: np.ndarray,
    spacing_mm: Sequence[float],
    brain_mask: np.ndarray | None = None,
    rcbf_threshold: float = RCBF_CORE_THRESHOLD,
    tmax_threshold_s: float = TMAX_HYPOPERFUSION_THRESHOLD_S,
    min_cluster_ml: float = MIN_CLUSTER_ML,
    reference: str = "contralateral",
    axis: int = 0,
    check_units: bool = True,
    study: str | None = None,
    reference_cbf: float | None = None,
) -> np.ndarray:
    """Core (1) and penumbra (2) from CBF (mL/100g/min) and Tmax (s).

    core = rCBF < ``rcbf_threshold``; hypoperfusion = Tmax > ``tmax_threshold_s``;
    penumbra = hypoperfusion and not core. Core clusters and hypoperfused clusters smaller
    than ``min_cluster_ml`` mL are removed before penumbra is formed, so a removed core
    speck inside hypoperfused tissue becomes penumbra. With ``check_units`` the maps'
    units are checked first (:func:`strokelabel.units.check_perfusion_map`). Returns a
    uint8 label map.
    """
    _check_shapes(cbf=cbf, tmax=tmax, brain_mask=brain_mask)
    tissue = _tissue(brain_mask, cbf, tmax, check_units=check_units, study=study)
    core = _low_rcbf(cbf, tissue, spacing_mm, tmax, reference, tmax_threshold_s, axis, rcbf_threshold, reference_cbf)
    core = remove_small_clusters(core, spacing_mm, min_cluster_ml)
    hypo = remove_small_clusters(tissue & (np.asarray(tmax) > tmax_threshold_s), spacing_mm, min_cluster_ml)
    label = np.zeros(tissue.shape, dtype=np.uint8)
    label[hypo] = PENUMBRA
    label[core] = CORE
    return label


# Wintermark et al. 2006: infarct core where CBV < 2.0 mL/100g.
CBV_CORE_THRESHOLD_ML_100G = 2.0


def ctp_lesion_baseline(
    cbf: np.ndarray,
    spacing_mm: Sequence[float],
    tmax: np.ndarray | None = None,
    cbv: np.ndarray | None = None,
    brain_mask: np.ndarray | None = None,
    rcbf_threshold: float = RCBF_CORE_THRESHOLD,
    cbv_threshold_ml_100g: float | None = None,
    tmax_threshold_s: float = TMAX_HYPOPERFUSION_THRESHOLD_S,
    min_cluster_ml: float = MIN_CLUSTER_ML,
    reference: str = "contralateral",
    axis: int = 0,
    check_units: bool = True,
    study: str | None = None,
    reference_cbf: float | None = None,
) -> np.ndarray:
    """Ischemic lesion (1) of a CTP study: the ischemic core, rCBF < ``rcbf_threshold``.

    With ``cbv_threshold_ml_100g`` (e.g. 2.0, Wintermark) a voxel must also have CBV below
    it. Tmax, if given, only helps to pick the healthy side for the rCBF reference. Map
    units are checked as in :func:`core_penumbra_baseline`. Returns a uint8 label map (0/1).
    """
    _check_shapes(cbf=cbf, tmax=tmax, cbv=cbv, brain_mask=brain_mask)
    tissue = _tissue(brain_mask, cbf, tmax, cbv, check_units=check_units, study=study)
    lesion = _low_rcbf(cbf, tissue, spacing_mm, tmax, reference, tmax_threshold_s, axis, rcbf_threshold, reference_cbf)
    if cbv_threshold_ml_100g is not None:
        if cbv is None:
            raise StrokeLabelError("a CBV threshold was given but no CBV map")
        lesion &= np.asarray(cbv) < cbv_threshold_ml_100g
    return remove_small_clusters(lesion, spacing_mm, min_cluster_ml).astype(np.uint8)
