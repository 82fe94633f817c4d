"""The figures of a result (volumes in mL, mismatch, region flags), computed from the final label.

They run after the baseline or the model, on ``pred``, so both methods report the same figures.
Units are in the key names (DESIGN.md).
"""

from __future__ import annotations

import numpy as np
from monai.transforms import Transform

from strokelabel import baselines
from strokelabel.baselines.figures import cow_segments_near_clot

N_REGIONS = baselines.N_REGIONS


def _label(d) -> np.ndarray:
    pred = d["pred"]
    return np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred)


class CorePenumbraFiguresd(Transform):
    """Core, penumbra and hypoperfusion volumes, mismatch volume and ratio, DEFUSE 3 imaging criteria."""

    def __call__(self, data):
        d = dict(data)
        d.setdefault("result", {}).update(baselines.core_penumbra_figures(_label(d), d["study"].spacing_mm))
        return d


class LesionFiguresd(Transform):
    """Lesion volume (mL) and lesion count (connected components)."""

    def __call__(self, data):
        d = dict(data)
        d.setdefault("result", {}).update(baselines.lesion_figures(_label(d), d["study"].spacing_mm))
        return d


class ClotFiguresd(Transform):
    """Clot volume and location, and the 15 atlas-region flags with a probability each."""

    def __call__(self, data):
        d = dict(data)
        study = d["study"]
        result = d.setdefault("result", {})
        region_base = d.get("region_base", 1)
        result.update(baselines.clot_figures(_label(d), study.affine, d.get("atlas"), region_base=region_base))
        if d.get("cow-msk") is not None:  # ISLES'24: the artery the clot sits in, from the patient's own Circle-of-Willis map
            result["cow_segments"] = cow_segments_near_clot(_label(d), d["cow-msk"], study.spacing_mm)
        flags, probabilities = d.get("region_flags"), d.get("region_probabilities")
        if flags is None:
            result["regions"] = None
            result["regions_note"] = "no vascular atlas (…_atlas.nii.gz) beside the study: region flags need it"
        else:
            result["regions"] = [
                {"region": i + region_base, "clot": bool(flags[i]), "probability": round(float(probabilities[i]), 4)}
                for i in range(N_REGIONS)
            ]
        return d
