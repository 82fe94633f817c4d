"""The on-site loop, measured end to end through the real MONAI Label server and its client.

For one task: generate phantom studies of its kind (none labelled), start the server with the
stroke app (a copy, so the app's own models are untouched), score the held-out studies with the
model in use, then do what a neuroradiologist does for the others: infer, correct (here: the
phantom truth stands in for the correction), save as the final label. Train each of the task's
trainers through the API (``POST /train``), then score the held-out studies again with whatever
model is in use after the publish decision. Prints the held-out figures before and after, the
retraining seconds, and each trainer's decision.

    .venv/bin/python scripts/retraining_loop.py --task core_penumbra [--corrected 12] [--held-out 4] [--epochs 6]

Tasks and trainers: core_penumbra (core_penumbra), ischemic_lesion (ischemic_lesion_mri on MRI
DWI+ADC phantoms, or --kind ctp for ischemic_lesion_ctp), clot_region (clot_region,
clot_region_cta and clot_region_classifier).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from harness import REPO, truth_of

sys.path.insert(0, str(REPO))
from strokelabel import metrics  # noqa: E402
from strokelabel.phantom import generate_dataset  # noqa: E402
from tests.e2e.server import running_server, wait_for_training  # noqa: E402

# task -> (study kind, truth target, trainers run in order, request knobs of each run)
LOOPS = {
    "core_penumbra": {"kind": "ctp", "target": "corepenumbra", "trainers": {"core_penumbra": {}}},
    "ischemic_lesion": {"kind": "mri", "target": "lesion", "trainers": {"ischemic_lesion_mri": {}}},
    "clot_region": {"kind": "cta", "target": "clot", "trainers": {"clot_region": {}, "clot_region_cta": {}, "clot_region_classifier": {}}},
}


def score(task: str, pred: np.ndarray, truth: np.ndarray, result: dict, info: dict, spacing_mm) -> dict:
    """Held-out figures of one inference against the phantom truth."""
    if task == "core_penumbra":
        return {f"{name}_dice": metrics.dice(p, t) for name, p, t in
                (("core", pred == 1, truth == 1), ("penumbra", pred == 2, truth == 2), ("hypo", pred > 0, truth > 0))}
    row = {"dice": metrics.dice(pred > 0, truth > 0)}
    if task == "clot_region":
        row["clot_detected"] = metrics.clot_detection(pred > 0, truth > 0, spacing_mm)["clot_detected"]
        true_flags = np.asarray(info["figures"]["clot_region_flags"], dtype=bool)
        pred_flags = np.array([r["clot"] for r in result.get("regions", [])] or [False] * 15, dtype=bool)
        row["region_f1"] = metrics.region_flag_scores(pred_flags, true_flags)["f1"]
    return row


def held_out_scores(client, task: str, records: list[dict], root: Path, target: str) -> tuple[dict, list[str]]:
    rows, models = [], set()
    for record in records:
        image_id = record["reference"].name.split(".nii")[0]
        label_file, result = client.infer(task, image_id, {})
        truth, info = truth_of(record["reference"], root, target)
        pred = np.asarray(nib.load(label_file).dataobj)
        spacing = nib.load(str(record["reference"])).header.get_zooms()[:3]
        rows.append(score(task, pred, truth, result, info, spacing))
        models.add(f"{result.get('method')}:{result.get('model_file') or result.get('model_path') or result.get('models') or ''}")
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}, sorted(models)


def parse_options(pairs: list[str]) -> dict:
    """``["learning_rate=2e-4", "device=cpu"]`` -> ``{"learning_rate": 0.0002, "device": "cpu"}``."""
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            options[key] = float(value) if any(c in value for c in ".e") else int(value)
        except ValueError:
            options[key] = value
    return options


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(LOOPS), required=True)
    parser.add_argument("--kind", default=None, help="study kind (ischemic_lesion: mri or ctp)")
    parser.add_argument("--corrected", type=int, default=12, help="studies the clinician corrects and saves (default 12)")
    parser.add_argument("--held-out", type=int, default=4, help="studies scored before and after (default 4)")
    parser.add_argument("--epochs", type=int, default=None, help="max_epochs of each training run (default: the trainer's)")
    parser.add_argument("--seed", type=int, default=4100, help="phantom seed, apart from the sample data's and the shipped models'")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more training request options, e.g. learning_rate=2e-4 (numbers are parsed)")
    parser.add_argument("--workdir", default=None, help="folder for studies and the server copy (default: temporary)")
    args = parser.parse_args(argv)

    loop = dict(LOOPS[args.task])
    kind = args.kind or loop["kind"]
    trainers = loop["trainers"]
    if args.task == "ischemic_lesion" and kind == "ctp":
        trainers = {"ischemic_lesion_ctp": {}}
    work = Path(args.workdir or tempfile.mkdtemp(prefix=f"strokelabel-loop-{args.task}-")).resolve()
    studies = work / "studies"
    log = lambda msg: print(f"[loop {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    records = generate_dataset(studies, per_kind=args.corrected + args.held_out, labelled_per_kind=0, size="small",
                               seed=args.seed, kinds=(kind,), progress=log)
    corrected, held_out = records[: args.corrected], records[args.corrected:]
    rows = []
    with running_server(work / "server", studies, models=args.task) as server:
        client = server.client
        log(f"server on port {server.port} (log: {server.log}); {len(corrected)} studies to correct, {len(held_out)} held out")
        before, models_before = held_out_scores(client, args.task, held_out, studies, loop["target"])

        started = time.time()
        for record in corrected:
            image_id = record["reference"].name.split(".nii")[0]
            label_file, _ = client.infer(args.task, image_id, {})  # the proposal the clinician opens
            truth, _ = truth_of(record["reference"], studies, loop["target"])
            path = work / f"{image_id}_corrected.nii.gz"
            nib.save(nib.Nifti1Image(truth.astype(np.uint8), nib.load(label_file).affine), str(path))
            client.save_label(image_id, str(path), tag="final")
        log(f"inferred, corrected and saved {len(corrected)} labels in {time.time() - started:.0f} s")

        decisions = []
        for trainer, knobs in trainers.items():
            request = {**knobs, **({"max_epochs": args.epochs} if args.epochs else {}), **parse_options(args.set)}
            started = time.time()
            client.train_start(trainer, request)
            status = wait_for_training(client, timeout_s=3600)
            seconds = time.time() - started
            stats = client.info()["train_stats"].get(trainer, {})
            log(f"{trainer}: {status.get('status')} in {seconds:.0f} s: {stats.get('reason')}")
            decisions.append({"trainer": trainer, "status": status.get("status"), "epochs": stats.get("total_epochs"),
                              "train_studies": stats.get("train_studies"), "val_studies": len(stats.get("val_studies") or []),
                              "seconds": seconds, "candidate_val": stats.get("candidate_val_dice"),
                              "in_use_val": stats.get("in_use_val_dice"), "published": stats.get("published")})
        after, models_after = held_out_scores(client, args.task, held_out, studies, loop["target"])

    for name, figures, models in (("before", before, models_before), ("after", after, models_after)):
        rows.append({"held_out": name, "n": len(held_out), **figures, "model": " ".join(models)})
    print(f"# Retraining loop: {args.task} on {kind} phantoms (seed {args.seed}), through the MONAI Label server and client\n")
    print(metrics.format_table(rows, ["held_out", "n", *before.keys(), "model"]))
    print()
    print(metrics.format_table(decisions, ["trainer", "status", "epochs", "train_studies", "val_studies", "seconds",
                                           "candidate_val", "in_use_val", "published"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
