"""Inference speed and memory of every task, at the small (test) and the full (clinical) size.

Each measurement runs in a fresh subprocess, so its peak resident memory is its own. For each
task and size the same run also measures a reference: loading the study alone (imports, reading
and checking the NIfTI files), and the ratios printed are against it and, for a learned model,
against the training-free baseline measured in the same run.

    .venv/bin/python scripts/benchmark.py [--sizes small,full] [--tasks core_penumbra,...] [--repeat 2]

Nothing here is a pass/fail test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import TASK_KINDS, held_out_studies

from strokelabel import metrics

HERE = Path(__file__).resolve().parent


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> float:
    """Reset the process's peak RSS (Linux clear_refs), so the next peak is the work's own; returns RSS now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mib("VmRSS")


def peak_mib() -> float:
    return _status_mib("VmHWM")


def measure_one(task_name: str, method: str, reference: str, repeat: int) -> dict:
    """In the child process: time `repeat` inferences (the first also warms the model cache)."""
    from harness import load_infer_tasks, run_infer

    task = load_infer_tasks(models=task_name)[task_name]
    method, _, brain = method.partition("@")  # model@off|fresh|cached: brain extraction (below)
    if brain:
        import os

        from strokelabel.brain_extraction import MODE_ENV

        os.environ[MODE_ENV] = "off" if brain == "off" else "auto"
    before_mib = reset_peak()
    seconds = []
    for _ in range(repeat):
        if brain == "fresh":  # no cached brain mask: deepbet runs in this inference
            import shutil

            shutil.rmtree(Path(reference).parent / "derivatives", ignore_errors=True)
        start = time.perf_counter()
        if method == "load":
            (load,) = task.pre_transforms({"image": reference})  # the task's own study loader
            load({"image": reference})
        else:
            run_infer(task, reference, method)
        seconds.append(time.perf_counter() - start)
    return {"seconds": min(seconds), "seconds_first": seconds[0], "peak_mib": peak_mib(), "before_mib": before_mib}


def shape_of(reference: Path) -> str:
    import nibabel as nib

    return "x".join(str(n) for n in nib.load(str(reference)).shape)


def run_child(task_name: str, method: str, reference: Path, repeat: int) -> dict:
    cmd = [sys.executable, str(Path(__file__)), "--child", task_name, method, str(reference), "--repeat", str(repeat)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,full")
    parser.add_argument("--tasks", default="core_penumbra,ischemic_lesion,clot_region")
    parser.add_argument("--repeat", type=int, default=2, help="inferences per measurement; the fastest is reported")
    parser.add_argument("--studies", default=None, help="folder for the generated studies (default: temporary)")
    parser.add_argument("--child", nargs=3, metavar=("TASK", "METHOD", "REFERENCE"), help=argparse.SUPPRESS)
    parser.add_argument("--brain-extraction-only", action="store_true", help="only the ischemic_lesion table with and without brain extraction")
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(measure_one(*args.child, repeat=args.repeat)))
        return 0

    from harness import load_infer_tasks, methods_of

    if args.brain_extraction_only:
        available = methods_of(load_infer_tasks(models="ischemic_lesion")["ischemic_lesion"])
        print(brain_extraction_table(Path(args.studies or tempfile.mkdtemp(prefix="strokelabel-bench-")), args.repeat, available))
        return 0

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    available = {name: methods_of(task) for name, task in load_infer_tasks(models=",".join(tasks)).items()}
    root = Path(args.studies or tempfile.mkdtemp(prefix="strokelabel-bench-"))
    rows = []
    for size in [s.strip() for s in args.sizes.split(",")]:
        kinds = sorted({k for t in tasks for k in TASK_KINDS[t]})
        studies = {s["reference"].name.split("_")[0][4:7]: s for s in held_out_studies(root / size, 1, 4242, size=size, kinds=kinds)}
        for task_name in tasks:
            for kind in TASK_KINDS[task_name]:
                for reference in benchmark_references(task_name, kind, size, root) or [studies[kind]["reference"]]:
                    rows += measure_study(task_name, kind, size, reference, available[task_name], args.repeat)

    print("# StrokeLabel inference benchmark (one study per task, kind and size; fastest of --repeat runs)")
    print("# seconds: inference incl. study loading; load_s: loading alone; peak_mib: peak RSS of the process while")
    print("# inferring (imports included); work_mib: that peak above the RSS before inferring; x_*: ratios to the")
    print("# references measured in the same run (loading alone, and the baseline method)")
    columns = ["task", "kind", "size", "shape", "method", "seconds", "first_s", "load_s", "x_load", "peak_mib",
               "work_mib", "x_baseline_s", "x_baseline_mib", "error"]
    print(metrics.format_table(rows, [c for c in columns if any(c in r for r in rows)], digits=2))
    if "ischemic_lesion" in tasks:
        print(brain_extraction_table(root, args.repeat, available["ischemic_lesion"]))
        print(ischemic_lesion_parameters())
    return 0


