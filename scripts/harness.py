"""What the evaluation and benchmark scripts share: the app's own infer tasks, run in-process
on generated phantom studies or on real data trees, so the figures measure the code the server runs."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "apps" / "stroke"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

from strokelabel.naming import find_derivative_mask, parse_filename, study_kind, truth_path  # noqa: E402
from strokelabel.phantom import generate_dataset  # noqa: E402

# Task -> study kinds it reads, and the ground-truth target it is scored against.
TASK_KINDS = {"core_penumbra": ("ctp",), "ischemic_lesion": ("mri", "ctp"), "clot_region": ("cta",)}
TASK_TARGET = {"core_penumbra": "corepenumbra", "ischemic_lesion": "lesion", "clot_region": "clot"}


def load_infer_tasks(model_dir: str | Path | None = None, models: str = "all", conf: dict | None = None) -> dict:
    """The app's infer tasks by name, with the models in ``model_dir`` (default: the app's own) and the
    app's ``--conf`` values ``conf`` (e.g. ``{"ischemic_lesion_components": "strict"}``)."""
    from main import build_task_configs

    configs = build_task_configs(str(model_dir or APP_DIR / "model"), dict(conf or {}), models)
    tasks = {}
    for name, config in configs.items():
        infer = config.infer()
        tasks.update(infer if isinstance(infer, dict) else {name: infer})
    return tasks


def methods_of(task) -> list[str]:
    """The methods a task can run now: the baseline always; the model and ``auto`` (the model when the
    physiology guard passes it, else the baseline) when one is installed."""
    return ["baseline", "model", "auto"] if task.model_available() else ["baseline"]


def extra_methods(name: str, task, kind: str) -> list[str]:
    """Methods beyond baseline/model: ischemic_lesion also runs its DWI-only Siamese model on MRI."""
    if name == "ischemic_lesion" and kind == "mri" and task.model_available("siamese"):
        return ["siamese"]
    return []


def checkpoint_for(task, method: str, reference: str | Path) -> str | None:
    """The checkpoint ``method`` would read on the study at ``reference`` (None for the baseline, or when no
    model is installed): per route for ischemic_lesion (``siamese`` is its DWI-only route), else the task's
    model in use. ``auto`` may serve the model, so it reads the model's checkpoint."""
    from lib.checkpoints import checkpoint_in_use

    if method == "baseline":
        return None
    route_paths = getattr(task, "route_paths", None)
    if route_paths is not None:
        from lib.transforms.ischemic_lesion import route_for

        from strokelabel.study import available_modalities

        route = "siamese" if method == "siamese" else route_for(study_kind(reference), available_modalities(reference))
        return checkpoint_in_use(route_paths[route])
    paths = task.path if isinstance(task.path, (list, tuple)) else [task.path]
    return checkpoint_in_use(paths)


def run_infer(task, reference: str | Path, method: str, **options) -> tuple[np.ndarray, dict]:
    """Infer one study in-process, as the server does (``options``: more request keys); returns (label array, result JSON)."""
    _, data = task({"image": str(reference), "method": method, "skip_writer": True, "device": "cpu" if not _cuda() else "cuda", **options})
    pred = data["pred"]
    pred = pred.detach().cpu().numpy() if hasattr(pred, "detach") else np.asarray(pred)
    return pred, data["result"]


def truth_verdict(task, reference: str | Path, truth: np.ndarray) -> dict:
    """The physiology guard's verdict (``quality`` JSON) on the ground truth itself, as if a model had
    answered it: a guard that fails the truth would reject a perfect model."""
    data = {"image": str(reference), "result": {}}
    for transform in task.pre_transforms(data):
        data = transform(data)
    data["pred"] = data["study"].to_canonical(np.asarray(truth))
    physics = task.run_baseline({**data, "result": {}}) if task.baseline_possible(data) else None
    return task.guard(data, physics).as_json()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# Phantom sets the models are measured on (generator options). The shipped models learn from the
