"""Accuracy of perfusion maps computed from a raw 4D CT perfusion series, against the phantom's
true maps, per acquisition family (strokelabel.phantom.ctp_families), for two methods on the
same series:

- ``compute_maps``: strokelabel.ctp4d.compute_maps (motion correction, frame-time resampling,
  AIF with VOF scaling, bone/vessel exclusion, oSVD);
- ``previous``: strokelabel.phantom.ctp.derive_maps, the pipeline the phantom generator uses
  (no motion correction; it assumes uniform frames, so it is given the median frame step).

Per family and method: median absolute and relative error of CBF, CBV, MTT and Tmax over the
true brain tissue that the method maps (``coverage`` is that fraction of it), Dice of Tmax > 6 s
and of the core (rCBF < 30 % of the healthy hemisphere's median, strokelabel.baselines.perfusion
.relative_cbf, on the computed maps and on the true maps alike), and the core_penumbra task's
own rule (``task_*``: core and penumbra Dice, core and hypoperfusion volume error in mL) on the
computed maps against the same rule on the true maps; means over the studies.

``--deconvolutions osvd,osvd_calibrated,tsvd_discrepancy,tikhonov_gcv`` scores other deconvolutions
(scripts/deconvolution_candidates.py) on the same prepared series; ``truncated`` (the clean series cut at
24 s), ``weak_bolus`` and ``low_snr`` are families made here from the frozen generator. Each family also
prints its series-quality figures and flags (strokelabel.ctp4d.series_flags), then a table of flags per
family and a row of the studies whose true core is 5-20 mL.

    .venv/bin/python scripts/evaluate_maps.py [--per-family 3] [--seed 0] [--families clean,motion] [--no-previous]
    .venv/bin/python scripts/evaluate_maps.py --size clinical   # seconds and peak memory at 512 x 512
    .venv/bin/python scripts/evaluate_maps.py --boundary 10 --families clean,clinical_noise

``--boundary N`` scores decisions near the treatment boundary: N studies (the same in every family) whose true core
is 50-90 mL and mismatch ratio 1.5-2.2; per family the core and mismatch volumes' bias and 95 % limits of agreement
(mL) against the same rule on the true maps, how often the DEFUSE 3 and EXTEND verdicts (strokelabel.trial_criteria)
differ from the true maps', each disagreement with its figures, and how often a series-quality flag was raised.
With ``--deconvolutions a,b`` every candidate is scored on the same prepared series, one table each; per family and
deconvolution it also prints where the core's edge moves (:func:`rcbf_bias`): per bin of the true rCBF and per tissue
class the computed rCBF, computed / true CBF and the Tmax error, and the contralateral reference on both maps.
``--boundary-studies 10001,10005`` re-scores studies an earlier run found (its log names them) without the search.
``--references median,mean_curve`` scores the rule with each rCBF reference on the same maps (default: the app's,
``median``, the healthy side's median of the map; ``mean_curve`` rows are named ``<deconvolution>+mean_curve``).

``--size clinical`` writes one phantom series at 512 x 512 x 20 x 40 (int16 NIfTI with a BIDS
sidecar) and measures, each in a fresh process, loading it (read_ctp_nifti) and loading plus
compute_maps: wall seconds and peak resident MiB (getrusage).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import deconvolution_candidates as candidates
from strokelabel import metrics, perfusion
from strokelabel.baselines.figures import core_penumbra_figures
from strokelabel.baselines.perfusion import core_penumbra_baseline, healthy_side_mask, relative_cbf
from strokelabel.ctp4d import CtpSeries, compute_maps, read_ctp_nifti
from strokelabel.errors import StrokeLabelError
from strokelabel.phantom.ctp import derive_maps
from strokelabel.phantom.ctp_families import FAMILIES, CtpFamily, simulate_family
from strokelabel.phantom.geometry import Grid, grid_for
from strokelabel.phantom.patient import make_patient
from strokelabel.phantom.render import reference_volumes_ml
from strokelabel.phantom.study import study_seed
from strokelabel.trial_criteria import CRITERIA

MAP_KEYS = ("cbf", "cbv", "mtt", "tmax")
# The deconvolutions measured on the same series (``--deconvolutions``); compute_maps' own is "osvd".
DECONVOLUTIONS = {
    "osvd": None,  # compute_maps' default: block-circulant oSVD, oscillation index 0.095, the noise's lift of max k off
    # The app's residues always read at their maximum: with --tmax-from onset, the onset and the maximum on one series.
    "osvd_peak": candidates.deconvolve_osvd_peak,
    "osvd_height": candidates.deconvolve_osvd_height,
    # The app's oSVD before issue 23 (the noise's lift of max k left on), to score before and after on the same series.
    "osvd_lift_on": candidates.deconvolve_osvd_lift_on,
    "osvd_calibrated": candidates.deconvolve_osvd_calibrated,
    "tsvd_discrepancy": candidates.deconvolve_tsvd_discrepancy,
    "tikhonov_gcv": candidates.deconvolve_tikhonov_gcv,
    "osvd_noise": candidates.deconvolve_osvd_noise,
    "osvd_calibrated_gamma": candidates.deconvolve_osvd_calibrated_gamma,
    "osvd_debiased": candidates.deconvolve_osvd_debiased,
}
# How compute_maps reads Tmax from the deconvolved residue (``--tmax-from``): its maximum (the app's), its onset fitted
# through its truncation (perfusion.residue_onset_time_s: measured, not kept by rule 3 of docs/ctp_boundary_decisions.md),
# or its half-height rise (deconvolution_candidates.residue_rise_time_s: measured, not kept). Deconvolutions from
# scripts/deconvolution_candidates.py are read at their maximum unless they return their truncation.
TMAX_FROM_RESIDUE = {"onset": perfusion.TMAX_ONSET, "peak": perfusion.peak_time_s, "rise": candidates.residue_rise_time_s}
# Families made on the evaluation side from the frozen ones (strokelabel.phantom.ctp_families is not changed):
# "truncated": the clean series cut at TRUNCATED_AT_S, before the tissue washout and the venous peak are acquired.
TRUNCATED_AT_S = 24.0
# Series that cannot support a core estimate, to check that the flags fire (ctp_families.CtpFamily's own knobs):
# a bolus at 30 % of the patient's strength (a missed injection, an extravasation), frame noise of 30-40 HU.
FLAG_FAMILIES = {"weak_bolus": CtpFamily("weak_bolus", aif_peak_scale=0.3), "low_snr": CtpFamily("low_snr", noise_hu=(30.0, 40.0))}
QUALITY_COLUMNS = ("flags", "flagged", "q_aif_peak_hu", "q_aif_end_fraction", "q_vof_peak_frames_from_end", "q_vof_end_fraction", "q_max_shift_mm", "q_max_angle_deg",
                   "q_tissue_cnr", "q_baseline_noise_hu")
# Series that support a core estimate: any flag raised on these families is a false alarm (target <= 10 %).
SOUND_FAMILIES = ("clean", "clinical_noise")
FALSE_ALARM_TARGET = 0.10
# The small-core row: studies whose core by the task's rule on the true maps is within these volumes.
SMALL_CORE_ML = (5.0, 20.0)
# Decisions near the treatment boundary (--boundary): patients of the frozen generator with an M2 occlusion (its
# territorial lesions reach 50-90 mL cores with ratios near 2; M1/ICA-T ones have far larger penumbras) whose core
# and ratio by the task's rule on the clean series' true maps fall in these ranges. A patient's reference volumes
# (render.reference_volumes_ml, 0.3 s) screen candidates loosely before a series is simulated.
BOUNDARY_SCENARIO = "M2"
BOUNDARY_CORE_ML = (50.0, 90.0)
BOUNDARY_RATIO = (1.5, 2.2)
BOUNDARY_SCREEN_CORE_ML, BOUNDARY_SCREEN_RATIO = (35.0, 120.0), (1.3, 2.7)
BOUNDARY_FIRST_INDEX = 10_001  # study indices of their own, apart from the accuracy tables' 1..N
BOUNDARY_MAX_TRIES = 400
CLINICAL_GRID = Grid((512, 512, 20), (0.43, 0.43, 5.0))
CLINICAL_FRAMES_S = 1.5  # 40 frames over 58.5 s


def score(maps: dict, mask: np.ndarray, truth: dict, spacing_mm, reference_cbf: float | None = None) -> dict:
    """One method's errors on one study (see the module docstring); ``reference_cbf``: the computed maps' rCBF
    reference if not their healthy side's median (:data:`REFERENCES`)."""
    brain = truth["brain"]
    mapped = mask & (maps["cbf"] > 0)
    scored = brain & mapped
    row = {"coverage": float(scored.sum() / max(brain.sum(), 1))}
    for key in MAP_KEYS:
        error = maps[key][scored].astype(np.float64) - truth[key][scored]
        row[f"{key}_mae"] = float(np.median(np.abs(error)))
        row[f"{key}_mre"] = float(np.median(np.abs(error) / np.maximum(truth[key][scored], 1e-3)))
    row["dice_tmax6"] = metrics.dice(mapped & (maps["tmax"] > 6.0), brain & (truth["tmax"] > 6.0))
    true_rcbf = relative_cbf(truth["cbf"], brain, spacing_mm, truth["tmax"])
    rcbf = relative_cbf(maps["cbf"], mapped, spacing_mm, maps["tmax"], reference_cbf=reference_cbf)
    row["dice_core"] = metrics.dice(mapped & (rcbf < 0.3), brain & (true_rcbf < 0.3))
    # rCBF where the core's edge is decided: true rCBF below 0.5, within 2 voxels in-plane.
    near = ndimage.binary_dilation(brain & (true_rcbf < 0.5), structure=np.ones((5, 5, 1), bool)) & scored
    row["rcbf_near_core_mae"] = float(np.median(np.abs(rcbf[near] - true_rcbf[near]))) if near.any() else float("nan")
    # The core_penumbra task's own rule (cluster clean-up included) on these maps and on the true maps.
    ml = float(np.prod(spacing_mm)) / 1000.0
    task = core_penumbra_baseline(maps["cbf"], maps["tmax"], spacing_mm, brain_mask=mapped, check_units=False, reference_cbf=reference_cbf)
    task_true = core_penumbra_baseline(truth["cbf"], truth["tmax"], spacing_mm, brain_mask=brain, check_units=False)
    row["task_core_dice"] = metrics.dice(task == 1, task_true == 1)
    row["task_penumbra_dice"] = metrics.dice(task == 2, task_true == 2)
    row["true_core_ml"] = float((task_true == 1).sum() * ml)
    row["task_core_ml_err"] = float(((task == 1).sum() - (task_true == 1).sum()) * ml)
    row["task_hypo_ml_err"] = float(((task > 0).sum() - (task_true > 0).sum()) * ml)
    return row


