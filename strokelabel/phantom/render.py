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

The healthy anatomy is mirror-symmetric, so CBF(mirror p) = healthy CBF(p) · q_f(mirror p)
and rCBF = q_f(p) / q_f(mirror p), evaluated analytically (no grid interpolation).
"""

from __future__ import annotations

import numpy as np

from strokelabel import perfusion
from strokelabel.phantom.anatomy import atlas_labels, territory_distances_mm, tissue_fractions
from strokelabel.phantom.geometry import Grid
from strokelabel.phantom.ischemia import lesion_factors
from strokelabel.phantom.patient import Patient
from strokelabel.phantom.vessels import render_pieces, tree_pieces

RCBF_CORE = 0.30
TMAX_PENUMBRA_S = 6.0
PARENCHYMA_MIN = 0.5
CLOT_MIN_FRACTION = 0.3
CORE, PENUMBRA = 1, 2
# The healthy bolus delay grows with distance from the circle of Willis (brain-normalised point).
WILLIS = (0.0, 0.05, -0.40)
MIRROR_MARGIN_MM = 15.0


def patient_pieces(patient: Patient):
    isch = patient.ischemia
    return tree_pieces(patient.tree, isch.clot, isch.collateral_delay_s, isch.collateral_amplitude, isch.spared_vessels)


def true_perfusion(patient: Patient, head, fractions) -> dict[str, np.ndarray]:
    """True CBF, CBV, MTT, Tmax, rCBF and labels at head points with the given tissue fractions."""
    t = patient.tissue
    distances = territory_distances_mm(head, patient.anatomy)
    lesion = lesion_factors(head, distances, patient.ischemia)
    # The occluded vessel feeds one hemisphere: only points whose mirror lies on (or within
    # MIRROR_MARGIN_MM of) that side can see the lesion in their mirror; elsewhere q_f = 1.
    mirror = head * np.array([-1.0, 1.0, 1.0])
    side = -1.0 if patient.ischemia.side == "L" else 1.0
    near = side * mirror[..., 0] > -MIRROR_MARGIN_MM
    q_f_mirror = np.ones(head.shape[:-1])
    if near.any():
        part = mirror[near]
        q_f_mirror[near] = lesion_factors(part, territory_distances_mm(part, patient.anatomy), patient.ischemia)["q_f"]
    gm, wm = fractions["gm"], fractions["wm"]
    parenchyma = gm + wm
    cbf_healthy = gm * t["cbf_gm_ml_100g_min"] + wm * t["cbf_wm_ml_100g_min"]
    cbv_healthy = perfusion.cbv_ml_100g(gm * t["cbf_gm_ml_100g_min"], t["mtt_gm_s"]) + perfusion.cbv_ml_100g(wm * t["cbf_wm_ml_100g_min"], t["mtt_wm_s"])
    cbf = cbf_healthy * lesion["q_f"]
    cbv = cbv_healthy * lesion["q_v"]
    willis = np.asarray(WILLIS) * patient.anatomy.brain_axes_mm
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
        f = tissue_fractions(patient.pose.to_head(grid.world_points(zs, s)), patient.anatomy, grid.edge_mm)
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
    axes = patient.anatomy.brain_axes_mm + 4.0
    ranges = [np.arange(-a, a + step_mm, step_mm) for a in axes]
    head = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1)
    fractions = tissue_fractions(head, patient.anatomy, step_mm)
    labels = true_perfusion(patient, head, fractions)["corepenumbra"]
    voxel_ml = step_mm**3 / 1000.0
    return {"core_ml": float((labels == CORE).sum() * voxel_ml), "penumbra_ml": float((labels == PENUMBRA).sum() * voxel_ml)}
