"""The training-free baselines as dictionary transforms over a loaded study (see LoadStudyd).

The maths lives in :mod:`strokelabel.baselines`; these transforms only pick the study's
arrays, pass its voxel spacing, and put the label under ``pred`` and the figures under ``result``.
"""

from __future__ import annotations

from monai.transforms import Transform

from strokelabel import baselines
from strokelabel.errors import StrokeLabelError


def perfusion_brain_mask(d):
    """The loaded study's brain mask (one per study: see ``Study.brain_mask``)."""
    return d["study"].brain_mask


class CorePenumbraBaselined(Transform):
    """Core = rCBF < 30 % of the healthy side, penumbra = Tmax > 6 s and not core (labels 1, 2)."""

    def __init__(
        self,
        rcbf_threshold: float = baselines.RCBF_CORE_THRESHOLD,
        tmax_threshold_s: float = baselines.TMAX_HYPOPERFUSION_THRESHOLD_S,
        min_cluster_ml: float = 0.1,
    ):
        self.rcbf_threshold = rcbf_threshold
        self.tmax_threshold_s = tmax_threshold_s
        self.min_cluster_ml = min_cluster_ml

    def __call__(self, data):
        d = dict(data)
        study = d["study"]
        brain = perfusion_brain_mask(d)
        d["brain_mask"] = brain
        d["pred"] = baselines.core_penumbra_baseline(
            d["cbf"],
            d["tmax"],
            study.spacing_mm,
            brain_mask=brain,
            rcbf_threshold=self.rcbf_threshold,
            tmax_threshold_s=self.tmax_threshold_s,
            min_cluster_ml=self.min_cluster_ml,
            check_units=False,  # checked once by the study loader
            study=study.study_id,
        )
        d.setdefault("result", {})["thresholds"] = {
            "rcbf_core": self.rcbf_threshold,
            "tmax_penumbra_s": self.tmax_threshold_s,
            "min_cluster_ml": self.min_cluster_ml,
        }
        return d


class LesionBaselined(Transform):
    """MRI: ADC < 620e-6 mm²/s confirmed by DWI hyperintensity. CTP: the ischemic core rule."""

    def __init__(self, min_cluster_ml: float = 0.1):
        self.min_cluster_ml = min_cluster_ml

    def __call__(self, data):
        d = dict(data)
        study = d["study"]
        result = d.setdefault("result", {})
        if study.kind == "mri":
            label, assumption = baselines.adc_lesion_baseline(
                d["adc"], d["dwi"], study.spacing_mm, brain_mask=study.brain_mask, min_cluster_ml=self.min_cluster_ml, study=study.study_id
            )
            result["adc_unit_assumption"] = study.notes.get("adc_unit_assumption", assumption)
            result["rule"] = "ADC < 620e-6 mm2/s and DWI hyperintense"
        else:
            label = baselines.ctp_lesion_baseline(
                d["cbf"], study.spacing_mm, tmax=d["tmax"], brain_mask=study.brain_mask, min_cluster_ml=self.min_cluster_ml,
                check_units=False,
            )
            result["rule"] = "rCBF < 30 % of the healthy side"
        d["pred"] = label
        return d


class ClotRegionBaselined(Transform):
    """Seed 002's SPIRAL baseline: clot = SPIRAL map >= 0.9, regions = the atlas regions it falls in."""

    def __init__(self, threshold: float = baselines.SPIRAL_THRESHOLD, region_base: int = 1):
        self.threshold = threshold
        self.region_base = region_base

    def __call__(self, data):
        d = dict(data)
        if "spiral" not in d:
            raise StrokeLabelError("the SPIRAL baseline needs the spiral map (…_spiral.nii.gz)", study=d["study"].study_id)
        clot, flags, probabilities = baselines.clot_region_baseline(
            d["spiral"], d.get("atlas"), threshold=self.threshold, region_base=self.region_base
        )
        d["pred"] = clot
        d["region_flags"] = flags
        d["region_probabilities"] = probabilities
        d["region_base"] = self.region_base
        d.setdefault("result", {})["spiral_threshold"] = self.threshold
        return d