def simulate_case(family: str, patient, grid: Grid, seed: int):
    """A family's series with its truth; the evaluation-side families are made from the frozen ones."""
    if family in FLAG_FAMILIES:
        return simulate_family(patient, grid, FLAG_FAMILIES[family], seed)
    if family == "truncated":
        case = simulate_family(patient, grid, "clean", seed)
        keep = case.times_s <= TRUNCATED_AT_S
        return dataclasses.replace(case, ctp=case.ctp[..., keep], times_s=case.times_s[keep])
    return simulate_family(patient, grid, family, seed)


def evaluate_family(family: str, per_family: int, seed: int, grid: Grid, log=print, deconvolutions=("osvd",), previous=True,
                    tmax_from: str = "peak", references=("median",)) -> list[dict]:
    rows = []
    for index in range(1, per_family + 1):
        patient = make_patient(study_seed(seed, "ctp", index))
        case = simulate_case(family, patient, grid, seed * 1000 + index)
        # One preparation of the series (motion, AIF, VOF, baseline), every deconvolution on it.
        first, others = deconvolutions[0], {name: DECONVOLUTIONS[name] for name in deconvolutions[1:]}
        started = time.perf_counter()
        try:
            computed = compute_maps(CtpSeries(case.ctp, grid.affine, case.times_s), grid.spacing_mm, deconvolve=DECONVOLUTIONS[first],
                                    also_deconvolve=others, tmax_from_residue=TMAX_FROM_RESIDUE[tmax_from],
                                mean_curve_ref="mean_curve" in references)
        except StrokeLabelError as error:
            log(f"  {family} #{index}: compute_maps refused: {error}")
            rows += [{"method": f"compute_maps {method_name(name, r)}", "study": index, "refused": True} for name in deconvolutions for r in references]
            computed = None
        seconds = time.perf_counter() - started
        for name, reference in ((n, r) for n in deconvolutions for r in references) if computed else ():
            reference_cbf = computed.reference.get("cbf_ml_100g_min") if reference == "mean_curve" else None
            ours = score(computed.maps if name == first else computed.compared[name], computed.mask, case.truth, grid.spacing_mm, reference_cbf)
            ours["seconds"] = seconds
            ours["warned"] = bool(computed.warnings)
            ours["flagged"] = bool(computed.flags)
            ours["flags"] = ",".join(f["flag"] for f in computed.flags) or "-"
            ours.update({f"q_{k}": v for k, v in computed.quality.items() if isinstance(v, (int, float))})
            rows.append({"method": f"compute_maps {method_name(name, reference)}", "study": index, **ours})
            log(f"  {family} #{index} {method_name(name, reference)}: task core Dice {ours['task_core_dice']:.3f}, "
                f"penumbra {ours['task_penumbra_dice']:.3f}, true core {ours['true_core_ml']:.1f} mL")
        if previous:
            started = time.perf_counter()
            old = derive_maps(case.ctp, float(np.median(np.diff(case.times_s))), grid.spacing_mm)
            theirs = score(old, old["mask"], case.truth, grid.spacing_mm)
            theirs["seconds"] = time.perf_counter() - started
            rows.append({"method": "previous", "study": index, **theirs})
    return rows


