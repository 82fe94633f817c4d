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
  baseline) that the model labels. A lesion *outside the brain* (the study's brain mask, from the
  brain-extraction model on a study with its skull) is no stroke, and a lesion volume far beyond
  the study's whole DWI/ADC *evidence* is more than the images show.
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
from strokelabel.boxes import bounding_box, grow_box, margin_voxels, paste, within


@dataclass
class Verdict:
    """The guard's answer for one result: what was compared, the figures, the limits, pass or not, why."""

    check: str
    figures: dict
    limits: dict
    passed: bool
    reason: str
    kind: str = ""  # the key of CHECKS
    notes: list = field(default_factory=list)

    def as_json(self) -> dict:
        out = {"check": self.check, "kind": self.kind, "passed": bool(self.passed), "reason": self.reason, "figures": self.figures,
               "limits": self.limits}
        if self.notes:
            out["notes"] = list(self.notes)
        return out


# ---- the limits ------------------------------------------------------------------------------
# Chosen on phantoms only (scripts/calibrate_guard.py --per-kind 6, seed 9100: held-out studies of
# both phantom families, ellipsoid fixed / ellipsoid random / template random, never a real case),
# and frozen (2026-12-03) before the real cases were scored. The rule: the candidate with the best
# worst-set "auto Dice - baseline Dice" and, among those, the largest share served; ties go to the
# stricter limit. Each entry says what its table showed.
LIMITS = {
    "core_penumbra": {
        # hypoperfusion: the model's volume within this factor of Tmax > 6 s, and overlapping it.
        # 1.4 / 0.7: served 78 % (was 67 % at 1.25), passes the truth itself on 78 % (56 %), auto -
        # baseline +0.009 / +0.035 / +0.064 on the three sets; the model's failures (4.2 x Tmax > 6 s
        # on a 5 mL deficit, Dice 0.24) stay out.
        "hypo_volume_ratio_max": 1.4,
        "hypo_dice_min": 0.7,
        # below this physics volume (mL) a volume ratio means little: only the absolute difference counts
        "small_volume_ml": 10.0,
        "small_volume_abs_diff_ml": 10.0,
        # core: the model's core differs from rCBF < 30 % by at most max(abs, rel x physics core);
        # rel 0.5 failed the phantom truth on large cores (truth 118 mL vs rCBF < 30 % 63 mL), 1.0 does not.
        "core_abs_diff_ml": 10.0,
        "core_rel_diff": 1.0,
    },
    # every candidate leaves auto 0.09 below the baseline on the ellipsoid-fixed set (the model's
    # lesions pass the volume check and still miss): see NOT_SERVED_BY_AUTO; the figures are still
    # reported, at the first setting.
    "lesion_ctp": {"core_abs_diff_ml": 10.0, "core_rel_diff": 0.5},
    "lesion_mri": {
        # every candidate: auto - baseline +0.16 / +0.24 / +0.08 (worst set the same); coverage 0.3
        # serves 97 % (94 % at 0.5); support 0.7 is the strictest at that share (passes the truth on 94 %).
        "support_min": 0.7,
        "coverage_min": 0.3,
        # coverage is judged only when the unmistakable lesion is at least this large (mL)
        "coverage_from_ml": 1.0,
        # Issue 21, frozen 2026-12-07 before any real case was scored: scripts/calibrate_guard.py --tasks
        # ischemic_lesion --kinds mri --no-isles22 --sets ellipsoid-random,template-random,template-skull-epi
        # --per-kind 3 --seed 9100 (9 studies; the skull-on EPI set runs deepbet). The model beat the
        # baseline on all 9, so every candidate serves 100 % (auto - baseline +0.18 / +0.16 / +0.11):
        # the phantoms cannot tell the candidates apart, and the tie rule takes the stricter one that
        # passes the truth as often as any. outside_brain_max: 0.02 passes the truth on 78 % (a true
        # lesion in an EPI signal void lies outside the brain mask), 0.05 on 89 % like 0.1 and 0.2;
        # evidence_volume_factor_max: 1.5 to 5 (and off) are tied, 1.5 taken. volume_check_from_ml not swept.
        "outside_brain_max": 0.05,
        "evidence_volume_factor_max": 1.5,
        "volume_check_from_ml": 2.0,
    },
    # 0.3: served 94 % (78 % at 0.5) with auto - baseline +0.41 / +0.18 on the ellipsoid sets; on the
    # template set auto loses 0.25 at every candidate (the model's wrong clots sit beside arteries,
    # support 1.0): this check cannot catch them, and docs/clot_region.md says so.
    "clot": {"support_min": 0.3},
}

