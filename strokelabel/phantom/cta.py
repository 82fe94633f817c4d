"""Multiphase CTA (three phases), the SPIRAL-like clot map and the vascular atlas.

The phases image the same indicator-dilution model as CT perfusion with a longer bolus:
phase 1 at the arterial peak, phases 2 and 3 eight and sixteen seconds later. The clot is a
filling defect (unenhanced thrombus); the arteries beyond it fill late and weakly through
collaterals, so they appear in the later phases.

The SPIRAL-like map is a synthetic stand-in for AMI's SPIRAL output (seed 002): a probability
0..1, high around the clot, moderate over the starved tissue, with false-positive blobs on other
arteries (bifurcations, calcifications) and low-level noise, so that thresholding it gives the
poor precision the seed reports. It is not the SPIRAL algorithm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from strokelabel.phantom.ctp import CurveTable, add_pial_veins, enhancement_hu, pial_veins, precontrast_hu
from strokelabel.phantom.geometry import Grid, segment_distance_mm
from strokelabel.phantom.patient import Patient
from strokelabel.phantom.render import render_chunk

PHASE_SPACING_S = 8.0


def phase_times_s(patient: Patient, offset_s: float = 0.0, spacing_s: float = PHASE_SPACING_S) -> list[float]:
    """Phase 1 one second (plus ``offset_s``) after the arterial peak, then every ``spacing_s``."""
    a = patient.aif_cta
    first = a["t0_s"] + a["alpha"] * a["beta_s"] + 1.0 + offset_s
    return [first, first + spacing_s, first + 2 * spacing_s]


def spiral_parameters(patient: Patient, pieces, rng: np.random.Generator) -> dict:
    """Clot blob, starved-tissue weight and false-positive blobs (world mm) of the SPIRAL-like map."""
    clot = [(patient.pose.to_world(p.p0), patient.pose.to_world(p.p1)) for p in pieces if p.kind == "clot"]
    candidates = [p for p in pieces if p.kind == "artery" and p.delay_s == 0 and p.radius_mm >= 0.6]
    # Enough bright false positives that thresholding at 0.9 flags wrong regions in most studies,
    # as SPIRAL does in seed 002 (region F1 0.34); earlier peaks of 0.35-0.95 never crossed 0.9.
    n_fp = int(rng.integers(4, 11))
    chosen = rng.choice(len(candidates), size=min(n_fp, len(candidates)), replace=False)
    fp_centres = np.array([patient.pose.to_world(0.5 * (candidates[i].p0 + candidates[i].p1)) for i in chosen]) + rng.normal(0, 1.5, (len(chosen), 3))
    return {
        "clot_segments": clot,
        "clot_sigma_mm": rng.uniform(2.5, 4.0),
        "clot_peak": rng.uniform(0.8, 1.0),  # below 0.9 the threshold misses the clot
        "tissue_weight": rng.uniform(0.2, 0.45),
        "fp_centres": fp_centres,
        "fp_sigma_mm": rng.uniform(1.5, 3.5, len(chosen)),
        "fp_peak": rng.uniform(0.5, 1.0, len(chosen)),
        "noise": rng.uniform(0.02, 0.05),
    }


def spiral_map(r: dict, world_mm: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    value = np.zeros(world_mm.shape[:-1], np.float32)
    for a, b in params["clot_segments"]:
        d = segment_distance_mm(world_mm, a, b)
        value = np.maximum(value, params["clot_peak"] * np.exp(-0.5 * (d / params["clot_sigma_mm"]) ** 2))
    value = np.maximum(value, params["tissue_weight"] * r["membership"] * np.clip(r["parenchyma"], 0, 1))
    for centre, sigma, peak in zip(params["fp_centres"], params["fp_sigma_mm"], params["fp_peak"]):
        d2 = ((world_mm - centre) ** 2).sum(axis=-1)
        value = np.maximum(value, peak * np.exp(-0.5 * d2 / sigma**2))
    value += params["noise"] * np.abs(rng.standard_normal(value.shape, dtype=np.float32))
    return np.where(r["icv"] >= 0.5, np.clip(value, 0.0, 1.0), 0.0).astype(np.float32)


def simulate_cta(patient: Patient, grid: Grid, pieces, noise_seed, appearance: dict | None = None) -> tuple[dict, dict]:
    """Phases cta1..cta3 (int16 HU), spiral (float32 0..1), atlas (uint8) and the true labels.

    A ``random`` appearance (chain ``CTA_CHAIN``) moves the phases in time, scales the bolus,
    sets the noise and blurs by the reconstruction kernel (in-plane, before the noise) and the
    slice thickness (along z, after it: a thick slice averages its noise too).
    """
    from strokelabel.phantom.appearance import step_values, value

    timing = value(appearance, "cta", "timing") if appearance and appearance.get("setting") == "random" else None
    times = phase_times_s(patient) if timing is None else phase_times_s(patient, timing["offset_s"], timing["spacing_s"])
    aif = patient.aif_cta if timing is None else {**patient.aif_cta, "peak_hu": patient.aif_cta["peak_hu"] * timing["peak_scale"]}
    curves = CurveTable(aif, times[-1])
    sigma = patient.noise["cta_hu"]
    blur = lines = None
    if timing is not None:
        sigma = value(appearance, "cta", "noise")["hu"] or sigma
        blur = value(appearance, "cta", "resolution")
        lines = pial_veins(grid, step_values(appearance, "cta", "pial_vessels"))
    params = spiral_parameters(patient, pieces, np.random.default_rng(np.random.SeedSequence([*noise_seed, 777])))
    images = {f"cta{i}": np.zeros(grid.shape, np.int16) for i in (1, 2, 3)}
    images["spiral"] = np.zeros(grid.shape, np.float32)
    images["atlas"] = np.zeros(grid.shape, np.uint8)
    truth = {"corepenumbra": np.zeros(grid.shape, np.uint8), "clot_fraction": np.zeros(grid.shape, np.float32), "head": np.zeros(grid.shape, bool)}
    for index, zs in enumerate(grid.chunks()):
        rng = np.random.default_rng(np.random.SeedSequence([*noise_seed, index]))
        r = add_pial_veins(render_chunk(patient, grid, zs, pieces), lines, zs)
        hu = precontrast_hu(r, patient)[..., None] + enhancement_hu(r, curves, times)
        if blur is not None and blur["inplane_sigma_mm"] > 0:
            hu = ndimage.gaussian_filter(hu, [blur["inplane_sigma_mm"] / grid.spacing_mm[0], blur["inplane_sigma_mm"] / grid.spacing_mm[1], 0, 0])
        hu += sigma * rng.standard_normal(hu.shape, dtype=np.float32)
        hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
        for i in range(3):
            images[f"cta{i + 1}"][:, :, zs] = hu[..., i]
        images["spiral"][:, :, zs] = spiral_map(r, grid.world_points(zs), params, rng)
        images["atlas"][:, :, zs] = r["atlas"]
        truth["corepenumbra"][:, :, zs] = r["corepenumbra"]
        truth["clot_fraction"][:, :, zs] = r["lumen_clot"]
        truth["head"][:, :, zs] = r["air"] <= 0.5
    if blur is not None and blur["slice_sigma_mm"] > 0:
        for i in (1, 2, 3):
            smoothed = ndimage.gaussian_filter1d(images[f"cta{i}"].astype(np.float32), blur["slice_sigma_mm"] / grid.spacing_mm[2], axis=2)
            images[f"cta{i}"] = np.clip(np.rint(smoothed), -1024, 3071).astype(np.int16)
    truth["atlas"] = images["atlas"]
    return images, truth
