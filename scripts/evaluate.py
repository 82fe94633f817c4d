"""Accuracy of every task against phantom ground truth, each method in the same run.

Generates held-out phantom studies (a seed apart from the sample data), runs the app's own infer
tasks in-process with every method available (the training-free baseline always; the learned
model when one is installed), and prints per-method tables: Dice, precision, recall, volume
error (mL), HD95 (mm), lesion-wise F1 and count difference, and for clots the region-flag
precision/recall/F1/accuracy per study and per slice (seed 002), detection and centre distance.

    .venv/bin/python scripts/evaluate.py [--per-kind 6] [--seed 9000] [--tasks core_penumbra,...]

With ``--real DIR`` it measures real data trees instead (ISLES'22/'24 as distributed; see
``scripts/evaluate_real.py``), and with ``--variants`` also the same studies stored in other
conventions (orientation, oblique thick slices, units, skull, mirror, dtype, fill values):

    .venv/bin/python scripts/evaluate.py --real ../shared/real [--variants] [--methods baseline,auto]

A model is never scored on a real case its model card lists as trained on (the row is marked
REFUSED). ``--loo`` scores each real ISLES'22 case with fold models that never saw it, trained by
the app's trainer (see ``scripts/leave_one_out.py``; minutes per fold are printed):

    .venv/bin/python scripts/evaluate.py --real ../shared/real/isles22 --loo [--loo-dir /tmp/loo] [--loo-folds sub-strokecase0001]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from harness import (PHANTOM_SETS, TASK_KINDS, TASK_TARGET, extra_methods, held_out_studies, load_infer_tasks, methods_of, run_infer,
                     truth_of, truth_verdict)

from strokelabel import metrics
from strokelabel.baselines import region_flags
from strokelabel.naming import study_kind


def score_core_penumbra(pred, truth, spacing_mm, result, info) -> dict:
    row = {}
    for name, p, t in (("core", pred == 1, truth == 1), ("penumbra", pred == 2, truth == 2), ("hypo", pred > 0, truth > 0)):
        scores = metrics.segmentation_scores(p, t, spacing_mm)
        for key in ("dice", "precision", "recall", "abs_volume_error_ml", "hd95_mm"):
            row[f"{name}_{key}"] = scores[key]
    # Does the method put the study on the same side of the DEFUSE 3 imaging criteria as the truth?
    if "defuse3_imaging_criteria_met" in result:
        from strokelabel.baselines import core_penumbra_figures

        true_figures = core_penumbra_figures(np.asarray(truth), spacing_mm)
        row["defuse3_agree"] = bool(result["defuse3_imaging_criteria_met"] == true_figures["defuse3_imaging_criteria_met"])
    return row


def minus_baseline(table: list[dict], by: str, columns: list[str]) -> list[dict]:
    """Per set and kind, each method's mean minus the baseline's on the same studies, per score column
    (``by`` values are ``set/kind/method``); empty when there is nothing but the baseline."""
    rows = {row[by]: row for row in table}
    out = []
    for key, row in rows.items():
        prefix, method = key.rsplit("/", 1)
        base = rows.get(f"{prefix}/baseline")
        if method == "baseline" or base is None:
            continue
        diff = {by: f"{prefix}/{method} - baseline", "n": row["n"]}
        for c in columns:
            if c not in (by, "n", "seconds", "guard_pass", "model_served") and isinstance(row.get(c), float) and isinstance(base.get(c), float):
                diff[c] = row[c] - base[c]
        out.append(diff)
    return out


def score_lesion(pred, truth, spacing_mm, result, info) -> dict:
    scores = metrics.segmentation_scores(pred > 0, truth > 0, spacing_mm)
    scores["abs_lesion_count_difference"] = abs(scores.pop("lesion_count_difference"))
    return scores


def score_clot(pred, truth, spacing_mm, result, info, atlas=None) -> dict:
    row = {"clot_dice": metrics.dice(pred > 0, truth > 0)}
    row.update({k: v for k, v in metrics.clot_detection(pred > 0, truth > 0, spacing_mm).items() if k != "clot_present_true"})
    true_flags = np.asarray(info["figures"]["clot_region_flags"], dtype=bool)
    if result.get("regions"):
        pred_flags = np.array([r["clot"] for r in result["regions"]], dtype=bool)
        row.update({f"study_{k}": v for k, v in metrics.region_flag_scores(pred_flags, true_flags).items() if k != "exact_match"})
        row["study_exact_match"] = bool(np.array_equal(pred_flags, true_flags))
    if atlas is not None:
        per_slice = metrics.region_flag_scores(region_flags(pred > 0, atlas, slice_axis=2), region_flags(truth > 0, atlas, slice_axis=2))
        row.update({f"slice_{k}": per_slice[k] for k in ("precision", "recall", "f1", "accuracy")})
    return row


SCORERS = {"core_penumbra": score_core_penumbra, "ischemic_lesion": score_lesion, "clot_region": score_clot}
COLUMNS = {
    "core_penumbra": ["method", "n", "core_dice", "penumbra_dice", "hypo_dice", "core_precision", "core_recall",
                      "core_abs_volume_error_ml", "penumbra_abs_volume_error_ml", "core_hd95_mm", "hypo_hd95_mm", "defuse3_agree",
                      "guard_pass", "model_served", "seconds"],
    "ischemic_lesion": ["method", "n", "dice", "precision", "recall", "abs_volume_error_ml", "lesion_f1",
                        "abs_lesion_count_difference", "hd95_mm", "guard_pass", "model_served", "seconds"],
    "clot_region": ["method", "n", "study_precision", "study_recall", "study_f1", "study_accuracy", "slice_precision",
                    "slice_recall", "slice_f1", "slice_accuracy", "clot_dice", "clot_detected", "clot_centre_distance_mm", "guard_pass",
                    "model_served", "seconds"],
}


def served_columns(method: str, result: dict) -> dict:
    """``guard_pass`` (1/0) for a model run; ``model_served`` (1/0) for ``auto``: the shares the tables average."""
    if method == "auto":
        return {"model_served": float(result.get("method") == "model")}
    if "passed" in result.get("quality", {}) and method != "baseline":
        return {"guard_pass": float(result["quality"]["passed"])}
    return {}


def evaluate(tasks: dict, studies: list[dict], root, methods: tuple | None = None, truth_guard: bool = False) -> dict[str, list[dict]]:
    """Every task on ``studies`` with every method it can run (only ``methods`` if given); with
    ``truth_guard`` a ``truth`` row holds the guard's verdict on the ground truth itself."""
    rows: dict[str, list[dict]] = {name: [] for name in tasks}
    for name, task in tasks.items():
        for study in studies:
            reference = study["reference"]
            kind = study_kind(reference)
            if kind not in TASK_KINDS[name]:
                continue
            truth, info = truth_of(reference, root, TASK_TARGET[name])
            if truth_guard:
                rows[name].append({"study": reference.name.split(".nii")[0], "kind": kind, "method": "truth",
                                   "quality": truth_verdict(task, reference, truth)})
            for method in methods_of(task) + extra_methods(name, task, kind):
                if methods is not None and method not in methods:
                    continue
                start = time.perf_counter()
                pred, result = run_infer(task, reference, method)
                seconds = time.perf_counter() - start
                spacing = tuple(float(s) for s in np.linalg.norm(study_affine(reference)[:3, :3], axis=0))
                extra = {"atlas": load_atlas(study)} if name == "clot_region" else {}
                row = {"study": reference.name.split(".nii")[0], "kind": kind, "method": method, "seconds": seconds,
                       "quality": result.get("quality"), **served_columns(method, result)}
                row.update(SCORERS[name](pred, truth, spacing, result, info, **extra))
                rows[name].append(row)
                print(f"[evaluate] {name} {method:8s} {row['study']}: {seconds:.1f}s", file=sys.stderr)
                if name == "clot_region" and "classifier_regions" in result:
                    # The region classifier's own flags, from the same inference (AMI-Net, seed 002).
                    rows[name].append({**row, "method": "classifier", **score_classifier(result, info, extra["atlas"], truth)})
    return rows


