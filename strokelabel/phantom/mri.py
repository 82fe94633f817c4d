"""MRI: DWI (b = 1000 s/mm²), ADC (10⁻³ mm²/s) and FLAIR from the same tissue model.

Signals add over the tissues of a voxel (partial volume). With b·ADC in those units the
diffusion weighting is exp(−ADC): S_b = S0 · exp(−b·ADC). The infarct core restricts diffusion
(ADC 0.40-0.55) and, hours after onset, turns FLAIR-bright. Both images get Rician noise and
a smooth coil bias; ADC is fitted from the noisy b = 0 and b = 1000 images, as a scanner does.

With a ``random`` appearance (:mod:`strokelabel.phantom.appearance`, chain ``MRI_CHAIN``) the
same model runs on a drawn acquisition grid with drawn contrasts, lesion contrast, texture,
EPI susceptibility distortion, stroke mimics (label 0), bias, noise and skull stripping; see
:func:`simulate_mri_random`.
"""

from __future__ import annotations

import numpy as np

from strokelabel.phantom.appearance import is_random
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


def simulate_mri(patient: Patient, grid: Grid, pieces, noise_seed, appearance: dict | None = None) -> tuple[dict, dict]:
    """DWI, ADC and FLAIR (float32) and the true labels of one MRI study.

    ``appearance`` (:func:`strokelabel.phantom.appearance.draw_appearance`): ``fixed`` (None)
    is today's look; ``random`` runs :func:`simulate_mri_random`, on the grid of
    :func:`acquisition_grid`.
    """
    if is_random(appearance):
        return simulate_mri_random(patient, grid, pieces, noise_seed, appearance)
    t = patient.tissue
    scale = t["mri_scale"]
    sigma = patient.noise["mri_fraction"] * scale
    bias_rng = np.random.default_rng(np.random.SeedSequence([*noise_seed, 999]))
    bias_values = (*bias_rng.uniform(1.0, 3.0, 3), bias_rng.uniform(0, 2 * np.pi))
    images = {k: np.zeros(grid.shape, np.float32) for k in ("dwi", "adc", "flair")}
    truth = {"corepenumbra": np.zeros(grid.shape, np.uint8), "clot_fraction": np.zeros(grid.shape, np.float32), "atlas": np.zeros(grid.shape, np.uint8),
             "head": np.zeros(grid.shape, bool)}
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
        truth["head"][:, :, zs] = r["air"] <= 0.5
    return images, truth


# --------------------------------------------------------------------------------------------
# Random appearance (issue 9): the same signal model on whole volumes, with the MRI_CHAIN steps.
# --------------------------------------------------------------------------------------------
#: render_chunk fields read when the anatomy provides them (zeros otherwise): chronic findings
#: and the air spaces of the skull base.
OPTIONAL_FIELDS = ("old_infarct", "gliosis", "wmh", "skull_base_air")
#: Mimic codes of the ``mimics`` truth volume (all label 0 for the task: they are not lesion).
MIMIC_CODES = {"susceptibility": 1, "cortical_rim": 2, "shine_through": 3, "old_infarct": 4, "gliosis": 5, "wmh": 6, "regional_t2": 7}
# A voxel is marked a regional-brightness mimic from this T2 gain on (0.1 = 10 % brighter).
REGIONAL_MIMIC_GAIN = 0.1
# Gliosis around a chronic infarct: T2, ADC and FLAIR gains at full gliosis.
GLIOSIS_GAINS = {"t2": 0.6, "adc": 0.25, "flair": 1.2}
# Small-grid cap: at size "small" the in-plane matrix stays at most this (the models work at 1.8 mm).
SMALL_MAX_MATRIX = 160


def acquisition_grid(grid: Grid, appearance: dict | None, size: str = "small") -> Grid:
    """The study grid: ``grid`` (the size's), or the drawn acquisition grid of a random appearance.

    In-plane spacing ``inplane_mm`` over a field of view ``fov_mm``, slices ``slice_mm`` over
    ``coverage_mm`` (the renderer's z sub-samples give the thick slices their partial volume).
    At size small the in-plane matrix is capped at ``SMALL_MAX_MATRIX`` to bound the time.
    """
    from strokelabel.phantom.appearance import step_values

    r = step_values(appearance, "mri", "resolution")
    if r is None:
        return grid
    inplane = r["inplane_mm"]
    if size == "small":
        inplane = max(inplane, r["fov_mm"] / SMALL_MAX_MATRIX)
    n_xy = int(round(r["fov_mm"] / inplane))
    n_z = int(round(r["coverage_mm"] / r["slice_mm"]))
    return Grid((n_xy, n_xy, n_z), (round(inplane, 4), round(inplane, 4), round(r["slice_mm"], 4)))


