"""Chronic findings that are not the acute lesion (truth label 0): old infarcts and
leukoaraiosis, both more frequent with age. They are mimics: a model that calls them acute is wrong.

- Old infarct: a cavity where the tissue is gone and CSF fills it (encephalomalacia), inside
  a gliotic rim of 1.5-3 mm (parenchyma that stays: bright on FLAIR and T2, a little hypodense
  on CT, normal diffusion). Cortical (a cavity of 6-18 mm radius centred on the cortex, so it
  opens onto the surface) or lacunar (2-7 mm radius in the basal ganglia, internal capsule,
  thalamus, pons or centrum semiovale).
- Leukoaraiosis (white-matter hyperintensities, graded 0-3 like Fazekas): periventricular caps
  and bands (white matter within 2-10 mm of the ventricles, thicker at the horns) and deep foci
  (spheres of 1.5-5 mm in deep white matter).

The acute lesion's truth does not see them: a cavity has no parenchyma (never core or
penumbra), and a gliotic rim or a hyperintensity keeps its normal perfusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from strokelabel.phantom.geometry import soft_inside
from strokelabel.phantom.sites import Sites, cortex, deep_perforator, deep_white_matter

# Periventricular cap thickness (mm) and deep focus count per grade.
WMH_PERIVENTRICULAR_MM = (0.0, 2.5, 5.0, 9.0)
WMH_FOCI = ((0, 0), (1, 6), (5, 16), (14, 32))


@dataclass(frozen=True)
class OldInfarct:
    kind: str  # cortical | lacunar
    centre_mm: tuple[float, float, float]  # head frame
    radius_mm: float  # cavity
    rim_mm: float  # gliosis around it

    def describe(self) -> dict:
        return {"kind": self.kind, "centre_head_mm": [round(v, 2) for v in self.centre_mm], "radius_mm": round(self.radius_mm, 2), "rim_mm": round(self.rim_mm, 2)}


@dataclass(frozen=True, eq=False)
class ChronicFindings:
    old_infarcts: tuple[OldInfarct, ...] = ()
    wmh_grade: int = 0
    periventricular_mm: float = 0.0
    wmh_foci_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # (n, 4): centre, radius

    def describe(self) -> dict:
        return {
            "old_infarcts": [o.describe() for o in self.old_infarcts],
            "wmh_grade": self.wmh_grade,
            "wmh_periventricular_mm": round(self.periventricular_mm, 2),
            "wmh_deep_foci": int(len(self.wmh_foci_mm)),
        }


def draw_chronic(rng: np.random.Generator, age_years: float, sites: Sites) -> ChronicFindings:
    """Old infarcts (0-3, more with age) and leukoaraiosis of a patient of ``age_years``."""
    ageing = float(np.clip((age_years - 45.0) / 40.0, 0.0, 1.0))
    grade_p = np.array([1.0 - ageing, 1.2 * ageing, 0.8 * ageing**1.5, 0.5 * ageing**2]) + [0.15, 0.1, 0.0, 0.0]
    grade = int(rng.choice(4, p=grade_p / grade_p.sum()))
    periventricular = WMH_PERIVENTRICULAR_MM[grade] * rng.uniform(0.75, 1.25)
    lo, hi = WMH_FOCI[grade]
    n_foci = int(rng.integers(lo, hi + 1))
    deep = np.flatnonzero(deep_white_matter(sites))
    foci = np.zeros((0, 4))
    if n_foci and deep.size:
        chosen = sites.points_mm[rng.choice(deep, size=n_foci)]
        foci = np.column_stack([chosen, rng.uniform(1.5, 5.0, n_foci)])
    infarcts = []
    n_old = int(min(rng.poisson(0.15 + 0.6 * ageing), 3))
    for _ in range(n_old):
        if rng.random() < 0.6:
            candidates = np.flatnonzero(deep_perforator(sites) | deep_white_matter(sites))
            kind, radius = "lacunar", rng.uniform(2.0, 7.0)
        else:
            candidates = np.flatnonzero(cortex(sites))
            kind, radius = "cortical", rng.uniform(6.0, 18.0)
        if candidates.size:
            centre = sites.points_mm[rng.choice(candidates)]
            infarcts.append(OldInfarct(kind, tuple(float(v) for v in centre), float(radius), float(rng.uniform(1.5, 3.0))))
    return ChronicFindings(tuple(infarcts), grade, float(periventricular), foci)


def old_infarct_fractions(head: np.ndarray, findings: ChronicFindings, edge_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(cavity, rim) fractions at head points (N, 3): the cavity replaces tissue with CSF, the rim is gliosis."""
    cavity = np.zeros(head.shape[0], np.float32)
    rim = np.zeros(head.shape[0], np.float32)
    for o in findings.old_infarcts:
        r = np.linalg.norm(head - np.asarray(o.centre_mm, np.float32), axis=-1)
        cavity = np.maximum(cavity, soft_inside(r - o.radius_mm, edge_mm))
        rim = np.maximum(rim, soft_inside(r - o.radius_mm - o.rim_mm, edge_mm))
    return cavity, np.clip(rim - cavity, 0.0, 1.0)


def wmh_fraction(head: np.ndarray, wm: np.ndarray, periventricular_distance_mm: np.ndarray, horn_weight: np.ndarray, findings: ChronicFindings, edge_mm: float) -> np.ndarray:
    """Share of the voxel that is white-matter hyperintensity (≤ its white matter).

    ``periventricular_distance_mm``: distance outside the (enlarged) ventricles; ``horn_weight``
    0..1, 1 at the frontal and occipital horns, where caps are thickest.
    """
    out = np.zeros(head.shape[0], np.float32)
    if findings.periventricular_mm > 0:
        thickness = findings.periventricular_mm * (0.6 + 0.8 * horn_weight)
        out = soft_inside(periventricular_distance_mm - thickness, edge_mm).astype(np.float32)
    for cx, cy, cz, radius in findings.wmh_foci_mm:
        r = np.linalg.norm(head - np.array([cx, cy, cz], np.float32), axis=-1)
        out = np.maximum(out, soft_inside(r - radius, edge_mm))
    return out * wm
