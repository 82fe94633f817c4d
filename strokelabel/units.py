"""Units of the input maps: detection of the ADC unit and plausibility checks.

Sites export the same quantity in different units (ADC in 10^-3 or 10^-6 mm²/s, Tmax in
seconds or milliseconds, CT as HU or as stored values). A threshold applied in the wrong
unit silently labels the whole brain or nothing, so every check here either returns what
it assumed, in words, or raises :class:`StrokeLabelError` naming the modality, the values
seen and the likely cause.

All statistics are robust (median, percentiles) and taken over the brain: inside
``mask`` when one is given, else over the non-zero voxels (maps are zero outside the
brain, and a zero background would drag every percentile to zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from strokelabel.errors import StrokeLabelError

# Plausible median ADC of brain tissue (parenchyma, some CSF, maybe a lesion), in
# 10^-3 mm²/s: normal brain 0.6-1.0, CSF ~3, acute lesion ~0.4. The bounds are generous;
# the candidate units differ by 1000x, so the ranges never overlap.
ADC_BRAIN_MEDIAN_RANGE_1E3 = (0.25, 2.5)

# Candidate ADC units: name, factor to mm²/s.
ADC_UNITS = (
    ("10^-3 mm²/s", 1e-3),
    ("10^-6 mm²/s", 1e-6),
    ("mm²/s", 1.0),
)


@dataclass(frozen=True)
class AdcUnit:
    """The unit an ADC volume was found to be in.

    ``factor_to_mm2_s`` turns the stored values into mm²/s (``adc * factor_to_mm2_s``);
    ``assumption`` says in words what was assumed and why, for the result JSON.
    """

    unit: str
    factor_to_mm2_s: float
    brain_median: float
    assumption: str


def _where(study: str | None) -> dict:
    return {"study": study} if study else {}


def check_finite(values: np.ndarray, modality: str, study: str | None = None) -> None:
    """Raise if ``values`` holds NaN or infinite voxels."""
    values = np.asarray(values)
    if values.dtype.kind not in "fc":  # integers are always finite
        return
    bad = ~np.isfinite(values)  # in the values' own dtype: no float64 copy of the volume
    if bad.any():
        raise StrokeLabelError(
            f"{modality} contains {int(bad.sum())} NaN or infinite voxels (of {bad.size}); a failed export or fit",
            **_where(study),
        )


def check_not_empty(values: np.ndarray, modality: str, study: str | None = None) -> None:
    """Raise if ``values`` has no voxels or one value everywhere (an empty or failed export)."""
    values = np.asarray(values)
    if values.size == 0:
        raise StrokeLabelError(f"{modality} has no voxels (shape {values.shape})", **_where(study))
    low, high = float(np.min(values)), float(np.max(values))
    if low == high:
        raise StrokeLabelError(f"{modality} is empty: every voxel is {low:g}", **_where(study))


def brain_values(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The voxels statistics are taken over: inside ``mask``, else the non-zero voxels."""
    values = np.asarray(values)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != values.shape:
            raise StrokeLabelError(f"brain mask shape {mask.shape} differs from the image shape {values.shape}")
        return values[mask].astype(np.float64)  # float64 for the brain's voxels only, not the volume's
    return values[values != 0].astype(np.float64)


def _robust_stats(values: np.ndarray, mask: np.ndarray | None, modality: str, study: str | None) -> np.ndarray:
    """Finite, non-constant brain voxels, or a StrokeLabelError saying which of these fails."""
    check_finite(values, modality, study)
    check_not_empty(values, modality, study)
    brain = brain_values(values, mask)
    if brain.size == 0:
        raise StrokeLabelError(f"{modality} has no non-zero voxels inside the brain", **_where(study))
    return brain


