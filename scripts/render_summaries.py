"""Example summary pictures: one phantom study per kind, the app's own infer task, one PNG each.

    .venv/bin/python scripts/render_summaries.py [--out docs] [--work DIR] [--seed 0] [--method baseline]

Writes ``summary_core_penumbra.png`` (CTP), ``summary_ischemic_lesion.png`` (MRI) and
``summary_clot_region.png`` (CTA) into ``--out`` and prints the seconds each picture took to
render (the infer is not counted). The phantom studies go to ``--work`` (default: a temporary
folder, removed afterwards); their atlas numbers regions as the phantom generator names them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from harness import load_infer_tasks

from strokelabel.naming import study_kind
from strokelabel.phantom import generate_dataset
from strokelabel.phantom.anatomy import REGIONS
from strokelabel.summary import render_summary

# Task -> the study kind its example is drawn on.
EXAMPLES = {"core_penumbra": "ctp", "ischemic_lesion": "mri", "clot_region": "cta"}


def render_examples(out: Path, work: Path, seed: int, method: str) -> dict[str, float]:
    """Generate the phantoms (kept when already in ``work``), infer each task, render; seconds per picture."""
    records = generate_dataset(work, per_kind=1, labelled_per_kind=0, size="small", seed=seed, kinds=tuple(EXAMPLES.values()),
                               progress=lambda *a, **k: print(*a, file=sys.stderr, **k))
    reference = {study_kind(record["reference"]): record["reference"] for record in records}
    tasks = load_infer_tasks(models=",".join(EXAMPLES))
    seconds = {}
    for name, kind in EXAMPLES.items():
        _, data = tasks[name]({"image": str(reference[kind]), "method": method, "skip_writer": True, "device": "cpu"})
        study = data["study"]
        pred = data["pred"]
        pred = pred.detach().cpu().numpy() if hasattr(pred, "detach") else pred
        label = study.to_canonical(pred)  # the served label is on the stored grid; the picture reads RAS
        started = time.perf_counter()
        path = render_summary(study, label, data["result"], out / f"summary_{name}.png", task=name, region_names=REGIONS)
        seconds[name] = time.perf_counter() - started
        print(f"{path}: {seconds[name]:.2f} s, {path.stat().st_size / 1000:.0f} kB ({data['result'].get('method')})")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    parser.add_argument("--work", type=Path, default=None, help="folder for the phantom studies (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (0: the clot baseline finds the occluded branch's region)")
    parser.add_argument("--method", default="baseline", choices=("baseline", "auto", "model"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.work is not None:
        render_examples(args.out, args.work, args.seed, args.method)
    else:
        with tempfile.TemporaryDirectory(prefix="summaries-") as work:
            render_examples(args.out, Path(work), args.seed, args.method)
    return 0


if __name__ == "__main__":
    sys.exit(main())