def _render_full(patient: Patient, grid: Grid, pieces) -> dict:
    """Every field the random MRI needs, on the whole grid (float32; labels uint8)."""
    keys = ("gm", "wm", "csf", "scalp", "bone", "air", "icv", "parenchyma", "rcbf", "lumen_clot")
    out = {k: np.zeros(grid.shape, np.float32) for k in keys + ("lumen",)}
    out["corepenumbra"] = np.zeros(grid.shape, np.uint8)
    out["atlas"] = np.zeros(grid.shape, np.uint8)
    for zs in grid.chunks():
        r = render_chunk(patient, grid, zs, pieces)
        for k in keys + ("corepenumbra", "atlas"):
            out[k][:, :, zs] = r[k]
        out["lumen"][:, :, zs] = r["lumen_artery"] + r["lumen_vein"] + r["lumen_clot"]
        for k in OPTIONAL_FIELDS:
            if k in r:
                out.setdefault(k, np.zeros(grid.shape, np.float32))[:, :, zs] = r[k]
    return out


def _mimics(f: dict, patient: Patient, grid: Grid, appearance: dict, coarse: dict | None) -> tuple[dict, dict]:
    """Per-voxel mimic fields (0..1) and a record of what was placed (world mm, volumes in mL).

    ``coarse``: the whole-head susceptibility model (:func:`_head_field`), whose skull-base air
    spaces the image shows too."""
    from strokelabel.phantom import mimics as mm
    from strokelabel.phantom.appearance import step_rng, step_values

    spacing = grid.spacing_mm
    shape = grid.shape
    lesion_zone = f["corepenumbra"] > 0
    depth = mm.distance_mm(f["icv"] < 0.5, spacing)  # below the skull's inner surface
    fields = {k: np.zeros(shape, np.float32) for k in ("air_cavity", "old_infarct", "gliosis", "wmh", "shine", "rim", "regional")}
    record: dict = {"fields_from_anatomy": sorted(k for k in OPTIONAL_FIELDS if k in f)}
    world = lambda idx: [round(float(v), 1) for v in grid.affine[:3, :3] @ idx + grid.affine[:3, 3]]  # noqa: E731

    if "skull_base_air" in f:
        fields["air_cavity"] = f["skull_base_air"]
    elif coarse is not None:
        fields["air_cavity"] = np.clip(_to_grid(coarse["cavity"], grid), 0.0, 1.0) * (f["icv"] < 0.5)

    old = step_values(appearance, "mri", "old_infarcts")
    if "old_infarct" in f:
        fields["old_infarct"] = f["old_infarct"]
        fields["gliosis"] = f.get("gliosis", fields["gliosis"])
    elif old is not None:
        rng = step_rng(old)
        centres = mm.place_blobs(f["parenchyma"] > 0.9, lesion_zone, int(old["count"]), old["radius_mm"], spacing, rng)
        wobble = 1.5 * mm.smooth_field(shape, spacing, 3.0, rng)
        cavity = mm.blob_fraction(shape, centres, old["radius_mm"], spacing, grid.edge_mm, wobble)
        outer = mm.blob_fraction(shape, centres, old["radius_mm"] + old["rim_mm"], spacing, grid.edge_mm, wobble)
        fields["old_infarct"] = cavity * (f["parenchyma"] > 0)
        fields["gliosis"] = np.clip(outer - cavity, 0.0, 1.0) * (f["parenchyma"] > 0)
        record["old_infarct_centres_world_mm"] = [world(c) for c in centres]
    if "wmh" in f:
        fields["wmh"] = f["wmh"]
    else:
        w = step_values(appearance, "mri", "wmh")
        if w is not None:
            vents = mm.ventricles(f["csf"], depth)
            fields["wmh"] = mm.wmh_pattern(f["wm"], vents, int(w["grade"]), spacing, step_rng(w)) * ~lesion_zone
    st = step_values(appearance, "mri", "shine_through")
    if st is not None:
        rng = step_rng(st)
        avoid = lesion_zone | (fields["old_infarct"] > 0) | (fields["gliosis"] > 0)
        centres = mm.place_blobs(f["wm"] > 0.7, avoid, int(st["count"]), st["radius_mm"], spacing, rng)
        wobble = 1.5 * mm.smooth_field(shape, spacing, 3.0, rng)
        fields["shine"] = mm.blob_fraction(shape, centres, st["radius_mm"], spacing, grid.edge_mm, wobble) * (f["parenchyma"] > 0)
        record["shine_through_centres_world_mm"] = [world(c) for c in centres]
    rim = step_values(appearance, "mri", "cortical_rim")
    if rim is not None:
        fields["rim"] = mm.cortical_rim(f["gm"], f["csf"], depth, spacing, rim["width_mm"])
    regional = step_values(appearance, "mri", "regional_t2")
    if regional is not None:
        gains = {zone: regional[f"{zone}_gain"] for zone in mm.REGIONAL_ZONES}
        fields["regional"] = mm.regional_t2(f["atlas"], f["parenchyma"], spacing, gains, regional["side_ratio"], regional["smoothing_mm"],
                                            step_rng(regional)) * ~lesion_zone
    return fields, record