def accuracy(args) -> None:
    grid = grid_for("ctp", "small")
    families = args.families.split(",") if args.families else [*FAMILIES, "truncated"]
    deconvolutions = args.deconvolutions.split(",")
    columns = ["method", "n", "coverage"] + [f"{k}_{e}" for k in MAP_KEYS for e in ("mae", "mre")] + ["rcbf_near_core_mae", "dice_tmax6", "dice_core", "task_core_dice", "task_penumbra_dice", "task_core_ml_err", "task_hypo_ml_err", "true_core_ml", "warned", "seconds"]
    print(f"# Perfusion maps from 4D phantoms: {args.per_family} per family, seed {args.seed}, grid {grid.shape} at {grid.spacing_mm} mm, "
          f"Tmax from the residue's {args.tmax_from}\n")
    print("mae: median absolute error (mL/100g/min, mL/100g, s, s); mre: median relative error; Dice against the true maps; "
          "means over the studies; warned: fraction with a warning.\n")
    small, flag_rows = [], []
    for family in families:
        print(f"## {family}\n", flush=True)
        rows = evaluate_family(family, args.per_family, args.seed, grid, log=lambda m: print(m, file=sys.stderr, flush=True),
                               deconvolutions=deconvolutions, previous=not args.no_previous, tmax_from=args.tmax_from,
                               references=args.references.split(","))
        table = metrics.summarise(rows, by="method")
        print(metrics.format_table(table, [c for c in columns if any(c in r for r in table)], digits=3, markdown=True) + "\n", flush=True)
        small += [r for r in rows if SMALL_CORE_ML[0] <= r.get("true_core_ml", -1) <= SMALL_CORE_ML[1]]
        quality_rows = [{"family": family, "study": r["study"], **{k: r.get(k) for k in QUALITY_COLUMNS}}
                        for r in rows if r["method"] == f"compute_maps {method_name(deconvolutions[0], args.references.split(',')[0])}" and not r.get("refused")]
        flag_rows += quality_rows
        print(metrics.format_table(quality_rows, ["study", *QUALITY_COLUMNS], digits=2, markdown=True) + "\n", flush=True)
    print("## series flags per family (a flag says the series cannot support a core estimate)\n")
    summary = [{"family": f, "n": len(rs), "flagged": sum(r["flagged"] for r in rs) / len(rs),
                "flags": "; ".join(sorted({r["flags"] for r in rs if r["flags"] != "-"})) or "-"}
               for f in families if (rs := [r for r in flag_rows if r["family"] == f])]
    print(metrics.format_table(summary, ["family", "n", "flagged", "flags"], digits=2, markdown=True) + "\n", flush=True)
    print(false_alarm_line(flag_rows) + "\n", flush=True)
    print(f"## small cores ({SMALL_CORE_ML[0]:g}-{SMALL_CORE_ML[1]:g} mL by the task's rule on the true maps), all families\n")
    if small:
        table = metrics.summarise(small, by="method")
        print(metrics.format_table(table, [c for c in columns if any(c in r for r in table)], digits=3, markdown=True) + "\n", flush=True)
    else:
        print("no study of these families has a core in this range\n")


