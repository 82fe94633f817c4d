"""MRI: DWI (b = 1000 s/mm²), ADC (10⁻³ mm²/s) and FLAIR from the same tissue model.

Signals add over the tissues of a voxel (partial volume). With b·ADC in those units the
diffusion weighting is exp(−ADC): S_b = S0 · exp(−b·ADC). The infarct core restricts diffusion
(ADC 0.40-0.55) and, hours after onset, turns FLAIR-bright. Both images get Rician noise and
a smooth coil bias; ADC is fitted from the noisy b = 0 and b = 1000 images, as a scanner does.
"""

from __future__ import annotations

import numpy as np

from strokelabel.phantom.geometry import Grid
from strokelabel.phantom.patient import Patient
from strokelabel.phantom.render import render_chunk

B_VALUE_S_MM2 = 1000.0
# Relative b = 0 (T2-weighted) and FLAIR signal per tissue; fat in the scalp is suppressed,
# flowing blood is a flow void.
S0 = {"gm": 1.0, "wm": 0.86, "csf": 1.9, "scalp": 0.2, "bone": 0.03, "lumen": 0.04}
FLAIR = {"gm": 1.0, "wm": 0.78, "csf": 0.10, "scalp": 1.1, "bone": 0.05, "lumen": 0.04}
ADC_OTHER_1E3 = 1.0  # scalp, bone and lumen (barely any signal anyway)
# ADC is only fitted where the b = 0 signal is above this fraction of grey matter's.
ADC_MASK_FRACTION = 0.15


def core_degree(rcbf, parenchyma) -> np.ndarray:
    """How infarcted a voxel is, 0..1: fully below the core threshold rCBF = 0.30, ramping to 0 at 0.34."""
    return np.where(parenchyma > 0, np.clip((0.34 - rcbf) / 0.04, 0.0, 1.0), 0.0)


def bias_field(world_mm, rng_values) -> np.ndarray:
    """Smooth multiplicative coil sensitivity, ±~6 %."""
    a, b, c, p = rng_values
    x, y, z = world_mm[..., 0], world_mm[..., 1], world_mm[..., 2]
    return 1.0 + 0.04 * np.sin(a * x / 100.0 + p) * np.cos(b * y / 100.0) + 0.02 * np.sin(c * z / 100.0)


def rician(signal, sigma, rng) -> np.ndarray:
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(real**2 + imag**2)


def simulate_mri(patient: Patient, grid: Grid, pieces, noise_seed) -> tuple[dict, dict]:
    """DWI, ADC and FLAIR (float32) and the true labels of one MRI study."""
    t = patient.tissue
    scale = t["mri_scale"]
    sigma = patient.noise["mri_fraction"] * scale
    bias_rng = np.random.default_rng(np.random.SeedSequence([*noise_seed, 999]))
    bias_values = (*bias_rng.uniform(1.0, 3.0, 3), bias_rng.uniform(0, 2 * np.pi))
    images = {k: np.zeros(grid.shape, np.float32) for k in ("dwi", "adc", "flair")}
    truth = {"corepenumbra": np.zeros(grid.shape, np.uint8), "clot_fraction": np.zeros(grid.shape, np.float32), "atlas": np.zeros(grid.shape, np.uint8)}
    for index, zs in enumerate(grid.chunks()):
        rng = np.random.default_rng(np.random.SeedSequence([*noise_seed, index]))
        r = render_chunk(patient, grid, zs, pieces)
        core = core_degree(r["rcbf"], r["parenchyma"])
        lumen = r["lumen_artery"] + r["lumen_vein"] + r["lumen_clot"]
        keep = 1 - lumen
        adc_gm = t["adc_gm_1e3_mm2_s"] * (1 - core) + t["adc_core_1e3_mm2_s"] * core
        adc_wm = t["adc_wm_1e3_mm2_s"] * (1 - core) + t["adc_core_1e3_mm2_s"] * core
        t2 = 1.0 + (0.25 + 0.5 * t["flair_core_gain"]) * core  # T2 prolongation of the infarct
        b0 = keep * (r["gm"] * S0["gm"] * t2 + r["wm"] * S0["wm"] * t2 + r["csf"] * S0["csf"] + r["scalp"] * S0["scalp"] + r["bone"] * S0["bone"]) + lumen * S0["lumen"]
        other = np.exp(-ADC_OTHER_1E3)
        dwi = keep * (
            r["gm"] * S0["gm"] * t2 * np.exp(-adc_gm)
            + r["wm"] * S0["wm"] * t2 * np.exp(-adc_wm)
            + r["csf"] * S0["csf"] * np.exp(-t["adc_csf_1e3_mm2_s"])
            + (r["scalp"] * S0["scalp"] + r["bone"] * S0["bone"]) * other
        ) + lumen * S0["lumen"] * other
        flair = keep * (
            (r["gm"] * FLAIR["gm"] + r["wm"] * FLAIR["wm"]) * (1 + t["flair_core_gain"] * core)
            + r["csf"] * FLAIR["csf"]
            + r["scalp"] * FLAIR["scalp"]
            + r["bone"] * FLAIR["bone"]
        ) + lumen * FLAIR["lumen"]
        coil = scale * bias_field(grid.world_points(zs), bias_values)
        b0_noisy = rician((b0 * coil).astype(np.float32), sigma, rng)
        dwi_noisy = rician((dwi * coil).astype(np.float32), sigma, rng)
        fitted = np.log(b0_noisy / np.maximum(dwi_noisy, 1e-3)) * (1000.0 / B_VALUE_S_MM2)
        images["dwi"][:, :, zs] = dwi_noisy
        images["adc"][:, :, zs] = np.where(b0_noisy > ADC_MASK_FRACTION * scale, np.clip(fitted, 0.0, 4.0), 0.0)
        images["flair"][:, :, zs] = rician((flair * coil).astype(np.float32), sigma, rng)
        truth["corepenumbra"][:, :, zs] = r["corepenumbra"]
        truth["clot_fraction"][:, :, zs] = r["lumen_clot"]
        truth["atlas"][:, :, zs] = r["atlas"]
    return images, truth
