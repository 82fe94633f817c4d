"""What every stroke infer task shares: study loading, the baseline fallback, the result JSON."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Sequence

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from lib.transforms.study import LoadStudyd
from strokelabel.errors import StrokeLabelError

logger = logging.getLogger(__name__)

METHODS = ["auto", "baseline", "model"]


def first_choice(value):
    """A config value as the client sent it: dropdown defaults arrive as the whole list."""
    return value[0] if isinstance(value, (list, tuple)) else value


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
        return list(self.figure_transforms(data))

    def chosen_method(self, data) -> str:
        method = first_choice(data.get("method", "auto"))
        if method not in METHODS:
            raise StrokeLabelError(f"unknown method {method!r}; use one of {METHODS}")
        if method == "model" and not self.model_available():
            raise StrokeLabelError(f"no trained {self.description} model is installed yet; train one or use method=baseline")
        if method == "auto":
            method = "model" if self.model_available() else "baseline"
        return method

    def run_inferer(self, data: Dict[str, Any], convert_to_batch=True, device="cuda"):
        method = self.chosen_method(data)
        data.setdefault("result", {})
        if method == "baseline":
            for transform in self.baseline_transforms(data):
                data = transform(data)
            data["result"]["method"] = "baseline"
            if not self.model_available():
                data["result"]["method_note"] = "no trained model installed: training-free baseline used"
            return data
        data["result"]["method"] = "model"
        return self.run_model(data, device)

    def run_model(self, data: Dict[str, Any], device: str):
        """The learned model's inference; tasks with a trained network override this."""
        return super().run_inferer(data, device=device)

    def writer(self, data: Dict[str, Any], extension=None, dtype=None):
        data["result"]["study_id"] = data["study"].study_id
        data["result"]["study_kind"] = data["study"].kind
        return super().writer(data, extension=extension or ".nii.gz", dtype=dtype or "uint8")