def _lesion_contrast(appearance: dict, t: dict, adc_gm: float, adc_wm: float) -> dict:
    """ADC ratio and T2 gain of the infarct from the drawn DWI contrast (a lesion is always DWI-visible)."""
    from strokelabel.phantom.appearance import value

    lc = value(appearance, "mri", "lesion_contrast")
    if lc["adc_ratio"] is None:  # off: today's absolute core ADC and T2 prolongation
        ratio = t["adc_core_1e3_mm2_s"] / (0.5 * (adc_gm + adc_wm))
        return {"adc_ratio": ratio, "t2_gain": 0.25 + 0.5 * t["flair_core_gain"], "heterogeneity": 0.0, "subacute": False,
                "flair_gain": t["flair_core_gain"]}
    ratio = lc["adc_ratio_subacute"] if lc["subacute"] else lc["adc_ratio"]
    reference = 0.5 * (adc_gm + adc_wm)
    t2_gain = max(0.0, lc["dwi_contrast"] / np.exp((1.0 - ratio) * reference) - 1.0)
    flair_gain = max(t["flair_core_gain"], 0.5) if lc["subacute"] else t["flair_core_gain"]
    return {"adc_ratio": float(ratio), "t2_gain": float(t2_gain), "heterogeneity": lc["heterogeneity"], "subacute": bool(lc["subacute"]),
            "flair_gain": float(flair_gain)}


