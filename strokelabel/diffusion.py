"""A DWI series as the scanner exports it -> the one b = high DWI volume every task reads.

Scanners and converters (dcm2niix) write a diffusion acquisition as one 4D NIfTI with its
b-values beside it in FSL's ``.bval`` file (one number per volume, the same base name): b = 0
volumes, then one volume per diffusion direction and repeat at b = 1000 (or 800, 1500...). The
clinical DWI is the trace-weighted image of the highest b-value; what is read here:

- the **highest b-value shell**: every volume whose b-value is within :data:`SHELL_TOLERANCE` of the
  highest (converters write 995/1000/1005 for one nominal shell);
- its volumes are combined by the **geometric mean**: for directions that is the trace-weighted
  image scanners compute (S_trace = S0·exp(-b·mean diffusivity)), and for repeats of one direction
  it is an average in the log domain, as the ADC fit uses them;
- **b = 0 present or not**: it is never needed for the DWI (the study's ADC map is read from its
  own file); a series with only b = 0 volumes is refused.

A 4D file whose last axis holds one volume needs no ``.bval`` (a trailing singleton axis). Anything
else that cannot be read (no ``.bval``, a count that does not match the volumes, no
diffusion-weighted volume) is a :class:`StrokeLabelError` naming the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from strokelabel.errors import StrokeLabelError

# Volumes within this fraction of the highest b-value belong to its shell (995 vs 1000 s/mm²).
SHELL_TOLERANCE = 0.05
# Below this b-value (s/mm²) a volume is not diffusion-weighted enough to show an acute lesion.
MIN_DIFFUSION_B_S_MM2 = 400.0


def bval_path(series: str | Path) -> Path:
    """The ``.bval`` file beside a series: ``x_dwi.nii.gz`` -> ``x_dwi.bval``."""
    series = Path(series)
    name = series.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return series.with_name(name[: -len(ext)] + ".bval")
    return series.with_suffix(".bval")


def read_bvals(path: str | Path, volumes: int, study: str | None = None) -> np.ndarray:
    """The b-values (s/mm²) of a series of ``volumes`` volumes from its ``.bval`` file, checked."""
    path = Path(path)
    if not path.exists():
        raise StrokeLabelError(
            f"the DWI is a series of {volumes} volumes but {path.name} (its b-values) is not beside it: "
            "which volume is the diffusion-weighted one cannot be told",
            study=study,
        )
    try:
        bvals = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError as e:
        raise StrokeLabelError(f"{path.name} holds something other than numbers ({e})", study=study) from e
    if bvals.size != volumes:
        raise StrokeLabelError(f"{path.name} lists {bvals.size} b-values but the DWI series has {volumes} volumes", study=study)
    if not np.all(np.isfinite(bvals)) or np.any(bvals < 0):
        raise StrokeLabelError(f"{path.name} holds negative or non-finite b-values", study=study)
    return bvals


def highest_shell(bvals: np.ndarray, study: str | None = None, name: str = "the .bval file") -> np.ndarray:
    """Indices of the volumes in the highest b-value shell; refused when it is not diffusion-weighted."""
    bvals = np.asarray(bvals, dtype=np.float64)
    top = float(bvals.max())
    if top < MIN_DIFFUSION_B_S_MM2:
        raise StrokeLabelError(
            f"the DWI series has no diffusion-weighted volume: its highest b-value in {name} is {top:g} s/mm² "
            f"(expected >= {MIN_DIFFUSION_B_S_MM2:g}, usually 1000)",
            study=study,
        )
    return np.flatnonzero(bvals >= (1.0 - SHELL_TOLERANCE) * top)


def trace_weighted(series: np.ndarray, volumes: np.ndarray) -> np.ndarray:
    """The geometric mean over ``volumes`` (indices of the last axis) of a 4D series, float32.

    Non-positive voxels (background, fit noise) have no logarithm: they count as 0 in the mean
    of a voxel only when every volume is non-positive there; otherwise the positive ones are used."""
    volumes = np.asarray(volumes)
    if volumes.size == 1:
        return np.asarray(series[..., int(volumes[0])], dtype=np.float32)
    log_sum = np.zeros(series.shape[:3], dtype=np.float64)
    count = np.zeros(series.shape[:3], dtype=np.int32)
    for v in volumes:  # one volume at a time: no float64 copy of the whole series
        values = np.asarray(series[..., int(v)], dtype=np.float64)
        positive = values > 0
        log_sum[positive] += np.log(values[positive])
        count += positive
    out = np.zeros(series.shape[:3], dtype=np.float32)
    seen = count > 0
    out[seen] = np.exp(log_sum[seen] / count[seen])
    return out


def dwi_from_series(series: np.ndarray, series_path: str | Path, study: str | None = None) -> tuple[np.ndarray, dict]:
    """The 3D DWI of a stored 4D series (trailing axis = volumes) and a note for the result JSON."""
    volumes = int(series.shape[-1])
    if volumes == 1:
        return np.asarray(series[..., 0]), {}
    path = bval_path(series_path)
    bvals = read_bvals(path, volumes, study)
    shell = highest_shell(bvals, study, path.name)
    note = {
        "b_values_s_mm2": sorted({round(float(b)) for b in bvals}),
        "used_b_s_mm2": round(float(bvals[shell].mean())),
        "volumes_used": int(shell.size),
        "combined": "geometric mean (trace-weighted)" if shell.size > 1 else "single volume",
    }
    return trace_weighted(series, shell), note