def score_classifier(result: dict, info: dict, atlas, truth) -> dict:
    """Region-flag scores of the classifier's flags (study level, and per slice if there is an atlas)."""
    true_flags = np.asarray(info["figures"]["clot_region_flags"], dtype=bool)
    pred_flags = np.array([r["clot"] for r in result["classifier_regions"]], dtype=bool)
    row = {f"study_{k}": v for k, v in metrics.region_flag_scores(pred_flags, true_flags).items() if k != "exact_match"}
    row.update({k: None for k in ("clot_dice", "clot_detected", "clot_centre_distance_mm")})  # no voxels: not scored
    if atlas is not None:
        base = result["classifier_regions"][0]["region"]
        per_slice = np.zeros((truth.shape[2], len(pred_flags)), bool)
        for z, regions in result.get("classifier_slice_regions", {}).items():
            per_slice[int(z), [r - base for r in regions]] = True
        scores = metrics.region_flag_scores(per_slice, region_flags(truth > 0, atlas, slice_axis=2))
        row.update({f"slice_{k}": scores[k] for k in ("precision", "recall", "f1", "accuracy")})
    return row


# ---- ischemic_lesion: ISLES'22-layout phantoms and the comparison with seed 003 ----------------
SEED_003_NOTE = """Seed 003 (MDANet, 2-D, 25.3 M parameters) reports Dice 58.3 on ISLES 2018 (CTP) and 70.4 on ISLES 2022 (MRI).
The phantoms are EASIER than ISLES in: one lesion per study from one occluded vessel (ISLES'22 has many small
emboli), no motion or susceptibility artefacts, a lesion contrast that follows the model exactly (ADC 0.40-0.55 in
the core), the same scanner model for every study, and truth that is the generating rule (no inter-rater noise).
They are HARDER in: tiny training sets (9 studies per route for the shipped models, vs 94/250 in ISLES), 2-D
models 50x smaller than the seed's, lesion sizes from <1 mL to >300 mL, ADC in two units and skull-stripped or
not, and on CTP a core defined from the true rCBF that the derived maps only approximate (noise, bcSVD).
So a phantom Dice is not comparable to the seed's numbers; it shows that the pipeline learns and where it fails."""


