"""Training-free MRI baseline: the acute ischemic lesion from ADC and DWI.

Lesion = ADC < 620 x 10^-6 mm²/s (the RAPID/ISLES threshold) confirmed by DWI
hyperintensity, DWI > brain median + k x robust SD (1.4826 x MAD). The DWI condition
rejects low ADC that is not restricted diffusion (noise, fitting failures, T2 dark-out).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from strokelabel.baselines.masks import brain_mask_from_mri, remove_small_clusters
from strokelabel.baselines.perfusion import MIN_CLUSTER_ML, _check_shapes
from strokelabel.units import detect_adc_unit

ADC_LESION_THRESHOLD_MM2_S = 0.62e-3
DWI_ROBUST_SD_FACTOR = 2.0


def dwi_hyperintense(dwi: np.ndarray, brain_mask: np.ndarray, k: float = DWI_ROBUST_SD_FACTOR) -> np.ndarray:
    """DWI > median + k x 1.4826 x MAD over the brain (a robust z-score above k)."""
    dwi = np.asarray(dwi, dtype=np.float64)
    brain = np.asarray(brain_mask, dtype=bool)
    values = dwi[brain]
    median = np.median(values)
    robust_sd = 1.4826 * np.median(np.abs(values - median))
    return brain & (dwi > median + k * robust_sd)


def adc_lesion_baseline(
    adc: np.ndarray,
    dwi: np.ndarray,
    spacing_mm: Sequence[float],
    brain_mask: np.ndarray | None = None,
    adc_threshold_mm2_s: float = ADC_LESION_THRESHOLD_MM2_S,
    dwi_k: float = DWI_ROBUST_SD_FACTOR,
    min_cluster_ml: float = MIN_CLUSTER_ML,
    study: str | None = None,
) -> tuple[np.ndarray, str]:
    """Lesion (1) where ADC < ``adc_threshold_mm2_s`` and DWI is hyperintense; clusters below ``min_cluster_ml`` mL dropped.

    The ADC unit (10^-3 or 10^-6 mm²/s) is detected from the brain's values. Returns the
    uint8 label map and the unit assumption in words (for the result JSON).
    """
    _check_shapes(adc=adc, dwi=dwi, brain_mask=brain_mask)
    brain = brain_mask_from_mri(dwi, adc) if brain_mask is None else np.asarray(brain_mask, dtype=bool)
    unit = detect_adc_unit(adc, mask=brain, study=study)
    adc_mm2_s = np.asarray(adc, dtype=np.float64) * unit.factor_to_mm2_s
    # ADC = 0 is a failed fit or background, not restricted diffusion.
    restricted = brain & (adc_mm2_s > 0) & (adc_mm2_s < adc_threshold_mm2_s)
    lesion = restricted & dwi_hyperintense(dwi, brain, dwi_k)
    label = remove_small_clusters(lesion, spacing_mm, min_cluster_ml).astype(np.uint8)
    return label, unit.assumption
