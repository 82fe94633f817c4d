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

**On real cases** (``--real DIR``, DIR holding ``isles22/``): leave-one-case-out, as a site's first
corrections would go. For each held-out case h (one fold per case), a fresh server starts from a
model whose card (the JSON beside it) lists none of the loop's cases in ``trained_on_real`` (the
phantom-only MRI model by default; any other is refused); the other cases are corrected one at a
time (the expert mask saved through the client as the clinician's final label), the server retrains
after each (``POST /train/ischemic_lesion_mri``, the publish decision as the site would get it),
and h is scored with the model route after 0, 1, 2 and 3 corrections: Dice, false-positive mL
(outside the expert mask dilated by 2 voxels), lesion-wise F1. Prints every fold and the mean,
the retraining seconds per correction, and draws the curve:

    .venv/bin/python scripts/retraining_loop.py --real ../shared/real [--epochs 20] [--png docs/retraining_curve.png]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from harness import REPO, real_studies, truth_of

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
    parser.add_argument("--task", choices=sorted(LOOPS), help="the task of the loop on phantoms (not with --real)")
    parser.add_argument("--kind", default=None, help="study kind (ischemic_lesion: mri or ctp)")
    parser.add_argument("--corrected", type=int, default=12, help="studies the clinician corrects and saves (default 12)")
    parser.add_argument("--held-out", type=int, default=4, help="studies scored before and after (default 4)")
    parser.add_argument("--epochs", type=int, default=None, help="max_epochs of each training run (default: the trainer's)")
    parser.add_argument("--seed", type=int, default=4100, help="phantom seed, apart from the sample data's and the shipped models'")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more training request options, e.g. learning_rate=2e-4 (numbers are parsed)")
    parser.add_argument("--workdir", default=None, help="folder for studies and the server copy (default: temporary)")
    real = parser.add_argument_group("on real cases (--real)")
    real.add_argument("--real", default=None, metavar="DIR", help="folder holding isles22/ (e.g. ../shared/real): the leave-one-case-out loop")
    real.add_argument("--start-model", default=str(PHANTOM_ONLY_MRI), help="the model every fold starts from (its card must list none of the cases)")
    real.add_argument("--folds", default=None, help="held-out cases to run, e.g. 0001,0003 (default: every case)")
    real.add_argument("--png", default=str(REPO / "docs" / "retraining_curve.png"), help="where the curve is drawn")
    real.add_argument("--recipe", default=None, metavar="JSON",
                      help="request options of every retraining from this file (as scripts/retraining_recipes.py --report writes the "
                           "chosen one), read at each training; the loop waits for the file, so a fold can start scoring before the choice")
    real.add_argument("--report-only", action="store_true", help="print the tables of the run kept in --workdir again (and check its decisions)")
    real.add_argument("--no-decision-check", action="store_true", help="with --report-only: skip scoring every candidate on its held-out case")
    args = parser.parse_args(argv)
    if args.real and args.report_only:
        return report_saved_run(args)
    if args.real:
        return main_real(args)
    if not args.task:
        parser.error("--task is required (or --real DIR)")

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


# ---- the loop on real cases -----------------------------------------------------------------------
PHANTOM_ONLY_MRI = REPO / "apps" / "stroke" / "model" / "shipped" / "phantom_only" / "ischemic_lesion_mri.pt"
TRAINER = "ischemic_lesion_mri"
#: how far outside the expert mask an answer starts to count as false positive (ISLES'22-style tolerance)
FP_MARGIN_VOXELS = 2


def case_name(study) -> str:
    """A real case as model cards name it: ``isles22/sub-strokecase0001``."""
    return f"isles22/sub-{study.study_id.split('_')[0].removeprefix('sub-')}"


def refuse_seen_model(model: Path, cases: list[str]) -> None:
    """The loop starts only from a model whose card says it never saw any of the loop's cases."""
    card = model.with_suffix(".json")
    if not model.exists() or not card.exists():
        raise SystemExit(f"{model}: no such model with its card ({card.name}); the loop starts from a phantom-only model")
    seen = json.loads(card.read_text()).get("trained_on_real")
    if seen is None:
        raise SystemExit(f"{card}: the card does not say which real cases the model saw (no 'trained_on_real'); refused")
    leaked = sorted(set(seen) & set(cases))
    if leaked:
        raise SystemExit(f"{model.name} was trained on {', '.join(leaked)}: a figure on those cases would not be evidence; refused")


def score_real(pred: np.ndarray, truth: np.ndarray, spacing_mm) -> dict:
    """The held-out case's figures; false positives as evaluate.py counts them (strokelabel.metrics)."""
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    return {"dice": metrics.dice(pred > 0, truth > 0), "fp_ml": metrics.false_positive_volume_ml(pred > 0, truth > 0, spacing_mm, FP_MARGIN_VOXELS),
            "lesion_f1": metrics.lesion_f1(pred > 0, truth > 0), "volume_ml": float(np.count_nonzero(pred)) * voxel_ml,
            "expert_ml": float(np.count_nonzero(truth)) * voxel_ml}


def prepare_fold(work: Path, cases: list, start_model: Path) -> tuple[Path, Path]:
    """A site as it starts: the studies without any label (the expert masks stay out of the served
    tree) and a copy of the app whose MRI model in use is the start model."""
    studies = work / "studies"
    for study in cases:
        target = studies / study.reference.parent.relative_to(study.reference.parents[4])  # rawdata/sub-…/ses-…/dwi
        target.mkdir(parents=True, exist_ok=True)
        for path in study.reference.parent.iterdir():  # the DWI, the ADC beside it and their sidecars
            shutil.copy2(path, target / path.name)
    app = work / "server" / "stroke"
    shutil.copytree(REPO / "apps" / "stroke", app, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    shipped = app / "model" / "shipped"
    shutil.copy2(start_model, shipped / f"{TRAINER}.pt")
    shutil.copy2(start_model.with_suffix(".json"), shipped / f"{TRAINER}.json")
    for published in (app / "model").glob(f"{TRAINER}.pt"):
        published.unlink()  # a site that has never trained
    return studies, work / "server"


def recipe_options(recipe: Path | None, log) -> dict:
    """The request options in ``recipe`` (a JSON object), waiting for the file to appear; {} without one."""
    if recipe is None:
        return {}
    waited = time.time()
    while not recipe.exists():
        if time.time() - waited > 4 * 3600:
            raise SystemExit(f"{recipe}: no recipe after 4 hours")
        time.sleep(10)
    if time.time() - waited > 10:
        log(f"recipe {recipe} there after {time.time() - waited:.0f} s of waiting")
    return json.loads(recipe.read_text())


def run_fold(held, others: list, work: Path, start_model: Path, request: dict, log, recipe: Path | None = None) -> tuple[list[dict], list[dict]]:
    """Score the held-out case after 0..len(others) corrections; returns (score rows, training rows)."""
    studies, server_dir = prepare_fold(work, [held, *others], start_model)
    image_id = lambda study: study.reference.name.split(".nii")[0]  # noqa: E731
    truth = np.asarray(nib.load(str(held.expert_mask)).dataobj) > 0
    spacing_mm = tuple(float(z) for z in nib.load(str(held.reference)).header.get_zooms()[:3])
    rows, trainings = [], []
    with running_server(server_dir, studies, models="ischemic_lesion") as server:
        client = server.client

        def score(step: int, decision: dict | None) -> None:
            label_file, result = client.infer("ischemic_lesion", image_id(held), {"method": "model"})
            pred = np.asarray(nib.load(label_file).dataobj)
            row = {"fold": case_name(held), "corrections": step, **score_real(pred, truth, spacing_mm),
                   "model": result.get("model_path") or result.get("model_file") or "", **(decision or {})}
            rows.append(row)
            # kept as they come: a run stopped mid-fold still has the steps it measured
            (work / "fold_progress.json").write_text(json.dumps({"rows": rows, "trainings": trainings}, indent=1, default=str))
            log(f"{row['fold']} after {step} correction(s): Dice {row['dice']:.3f}, FP {row['fp_ml']:.2f} mL, "
                f"lesion F1 {row['lesion_f1']:.3f}, {row['volume_ml']:.1f} mL (expert {row['expert_ml']:.1f})")

        score(0, None)
        for step, case in enumerate(others, start=1):
            mask = work / f"{image_id(case)}_corrected.nii.gz"  # the clinician's final label: here the expert's mask
            expert = nib.load(str(case.expert_mask))
            nib.save(nib.Nifti1Image((np.asarray(expert.dataobj) > 0).astype(np.uint8), expert.affine), str(mask))
            client.save_label(image_id(case), str(mask), tag="final")
            options = {**request, **recipe_options(recipe, log)}  # (a wait for the recipe is not training time)
            started = time.time()
            client.train_start(TRAINER, options)  # the client adds its own keys to the dict it is given
            status = wait_for_training(client, timeout_s=3600)
            seconds = time.time() - started
            stats = client.info()["train_stats"].get(TRAINER, {})
            if status.get("status") != "DONE":
                raise RuntimeError(f"{TRAINER} training ended {status.get('status')}; see {server.log}")
            decision = {"published": stats.get("published"), "reason": stats.get("reason"), "train_s": round(seconds, 1)}
            trainings.append({"fold": case_name(held), "corrections": step, "corrected": case_name(case), "seconds": round(seconds, 1),
                              "version_path": stats.get("version_path"),
                              "train_studies": stats.get("train_studies"), "deciding": len(stats.get("deciding_studies") or []),
                              "site_deciding": len(stats.get("site_held_out_studies") or []),
                              "checkpoint_epoch": (stats.get("selection_best_dice") or {}).get("epoch"),
                              "candidate": stats.get("candidate_val_dice"), "in_use": stats.get("in_use_val_dice"),
                              "published": stats.get("published"), "reason": stats.get("reason")})
            log(f"{case_name(held)}: correction {step} ({case_name(case)}) trained in {seconds:.0f} s: {stats.get('reason')}")
            score(step, decision)
    return rows, trainings


def mean_rows(rows: list[dict], steps: int) -> list[dict]:
    out = []
    for step in range(steps + 1):
        at = [r for r in rows if r["corrections"] == step]
        out.append({"corrections": step, "folds": len(at), **{k: float(np.mean([r[k] for r in at])) for k in ("dice", "fp_ml", "lesion_f1", "volume_ml")},
                    "published": sum(bool(r.get("published")) for r in at) if step else None})
    return out


def targets(means: list[dict], rows: list[dict]) -> list[dict]:
    """The issue's targets, measured: mean Dice after the last correction >= start + 0.05, the
    false-positive mL going down, no fold dropping by more than 0.05 at any step."""
    first, last = means[0], means[-1]
    worst_drop = 0.0
    for fold in sorted({r["fold"] for r in rows}):
        dice = [r["dice"] for r in sorted((r for r in rows if r["fold"] == fold), key=lambda r: r["corrections"])]
        worst_drop = max([worst_drop, *(a - b for a, b in zip(dice, dice[1:]))])
    return [
        {"target": "mean Dice after the last correction >= start + 0.05", "measured": f"{first['dice']:.3f} -> {last['dice']:.3f} "
         f"({last['dice'] - first['dice']:+.3f})", "met": last["dice"] >= first["dice"] + 0.05},
        {"target": "false-positive mL going down", "measured": f"{first['fp_ml']:.2f} -> {last['fp_ml']:.2f} mL", "met": last["fp_ml"] < first["fp_ml"]},
        {"target": "no fold drops by more than 0.05 Dice at any step", "measured": f"largest drop {worst_drop:.3f}", "met": worst_drop <= 0.05},
    ]


def draw_curve(rows: list[dict], means: list[dict], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, label in zip(axes, ("dice", "fp_ml", "lesion_f1"), ("Dice", "false-positive volume (mL)", "lesion-wise F1")):
        for fold in sorted({r["fold"] for r in rows}):
            at = sorted((r for r in rows if r["fold"] == fold), key=lambda r: r["corrections"])
            ax.plot([r["corrections"] for r in at], [r[key] for r in at], "o-", alpha=0.5, label=f"held out {fold.split('/')[-1]}")
        ax.plot([m["corrections"] for m in means], [m[key] for m in means], "k-", lw=2.5, label="mean")
        ax.set_xlabel("site corrections (real cases, expert masks)")
        ax.set_ylabel(label)
        ax.set_xticks([m["corrections"] for m in means])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(png)


def main_real(args) -> int:
    log = lambda msg: print(f"[loop {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    top = Path(args.real) / "isles22"
    cases = [s for s in real_studies(top) if s.kind == "mri" and s.expert_mask is not None]
    if len(cases) < 2:
        raise SystemExit(f"{top}: needs at least two ISLES'22 cases with expert masks; found {len(cases)}")
    names = [case_name(s) for s in cases]
    start_model = Path(args.start_model).resolve()
    refuse_seen_model(start_model, names)
    folds = [s for s in cases if not args.folds or any(case_name(s).endswith(f) for f in args.folds.split(","))]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="strokelabel-loop-real-")).resolve()
    request = {"device": "cpu", "dataset": "CacheDataset", **({"max_epochs": args.epochs} if args.epochs else {}), **parse_options(args.set)}
    log(f"{len(cases)} cases ({', '.join(names)}), {len(folds)} fold(s), start model {start_model}, request {request}, work {work}")

    sys.path.insert(0, str(REPO / "apps" / "stroke"))
    from lib.trainers.ischemic_lesion import ON_SITE_RECIPE
    from lib.trainers.reference_studies import phantom_references, rehearsal_phantoms

    started = time.time()
    phantom_references()("mri")  # the trainer's own reference phantoms, in the app's cache: made once for every fold
    rehearsal_phantoms("mri", int(request.get("rehearsal_studies", ON_SITE_RECIPE.get("rehearsal_studies", 0))))  # and its rehearsal ones
    log(f"reference and rehearsal phantoms ready in {time.time() - started:.0f} s")

    rows, trainings = [], []
    for held in folds:
        others = [s for s in cases if s is not held]
        fold_rows, fold_trainings = run_fold(held, others, work / f"fold-{case_name(held).split('-')[-1]}", start_model, request, log,
                                             Path(args.recipe).resolve() if args.recipe else None)
        rows += fold_rows
        trainings += fold_trainings
        # every fold's figures kept as they come: a long run that stops later still has them
        (work / "loop_results.json").write_text(json.dumps({"rows": rows, "trainings": trainings}, indent=1, default=str))
    shown = {**request, **recipe_options(Path(args.recipe).resolve(), log)} if args.recipe else request
    report_real(rows, trainings, names, len(folds), start_model, shown, Path(args.png))
    print_decision_check(check_decisions(rows, trainings, {case_name(s): s for s in cases}, work, log))
    return 0


def report_saved_run(args) -> int:
    """The tables of a run kept in ``--workdir`` (``loop_results.json``), printed again with the decision check."""
    log = lambda msg: print(f"[loop {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    work = Path(args.workdir).resolve()
    cases = {case_name(s): s for s in real_studies(Path(args.real) / "isles22") if s.kind == "mri" and s.expert_mask is not None}
    # every fold's own record (folds run as parallel processes sharing --workdir, or a run stopped mid-fold),
    # else the run's summary
    progress = sorted(work.glob("fold-*/fold_progress.json"))
    saved = [json.loads(p.read_text()) for p in progress] or [json.loads((work / "loop_results.json").read_text())]
    rows = [r for s in saved for r in s["rows"]]
    trainings = [t for s in saved for t in s["trainings"]]
    for t in trainings:  # runs saved before the version was recorded: the fold's versions in run order
        if not t.get("version_path"):
            folder = work / f"fold-{t['fold'].split('-')[-1]}" / "server" / "stroke" / "model" / TRAINER / "versions"
            t["version_path"] = str(sorted(folder.glob(f"{TRAINER}_*.pt"))[t["corrections"] - 1])
    request = {"max_epochs": args.epochs, **parse_options(args.set)} if args.epochs else parse_options(args.set)
    report_real(rows, trainings, sorted(cases), len({r["fold"] for r in rows}), Path(args.start_model), request, Path(args.png))
    if not args.no_decision_check:
        print_decision_check(check_decisions(rows, trainings, cases, work, log))
    return 0


def check_decisions(rows: list[dict], trainings: list[dict], cases: dict, work: Path, log) -> list[dict]:
    """Was each publish decision right for the held-out real case? Every candidate (published or
    kept aside) is scored on it in-process, with the app's own infer task, beside the model that
    was in use when it was decided."""
    sys.path.insert(0, str(REPO / "apps" / "stroke"))
    from harness import load_infer_tasks, run_infer

    out = []
    for t in trainings:
        held = cases[t["fold"]]
        truth = np.asarray(nib.load(str(held.expert_mask)).dataobj) > 0
        spacing_mm = tuple(float(z) for z in nib.load(str(held.reference)).header.get_zooms()[:3])
        model_dir = work / "candidates" / Path(t["version_path"]).stem / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(t["version_path"], model_dir / f"{TRAINER}.pt")
        task = load_infer_tasks(model_dir, models="ischemic_lesion")["ischemic_lesion"]
        pred, _ = run_infer(task, held.reference, "model")
        candidate = score_real(pred, truth, spacing_mm)
        before = next(r for r in rows if r["fold"] == t["fold"] and r["corrections"] == t["corrections"] - 1)
        better = candidate["dice"] >= before["dice"]
        out.append({"fold": t["fold"], "corrections": t["corrections"], "published": t["published"],
                    "in_use_dice": before["dice"], "candidate_dice": candidate["dice"], "candidate_fp_ml": candidate["fp_ml"],
                    "on_the_held_out_case": "better or equal" if better else "worse",
                    "decision": "right" if bool(t["published"]) == better else "wrong"})
        log(f"{t['fold']} correction {t['corrections']}: candidate Dice {candidate['dice']:.3f} vs {before['dice']:.3f} in use; "
            f"{'published' if t['published'] else 'kept aside'}")
    return out


def print_decision_check(check: list[dict]) -> None:
    print("\n## The publish decisions against the held-out real case (every candidate scored on it)\n")
    print(metrics.format_table(check, ["fold", "corrections", "published", "in_use_dice", "candidate_dice", "candidate_fp_ml",
                                       "on_the_held_out_case", "decision"]))
    table = {(p, b): sum(1 for c in check if bool(c["published"]) == p and c["on_the_held_out_case"].startswith("better") == b)
             for p in (True, False) for b in (True, False)}
    print(f"\npublished: {table[(True, True)]} better or equal, {table[(True, False)]} worse on the held-out case; "
          f"kept aside: {table[(False, True)]} better or equal, {table[(False, False)]} worse")


def report_real(rows: list[dict], trainings: list[dict], names: list[str], n_folds: int, start_model: Path, request: dict, png: Path) -> None:
    steps = len(names) - 1
    means = mean_rows(rows, steps)
    print(f"# Retraining loop on real cases: {TRAINER}, leave-one-case-out over {', '.join(names)}, through the MONAI Label server and client")
    print(f"# start model {start_model.relative_to(REPO) if start_model.is_relative_to(REPO) else start_model}; request {request}\n")
    print("## Mean over folds\n")
    print(metrics.format_table(means, ["corrections", "folds", "dice", "fp_ml", "lesion_f1", "volume_ml", "published"]))
    print("\n## Every fold\n")
    print(metrics.format_table(rows, ["fold", "corrections", "dice", "fp_ml", "lesion_f1", "volume_ml", "expert_ml", "published", "train_s", "model"]))
    print("\n## Every retraining (publish decision and its reason)\n")
    print(metrics.format_table(trainings, ["fold", "corrections", "corrected", "seconds", "train_studies", "deciding", "site_deciding",
                                           "checkpoint_epoch", "candidate", "in_use", "published", "reason"]))
    seconds = [t["seconds"] for t in trainings]
    print(f"\nretraining seconds per correction (2 CPU cores, shared): mean {np.mean(seconds):.0f}, min {min(seconds):.0f}, max {max(seconds):.0f}")
    print("\n## Targets\n")
    print(metrics.format_table(targets(means, rows), ["target", "measured", "met"]))
    draw_curve(rows, means, png, f"{TRAINER}: held-out real case after each site correction (leave-one-case-out, ISLES'22, {n_folds} folds)")
    print(f"\ncurve: {png}")


if __name__ == "__main__":
    sys.exit(main())