def detect_adc_unit(adc: np.ndarray, mask: np.ndarray | None = None, study: str | None = None) -> AdcUnit:
    """Find the unit of an ADC volume from the median ADC of the brain.

    Brain tissue is 0.6-1.0 x 10^-3 mm²/s and CSF ~3 x 10^-3 mm²/s, so the brain median
    is 600-1000 when stored in 10^-6 mm²/s, 0.6-1.0 in 10^-3 mm²/s and ~0.0008 in mm²/s.
    Raises :class:`StrokeLabelError` for NaN, an empty volume, a negative median or a
    median that fits none of these units.
    """
    brain = _robust_stats(adc, mask, "ADC", study)
    median = float(np.median(brain))
    if median <= 0:
        raise StrokeLabelError(
            f"ADC has a brain median of {median:g}: ADC cannot be negative (a subtraction or sign error in the export)",
            **_where(study),
        )
    low, high = ADC_BRAIN_MEDIAN_RANGE_1E3
    for unit, factor in ADC_UNITS:
        in_1e3 = median * factor / 1e-3
        if low <= in_1e3 <= high:
            p5, p95 = np.percentile(brain, [5, 95])
            assumption = (
                f"ADC taken as {unit}: brain median {median:.4g} (5-95th percentile {p5:.4g}-{p95:.4g}) "
                f"matches normal brain 0.6-1.0 x 10^-3 mm²/s only in this unit"
            )
            return AdcUnit(unit=unit, factor_to_mm2_s=factor, brain_median=median, assumption=assumption)
    raise StrokeLabelError(
        f"ADC has a brain median of {median:.4g}, which fits no known ADC unit (expected ~0.6-1.0 in 10^-3 mm²/s "
        f"or ~600-1000 in 10^-6 mm²/s); is this an ADC map?",
        **_where(study),
    )


@dataclass(frozen=True)
class _MapRange:
    """What a perfusion map's brain median looks like in its expected unit, and the usual wrong units."""

    name: str
    unit: str
    median_range: tuple[float, float]
    p99_max: float
    # (unit name, factor turning a value in that unit into the expected unit)
    wrong_units: tuple[tuple[str, float], ...]
    # Lowest converted median that still counts as a wrong-unit match: a Tmax median near
    # 0 s is fine in seconds, but it is no evidence that the map was in ms.
    wrong_unit_median_low: float | None = None


# Brain medians: CBF grey ~60 / white ~25 mL/100g/min; CBV ~2-5 mL/100g; MTT ~3-6 s;
# Tmax ~0-2 s in healthy tissue (up to >10 s in a large lesion); TTP depends on when the
# acquisition started. Ranges are wide on purpose: they must catch a 60-1000x unit slip,
# not a sick brain.
PERFUSION_RANGES = {
    "cbf": _MapRange("CBF", "mL/100g/min", (3.0, 200.0), 1000.0, (("mL/g/min", 100.0), ("mL/100g/s", 60.0))),
    "cbv": _MapRange("CBV", "mL/100g", (0.3, 20.0), 100.0, (("mL/g", 100.0),)),
    "mtt": _MapRange("MTT", "s", (0.5, 30.0), 100.0, (("ms", 1e-3),)),
    "tmax": _MapRange("Tmax", "s", (0.0, 30.0), 120.0, (("ms", 1e-3),), wrong_unit_median_low=0.1),
    "ttp": _MapRange("TTP", "s", (1.0, 90.0), 200.0, (("ms", 1e-3),)),
}


def check_perfusion_map(values: np.ndarray, modality: str, mask: np.ndarray | None = None, study: str | None = None) -> str:
    """Check that a perfusion map (``cbf``, ``cbv``, ``mtt``, ``tmax``, ``ttp``) is in the project's unit.

    Units: CBF mL/100g/min, CBV mL/100g, MTT s, Tmax s, TTP s. Returns the assumption in
    words; raises :class:`StrokeLabelError` naming the map and, where the values fit a
    common wrong unit (Tmax in ms, CBF in mL/g/min...), that unit.
    """
    key = modality.lower()
    if key not in PERFUSION_RANGES:
        raise ValueError(f"unknown perfusion map {modality!r}; expected one of {sorted(PERFUSION_RANGES)}")
    spec = PERFUSION_RANGES[key]
    brain = _robust_stats(values, mask, spec.name, study)
    median, p99 = (float(v) for v in np.percentile(brain, [50, 99]))
    low, high = spec.median_range
    expected = f"expected a brain median of {low:g}-{high:g} {spec.unit}"
    if median < 0:
        raise StrokeLabelError(f"{spec.name} has a negative brain median ({median:.4g} {spec.unit}); {expected}", **_where(study))
    if low <= median <= high and p99 <= spec.p99_max:
        return f"{spec.name} taken as {spec.unit}: brain median {median:.4g}, 99th percentile {p99:.4g}"
    guess_low = low if spec.wrong_unit_median_low is None else spec.wrong_unit_median_low
    fits = [
        (unit, factor)
        for unit, factor in spec.wrong_units
        if guess_low <= median * factor <= high and p99 * factor <= spec.p99_max
    ]
    if fits:
        likely = " or ".join(f"{unit} (convert x{factor:g})" for unit, factor in fits)
        raise StrokeLabelError(
            f"{spec.name} looks like it is in {likely}, not {spec.unit}: brain median {median:.4g}, "
            f"99th percentile {p99:.4g}; {expected}",
            **_where(study),
        )
    raise StrokeLabelError(
        f"{spec.name} values are implausible for {spec.unit}: brain median {median:.4g}, 99th percentile {p99:.4g}; "
        f"{expected} and a 99th percentile below {spec.p99_max:g}",
        **_where(study),
    )