def false_alarm_line(rows: list[dict]) -> str:
    """How often a series-quality flag was raised on the families whose series support a core estimate."""
    sound = [r for r in rows if r.get("family") in SOUND_FAMILIES and r.get("flags") is not None]
    if not sound:
        return f"false alarms: no study of {', '.join(SOUND_FAMILIES)} scored"
    raised = sum(r["flags"] != "-" for r in sound)
    rate = raised / len(sound)
    verdict = "within" if rate <= FALSE_ALARM_TARGET else "above"
    return (f"false alarms (a flag on {' or '.join(SOUND_FAMILIES)}): {raised}/{len(sound)} = {rate:.0%}, "
            f"{verdict} the {FALSE_ALARM_TARGET:.0%} target")


# --- decisions near the treatment boundary ------------------------------------------------


def task_volumes(cbf: np.ndarray, tmax: np.ndarray, mask: np.ndarray, spacing_mm, reference_cbf: float | None = None) -> dict:
    """The core_penumbra task's rule on maps, as the result reports it: core, hypoperfusion and mismatch mL, ratio.
    ``reference_cbf``: the healthy side's CBF to divide by instead of the map's median there (:data:`REFERENCES`)."""
    label = core_penumbra_baseline(cbf, tmax, spacing_mm, brain_mask=mask, check_units=False, reference_cbf=reference_cbf)
    figures = core_penumbra_figures(label, spacing_mm)
    return {k: figures[k] for k in ("core_volume_ml", "hypoperfusion_volume_ml", "mismatch_volume_ml", "mismatch_ratio")}


def in_range(value, bounds) -> bool:
    return value is not None and bounds[0] <= value <= bounds[1]


