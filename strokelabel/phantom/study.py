"""Writing phantom studies to disk: BIDS-named NIfTI files, the clinical sidecar, the ground truth
under ``derivatives/truth`` and, for labelled studies, the datastore's final label.
"""

from __future__ import annotations

import json
import shutil
import time
import zlib
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

from strokelabel import __version__
from strokelabel.naming import REFERENCE_MODALITY, sidecar_filename, study_filename, truth_path
from strokelabel.phantom.anatomy import REGIONS
from strokelabel.phantom.cta import phase_times_s, simulate_cta
from strokelabel.phantom.ctp import derive_maps, simulate_ctp
from strokelabel.phantom.geometry import SIZES, Grid, grid_for
from strokelabel.phantom.mri import B_VALUE_S_MM2, simulate_mri
from strokelabel.phantom.patient import Patient, make_patient, nihss
from strokelabel.phantom.render import CORE, PENUMBRA, RCBF_CORE, TMAX_PENUMBRA_S, clot_mask, patient_pieces, reference_volumes_ml

KINDS = ("ctp", "mri", "cta")
# Bump when the model changes, so that data sets generated before are regenerated, not skipped.
PHANTOM_MODEL = 2  # 2: brighter SPIRAL false positives
GENERATOR = f"strokelabel.phantom {__version__} model {PHANTOM_MODEL}"
# The task label each kind's datastore label holds.
LABEL_TARGET = {"ctp": "corepenumbra", "mri": "lesion", "cta": "clot"}
TARGETS = {"ctp": ("corepenumbra", "lesion"), "mri": ("lesion", "corepenumbra"), "cta": ("clot", "corepenumbra", "lesion")}
# What each volume holds, written into the NIfTI header's description.
DESCRIPTIONS = {
    "ctp": "CT perfusion series, HU",
    "cbf": "CBF mL/100g/min (bcSVD)",
    "cbv": "CBV mL/100g",
    "mtt": "MTT s",
    "tmax": "Tmax s",
    "ttp": "TTP s from first frame",
    "mip": "MIP over time, HU",
    "ncct": "non-contrast CT, HU",
    "dwi": "DWI b=1000 s/mm2, a.u.",
    "adc": "ADC 10^-3 mm2/s",
    "flair": "FLAIR a.u.",
    "cta1": "CTA phase 1 (arterial), HU",
    "cta2": "CTA phase 2, HU",
    "cta3": "CTA phase 3, HU",
    "spiral": "SPIRAL-like clot probability 0..1",
    "atlas": "vascular atlas regions 1..15, 0 outside",
    "corepenumbra": "truth: core 1, penumbra 2",
    "lesion": "truth: ischemic core (infarct) 1",
    "clot": "truth: clot 1",
}
KIND_CODES = {kind: zlib.crc32(kind.encode()) for kind in KINDS}


def study_seed(seed: int, kind: str, index: int) -> int:
    """The seed of study ``index`` of ``kind`` in a data set generated with ``seed``."""
    return int(np.random.SeedSequence([int(seed), KIND_CODES[kind], int(index)]).generate_state(1)[0])


def write_nifti(path: Path, array: np.ndarray, grid: Grid, description: str = "", time_step_s: float | None = None) -> Path:
    """A NIfTI-1 with the grid's RAS affine (qform and sform, scanner), mm and s units, no scaling."""
    img = nib.Nifti1Image(array, grid.affine)
    header = img.header
    header.set_data_dtype(array.dtype)
    header.set_xyzt_units("mm", "sec")
    img.set_qform(grid.affine, code=1)
    img.set_sform(grid.affine, code=1)
    header["descrip"] = description[:79].encode()
    if time_step_s is not None:
        zooms = list(header.get_zooms())
        zooms[3] = time_step_s
        header.set_zooms(zooms)
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _study_dir(root: Path, subject: str, session: str) -> Path:
    return root / f"sub-{subject}" / f"ses-{session}"


