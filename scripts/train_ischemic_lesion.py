"""Train the shipped starting models of ischemic_lesion on phantoms, with the app's own trainers.

Routes: ``mri`` (MDANet, DWI | ADC), ``siamese`` (hemispheric Siamese net, DWI alone), both on
MRI phantoms in the ISLES'22 layout (masks under derivatives/ used as final labels), and ``ctp``
(MDANet, CBF, CBV | MTT, Tmax) on CT perfusion phantoms (lesion = core). Each route is trained by
``IschemicLesionTrain`` (the server's trainer) into a scratch model folder, then its model is
stored in fp16 as ``apps/stroke/model/shipped/ischemic_lesion_<route>.pt`` with a JSON beside it,
and scored on held-out phantoms (other seed) by the app's infer task.

    python scripts/train_ischemic_lesion.py                 # all routes, ~10 min on 2 busy cores
    python scripts/train_ischemic_lesion.py --routes mri --epochs 5 --out /tmp/x   # quick try

Real cases (``--real DIR``, an ISLES'22 tree as distributed: rawdata/ + derivatives/…_msk) are
trained on beside the phantoms: the trainer's datastore is a tree of links to the phantom and the
real studies' files (never copies), so the study loader and naming rule read them as the server
would. ``--exclude-real`` leaves cases out (the leave-one-out folds of ``evaluate.py --loo``), and
``--init DIR`` fine-tunes from the models in DIR (e.g. ``apps/stroke/model/shipped/phantom_only``)
instead of training from scratch. The card beside each model lists ``trained_on_real``: the real
cases trained on plus those the starting model's card lists.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "apps" / "stroke"
sys.path.insert(0, str(APP_DIR))
sys.path.insert(0, str(REPO))

from strokelabel.metrics import dice  # noqa: E402
from strokelabel.phantom import generate_dataset  # noqa: E402
from strokelabel.phantom.isles_layout import generate_isles_dataset  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", default="mri,siamese,ctp")
    parser.add_argument("--studies", type=int, default=12, help="training+validation phantoms per kind")
    parser.add_argument("--held-out", type=int, default=4, help="held-out phantoms per kind for the metrics")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--data", default="/tmp/ischemic_lesion_train", help="scratch folder for phantoms and runs")
    parser.add_argument("--out", default=str(APP_DIR / "model" / "shipped"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--family", default="template", help="phantom anatomy of the training data (never the held-out ellipsoid family)")
    parser.add_argument("--appearance", default="random", help="phantom appearance: random (per study) or fixed")
    parser.add_argument("--conventions", default="random", help="on-disk conventions: random (per study) or none")
    parser.add_argument("--crop", type=int, default=128, help="in-plane crop of the training samples (voxels of the plan's spacing)")
    parser.add_argument("--slices", type=int, default=8, help="slices drawn per study per epoch")
    parser.add_argument("--batch", type=int, default=2, help="studies per step")
    parser.add_argument("--val-interval", type=int, default=1, help="validate every N epochs")
    parser.add_argument("--val-split", type=float, default=0.25, help="share of the studies kept for validation")
    parser.add_argument("--crop-ratio", default="1:3", help="lesion-centred : other training crops (the trainer's lesion_crop_ratio)")
    parser.add_argument("--loss", default="tversky_ce", choices=("dice_ce", "tversky_ce"), help="segmentation loss (the trainer's lesion_loss)")
    parser.add_argument("--real", default=None, metavar="DIR", help="also train on the real cases of this ISLES'22 tree (expert masks as labels)")
    parser.add_argument("--exclude-real", default="", help="comma-separated real subjects left out (sub-strokecase0001,...)")
    parser.add_argument("--init", default=None, metavar="DIR", help="fine-tune from ischemic_lesion_<route>.pt in DIR (default: from scratch)")
    parser.add_argument("--first-index", type=int, default=None,
                        help="first phantom case number (default 1; 1001 with --real, so no phantom shares a real case's name)")
    parser.add_argument("--phantoms", default=None, metavar="DIR", help="training phantoms folder (default DATA/train), generated once and reused")
    parser.add_argument("--skip-held-out", action="store_true", help="do not score held-out phantoms (fold models of evaluate.py --loo)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    from monai.utils import set_determinism

    set_determinism(seed=args.seed)

    from lib.datastore import StrokeDatastore
    from main import build_task_configs

    data = Path(args.data)
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    train_root, held_root = Path(args.phantoms) if args.phantoms else data / "train", data / "held_out"
    started = time.time()
    generator = {"family": args.family, "appearance": args.appearance, "conventions": None if args.conventions == "none" else args.conventions}
    first = args.first_index or (1001 if args.real else 1)
    real_cases: list[str] = []
    if any(r in ("mri", "siamese") for r in routes):
        phantoms = generate_isles_dataset(train_root, n=args.studies, seed=args.seed, first_index=first, **generator)
        if not args.skip_held_out:
            generate_isles_dataset(held_root, n=args.held_out, seed=args.seed + 1, first_index=first, **generator)
        if args.real:
            excluded = {s.strip() for s in args.exclude_real.split(",") if s.strip()}
            train_root, real_cases = training_tree(data / "train_tree", train_root, [p["subject"] for p in phantoms], Path(args.real), excluded)
            print(f"training tree {train_root}: {len(phantoms)} phantoms + real {real_cases}", flush=True)
    if "ctp" in routes:
        generate_dataset(train_root, per_kind=args.studies, labelled_per_kind=args.studies, kinds=("ctp",), seed=args.seed, **generator)
        generate_dataset(held_root, per_kind=args.held_out, labelled_per_kind=0, kinds=("ctp",), seed=args.seed + 1, progress=None,
                         **generator)
    print(f"phantoms ready in {time.time() - started:.0f} s", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for route in routes:
        model_dir = data / f"model_{route}"
        shutil.rmtree(model_dir, ignore_errors=True)
        (model_dir / "shipped").mkdir(parents=True)
        start_cards: list[str] = []
        if args.init:  # the starting model, as the server's shipped model: the trainer fine-tunes from the model in use
            init = Path(args.init) / f"ischemic_lesion_{route}.pt"
            shutil.copy(init, model_dir / "shipped" / init.name)
            from lib.checkpoints import real_cases_seen

            start_cards = real_cases_seen(str(init))
            if start_cards is None:
                raise SystemExit(f"{init} has no model card: the real cases it learned from are unknown, so its children's cards could not say")
        config = build_task_configs(str(model_dir), {}, "ischemic_lesion")["ischemic_lesion"]
        trainer = config.trainer()[f"ischemic_lesion_{route}"]
        store = StrokeDatastore(str(train_root))
        request = {
            "max_epochs": args.epochs,
            "learning_rate": args.lr,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "dataset": "CacheDataset",
            "dataloader": "DataLoader",
            "multi_gpu": False,
            "pretrained": bool(args.init),
            "split_seed": 0,
            "crop_size": args.crop,
            "slices_per_study": args.slices,
            "train_batch_size": args.batch,
            "val_interval": args.val_interval,
            "val_split": args.val_split,
            "lesion_crop_ratio": args.crop_ratio,
            "lesion_loss": args.loss,
            "rehearsal_studies": 0,  # the training phantoms are the data; rehearsal is for on-site fine-tunes
        }
        t0 = time.time()
        print(f"== {route}: training {args.epochs} epochs", flush=True)
        stats = trainer(request, store)
        train_s = time.time() - t0
        # The run's candidate, published or not: the trainer's publish rule guards a site's model in use,
        # and here the starting model is only where the run began.
        trained = Path(stats["version_path"]) if stats.get("version_path") else model_dir / f"ischemic_lesion_{route}.pt"
        state = torch.load(trained, map_location="cpu", weights_only=False)
        state = state.get("model", state)
        half = {k: v.half() if torch.is_floating_point(v) else v for k, v in state.items()}
        target = out / f"ischemic_lesion_{route}.pt"
        torch.save({"model": half}, target)

        # held-out phantoms, through the app's infer task with the stored (fp16) model
        shutil.copy(target, model_dir / "shipped" / target.name)
        for stale in (model_dir / f"ischemic_lesion_{route}.pt",):
            stale.unlink(missing_ok=True)
        infer = build_task_configs(str(model_dir), {}, "ischemic_lesion")["ischemic_lesion"].infer()
        refs = sorted(held_root.glob("rawdata/sub-*/ses-*/dwi/*_dwi.nii.gz")) if route != "ctp" else sorted(held_root.glob("sub-*/ses-*/*_tmax.nii.gz"))
        refs = [] if args.skip_held_out else refs
        scores = []
        for ref in refs:
            image = ref
            tmp_dir = None
            if route == "siamese":  # the study without its ADC: a DWI-only study
                tmp_dir = data / "dwi_only" / ref.parent.parent.parent.name / "ses-0001" / "dwi"
                tmp_dir.mkdir(parents=True, exist_ok=True)
                image = tmp_dir / ref.name
                shutil.copy(ref, image)
            _, d = infer({"image": str(image), "method": "model", "skip_writer": True, "device": request["device"]})
            truth = _truth(held_root, ref, route)
            pred = np.asarray(d["pred"])
            scores.append(dice(pred > 0, truth > 0))
            print(f"   held-out {ref.name}: Dice {scores[-1]:.3f} (route {d['result']['route']})", flush=True)
        record = {
            "task": "ischemic_lesion",
            "route": route,
            "network": {"ctp": "MDANet 2-D (CBF, CBV | MTT, Tmax)", "mri": "MDANet 2-D (DWI | ADC)", "siamese": "SiameseLesionNet 2-D (DWI | mirror)"}[route],
            "parameters": int(sum(v.numel() for k, v in half.items() if torch.is_floating_point(v) and "running_" not in k)),
            "storage": "fp16 state dict under 'model'",
            "command": "python scripts/train_ischemic_lesion.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "seed": args.seed,
            "data": f"{args.studies} {'CTP' if route == 'ctp' else 'ISLES22-layout MRI'} phantoms (seed {args.seed})"
            + (f" + {len(real_cases)} real ISLES'22 cases" if real_cases and route != "ctp" else "")
            + f", split by the trainer ({len(stats.get('val_studies', []))} for validation: {', '.join(stats.get('val_studies', []))}); "
            f"{len(refs)} held-out phantoms (seed {args.seed + 1})",
            "started_from": (os.path.relpath(Path(args.init).resolve() / f"ischemic_lesion_{route}.pt", REPO) if args.init else None),
            "trained_on_real": sorted(set(start_cards) | set(real_cases if route != "ctp" else [])),
            "epochs": args.epochs,
            "learning_rate": args.lr,
            "metrics": {
                "val_dice_trainer": stats.get("candidate_val_dice"),
                "held_out_dice_mean": round(float(np.mean(scores)), 4) if scores else None,
                "held_out_dice": [round(float(s), 4) for s in scores],
            },
            "train_seconds": round(train_s, 1),
            "threads": args.threads,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
        }
        if record["trained_on_real"]:
            record["real_data_licence"] = ISLES22_LICENCE
            record["real_data_citation"] = ISLES22_CITATION
        (out / f"ischemic_lesion_{route}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"== {route}: val Dice {record['metrics']['val_dice_trainer']}, held-out Dice {record['metrics']['held_out_dice_mean']}, "
              f"{train_s:.0f} s, {target.stat().st_size / 1e6:.2f} MB -> {target}", flush=True)
    return 0


ISLES22_LICENCE = "ISLES'22 data, CC BY 4.0"
ISLES22_CITATION = ("Hernandez Petzsche et al., \"ISLES 2022: A multi-center magnetic resonance imaging stroke lesion segmentation "
                    "dataset\", Scientific Data 9, 762 (2022)")


def training_tree(tree: Path, phantom_root: Path, phantom_subjects: list[str], real_root: Path, excluded: set[str]) -> tuple[Path, list[str]]:
    """An ISLES'22 tree of links to the phantoms' and the real cases' files (rawdata/ and derivatives/),
    the real subjects in ``excluded`` left out; returns (tree, ["<data set>/sub-<id>", ...] linked).

    Files are linked one by one: the datastore's walk does not enter linked folders."""
    from strokelabel.naming import find_reference_volumes, parse_filename

    shutil.rmtree(tree, ignore_errors=True)
    real_subjects = sorted({parse_filename(Path(rel).name).subject for rel in find_reference_volumes(str(real_root)).values()})
    clash = set(real_subjects) & set(phantom_subjects)
    if clash:
        raise SystemExit(f"phantom and real cases share the names {sorted(clash)}: give the phantoms another --first-index")
    unknown = {s.removeprefix("sub-") for s in excluded} - set(real_subjects)
    if unknown:
        raise SystemExit(f"--exclude-real names {sorted(unknown)}, which {real_root} does not hold (it has {real_subjects})")
    kept = [s for s in real_subjects if s not in {e.removeprefix("sub-") for e in excluded}]
    for root, subjects in ((phantom_root, phantom_subjects), (real_root, kept)):
        for subject in subjects:
            for top in ("rawdata", "derivatives"):
                source = root / top / f"sub-{subject}"
                for path in sorted(source.rglob("*")) if source.is_dir() else []:
                    if path.is_file():
                        link = tree / path.relative_to(root)
                        link.parent.mkdir(parents=True, exist_ok=True)
                        link.symlink_to(path.resolve())
    return tree, [f"{real_root.resolve().name}/sub-{s}" for s in kept]


def _truth(root: Path, ref: Path, route: str) -> np.ndarray:
    import nibabel as nib

    from strokelabel.naming import find_derivative_mask, parse_filename, truth_path

    if route == "ctp":
        p = parse_filename(ref.name)
        return np.asarray(nib.load(str(truth_path(root, p.subject, p.session, "lesion"))).dataobj)
    return np.asarray(nib.load(str(find_derivative_mask(root, ref))).dataobj)


if __name__ == "__main__":
    sys.exit(main())
