"""The value conventions of real exports, turned into one clean convention before any task sees them.

What sites and vendors write, and what the loader makes of it (measured on the real cases of
``../shared/real``: ISLES'24 maps fill the background with 1e-6 (CBF), -30 (Tmax) and 0 (CBV,
MTT), and hold negative CBV down to -56 and MTT down to -29 992 where the vendor fit failed;
ISLES'22 DWI/ADC hold small negative values from the fit):

- **Quantities that cannot be negative** (perfusion maps, DWI, ADC, FLAIR, SPIRAL): non-finite
  voxels (NaN, inf) and the *background fill* hold no value and become 0, the project's "nothing
  here"; negative values (fit noise, failed fits) become 0 too. The fill is the volume's minimum
  when at least ``FILL_MIN_SHARE`` of the voxels hold exactly it (a fill covers the background,
  noise never repeats one value that often) and it is no tissue value: negative, or below
  ``FILL_MAX_RELATIVE`` of the volume's 99th percentile (1e-6 beside CBF values of 10-100). A
  minimum of 0 needs no step: 0 already means "nothing here".
- **CT in HU** (NCCT, CTA phases, MIP, the 4D CTP): scanner padding below -1024 HU and
  non-finite voxels become -1024 (air), so HU windows and masks behave.
- **Label maps** (the vascular atlas): non-finite voxels become 0 (outside); held as uint8 when
  every value is a whole number 0..255 (region numbers; a full-size CTA's atlas is then 64 MiB,
  not 257), else kept in float32 so the tasks' atlas checks see and refuse the odd values.

Each step is counted in :class:`CleanVolume.notes`, which the result JSON carries, so a user sees
what was assumed. A volume with no value left, or one value everywhere, is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from strokelabel.errors import StrokeLabelError

NON_NEGATIVE = ("cbf", "cbv", "mtt", "tmax", "ttp", "dwi", "adc", "flair", "spiral")
HOUNSFIELD = ("ncct", "cta1", "cta2", "cta3", "mip", "ctp")
LABEL_MAPS = ("atlas", "cow-msk")  # cow-msk: ISLES'24 Circle-of-Willis segments (TopCoW numbering)
FILL_MIN_SHARE = 0.05
FILL_MAX_RELATIVE = 1e-3
AIR_HU = -1024.0


@dataclass
class CleanVolume:
    values: np.ndarray  # float32 (a label map: uint8 when that holds every value, see compact_labels)
    no_value: np.ndarray | None  # voxels that held a fill or a non-finite value (None: none did)
    notes: dict = field(default_factory=dict)


def _count(mask) -> int:
    return int(np.count_nonzero(mask))


def background_fill(values: np.ndarray, finite: np.ndarray | None) -> float | None:
    """The background fill value of a volume, or None: its minimum, if it covers >= ``FILL_MIN_SHARE``.

    ``finite``: the volume's finite voxels, or None when every voxel is finite (no masked copy needed)."""
    if finite is not None and not finite.any():
        return None
    low = float(values.min() if finite is None else values[finite].min())
    if low == 0.0 or _count(values == low) / values.size < FILL_MIN_SHARE:
        return None
    if low < 0:  # a negative minimum is no tissue value: no percentile needed to tell
        return low
    high = float(np.percentile(values if finite is None else values[finite], 99))
    return low if low <= FILL_MAX_RELATIVE * high else None


def c_ordered_float32(values: np.ndarray) -> np.ndarray:
    """A C-ordered float32 copy of ``values``.

    NIfTI stores voxels in Fortran order; numpy's own copy to C order walks the source with a stride
    of a whole slice (1 MiB on a 512 x 512 grid) and takes ~1 s for a 512 x 512 x 64 map. Copied one
    coronal plane (``values[:, j]``) at a time it takes ~0.25 s, the same values."""
    values = np.asarray(values)
    out = np.empty(values.shape, dtype=np.float32)
    if values.ndim >= 3 and not values.flags.c_contiguous:
        for j in range(values.shape[1]):
            out[:, j] = values[:, j]
    else:
        out[...] = values
    return out


def clean_volume(values: np.ndarray, modality: str, study: str | None = None) -> CleanVolume:
    """``values`` (any dtype, any memory order) as C-ordered float32 in the project's convention for ``modality`` (module doc).

    One copy of the volume (the float32 C-order one, which a NIfTI's Fortran-ordered voxels need
    anyway); every step after it works in place on that copy, so ``values`` itself is never changed."""
    values = c_ordered_float32(values)
    finite = np.isfinite(values)
    nonfinite = values.size - _count(finite)
    notes: dict = {}
    no_value = None
    if nonfinite:
        notes["nonfinite_voxels"] = nonfinite
        no_value = ~finite
    else:
        finite = None  # every voxel is finite: no mask to carry
    if nonfinite == values.size:
        raise StrokeLabelError(f"{modality} holds no finite value (every voxel is NaN or infinite)", study=study)

    if modality in HOUNSFIELD:
        padded = values < AIR_HU
        if nonfinite:
            padded &= finite  # -inf is counted as non-finite, not as padding
        if padded.any():
            notes["padding_below_-1024_hu_voxels"] = _count(padded)
            values[padded] = AIR_HU
        if nonfinite:
            values[no_value] = AIR_HU
    elif modality in LABEL_MAPS:
        if nonfinite:
            values[no_value] = 0.0
    else:
        fill = background_fill(values, finite) if modality in NON_NEGATIVE else None
        if fill is not None:
            filled = values == np.float32(fill)
            notes["background_fill"] = float(f"{fill:.6g}")
            notes["background_fill_voxels"] = _count(filled)
            no_value = filled if no_value is None else (no_value | filled)
        if no_value is not None:
            values[no_value] = 0.0
        if modality in NON_NEGATIVE:
            negative = values < 0
            if negative.any():
                notes["negative_voxels_set_to_0"] = _count(negative)
                values[negative] = 0.0

    low, high = (float(values.min()), float(values.max())) if no_value is None else _min_max_outside(values, no_value)
    if low is None or low == high:
        only = "no voxel" if low is None else f"every voxel is {low:g}"
        raise StrokeLabelError(f"{modality} is empty: {only} once fills and non-finite voxels are set aside", study=study)
    if modality in LABEL_MAPS:
        values = compact_labels(values)
    return CleanVolume(values, no_value, notes)


def compact_labels(values: np.ndarray) -> np.ndarray:
    """A label map as uint8 when every value is a whole number 0..255 (the same numbers, a quarter of
    the memory), else ``values`` as they are."""
    if values.size == 0 or float(values.min()) < 0 or float(values.max()) > 255:
        return values
    compact = values.astype(np.uint8)
    return compact if np.array_equal(compact, values) else values


def _min_max_outside(values: np.ndarray, no_value: np.ndarray) -> tuple[float | None, float | None]:
    """Minimum and maximum of ``values`` where ``no_value`` is False ((None, None) if nowhere)."""
    kept = values[~no_value]
    return (None, None) if kept.size == 0 else (float(kept.min()), float(kept.max()))
