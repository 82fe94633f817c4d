"""CT perfusion: the 4D series simulated by indicator dilution from the true tissue state, with
noise, and the maps derived from that noisy series by deconvolution (never painted).

Voxel HU(t) = pre-contrast HU (tissue mix, lumen blood/clot, early ischemic hypodensity)
            + (1 − lumen) · CBF · h(t − Tmax; MTT)      tissue, eq. 1 of strokelabel.perfusion
            + artery · amplitude · AIF(t − delay)          lumen; late and weak beyond the clot
            + vein · VOF(t)                                dural sinuses
            + Gaussian noise
where h is the tissue curve per unit CBF, tabulated over MTT (the exponential residue).

The maps of a ``random`` appearance come from :func:`vendor_maps` (the vendor's deconvolution
settings, mask, calibration, smoothing and Tmax steps); the series physics is the same.
"""

from __future__ import annotations

import numpy as np

from strokelabel import perfusion
from strokelabel.phantom.geometry import Grid
from strokelabel.phantom.patient import Patient
from strokelabel.phantom.render import render_chunk

MTT_GRID_S = np.geomspace(1.0, 60.0, 120)
FINE_DT_S = 0.1
# Venous outflow: the AIF dispersed (exponential kernel) and delayed.
VENOUS_DISPERSION_S = 3.0
VENOUS_DELAY_S = 3.0
VENOUS_PEAK_FRACTION = 0.85


class CurveTable:
    """Tissue enhancement per unit CBF, h(t; MTT), on a fine time grid, for one bolus.

    The defaults are the generator's model (exponential residue, the arterial curve reaching
    the tissue undispersed, a venous curve of fixed height). The evaluation families
    (:mod:`strokelabel.phantom.ctp_families`) vary it: ``residue_kind`` (see
    :data:`strokelabel.perfusion.RESIDUES`), ``dispersion_s`` (the arterial curve reaching the
    tissue convolved with a unit-area exponential kernel of that time constant, as a long
    collateral path disperses it) and ``vof_area_matched`` (the venous curve scaled to the
    arterial curve's area, as mass conservation has it, instead of to a fixed height).
    """

    def __init__(self, aif_args: dict, t_end_s: float, residue_kind: str = "exponential", dispersion_s: float = 0.0,
                 vof_area_matched: bool = False):
        self.t_fine = np.arange(0.0, t_end_s + 2.0, FINE_DT_S)
        self.aif_fine = perfusion.arterial_input_hu(self.t_fine, **aif_args)
        self.aif_args = aif_args
        self.residue_kind = residue_kind
        self.dispersion_s = float(dispersion_s)
        reaching = self.aif_fine
        if dispersion_s > 0:
            reaching = np.convolve(self.aif_fine, dispersion_kernel(self.t_fine, dispersion_s))[: self.t_fine.size]
        self.table = perfusion.tissue_curve_hu(self.t_fine, reaching, FINE_DT_S, 1.0, MTT_GRID_S, 0.0, residue_kind)
        kernel = np.exp(-self.t_fine / VENOUS_DISPERSION_S)
        vof = np.convolve(self.aif_fine, kernel)[: self.t_fine.size]
        vof = perfusion.sample_uniform(vof, FINE_DT_S, self.t_fine - VENOUS_DELAY_S)
        if vof.max() <= 0:  # no bolus at all (a failed injection)
            self.vof_fine = np.zeros_like(vof)
        elif vof_area_matched:
            self.vof_fine = vof / vof.sum() * self.aif_fine.sum()
        else:
            self.vof_fine = vof / vof.max() * VENOUS_PEAK_FRACTION * self.aif_fine.max()

    def effective_residue_peak(self, mtt_s) -> tuple[np.ndarray, np.ndarray]:
        """(time s, height) of the maximum of the residue the tissue shows, R ⊛ dispersion kernel,
        per voxel MTT: (0, 1) without dispersion (every residue here falls from R(0) = 1). A perfect
        deconvolution with the measured AIF finds Tmax = delay + that time and CBF · that height."""
        mtt = np.asarray(mtt_s, dtype=np.float64)
        if self.dispersion_s <= 0:
            return np.zeros(mtt.shape), np.ones(mtt.shape)
        r = perfusion.residue(self.t_fine[None, :], MTT_GRID_S[:, None], self.residue_kind)
        seen = np.stack([np.convolve(row, dispersion_kernel(self.t_fine, self.dispersion_s))[: self.t_fine.size] for row in r])
        x = np.log(np.clip(mtt, MTT_GRID_S[0], MTT_GRID_S[-1]))
        peak_t = np.interp(x, np.log(MTT_GRID_S), self.t_fine[np.argmax(seen, axis=1)])
        peak_h = np.interp(x, np.log(MTT_GRID_S), seen.max(axis=1))
        return peak_t, peak_h

    def tissue(self, cbf, mtt_s, delay_s, t_s) -> np.ndarray:
        """CBF · h(t − delay; MTT) for N voxels at times t: (N, T), bilinear in (log MTT, t)."""
        x = np.interp(np.log(np.clip(mtt_s, MTT_GRID_S[0], MTT_GRID_S[-1])), np.log(MTT_GRID_S), np.arange(MTT_GRID_S.size))
        i0 = np.minimum(np.floor(x).astype(np.int64), MTT_GRID_S.size - 2)[:, None]
        wi = (x[:, None] - i0).astype(np.float32)
        tt = np.clip((np.asarray(t_s)[None, :] - np.asarray(delay_s)[:, None]) / FINE_DT_S, 0.0, self.t_fine.size - 1)
        j0 = np.minimum(np.floor(tt).astype(np.int64), self.t_fine.size - 2)
        wj = (tt - j0).astype(np.float32)
        table = self.table.astype(np.float32)
        at = lambda i: table[i, j0] * (1 - wj) + table[i, j0 + 1] * wj  # noqa: E731
        return np.asarray(cbf, dtype=np.float32)[:, None] * (at(i0) * (1 - wi) + at(i0 + 1) * wi)

    def artery(self, delay_s, t_s) -> np.ndarray:
        return perfusion.arterial_input_hu(np.asarray(t_s)[None, :] - np.asarray(delay_s)[:, None], **self.aif_args)

    def vein(self, t_s) -> np.ndarray:
        return perfusion.sample_uniform(self.vof_fine, FINE_DT_S, np.asarray(t_s))