def simulate_mri_random(patient: Patient, grid: Grid, pieces, noise_seed, appearance: dict) -> tuple[dict, dict]:
    """The MRI of a random appearance on ``grid`` (already :func:`acquisition_grid`).

    Order of the chain: tissue contrast and ADC, lesion contrast, mimics (chronic infarcts, WMH,
    shine-through, cortical rim), texture -> noise-free b = 0, b = 1000, FLAIR -> EPI susceptibility
    (b = 0 and b = 1000; the truth moves with the DWI) -> k-space truncation -> coil bias ->
    Rician noise -> ADC fit -> skull stripping. Returns images and truth as :func:`simulate_mri`,
    the truth with ``mimics`` (codes :data:`MIMIC_CODES`), ``foreground`` (per image: head, or
    the stripped brain) and ``record`` (what was drawn in space).
    """
    from strokelabel.phantom import mimics as mm
    from strokelabel.phantom.appearance import step_rng, step_values, value

    t = patient.tissue
    f = _render_full(patient, grid, pieces)
    spacing = grid.spacing_mm
    shape = grid.shape
    contrast = value(appearance, "mri", "tissue_contrast")
    adc_v = value(appearance, "mri", "tissue_adc")
    adc_gm = adc_v["adc_gm"] or t["adc_gm_1e3_mm2_s"]
    adc_wm = adc_v["adc_wm"] or t["adc_wm_1e3_mm2_s"]
    adc_csf = adc_v["adc_csf"] or t["adc_csf_1e3_mm2_s"]
    lesion = _lesion_contrast(appearance, t, adc_gm, adc_wm)
    sus = step_values(appearance, "mri", "susceptibility")
    coarse = _head_field(patient, sus) if sus is not None else None
    fields, record = _mimics(f, patient, grid, appearance, coarse)
    record["lesion"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in lesion.items()}

    # Chronic cavities drawn here turn parenchyma into CSF (an anatomy's own old_infarct is already
    # counted as CSF by render_chunk); skull-base air replaces bone and soft tissue.
    cavity = fields["old_infarct"] if "old_infarct" not in f else np.zeros(shape, np.float32)
    gm, wm = f["gm"] * (1 - cavity), f["wm"] * (1 - cavity)
    csf = f["csf"] + (f["gm"] + f["wm"]) * cavity
    air_cavity = fields["air_cavity"]
    scalp, bone = f["scalp"] * (1 - air_cavity), f["bone"] * (1 - air_cavity)
    core = core_degree(f["rcbf"], f["parenchyma"])
    tex = value(appearance, "mri", "texture")
    tex_rng = np.random.default_rng(np.random.SeedSequence([*noise_seed, 0x7E7]))
    texture = 1.0 + tex["signal_amplitude"] * mm.smooth_field(shape, spacing, tex["length_mm"], tex_rng) if tex["signal_amplitude"] else 1.0
    adc_texture = 1.0 + tex["adc_amplitude"] * mm.smooth_field(shape, spacing, tex["length_mm"], tex_rng) if tex["adc_amplitude"] else 1.0
    ratio = lesion["adc_ratio"]
    if lesion["heterogeneity"]:
        ratio = ratio * (1.0 + lesion["heterogeneity"] * mm.smooth_field(shape, spacing, 4.0, tex_rng))

    st = step_values(appearance, "mri", "shine_through") or {"t2_gain": 1.0, "adc_gain": 1.0}
    wmh = step_values(appearance, "mri", "wmh") or {"t2_gain": 1.3, "adc_gain": 1.2, "flair_gain": 2.0}  # anatomy's wmh: mid values
    rim = step_values(appearance, "mri", "cortical_rim") or {"gain": 1.0}
    g = GLIOSIS_GAINS
    t2 = ((1.0 + lesion["t2_gain"] * core) * (1.0 + (st["t2_gain"] - 1.0) * fields["shine"]) * (1.0 + (wmh["t2_gain"] - 1.0) * fields["wmh"])
          * (1.0 + g["t2"] * fields["gliosis"]) * (1.0 + (rim["gain"] - 1.0) * fields["rim"]) * (1.0 + fields["regional"]) * texture)
    adc_factor = ((1.0 - core + core * ratio) * (1.0 + (st["adc_gain"] - 1.0) * fields["shine"]) * (1.0 + (wmh["adc_gain"] - 1.0) * fields["wmh"])
                  * (1.0 + g["adc"] * fields["gliosis"]) * adc_texture)
    flair_factor = ((1.0 + lesion["flair_gain"] * core) * (1.0 + (wmh["flair_gain"] - 1.0) * fields["wmh"]) * (1.0 + g["flair"] * fields["gliosis"])
                    * (1.0 + 0.5 * (st["t2_gain"] - 1.0) * fields["shine"]) * texture)

    keep = 1 - f["lumen"]
    s_gm, s_wm, s_csf = 1.0, contrast["b0_wm"], contrast["b0_csf"]
    other = (scalp * contrast["b0_scalp"] + bone * contrast["b0_bone"])
    b0 = keep * ((gm * s_gm + wm * s_wm) * t2 + csf * s_csf + other) + f["lumen"] * S0["lumen"]
    dwi = keep * (
        gm * s_gm * t2 * np.exp(-adc_gm * adc_factor)
        + wm * s_wm * t2 * np.exp(-adc_wm * adc_factor)
        + csf * s_csf * np.exp(-adc_csf)
        + other * np.exp(-ADC_OTHER_1E3)
    ) + f["lumen"] * S0["lumen"] * np.exp(-ADC_OTHER_1E3)
    flair = keep * ((gm + wm * contrast["flair_wm"]) * flair_factor + csf * contrast["flair_csf"] + scalp * contrast["flair_scalp"]
                    + bone * FLAIR["bone"]) + f["lumen"] * FLAIR["lumen"]

    labels = {"corepenumbra": f["corepenumbra"], "clot_fraction": f["lumen_clot"], "atlas": f["atlas"]}
    head = (1.0 - f["air"] - air_cavity) >= 0.5
    brain = f["icv"] >= 0.5
    mimic = np.zeros(shape, np.uint8)
    mimic[fields["regional"] >= REGIONAL_MIMIC_GAIN] = MIMIC_CODES["regional_t2"]
    for name, key in (("wmh", "wmh"), ("cortical_rim", "rim"), ("shine_through", "shine"), ("gliosis", "gliosis"), ("old_infarct", "old_infarct")):
        mimic[fields[key] >= 0.5] = MIMIC_CODES[name]
    b0_epi, dwi_epi = b0, dwi
    epi_head, epi_brain = head, brain
    if sus is not None:
        field_hz = _to_grid(coarse["field_ppm"], grid) * mm.GAMMA_HZ_PER_T_PPM * sus["field_t"]
        axis = int(sus["pe_axis"])
        # Shift in acquired pixels, and an acquired pixel is 1/kspace_fraction grid voxels.
        acquired_px = 1.0 / value(appearance, "mri", "resolution")["kspace_fraction"]
        shift = (sus["pe_sign"] * field_hz / sus["bandwidth_hz_per_px"] * acquired_px).astype(np.float32)
        drop = mm.dropout(field_hz, spacing[2], sus["te_ms"] / 1000.0)
        b0_epi = mm.epi_shift(b0 * drop, shift, axis)
        dwi_epi = mm.epi_shift(dwi * drop, shift + np.float32(sus["eddy_shift_px"]), axis)
        labels = {k: mm.warp_nearest(v, shift, axis) for k, v in labels.items()}
        epi_head = mm.warp_nearest(head, shift, axis)
        epi_brain = mm.warp_nearest(brain, shift, axis)
        affected = ((np.abs(shift) >= 1.0) | (drop < 0.7)) & (f["parenchyma"] > 0.5)
        mimic = mm.warp_nearest(mimic, shift, axis)
        mimic[mm.warp_nearest(affected, shift, axis) & (mimic == 0)] = MIMIC_CODES["susceptibility"]
        inside = f["parenchyma"] > 0.5
        record["susceptibility"] = {"max_shift_px_in_brain": round(float(np.abs(shift[inside]).max()) if inside.any() else 0.0, 2),
                                    "brain_ml_shifted_1px": round(float((np.abs(shift) >= 1.0)[inside].sum() * grid.voxel_ml), 2),
                                    "brain_ml_dropout": round(float((drop < 0.7)[inside].sum() * grid.voxel_ml), 2)}
    mimic[labels["corepenumbra"] > 0] = 0  # mimics are what is not lesion
    resolution = value(appearance, "mri", "resolution")
    fraction = resolution["kspace_fraction"]
    b0_epi, dwi_epi, flair = (mm.kspace_truncate(v.astype(np.float32), fraction) for v in (b0_epi, dwi_epi, flair))

    bias = step_values(appearance, "mri", "bias_field")
    bias_rng = np.random.default_rng(np.random.SeedSequence([*noise_seed, 999]))
    amplitude = bias["amplitude"] if bias else 0.0
    coil_dwi = mm.bias_field(shape, amplitude, bias_rng)
    coil_flair = mm.bias_field(shape, amplitude, bias_rng)
    scale = contrast["signal_scale"] or t["mri_scale"]
    sigma = (value(appearance, "mri", "noise")["fraction"] or patient.noise["mri_fraction"]) * scale
    rng = np.random.default_rng(np.random.SeedSequence([*noise_seed, 0x40153]))
    b0_noisy = rician((b0_epi * coil_dwi * scale).astype(np.float32), sigma, rng)
    dwi_noisy = rician((dwi_epi * coil_dwi * scale).astype(np.float32), sigma, rng)
    flair_noisy = rician((flair * coil_flair * scale).astype(np.float32), sigma, rng)
    fitted = np.log(b0_noisy / np.maximum(dwi_noisy, 1e-3)) * (1000.0 / B_VALUE_S_MM2)
    adc = np.where(b0_noisy > ADC_MASK_FRACTION * scale, np.clip(fitted, 0.0, 4.0), 0.0).astype(np.float32)

    foreground = {"dwi": epi_head, "adc": epi_head, "flair": head}
    skull = step_values(appearance, "mri", "skull")
    if skull is not None:
        skull_rng = step_rng(skull)
        wobble = skull["wobble_mm"] * mm.smooth_field(shape, spacing, 12.0, skull_rng)
        mask = mm.shifted_mask(brain, skull["offset_mm"] + wobble, spacing)
        epi_mask = mm.warp_nearest(mask, shift, int(sus["pe_axis"])) if sus is not None else mask
        dwi_noisy, adc = dwi_noisy * epi_mask, adc * epi_mask
        flair_noisy = flair_noisy * mask
        foreground = {"dwi": epi_mask, "adc": epi_mask, "flair": mask}
        record["skull_stripped"] = True
    else:
        record["skull_stripped"] = False
    images = {"dwi": dwi_noisy.astype(np.float32), "adc": adc, "flair": flair_noisy.astype(np.float32)}
    # "brain": the intracranial space as the DWI shows it (after the EPI shift), the truth a brain mask is scored against
    truth = {**labels, "mimics": mimic, "foreground": foreground, "brain": epi_brain, "record": record}
    record["mimic_volumes_ml"] = {name: round(float((mimic == code).sum() * grid.voxel_ml), 2) for name, code in MIMIC_CODES.items()}
    return images, truth