def brain_extraction_table(root: Path, repeat: int, available: list) -> str:
    """ischemic_lesion on MRI with its skull (a skull-on phantom with skull-base EPI artefacts): inference
    with the threshold brain mask (extraction off), with deepbet run in the inference (no cached mask),
    and with deepbet's mask read from the cache (every later inference of the study)."""
    from harness import RAW_SCANNER_SETS

    name = "template-skull-epi"
    (study,) = held_out_studies(root / name, 1, 4242, size="small", kinds=("mri",), **RAW_SCANNER_SETS[name])
    reference = study["reference"]
    rows = []
    for method in [m for m in ("baseline", "model") if m in available]:
        for brain, words in (("off", "threshold mask (off)"), ("fresh", "deepbet, run now"), ("cached", "deepbet, cached mask")):
            m = run_child("ischemic_lesion", f"{method}@{brain}", reference, repeat)
            rows.append({"method": method, "brain_mask": words, "shape": shape_of(reference), "seconds": m.get("seconds"),
                         "first_s": m.get("seconds_first"), "peak_mib": m.get("peak_mib"), "error": m.get("error")})
            print(f"[benchmark] brain extraction {method} {brain}: {m.get('seconds', m.get('error'))}", file=sys.stderr)
    columns = ["method", "brain_mask", "shape", "seconds", "first_s", "peak_mib", "error"]
    return ("\n## ischemic_lesion on MRI with its skull: inference with and without brain extraction (deepbet)\n\n"
            + metrics.format_table(rows, [c for c in columns if any(r.get(c) is not None for r in rows)], digits=2))


def measure_study(task_name: str, kind: str, size: str, reference: Path, methods: list, repeat: int) -> list[dict]:
    """The rows of one study: loading alone, then every method, each in its own process."""
    load = run_child(task_name, "load", reference, repeat)
    measured, rows = {}, []
    for method in methods + extra_methods(task_name, kind, methods):
        m = run_child(task_name, method, reference, repeat)
        measured[method] = m
        row = {"task": task_name, "kind": kind, "size": size, "shape": shape_of(reference), "method": method}
        if "error" in m:
            row["error"] = m["error"]
        else:
            row.update(seconds=m["seconds"], first_s=m["seconds_first"], peak_mib=m["peak_mib"],
                       work_mib=m["peak_mib"] - m["before_mib"], load_s=load.get("seconds"),
                       x_load=m["seconds"] / load["seconds"] if load.get("seconds") else None)
            base = measured.get("baseline")
            if method != "baseline" and base and "seconds" in base:
                row["x_baseline_s"] = m["seconds"] / base["seconds"]
                row["x_baseline_mib"] = m["peak_mib"] / base["peak_mib"]
        rows.append(row)
        print(f"[benchmark] {task_name} {kind} {size} {row['shape']} {method}: {row.get('seconds', row.get('error'))}", file=sys.stderr)
    return rows


# ---- ischemic_lesion: MRI at the ISLES'22 size, the Siamese model, parameter counts ------------
# A clinical stroke MRI protocol's DWI: thick axial slices, fine in-plane (the 256 x 256 x 30 at 0.9 x 0.9 x 5 mm).
CLINICAL_MRI_GRID = ((256, 256, 30), (0.9, 0.9, 5.0))


def benchmark_references(task_name: str, kind: str, size: str, root: Path) -> list:
    """ischemic_lesion MRI at full size is measured at ISLES'22's 112 x 112 x 73 (2 mm) and on a clinical
    256 x 256 x 30 (0.9 x 0.9 x 5 mm) grid, both in the ISLES'22 layout; other tasks use the generated study."""
    if task_name != "ischemic_lesion" or kind != "mri" or size != "full":
        return []
    from strokelabel.phantom.isles_layout import ISLES22_GRID, generate_isles_study

    references = []
    for name, grid in (("isles22", ISLES22_GRID), ("clinical_mri", CLINICAL_MRI_GRID)):
        folder = root / name
        existing = sorted(folder.glob("rawdata/sub-*/ses-*/dwi/*_dwi.nii.gz"))
        references.append(existing[0] if existing else generate_isles_study(folder, 1, seed=4242, size="full", grid=grid)["reference"])
    return references


def extra_methods(task_name: str, kind: str, available: list) -> list:
    return ["siamese"] if task_name == "ischemic_lesion" and kind == "mri" and "model" in available else []


def ischemic_lesion_parameters() -> str:
    """Parameter counts of the shipped ischemic_lesion networks beside the seed's MDANet (25.3 M)."""
    import sys as _sys

    from harness import APP_DIR

    if str(APP_DIR) not in _sys.path:
        _sys.path.insert(0, str(APP_DIR))
    from lib.networks.mdanet import MDANet
    from lib.transforms.ischemic_lesion import build_network

    rows = [{"network": f"ischemic_lesion_{r}", "parameters_M": sum(p.numel() for p in build_network(r).parameters()) / 1e6}
            for r in ("ctp", "mri", "siamese")]
    rows.append({"network": "MDANet.seed_config() (2-D, widths 64..1024, CTP)", "parameters_M": sum(p.numel() for p in MDANet.seed_config().parameters()) / 1e6})
    rows.append({"network": "seed 003 Table 1 (MDANet)", "parameters_M": 25.3})
    return "\n## ischemic_lesion parameter counts\n\n" + metrics.format_table(rows, ["network", "parameters_M"], digits=2)


if __name__ == "__main__":
    sys.exit(main())