def dispersion_kernel(t_s, time_constant_s: float) -> np.ndarray:
    """Unit-area exponential dispersion kernel exp(−t/τ)/τ · dt on the uniform fine grid ``t_s``."""
    kernel = np.exp(-np.asarray(t_s, dtype=np.float64) / time_constant_s)
    return kernel / kernel.sum()


def precontrast_hu(r: dict, patient: Patient) -> np.ndarray:
    """Non-contrast HU of each voxel: tissue mix, blood and clot in the lumen, early ischemic hypodensity."""
    t = patient.tissue
    lumen = r["lumen_artery"] + r["lumen_vein"] + r["lumen_clot"]
    hypodense = t["core_hypodensity_hu"] * r["parenchyma"] * np.clip((0.35 - r["rcbf"]) / 0.1, 0.0, 1.0)
    tissue = (
        r["air"] * -1000.0
        + r["scalp"] * t["hu_soft"]
        + r["bone"] * t["hu_bone"]
        + r["csf"] * t["hu_csf"]
        + r["gm"] * t["hu_gm"]
        + r["wm"] * t["hu_wm"]
        - hypodense
    )
    return (1 - lumen) * tissue + (r["lumen_artery"] + r["lumen_vein"]) * t["hu_blood"] + r["lumen_clot"] * t["hu_clot"]


def enhancement_hu(r: dict, curves: CurveTable, t_s) -> np.ndarray:
    """Contrast enhancement (ΔHU) of every voxel of a chunk at times ``t_s``: (X, Y, nz, T)."""
    t_s = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
    lumen = r["lumen_artery"] + r["lumen_vein"] + r["lumen_clot"]
    out = np.zeros(r["cbf"].shape + (t_s.size,), np.float32)
    tissue = r["cbf"] > 0
    if tissue.any():
        out[tissue] = curves.tissue(r["cbf"][tissue] * (1 - lumen[tissue]), r["mtt"][tissue], r["tmax"][tissue], t_s)
    artery = r["lumen_artery"] > 0
    if artery.any():
        out[artery] += (r["lumen_artery"][artery] * r["lumen_amplitude"][artery])[:, None] * curves.artery(r["lumen_delay_s"][artery], t_s)
    vein = r["lumen_vein"] > 0
    if vein.any():
        out[vein] += r["lumen_vein"][vein][:, None] * curves.vein(t_s)[None, :]
    return out