#: The susceptibility field is computed on a coarse grid holding the whole head (a field of view
#: that cuts the head would act as an open cylinder and bend the field across the brain).
FIELD_GRID = Grid((64, 64, 64), (4.0, 4.0, 4.0))


def _head_field(patient: Patient, sus: dict) -> dict:
    """ΔB/B0 (ppm, after the shim) of the whole head's air, bone and skull-base air spaces, and those
    air spaces, on :data:`FIELD_GRID`."""
    from scipy import ndimage

    from strokelabel.phantom import mimics as mm

    coarse = FIELD_GRID
    r = render_chunk(patient, coarse, slice(0, coarse.shape[2]))
    if "skull_base_air" in r:
        cavity = r["skull_base_air"]
    else:
        cavity = mm.skull_base_air(r["head_mm"], r["parenchyma"], r["icv"], sus["cavity_scale"], coarse.edge_mm,
                                   getattr(patient.anatomy, "brain_axes_mm", None))
        # A bony wall (one coarse voxel, 4 mm) between the air spaces and the intracranial space.
        cavity = cavity * ~ndimage.binary_dilation(r["icv"] > 0.05)
    # The air around the head is left out: in a real head it lies 3-4 cm below the basal brain
    # and its smooth field is shimmed away; the ellipsoid head's thin scalp would bring it to
    # 15 mm and drop out a tenth of the brain (measured, 1.5 and 3 T). The skull-base air spaces
    # and bone make the field.
    chi = mm.CHI_AIR_PPM * cavity + mm.CHI_BONE_PPM * r["bone"] * (1 - cavity)
    field = mm.susceptibility_field_ppm(chi, coarse.spacing_mm, air_above=False)
    return {"field_ppm": _shimmed(field, r["parenchyma"] > 0.5), "cavity": cavity}