def boundary_patients(n: int, seed: int, grid: Grid, log=print) -> list[tuple[int, object]]:
    """``n`` (study index, patient) pairs whose true maps put them near the DEFUSE 3 / EXTEND boundary (see
    BOUNDARY_*), drawn in index order from BOUNDARY_FIRST_INDEX, so the same seed gives the same studies."""
    chosen = []
    for index in range(BOUNDARY_FIRST_INDEX, BOUNDARY_FIRST_INDEX + BOUNDARY_MAX_TRIES):
        patient = make_patient(study_seed(seed, "ctp", index), scenario=BOUNDARY_SCENARIO)
        reference = reference_volumes_ml(patient)
        core_ml = reference["core_ml"]
        if not (in_range(core_ml, BOUNDARY_SCREEN_CORE_ML) and in_range((core_ml + reference["penumbra_ml"]) / core_ml, BOUNDARY_SCREEN_RATIO)):
            continue
        truth = simulate_family(patient, grid, "clean", seed * 1000 + index).truth
        true = task_volumes(truth["cbf"], truth["tmax"], truth["brain"], grid.spacing_mm)
        accepted = in_range(true["core_volume_ml"], BOUNDARY_CORE_ML) and in_range(true["mismatch_ratio"], BOUNDARY_RATIO)
        log(f"  boundary candidate {index}: true core {true['core_volume_ml']:.1f} mL, ratio {true['mismatch_ratio'] or 0:.2f}"
            f" -> {'kept' if accepted else 'out of range'}")
        if accepted:
            chosen.append((index, patient))
            if len(chosen) == n:
                return chosen
    log(f"  only {len(chosen)} of {n} boundary studies in {BOUNDARY_MAX_TRIES} candidates")
    return chosen


def boundary_row(family: str, index: int, patient, grid: Grid, seed: int, tmax_from: str = "peak",
                 deconvolutions=("osvd",), references=("median",)) -> list[dict]:
    """One study of ``family``, one row per deconvolution and rCBF reference (:data:`REFERENCES`; all on the same
    prepared series, method ``name`` for the map's median, ``name+mean_curve`` for the mean-curve reference): the task's
    volumes on the computed and on the true maps, each trial's verdict on both, and the rCBF bias table's figures
    (:func:`rcbf_bias`)."""
    case = simulate_case(family, patient, grid, seed * 1000 + index)
    true = task_volumes(case.truth["cbf"], case.truth["tmax"], case.truth["brain"], grid.spacing_mm)
    base = {"family": family, "study": index, "true_core_ml": true["core_volume_ml"], "true_mismatch_ml": true["mismatch_volume_ml"],
            "true_ratio": true["mismatch_ratio"]}
    first, others = deconvolutions[0], {name: DECONVOLUTIONS[name] for name in deconvolutions[1:]}
    try:
        computed = compute_maps(CtpSeries(case.ctp, grid.affine, case.times_s), grid.spacing_mm, deconvolve=DECONVOLUTIONS[first],
                                also_deconvolve=others, tmax_from_residue=TMAX_FROM_RESIDUE[tmax_from],
                                mean_curve_ref="mean_curve" in references)
    except StrokeLabelError as error:
        return [{**base, "method": name, "refused": str(error)} for name in deconvolutions]
    rows = []
    true_label = task_label(case.truth, case.truth["brain"], grid.spacing_mm)  # the same for every deconvolution
    for name, reference in ((n, r) for n in deconvolutions for r in references):
        maps = computed.maps if name == first else computed.compared[name]
        reference_cbf = computed.reference.get("cbf_ml_100g_min") if reference == "mean_curve" else None
        ours = task_volumes(maps["cbf"], maps["tmax"], computed.mask, grid.spacing_mm, reference_cbf)
        row = {**base, "method": method_name(name, reference), "core_ml": ours["core_volume_ml"], "mismatch_ml": ours["mismatch_volume_ml"],
               "ratio": ours["mismatch_ratio"], "core_err_ml": ours["core_volume_ml"] - true["core_volume_ml"],
               "mismatch_err_ml": ours["mismatch_volume_ml"] - true["mismatch_volume_ml"],
               "flags": ",".join(f["flag"] for f in computed.flags) or "-"}
        for criteria in CRITERIA:
            key = criteria.name.lower().replace(" ", "")
            row[f"{key}_true"] = criteria.met(true["core_volume_ml"], true["hypoperfusion_volume_ml"])
            row[key] = criteria.met(ours["core_volume_ml"], ours["hypoperfusion_volume_ml"])
        row["task_core_dice"] = metrics.dice(task_label(maps, computed.mask, grid.spacing_mm, reference_cbf) == 1, true_label == 1)
        row["rcbf_bias"] = rcbf_bias(maps, computed.mask, case.truth, grid.spacing_mm, true_label, reference_cbf)
        if reference == "mean_curve":
            row["reference_threshold"] = computed.reference.get("threshold")
        rows.append(row)
    return rows


# The healthy side's CBF the rule divides by (--references): "median", the median of the map there (the app's); or
# "mean_curve", read from the healthy side's mean tissue curve (strokelabel.ctp4d.mean_curve_reference: measured, taken
# by rule 5 and then withdrawn for the false core it calls on small lesions, docs/ctp_boundary_decisions.md).
REFERENCES = ("median", "mean_curve")


