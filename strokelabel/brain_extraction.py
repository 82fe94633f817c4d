"""The brain of an MRI study that still has its skull: deepbet, once per study, cached as a derived file.

A DWI as it leaves the scanner holds scalp, orbits, sinuses and neck; at the skull base, EPI
susceptibility artefacts are as bright as an acute lesion and no lesion. The threshold brain mask
(:func:`strokelabel.baselines.masks.brain_mask_from_mri`) cuts scalp from brain with an opening,
which a bright artefact bridging the two survives. A brain-extraction model is used instead:

- **deepbet** (Fisch et al., Comput. Biol. Med. 2024; PyPI ``deepbet``, MIT): a TorchScript UNet
  with a bounding-box model in front, weights inside its wheel (``site-packages/data/models/``),
  nothing downloaded. Trained on T1w; measured by the issue's author at Dice 0.93-0.95 against
  reference masks on two raw clinical DWI. Measured here (``scripts/brain_extraction_table.py``, mask
  dilated by one voxel): on six skull-on phantoms with skull-base EPI artefacts, Dice 0.94-0.97 against
  the intracranial space (the threshold mask 0.88-0.91) and 99.7-100 % of the visible lesion kept; on
  the four real ISLES'22 cases with a synthetic skull, 100 % of the expert lesion kept, Dice 0.93-0.94
  against the distributed stripped brain; 30-70 s per study on the shared, loaded 2-core machine.
  Only its prediction is used (:func:`deepbet_mask`): its file-based runner and GUI are not.
- **Only when the study is not skull-stripped** (:func:`skull_stripped`, decided from the data):
  a stripped study keeps the mask it has always had, so its answers do not change.
- **Once per study**: the mask is a derived file (:mod:`strokelabel.derived`, beside the study in
  ``derivatives/strokelabel/<id>/<id>_desc-brain_mask.nii.gz``, in the study's own voxel order, so
  a viewer overlays it), valid while the DWI file is unchanged. Every MRI route reads it through
  ``Study.brain_mask``: the model routes' inputs, the baselines and the guard.
"""

from __future__ import annotations

import os
import threading
import time

import nibabel as nib
import numpy as np

from strokelabel.errors import StrokeLabelError

# What makes the cached mask: a different value makes it again.
STEP_VERSION = "deepbet 1.0.2, threshold 0.5, largest component, voids filled, dilated 1 voxel; stripped test v1"
# deepbet's mask grown by this many voxels (6-connected; deepbet's own n_dilate): it was trained on T1w
# and cuts DWI's cortical rim tightly. Measured on skull-on phantoms (scripts/brain_extraction_table.py,
# seed 9600): the visible lesion kept was 0.874-1.0 undilated, 0.997-1.0 dilated by 1 voxel (mask +11-16 %).
DILATE_VOXELS = 1

# Skull-stripped when the DWI's zero (or filled) background covers at least this share of the grid
# *and* what is not background is the brain: at most this many times the threshold brain mask's
# volume. Measured: the four real ISLES'22 cases 1.03-1.06; stripped phantoms, whose stripping is
# loose by up to 2.5 mm, 1.17-1.41 (the threshold mask leaves the outer CSF out); a head with scalp
# and skull on a zeroed background is about 2 x (its radius ~1.2 x the brain's, the mask ~0.75 x the
# intracranial volume); with noise in the air (most raw DWI) the zero share alone tells.
STRIPPED_ZERO_SHARE_MIN = 0.10
STRIPPED_SUPPORT_RATIO_MAX = 1.6

# "auto" (default): deepbet on a study that is not skull-stripped; "off": the threshold mask always
# (a site without the model, or a measurement of what brain extraction changes: scripts/benchmark.py).
MODE_ENV = "STROKELABEL_BRAIN_EXTRACTION"

_model_lock = threading.Lock()
_model = None


def _deepbet():
    """deepbet's two TorchScript models, loaded once per process (its import needs pandas, fill_voids, cc3d)."""
    global _model
    with _model_lock:
        if _model is None:
            try:
                from deepbet import BrainExtraction
            except ImportError as e:  # an installation problem, not the user's: say what is missing
                raise RuntimeError(f"brain extraction needs deepbet (requirements-nodeps.txt) and its imports: {e}") from e
            _model = BrainExtraction(no_gpu=True)
        return _model


