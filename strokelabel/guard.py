"""The physiology guard: does a model's answer agree with the physics of the same study?

A learned model can be confidently wrong on a scan unlike its training data (on real scans the
first models labelled the cortical rim as lesion and 2.5 x the hypoperfusion). Every answer is
therefore compared with what the study's own physiology shows, and ``auto`` serves the model only
when the two agree within stated limits; otherwise it serves the physiological rule and says why.

What "the physics" is, per task (each a measurement on the same study, never a second model):

- **core/penumbra** (CT perfusion): the accepted definitions on the study's maps, hypoperfusion =
  Tmax > 6 s and core = rCBF < 30 % of the healthy side (the baseline's label). The model's
  hypoperfused volume and its core are compared with them (volume ratio, Dice).
- **ischemic lesion on CTP**: the core definition, as above.
- **ischemic lesion on MRI**: an acute lesion is DWI-hyperintense, brighter than the same place in
  the other hemisphere, and not CSF or T2 shine-through (ADC not high). *Support* is the share of
  the model's lesion that shows that evidence (one voxel of tolerance at the border); *coverage*
  is the share of the unmistakable lesion (ADC < 620 x 10^-6 mm²/s and DWI hyperintense, the
  baseline) that the model labels.
- **clot** (CTA): a clot is an unenhanced filling defect in an artery: inside the head, beside
  an enhancing artery, not itself enhancing. *Support* is the share of the model's clot voxels
  where this holds.

The limits (``LIMITS``) were chosen on phantoms only and frozen before any real case was scored:
see the note above ``LIMITS`` for the data and the reason of each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from strokelabel.baselines.masks import full_connectivity


@dataclass
class Verdict:
    """The guard's answer for one result: what was compared, the figures, the limits, pass or not, why."""

    check: str
    figures: dict
    limits: dict
    passed: bool
    reason: str
    notes: list = field(default_factory=list)

    def as_json(self) -> dict:
        out = {"check": self.check, "passed": bool(self.passed), "reason": self.reason, "figures": self.figures, "limits": self.limits}
        if self.notes:
            out["notes"] = list(self.notes)
        return out


# ---- the limits ------------------------------------------------------------------------------
# Chosen on phantoms only (held-out seeds of both phantom families, never a real case), from the
# distributions printed by scripts/calibrate_guard.py, and frozen before the real cases were scored.
LIMITS = {
    "core_penumbra": {
        # hypoperfusion: the model's volume within this factor of Tmax > 6 s, and overlapping it
        "hypo_volume_ratio_max": 1.25,
        "hypo_dice_min": 0.7,
        # below this physics volume (mL) a volume ratio means little: only the absolute difference counts
        "small_volume_ml": 10.0,
        "small_volume_abs_diff_ml": 10.0,
        # core: the model's core differs from rCBF < 30 % by at most max(abs, rel x physics core)
        "core_abs_diff_ml": 10.0,
        "core_rel_diff": 0.5,
    },
    "lesion_ctp": {"core_abs_diff_ml": 10.0, "core_rel_diff": 0.5},
    "lesion_mri": {
        "support_min": 0.5,
        "coverage_min": 0.5,
        # coverage is judged only when the unmistakable lesion is at least this large (mL)
        "coverage_from_ml": 1.0,
    },
    "clot": {"support_min": 0.5},
}

# Per-voxel physics of an acute DWI lesion (lesion_mri): robust z of DWI over the brain, DWI over
# the smoothed DWI at the mirror point, ADC ceiling (10^-3 mm²/s) above which a voxel is CSF or
# shine-through.
MRI_EVIDENCE = {"dwi_z_min": 1.5, "mirror_ratio_min": 1.1, "adc_max_1e3": 1.3, "mirror_radius_mm": 3.0}
# Clot physics: arteries enhance above this on CTA phase 1 (HU); a clot is within this distance of
# one (mm), below this HU itself, and within this distance of the brain (mm: M1/ICA lie outside the parenchyma).
CLOT_EVIDENCE = {"artery_hu_min": 150.0, "near_artery_mm": 4.0, "clot_hu_max": 140.0, "near_brain_mm": 15.0}


