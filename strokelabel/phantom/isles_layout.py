"""Phantom MRI studies in the ISLES'22 distributed layout, with the quirks of real sites.

ISLES'22 ships a BIDS tree::

    rawdata/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_dwi.nii.gz
    rawdata/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_adc.nii.gz
    rawdata/sub-strokecase0001/ses-0001/anat/sub-strokecase0001_ses-0001_flair.nii.gz
    derivatives/sub-strokecase0001/ses-0001/sub-strokecase0001_ses-0001_msk.nii.gz

DWI and ADC share a ~2 mm grid; FLAIR lies on its own grid (not co-registered); the mask is
on the DWI grid. The studies root given to the server is the folder holding ``rawdata`` and
``derivatives``; the datastore uses each ``_msk`` as the study's final label until a label is
saved through the server.

Real data is not clean, and neither are these phantoms (per study, drawn from its seed):
ADC stored in 10^-3 or 10^-6 mm²/s, slightly negative ADC values from the fit, skull-stripped
(zero outside the brain) or not. With ``appearance``/``conventions`` (as for
:func:`strokelabel.phantom.study.generate_study`) the studies also vary in look, orientation,
obliquity, dtype and background fill.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
from scipy import ndimage

from strokelabel.baselines.masks import brain_mask_from_mri
from strokelabel.phantom.study import KIND_CODES, generate_study, study_seed

SESSION = "0001"
# FLAIR of ISLES'22 is a higher-resolution anatomical scan on its own grid.
FLAIR_SPACING_MM = (1.0, 1.0, 4.0)


def isles_subject(index: int) -> str:
    return f"strokecase{index:04d}"


def isles_paths(root, subject: str, session: str = SESSION) -> dict:
    """Where each file of one study goes in the ISLES'22 tree."""
    root = Path(root)
    base = f"sub-{subject}_ses-{session}"
    ses = root / "rawdata" / f"sub-{subject}" / f"ses-{session}"
    return {
        "dwi": ses / "dwi" / f"{base}_dwi.nii.gz",
        "adc": ses / "dwi" / f"{base}_adc.nii.gz",
        "flair": ses / "anat" / f"{base}_flair.nii.gz",
        "msk": root / "derivatives" / f"sub-{subject}" / f"ses-{session}" / f"{base}_msk.nii.gz",
    }