def evaluate_isles22(task, root, n: int, seed: int, methods: tuple | None = None, truth_guard: bool = False, **generator) -> list[dict]:
    """ischemic_lesion on held-out MRI phantoms in the ISLES'22 layout (masks under derivatives/)."""
    from pathlib import Path

    from strokelabel.naming import find_derivative_mask
    from strokelabel.phantom.isles_layout import generate_isles_dataset

    root = Path(root) / "isles22"
    records = generate_isles_dataset(root, n=n, seed=seed, progress=lambda *a, **k: print(*a, file=sys.stderr, **k), **generator)
    rows = []
    for record in records:
        reference = record["reference"]
        truth = np.asarray(nib.load(str(find_derivative_mask(root, reference))).dataobj)
        truth = truth[..., 0] if truth.ndim == 4 else truth
        if truth_guard:
            rows.append({"study": reference.name.split(".nii")[0], "kind": "isles22", "method": "truth",
                         "quality": truth_verdict(task, reference, truth)})
        spacing = tuple(float(s) for s in np.linalg.norm(study_affine(reference)[:3, :3], axis=0))
        for method in methods_of(task) + extra_methods("ischemic_lesion", task, "mri"):
            if methods is not None and method not in methods:
                continue
            start = time.perf_counter()
            pred, result = run_infer(task, reference, method)
            seconds = time.perf_counter() - start
            row = {"study": reference.name.split(".nii")[0], "kind": "isles22", "method": method, "seconds": seconds,
                   "adc_unit": record["quirks"]["adc_unit"], "skull_stripped": record["quirks"]["skull_stripped"],
                   "quality": result.get("quality"), **served_columns(method, result)}
            row.update(score_lesion(pred, truth, spacing, result, record))
            rows.append(row)
            print(f"[evaluate] ischemic_lesion {method:8s} {row['study']}: {seconds:.1f}s", file=sys.stderr)
    return rows


