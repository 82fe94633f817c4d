"""Perfusion maps of a study that has only its raw 4D CT perfusion series.

The maps are computed once by :mod:`strokelabel.ctp4d` (motion correction, AIF/VOF, block-circulant
SVD deconvolution) and kept as derived NIfTI files beside the study (:mod:`strokelabel.derived`),
in the series' own stored voxel order and grid, so the study loader then reads them exactly like
maps a vendor wrote. What the computation chose (AIF/VOF curves and where, motion, warnings) is
kept in the set's manifest and returned with every load.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from strokelabel import ctp4d
from strokelabel.derived import DerivedSet, atomic_save_nifti, derived_folder

logger = logging.getLogger(__name__)

MAPS_FROM_4D = ("cbf", "cbv", "mtt", "tmax", "ttp", "mip", "ncct")
# Bumped whenever the computation changes, so maps made by older code are made again.
MAPS_VERSION = "4"  # 2: series quality figures and flags; 3: the noise's lift of each residue maximum taken off (issue 23); 4: the AIF from the earliest arterial peaks, not venous voxels (issue 23)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def maps_from_4d(series_path: str | Path, study_id: str) -> dict:
    """``{"files": {map: path}, "info": {...}, "reused": bool}`` for the study's 4D series (computed or reused)."""
    series_path = Path(series_path)
    sidecar = ctp4d.sidecar_path(series_path)  # the BIDS sidecar with the frame times
    sources = [series_path] + ([sidecar] if sidecar.exists() else [])
    derived = DerivedSet(derived_folder(series_path, study_id), study_id, "from4d", MAPS_VERSION, sources)

    def make(target: DerivedSet):
        started = time.perf_counter()
        series = ctp4d.read_ctp_nifti(series_path)
        affine = series.affine
        spacing = tuple(float(s) for s in np.linalg.norm(series.affine[:3, :3], axis=0))
        t_shape = series.values.shape

        def progress(fraction: float, message: str) -> None:
            logger.info("%s: perfusion maps from the 4D series %3.0f%% %s", study_id, 100 * fraction, message)

        logger.info("%s: computing perfusion maps from %s (%s voxels x %d frames)", study_id, series_path.name, "x".join(map(str, t_shape[:3])), t_shape[3])
        computed = ctp4d.compute_maps(series, spacing, progress=progress)
        del series
        files = {}
        for name in MAPS_FROM_4D:
            files[name] = atomic_save_nifti(computed.maps[name].astype(np.float32), affine, target.path(name))
        info = _jsonable(
            {
                "source": series_path.name,
                "aif": computed.aif,
                "vof": computed.vof,
                "motion": computed.motion,
                "warnings": list(computed.warnings),
                "quality": computed.quality,
                "flags": computed.flags,
                "dt_s": computed.dt_s,
                "notes": computed.notes,
                "seconds": round(time.perf_counter() - started, 1),
                "validated": "maps computed from a 4D series are validated on phantoms only",
            }
        )
        logger.info("%s: perfusion maps written to %s in %.1f s%s", study_id, target.folder, info["seconds"],
                    f"; warnings: {'; '.join(info['warnings'])}" if info["warnings"] else "")
        return files, info

    return derived.get_or_make(make)