def site_quirks(seed: int) -> dict:
    """The site habits of one study, drawn from its seed."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), KIND_CODES["mri"], 22]))
    return {
        "adc_unit": "10^-6 mm2/s" if rng.random() < 0.5 else "10^-3 mm2/s",
        "skull_stripped": bool(rng.random() < 0.5),
        "negative_adc_fraction": float(rng.uniform(0.002, 0.02)),
    }


def resample_to_own_grid(volume: np.ndarray, affine: np.ndarray, spacing_mm=FLAIR_SPACING_MM, order: int = 1):
    """The volume on a grid of ``spacing_mm`` covering the same field of view (a separate acquisition)."""
    old_spacing = np.linalg.norm(affine[:3, :3], axis=0)
    extent = np.asarray(volume.shape) * old_spacing
    shape = tuple(int(max(2, round(e / s))) for e, s in zip(extent, spacing_mm))
    new_affine = np.diag([*spacing_mm, 1.0])
    # Same field of view, centred the same way: world origin at the array middle.
    new_affine[:3, 3] = affine[:3, 3] - old_spacing / 2 + np.asarray(spacing_mm) / 2
    # voxel index in the old grid of each new voxel
    matrix = np.linalg.inv(affine) @ new_affine
    out = ndimage.affine_transform(volume, matrix[:3, :3], offset=matrix[:3, 3], output_shape=shape, order=order, mode="nearest")
    return out.astype(np.float32), new_affine


def _save(path: Path, array: np.ndarray, affine: np.ndarray, description: str) -> Path:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = description[:79].encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


# ISLES'22 DWI/ADC are typically 112 x 112 x 73 voxels of 2 mm.
ISLES22_GRID = ((112, 112, 73), (2.0, 2.0, 2.0))


def resample_to_grid(volume: np.ndarray, affine: np.ndarray, shape, spacing_mm, order: int = 1):
    """The volume on a centred grid of ``shape`` x ``spacing_mm`` (world origin at the array middle)."""
    new_affine = np.diag([*spacing_mm, 1.0])
    new_affine[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * np.asarray(spacing_mm)
    matrix = np.linalg.inv(affine) @ new_affine
    out = ndimage.affine_transform(volume, matrix[:3, :3], offset=matrix[:3, 3], output_shape=tuple(shape), order=order, mode="constant", cval=0.0)
    return out, new_affine


def generate_isles_study(root, index: int, seed: int, size: str = "small", quirks: dict | None = None, grid=None,
                         appearance="fixed", conventions=None, family: str = "ellipsoid") -> dict:
    """Write one phantom MRI study as ISLES'22 case ``index``; returns paths, quirks and figures.

    ``grid`` = (shape, spacing_mm) resamples DWI, ADC and mask to that grid (e.g. ``ISLES22_GRID``
    from the ``full`` phantom); default: the phantom's own grid of ``size``. ``appearance`` and
    ``conventions`` as in :func:`strokelabel.phantom.study.generate_study`: with either given,
    the conventions' ADC unit and negative noise replace the site quirks' (None: the quirks'),
    a random appearance decides the skull stripping, and every file (the FLAIR on its own grid)
    is stored with the conventions; the mask is always on the DWI's stored grid."""
    root = Path(root)
    subject = isles_subject(index)
    quirks = {**site_quirks(seed), **(quirks or {})}
    if appearance != "fixed" or conventions is not None:
        return _generate_with_conventions(root, index, seed, size, quirks, grid, appearance, conventions, family)
    with tempfile.TemporaryDirectory(dir=root if root.exists() else None) as tmp:
        record = generate_study(tmp, "mri", subject, seed, session=SESSION, size=size, family=family)
        dwi_img = nib.load(str(record["modalities"]["dwi"]))
        affine = dwi_img.affine
        dwi = np.asarray(dwi_img.dataobj, dtype=np.float32)
        adc = np.asarray(nib.load(str(record["modalities"]["adc"])).dataobj, dtype=np.float32)
        flair = np.asarray(nib.load(str(record["modalities"]["flair"])).dataobj, dtype=np.float32)
        lesion = np.asarray(nib.load(str(record["truth"]["lesion"])).dataobj).astype(np.uint8)
    if grid is not None:
        dwi, _ = resample_to_grid(dwi, affine, *grid)
        adc, _ = resample_to_grid(adc, affine, *grid)
        flair, _ = resample_to_grid(flair, affine, *grid)
        lesion, affine = resample_to_grid(lesion, affine, *grid, order=0)
    brain = brain_mask_from_mri(dwi, adc)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), KIND_CODES["mri"], 23]))
    # A real fit gives slightly negative ADC where b0 and DWI are both noise (ventricle edges, background).
    candidates = np.flatnonzero(~brain | (adc < 0.05))
    n_neg = int(quirks["negative_adc_fraction"] * candidates.size)
    adc = adc.copy()
    if n_neg:
        chosen = rng.choice(candidates, size=n_neg, replace=False)
        adc.flat[chosen] = -rng.uniform(0.001, 0.05, size=n_neg).astype(np.float32)
    if quirks["skull_stripped"]:
        dwi, adc, flair = dwi * brain, adc * brain, flair * brain
    adc_description = "ADC 10^-3 mm2/s"
    if quirks["adc_unit"] == "10^-6 mm2/s":
        adc = adc * 1000.0
        adc_description = "ADC 10^-6 mm2/s"
    flair_own, flair_affine = resample_to_own_grid(flair, affine)

    paths = isles_paths(root, subject)
    _save(paths["dwi"], dwi.astype(np.float32), affine, "DWI b=1000 s/mm2, a.u.")
    _save(paths["adc"], adc.astype(np.float32), affine, adc_description)
    _save(paths["flair"], flair_own, flair_affine, "FLAIR a.u., own grid")
    _save(paths["msk"], lesion, affine, "lesion mask 0/1")
    info = {
        "subject": subject,
        "session": SESSION,
        "seed": int(seed),
        "size": size,
        "family": family,
        "quirks": quirks,
        "lesion_volume_ml": round(float(lesion.sum() * np.prod(np.linalg.norm(affine[:3, :3], axis=0)) / 1000.0), 3),
        "figures": record["figures"],
    }
    sidecar = root / "derivatives" / "phantom" / f"sub-{subject}_ses-{SESSION}_phantom.json"
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    sidecar.write_text(json.dumps(info, indent=1) + "\n")
    return {"reference": paths["dwi"], "paths": paths, **info}