# template family with random appearance and conventions (held-out seeds of it are the in-family
# reference); the ellipsoid family is never trained on: it is the held-out family, as it was (its
# fixed look) and with the random look and real-world conventions.
PHANTOM_SETS = {
    "ellipsoid-fixed": {"family": "ellipsoid", "appearance": "fixed", "conventions": None},
    "ellipsoid-random": {"family": "ellipsoid", "appearance": "random", "conventions": "random"},
    "template-random": {"family": "template", "appearance": "random", "conventions": "random"},
}


# Raw scanner MRI (issue 21): skull, scalp and neck on, skull-base EPI susceptibility artefacts always
# on, the rest of the look random; stored on the simulation grid (conventions None), so the in-memory
# truth (the intracranial brain) lies on the files' grid. Used by the guard's calibration and by
# scripts/brain_extraction_table.py; not an evaluation set of its own.
RAW_SCANNER_SETS = {
    f"{family}-skull-epi": {"family": family, "appearance": {"setting": "random", "off": ["skull"], "on": ["susceptibility"]},
                            "conventions": None}
    for family in ("template", "ellipsoid")
}


def held_out_studies(root: str | Path, per_kind: int, seed: int, size: str = "small", kinds=("ctp", "mri", "cta"), **generator) -> list[dict]:
    """Generate (or reuse) held-out phantoms; their seed differs from the sample data's and the training
    data's. ``generator``: a ``PHANTOM_SETS`` entry (family, appearance, conventions)."""
    return generate_dataset(Path(root), per_kind=per_kind, labelled_per_kind=0, size=size, seed=seed, kinds=kinds,
                            progress=lambda *a, **k: print(*a, file=sys.stderr, **k), **generator)


def truth_of(reference: str | Path, root: str | Path, target: str) -> tuple[np.ndarray, dict]:
    """Ground-truth label array of a study and its truth JSON (generating parameters, flags)."""
    parsed = parse_filename(os.path.basename(str(reference)))
    label = np.asarray(nib.load(str(truth_path(root, parsed.subject, parsed.session, target))).dataobj)
    info = json.loads(truth_path(root, parsed.subject, parsed.session, "truth").read_text())
    return label, info


# ---- real data trees ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RealStudy:
    """A study found in a data tree as a site has it: its reference volume, kind, and the
    expert mask the data set ships beside it (ISLES'22 ``derivatives/…_msk``), if any."""

    reference: Path
    kind: str
    expert_mask: Path | None

    @property
    def study_id(self) -> str:
        return parse_filename(self.reference.name).study_id


def real_studies(top: str | Path) -> list[RealStudy]:
    """Every study under ``top``, found as the server's datastore finds them (one or several
    ISLES'22/'24 trees, flat folders or AMI folders; derivative and label folders skipped)."""
    from strokelabel.naming import find_reference_volumes

    top = Path(top)
    studies = []
    for _, relpath in sorted(find_reference_volumes(str(top)).items(), key=lambda item: item[1]):
        reference = top / relpath
        studies.append(RealStudy(reference, study_kind(reference), expert_mask_of(reference, top)))
    return studies


def expert_mask_of(reference: str | Path, top: str | Path) -> Path | None:
    """The mask the data set ships for ``reference``: ``derivatives/`` beside ``rawdata`` in the
    nearest enclosing folder, searched from the study's folder up to ``top``."""
    top = Path(top).resolve()
    for folder in Path(reference).resolve().parents:
        mask = find_derivative_mask(folder, reference)
        if mask is not None:
            return mask
        if folder == top:
            break
    return None


def label_array(pred) -> np.ndarray:
    """A task's label as a 3D array (a leading channel of 1 dropped)."""
    pred = np.asarray(pred)
    return pred[0] if pred.ndim == 4 and pred.shape[0] == 1 else pred