# CT in HU: air -1000, CSF ~5, brain 20-45, contrast-enhanced vessels 150-500, bone up to
# ~3000. Values below -1024 are scanner padding (-2048, -3024) and ignored.
CT_PADDING_BELOW_HU = -1024.0
CT_MAX_HU = 4000.0
# Median of the head (voxels above -200 HU: tissue and bone, no air); brain dominates it.
CT_HEAD_MEDIAN_RANGE_HU = (-50.0, 250.0)


def check_ct_hu(values: np.ndarray, modality: str = "CT", study: str | None = None) -> str:
    """Check that a CT volume (NCCT, CTA phase, CTP MIP) is in Hounsfield units.

    Catches normalised intensities (all in [0, 1]), stored values without the rescale
    intercept (HU + 1024: no air, tissue ~1050) and values outside the HU scale.
    Returns the assumption in words.
    """
    check_finite(values, modality, study)
    check_not_empty(values, modality, study)
    values = np.asarray(values, dtype=np.float64)
    scan = values[values >= CT_PADDING_BELOW_HU]
    if scan.size == 0:
        raise StrokeLabelError(f"{modality} holds only values below {CT_PADDING_BELOW_HU:g} HU (padding, no scan)", **_where(study))
    low, high = (float(v) for v in np.percentile(scan, [0.5, 99.5]))
    if low >= -1.0 and high <= 1.0:
        raise StrokeLabelError(
            f"{modality} values lie in [{low:.3g}, {high:.3g}]: normalised intensities, not Hounsfield units", **_where(study)
        )
    if high > CT_MAX_HU:
        raise StrokeLabelError(
            f"{modality} has a 99.5th percentile of {high:.4g}, beyond the HU scale (max ~{CT_MAX_HU:g} HU)", **_where(study)
        )
    med_low, med_high = CT_HEAD_MEDIAN_RANGE_HU
    # Stored values without the intercept: nothing below ~0 (air sits at ~24), and a large
    # share of voxels at tissue level ~1024+. Tested first: the air of such a volume would
    # otherwise pass as a plausible HU head median.
    head_if_stored = scan[scan > 1024.0 - 200.0]
    if low >= -50.0 and head_if_stored.size > 0.2 * scan.size:
        median = float(np.median(head_if_stored))
        if med_low <= median - 1024.0 <= med_high:
            raise StrokeLabelError(
                f"{modality} looks like stored values without the rescale intercept (HU + 1024): no air near -1000, "
                f"head median {median:.4g}; subtract 1024",
                **_where(study),
            )
    head = scan[scan > -200.0]
    median = float(np.median(head)) if head.size else float("nan")
    if med_low <= median <= med_high:
        return f"{modality} taken as HU: head median {median:.4g} HU, 0.5-99.5th percentile {low:.4g}-{high:.4g} HU"
    raise StrokeLabelError(
        f"{modality} is implausible as HU: head median {median:.4g} (expected {med_low:g}-{med_high:g} HU for brain), "
        f"0.5-99.5th percentile {low:.4g}-{high:.4g}",
        **_where(study),
    )


def voxel_volume_ml(spacing_mm: Sequence[float], ndim: int | None = None) -> float:
    """Volume of one voxel in mL (1 mL = 1000 mm³); checks the spacing is positive and finite."""
    spacing = np.asarray(spacing_mm, dtype=np.float64).ravel()
    if ndim is not None and spacing.size != ndim:
        raise StrokeLabelError(f"voxel spacing {spacing.tolist()} mm has {spacing.size} values for a {ndim}D image")
    if spacing.size == 0 or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise StrokeLabelError(f"voxel spacing {spacing.tolist()} mm is not positive and finite")
    return float(np.prod(spacing)) / 1000.0