def _to_grid(volume: np.ndarray, grid: Grid, source: Grid = FIELD_GRID) -> np.ndarray:
    """A volume of ``source`` (world origin at its middle, as every Grid) sampled on ``grid`` (linear)."""
    from scipy import ndimage

    axes = [(grid.affine[i, i] * np.arange(n) + grid.affine[i, 3] - source.affine[i, 3]) / source.affine[i, i] for i, n in enumerate(grid.shape)]
    index = np.meshgrid(*[a.astype(np.float32) for a in axes], indexing="ij")
    return ndimage.map_coordinates(volume, index, order=1, mode="nearest").astype(np.float32)


def _shimmed(field: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The field after the scanner's shim over the brain: offset, linear and second-order terms fitted
    by least squares, leaving out the worst voxels (a shim box that spares the sinuses)."""
    if brain.sum() < 20:
        return field
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in field.shape], indexing="ij")
    x, y, z = grids
    terms = [np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z]
    design = np.stack([t[brain] for t in terms], axis=1)
    values = field[brain].astype(np.float64)
    use = np.ones(len(values), bool)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[use], values[use], rcond=None)
        residual = values - design @ coef
        use = np.abs(residual) < 2.0 * residual[use].std()
    return (field - sum(c * t for c, t in zip(coef, terms))).astype(np.float32)