def evaluate_without_spiral(task, studies: list[dict], root) -> list[dict]:
    """clot_region on the same CTA studies with their SPIRAL map removed, as a site without SPIRAL
    has them: the CTA-only segmentation runs when installed, else the main one with its SPIRAL
    channel zeroed (the baseline needs SPIRAL and cannot run)."""
    import shutil
    from pathlib import Path

    rows = []
    for study in studies:
        reference = Path(study["reference"])
        if study_kind(reference) != "cta" or not task.model_available():
            continue
        folder = Path(root) / "no-spiral" / reference.parent.relative_to(Path(root))
        folder.mkdir(parents=True, exist_ok=True)
        for path in reference.parent.iterdir():
            if path.is_file() and not path.name.endswith("_spiral.nii.gz"):
                shutil.copy(path, folder / path.name)
        truth, info = truth_of(reference, root, "clot")
        start = time.perf_counter()
        pred, result = run_infer(task, folder / reference.name, "model")
        seconds = time.perf_counter() - start
        spacing = tuple(float(s) for s in np.linalg.norm(study_affine(reference)[:3, :3], axis=0))
        row = {"study": reference.name.split(".nii")[0], "kind": "cta-no-spiral", "method": "model", "seconds": seconds}
        row.update(score_clot(pred, truth, spacing, result, info, atlas=load_atlas(study)))
        rows.append(row)
        if "classifier_regions" in result:
            rows.append({**row, "method": "classifier", **score_classifier(result, info, load_atlas(study), truth)})
    return rows


def study_affine(reference):
    return nib.load(str(reference)).affine