def generate_study(
    root,
    kind: str,
    subject: str,
    seed: int,
    session: str = "01",
    size: str = "small",
    write_label: bool = False,
    *,
    write_ctp_series: bool | None = None,
    family: str = "ellipsoid",
) -> dict:
    """Write one phantom study of ``kind`` (ctp, mri, cta) for patient ``seed`` of anatomy
    ``family`` ("ellipsoid" or "template", see :data:`strokelabel.phantom.patient.FAMILIES`).

    Files go to ``root/sub-<subject>/ses-<session>/`` by the naming rule, the truth to
    ``root/derivatives/truth/...``; with ``write_label`` the task's truth label is copied to
    ``root/labels/final/<reference name>.nii.gz``. ``write_ctp_series`` (default: only at
    size small) writes the 4D CTP series; the maps are derived from it either way.

    Returns {"reference": Path, "modalities": {key: Path}, "truth": {target: Path}, "figures": {...}}.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown study kind {kind!r}; expected one of {KINDS}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {SIZES}")
    root = Path(root)
    started = time.perf_counter()
    patient = make_patient(seed, family)
    grid = grid_for(kind, size)
    pieces = patient_pieces(patient)
    noise_seed = (int(seed), KIND_CODES[kind])
    acquisition: dict = {}
    if kind == "ctp":
        series, truth = simulate_ctp(patient, grid, pieces, noise_seed)
        dt = patient.ctp_protocol["dt_s"]
        maps = derive_maps(series["ctp"], dt, grid.spacing_mm)
        images = {k: maps[k] for k in ("tmax", "cbf", "cbv", "mtt", "ttp", "mip", "ncct")}
        if write_ctp_series if write_ctp_series is not None else size == "small":
            images["ctp"] = series["ctp"]
        acquisition = {
            "dt_s": dt,
            "n_frames": patient.ctp_protocol["n_frames"],
            "times_s": [round(float(t), 3) for t in series["times_s"]],
            "baseline_frames": maps["n_baseline"],
            "aif_selected_hu": [round(float(v), 2) for v in maps["aif_hu"]],
            "deconvolution": "block-circulant SVD, oSVD (oscillation index 0.095), in-plane smoothing sigma 3 mm",
            "series_written": "ctp" in images,
        }
        del series
    elif kind == "mri":
        images, truth = simulate_mri(patient, grid, pieces, noise_seed)
        acquisition = {"b_value_s_mm2": B_VALUE_S_MM2}
    else:
        images, truth = simulate_cta(patient, grid, pieces, noise_seed)
        acquisition = {"phase_times_s": [round(t, 3) for t in phase_times_s(patient)]}

    labels = {
        "corepenumbra": truth["corepenumbra"],
        "lesion": (truth["corepenumbra"] == CORE).astype(np.uint8),
        "clot": clot_mask(truth["clot_fraction"]).astype(np.uint8),
    }
    figures = _figures(patient, grid, labels, truth["atlas"])
    clinical = {"nihss": figures["nihss"], "onset_to_imaging_min": figures["onset_to_imaging_min"]}

    folder = _study_dir(root, subject, session)
    folder.mkdir(parents=True, exist_ok=True)
    modalities = {}
    for key, array in images.items():
        path = folder / study_filename(subject, session, key)
        write_nifti(path, array, grid, DESCRIPTIONS[key], time_step_s=patient.ctp_protocol["dt_s"] if key == "ctp" else None)
        modalities[key] = path
    (folder / sidecar_filename(subject, session)).write_text(json.dumps(clinical, indent=2) + "\n")
    truths = {}
    for target in TARGETS[kind]:
        truths[target] = write_nifti(truth_path(root, subject, session, target), labels[target], grid, DESCRIPTIONS[target])
    reference = modalities[REFERENCE_MODALITY[kind]]
    label_path = _label_path(root, reference)
    if write_label:
        label_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(truths[LABEL_TARGET[kind]], label_path)

    truth_json = truth_path(root, subject, session, "truth")
    record = {
        "generator": GENERATOR,
        "subject": subject,
        "session": session,
        "kind": kind,
        "size": size,
        "seed": int(seed),
        "family": family,
        "grid": {"shape": list(grid.shape), "spacing_mm": list(grid.spacing_mm), "affine": grid.affine.tolist()},
        "mid_sagittal_plane": patient.pose.midsagittal_plane(grid),
        "figures": figures,
        "clinical": clinical,
        "definitions": {
            "core": f"parenchyma >= 50 % and CBF < {RCBF_CORE:.2f} x CBF at the mirror point about the true mid-sagittal plane (true values)",
            "penumbra": f"parenchyma >= 50 % and true Tmax > {TMAX_PENUMBRA_S:g} s and not core",
            "lesion": "the core (infarct)",
            "clot": "clot lumen fraction >= 0.3 (at least the voxel holding most clot)",
            "clot_region_flags": "flag i = 1 if atlas region i+1 holds clot voxels on this grid",
        },
        "acquisition": acquisition,
        "patient": patient.describe(),
        "files": {
            "reference": _relative(reference, root),
            "modalities": {k: _relative(p, root) for k, p in modalities.items()},
            "truth": {k: _relative(p, root) for k, p in truths.items()},
            "label": _relative(label_path, root) if write_label else None,
        },
        "generation_s": round(time.perf_counter() - started, 3),
    }
    truth_json.write_text(json.dumps(record, indent=1) + "\n")
    return {"reference": reference, "modalities": modalities, "truth": {**truths, "truth": truth_json}, "figures": figures}


def _figures(patient: Patient, grid: Grid, labels: dict, atlas: np.ndarray) -> dict:
    voxel_ml = grid.voxel_ml
    core_ml = float((labels["corepenumbra"] == CORE).sum() * voxel_ml)
    penumbra_ml = float((labels["corepenumbra"] == PENUMBRA).sum() * voxel_ml)
    clot = labels["clot"] > 0
    flags = [0] * len(REGIONS)
    for region in np.unique(atlas[clot]):
        if region > 0:
            flags[int(region) - 1] = 1
    reference = reference_volumes_ml(patient)
    isch = patient.ischemia
    return {
        "core_volume_ml": round(core_ml, 3),
        "penumbra_volume_ml": round(penumbra_ml, 3),
        "hypoperfused_volume_ml": round(core_ml + penumbra_ml, 3),
        "lesion_volume_ml": round(core_ml, 3),
        "mismatch_ratio": round((core_ml + penumbra_ml) / core_ml, 3) if core_ml > 0 else None,
        "clot_volume_ml": round(float(clot.sum() * voxel_ml), 5),
        "clot_voxels": int(clot.sum()),
        "clot_length_mm": round(isch.clot.length_mm, 2) if isch.clot else 0.0,
        "clot_region_flags": flags,
        "clot_regions": [REGIONS[i] for i, f in enumerate(flags) if f],
        "occluded_vessel": isch.clot.vessel if isch.clot else None,
        "occlusion": isch.scenario,
        "severity_class": isch.severity_class,
        "occluded_territory": isch.describe()["occluded_territory"],
        "reference_core_volume_ml": round(reference["core_ml"], 3),
        "reference_penumbra_volume_ml": round(reference["penumbra_ml"], 3),
        "nihss": nihss(reference["core_ml"], reference["penumbra_ml"], patient.nihss_offset),
        "onset_to_imaging_min": int(round(patient.onset_to_imaging_min)),
    }


def _relative(path: Path, root: Path) -> str:
    return str(Path(path).relative_to(root))


def _label_path(root: Path, reference: Path) -> Path:
    return root / "labels" / "final" / reference.name


def _existing(root: Path, kind: str, subject: str, session: str, seed: int, size: str, write_label: bool, family: str = "ellipsoid") -> dict | None:
    """The record of a study already generated with the same seed, size and family, or None."""
    path = truth_path(root, subject, session, "truth")
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if (record.get("generator"), record.get("kind"), record.get("seed"), record.get("size"), record.get("family", "ellipsoid")) != (GENERATOR, kind, int(seed), size, family):
        return None
    files = record["files"]
    paths = {k: root / p for k, p in files["modalities"].items()}
    truths = {k: root / p for k, p in files["truth"].items()}
    if not all(p.exists() for p in (*paths.values(), *truths.values())):
        return None
    reference = root / files["reference"]
    if write_label:
        label = _label_path(root, reference)
        if not label.exists():
            label.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(truths[LABEL_TARGET[kind]], label)
    return {"reference": reference, "modalities": paths, "truth": {**truths, "truth": path}, "figures": record["figures"]}


def generate_dataset(
    root,
    per_kind: int = 12,
    labelled_per_kind: int = 8,
    size: str = "small",
    seed: int = 0,
    kinds=KINDS,
    progress: Callable[..., None] | None = print,
    skip_existing: bool = True,
    write_ctp_series: bool | None = None,
    family: str = "ellipsoid",
) -> list[dict]:
    """``per_kind`` studies of each kind (subjects ``ctp0001``, ``mri0001``, ``cta0001``...); the first
    ``labelled_per_kind`` of each kind get their final label. Study seeds derive from (seed, kind, index).
    Studies already generated with the same seed, size and anatomy ``family`` are kept (``skip_existing``).
    """
    root = Path(root)
    progress = progress or (lambda *a, **k: None)
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown study kind(s) {unknown}; expected some of {KINDS}")
    results = []
    total = per_kind * len(kinds)
    done = 0
    for kind in kinds:
        for index in range(1, per_kind + 1):
            done += 1
            subject = f"{kind}{index:04d}"
            s = study_seed(seed, kind, index)
            labelled = index <= labelled_per_kind
            started = time.perf_counter()
            record = _existing(root, kind, subject, "01", s, size, labelled, family) if skip_existing else None
            if record is not None:
                progress(f"[{done}/{total}] sub-{subject} ({kind}) exists, skipped")
            else:
                record = generate_study(root, kind, subject, s, size=size, write_label=labelled, write_ctp_series=write_ctp_series, family=family)
                f = record["figures"]
                progress(
                    f"[{done}/{total}] sub-{subject} ({kind}, {f['occlusion']} {f['occluded_vessel']}): core {f['core_volume_ml']:.1f} mL, "
                    f"penumbra {f['penumbra_volume_ml']:.1f} mL, NIHSS {f['nihss']}{', labelled' if labelled else ''} "
                    f"in {time.perf_counter() - started:.1f} s"
                )
            results.append(record)
    return results
