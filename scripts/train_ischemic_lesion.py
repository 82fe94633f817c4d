"""Train the shipped starting models of ischemic_lesion on phantoms, with the app's own trainers.

Routes: ``mri`` (MDANet, DWI | ADC), ``siamese`` (hemispheric Siamese net, DWI alone), both on
MRI phantoms in the ISLES'22 layout (masks under derivatives/ used as final labels), and ``ctp``
(MDANet, CBF, CBV | MTT, Tmax) on CT perfusion phantoms (lesion = core). Each route is trained by
``IschemicLesionTrain`` (the server's trainer) into a scratch model folder, then its model is
stored in fp16 as ``apps/stroke/model/shipped/ischemic_lesion_<route>.pt`` with a JSON beside it,
and scored on held-out phantoms (other seed) by the app's infer task.

    python scripts/train_ischemic_lesion.py                 # all routes, ~10 min on 2 busy cores
    python scripts/train_ischemic_lesion.py --routes mri --epochs 5 --out /tmp/x   # quick try
"""

from __future__ import annotations

import argparse
import datetime
import json
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
    parser.add_argument("--crop", type=int, default=64, help="in-plane crop of the training samples (voxels of the plan's spacing)")
    parser.add_argument("--slices", type=int, default=8, help="slices drawn per study per epoch")
    parser.add_argument("--batch", type=int, default=2, help="studies per step")
    parser.add_argument("--val-interval", type=int, default=1, help="validate every N epochs")
    parser.add_argument("--val-split", type=float, default=0.25, help="share of the studies kept for validation")
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
    train_root, held_root = data / "train", data / "held_out"
    started = time.time()
    generator = {"family": args.family, "appearance": args.appearance, "conventions": None if args.conventions == "none" else args.conventions}
    if any(r in ("mri", "siamese") for r in routes):
        generate_isles_dataset(train_root, n=args.studies, seed=args.seed, **generator)
        generate_isles_dataset(held_root, n=args.held_out, seed=args.seed + 1, **generator)
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
            "pretrained": False,
            "split_seed": 0,
            "crop_size": args.crop,
            "slices_per_study": args.slices,
            "train_batch_size": args.batch,
            "val_interval": args.val_interval,
            "val_split": args.val_split,
        }
        t0 = time.time()
        print(f"== {route}: training {args.epochs} epochs", flush=True)
        stats = trainer(request, store)
        train_s = time.time() - t0
        trained = model_dir / f"ischemic_lesion_{route}.pt"
        state = torch.load(trained, map_location="cpu", weights_only=False)
        state = state.get("model", state)
        half = {k: v.half() if torch.is_floating_point(v) else v for k, v in state.items()}
        target = out / f"ischemic_lesion_{route}.pt"
        torch.save({"model": half}, target)

        # held-out phantoms, through the app's infer task with the stored (fp16) model
        shutil.copy(target, model_dir / "shipped" / target.name)
        trained.unlink()
        infer = build_task_configs(str(model_dir), {}, "ischemic_lesion")["ischemic_lesion"].infer()
        refs = sorted(held_root.glob("rawdata/sub-*/ses-*/dwi/*_dwi.nii.gz")) if route != "ctp" else sorted(held_root.glob("sub-*/ses-*/*_tmax.nii.gz"))
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
            "data": f"{args.studies} {'CTP' if route == 'ctp' else 'ISLES22-layout MRI'} phantoms (seed {args.seed}), split by the trainer "
            f"({len(stats.get('val_studies', []))} for validation); {len(refs)} held-out phantoms (seed {args.seed + 1})",
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
        (out / f"ischemic_lesion_{route}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"== {route}: val Dice {record['metrics']['val_dice_trainer']}, held-out Dice {record['metrics']['held_out_dice_mean']}, "
              f"{train_s:.0f} s, {target.stat().st_size / 1e6:.2f} MB -> {target}", flush=True)
    return 0


def _truth(root: Path, ref: Path, route: str) -> np.ndarray:
    import nibabel as nib

    from strokelabel.naming import find_derivative_mask, parse_filename, truth_path

    if route == "ctp":
        p = parse_filename(ref.name)
        return np.asarray(nib.load(str(truth_path(root, p.subject, p.session, "lesion"))).dataobj)
    return np.asarray(nib.load(str(find_derivative_mask(root, ref))).dataobj)


if __name__ == "__main__":
    sys.exit(main())
