"""Train the shipped starting model of core_penumbra on generated phantoms (no downloads).

Reproducible: phantoms from ``--seed``, torch seeded, one thread by default. Writes the
normalisation plan (``apps/stroke/lib/transforms/core_penumbra_plan.json``, computed from the
training phantoms), the checkpoint (``apps/stroke/model/shipped/core_penumbra.pt``, fp16
weights, < 2 MB) and a JSON beside it with the command, seed, data, epochs and metrics.

The samples and the loss are the app trainer's (``lib/trainers/core_penumbra.py``: axial
slices drawn half through the lesion, left-right flips, focal Tversky with core weighted
most); this script only adds a longer, time-boxed run from scratch with a cosine schedule.

    .venv/bin/python scripts/train_core_penumbra.py [--train 16] [--val 4] [--minutes 7] [--seed 2026]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "apps" / "stroke"
sys.path.insert(0, str(APP_DIR))

from monai.data import CacheDataset, DataLoader, list_data_collate  # noqa: E402
from monai.transforms import Compose  # noqa: E402
from monai.utils import set_determinism  # noqa: E402

from lib.trainers.core_penumbra import CE_WEIGHT, CLASS_WEIGHTS, CorePenumbraLoss, train_transforms, val_transforms  # noqa: E402
from lib.transforms import core_penumbra as cp  # noqa: E402
from lib.transforms.baselines import perfusion_brain_mask  # noqa: E402
from lib.transforms.study import LoadStudyd  # noqa: E402
from strokelabel.phantom import generate_dataset  # noqa: E402


def log(msg: str) -> None:
    print(f"[train_core_penumbra {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def dice_per_class(pred: np.ndarray, truth: np.ndarray) -> dict:
    out = {}
    for name, p, t in (("core", pred == 1, truth == 1), ("penumbra", pred == 2, truth == 2), ("hypo", pred > 0, truth > 0)):
        denom = p.sum() + t.sum()
        out[name] = float(2 * (p & t).sum() / denom) if denom else 1.0
    return out


def validate(model, val_items, brains) -> dict:
    model.eval()
    inferer = cp.slice_inferer()
    scores = []
    with torch.no_grad():
        for item, brain in zip(val_items, brains):
            logits = inferer(torch.as_tensor(np.asarray(item["image"]))[None].float(), model)[0]
            pred = logits.argmax(0).numpy().astype(np.uint8)
            pred[~brain] = 0
            scores.append(dice_per_class(pred, np.asarray(item["label"])[0]))
    model.train()
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=16, help="training phantoms (default 16)")
    parser.add_argument("--val", type=int, default=4, help="validation phantoms (default 4)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--minutes", type=float, default=7.0, help="training time budget (default 7)")
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-studies", type=int, default=2, help="studies per step (x slices each)")
    parser.add_argument("--slices", type=int, default=8, help="slices per study per step")
    parser.add_argument("--ce-weight", type=float, default=CE_WEIGHT, help="cross-entropy term (0: focal Tversky only)")
    parser.add_argument("--maps", nargs="+", default=list(cp.DEFAULT_PLAN["maps"]),
                        help="input maps, in channel order (rcbf is derived from CBF and Tmax)")
    parser.add_argument("--class-weights", type=float, nargs=3, default=list(CLASS_WEIGHTS), help="background, core, penumbra")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--studies", default=str(REPO / "work-data" / "core_penumbra_phantoms"), help="phantom folder (reused)")
    parser.add_argument("--out", default=str(APP_DIR / "model" / "shipped" / "core_penumbra.pt"))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    set_determinism(seed=args.seed)
    started = time.time()

    log(f"generating {args.train + args.val} CTP phantoms (seed {args.seed}) in {args.studies}")
    records = generate_dataset(args.studies, per_kind=args.train + args.val, labelled_per_kind=args.train + args.val,
                               size="small", seed=args.seed, kinds=("ctp",), progress=lambda m: log(m))
    items = []
    for r in records:
        ref = Path(r["reference"])
        items.append({"image": str(ref), "label": str(Path(args.studies) / "labels" / "final" / ref.name)})
    train_items, val_items = items[: args.train], items[args.train :]
    log(f"generated in {time.time() - started:.0f} s; {len(train_items)} train, {len(val_items)} val studies")

    # The plan: normalisation constants from the training studies only.
    maps = tuple(args.maps)
    loader = LoadStudyd(cp.source_maps(maps), ("mip",))
    plan_studies = []
    for it in train_items:
        d = loader({"image": it["image"]})
        brain = np.asarray(perfusion_brain_mask(d), bool)
        plan_studies.append({**cp.input_maps(d, maps, brain), "brain": brain, "spacing_mm": d["study"].spacing_mm})
    plan = cp.compute_plan(plan_studies, maps)
    plan["computed_from"] = f"{len(train_items)} CTP phantoms, seed {args.seed} (scripts/train_core_penumbra.py)"
    Path(cp.PLAN_PATH).write_text(json.dumps(plan, indent=2) + "\n")
    log(f"normalisation plan -> {cp.PLAN_PATH}: {json.dumps(plan['normalisation'])}")

    # CorePenumbraInputd reads the plan file at construction: build the datasets after writing it.
    val_ds = CacheDataset(val_items, Compose(val_transforms(maps)), progress=False)
    val_brains = [np.asarray(loader_brain(it["image"], maps)) for it in val_items]
    train_ds = CacheDataset(train_items, Compose(train_transforms(maps, args.slices)), progress=False)
    train_loader = DataLoader(train_ds, batch_size=args.batch_studies, shuffle=True, num_workers=0, collate_fn=list_data_collate)

    model = cp.build_network(maps=maps)
    loss_fn = CorePenumbraLoss(tuple(args.class_weights), args.ce_weight)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    budget_s = args.minutes * 60
    steps_per_epoch = len(train_loader)
    log(f"training CorePenumbraNet {model.net.features} ({sum(p.numel() for p in model.parameters())} parameters), "
        f"{steps_per_epoch} steps/epoch, budget {args.minutes} min, class weights {args.class_weights}")

    best, best_state, history, epoch = -1.0, None, [], 0
    train_start = time.time()
    while epoch < args.max_epochs:
        epoch += 1
        elapsed = time.time() - train_start
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / budget_s)))
        for g in optimizer.param_groups:
            g["lr"] = max(lr, args.lr * 0.02)
        losses = []
        for batch in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(batch["image"].float()), batch["label"].long())
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        scores = validate(model, val_ds, val_brains)
        key = (scores["core"] + scores["penumbra"]) / 2
        history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4), **{k: round(v, 4) for k, v in scores.items()}})
        log(f"epoch {epoch}: loss {np.mean(losses):.4f} lr {lr:.2e} val Dice core {scores['core']:.3f} "
            f"penumbra {scores['penumbra']:.3f} hypo {scores['hypo']:.3f} ({time.time() - train_start:.0f} s)")
        if key > best:
            best, best_state, best_epoch = key, {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch
        if time.time() - train_start > budget_s:
            break

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {k: (v.half() if v.is_floating_point() else v) for k, v in best_state.items()}}, str(out))
    # The stored fp16 weights, scored again: what the app will run.
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in torch.load(str(out))["model"].items()})
    final = validate(model, val_ds, val_brains)
    record = {
        "command": "python scripts/train_core_penumbra.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed,
        "data": {"kind": "ctp", "size": "small", "generator_seed": args.seed, "train_studies": [Path(i["image"]).name for i in train_items],
                 "val_studies": [Path(i["image"]).name for i in val_items]},
        "network": {"class": "CorePenumbraNet", "features": list(model.net.features), "in_maps": list(maps), "context_slices": 0,
                    "use_nihss": True, "parameters": int(sum(p.numel() for p in model.parameters())), "storage": "float16"},
        "loss": {"class": "CorePenumbraLoss", "focal_tversky": {"gamma": 4 / 3, "alpha": 0.7, "beta": 0.3},
                 "class_weights": list(args.class_weights), "ce_weight": args.ce_weight},
        "optimizer": {"class": "AdamW", "lr": args.lr, "schedule": "cosine over the time budget", "batch": f"{args.batch_studies} studies x {args.slices} slices"},
        "epochs": epoch,
        "best_epoch": best_epoch,
        "val_dice_fp16": {k: round(v, 4) for k, v in final.items()},
        "history": history,
        "train_seconds": round(time.time() - train_start, 1),
        "total_seconds": round(time.time() - started, 1),
        "threads": args.threads,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), best epoch {best_epoch}; val Dice (fp16) {final}")
    return 0


def loader_brain(image: str, maps) -> np.ndarray:
    d = LoadStudyd(cp.source_maps(maps), ("mip",))({"image": image})
    return np.asarray(perfusion_brain_mask(d), bool)


if __name__ == "__main__":
    sys.exit(main())