def pial_veins(grid: Grid, values: dict | None) -> np.ndarray | None:
    """Where the network of small cortical veins runs (random appearance step ``pial_vessels``):
    the zero set of a smooth random field (curvy lines ``width`` standard deviations wide), to be
    weighted by each voxel's CSF. Returns the line weight (0..1) on the grid, or None."""
    if values is None:
        return None
    from strokelabel.phantom import mimics as mm
    from strokelabel.phantom.appearance import step_rng

    field = mm.smooth_field(grid.shape, grid.spacing_mm, values["spacing_mm"], step_rng(values))
    return (values["fraction"] * np.exp(-0.5 * (field / values["width"]) ** 2)).astype(np.float32)


def add_pial_veins(r: dict, lines: np.ndarray | None, zs: slice) -> dict:
    """A chunk's render with the pial veins in its subarachnoid and sulcal CSF (venous lumen)."""
    if lines is None:
        return r
    lumen = r["lumen_artery"] + r["lumen_vein"] + r["lumen_clot"]
    extra = lines[:, :, zs] * np.clip(r["csf"], 0.0, 1.0) * (r["icv"] >= 0.5)
    return {**r, "lumen_vein": r["lumen_vein"] + np.minimum(extra, np.clip(1.0 - lumen, 0.0, 1.0))}


def simulate_ctp(patient: Patient, grid: Grid, pieces, noise_seed, noise_hu: float | None = None, pial: dict | None = None) -> tuple[dict, dict]:
    """The int16 4D series and the true labels of one CT perfusion study.

    ``noise_hu``: the frames' noise (default: the patient's); ``pial``: the ``pial_vessels``
    step's values (default: none). Returns ({"ctp": (X, Y, Z, T) int16, "times_s": (T,)}, truth arrays).
    """
    dt, n_frames = patient.ctp_protocol["dt_s"], patient.ctp_protocol["n_frames"]
    times = np.arange(n_frames) * dt
    curves = CurveTable(patient.aif_ctp, times[-1])
    series = np.zeros(grid.shape + (n_frames,), np.int16)
    truth = _truth_arrays(grid)
    sigma = patient.noise["ctp_hu"] if noise_hu is None else noise_hu
    lines = pial_veins(grid, pial)
    for index, zs in enumerate(grid.chunks()):
        rng = np.random.default_rng(np.random.SeedSequence([*noise_seed, index]))
        r = add_pial_veins(render_chunk(patient, grid, zs, pieces), lines, zs)
        hu = precontrast_hu(r, patient)[..., None] + enhancement_hu(r, curves, times)
        hu += sigma * rng.standard_normal(hu.shape, dtype=np.float32)
        series[:, :, zs] = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
        _fill_truth(truth, r, zs)
    return {"ctp": series, "times_s": times}, truth


def derive_maps(series: np.ndarray, dt_s: float, spacing_mm) -> dict[str, np.ndarray]:
    """CBF, CBV, MTT, Tmax, TTP (float32) and MIP, NCCT (int16 HU) from the noisy series."""
    maps = perfusion.perfusion_maps(series, dt_s, spacing_mm=spacing_mm)
    out = {k: maps[k].astype(np.float32, copy=False) for k in ("cbf", "cbv", "mtt", "tmax", "ttp")}
    out["mip"] = maps["mip"].astype(np.int16)
    out["ncct"] = np.rint(maps["ncct"]).astype(np.int16)
    out["aif_hu"] = maps["aif"]
    out["n_baseline"] = maps["n_baseline"]
    out["mask"] = maps["mask"]
    return out