def method_name(deconvolution: str, reference: str) -> str:
    return deconvolution if reference == "median" else f"{deconvolution}+{reference}"


def task_label(maps: dict, mask: np.ndarray, spacing_mm, reference_cbf: float | None = None) -> np.ndarray:
    return core_penumbra_baseline(maps["cbf"], maps["tmax"], spacing_mm, brain_mask=mask, check_units=False, reference_cbf=reference_cbf)


# --- where the core's edge moves: computed against true rCBF, CBF, Tmax (--boundary, printed per family) -----------

# Bins of the true rCBF (fraction of the healthy side's CBF, as the task's rule reads it): the core's edge is at 0.3.
RCBF_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.3, 5.0)


def rcbf_bias(maps: dict, mask: np.ndarray, truth: dict, spacing_mm, true_label: np.ndarray, reference_cbf: float | None = None) -> dict:
    """Where the computed maps move the rule's core edge, on one study: per bin of the true rCBF (:data:`RCBF_BINS`)
    the median computed rCBF, the median ratio of computed to true CBF and the median Tmax error (s); per tissue class
    of the task's rule on the true maps (core, penumbra, healthy brain) the same; and the contralateral reference
    itself (the healthy side's median CBF, strokelabel.baselines.perfusion.healthy_side_mask) on both maps.
    ``true_label``: the task's rule on the true maps (:func:`task_label`), which every deconvolution shares;
    ``reference_cbf``: the computed maps' reference if not their healthy side's median (:data:`REFERENCES`)."""
    brain = truth["brain"]
    mapped = mask & (maps["cbf"] > 0)
    scored = brain & mapped
    true_rcbf = relative_cbf(truth["cbf"], brain, spacing_mm, truth["tmax"])
    rcbf = relative_cbf(maps["cbf"], mapped, spacing_mm, maps["tmax"], reference_cbf=reference_cbf)
    true_reference = float(np.median(truth["cbf"][healthy_side_mask(truth["cbf"], brain, truth["tmax"])]))
    reference = float(np.median(maps["cbf"][healthy_side_mask(maps["cbf"], mapped, maps["tmax"])])) if reference_cbf is None else float(reference_cbf)

    def figures(where: np.ndarray) -> dict:
        if where.sum() < 20:
            return {}
        ratio = maps["cbf"][where] / np.maximum(truth["cbf"][where], 1e-3)
        return {"n": int(where.sum()), "true_rcbf": float(np.median(true_rcbf[where])), "rcbf": float(np.nanmedian(rcbf[where])),
                "cbf_ratio": float(np.median(ratio)), "tmax_err_s": float(np.median(maps["tmax"][where] - truth["tmax"][where]))}

    bins = {f"{low:g}-{high:g}": figures(scored & (true_rcbf >= low) & (true_rcbf < high)) for low, high in zip(RCBF_BINS[:-1], RCBF_BINS[1:])}
    classes = {"core": figures(scored & (true_label == 1)), "penumbra": figures(scored & (true_label == 2)),
               "healthy": figures(scored & (true_label == 0))}
    return {"bins": bins, "classes": classes, "true_reference": true_reference, "reference": reference,
            "reference_ratio": reference / true_reference}


def rcbf_bias_table(rows: list[dict]) -> list[dict]:
    """The studies' :func:`rcbf_bias` pooled (means of the per-study medians), one line per bin, class and the reference."""
    scored = [r["rcbf_bias"] for r in rows if "rcbf_bias" in r]
    out = []
    for group, title in (("bins", "true rCBF "), ("classes", "")):
        for key in (scored[0][group] if scored else {}):
            cells = [s[group][key] for s in scored if s[group].get(key)]
            if cells:
                out.append({"where": title + key, "studies": len(cells), "voxels": int(np.mean([c["n"] for c in cells])),
                            **{f: float(np.mean([c[f] for c in cells])) for f in ("true_rcbf", "rcbf", "cbf_ratio", "tmax_err_s")}})
    if scored:
        out.append({"where": "reference (healthy side's median CBF)", "studies": len(scored),
                    "true_rcbf": float(np.mean([s["true_reference"] for s in scored])), "rcbf": float(np.mean([s["reference"] for s in scored])),
                    "cbf_ratio": float(np.mean([s["reference_ratio"] for s in scored]))})
    return out


def boundary_summary(family: str, rows: list[dict]) -> dict:
    """A family's agreement: bias and 95 % limits of agreement (mL) of core and mismatch, verdicts that differ, flags."""
    scored = [r for r in rows if "core_ml" in r]
    out = {"family": family, "method": rows[0].get("method", "osvd") if rows else "-", "n": len(scored), "refused": len(rows) - len(scored)}
    for volume in ("core", "mismatch"):
        agreement = metrics.limits_of_agreement(r[f"{volume}_err_ml"] for r in scored)
        out[f"{volume}_bias_ml"] = agreement["bias"]
        out[f"{volume}_loa_ml"] = "-" if agreement["low"] is None else f"{agreement['low']:.1f} to {agreement['high']:.1f}"
    for criteria in CRITERIA:
        key = criteria.name.lower().replace(" ", "")
        out[f"{key}_differs"] = f"{sum(r[key] != r[f'{key}_true'] for r in scored)}/{len(scored)}"
    dices = [r["task_core_dice"] for r in scored if "task_core_dice" in r]
    out["task_core_dice"] = float(np.mean(dices)) if dices else None
    out["flagged"] = f"{sum(r['flags'] != '-' for r in scored)}/{len(scored)}"
    return out


