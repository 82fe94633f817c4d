"""The study-loading transform every stroke task starts with."""

from __future__ import annotations

from typing import Sequence

from monai.transforms import Transform

from strokelabel.study import clinical_from_request, load_study


class LoadStudyd(Transform):
    """Load the modalities a task needs from the study of ``data["image"]`` (its reference volume).

    Each modality lands under its own key (``cbf``, ``tmax``, ``dwi``, ``cta1``...) as a float32
    array on the reference grid in RAS voxel order; ``study`` holds the
    :class:`strokelabel.study.Study` (id, kind, affine, spacing, brain mask, clinical sidecar, what
    the loader cleaned; clinical values sent with the request override the sidecar's) and
    ``pred_meta_dict`` the study's stored affine, which the label is
    written with once :meth:`Study.to_native` has put it back in the stored voxel order.
    A missing modality, a grid mismatch or an empty volume raises StrokeLabelError.
    """

    def __init__(self, required: Sequence[str], optional: Sequence[str] = ()):
        self.required = tuple(required)
        self.optional = tuple(optional)

    def __call__(self, data):
        d = dict(data)
        study = load_study(d["image"], self.required, self.optional)
        # NIHSS or onset time sent with the request (OHIF/Slicer options) take precedence over the sidecar.
        study.clinical.update(clinical_from_request(d, study.study_id))
        d.update(study.images)
        d["study"] = study
        d["pred_meta_dict"] = {"affine": study.native_affine}
        return d
