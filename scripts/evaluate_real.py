"""The real-data yardstick (issue 9): every task and method on real data trees, and on the same
studies stored in other conventions. Run through ``scripts/evaluate.py --real DIR [--variants]``.

DIR holds ISLES'22 and/or ISLES'24 trees as the challenges distribute them; studies are found
as the server's datastore finds them (:func:`harness.real_studies`). Per task, study and method
(baseline, model, each model route such as ischemic_lesion's ``siamese``, and ``auto``):

- where the data set ships an expert mask (ISLES'22 ``derivatives/…_msk``): Dice, precision,
  recall, predicted and expert volumes, volume error in mL and %, ISLES'22 lesion-wise F1 and
  lesion counts;
- perfusion maps without a mask (ISLES'24): agreement with the physiological definitions on
  one brain mask per study: the hypoperfusion (core + penumbra; ischemic_lesion's lesion)
  against Tmax > 6 s, and the core (ischemic_lesion's lesion) against rCBF < 30 % of the
  contralateral hemisphere, as volume ratio and Dice;
- the method ``auto`` served and why, the physiology guard's verdict and review flag when the
  result JSON carries them, and the seconds of each run.

``--variants`` derives each study in other conventions (:mod:`strokelabel.conventions`) in a
temporary folder and prints, per variant and method, the volumes and their change against the
unchanged study, the Dice against the unchanged study's label carried through the same
transform, and (ISLES'22) against the expert mask transformed the same way.

A run that fails is a row with its error, never a crash: the yardstick prints what a site
would get.

**Leaks are refused by the tool.** Before a model scores a study, the model card beside its
checkpoint is read (:func:`lib.checkpoints.real_cases_seen`): a study whose subject the card lists
in ``trained_on_real`` is not run and its row is marked ``REFUSED`` with the reason, and so is a
model with no card (what it learned from is unknown). The baseline, which learns nothing, is always
scored. ``--loo`` (:mod:`leave_one_out`) scores each real case with fold models that never saw it.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from harness import RealStudy, checkpoint_for, expert_mask_of, extra_methods, label_array, methods_of, real_studies, run_infer

from strokelabel import conventions, metrics
from strokelabel.baselines import RCBF_CORE_THRESHOLD, TMAX_HYPOPERFUSION_THRESHOLD_S, relative_cbf
from strokelabel.naming import find_final_infarct, find_modalities

# Task -> study kinds it reads (clot_region has no real case here yet, but is run if one is found).
REAL_TASK_KINDS = {"core_penumbra": ("ctp",), "ischemic_lesion": ("mri", "ctp"), "clot_region": ("cta",)}
# Task -> named masks of its label whose volumes are compared ("hypo" is scored against Tmax > 6 s,
# "core" against rCBF < 30 %): ischemic_lesion's CTP lesion is the core by the task's definition,
# and the issue compares it with Tmax > 6 s too, so it is scored against both.
MEASURES = {
    "core_penumbra": {"hypo": lambda label: label > 0, "core": lambda label: label == 1},
    "ischemic_lesion": {"lesion": lambda label: label > 0},
    "clot_region": {"clot": lambda label: label > 0},
}
PHYSIOLOGY_AS = {"core_penumbra": {"hypo": "hypo", "core": "core"}, "ischemic_lesion": {"hypo": "lesion", "core": "lesion"}}


@dataclass
class Run:
    """One task run on one study with one method."""

    task: str
    study: RealStudy
    method: str
    seconds: float
    label: np.ndarray | None = None
    result: dict = field(default_factory=dict)
    error: str | None = None
    refused: str | None = None  # why the study was not scored: the model learned from it (or may have)


def methods_for(name: str, task, kind: str, wanted: set[str] | None) -> list[str]:
    """Every method the task can run on this kind of study, then ``auto``; only ``wanted`` if given."""
    methods = list(dict.fromkeys(methods_of(task) + extra_methods(name, task, kind) + ["auto"]))
    return [m for m in methods if wanted is None or m in wanted]


def leak(task, study: RealStudy, method: str, reference: Path | None = None) -> str | None:
    """Why ``method`` must not score ``study`` (its model's card lists the study's subject as trained
    on, or the model has no card), else None."""
    from lib.checkpoints import card_path, real_cases_seen, saw_subject

    from strokelabel.naming import parse_filename

    checkpoint = checkpoint_for(task, method, reference or study.reference)
    if checkpoint is None:
        return None
    seen = real_cases_seen(checkpoint)
    name = Path(checkpoint).name
    if seen is None:
        return f"{name} has no model card ({Path(card_path(checkpoint)).name}): the cases it learned from are unknown"
    subject = parse_filename(study.reference.name).subject
    if saw_subject(seen, subject):
        return f"{name} was trained on sub-{subject} (its card's trained_on_real): a score on it would not be evidence"
    return None


def run_one(name: str, task, study: RealStudy, method: str, reference: Path | None = None, label: str | None = None, **options) -> Run:
    """One run; ``options`` are more request keys, and ``label`` names the row (default: the method)."""
    start = time.perf_counter()
    refused = leak(task, study, method, reference)
    if refused:
        return Run(name, study, label or method, 0.0, refused=refused)
    try:
        pred, result = run_infer(task, reference or study.reference, method, **options)
        return Run(name, study, label or method, time.perf_counter() - start, label_array(pred), result)
    except Exception as e:  # a failing run is a row of the yardstick, whatever raised
        return Run(name, study, label or method, time.perf_counter() - start, error=f"{type(e).__name__}: {e}")


def run_all(tasks: dict, studies: list[RealStudy], wanted: set[str] | None) -> list[Run]:
    runs = []
    for name, task in tasks.items():
        for study in studies:
            if study.kind not in REAL_TASK_KINDS.get(name, ()):
                continue
            for method in methods_for(name, task, study.kind, wanted):
                run = run_one(name, task, study, method)
                runs.append(run)
                print(f"[evaluate --real] {name} {method:8s} {study.study_id}: {run.seconds:.1f}s"
                      + (f" FAILED {run.error}" if run.error else "") + (f" REFUSED {run.refused}" if run.refused else ""), file=sys.stderr)
    return runs


# ---- columns every table shares -----------------------------------------------------------------
def served_by(result: dict) -> str | None:
    """What answered: the method and, for a task with routes, the route."""
    if not result.get("method"):
        return None
    return f"{result['method']}/{result['route']}" if result.get("route") else result["method"]


def verdict_columns(run: Run) -> dict:
    quality = run.result.get("quality")
    return {
        "served": "REFUSED" if run.refused else (served_by(run.result) if not run.error else "FAILED"),
        "guard": (("pass" if quality.get("passed") else "fail") if isinstance(quality, dict) and "passed" in quality else None),
        "review": run.result.get("review"),
        "seconds": run.seconds,
    }


VERDICT_COLUMNS = ["served", "guard", "review", "seconds"]


def notes(runs: list[Run]) -> list[str]:
    """One line per auto run (what it served and why, the guard's verdict) and per failed run."""
    lines = []
    for run in runs:
        where = f"{run.method} on {run.study.study_id}"
        if run.refused:
            lines.append(f"- {where} REFUSED: {run.refused}")
            continue
        if run.error:
            lines.append(f"- {where} failed: {run.error}")
            continue
        if run.method != "auto":
            continue
        result = run.result
        reason = result.get("method_reason") or "the result gives no reason"
        line = f"- auto on {run.study.study_id} served {served_by(result)}: {reason}"
        quality = result.get("quality")
        if isinstance(quality, dict):
            figures = {k: v for k, v in quality.items() if k != "passed"}
            line += f"; guard passed={quality.get('passed')} {figures}"
        if "review" in result:
            line += f"; review={result['review']}" + (f": {result['review_reason']}" if result.get("review_reason") else "")
        lines.append(line)
    return lines


# ---- studies with an expert mask ------------------------------------------------------------------
def expert_mask(study: RealStudy, reference: Path | None = None) -> np.ndarray:
    """The expert mask on the reference's stored grid (resampled by nearest neighbour if it was stored on another)."""
    reference = nib.load(str(reference or study.reference))
    mask = nib.load(str(study.expert_mask))
    values = np.asanyarray(mask.dataobj) > 0
    if values.shape[:3] != reference.shape[:3] or not np.allclose(mask.affine, reference.affine, atol=1e-3):
        values = conventions.resample_array(values, mask.affine, reference.shape[:3], reference.affine, order=0)
    return values


def voxel_ml(reference: Path) -> float:
    return float(abs(np.linalg.det(nib.load(str(reference)).affine[:3, :3]))) / 1000.0


def expert_row(run: Run, truth: np.ndarray) -> dict:
    row = {"study": run.study.study_id, "method": run.method}
    if run.label is not None:
        pred = run.label > 0
        ml = voxel_ml(run.study.reference)
        counts = metrics.lesion_counts(pred, truth)
        pred_ml, mask_ml = pred.sum() * ml, truth.sum() * ml
        row.update({
            "dice": metrics.dice(pred, truth), "precision": metrics.precision(pred, truth), "recall": metrics.recall(pred, truth),
            "pred_ml": pred_ml, "mask_ml": mask_ml, "vol_err_ml": pred_ml - mask_ml,
            "vol_err_pct": 100.0 * (pred_ml - mask_ml) / mask_ml if mask_ml else None,
            "abs_vol_diff_ml": abs(pred_ml - mask_ml), "fp_ml": metrics.false_positive_volume_ml(pred, truth, spacings_mm(run.study.reference)),
            "lesion_f1": metrics.lesion_f1(pred, truth), "n_pred": counts["n_pred"], "n_mask": counts["n_true"],
            "abs_count_diff": abs(counts["n_pred"] - counts["n_true"]), "detected": counts["tp"],
            "largest_found": metrics.largest_lesion_detected(pred, truth),
        })
    return {**row, **verdict_columns(run)}


def spacings_mm(reference: Path) -> tuple[float, ...]:
    return tuple(float(s) for s in np.linalg.norm(nib.load(str(reference)).affine[:3, :3], axis=0))


EXPERT_COLUMNS = ["study", "method", "dice", "precision", "recall", "pred_ml", "mask_ml", "vol_err_ml", "vol_err_pct", "abs_vol_diff_ml",
                  "fp_ml", "lesion_f1", "n_pred", "n_mask", "abs_count_diff", "detected", "largest_found"] + VERDICT_COLUMNS


def pooled_rows(runs: list[Run], truths: dict) -> list[dict]:
    """Per method, over the studies it scored: pooled Dice (voxels summed over the studies), mean
    lesion-wise F1, mean and largest false-positive volume, largest lesions found, studies refused."""
    out = []
    for method in dict.fromkeys(run.method for run in runs):
        scored = [run for run in runs if run.method == method and run.label is not None]
        row = {"method": method, "n": len(scored), "refused": sum(1 for run in runs if run.method == method and run.refused)}
        if scored:
            pairs = [(run.label > 0, truths[run.study]) for run in scored]
            fp = [metrics.false_positive_volume_ml(p, t, spacings_mm(run.study.reference)) for (p, t), run in zip(pairs, scored)]
            found = [metrics.largest_lesion_detected(p, t) for p, t in pairs]
            row.update({"pooled_dice": metrics.pooled_dice(pairs), "mean_dice": float(np.mean([metrics.dice(p, t) for p, t in pairs])),
                        "mean_lesion_f1": float(np.mean([metrics.lesion_f1(p, t) for p, t in pairs])), "mean_fp_ml": float(np.mean(fp)),
                        "max_fp_ml": float(np.max(fp)), "largest_found": f"{sum(bool(f) for f in found)}/{sum(f is not None for f in found)}"})
        out.append(row)
    return out


POOLED_COLUMNS = ["method", "n", "refused", "pooled_dice", "mean_dice", "mean_lesion_f1", "mean_fp_ml", "max_fp_ml", "largest_found"]


# ---- perfusion maps without a mask: the physiological definitions --------------------------------
@dataclass
class Physiology:
    """Tmax > 6 s and rCBF < 30 % of one study on one brain mask, on the reference's stored grid."""

    mask_source: str
    brain: np.ndarray | None = None
    tmax6: np.ndarray | None = None
    rcbf30: np.ndarray | None = None
    error: str | None = None


LOADER_MASK = "the loader's (Study.brain_mask: the one every method uses)"
# An adult brain with its CSF is 1.1-1.7 L; a mask above this took background for brain.
MAX_BRAIN_ML = 2000.0


def physiology_of(reference: Path) -> Physiology:
    """The physiological definitions on the loaded study's maps, inside the loader's brain mask (the
    one every method uses), restricted to voxels with a perfusion signal (CBF > 0 or Tmax > 0, as the
    baseline does: filled ventricles carry none); brought back to the study's stored grid."""
    from strokelabel.study import load_study

    source = LOADER_MASK
    try:
        study = load_study(reference, ("cbf", "tmax"), ("cbv", "mip"))
        brain = study.brain_mask
        cbf, tmax = (np.asarray(study.images[m], dtype=np.float64) for m in ("cbf", "tmax"))
        tissue = brain & ((cbf > 0) | (tmax > 0))
        tmax6 = tissue & (tmax > TMAX_HYPOPERFUSION_THRESHOLD_S)
        rcbf = relative_cbf(cbf, tissue, study.spacing_mm, tmax, reference="contralateral")  # RAS: axis 0 is left-right
        rcbf30 = tissue & (rcbf < RCBF_CORE_THRESHOLD)
    except Exception as e:
        return Physiology(source, error=f"{type(e).__name__}: {e}")
    stored = lambda values: study.to_native(values).astype(bool)  # noqa: E731
    return Physiology(source, stored(brain), stored(tmax6), stored(rcbf30))


def physiology_row(run: Run, physiology: Physiology) -> dict:
    row = {"study": run.study.study_id, "method": run.method}
    if physiology.brain is not None:
        ml = voxel_ml(run.study.reference)
        row.update({"brain_ml": physiology.brain.sum() * ml, "tmax6_ml": physiology.tmax6.sum() * ml, "rcbf30_ml": physiology.rcbf30.sum() * ml})
    if run.label is not None:
        ml = voxel_ml(run.study.reference)
        for name, measure in PHYSIOLOGY_AS[run.task].items():
            pred = MEASURES[run.task][measure](run.label)
            row[f"{name}_ml"] = pred.sum() * ml
            truth = physiology.tmax6 if name == "hypo" else physiology.rcbf30
            if truth is not None:
                truth_ml = truth.sum() * ml
                row[f"{name}_ratio"] = row[f"{name}_ml"] / truth_ml if truth_ml else math.inf
                row[f"{name}_dice"] = metrics.dice(pred, truth)
    return {**row, **verdict_columns(run)}


PHYSIOLOGY_COLUMNS = ["study", "method", "brain_ml", "hypo_ml", "tmax6_ml", "hypo_ratio", "hypo_dice", "core_ml", "rcbf30_ml",
                      "core_ratio", "core_dice"] + VERDICT_COLUMNS


def final_infarct_row(run: Run) -> dict:
    """Core and hypoperfusion (ischemic_lesion: its lesion) of the acute answer against the follow-up infarct."""
    row = {"study": run.study.study_id, "method": run.method}
    mask = nib.load(str(find_final_infarct(run.study.reference)))
    reference = nib.load(str(run.study.reference))
    truth = np.asanyarray(mask.dataobj) > 0
    if truth.shape[:3] != reference.shape[:3] or not np.allclose(mask.affine, reference.affine, atol=1e-3):
        truth = conventions.resample_array(truth, mask.affine, reference.shape[:3], reference.affine, order=0)
    ml = voxel_ml(run.study.reference)
    row["final_ml"] = truth.sum() * ml
    if run.label is not None:
        for name, measure in PHYSIOLOGY_AS[run.task].items():
            pred = MEASURES[run.task][measure](run.label)
            row[f"{name}_ml"] = pred.sum() * ml
            row[f"{name}_dice_final"] = metrics.dice(pred, truth)
    return {**row, **verdict_columns(run)}


FINAL_COLUMNS = ["study", "method", "final_ml", "core_ml", "core_dice_final", "hypo_ml", "hypo_dice_final"] + VERDICT_COLUMNS


def volume_row(run: Run) -> dict:
    row = {"study": run.study.study_id, "method": run.method}
    if run.label is not None:
        ml = voxel_ml(run.study.reference)
        row.update({f"{name}_ml": measure(run.label).sum() * ml for name, measure in MEASURES[run.task].items()})
    return {**row, **verdict_columns(run)}


def print_real_tables(runs: list[Run], top: Path) -> None:
    studies = list(dict.fromkeys(run.study for run in runs))
    print(f"# StrokeLabel on real data: {len(studies)} studies under {top}")
    for name in dict.fromkeys(run.task for run in runs):
        task_runs = [run for run in runs if run.task == name]
        with_mask = [run for run in task_runs if run.study.expert_mask is not None]
        if with_mask:
            truths = {study: expert_mask(study) for study in dict.fromkeys(run.study for run in with_mask)}
            rows = [expert_row(run, truths[run.study]) for run in with_mask]
            print(f"\n## {name}: against the expert mask the data set ships (ISLES'22 metrics; lesion-wise F1 and counts "
                  "over 26-connected components; volumes in mL; fp_ml = predicted mL farther than 2 voxels from the expert mask)\n")
            print_rows(rows, EXPERT_COLUMNS)
            print(f"\n## {name}: pooled over the studies each method scored (pooled_dice: voxels summed over the studies)\n")
            print(metrics.format_table(pooled_rows(with_mask, truths), POOLED_COLUMNS))
            print_notes(with_mask)
        perfusion = [run for run in task_runs if run.study.expert_mask is None and run.study.kind == "ctp" and name in PHYSIOLOGY_AS]
        if perfusion:
            physiology = {study: physiology_of(study.reference) for study in dict.fromkeys(run.study for run in perfusion)}
            sources = sorted({p.mask_source for p in physiology.values()})
            print(f"\n## {name}: perfusion maps without a mask, against the physiological definitions (Tmax > "
                  f"{TMAX_HYPOPERFUSION_THRESHOLD_S:g} s; rCBF < {RCBF_CORE_THRESHOLD:.0%} of the contralateral hemisphere, "
                  f"strokelabel.baselines.relative_cbf) on the same brain mask per study: {'; '.join(sources)}, restricted to voxels "
                  "with a perfusion signal (CBF > 0 or Tmax > 0)")
            if name == "ischemic_lesion":
                print("ischemic_lesion's CTP lesion is the core by the task's definition: its volume is the hypo_ml and the core_ml "
                      "column, scored against Tmax > 6 s and against rCBF < 30 %")
            print()
            print_rows([physiology_row(run, physiology[run.study]) for run in perfusion], PHYSIOLOGY_COLUMNS)
            for study, p in physiology.items():
                if p.error:
                    print(f"- physiological reference of {study.study_id} not computed: {p.error}")
                elif p.brain.sum() * voxel_ml(study.reference) > MAX_BRAIN_ML:
                    print(f"- the brain mask of {study.study_id} is larger than any brain (> {MAX_BRAIN_ML:g} mL): "
                          "the fill outside the brain was taken for tissue, and the figures on it mean little")
            print_notes(perfusion)
        final = [run for run in perfusion if find_final_infarct(run.study.reference) is not None]
        if final:
            print(f"\n## {name}: against the final infarct on follow-up MRI (ISLES'24's target, session 02, same space): what the "
                  "acute answer predicts of the tissue finally lost; neither core nor penumbra is meant to equal it (reperfusion "
                  "saves penumbra, an untreated course loses it)\n")
            print_rows([final_infarct_row(run) for run in final], FINAL_COLUMNS)
        rest = [run for run in task_runs if run not in with_mask and run not in perfusion]
        if rest:
            print(f"\n## {name}: studies with neither an expert mask nor perfusion maps (volumes only)\n")
            print_rows([volume_row(run) for run in rest], ["study", "method"] + [f"{m}_ml" for m in MEASURES[name]] + VERDICT_COLUMNS)
            print_notes(rest)


def print_rows(rows: list[dict], columns: list[str]) -> None:
    print(metrics.format_table(rows, columns))
    if len({row["study"] for row in rows}) > 1:
        print("\nmean over studies:\n")
        print(metrics.format_table(metrics.summarise(rows, by="method"), [c for c in columns if c not in ("study", "served", "guard")]))


def print_notes(runs: list[Run]) -> None:
    lines = notes(runs)
    if lines:
        print()
        print("\n".join(lines))


# ---- the same studies in other conventions ----------------------------------------------------------
def same_grid_files(study: RealStudy) -> tuple[dict[str, Path], list[str]]:
    """The study's 3D modalities on the reference's grid, and the expert mask (key ``msk``); the
    names of the files left out (other grids, 4D series), which the variants cannot carry alike."""
    reference = nib.load(str(study.reference))
    files, skipped = {}, []
    for modality, path in find_modalities(study.reference).items():
        img = nib.load(str(path))
        if len(img.shape) == 3 and img.shape == reference.shape and np.allclose(img.affine, reference.affine, atol=1e-3):
            files[modality] = path
        else:
            skipped.append(path.name)
    if study.expert_mask is not None:
        files["msk"] = study.expert_mask
    return files, skipped


def dice_or_none(pred: np.ndarray, truth: np.ndarray) -> float | None:
    return metrics.dice(pred, truth) if pred.shape == truth.shape else None


def variant_row(run: Run, variant_name: str, original: Run | None, carried: np.ndarray | None, truth: np.ndarray | None,
                reference: Path) -> dict:
    row = {"variant": variant_name, "method": run.method}
    if run.label is not None:
        ml = voxel_ml(reference)
        for name, measure in MEASURES[run.task].items():
            pred = measure(run.label)
            row[f"{name}_ml"] = pred.sum() * ml
            if original is not None and original.label is not None:
                before = measure(original.label).sum() * voxel_ml(original.study.reference)
                row[f"{name}_change_pct"] = 100.0 * (row[f"{name}_ml"] - before) / before if before else None
            if carried is not None:
                row[f"{name}_dice_vs_original"] = dice_or_none(pred, measure(carried))
        if truth is not None:
            row["dice_vs_expert"] = dice_or_none(run.label > 0, truth)
    return {**row, **verdict_columns(run)}


def variant_columns(name: str, with_mask: bool) -> list[str]:
    measures = list(MEASURES[name])
    columns = ["variant", "method"]
    for m in measures:
        columns += [f"{m}_ml", f"{m}_change_pct"]
    columns += [f"{m}_dice_vs_original" for m in measures]
    return columns + (["dice_vs_expert"] if with_mask else []) + VERDICT_COLUMNS


@dataclass
class VariantTable:
    """The robustness rows of one task on one study: the unchanged study first, then each variant."""

    task: str
    study: RealStudy
    variants: list
    skipped: list[str]
    rows: list[dict] = field(default_factory=list)


def variant_tables(tasks: dict, studies: list[RealStudy], top: Path, runs: list[Run], wanted: set[str] | None,
                   workdir: Path) -> list[VariantTable]:
    """Each study written in every :func:`strokelabel.conventions.standard_variants` of its kind under
    ``workdir`` (tree and names kept), every task and method run on it, and compared with ``runs``
    on the unchanged study."""
    original_runs = {(run.task, run.study, run.method): run for run in runs}
    tables = []
    for study in studies:
        files, skipped = same_grid_files(study)
        reference_img = nib.load(str(study.reference))
        variants = conventions.standard_variants(study.kind, stored_dtype=np.asanyarray(reference_img.dataobj).dtype)
        by_task = {name: VariantTable(name, study, variants, skipped) for name in tasks if study.kind in REAL_TASK_KINDS.get(name, ())}
        truth = expert_mask(study) if study.expert_mask else None
        for name, table in by_task.items():
            for method in methods_for(name, tasks[name], study.kind, wanted):
                original = original_runs[(name, study, method)]
                table.rows.append(variant_row(original, "unchanged", original, original.label, truth, study.reference))
        for variant in variants:
            folder = workdir / variant.name.replace(" ", "_")
            written = conventions.write_variant_study(files, top, folder, variant, labels={"msk"})
            reference = written[next(k for k, p in files.items() if p == study.reference)]
            variant_study = RealStudy(reference, study.kind, expert_mask_of(reference, folder))
            variant_truth = expert_mask(variant_study) if variant_study.expert_mask else None
            for name, table in by_task.items():
                for method in methods_for(name, tasks[name], study.kind, wanted):
                    original = original_runs[(name, study, method)]
                    carried = None
                    if original.label is not None:
                        label_img = conventions.image_like(reference_img, original.label.astype(np.uint8))
                        carried = np.asanyarray(variant.apply({"label": label_img}, labels={"label"})["label"].dataobj)
                    run = run_one(name, tasks[name], variant_study, method)
                    print(f"[evaluate --variants] {name} {method:8s} {study.study_id} {variant.name}: {run.seconds:.1f}s"
                          + (f" FAILED {run.error}" if run.error else ""), file=sys.stderr)
                    row = variant_row(run, variant.name, original, carried, variant_truth, reference)
                    if run.error:
                        row["error"] = run.error
                    table.rows.append(row)
        tables.extend(by_task.values())
    return tables


def print_variant_tables(tables: list[VariantTable]) -> None:
    for table in tables:
        with_mask = table.study.expert_mask is not None
        print(f"\n## {table.task} on {table.study.study_id} stored in other conventions (volumes in mL; change vs the unchanged "
              "study in %; Dice against the unchanged study's label carried through the same transform"
              + (", and against the expert mask transformed alike" if with_mask else "") + ")\n")
        print(metrics.format_table(table.rows, variant_columns(table.task, with_mask)))
        print()
        for variant in table.variants:
            print(f"- {variant.name}: {variant.models}")
        if table.skipped:
            print(f"- left out of every variant (not on the reference grid, or 4D): {', '.join(table.skipped)}")
        for row in table.rows:
            if row.get("error"):
                print(f"- {row['method']} on {row['variant']} failed: {row['error']}")


def main_real(tasks: dict, top: str | Path, variants: bool = False, methods: str = "all") -> int:
    """``evaluate.py --real DIR [--variants]``: print the real-data tables; 1 if no study was found."""
    top = Path(top)
    studies = real_studies(top)
    if not studies:
        print(f"no study found under {top} (expected reference volumes …_tmax, …_dwi or …_acq-phase1_cta .nii.gz)", file=sys.stderr)
        return 1
    wanted = None if methods == "all" else set(methods.split(","))
    start = time.perf_counter()
    runs = run_all(tasks, studies, wanted)
    print_real_tables(runs, top)
    print(f"\n({len(runs)} runs in {time.perf_counter() - start:.0f} s)")
    if variants:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="strokelabel-variants-") as workdir:
            print_variant_tables(variant_tables(tasks, studies, top, runs, wanted, Path(workdir)))
        print(f"\n(variants in {time.perf_counter() - start:.0f} s)")
    return 0