BOUNDARY_COLUMNS = ["study", "true_core_ml", "core_ml", "true_mismatch_ml", "mismatch_ml", "true_ratio", "ratio",
                    "defuse3_true", "defuse3", "extend_true", "extend", "task_core_dice", "flags"]


def boundary(args) -> None:
    grid = grid_for("ctp", "small")
    families = args.families.split(",") if args.families else ["clean", "clinical_noise", *[f for f in FAMILIES if f not in ("clean", "clinical_noise")], "truncated"]
    deconvolutions = args.deconvolutions.split(",")
    references = args.references.split(",")
    methods = [method_name(n, r) for n in deconvolutions for r in references]
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    print(f"# Decisions near the treatment boundary: {args.boundary} studies per family, seed {args.seed}, grid {grid.shape} at "
          f"{grid.spacing_mm} mm, Tmax from the residue's {args.tmax_from}, deconvolutions {', '.join(deconvolutions)}, rCBF references {', '.join(references)}\n\n"
          f"{BOUNDARY_SCENARIO} occlusions whose task rule on the clean series' true maps gives a core of "
          f"{BOUNDARY_CORE_ML[0]:g}-{BOUNDARY_CORE_ML[1]:g} mL and a mismatch ratio of {BOUNDARY_RATIO[0]:g}-{BOUNDARY_RATIO[1]:g}. "
          "Errors are the task's rule on the maps computed from the 4D series minus the same rule on that family's true maps; "
          "loa: bias -/+ 1.96 SD; differs: the verdict (strokelabel.trial_criteria) on the computed maps is not the true maps'; "
          "task_core_dice: the rule's core on the computed maps against the rule's core on the true maps; "
          "flagged: a series-quality flag was raised (on clean and clinical_noise every flag is a false alarm).\n", flush=True)
    if args.boundary_studies:  # studies already found by boundary_patients (its log names them), to score again quickly
        patients = [(int(i), make_patient(study_seed(args.seed, "ctp", int(i)), scenario=BOUNDARY_SCENARIO))
                    for i in args.boundary_studies.split(",")][: args.boundary]
    else:
        patients = boundary_patients(args.boundary, args.seed, grid, log)
    summaries, disagreements, all_rows = [], [], []
    for family in families:
        rows = []
        for index, patient in patients:
            study_rows = boundary_row(family, index, patient, grid, args.seed, args.tmax_from, deconvolutions, references)
            rows += study_rows
            for r in study_rows:
                log(f"  {family} #{index} {r['method']}: " + (f"refused: {r['refused']}" if "refused" in r else
                    f"core {r['core_ml']:.1f} (true {r['true_core_ml']:.1f}) mL, mismatch {r['mismatch_ml']:.1f} (true {r['true_mismatch_ml']:.1f}) mL, "
                    f"ratio {r['ratio'] or 0:.2f} (true {r['true_ratio'] or 0:.2f}), reference x {r['rcbf_bias']['reference_ratio']:.3f}, "
                    f"task core Dice {r['task_core_dice']:.3f}, flags {r['flags']}"))
        all_rows += rows
        print(f"## {family}\n", flush=True)
        for name in methods:
            mine = [r for r in rows if r["method"] == name]
            summaries.append(boundary_summary(family, mine))
            disagreements += [r for r in mine if "core_ml" in r and any(r[k] != r[f"{k}_true"] for k in ("defuse3", "extend"))]
            print(f"### {family}, {name}\n", flush=True)
            print(metrics.format_table(mine, BOUNDARY_COLUMNS, digits=2, markdown=True) + "\n", flush=True)
            print(f"where the core's edge moves ({family}, {name}; means over the studies of each study's medians; cbf_ratio: "
                  "computed / true CBF; tmax_err_s: computed - true Tmax):\n", flush=True)
            print(metrics.format_table(rcbf_bias_table(mine), ["where", "studies", "voxels", "true_rcbf", "rcbf", "cbf_ratio", "tmax_err_s"],
                                       digits=3, markdown=True) + "\n", flush=True)
    print("## agreement per family\n")
    print(metrics.format_table(summaries, ["family", "method", "n", "refused", "core_bias_ml", "core_loa_ml", "mismatch_bias_ml", "mismatch_loa_ml",
                                           "defuse3_differs", "extend_differs", "task_core_dice", "flagged"], digits=2, markdown=True) + "\n")
    print(false_alarm_line([r for r in all_rows if "core_ml" in r and r["method"] == methods[0]]) + "\n")
    print("## every verdict that differs from the true maps'\n")
    if disagreements:
        print(metrics.format_table(disagreements, ["family", "method", *BOUNDARY_COLUMNS], digits=2, markdown=True) + "\n")
    else:
        print("none\n")


