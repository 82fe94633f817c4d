"""What the evaluation and benchmark scripts share: the app's own infer tasks, run in-process
on generated phantom studies, so the figures measure the code the server runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "apps" / "stroke"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

from strokelabel.naming import parse_filename, truth_path  # noqa: E402
from strokelabel.phantom import generate_dataset  # noqa: E402

# Task -> study kinds it reads, and the ground-truth target it is scored against.
TASK_KINDS = {"core_penumbra": ("ctp",), "ischemic_lesion": ("mri", "ctp"), "clot_region": ("cta",)}
TASK_TARGET = {"core_penumbra": "corepenumbra", "ischemic_lesion": "lesion", "clot_region": "clot"}


def load_infer_tasks(model_dir: str | Path | None = None, models: str = "all") -> dict:
    """The app's infer tasks by name, with the models in ``model_dir`` (default: the app's own)."""
    from main import build_task_configs

    configs = build_task_configs(str(model_dir or APP_DIR / "model"), {}, models)
    tasks = {}
    for name, config in configs.items():
        infer = config.infer()
        tasks.update(infer if isinstance(infer, dict) else {name: infer})
    return tasks


def methods_of(task) -> list[str]:
    """The methods a task can run now: the baseline always, the model when one is installed."""
    return ["baseline", "model"] if task.model_available() else ["baseline"]


def run_infer(task, reference: str | Path, method: str) -> tuple[np.ndarray, dict]:
    """Infer one study in-process, as the server does; returns (label array, result JSON)."""
    _, data = task({"image": str(reference), "method": method, "skip_writer": True, "device": "cpu" if not _cuda() else "cuda"})
    pred = data["pred"]
    pred = pred.detach().cpu().numpy() if hasattr(pred, "detach") else np.asarray(pred)
    return pred, data["result"]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def held_out_studies(root: str | Path, per_kind: int, seed: int, size: str = "small", kinds=("ctp", "mri", "cta")) -> list[dict]:
    """Generate (or reuse) held-out phantoms; their seed differs from the sample data's."""
    return generate_dataset(Path(root), per_kind=per_kind, labelled_per_kind=0, size=size, seed=seed, kinds=kinds,
                            progress=lambda *a, **k: print(*a, file=sys.stderr, **k))


def truth_of(reference: str | Path, root: str | Path, target: str) -> tuple[np.ndarray, dict]:
    """Ground-truth label array of a study and its truth JSON (generating parameters, flags)."""
    parsed = parse_filename(os.path.basename(str(reference)))
    label = np.asarray(nib.load(str(truth_path(root, parsed.subject, parsed.session, target))).dataobj)
    info = json.loads(truth_path(root, parsed.subject, parsed.session, "truth").read_text())
    return label, info
