"""Train the shipped starting models of clot_region on generated phantoms (reproducible, seeded).

Generates labelled multiphase-CTA phantom studies, trains the clot segmentation (ClotSegNet),
the CTA-only segmentation and the region classifier (AMI-Net) with the app's own trainers (same transforms, losses,
validation split and publish rule as a site's retraining), then writes the published
checkpoints in fp16 to ``apps/stroke/model/shipped/clot_region{,_cta,_classifier}.pt`` with a JSON
beside each (command, seed, data, epochs, metrics, date).

    .venv/bin/python scripts/train_clot_region.py [--studies 24] [--seg-epochs 30] [--cls-epochs 30] [--seed 2002]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "apps" / "stroke"))

from strokelabel.phantom import generate_dataset  # noqa: E402
from strokelabel.study import voxel_spacing_mm  # noqa: E402


def fp16_copy(src: Path, dst: Path) -> int:
    state = torch.load(str(src), map_location="cpu")
    state = state.get("model", state)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, str(dst))
    return dst.stat().st_size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=24, help="labelled phantom CTA studies (default 24)")
    parser.add_argument("--seg-epochs", type=int, default=30)
    parser.add_argument("--cls-epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2002, help="phantom and torch seed")
    parser.add_argument("--seg-crop", type=int, default=64, help="in-plane crop of the segmentation's training slices (0: none)")
    parser.add_argument("--samples", type=int, default=16, help="slice windows drawn per study and epoch")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--spiral-dropout", type=float, default=0.3, help="share of samples trained without their SPIRAL map")
    parser.add_argument("--val-interval", type=int, default=5, help="validate every N epochs (whole studies are costly)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="folder for studies and runs (default: temporary)")
    parser.add_argument("--out", default=str(REPO / "apps" / "stroke" / "model" / "shipped"))
    parser.add_argument("--only", choices=("clot_region", "clot_region_cta", "clot_region_classifier"), default=None,
                        help="train one of the models (e.g. each in its own process)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from monai.utils import set_determinism

    set_determinism(seed=args.seed)
    from lib.datastore import StrokeDatastore
    from main import build_task_configs

    work = Path(args.workdir or tempfile.mkdtemp(prefix="clot-train-"))
    studies, model_dir = work / "studies", work / ("model" + (f"-{args.only}" if args.only else ""))
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    started = time.time()
    generate_dataset(studies, per_kind=args.studies, labelled_per_kind=args.studies, size="small", seed=args.seed,
                     kinds=("cta",), progress=lambda *a, **k: print(*a, **k, flush=True))
    print(f"[train_clot_region] {args.studies} studies in {time.time() - started:.0f}s", flush=True)

    # The working grid both networks learn and infer on: the median spacing of the training studies.
    from lib.transforms import clot_region as cr

    spacings = [voxel_spacing_mm(nib.load(str(p)).affine) for p in sorted(studies.glob("sub-*/ses-*/*_acq-phase1_cta.nii*"))]
    plan = {"spacing_mm": [round(float(v), 4) for v in np.median(np.array(spacings), axis=0)],
            "computed_from": f"{len(spacings)} CTA phantoms, seed {args.seed} (scripts/train_clot_region.py)"}
    Path(cr.PLAN_PATH).write_text(json.dumps(plan, indent=2) + "\n")
    print(f"[train_clot_region] working grid plan -> {cr.PLAN_PATH}: {plan['spacing_mm']} mm", flush=True)

    config = build_task_configs(str(model_dir), {}, "clot_region")["clot_region"]
    trainers = config.trainer()
    datastore = StrokeDatastore(str(studies))
    epochs = {config.name: args.seg_epochs, config.cta_only_name: args.seg_epochs, config.classifier_name: args.cls_epochs}
    # The segmentation learns from crops around clot (fully convolutional: it infers on whole slices);
    # the classifier needs the whole slice, since where a clot lies decides its region.
    seg_sampling = {"crop_size": args.seg_crop, "pos_fraction": 0.7}
    sampling = {config.name: seg_sampling, config.cta_only_name: seg_sampling,
                config.classifier_name: {"crop_size": 0, "pos_fraction": 0.5}}
    out = Path(args.out)
    for name, trainer in trainers.items():
        if args.only and name != args.only:
            continue
        t0 = time.time()
        trainer._val_interval = args.val_interval
        request = {"device": "cuda" if torch.cuda.is_available() else "cpu", "dataset": "CacheDataset", "dataloader": "DataLoader",
                   "multi_gpu": False, "max_epochs": epochs[name], "pretrained": False, "val_split": 0.25, "split_seed": 0,
                   "samples_per_study": args.samples, "learning_rate": args.lr, "spiral_dropout": args.spiral_dropout,
                   **sampling[name]}
        stats = trainer(request, datastore)
        seconds = time.time() - t0
        published = model_dir / f"{name}.pt"
        if not published.exists():
            print(f"[train_clot_region] {name}: nothing published ({stats.get('reason')})", flush=True)
            return 1
        size = fp16_copy(published, out / f"{name}.pt")
        record = {
            "task": name,
            "network": "AMINet (compact MobileNetV2)" if name == config.classifier_name else
                       "ClotSegNet (2.5D BasicUNet)" + (", CTA phases only" if name == config.cta_only_name else ""),
            "command": "python scripts/" + Path(__file__).name + " " + " ".join(argv if argv is not None else sys.argv[1:]),
            "seed": args.seed,
            "data": f"{args.studies} phantom CTA studies, size small (128x128x40, 1.7x1.7x3.2 mm), strokelabel.phantom seed {args.seed}",
            "epochs": epochs[name],
            "sampling": {"samples_per_study": args.samples, "spiral_dropout": args.spiral_dropout, **sampling[name]},
            "learning_rate": args.lr,
            "train_studies": stats.get("train_studies"),
            "val_studies": stats.get("val_studies"),
            "val_metric": "per-slice region F1 (micro, whole studies)" if name == config.classifier_name else "clot Dice (whole studies)",
            "val_value": stats.get("candidate_val_dice"),
            "train_seconds": round(seconds, 1),
            "threads": args.threads,
            "storage": "fp16 state dict",
            "bytes": size,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"[train_clot_region] {name}: {record['val_metric']} {record['val_value']} in {seconds:.0f}s -> {out / (name + '.pt')} "
              f"({size / 1024:.0f} KiB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
