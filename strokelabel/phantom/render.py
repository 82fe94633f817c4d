"""The true (noise-free) state of a patient on a scanner grid, chunk by chunk, and the ground truth.

True perfusion of a voxel (partial volume: flows and volumes add over the tissues in it):

    CBF  = (f_gm·CBF_gm + f_wm·CBF_wm) · q_f             mL/100g/min
    CBV  = (f_gm·CBF_gm·MTT_gm + f_wm·CBF_wm·MTT_wm)/60 · q_v   mL/100g
    MTT  = 60 · CBV / CBF                                  s (central volume theorem)
    Tmax = healthy delay + extra delay                     s (the exponential residue peaks at its delay)

Ground truth (accepted definitions, from these true values):

    rCBF     = CBF(p) / CBF(mirror of p about the true mid-sagittal plane)
    core     = parenchyma ≥ 50 % and rCBF < 0.30          (label 1)
    penumbra = parenchyma ≥ 50 % and Tmax > 6 s, not core  (label 2)

The ellipsoid family's healthy anatomy is mirror-symmetric, so CBF(mirror p) = healthy
CBF(p) · q_f(mirror p) and rCBF = q_f(p) / q_f(mirror p), evaluated analytically (no grid
interpolation). The template family's head is nearly but not exactly symmetric; rCBF is the
same ratio of flow factors, i.e. the tissue's CBF relative to its own healthy CBF, normalised
by the same at the mirror point (a raw CBF ratio would call a sulcus facing cortex an
infarct). Focal lesions never touch the mirror image of another (ischemia.py), so the mirror
point of an ischemic voxel is healthy even when the lesions are bilateral.

Fields of :func:`render_chunk` (arrays on the chunk's voxels):

- tissue fractions, summing to 1: ``air`` (outside the head and in air cavities), ``scalp``
  (all soft tissue: scalp, face, neck, orbital fat), ``bone``, ``csf`` (with the eyes' fluid
  and old-infarct cavities), ``gm``, ``wm``; ``icv`` the intracranial fraction; ``parenchyma``
  = gm + wm;
- chronic findings (label 0, never core or penumbra; only from an anatomy that models them, the
  template family; otherwise the MRI renderer draws its own when its appearance asks):
  ``old_infarct`` the fraction of the voxel that was parenchyma and is now a CSF-filled cavity
  (already counted in ``csf``), ``gliosis`` the fraction that is gliotic parenchyma around an
  old infarct (counted in ``gm``/``wm``), ``wmh`` the fraction that is white-matter
  hyperintensity, periventricular or deep (counted in ``wm``);
- ``air_cavity_distance_mm``: distance (mm) to the nearest air cavity of the skull base
  (paranasal sinuses, nasal cavity, pharynx, ear canals, mastoid air cells), where EPI
  susceptibility artefacts arise; 0 inside one; and ``skull_base_air``, the voxel's fraction of
  such air (what the MRI renderer's susceptibility model reads). Template family only;
- true perfusion: ``cbf``, ``cbv``, ``mtt``, ``tmax``, ``rcbf`` (1 outside the skull),
  ``membership`` of the ischemic field, labels ``corepenumbra``, territories ``atlas``;
- ``head_mm`` (head-frame position) and, with vessel pieces, ``lumen_artery``, ``lumen_vein``,
  ``lumen_clot``, ``lumen_delay_s``, ``lumen_amplitude``.
"""

from __future__ import annotations

import numpy as np

from strokelabel import perfusion
from strokelabel.phantom.anatomy import atlas_labels
from strokelabel.phantom.geometry import Grid
from strokelabel.phantom.ischemia import blob_gap_mm, lesion_factors
from strokelabel.phantom.patient import Patient
from strokelabel.phantom.vessels import render_pieces, tree_pieces

RCBF_CORE = 0.30
TMAX_PENUMBRA_S = 6.0
PARENCHYMA_MIN = 0.5
CLOT_MIN_FRACTION = 0.3
CORE, PENUMBRA = 1, 2
MIRROR_MARGIN_MM = 15.0


def patient_pieces(patient: Patient):
    isch = patient.ischemia
    return tree_pieces(patient.tree, isch.clot, isch.collateral_delay_s, isch.collateral_amplitude, isch.spared_vessels)