def load_atlas(study: dict):
    path = study["modalities"].get("atlas")
    return None if path is None else np.asarray(nib.load(str(path)).dataobj)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-kind", type=int, default=6, help="held-out studies per kind (default 6)")
    parser.add_argument("--seed", type=int, default=9000, help="phantom seed, apart from the sample data's 2026")
    parser.add_argument("--tasks", default="all", help="comma-separated task names (default all)")
    parser.add_argument("--studies", default=None, help="folder for the generated studies (default: a temporary one)")
    parser.add_argument("--per-study", action="store_true", help="also print one row per study")
    parser.add_argument("--model-dir", default=None, help="models to measure (a folder laid out as apps/stroke/model; default: the app's)")
    parser.add_argument("--sets", default=",".join(PHANTOM_SETS),
                        help=f"phantom sets (default all): {', '.join(PHANTOM_SETS)} (harness.PHANTOM_SETS: family, appearance, conventions)")
    parser.add_argument("--lesion-components", default=None, choices=["evidence", "strict", "all"],
                        help="the MRI lesion component rule of the model's answers (the app's --conf ischemic_lesion_components)")
    parser.add_argument("--real", default=None, metavar="DIR", help="measure the real data trees under DIR instead of phantoms")
    parser.add_argument("--variants", action="store_true", help="with --real: also the same studies stored in other conventions")
    parser.add_argument("--methods", default="all", help="with --real: comma-separated methods (baseline, model, siamese, auto; default all)")
    parser.add_argument("--loo", action="store_true", help="with --real: leave-one-case-out with fold models trained by the app's trainer")
    parser.add_argument("--loo-dir", default="/tmp/strokelabel-loo", help="with --loo: fold phantoms, runs and models (reused when the recipe matches)")
    parser.add_argument("--loo-recipe", default=None, help="with --loo: a recipe of leave_one_out.RECIPES (default: the frozen one)")
    parser.add_argument("--loo-folds", default=None, help="with --loo: only these held-out subjects (comma-separated), e.g. for parallel jobs")
    parser.add_argument("--loo-record", default=None, help="with --loo: comma-separated model cards to write the figures into")
    args = parser.parse_args(argv)
    if (args.variants or args.loo) and not args.real:
        parser.error("--variants and --loo need --real DIR")
    if args.loo:
        from leave_one_out import FROZEN_RECIPE, RECIPES, main_loo

        recipe = args.loo_recipe or FROZEN_RECIPE
        if recipe not in RECIPES:
            parser.error(f"unknown --loo-recipe {recipe!r}; choose from {list(RECIPES)}")
        return main_loo(args.real, args.loo_dir, recipe, args.loo_folds, args.loo_record.split(",") if args.loo_record else None)

    conf = {"ischemic_lesion_components": args.lesion_components} if args.lesion_components else None
    tasks = load_infer_tasks(args.model_dir, models=args.tasks, conf=conf)
    if args.real:
        from evaluate_real import main_real

        return main_real(tasks, args.real, variants=args.variants, methods=args.methods)
    top = Path(args.studies or tempfile.mkdtemp(prefix="strokelabel-eval-"))
    kinds = sorted({k for name in tasks for k in TASK_KINDS[name]})
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(sets) - set(PHANTOM_SETS))
    if unknown:
        parser.error(f"unknown phantom set(s) {unknown}; choose from {list(PHANTOM_SETS)}")
    rows = {name: [] for name in tasks}
    for set_name in sets:
        generator, root = PHANTOM_SETS[set_name], top / set_name
        studies = held_out_studies(root, args.per_kind, args.seed, kinds=kinds, **generator)
        found = evaluate(tasks, studies, root)
        if "ischemic_lesion" in tasks:
            found["ischemic_lesion"] += evaluate_isles22(tasks["ischemic_lesion"], root, args.per_kind, args.seed, **generator)
        if "clot_region" in tasks:
            found["clot_region"] += evaluate_without_spiral(tasks["clot_region"], studies, root)
        for name, task_rows in found.items():
            rows[name] += [{**row, "set": set_name} for row in task_rows]

    print(f"# StrokeLabel evaluation: {args.per_kind} held-out phantom studies per kind and set, seed {args.seed}")
    print("# sets: " + "; ".join(f"{s} = {PHANTOM_SETS[s]}" for s in sets))
    print("# guard_pass: share of studies whose model answer the physiology guard passed; model_served: share on which auto served the model")
    for name, task_rows in rows.items():
        by = "kind_method"
        for row in task_rows:
            row["kind_method"] = f"{row['set']}/{row['kind']}/{row['method']}"
        table = metrics.summarise(task_rows, by=by)
        columns = [by if c == "method" else c for c in COLUMNS[name]]
        print(f"\n## {name} (mean over studies)\n")
        print(metrics.format_table(table, columns))
        if args.per_study:
            print(metrics.format_table(task_rows, ["study"] + columns))
        if minus_baseline(table, by, columns):
            print("\nby how much (method - baseline on the same studies; Dice up and errors down are better):\n")
            print(metrics.format_table(minus_baseline(table, by, columns), columns))
        if name == "ischemic_lesion":
            print("\nkind: ctp = CT perfusion phantoms (lesion = core), mri = MRI phantoms, isles22 = MRI phantoms in the ISLES'22 "
                  "layout (ADC 10^-3/10^-6, negative ADC, skull-stripped or not); method model = MDANet, siamese = the DWI-only "
                  "Siamese model, baseline = ADC < 620e-6 mm2/s + DWI (MRI) or rCBF < 30 % (CTP)")
            print(SEED_003_NOTE)
        if name == "clot_region":
            print("\nkind: cta = multiphase CTA phantoms with SPIRAL-like map and atlas; cta-no-spiral = the same studies without "
                  "the SPIRAL map (the baseline needs it; the model there is the CTA-only segmentation when one is installed). method: baseline = SPIRAL > 0.9 through the atlas (seed 002); "
                  "model = clot segmentation (ClotSegNet), its flags = segmented clot ∩ atlas; classifier = AMI-Net's own flags "
                  "(seed 002: F1 0.87 for AMI-Net, 0.34 for SPIRAL thresholding, on 127 real patients). Dice, detection and "
                  "centre distance are not defined for the classifier, which outputs no voxels.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