def _generate_with_conventions(root: Path, index: int, seed: int, size: str, quirks: dict, grid, appearance, conventions,
                               family: str = "ellipsoid") -> dict:
    from strokelabel.phantom import conventions as conv
    from strokelabel.phantom.appearance import is_random
    from strokelabel.phantom.study import simulate_study, write_stored

    subject = isles_subject(index)
    study = simulate_study("mri", seed, size, appearance=appearance, family=family)
    affine = study.grid.affine
    dwi, adc, flair = (study.images[k] for k in ("dwi", "adc", "flair"))
    lesion = study.labels["lesion"]
    fg = {k: study.foreground[k].astype(np.uint8) for k in ("dwi", "adc", "flair")}
    if grid is not None:
        dwi, _ = resample_to_grid(dwi, affine, *grid)
        adc, _ = resample_to_grid(adc, affine, *grid)
        flair, _ = resample_to_grid(flair, affine, *grid)
        fg = {k: resample_to_grid(v, affine, *grid, order=0)[0] for k, v in fg.items()}
        lesion, affine = resample_to_grid(lesion, affine, *grid, order=0)
    fg = {k: v > 0 for k, v in fg.items()}
    if is_random(study.look):
        quirks["skull_stripped"] = study.truth["record"]["skull_stripped"]
    elif quirks["skull_stripped"]:
        brain = brain_mask_from_mri(dwi, adc)
        dwi, adc, flair = dwi * brain, adc * brain, flair * brain
        fg = {k: brain for k in fg}
    if conventions is None:
        stored = conv.draw_conventions(seed, "mri", {"adc_unit": "1e-6" if quirks["adc_unit"] == "10^-6 mm2/s" else "1e-3",
                                                     "negative_noise": quirks["negative_adc_fraction"]})
    else:
        stored = conv.draw_conventions(seed, "mri", conventions)
        quirks["adc_unit"] = "10^-6 mm2/s" if stored["adc_unit"] == "1e-6" else "10^-3 mm2/s"
        quirks["negative_adc_fraction"] = stored["negative_noise"]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), KIND_CODES["mri"], 23]))
    images = conv.vendor_negative_noise({"dwi": dwi, "adc": adc}, fg, stored["negative_noise"], rng)
    flair_own, flair_affine = resample_to_own_grid(flair, affine)
    flair_fg, _ = resample_to_own_grid(fg["flair"].astype(np.float32), affine, order=0)
    paths = isles_paths(root, subject)
    dwi_geometry = conv.StoredGeometry(affine, dwi.shape, stored)
    flair_geometry = conv.StoredGeometry(flair_affine, flair_own.shape, stored)
    write_stored(paths["dwi"], "dwi", images["dwi"].astype(np.float32), dwi_geometry, stored, "DWI b=1000 s/mm2, a.u.", fg["dwi"])
    write_stored(paths["adc"], "adc", images["adc"].astype(np.float32), dwi_geometry, stored, "ADC", fg["adc"])
    write_stored(paths["flair"], "flair", flair_own, flair_geometry, stored, "FLAIR a.u., own grid", flair_fg > 0.5)
    write_stored(paths["msk"], "msk", lesion.astype(np.uint8), dwi_geometry, stored, "lesion mask 0/1")
    quirks["conventions"] = {k: stored[k] for k in conv.DEFAULT}
    quirks["conventions_spec"] = json.loads(json.dumps(conventions, sort_keys=True)) if conventions is not None else None
    quirks["appearance"] = appearance if isinstance(appearance, str) else json.loads(json.dumps(appearance, sort_keys=True))
    info = {
        "subject": subject,
        "session": SESSION,
        "seed": int(seed),
        "size": size,
        "family": family,
        "quirks": quirks,
        "lesion_volume_ml": round(float(lesion.sum() * np.prod(np.linalg.norm(affine[:3, :3], axis=0)) / 1000.0), 3),
        "figures": study.figures,
    }
    sidecar = root / "derivatives" / "phantom" / f"sub-{subject}_ses-{SESSION}_phantom.json"
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    sidecar.write_text(json.dumps(info, indent=1) + "\n")
    return {"reference": paths["dwi"], "paths": paths, **info}


def generate_isles_dataset(
    root, n: int = 6, size: str = "small", seed: int = 0, first_index: int = 1, progress: Callable[..., None] | None = print,
    appearance="fixed", conventions=None, family: str = "ellipsoid",
) -> list[dict]:
    """``n`` ISLES'22-layout phantom studies (cases ``first_index``..) of anatomy ``family``, seeds from
    (seed, "mri", index); ``appearance`` and ``conventions`` as in :func:`generate_isles_study`."""
    progress = progress or (lambda *a, **k: None)
    Path(root).mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(first_index, first_index + n):
        s = study_seed(seed, "mri", 10_000 + i)
        sidecar = Path(root) / "derivatives" / "phantom" / f"sub-{isles_subject(i)}_ses-{SESSION}_phantom.json"
        if sidecar.exists():
            info = json.loads(sidecar.read_text())
            same_look = (info["quirks"].get("appearance", "fixed"), info["quirks"].get("conventions_spec")) == (
                appearance if isinstance(appearance, str) else json.loads(json.dumps(appearance, sort_keys=True)),
                json.loads(json.dumps(conventions, sort_keys=True)) if conventions is not None else None)
            same_study = (info.get("seed"), info.get("size"), info.get("family", "ellipsoid")) == (s, size, family)
            if same_study and same_look and isles_paths(root, info["subject"])["msk"].exists():
                paths = isles_paths(root, info["subject"])
                out.append({"reference": paths["dwi"], "paths": paths, **info})
                continue
        rec = generate_isles_study(root, i, s, size=size, appearance=appearance, conventions=conventions, family=family)
        progress(f"[{i - first_index + 1}/{n}] sub-{rec['subject']}: lesion {rec['lesion_volume_ml']:.1f} mL, {rec['quirks']}")
        out.append(rec)
    return out


def remove_tree(root) -> None:
    shutil.rmtree(root, ignore_errors=True)