def _volume_ml(mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    return float(np.count_nonzero(mask) * np.prod(spacing_mm) / 1000.0)


def _dice(a: np.ndarray, b: np.ndarray) -> float | None:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return None if total == 0 else float(2 * np.count_nonzero(a & b) / total)


def _grown(mask: np.ndarray) -> np.ndarray:
    """``mask`` and its 26-neighbours: one voxel of tolerance at a border."""
    return ndimage.binary_dilation(mask, structure=full_connectivity(mask.ndim)) if mask.any() else mask


def _round(x, digits=3):
    return None if x is None else round(float(x), digits)


def volume_agreement(model: np.ndarray, physics: np.ndarray, spacing_mm, abs_ml: float, rel: float) -> tuple[bool, dict]:
    """Model and physics volumes agree when they differ by at most max(``abs_ml``, ``rel`` x physics)."""
    v_model, v_phys = _volume_ml(model, spacing_mm), _volume_ml(physics, spacing_mm)
    allowed = max(abs_ml, rel * v_phys)
    return abs(v_model - v_phys) <= allowed, {"model_ml": _round(v_model, 2), "physics_ml": _round(v_phys, 2),
                                                "dice": _round(_dice(model, physics)), "allowed_diff_ml": _round(allowed, 2)}


def core_penumbra_verdict(label: np.ndarray, physics_label: np.ndarray, spacing_mm, limits: dict | None = None) -> Verdict:
    """A core (1) / penumbra (2) label against the baseline's (Tmax > 6 s, rCBF < 30 %) on the same brain."""
    lim = {**LIMITS["core_penumbra"], **(limits or {})}
    model_hypo, phys_hypo = label > 0, physics_label > 0
    v_model, v_phys = _volume_ml(model_hypo, spacing_mm), _volume_ml(phys_hypo, spacing_mm)
    hypo_dice = _dice(model_hypo, phys_hypo)
    if v_phys < lim["small_volume_ml"]:
        hypo_ok = abs(v_model - v_phys) <= lim["small_volume_abs_diff_ml"]
        hypo_why = f"hypoperfusion {v_model:.1f} mL vs Tmax > 6 s {v_phys:.1f} mL (allowed difference {lim['small_volume_abs_diff_ml']:g} mL)"
    else:
        ratio = v_model / v_phys
        hypo_ok = 1 / lim["hypo_volume_ratio_max"] <= ratio <= lim["hypo_volume_ratio_max"] and (hypo_dice or 0) >= lim["hypo_dice_min"]
        hypo_why = (f"hypoperfusion {v_model:.1f} mL is {ratio:.2f} x the Tmax > 6 s volume {v_phys:.1f} mL (Dice {hypo_dice:.2f}; "
                    f"allowed ratio 1/{lim['hypo_volume_ratio_max']:g}-{lim['hypo_volume_ratio_max']:g}, Dice >= {lim['hypo_dice_min']:g})")
    core_ok, core = volume_agreement(label == 1, physics_label == 1, spacing_mm, lim["core_abs_diff_ml"], lim["core_rel_diff"])
    core_why = f"core {core['model_ml']} mL vs rCBF < 30 % {core['physics_ml']} mL (allowed difference {core['allowed_diff_ml']} mL)"
    figures = {"hypoperfusion_model_ml": _round(v_model, 2), "hypoperfusion_tmax6_ml": _round(v_phys, 2),
               "hypoperfusion_ratio": _round(v_model / v_phys) if v_phys > 0 else None, "hypoperfusion_dice": _round(hypo_dice),
               "core_model_ml": core["model_ml"], "core_rcbf30_ml": core["physics_ml"], "core_dice": core["dice"]}
    failed = [why for ok, why in ((hypo_ok, hypo_why), (core_ok, core_why)) if not ok]
    return Verdict(
        check="model against the physiological definitions on the same maps: hypoperfusion = Tmax > 6 s, core = rCBF < 30 %",
        figures=figures, limits=lim, passed=not failed,
        reason="; ".join(failed) if failed else f"agrees: {hypo_why}; {core_why}",
    )


def lesion_ctp_verdict(label: np.ndarray, physics_label: np.ndarray, spacing_mm, limits: dict | None = None) -> Verdict:
    """A CTP lesion (the core) against rCBF < 30 % of the healthy side on the same maps."""
    lim = {**LIMITS["lesion_ctp"], **(limits or {})}
    ok, core = volume_agreement(label > 0, physics_label > 0, spacing_mm, lim["core_abs_diff_ml"], lim["core_rel_diff"])
    why = f"lesion {core['model_ml']} mL vs rCBF < 30 % {core['physics_ml']} mL (allowed difference {core['allowed_diff_ml']} mL)"
    return Verdict(check="model against the core definition on the same maps: rCBF < 30 %",
                   figures={"lesion_model_ml": core["model_ml"], "lesion_rcbf30_ml": core["physics_ml"], "dice": core["dice"]},
                   limits=lim, passed=ok, reason=("agrees: " if ok else "") + why)


def mri_lesion_evidence(dwi: np.ndarray, adc_1e3: np.ndarray | None, brain: np.ndarray, mirror_dwi: np.ndarray | None) -> np.ndarray:
    """Voxels that look like acute ischemia on DWI/ADC (module docstring), as a bool mask.

    ``mirror_dwi`` is :func:`mirror_reference` of the DWI, or None to skip the asymmetry test; without ADC the CSF/shine-through test is skipped."""
    e = MRI_EVIDENCE
    dwi = np.asarray(dwi, dtype=np.float32)
    values = dwi[brain]
    median = float(np.median(values))
    robust_sd = 1.4826 * float(np.median(np.abs(values - median))) or 1.0
    evidence = brain & (dwi > median + e["dwi_z_min"] * robust_sd)
    if mirror_dwi is not None:
        evidence &= dwi > e["mirror_ratio_min"] * np.asarray(mirror_dwi)
    if adc_1e3 is not None:
        adc = np.asarray(adc_1e3)
        evidence &= (adc > 0) & (adc < e["adc_max_1e3"])
    return evidence


def mirror_reference(values: np.ndarray, spacing_mm, radius_mm: float = MRI_EVIDENCE["mirror_radius_mm"]) -> np.ndarray:
    """What the other hemisphere shows around each voxel's mirror point: the brightest value within
    ``radius_mm`` of it (after 1 mm smoothing against noise), reflected about the head's mid-sagittal
    plane (found from the image itself).

    The neighbourhood maximum, not a mean: a thin bright structure present on both sides (the
    cortical rim, the choroid plexus) is as bright as its mirror's brightest neighbour and so is no
    evidence, whatever the residual misregistration of the two hemispheres; a lesion on one side is
    brighter than anything near its mirror point."""
    from strokelabel.midsagittal import find_midsagittal_plane, mirror_about_plane

    values = np.asarray(values, dtype=np.float32)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    plane = find_midsagittal_plane(values, spacing_mm)
    smooth = ndimage.gaussian_filter(values, 1.0 / spacing)
    size = tuple(2 * int(np.ceil(radius_mm / s)) + 1 for s in spacing)
    return mirror_about_plane(ndimage.maximum_filter(smooth, size=size), plane)


def lesion_mri_verdict(label: np.ndarray, evidence: np.ndarray, unmistakable: np.ndarray, spacing_mm, limits: dict | None = None) -> Verdict:
    """An MRI lesion against the DWI/ADC evidence (support) and the unmistakable lesion (coverage)."""
    lim = {**LIMITS["lesion_mri"], **(limits or {})}
    lesion = np.asarray(label) > 0
    unmistakable = np.asarray(unmistakable, bool)
    v_lesion, v_sure = _volume_ml(lesion, spacing_mm), _volume_ml(unmistakable, spacing_mm)
    support = float(np.count_nonzero(lesion & _grown(evidence)) / np.count_nonzero(lesion)) if lesion.any() else None
    coverage = float(np.count_nonzero(unmistakable & _grown(lesion)) / np.count_nonzero(unmistakable)) if unmistakable.any() else None
    failed = []
    if support is not None and support < lim["support_min"]:
        failed.append(f"only {support:.0%} of the {v_lesion:.1f} mL lesion is DWI-bright, brighter than the other hemisphere and not "
                      f"CSF (limit {lim['support_min']:.0%})")
    if v_sure >= lim["coverage_from_ml"] and (coverage or 0) < lim["coverage_min"]:
        failed.append(f"the model labels {coverage or 0:.0%} of the {v_sure:.1f} mL with ADC < 620e-6 mm2/s and bright DWI "
                      f"(limit {lim['coverage_min']:.0%})")
    figures = {"lesion_model_ml": _round(v_lesion, 2), "support": _round(support), "unmistakable_ml": _round(v_sure, 2),
               "coverage": _round(coverage), "evidence_ml": _round(_volume_ml(evidence, spacing_mm), 2)}
    agree = f"{support if support is not None else 1:.0%} of the lesion shows diffusion restriction" + (
        f", it covers {coverage:.0%} of the unmistakable lesion" if coverage is not None else "")
    return Verdict(check="model against DWI/ADC: lesion voxels DWI-bright, brighter than the mirror side, ADC not high; "
                         "and the unmistakable lesion (ADC < 620e-6 mm2/s, DWI bright) labelled",
                   figures=figures, limits=lim, passed=not failed, reason="; ".join(failed) if failed else f"agrees: {agree}")


def clot_evidence(cta1_hu: np.ndarray, brain: np.ndarray, spacing_mm) -> np.ndarray:
    """Voxels where a clot could be (module docstring): near an enhancing artery, unenhanced, near the brain."""
    e = CLOT_EVIDENCE
    cta = np.asarray(cta1_hu, dtype=np.float32)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    near_brain = ndimage.distance_transform_edt(~np.asarray(brain, bool), sampling=spacing) <= e["near_brain_mm"]
    artery = near_brain & (cta >= e["artery_hu_min"])
    if not artery.any():
        return np.zeros(cta.shape, bool)
    near_artery = ndimage.distance_transform_edt(~artery, sampling=spacing) <= e["near_artery_mm"]
    return near_brain & near_artery & (cta < e["clot_hu_max"]) & (cta > 0)


def clot_verdict(label: np.ndarray, evidence: np.ndarray, spacing_mm, limits: dict | None = None) -> Verdict:
    lim = {**LIMITS["clot"], **(limits or {})}
    clot = np.asarray(label) > 0
    support = float(np.count_nonzero(clot & _grown(evidence)) / np.count_nonzero(clot)) if clot.any() else None
    ok = support is None or support >= lim["support_min"]
    figures = {"clot_model_ml": _round(_volume_ml(clot, spacing_mm), 4), "support": _round(support)}
    if support is None:
        why = "the model finds no clot"
    else:
        why = (f"{support:.0%} of the clot lies beside an enhancing artery, unenhanced, near the brain"
               + ("" if ok else f" (limit {lim['support_min']:.0%})"))
    return Verdict(check="model against the vessel anatomy of CTA phase 1: a clot is an unenhanced defect beside an enhancing artery",
                   figures=figures, limits=lim, passed=ok, reason=("agrees: " if ok else "") + why)