# --- clinical size: time and memory in a fresh process ------------------------------------


def write_clinical_series(folder: Path, seed: int) -> Path:
    import nibabel as nib

    patient = make_patient(study_seed(seed, "ctp", 1))
    patient = _with_protocol(patient, CLINICAL_FRAMES_S, 40)
    case = simulate_family(patient, CLINICAL_GRID, "clean", seed)
    img = nib.Nifti1Image(case.ctp, CLINICAL_GRID.affine)
    img.header.set_xyzt_units("mm", "sec")
    path = folder / "sub-clinical_ses-01_ctp.nii.gz"
    nib.save(img, str(path))
    (folder / "sub-clinical_ses-01_ctp.json").write_text(json.dumps({"FrameTimesStart": [float(t) for t in case.times_s]}))
    return path


def _with_protocol(patient, dt_s: float, n_frames: int):
    import dataclasses

    return dataclasses.replace(patient, ctp_protocol={"dt_s": dt_s, "n_frames": n_frames})


def measure(path: str, compute: bool, tmax_from: str = "peak") -> dict:
    """In this (fresh) process: seconds to load, to compute (wall, and CPU of the process), and the peak resident MiB."""
    started = time.perf_counter()
    series = read_ctp_nifti(path)
    out = {"shape": list(series.values.shape), "load_s": time.perf_counter() - started}
    if compute:
        started, cpu = time.perf_counter(), time.process_time()
        computed = compute_maps(series, series.spacing_mm, tmax_from_residue=TMAX_FROM_RESIDUE[tmax_from])
        out["compute_s"] = time.perf_counter() - started
        out["compute_cpu_s"] = time.process_time() - cpu
        out["in_plane_factor"] = computed.notes["in_plane_factor"]
        out["warnings"] = computed.warnings
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def clinical(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        path = write_clinical_series(Path(tmp), args.seed)
        print(f"# compute_maps at clinical size (Tmax from the residue's {args.tmax_from})\n\nphantom series written in {time.perf_counter() - started:.0f} s "
              f"({path.stat().st_size / 2**20:.0f} MiB int16 .nii.gz)\n", flush=True)
        results = {}
        for step, flag in (("load only", "--measure-load"), ("load + compute_maps", "--measure")):
            done = subprocess.run([sys.executable, __file__, flag, str(path), "--tmax-from", args.tmax_from], capture_output=True, text=True,
                                  check=True)
            results[step] = json.loads(done.stdout.strip().splitlines()[-1])
    rows = []
    for step, r in results.items():
        rows.append({"step": step, "shape": "x".join(map(str, r["shape"])), "load_s": r["load_s"], "compute_s": r.get("compute_s"),
                     "compute_cpu_s": r.get("compute_cpu_s"), "peak_MiB": r["peak_mib"], "in_plane_factor": r.get("in_plane_factor")})
    print(metrics.format_table(rows, digits=1, markdown=True))
    warned = results["load + compute_maps"].get("warnings")
    print(f"\nwarnings: {warned or 'none'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-family", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=("small", "clinical"), default="small")
    parser.add_argument("--families", default="", help=f"comma-separated, of {', '.join(FAMILIES)}, truncated (default all); also {', '.join(FLAG_FAMILIES)}")
    parser.add_argument("--deconvolutions", default="osvd", help=f"comma-separated, of {', '.join(DECONVOLUTIONS)}")
    parser.add_argument("--no-previous", action="store_true", help="skip the generator's own pipeline")
    parser.add_argument("--references", default="median",
                        help=f"comma-separated rCBF references, of {', '.join(REFERENCES)} (the app's: median)")
    parser.add_argument("--tmax-from", choices=tuple(TMAX_FROM_RESIDUE), default="peak", help="how compute_maps reads Tmax from the residue")
    parser.add_argument("--boundary", type=int, default=0, metavar="N",
                        help="the DEFUSE 3 / EXTEND decision table on N studies per family near the treatment boundary")
    parser.add_argument("--boundary-studies", default="", metavar="I,J,...",
                        help="with --boundary: these study indices (found by an earlier run) instead of searching")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--measure-load", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure or args.measure_load:
        print(json.dumps(measure(args.measure or args.measure_load, compute=bool(args.measure), tmax_from=args.tmax_from)))
    elif args.size == "clinical":
        clinical(args)
    elif args.boundary:
        boundary(args)
    else:
        accuracy(args)


if __name__ == "__main__":
    main()
