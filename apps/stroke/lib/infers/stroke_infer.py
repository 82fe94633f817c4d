"""What every stroke infer task shares: study loading, the physiology guard, the baseline fallback, the result JSON.

``method`` (request option): ``baseline`` runs the training-free rule; ``model`` the learned model;
``auto`` (default) the model when one is installed *and* the physiology guard
(:mod:`strokelabel.guard`) finds it agrees with the physics of the same study, else the baseline.
Whenever a model runs, the result carries the guard's ``quality`` (what was compared, the figures,
the limits, the verdict) and a plain ``review`` flag with ``review_reason`` when they disagree;
``method`` and ``method_reason`` say what was served and why.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Sequence

import numpy as np
from monai.transforms import Transform
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from lib.checkpoints import UnusableModel
from lib.infers.stored_answers import answer_or_compute
from lib.transforms.study import LoadStudyd
from strokelabel.derived import summary_picture_path
from strokelabel.pacs import store_summary
from strokelabel.errors import StrokeLabelError
from strokelabel.guard import NOT_SERVED_BY_AUTO, Verdict

logger = logging.getLogger(__name__)

METHODS = ["auto", "baseline", "model"]
# Where the server serves a result's summary picture (apps/stroke/main.py registers it).
SUMMARY_ROUTE = "/stroke/summary"


def label_array(pred) -> np.ndarray:
    """A prediction (numpy array or torch tensor) as a numpy array."""
    return np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred)


def first_choice(value):
    """A config value as the client sent it: dropdown defaults arrive as the whole list."""
    return value[0] if isinstance(value, (list, tuple)) else value


def picture_result(result: dict, study) -> dict:
    """The result as the summary picture reads it: AIF/VOF positions (stored voxel order in the JSON,
    as a viewer of the files shows them) on the RAS grid the picture draws."""
    computed = result.get("maps_from_4d")
    if not computed:
        return result
    computed = dict(computed)
    to_ras = np.linalg.inv(study.affine) @ study.native_affine
    for key in ("aif", "vof"):
        entry = computed.get(key)
        # An input not found (compute_maps leaves its lists empty: no VOF on a short or weak series) has no position.
        if isinstance(entry, dict) and entry.get("centroid_ijk"):
            computed[key] = {**entry, "centroid_ijk": (to_ras @ [*map(float, entry["centroid_ijk"]), 1.0])[:3].tolist()}
    return {**result, "maps_from_4d": computed}


def flag_series(result: dict, flags: list) -> None:
    """A 4D series that cannot support a core estimate (strokelabel.ctp4d.series_flags: weak arterial signal,
    truncated bolus, heavy motion, low SNR) puts the answer under review, whichever method served it: the
    flags, each with the figure that decided it, go into ``quality["series_flags"]`` and the reason into ``review_reason``."""
    if not flags:
        return
    quality = dict(result.get("quality") or {})
    quality["series_flags"] = flags
    quality["passed"] = False
    result["quality"] = quality
    result["review"] = True
    words = "; ".join(f["words"] for f in flags)
    reason = f"the 4D series cannot support a core estimate: {words}"
    result["review_reason"] = f"{result['review_reason']}; {reason}" if result.get("review_reason") else reason


class ToStoredVoxelOrderd(Transform):
    """The label (``pred``, RAS order) in the voxel order of the study's stored grid, and what the
    loader assumed or cleaned (``Study.notes``) in the result JSON."""

    def __call__(self, data):
        d = dict(data)
        study = d["study"]
        d["pred"] = study.to_native(label_array(d["pred"]))
        notes = dict(study.notes)
        computed = notes.pop("maps_from_4d", None)
        if computed:  # the maps came from the raw 4D series: what was chosen, and any warning
            d.setdefault("result", {})["maps_from_4d"] = computed
            flag_series(d["result"], computed.get("flags") or [])
        if notes:
            d.setdefault("result", {})["input_notes"] = notes
        if study.clinical:  # what the answer was given (sidecar, PACS header or the request)
            d.setdefault("result", {})["clinical"] = {k: v for k, v in study.clinical.items() if isinstance(v, (int, float, str))}
        return d


class StrokeInferTask(BasicInferTask):
    """A stroke segmentation task over one multimodal study.

    Subclasses declare the modalities they read (``required``/``optional``), the training-free
    baseline (``baseline_transforms``) and the figures of the result (``figure_transforms``).
    ``method`` chooses the learned model or the baseline; ``auto`` uses the model when a trained
    checkpoint exists and otherwise falls back to the baseline, and the result says which ran.
    """

    required: Sequence[str] = ()
    optional: Sequence[str] = ()

    def __init__(self, path, network, labels: Dict[str, int], description: str, config: Dict[str, Any] | None = None, **kwargs):
        super().__init__(
            path=path,
            network=network,
            type=InferType.SEGMENTATION,
            labels=labels,
            dimension=3,
            description=description,
            config={"method": METHODS, **(config or {})},
            **kwargs,
        )

    def __call__(self, request, callbacks=None):
        # The same study, models, options and code asking again is served the answer already computed (stored_answers.py).
        if callbacks:  # a pipeline that consumes the intermediate stages needs them computed
            return super().__call__(request, callbacks)
        return answer_or_compute(self, request, lambda: super(StrokeInferTask, self).__call__(request))

    def model_path_lists(self) -> list:
        """Every model the task may read, each as its ``[shipped, in use]`` paths (lib.checkpoints.model_paths):
        what a stored answer's model version is read from."""
        return [list(self.path)] if isinstance(self.path, (list, tuple)) else [[self.path]] if self.path else []

    # The baseline needs no model, so the task is always usable (MONAI Label hides invalid tasks).
    def is_valid(self) -> bool:
        return True

    def model_available(self) -> bool:
        return self.network is not None and self.get_path() is not None

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        return [LoadStudyd(self.required, self.optional)]

    def baseline_transforms(self, data) -> Sequence[Callable]:
        raise NotImplementedError

    def figure_transforms(self, data) -> Sequence[Callable]:
        return []

    def inverse_transforms(self, data=None):
        return None

    def post_transforms(self, data=None) -> Sequence[Callable]:
        # Figures are computed in RAS order (atlas, mirror); the label then goes back to the
        # voxel order the study is stored in, so it lies on the study's own grid for every caller.
        return [*self.figure_transforms(data), ToStoredVoxelOrderd()]

    def chosen_method(self, data) -> str:
        method = first_choice(data.get("method", "auto"))
        if method not in METHODS:
            raise StrokeLabelError(f"unknown method {method!r}; use one of {METHODS}")
        if method == "model" and not self.model_available():
            raise StrokeLabelError(f"no trained {self.description} model is installed yet; train one or use method=baseline")
        if method == "auto":
            method = "model" if self.model_available() else "baseline"
        return method

    def run_baseline(self, data: Dict[str, Any]) -> Dict[str, Any]:
        """The baseline's answer for a loaded study (``pred`` and its own ``result`` entries)."""
        for transform in self.baseline_transforms(data):
            data = transform(data)
        return data

    def baseline_possible(self, data: Dict[str, Any]) -> bool:
        """Whether the baseline can run on this study (clot_region's needs a SPIRAL map)."""
        return True

    def guard(self, data: Dict[str, Any], physics: Dict[str, Any] | None) -> Verdict:
        """The physiology guard's verdict on the model's ``pred`` (``physics``: the baseline's answer, if it can run)."""
        raise NotImplementedError

    def run_inferer(self, data: Dict[str, Any], convert_to_batch=True, device="cuda"):
        requested = first_choice(data.get("method", "auto"))
        method = self.chosen_method(data)
        result = data.setdefault("result", {})
        if method == "baseline":
            data = self.run_baseline(data)
            result["method"] = "baseline"
            if requested == "auto":
                result["method_reason"] = "no trained model installed: training-free baseline used"
            else:
                result["method_reason"] = "requested"
            result["quality"] = {"check": "none needed: the baseline is the physiological rule itself", "passed": True}
            result["review"] = False
            return data
        result["method"] = "model"
        try:
            data = self.run_model(data, device)
        except UnusableModel as e:
            if requested != "auto":
                raise
            logger.warning("%s: %s; serving the baseline", self.description, e)
            data = self.run_baseline(data)
            result["method"] = "baseline"
            result["method_reason"] = f"{e.problem}: training-free baseline used"
            result["quality"] = {"check": "none needed: the baseline is the physiological rule itself", "passed": True}
            result["review"] = False
            return data
        physics = self.run_baseline({**data, "result": {}}) if self.baseline_possible(data) else None
        verdict = self.guard(data, physics)
        result["quality"] = verdict.as_json()
        result["review"] = not verdict.passed
        if not verdict.passed:
            result["review_reason"] = f"the model disagrees with the physiology of this study: {verdict.reason}"
        if requested != "auto":
            result["method_reason"] = "requested"
        elif verdict.passed and verdict.kind not in NOT_SERVED_BY_AUTO:
            result["method_reason"] = "the model agrees with the physiology of this study"
        elif physics is None:
            result["method_reason"] = "the model disagrees with the physiology, but no baseline can run on this study: model served, review it"
        else:
            data["pred"] = physics["pred"]
            for key, value in physics["result"].items():
                result.setdefault(key, value)
            for key in ("region_flags", "region_probabilities", "region_base", "brain_mask"):
                if key in physics:
                    data[key] = physics[key]
            result["method"] = "baseline"
            if verdict.passed:
                result["method_reason"] = f"{NOT_SERVED_BY_AUTO[verdict.kind]}: the physiological rule was served (method=model runs the model)"
            else:
                result["method_reason"] = "the model disagrees with the physiology of this study (see quality): the physiological rule was served"
        return data

    def run_model(self, data: Dict[str, Any], device: str):
        """The learned model's inference; tasks with a trained network override this."""
        return super().run_inferer(data, device=device)

    def _get_network(self, device, data):
        # MONAI Label loads the checkpoint here; a file that does not fit the network becomes an
        # UnusableModel (a 422 for method=model, the baseline for auto) instead of a bare 500.
        try:
            return super()._get_network(device, data)
        except RuntimeError as e:
            raise UnusableModel.of(self.get_path(), e) from e

    def writer(self, data: Dict[str, Any], extension=None, dtype=None):
        study = data["study"]
        data["result"]["study_id"] = study.study_id
        data["result"]["study_kind"] = study.kind
        self.write_summary(data)
        # The format the client asks for (OHIF: NRRD), else NIfTI; always the study's stored grid and voxel order.
        return super().writer(data, extension=extension or data.get("result_extension") or ".nii.gz", dtype=dtype or data.get("result_dtype") or "uint8")

    def write_summary(self, data: Dict[str, Any]) -> None:
        """The one-page summary picture of this answer, beside the study; its URL in the result."""
        from strokelabel.summary import render_summary

        study, result, task = data["study"], data["result"], data.get("model")
        if not task:  # called outside the server (scripts): no URL to give
            return
        started = time.perf_counter()
        path = summary_picture_path(study.reference, study.study_id, task)
        try:
            render_summary(study, study.to_canonical(label_array(data["pred"])), picture_result(result, study), path, task=task)
        except Exception as e:  # a picture that cannot be drawn must never cost the clinician the label
            logger.exception("%s: the summary picture of %s could not be drawn", study.study_id, task)
            result["summary_error"] = f"the summary picture could not be drawn: {e}"
            return
        image_id = data.get("image_id") or study.study_id
        result["summary_url"] = f"{SUMMARY_ROUTE}?image={image_id}&task={task}"
        try:  # a PACS study: the picture is also filed in the study, where OHIF and the PACS show it
            stored = store_summary(study.reference, path, task)
            if stored:
                result["summary_dicom_sop_instance_uid"] = stored
        except Exception as e:  # the PACS refusing the picture must not cost the label either
            logger.warning("%s: the summary picture was not stored in the PACS: %s", study.study_id, e)
            result["summary_pacs_error"] = f"the summary picture was not stored in the PACS: {e}"
        logger.info("%s: summary picture %s in %.2f s", study.study_id, path.name, time.perf_counter() - started)