# Checks whose model auto never serves, with the reason: the calibration found no limits under
# which auto stays within 0.02 of the baseline on every phantom set (the rule), so the
# guard cannot make that model safe by default. method=model still runs it, with the verdict.
NOT_SERVED_BY_AUTO = {
    "lesion_ctp": "the CTP lesion model loses to the rCBF < 30 % rule on held-out phantoms whatever the guard's limits "
                  "(auto - baseline -0.09 Dice, scripts/calibrate_guard.py)",
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


def _volume_figures(model: np.ndarray, physics: np.ndarray, spacing_mm, name: str, physics_name: str) -> dict:
    v_model, v_phys = _volume_ml(model, spacing_mm), _volume_ml(physics, spacing_mm)
    return {f"{name}_model_ml": _round(v_model, 2), f"{name}_{physics_name}_ml": _round(v_phys, 2), f"{name}_dice": _round(_dice(model, physics))}


def _volume_failure(figures: dict, name: str, physics_name: str, words: str, abs_ml: float, rel: float) -> str | None:
    """Model and physics volumes agree when they differ by at most max(``abs_ml``, ``rel`` x physics)."""
    v_model, v_phys = figures[f"{name}_model_ml"], figures[f"{name}_{physics_name}_ml"]
    allowed = max(abs_ml, rel * v_phys)
    if abs(v_model - v_phys) <= allowed:
        return None
    return f"{name} {v_model:.1f} mL vs {words} {v_phys:.1f} mL (allowed difference {allowed:.1f} mL)"


# ---- per check: figures from the arrays, then a decision from the figures alone ----------------
# (scripts/calibrate_guard.py re-decides stored figures under other limits with the same functions)

def core_penumbra_figures(label: np.ndarray, physics_label: np.ndarray, spacing_mm) -> dict:
    label, physics_label = np.asarray(label), np.asarray(physics_label)
    figures = _volume_figures(label > 0, physics_label > 0, spacing_mm, "hypoperfusion", "tmax6")
    figures.update(_volume_figures(label == 1, physics_label == 1, spacing_mm, "core", "rcbf30"))
    v_phys = figures["hypoperfusion_tmax6_ml"]
    figures["hypoperfusion_ratio"] = _round(figures["hypoperfusion_model_ml"] / v_phys) if v_phys > 0 else None
    return figures


def core_penumbra_failures(figures: dict, limits: dict) -> list[str]:
    v_model, v_phys, dice = figures["hypoperfusion_model_ml"], figures["hypoperfusion_tmax6_ml"], figures["hypoperfusion_dice"] or 0.0
    failures = []
    if v_phys < limits["small_volume_ml"]:
        if abs(v_model - v_phys) > limits["small_volume_abs_diff_ml"]:
            failures.append(f"hypoperfusion {v_model:.1f} mL vs Tmax > 6 s {v_phys:.1f} mL (allowed difference {limits['small_volume_abs_diff_ml']:g} mL)")
    else:
        ratio, high = v_model / v_phys, limits["hypo_volume_ratio_max"]
        if not (1 / high <= ratio <= high and dice >= limits["hypo_dice_min"]):
            failures.append(f"hypoperfusion {v_model:.1f} mL is {ratio:.2f} x the Tmax > 6 s volume {v_phys:.1f} mL (Dice {dice:.2f}; "
                            f"allowed ratio 1/{high:g}-{high:g}, Dice >= {limits['hypo_dice_min']:g})")
    core = _volume_failure(figures, "core", "rcbf30", "rCBF < 30 %", limits["core_abs_diff_ml"], limits["core_rel_diff"])
    return failures + ([core] if core else [])


def lesion_ctp_figures(label: np.ndarray, physics_label: np.ndarray, spacing_mm) -> dict:
    return _volume_figures(np.asarray(label) > 0, np.asarray(physics_label) > 0, spacing_mm, "lesion", "rcbf30")


def lesion_ctp_failures(figures: dict, limits: dict) -> list[str]:
    failure = _volume_failure(figures, "lesion", "rcbf30", "rCBF < 30 %", limits["core_abs_diff_ml"], limits["core_rel_diff"])
    return [failure] if failure else []


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


def mirror_reference(values: np.ndarray, spacing_mm, radius_mm: float = MRI_EVIDENCE["mirror_radius_mm"], plane=None) -> np.ndarray:
    """What the other hemisphere shows around each voxel's mirror point: the brightest value within
    ``radius_mm`` of it (after 1 mm smoothing against noise), reflected about the head's mid-sagittal
    plane (found from the image itself).

    The neighbourhood maximum, not a mean: a thin bright structure present on both sides (the
    cortical rim, the choroid plexus) is as bright as its mirror's brightest neighbour and so is no
    evidence, whatever the residual misregistration of the two hemispheres; a lesion on one side is
    brighter than anything near its mirror point. ``plane``: the study's, when already found."""
    from strokelabel.midsagittal import find_midsagittal_plane, mirror_about_plane

    values = np.asarray(values, dtype=np.float32)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    plane = plane if plane is not None else find_midsagittal_plane(values, spacing_mm)
    smooth = ndimage.gaussian_filter(values, 1.0 / spacing)
    size = tuple(2 * int(np.ceil(radius_mm / s)) + 1 for s in spacing)
    return mirror_about_plane(ndimage.maximum_filter(smooth, size=size), plane)


def lesion_mri_figures(label: np.ndarray, evidence: np.ndarray, unmistakable: np.ndarray, brain: np.ndarray | None = None,
                       spacing_mm=None, coverage_label: np.ndarray | None = None) -> dict:
    """Support, coverage and volumes (module docstring); with the study's ``brain`` also the share of
    the lesion outside it (one voxel of tolerance at the brain's surface).

    ``coverage_label``: the answer whose coverage is judged, when it is not ``label`` itself. A rule
    that keeps only the network's surer components (the strict rule: a subset of the default rule's
    answer by construction) leaves out, on purpose, faint tissue the threshold rule marks; its coverage
    is therefore judged on what the network sees (the default rule's answer), and everything else
    (support, brain, volume) on the answer served. Without this, the guard refused the strict answer on
    three of the four real ISLES'22 cases for coverage alone (26 / 28 / 12 % < 30 %), where it was the
    better answer; the phantoms, whose threshold-rule lesion is almost all true lesion, cannot show it
    (every strict answer covered >= 93 % there)."""
    lesion, unmistakable = np.asarray(label) > 0, np.asarray(unmistakable, bool)
    covering = lesion if coverage_label is None else np.asarray(coverage_label) > 0
    support = float(np.count_nonzero(lesion & _grown(evidence)) / np.count_nonzero(lesion)) if lesion.any() else None
    coverage = float(np.count_nonzero(unmistakable & _grown(covering)) / np.count_nonzero(unmistakable)) if unmistakable.any() else None
    figures = {"lesion_model_ml": _round(_volume_ml(lesion, spacing_mm), 2), "support": _round(support),
               "unmistakable_ml": _round(_volume_ml(unmistakable, spacing_mm), 2), "coverage": _round(coverage),
               "evidence_ml": _round(_volume_ml(evidence, spacing_mm), 2)}
    if brain is not None:
        outside = lesion & ~_grown(np.asarray(brain, bool))
        figures["outside_brain_ml"] = _round(_volume_ml(outside, spacing_mm), 2)
        figures["outside_brain_share"] = _round(np.count_nonzero(outside) / np.count_nonzero(lesion)) if lesion.any() else None
    return figures


def lesion_mri_failures(figures: dict, limits: dict) -> list[str]:
    failures = []
    support, coverage = figures["support"], figures["coverage"]
    if support is not None and support < limits["support_min"]:
        failures.append(f"only {support:.0%} of the {figures['lesion_model_ml']:.1f} mL lesion is DWI-bright, brighter than the other "
                        f"hemisphere and not CSF (limit {limits['support_min']:.0%})")
    if figures["unmistakable_ml"] >= limits["coverage_from_ml"] and (coverage or 0) < limits["coverage_min"]:
        failures.append(f"the model labels {coverage or 0:.0%} of the {figures['unmistakable_ml']:.1f} mL with ADC < 620e-6 mm2/s and "
                        f"bright DWI (limit {limits['coverage_min']:.0%})")
    outside = figures.get("outside_brain_share")  # absent in figures stored before the brain was passed
    if outside is not None and outside > limits["outside_brain_max"]:
        failures.append(f"{outside:.0%} of the lesion ({figures['outside_brain_ml']:.1f} mL) lies outside the brain "
                        f"(limit {limits['outside_brain_max']:.0%})")
    volume, evidence = figures["lesion_model_ml"], figures.get("evidence_ml")
    if evidence is not None and volume >= limits["volume_check_from_ml"] and volume > limits["evidence_volume_factor_max"] * evidence:
        failures.append(f"the lesion is {volume:.1f} mL, more than {limits['evidence_volume_factor_max']:g} x the {evidence:.1f} mL of the "
                        f"study that is DWI-bright, brighter than the other hemisphere and not CSF")
    return failures


def clot_evidence(cta1_hu: np.ndarray, brain: np.ndarray, spacing_mm, near: np.ndarray | None = None) -> np.ndarray:
    """Voxels where a clot could be (module docstring): near an enhancing artery, unenhanced, near the brain.

    With ``near`` (the model's clot), the evidence is computed only where the guard reads it, in the
    box of ``near`` grown by one voxel (False elsewhere): the same answer there as on the whole grid,
    since it depends on the brain and the arteries within ``near_brain_mm + near_artery_mm`` only
    (a few seconds and MiB instead of two distance maps of the whole 512 x 512 x 257 CTA).
    """
    e = CLOT_EVIDENCE
    shape = np.shape(cta1_hu)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    region = tuple(slice(0, n) for n in shape) if near is None else bounding_box(near, 1)
    if region is None:
        return np.zeros(shape, bool)
    # Arteries within near_artery_mm of the region count; brain within near_brain_mm of those arteries.
    artery_box = grow_box(region, margin_voxels(e["near_artery_mm"], spacing), shape)
    brain_box = grow_box(artery_box, margin_voxels(e["near_brain_mm"], spacing), shape)
    cta = np.asarray(np.asarray(cta1_hu)[brain_box], dtype=np.float32)
    brain_near = np.asarray(np.asarray(brain)[brain_box], bool)
    if not brain_near.any():  # no brain within reach (a distance map of an empty mask is meaningless)
        return np.zeros(shape, bool)
    near_brain = ndimage.distance_transform_edt(~brain_near, sampling=spacing) <= e["near_brain_mm"]
    artery = near_brain & (cta >= e["artery_hu_min"])
    if not artery.any():
        return np.zeros(shape, bool)
    near_artery = ndimage.distance_transform_edt(~artery, sampling=spacing) <= e["near_artery_mm"]
    inner = within(brain_box, region)
    evidence = near_brain[inner] & near_artery[inner] & (cta[inner] < e["clot_hu_max"]) & (cta[inner] > 0)
    return paste(evidence, region, shape)


def clot_figures(label: np.ndarray, evidence: np.ndarray, spacing_mm) -> dict:
    clot = np.asarray(label) > 0
    box = bounding_box(clot)
    support = None
    if box is not None:  # the evidence grown by one voxel, read in the clot's box only
        outer = grow_box(box, 1, clot.shape)
        grown = _grown(np.asarray(evidence, bool)[outer])[within(outer, box)]
        support = float(np.count_nonzero(clot[box] & grown) / np.count_nonzero(clot))
    return {"clot_model_ml": _round(_volume_ml(clot, spacing_mm), 4), "support": _round(support)}


def clot_failures(figures: dict, limits: dict) -> list[str]:
    support = figures["support"]
    if support is None or support >= limits["support_min"]:
        return []
    return [f"only {support:.0%} of the clot lies beside an enhancing artery, unenhanced, near the brain (limit {limits['support_min']:.0%})"]


# ---- the checks ---------------------------------------------------------------------------------
CHECKS = {
    "core_penumbra": ("model against the physiological definitions on the same maps: hypoperfusion = Tmax > 6 s, core = rCBF < 30 %",
                      core_penumbra_figures, core_penumbra_failures),
    "lesion_ctp": ("model against the core definition on the same maps: rCBF < 30 %", lesion_ctp_figures, lesion_ctp_failures),
    "lesion_mri": ("model against DWI/ADC: lesion voxels DWI-bright, brighter than the mirror side, ADC not high; and the unmistakable "
                   "lesion (ADC < 620e-6 mm2/s, DWI bright) labelled", lesion_mri_figures, lesion_mri_failures),
    "clot": ("model against the vessel anatomy of CTA phase 1: a clot is an unenhanced defect beside an enhancing artery",
             clot_figures, clot_failures),
}


def decide(check: str, figures: dict, limits: dict | None = None) -> list[str]:
    """The failures (plain words; empty = agrees) of ``figures`` under ``limits`` (default ``LIMITS[check]``)."""
    return CHECKS[check][2](figures, {**LIMITS[check], **(limits or {})})


def verdict(check: str, *arrays, spacing_mm, limits: dict | None = None, **options) -> Verdict:
    """The guard's verdict of ``check`` (a key of ``CHECKS``) on the arrays its figures function takes
    (``options``: its keyword arguments, e.g. ``coverage_label`` of ``lesion_mri``)."""
    words, figures_of, _ = CHECKS[check]
    figures = figures_of(*arrays, spacing_mm=spacing_mm, **options)
    lim = {**LIMITS[check], **(limits or {})}
    failures = decide(check, figures, lim)
    return Verdict(check=words, figures=figures, limits=lim, passed=not failures,
                   reason="; ".join(failures) if failures else "agrees: " + _agreement(check, figures), kind=check)


def _agreement(check: str, f: dict) -> str:
    if check == "core_penumbra":
        return (f"hypoperfusion {f['hypoperfusion_model_ml']} mL vs Tmax > 6 s {f['hypoperfusion_tmax6_ml']} mL (Dice "
                f"{f['hypoperfusion_dice']}), core {f['core_model_ml']} mL vs rCBF < 30 % {f['core_rcbf30_ml']} mL")
    if check == "lesion_ctp":
        return f"lesion {f['lesion_model_ml']} mL vs rCBF < 30 % {f['lesion_rcbf30_ml']} mL"
    if check == "lesion_mri":
        support = "no lesion labelled" if f["support"] is None else f"{f['support']:.0%} of the lesion shows diffusion restriction"
        return support + (f", it covers {f['coverage']:.0%} of the unmistakable lesion" if f["coverage"] is not None else "")
    return "the model finds no clot" if f["support"] is None else f"{f['support']:.0%} of the clot lies beside an enhancing artery, unenhanced"