def deepbet_mask(volume: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """deepbet's brain mask (bool) of a head volume in RAS voxel order (what deepbet's own runner
    feeds it after ``nib.as_closest_canonical``): bounding-box model, brain model, largest
    component, voids filled, grown by :data:`DILATE_VOXELS`."""
    bet = _deepbet()
    values = np.nan_to_num(np.asarray(volume, dtype=np.float32), copy=True)
    with _model_lock:  # BrainExtraction keeps the box of the last run on itself
        probability = bet.run_model(values)
        mask = bet.postprocess(probability > threshold, n_dilate=DILATE_VOXELS)
    return np.asarray(mask, dtype=bool)


def skull_stripped(dwi: np.ndarray, threshold_brain: np.ndarray) -> tuple[bool, dict]:
    """Is this DWI already skull-stripped? Decided from the data, with the figures that decided it.

    Stripped: a zero background (the loader turns fills and NaN into 0) around a foreground that is
    the brain itself. A raw DWI has noise in its air (no zeros), or, zeroed by the scanner, a
    foreground with scalp and neck well beyond the threshold brain mask."""
    dwi = np.asarray(dwi)
    zero_share = float(np.count_nonzero(dwi == 0) / dwi.size)
    foreground = np.count_nonzero(dwi > 0)
    brain = max(int(np.count_nonzero(threshold_brain)), 1)
    ratio = float(foreground / brain)
    stripped = zero_share >= STRIPPED_ZERO_SHARE_MIN and ratio <= STRIPPED_SUPPORT_RATIO_MAX
    return stripped, {"zero_share": round(zero_share, 3), "foreground_to_brain_ratio": round(ratio, 3)}


def extracted_brain_mask(study) -> tuple[np.ndarray, dict]:
    """deepbet's mask of ``study`` (a loaded MRI :class:`strokelabel.study.Study`), from the cache when
    current; returns (bool mask on the study's RAS grid, info for the result JSON)."""
    from strokelabel.derived import DerivedSet, atomic_save_nifti, derived_folder
    from strokelabel.diffusion import bval_path

    source = study.paths["dwi"]
    sources = [source] + ([bval_path(source)] if bval_path(source).exists() else [])
    derived = DerivedSet(derived_folder(study.reference, study.study_id), study.study_id, "brain", STEP_VERSION, sources)

    def make(s: DerivedSet):
        started = time.perf_counter()
        mask = deepbet_mask(study.images["dwi"])
        if not mask.any():
            raise StrokeLabelError("brain extraction (deepbet) found no brain in the DWI", study=study.study_id)
        path = atomic_save_nifti(study.to_native(mask.astype(np.uint8)), study.native_affine, s.path("mask"))
        return {"mask": path}, {"seconds": round(time.perf_counter() - started, 2), "brain_ml": round(float(mask.sum()) * study.voxel_volume_ml, 1)}

    made = derived.get_or_make(make)
    stored = np.asarray(nib.load(str(made["files"]["mask"])).dataobj) > 0
    mask = study.to_canonical(stored)
    if mask.shape != study.shape:  # a cached file from another grid: never trusted
        raise StrokeLabelError(f"the cached brain mask has shape {mask.shape}, the study {study.shape}", study=study.study_id)
    info = {"method": "deepbet 1.0.2 (brain extraction model)", "reused": made["reused"], "file": made["files"]["mask"].name, **made["info"]}
    return mask, info


def extraction_mode() -> str:
    """The site's brain-extraction mode (``MODE_ENV``): ``auto`` (deepbet where the study is not skull-stripped) or ``off``."""
    mode = os.environ.get(MODE_ENV, "auto").strip().lower()
    if mode not in ("auto", "off"):
        raise RuntimeError(f"{MODE_ENV}={mode!r}: expected auto or off")
    return mode


def mri_brain_mask(study) -> np.ndarray:
    """The brain of an MRI study: the threshold mask on a skull-stripped study, deepbet's otherwise.
    What was decided and why goes to ``study.notes["brain_extraction"]``."""
    from strokelabel.baselines.masks import brain_mask_from_mri

    images = study.images
    threshold_mask = brain_mask_from_mri(images["dwi"], images.get("adc"), spacing_mm=study.spacing_mm)
    stripped, figures = skull_stripped(images["dwi"], threshold_mask)
    mode = extraction_mode()
    if stripped or mode == "off":
        method = "threshold mask of the stripped DWI" if stripped else f"threshold mask ({MODE_ENV}=off)"
        study.notes["brain_extraction"] = {"skull_stripped": stripped, **figures, "method": method}
        return threshold_mask
    mask, info = extracted_brain_mask(study)
    study.notes["brain_extraction"] = {"skull_stripped": False, **figures, **info}
    return mask
