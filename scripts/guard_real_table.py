"""The guard on real MRI cases: does it object when it should, and only then? Prints the table of issue 21.

For each real ISLES'22 case (as distributed, and stored as a scanner would: the ``raw scanner``
variant of :mod:`strokelabel.conventions`, skull and all), the app's own ischemic_lesion task runs
the MRI model and the baseline; each is scored against the expert mask, and the guard's verdict on
the model's answer (``quality``: passed, reason) decides what ``auto`` serves. The confusion table
counts passed / refused x model better / baseline better (Dice against the expert).

The guard's limits (``strokelabel.guard.LIMITS``) were chosen on phantoms only
(``scripts/calibrate_guard.py``) and frozen before this table was first printed. The model must
never have seen the cases (its card's ``trained_on_real``): this script refuses one that did.

    .venv/bin/python scripts/guard_real_table.py --real ../shared/real/isles22 [--no-variant]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from harness import real_studies, run_infer

from strokelabel import conventions, metrics


def seen_cases(task) -> set[str]:
    """The real cases the MRI model in use was trained on, from its card (``trained_on_real``)."""
    from lib.checkpoints import checkpoint_in_use

    path = checkpoint_in_use(task.route_paths["mri"])
    card = Path(path).with_suffix(".json") if path else None
    if card is None or not card.exists():
        return set()
    return {Path(c).name for c in json.loads(card.read_text()).get("trained_on_real", [])}


def case_rows(task, study, reference: Path, mask_path: Path, stored: str) -> dict:
    expert = np.asarray(nib.load(str(mask_path)).dataobj) > 0
    voxel_ml = float(np.prod(nib.load(str(reference)).header.get_zooms()[:3])) / 1000.0
    row = {"case": study.study_id, "stored": stored, "expert_ml": float(expert.sum() * voxel_ml)}
    for method in ("model", "baseline"):
        pred, result = run_infer(task, reference, method)
        pred = np.asarray(pred)
        pred = pred[0] if pred.ndim == 4 else pred
        row[f"{method}_dice"] = metrics.dice(pred > 0, expert)
        row[f"{method}_ml"] = float((pred > 0).sum() * voxel_ml)
        if method == "model":
            quality = result.get("quality") or {}
            row["guard"] = "passed" if quality.get("passed") else "refused"
            row["reason"] = quality.get("reason", "")
            figures = quality.get("figures", {})
            row.update({k: figures.get(k) for k in ("support", "coverage", "evidence_ml", "outside_brain_share")})
    row["better"] = "model" if row["model_dice"] >= row["baseline_dice"] else "baseline"
    row["auto_dice"] = row["model_dice"] if row["guard"] == "passed" else row["baseline_dice"]
    row["auto_vs_best"] = row["auto_dice"] - max(row["model_dice"], row["baseline_dice"])
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, help="an ISLES'22 tree (rawdata/, derivatives/)")
    parser.add_argument("--no-variant", action="store_true", help="only the cases as distributed")
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--lesion-components", default=None, choices=["evidence", "strict", "all"],
                        help="the MRI lesion component rule of the model's answers (the app's --conf ischemic_lesion_components)")
    args = parser.parse_args(argv)

    from harness import load_infer_tasks

    conf = {"ischemic_lesion_components": args.lesion_components} if args.lesion_components else None
    task = load_infer_tasks(args.model_dir, models="ischemic_lesion", conf=conf)["ischemic_lesion"]
    top = Path(args.real).resolve()  # the studies come back with resolved paths: a relative --real must match them
    seen = seen_cases(task)
    rows = []
    raw = conventions.raw_scanner_variant()
    with tempfile.TemporaryDirectory() as tmp:
        for study in real_studies(top):
            if study.kind != "mri" or study.expert_mask is None:
                continue
            subject = study.reference.name.split("_")[0]
            if subject in seen or study.study_id in seen:
                raise SystemExit(f"the MRI model in use was trained on {subject} (its card's trained_on_real): its figures there are no evidence")
            rows.append(case_rows(task, study, study.reference, study.expert_mask, "as distributed"))
            print(rows[-1], file=sys.stderr, flush=True)
            if not args.no_variant:
                files = {"dwi": study.reference, "adc": Path(str(study.reference).replace("_dwi.nii", "_adc.nii")), "msk": study.expert_mask}
                written = conventions.write_variant_study(files, top, Path(tmp) / "raw", raw, labels={"msk"})
                rows.append(case_rows(task, study, written["dwi"], written["msk"], "raw scanner"))
                print(rows[-1], file=sys.stderr, flush=True)

    from strokelabel.guard import LIMITS

    print(f"# The guard on real MRI (model {task.route_paths['mri'][-1] if task.route_paths['mri'] else '?'}; limits {LIMITS['lesion_mri']})\n")
    print(metrics.format_table(rows, ["case", "stored", "expert_ml", "model_ml", "baseline_ml", "model_dice", "baseline_dice", "better",
                                      "guard", "auto_dice", "auto_vs_best", "support", "coverage", "evidence_ml", "outside_brain_share"]))
    print("\nreasons:")
    for r in rows:
        print(f"- {r['case']} ({r['stored']}): {r['guard']}: {r['reason']}")
    print("\n## Confusion table (cases x storage)\n")
    table = [{"guard": g, **{f"{b} better": sum(1 for r in rows if r["guard"] == g and r["better"] == b) for b in ("model", "baseline")}}
             for g in ("passed", "refused")]
    print(metrics.format_table(table, ["guard", "model better", "baseline better"]))
    print(f"\nauto vs max(model, baseline): worst {min(r['auto_vs_best'] for r in rows):+.3f}, mean {np.mean([r['auto_vs_best'] for r in rows]):+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
