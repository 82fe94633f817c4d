"""The numbers and words of the one-page summary picture (:mod:`strokelabel.summary`).

Everything the picture writes is produced here as plain text lines, so a test can read exactly
what a clinician reads. Figures come from the result JSON the app served (its volumes, its
DEFUSE 3 flags, its method and guard verdict); only what the result does not carry is derived
here from the study's own maps: the Tmax > 10 s volume and the hypoperfusion intensity ratio,
and the EXTEND criteria from the result's volumes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from strokelabel.baselines.figures import core_penumbra_figures, lesion_figures
from strokelabel.trial_criteria import DEFUSE3, EXTEND
from strokelabel.units import voxel_volume_ml

RESEARCH_USE = "Research use only — not for diagnosis"
TASKS = ("core_penumbra", "ischemic_lesion", "clot_region")
KIND_WORDS = {"ctp": "CT perfusion", "mri": "MRI DWI/ADC", "cta": "multiphase CTA"}
# Tmax thresholds of the hypoperfusion intensity ratio (Olivot et al., Stroke 2014).
TMAX_HYPOPERFUSION_S = 6.0
TMAX_SEVERE_S = 10.0


def tmax_figures(tmax_s: np.ndarray, brain_mask: np.ndarray, spacing_mm: Sequence[float]) -> dict:
    """Tmax > 6 s and Tmax > 10 s volumes (mL) inside the brain, and the hypoperfusion intensity ratio
    (Tmax > 10 s / Tmax > 6 s volume; None without hypoperfusion). A high ratio means poor collaterals."""
    tmax = np.asarray(tmax_s)
    brain = np.asarray(brain_mask, dtype=bool)
    voxel_ml = voxel_volume_ml(spacing_mm, tmax.ndim)
    hypo_ml = float(np.count_nonzero(brain & (tmax > TMAX_HYPOPERFUSION_S)) * voxel_ml)
    severe_ml = float(np.count_nonzero(brain & (tmax > TMAX_SEVERE_S)) * voxel_ml)
    return {
        "tmax6_volume_ml": hypo_ml,
        "tmax10_volume_ml": severe_ml,
        "hypoperfusion_intensity_ratio": severe_ml / hypo_ml if hypo_ml > 0 else None,
    }


def infer_task(result: dict) -> str:
    """The task a result JSON answers: its ``task`` key, else the figures it carries."""
    if result.get("task") in TASKS:
        return result["task"]
    for key, task in (("core_volume_ml", "core_penumbra"), ("clot_volume_ml", "clot_region"), ("lesion_volume_ml", "ischemic_lesion")):
        if key in result:
            return task
    raise ValueError("cannot tell the task of this result: give task=..., or a result with core_volume_ml, lesion_volume_ml "
                     "or clot_volume_ml")


def acquisition_words(study, acquisition_time: str | None) -> str:
    """The given acquisition time, else the first ``*acquisition*`` value of the study's clinical sidecar, else unknown."""
    if acquisition_time:
        return str(acquisition_time)
    for key, value in (study.clinical or {}).items():
        if "acquisition" in key.lower() and value not in (None, ""):
            return str(value)
    return "unknown"


# A line of the text panel and how to draw it: plain, heading, good (met / passed), bad (not met / review),
# table_heading / table / table_flagged (a row of the region table, aligned; flagged = holds clot).
Entry = tuple[str, str]


def summary_entries(study, label: np.ndarray, result: dict, acquisition_time: str | None = None, task: str | None = None,
                    region_names: Sequence[str] | None = None) -> list[Entry]:
    """The text panel's lines with their tone; see :func:`summary_lines`."""
    task = task or infer_task(result)
    entries: list[Entry] = [("Study", "heading"), (f"Study: {study.study_id}", "plain"),
                            (f"Acquisition: {acquisition_words(study, acquisition_time)}", "plain")]
    clinical = study.clinical or {}
    if clinical.get("onset_to_imaging_min") is not None:
        entries.append((f"Onset to imaging: {clinical['onset_to_imaging_min']} min", "plain"))
    if clinical.get("nihss") is not None:
        entries.append((f"NIHSS: {clinical['nihss']}", "plain"))
    entries.append((f"Task: {task} on {KIND_WORDS.get(study.kind, study.kind)}", "plain"))
    entries += _method_entries(result)
    if task == "core_penumbra":
        entries += _core_penumbra_entries(study, label, result)
    elif task == "ischemic_lesion":
        entries += _lesion_entries(study, label, result)
    else:
        entries += _clot_entries(study, label, result, region_names)
    entries.append((RESEARCH_USE, "bad"))
    return entries


def summary_lines(study, label: np.ndarray, result: dict, acquisition_time: str | None = None, task: str | None = None,
                  region_names: Sequence[str] | None = None) -> list[str]:
    """Every line of text the summary picture writes in its text panel, top to bottom."""
    return [text for text, _ in summary_entries(study, label, result, acquisition_time, task, region_names)]


def _method_entries(result: dict) -> list[Entry]:
    method = result.get("method", "unknown")
    reason = result.get("method_reason")
    # The app writes method_reason "requested" when the client chose the method; any other reason is auto's.
    chosen = "requested" if reason == "requested" else f"chosen by auto: {reason}" if reason else "how chosen: not recorded"
    entries = [(f"Method: {method} ({chosen})", "plain")]
    quality = result.get("quality") or {}
    review = bool(result.get("review"))
    if quality.get("passed") is True and not review:
        entries.append((f"Guard: passed ({quality.get('reason') or quality.get('check', 'no reason given')})", "good"))
    elif quality:
        why = result.get("review_reason") or quality.get("reason") or "no reason given"
        entries.append((f"Guard: NOT passed, review: {why}", "bad"))
    else:
        entries.append(("Guard: no verdict in the result", "bad" if review else "plain"))
    return entries


