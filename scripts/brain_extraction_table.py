"""Brain extraction on raw scanner MRI, measured: prints the tables of issue 21 (item 5).

1. **Skull-on phantoms with skull-base EPI artefacts** (``harness.RAW_SCANNER_SETS``: skull, scalp and
   neck on, susceptibility always on, the rest of the look random), per study: whether the loader
   took the study for skull-stripped, the brain mask's Dice against the phantom's intracranial
   space and the share of the true lesion it keeps, for the threshold mask (what the app used
   before) and for deepbet; then the model route and the baseline run by the app's own infer task
   with each mask: false-positive mL outside the true lesion widened by 2 voxels, of which outside
   the brain and on the susceptibility artefacts (the generator's mimic code 1).
2. **The four real ISLES'22 cases** (skull-stripped, as distributed), and the same with a synthetic
   skull (:func:`strokelabel.conventions.add_synthetic_skull`): the loader's stripped decision, the
   share of the expert lesion inside the mask used, and deepbet's Dice against the stripped brain.

    .venv/bin/python scripts/brain_extraction_table.py [--per-set 4] [--seed 9600] [--real ../shared/real/isles22]

Which models: the app's own (``apps/stroke/model``), named in the output.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from harness import RAW_SCANNER_SETS, held_out_studies, load_infer_tasks, run_infer, truth_of
from scipy import ndimage

from strokelabel import brain_extraction, conventions, metrics
from strokelabel.baselines.masks import full_connectivity
from strokelabel.phantom.study import simulate_study
from strokelabel.study import load_study

MODES = ("off", "auto")  # threshold mask, deepbet when not stripped


def dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def kept(mask, lesion) -> float | None:
    return float((mask & lesion).sum() / lesion.sum()) if lesion.any() else None


def with_mode(mode: str):
    os.environ[brain_extraction.MODE_ENV] = mode


def phantom_rows(per_set: int, seed: int, top: Path, task, infer: bool = True) -> list[dict]:
    rows = []
    for set_name, generator in RAW_SCANNER_SETS.items():
        root = top / set_name
        for study in held_out_studies(root, per_set, seed, kinds=("mri",), **generator):
            reference = study["reference"]
            lesion_truth, info = truth_of(reference, root, "lesion")
            mimics, _ = truth_of(reference, root, "mimics")
            sim = simulate_study("mri", info["seed"], info["size"], appearance=generator["appearance"], conventions=None,
                                 family=generator["family"])
            brain_truth, lesion = sim.truth["brain"], lesion_truth > 0
            row = {"set": set_name, "study": reference.name.split("_dwi")[0], "lesion_ml": None}
            for mode in MODES:
                with_mode(mode)
                started = time.perf_counter()
                loaded = load_study(reference, ("dwi", "adc"))
                mask = loaded.brain_mask
                seconds = time.perf_counter() - started
                voxel_ml = loaded.voxel_volume_ml
                row["lesion_ml"] = round(float(lesion.sum() * voxel_ml), 1)
                row["stripped"] = loaded.notes["brain_extraction"]["skull_stripped"]
                tag = "thr" if mode == "off" else "bet"
                row[f"{tag}_dice"] = dice(mask, brain_truth)
                row[f"{tag}_lesion_kept"] = kept(mask, lesion)
                # The lesion the images show: where the EPI signal dropped out at the skull base (ADC not
                # fitted, DWI at the noise floor) no method can see it, and a brain mask leaving that void out is right.
                row[f"{tag}_visible_lesion_kept"] = kept(mask, lesion & (loaded.images["adc"] > 0))
                row["visible_lesion_share"] = kept(loaded.images["adc"] > 0, lesion)
                if mode == "auto":
                    row["bet_s"] = loaded.notes["brain_extraction"].get("seconds", round(seconds, 1))
                widened = ndimage.binary_dilation(lesion, structure=full_connectivity(3), iterations=2)
                for method in ("model", "baseline") if infer else ():
                    pred, _ = run_infer(task, reference, method)
                    fp = (pred > 0) & ~widened
                    row[f"{method}_{tag}_fp_ml"] = float(fp.sum() * voxel_ml)
                    row[f"{method}_{tag}_fp_outside_brain_ml"] = float((fp & ~brain_truth).sum() * voxel_ml)
                    row[f"{method}_{tag}_fp_artefact_ml"] = float((fp & (mimics == 1)).sum() * voxel_ml)
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    return rows


def real_rows(real: Path) -> list[dict]:
    rows = []
    with_mode("auto")
    for dwi in sorted(real.glob("rawdata/sub-*/ses-*/dwi/*_dwi.nii.gz")):
        subject, session = dwi.parts[-4], dwi.parts[-3]
        msk = real / "derivatives" / subject / session / f"{subject}_{session}_msk.nii.gz"
        files = {"dwi": dwi, "adc": Path(str(dwi).replace("_dwi.nii", "_adc.nii")), "msk": msk}
        with tempfile.TemporaryDirectory() as tmp:
            skull = conventions.Variant("synthetic skull", "", ("mri",), conventions.skull_transform())
            written = {"as distributed": files, "synthetic skull": conventions.write_variant_study(files, real, tmp, skull, labels=("msk",))}
            stripped_brain = None
            for name, paths in written.items():
                study = load_study(paths["dwi"], ("dwi", "adc"))
                lesion = study.to_canonical(np.asarray(nib.load(str(paths["msk"])).dataobj) > 0)
                mask = study.brain_mask
                if stripped_brain is None:
                    stripped_brain = study.images["dwi"] > 0
                note = study.notes["brain_extraction"]
                rows.append({"case": subject, "stored": name, "stripped": note["skull_stripped"],
                             "mask": "deepbet" if not note["skull_stripped"] else "threshold",
                             "expert_lesion_ml": round(float(lesion.sum() * study.voxel_volume_ml), 1),
                             "lesion_kept": kept(mask, lesion), "dice_vs_stripped_brain": dice(mask, stripped_brain),
                             "bet_s": note.get("seconds")})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-set", type=int, default=4)
    parser.add_argument("--seed", type=int, default=9600, help="phantom seed (apart from evaluation, calibration and training seeds)")
    parser.add_argument("--studies", default=None, help="folder for the generated studies (default: a temporary one)")
    parser.add_argument("--real", default=None, help="an ISLES'22 tree (rawdata/, derivatives/)")
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--no-infer", action="store_true", help="brain masks only (no false-positive table)")
    args = parser.parse_args(argv)

    task = load_infer_tasks(args.model_dir, models="ischemic_lesion")["ischemic_lesion"]
    model_dir = Path(task.model_dir)
    print(f"# Brain extraction on raw scanner MRI; models: {', '.join(sorted(p.name for p in model_dir.rglob('ischemic_lesion_mri.pt')))} "
          f"in {model_dir}")
    if args.per_set > 0:
        rows = phantom_rows(args.per_set, args.seed, Path(args.studies or tempfile.mkdtemp(prefix="strokelabel-bet-")), task,
                            infer=not args.no_infer)
        print(f"\n## Skull-on phantoms with skull-base EPI artefacts ({args.per_set} per set, seed {args.seed}): brain mask vs the "
              "intracranial truth; thr = threshold mask (before), bet = deepbet (after)\n")
        print(metrics.format_table(rows, ["set", "study", "stripped", "lesion_ml", "thr_dice", "bet_dice", "thr_lesion_kept",
                                          "bet_lesion_kept", "visible_lesion_share", "thr_visible_lesion_kept", "bet_visible_lesion_kept",
                                          "bet_s"]))
        print("(visible lesion: the true lesion where the DWI has signal, ADC fitted; EPI drop-out at the skull base hides the rest)")
    if args.per_set > 0 and not args.no_infer:
        print("\n## False positives (mL outside the true lesion widened by 2 voxels; of which outside the brain / on the "
              "susceptibility artefacts), before -> after brain extraction\n")
        columns = ["set", "study"] + [f"{m}_{t}_fp{part}_ml" for m in ("model", "baseline") for part in ("", "_outside_brain", "_artefact")
                                      for t in ("thr", "bet")]
        print(metrics.format_table(rows, columns))
        numeric = [c for c in columns[2:]] + ["thr_dice", "bet_dice", "thr_lesion_kept", "bet_lesion_kept", "thr_visible_lesion_kept",
                                              "bet_visible_lesion_kept", "bet_s"]
        means = {c: float(np.mean([r[c] for r in rows if r.get(c) is not None])) for c in numeric}
        print("\nmeans: " + ", ".join(f"{c} {v:.3f}" for c, v in means.items()))
    if args.per_set > 0:
        worst = lambda key: min((r[key] for r in rows if r.get(key) is not None), default=float("nan"))  # noqa: E731
        print(f"\nmin bet_dice {worst('bet_dice'):.3f}; min bet_lesion_kept {worst('bet_lesion_kept'):.4f}; "
              f"min bet_visible_lesion_kept {worst('bet_visible_lesion_kept'):.4f}")
    if args.real:
        print("\n## Real ISLES'22 cases, as distributed (skull-stripped) and with a synthetic skull\n")
        print(metrics.format_table(real_rows(Path(args.real)), ["case", "stored", "stripped", "mask", "expert_lesion_ml", "lesion_kept",
                                                                "dice_vs_stripped_brain", "bet_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