def vendor_maps(series: np.ndarray, dt_s: float, grid: Grid, icv: np.ndarray, appearance: dict) -> dict[str, np.ndarray]:
    """Maps as a vendor's software gives them (random appearance, chain ``CTP_CHAIN``): its own
    deconvolution settings, run over its brain mask (the intracranial space, CSF and, unless
    removed, vessels included: bright vessels on CBF and CBV), calibrated, smoothed, Tmax
    quantised and capped; 0 outside the mask, which ``mask`` returns.
    """
    from strokelabel.phantom import mimics as mm
    from strokelabel.phantom.appearance import step_rng, step_values, value

    dec = value(appearance, "ctp", "deconvolution")
    vendor = step_values(appearance, "ctp", "vendor_mask")
    mask = icv >= 0.5
    keep_vessels = True
    if vendor is not None:
        wobble = 1.0 * mm.smooth_field(grid.shape, grid.spacing_mm, 10.0, step_rng(vendor))
        mask = mm.shifted_mask(mask, vendor["offset_mm"] + wobble, grid.spacing_mm)
        keep_vessels = bool(vendor["keep_vessels"])
    settings = dict(threshold=dec["svd_threshold"], oscillation_limit=perfusion.OSVD_OSCILLATION_INDEX if dec["oscillation"] else None)
    maps = perfusion.perfusion_maps(series, dt_s, spacing_mm=grid.spacing_mm, mask=mask, smooth_mm=dec["smooth_mm"], **settings)
    out = {k: maps[k].astype(np.float32, copy=False) for k in ("cbf", "cbv", "mtt", "tmax", "ttp")}
    if keep_vessels:
        # Vessels (peak enhancement > 100 HU) deconvolved unsmoothed, as vendors keep them sharp:
        # bright on CBF and CBV, without the halo a smoothing across them would spread.
        vessels = mask & ((series.max(axis=-1).astype(np.float32) - maps["ncct"]) > 100.0)
        if vessels.any():
            sharp = perfusion.perfusion_maps(series, dt_s, spacing_mm=grid.spacing_mm, mask=vessels, aif_hu=maps["aif"],
                                             n_baseline=maps["n_baseline"], smooth_mm=0.0, vessel_threshold_hu=np.inf, **settings)
            for k in out:
                out[k] = np.where(vessels, sharp[k], out[k]).astype(np.float32)
    factor = value(appearance, "ctp", "vendor_scale")["factor"]
    out["cbf"] *= np.float32(factor)
    out["cbv"] *= np.float32(factor)
    sigma = value(appearance, "ctp", "vendor_smoothing")["sigma_mm"]
    if sigma > 0:
        for k in ("cbf", "cbv", "mtt", "tmax", "ttp"):
            out[k] = perfusion.smooth_in_plane(out[k], mask, sigma, grid.spacing_mm).astype(np.float32)
    q = value(appearance, "ctp", "tmax_quantisation")
    if q["cap_s"]:
        out["tmax"] = np.minimum(out["tmax"], np.float32(q["cap_s"]))
    if q["step_s"]:
        out["tmax"] = (np.round(out["tmax"] / q["step_s"]) * q["step_s"]).astype(np.float32)
    out["mip"] = maps["mip"].astype(np.int16)
    out["ncct"] = np.rint(maps["ncct"]).astype(np.int16)
    out["aif_hu"] = maps["aif"]
    out["n_baseline"] = maps["n_baseline"]
    out["mask"] = mask
    return out


def _truth_arrays(grid: Grid) -> dict:
    return {
        "corepenumbra": np.zeros(grid.shape, np.uint8),
        "clot_fraction": np.zeros(grid.shape, np.float32),
        "atlas": np.zeros(grid.shape, np.uint8),
        "parenchyma": np.zeros(grid.shape, np.float32),
        "icv": np.zeros(grid.shape, np.float32),
        "head": np.zeros(grid.shape, bool),
    }


def _fill_truth(truth: dict, r: dict, zs: slice) -> None:
    truth["corepenumbra"][:, :, zs] = r["corepenumbra"]
    truth["clot_fraction"][:, :, zs] = r["lumen_clot"]
    truth["atlas"][:, :, zs] = r["atlas"]
    truth["parenchyma"][:, :, zs] = r["parenchyma"]
    truth["icv"][:, :, zs] = r["icv"]
    truth["head"][:, :, zs] = r["air"] <= 0.5