def _volume(value) -> str:
    return f"{value:.1f} mL"


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def _perfusion_entries(study, result: dict) -> list[Entry]:
    """Tmax > 6 s / > 10 s volumes from the maps and their ratio (the result's own figures when it has them)."""
    if "tmax10_volume_ml" in result and "hypoperfusion_intensity_ratio" in result:
        figures = result
    elif "tmax" in study.images:
        figures = tmax_figures(study.images["tmax"], study.brain_mask, study.spacing_mm)
    else:
        return []
    hir = figures.get("hypoperfusion_intensity_ratio")
    entries = [(f"Tmax > 10 s: {_volume(figures['tmax10_volume_ml'])}", "plain")]
    if figures.get("tmax6_volume_ml") is not None:
        entries.append((f"Tmax > 6 s (map): {_volume(figures['tmax6_volume_ml'])}", "plain"))
    entries.append((f"HIR (Tmax > 10 s / Tmax > 6 s): {'undefined (no Tmax > 6 s)' if hir is None else f'{hir:.2f}'}", "plain"))
    return entries


def _core_penumbra_entries(study, label, result: dict) -> list[Entry]:
    figures = result if "core_volume_ml" in result else {**core_penumbra_figures(label, study.spacing_mm), **result}
    core, hypo = figures["core_volume_ml"], figures["hypoperfusion_volume_ml"]
    ratio = figures.get("mismatch_ratio")
    entries: list[Entry] = [
        ("Volumes", "heading"),
        (f"Core: {_volume(core)}", "plain"),
        (f"Penumbra: {_volume(figures['penumbra_volume_ml'])}", "plain"),
        (f"Hypoperfusion (Tmax > 6 s): {_volume(hypo)}", "plain"),
        (f"Mismatch volume: {_volume(figures['mismatch_volume_ml'])}", "plain"),
        (f"Mismatch ratio: {'undefined (no core)' if ratio is None else f'{ratio:.2f}'}", "plain"),
        *_perfusion_entries(study, result),
        ("Late-window imaging criteria", "heading"),
    ]
    for criteria in (DEFUSE3, EXTEND):
        checks = criteria.check(core, hypo)
        met = all(checks.values())
        entries.append((f"{criteria.name}: {_met(met)}", "good" if met else "bad"))
        entries += [(f"   {words}: {_met(ok)}", "good" if ok else "bad") for words, ok in checks.items()]
    return entries


def _lesion_entries(study, label, result: dict) -> list[Entry]:
    figures = result if "lesion_volume_ml" in result else {**lesion_figures(label, study.spacing_mm), **result}
    name = "Lesion (ischemic core)" if study.kind == "ctp" else "Lesion"
    entries: list[Entry] = [("Lesion", "heading"), (f"{name}: {_volume(figures['lesion_volume_ml'])}", "plain"),
                            (f"Lesion count: {figures['lesion_count']}", "plain")]
    if result.get("rule"):
        entries.append((f"Rule: {result['rule']}", "plain"))
    if study.kind == "ctp":
        entries += [("Perfusion", "heading"), *_perfusion_entries(study, result)]
    return entries


def _clot_entries(study, label, result: dict, region_names: Sequence[str] | None) -> list[Entry]:
    volume = result.get("clot_volume_ml")
    if volume is None:
        volume = float(np.count_nonzero(label) * study.voxel_volume_ml)
    entries: list[Entry] = [("Clot", "heading")]
    if not volume:
        entries.append(("Clot: none found (0 mL)", "plain"))
    else:
        count = result.get("clot_count")
        entries.append((f"Clot volume: {volume:.3f} mL" + (f" in {count} component{'s' if count != 1 else ''}" if count else ""), "plain"))
        side = {"R": "right", "L": "left"}.get(result.get("clot_hemisphere"))
        where = [f"{side} hemisphere"] if side else []
        if result.get("clot_slice_range"):
            first, last = result["clot_slice_range"]
            where.append(f"slice {first}" if first == last else f"slices {first}–{last}")
        if result.get("clot_centre_ras_mm"):
            where.append("centre (" + ", ".join(f"{c:.0f}" for c in result["clot_centre_ras_mm"]) + ") mm RAS")
        if where:
            entries.append(("Location: " + ", ".join(where), "plain"))
        if result.get("clot_region") is not None:
            entries.append((f"Main region: {_region_name(result['clot_region'], study, region_names)}", "plain"))
    regions = result.get("regions")
    if regions is None:
        entries.append((f"Regions: {result.get('regions_note', 'no region flags in the result')}", "plain"))
        return entries
    entries.append((f"{'Atlas region':<22} {'Clot':<5} Probability", "table_heading"))
    for r in regions:
        entries.append((f"{_region_name(r['region'], study, region_names):<22} {'CLOT' if r['clot'] else '-':<5} {r['probability']:.2f}",
                        "table_flagged" if r["clot"] else "table"))
    return entries


def _region_name(number: int, study, region_names: Sequence[str] | None) -> str:
    """``number`` (the atlas' own numbering) with its name when the caller knows the atlas' names."""
    index = int(number) - int(getattr(study, "region_base", 1))
    if region_names is not None and 0 <= index < len(region_names):
        return f"{number:>2} {region_names[index]}"
    return f"{number:>2}"