def true_perfusion(patient: Patient, head, fractions) -> dict[str, np.ndarray]:
    """True CBF, CBV, MTT, Tmax, rCBF and labels at head points with the given tissue fractions."""
    t = patient.tissue
    anatomy, isch = patient.anatomy, patient.ischemia
    distances = anatomy.territory_distances_mm(head)
    lesion = lesion_factors(head, distances, isch)
    # Only points whose mirror lies within MIRROR_MARGIN_MM of the ischemic field can see the
    # lesion in their mirror; elsewhere q_f = 1. A territorial field lies in one hemisphere.
    mirror = head * np.array([-1.0, 1.0, 1.0])
    if isch.blobs:
        near = blob_gap_mm(mirror, isch.blobs) < MIRROR_MARGIN_MM
    else:
        side = -1.0 if isch.side == "L" else 1.0
        near = side * mirror[..., 0] > -MIRROR_MARGIN_MM
    q_f_mirror = np.ones(head.shape[:-1])
    if near.any():
        part = mirror[near]
        q_f_mirror[near] = lesion_factors(part, anatomy.territory_distances_mm(part) if isch.uses_territories else None, isch)["q_f"]
    gm, wm = fractions["gm"], fractions["wm"]
    parenchyma = gm + wm
    cbf_healthy = gm * t["cbf_gm_ml_100g_min"] + wm * t["cbf_wm_ml_100g_min"]
    cbv_healthy = perfusion.cbv_ml_100g(gm * t["cbf_gm_ml_100g_min"], t["mtt_gm_s"]) + perfusion.cbv_ml_100g(wm * t["cbf_wm_ml_100g_min"], t["mtt_wm_s"])
    cbf = cbf_healthy * lesion["q_f"]
    cbv = cbv_healthy * lesion["q_v"]
    willis = anatomy.willis_mm
    healthy_delay = patient.base_delay["d0_s"] + patient.base_delay["per_100mm_s"] * np.linalg.norm(head - willis, axis=-1) / 100.0
    tmax = np.where(parenchyma > 0, healthy_delay + lesion["extra_delay_s"], 0.0)
    rcbf = lesion["q_f"] / q_f_mirror
    tissue = parenchyma >= PARENCHYMA_MIN
    core = tissue & (rcbf < RCBF_CORE)
    penumbra = tissue & (tmax > TMAX_PENUMBRA_S) & ~core
    labels = np.where(core, CORE, np.where(penumbra, PENUMBRA, 0)).astype(np.uint8)
    return {
        "cbf": cbf,
        "cbv": cbv,
        "mtt": perfusion.mtt_s(cbv, cbf),
        "tmax": tmax,
        "rcbf": rcbf,
        "membership": lesion["membership"],
        "corepenumbra": labels,
        "atlas_distances": distances,
    }


def render_chunk(patient: Patient, grid: Grid, zs: slice, pieces=None) -> dict[str, np.ndarray]:
    """Tissue fractions, true perfusion, atlas, labels and vessel lumen on slices ``zs``.

    Fractions average the z sub-samples of each voxel; the smooth fields are taken at its centre.
    """
    n = grid.subsamples_z
    fractions = None
    for s in range(n):
        f = patient.anatomy.tissue_fractions(patient.pose.to_head(grid.world_points(zs, s)), grid.edge_mm)
        fractions = f if fractions is None else {k: fractions[k] + f[k] for k in f}
    fractions = {k: v / n for k, v in fractions.items()}
    head = patient.pose.to_head(grid.world_points(zs))
    out = dict(fractions)
    # Perfusion and territories only matter inside the skull.
    inside = fractions["icv"] > 0
    sub = true_perfusion(patient, head[inside], {k: fractions[k][inside] for k in ("gm", "wm")})
    sub["atlas"] = atlas_labels(sub.pop("atlas_distances"), fractions["icv"][inside] >= 0.5)
    for key, values in sub.items():
        full = np.zeros(inside.shape, dtype=values.dtype)
        if key == "rcbf":
            full[:] = 1.0
        full[inside] = values
        out[key] = full
    out["parenchyma"] = fractions["gm"] + fractions["wm"]
    out["head_mm"] = head
    if pieces is not None:
        out.update({f"lumen_{k}": v for k, v in render_pieces(pieces, patient.pose, grid, zs).items()})
    return out


def clot_mask(clot_fraction: np.ndarray) -> np.ndarray:
    """Clot voxels: lumen fraction ≥ 0.3; at least the voxel holding most clot, so a tiny clot is never lost."""
    mask = clot_fraction >= CLOT_MIN_FRACTION
    if not mask.any() and clot_fraction.max() > 0:
        mask = clot_fraction == clot_fraction.max()
    return mask


def truth_volumes(patient: Patient, grid: Grid, keys=("corepenumbra", "tmax", "cbf", "rcbf", "parenchyma", "atlas", "lumen_clot")) -> dict[str, np.ndarray]:
    """Full-volume true fields of ``patient`` on ``grid`` (for tests and figures)."""
    pieces = patient_pieces(patient) if any(k.startswith("lumen_") for k in keys) else None
    parts = [render_chunk(patient, grid, zs, pieces) for zs in grid.chunks()]
    return {k: np.concatenate([p[k] for p in parts], axis=2) for k in keys}


def reference_volumes_ml(patient: Patient, step_mm: float = 3.0) -> dict[str, float]:
    """Core and penumbra volumes (mL) on a fixed head-frame grid: a figure of the patient, not of a scan."""
    lo, hi = patient.anatomy.bounds_mm
    ranges = [np.arange(a - 4.0, b + 4.0 + step_mm, step_mm) for a, b in zip(lo, hi)]
    head = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1)
    fractions = patient.anatomy.tissue_fractions(head, step_mm)
    tissue = fractions["gm"] + fractions["wm"] >= PARENCHYMA_MIN  # labels need parenchyma
    labels = true_perfusion(patient, head[tissue], {k: fractions[k][tissue] for k in ("gm", "wm")})["corepenumbra"]
    voxel_ml = step_mm**3 / 1000.0
    return {"core_ml": float((labels == CORE).sum() * voxel_ml), "penumbra_ml": float((labels == PENUMBRA).sum() * voxel_ml)}
