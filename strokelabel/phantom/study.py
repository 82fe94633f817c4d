"""Writing phantom studies to disk: BIDS-named NIfTI files, the clinical sidecar, the ground truth
under ``derivatives/truth`` and, for labelled studies, the datastore's final label.

Each study has an appearance (:mod:`strokelabel.phantom.appearance`: ``fixed``, today's look,
or ``random``) and on-disk conventions (:mod:`strokelabel.phantom.conventions`: default RAS
float32 without fills, a dict, or ``random``); both are recorded in the truth JSON, and the
truth labels are always written on the grid and orientation of the study's images.
"""

from __future__ import annotations

import json
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

from strokelabel import __version__
from strokelabel.naming import REFERENCE_MODALITY, sidecar_filename, study_filename, truth_path
from strokelabel.phantom import conventions as conv
from strokelabel.phantom.anatomy import REGIONS
from strokelabel.phantom.appearance import draw_appearance, is_random, step_values, value
from strokelabel.phantom.cta import phase_times_s, simulate_cta
from strokelabel.phantom.ctp import derive_maps, simulate_ctp, vendor_maps
from strokelabel.phantom.geometry import SIZES, Grid, grid_for
from strokelabel.phantom.mri import B_VALUE_S_MM2, acquisition_grid, simulate_mri
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
    "mimics": "truth: MRI mimics (label 0), codes in the truth JSON",
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


def write_stored(path: Path, key: str, array: np.ndarray, geometry: conv.StoredGeometry, conventions: dict, description: str = "",
                 foreground: np.ndarray | None = None, no_flow: np.ndarray | None = None, time_step_s: float | None = None) -> Path:
    """A volume given on the RAS study grid, written with the study's ``conventions``: unit,
    oblique resampling and orientation (``geometry``), fill outside ``foreground``, dtype."""
    is_label = key in conv.LABELS
    order = 0 if is_label else 1
    values = conv.in_unit(key, array, conventions)
    if not is_label and not np.issubdtype(values.dtype, np.integer):
        values = values.astype(np.float64 if conventions["dtype"] == "float64" else np.float32)
    stored = geometry.apply(values, order=order, cval=-1024.0 if key in conv.HU_IMAGES else 0.0)
    stored_fg = geometry.apply(foreground.astype(np.uint8), order=0).astype(bool) if foreground is not None else None
    stored_no_flow = geometry.apply(no_flow.astype(np.uint8), order=0).astype(bool) if no_flow is not None else None
    stored = conv.filled(key, stored, stored_fg, conventions, stored_no_flow)
    data, slope = conv.encode(key, stored, conventions)
    img = nib.Nifti1Image(data, geometry.affine)
    header = img.header
    header.set_data_dtype(data.dtype)
    header.set_xyzt_units("mm", "sec")
    img.set_qform(geometry.affine, code=1)
    img.set_sform(geometry.affine, code=1)
    if key == "adc":
        description = f"ADC 10^{'-6' if conventions['adc_unit'] == '1e-6' else '-3'} mm2/s"
    header["descrip"] = description[:79].encode()
    if time_step_s is not None:
        zooms = list(header.get_zooms())
        zooms[3] = time_step_s
        header.set_zooms(zooms)
    header.set_slope_inter(slope if slope is not None else 1.0, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _study_dir(root: Path, subject: str, session: str) -> Path:
    return root / f"sub-{subject}" / f"ses-{session}"


@dataclass
class SimulatedStudy:
    """One study in memory, on its RAS grid, before it is written: what :func:`generate_study` writes."""

    kind: str
    seed: int
    size: str
    patient: Patient
    grid: Grid
    look: dict  # the drawn appearance
    stored: dict  # the resolved conventions
    images: dict  # modality -> array on the RAS grid
    labels: dict  # target -> label on the RAS grid
    truth: dict  # simulator's truth arrays (atlas, foreground, record, ...)
    foreground: dict  # modality -> bool mask: where the image is not background (head, or the brain)
    no_flow: np.ndarray | None  # MTT voxels with CBF ~ 0 (for the mtt_no_flow fill)
    acquisition: dict
    figures: dict
    clinical: dict


def simulate_study(kind: str, seed: int, size: str = "small", *, write_ctp_series: bool | None = None, appearance="fixed",
                   conventions=None, family: str = "ellipsoid") -> SimulatedStudy:
    """Simulate one study of ``kind`` for patient ``seed`` in memory (see :func:`generate_study`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown study kind {kind!r}; expected one of {KINDS}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {SIZES}")
    look = draw_appearance(seed, kind, appearance)
    stored = conv.draw_conventions(seed, kind, conventions)
    patient = make_patient(seed, family)
    grid = grid_for(kind, size)
    if kind == "mri":
        grid = acquisition_grid(grid, look, size)
    pieces = patient_pieces(patient)
    noise_seed = (int(seed), KIND_CODES[kind])
    acquisition: dict = {}
    foreground: dict = {}
    no_flow = None
    if kind == "ctp":
        noise_hu = value(look, "ctp", "series_noise")["hu"] if is_random(look) else None
        series, truth = simulate_ctp(patient, grid, pieces, noise_seed, noise_hu=noise_hu, pial=step_values(look, "ctp", "pial_vessels"))
        dt = patient.ctp_protocol["dt_s"]
        if is_random(look):
            maps = vendor_maps(series["ctp"], dt, grid, truth["icv"], look)
            d = value(look, "ctp", "deconvolution")
            method = (f"block-circulant SVD{', oSVD (oscillation index 0.095)' if d['oscillation'] else ''}, threshold "
                      f"{d['svd_threshold']:.3f}, in-plane smoothing sigma {d['smooth_mm']:.2f} mm (vendor-like, see appearance)")
        else:
            maps = derive_maps(series["ctp"], dt, grid.spacing_mm)
            method = "block-circulant SVD, oSVD (oscillation index 0.095), in-plane smoothing sigma 3 mm"
        images = {k: maps[k] for k in ("tmax", "cbf", "cbv", "mtt", "ttp", "mip", "ncct")}
        if write_ctp_series if write_ctp_series is not None else size == "small":
            images["ctp"] = series["ctp"]
        foreground = {k: maps["mask"] for k in ("tmax", "cbf", "cbv", "mtt", "ttp")}
        acquisition = {
            "dt_s": dt,
            "n_frames": patient.ctp_protocol["n_frames"],
            "times_s": [round(float(t), 3) for t in series["times_s"]],
            "baseline_frames": maps["n_baseline"],
            "aif_selected_hu": [round(float(v), 2) for v in maps["aif_hu"]],
            "deconvolution": method,
            "series_written": "ctp" in images,
        }
        del series
    elif kind == "mri":
        images, truth = simulate_mri(patient, grid, pieces, noise_seed, look)
        acquisition = {"b_value_s_mm2": B_VALUE_S_MM2}
        foreground = truth.get("foreground") or {k: truth["head"] for k in ("dwi", "adc", "flair")}
    else:
        images, truth = simulate_cta(patient, grid, pieces, noise_seed, look)
        timing = value(look, "cta", "timing") if is_random(look) else {"offset_s": 0.0, "spacing_s": 8.0}
        acquisition = {"phase_times_s": [round(t, 3) for t in phase_times_s(patient, timing["offset_s"], timing["spacing_s"])]}
    if stored["negative_noise"] > 0:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), KIND_CODES[kind], 0xE6]))
        images = conv.vendor_negative_noise(images, foreground, stored["negative_noise"], rng)
    if kind == "ctp" and (stored.get("fill") or {}).get("mtt_no_flow") is not None:
        no_flow = maps["mask"] & (images["cbf"] < conv.MTT_NO_FLOW_CBF)

    labels = {
        "corepenumbra": truth["corepenumbra"],
        "lesion": (truth["corepenumbra"] == CORE).astype(np.uint8),
        "clot": clot_mask(truth["clot_fraction"]).astype(np.uint8),
    }
    figures = _figures(patient, grid, labels, truth["atlas"])
    clinical = {"nihss": figures["nihss"], "onset_to_imaging_min": figures["onset_to_imaging_min"]}
    if "mimics" in truth:
        labels["mimics"] = truth["mimics"]
    return SimulatedStudy(kind, int(seed), size, patient, grid, look, stored, images, labels, truth, foreground, no_flow, acquisition,
                          figures, clinical)


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
    appearance="fixed",
    conventions=None,
    family: str = "ellipsoid",
) -> dict:
    """Write one phantom study of ``kind`` (ctp, mri, cta) for patient ``seed`` of anatomy
    ``family`` ("ellipsoid" or "template", see :data:`strokelabel.phantom.patient.FAMILIES`).

    Files go to ``root/sub-<subject>/ses-<session>/`` by the naming rule, the truth to
    ``root/derivatives/truth/...``; with ``write_label`` the task's truth label is copied to
    ``root/labels/final/<reference name>.nii.gz``. ``write_ctp_series`` (default: only at
    size small) writes the 4D CTP series; the maps are derived from it either way.
    ``appearance``: ``"fixed"`` (today's look), ``"random"`` or a dict
    (:func:`strokelabel.phantom.appearance.draw_appearance`); ``conventions``: None (RAS float32,
    no fills), ``"random"`` or a dict (:func:`strokelabel.phantom.conventions.draw_conventions`).
    A random MRI also gets the truth ``mimics`` (codes in the truth JSON, all label 0).

    Returns {"reference": Path, "modalities": {key: Path}, "truth": {target: Path}, "figures": {...}}.
    """
    root = Path(root)
    started = time.perf_counter()
    study = simulate_study(kind, seed, size, write_ctp_series=write_ctp_series, appearance=appearance, conventions=conventions,
                           family=family)
    patient, grid, look, stored = study.patient, study.grid, study.look, study.stored
    images, labels, truth, foreground, no_flow = study.images, study.labels, study.truth, study.foreground, study.no_flow
    figures, clinical, acquisition = study.figures, study.clinical, study.acquisition
    targets = TARGETS[kind] + (("mimics",) if "mimics" in labels else ())

    folder = _study_dir(root, subject, session)
    folder.mkdir(parents=True, exist_ok=True)
    geometry = None if stored["default"] else conv.StoredGeometry(grid.affine, grid.shape, stored)

    def write(path, key, array, time_step_s=None):
        if geometry is None:  # today's files, byte for byte
            return write_nifti(path, array, grid, DESCRIPTIONS[key], time_step_s=time_step_s)
        return write_stored(path, key, array, geometry, stored, DESCRIPTIONS[key], foreground.get(key), no_flow if key == "mtt" else None,
                            time_step_s=time_step_s)

    modalities = {}
    for key, array in images.items():
        path = folder / study_filename(subject, session, key)
        write(path, key, array, time_step_s=patient.ctp_protocol["dt_s"] if key == "ctp" else None)
        modalities[key] = path
    (folder / sidecar_filename(subject, session)).write_text(json.dumps(clinical, indent=2) + "\n")
    truths = {}
    for target in targets:
        truths[target] = write(truth_path(root, subject, session, target), target, labels[target])
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
        "appearance": _appearance_record(look, truth),
        "appearance_spec": _spec(appearance),
        "conventions": {k: stored[k] for k in (*conv.DEFAULT, "default")},
        "conventions_spec": _spec(conventions),
        "stored_grid": None if geometry is None else {
            "note": "the files' voxel grid; 'grid' and the mid-sagittal plane's voxel figures are of the RAS grid before storage",
            "shape": list(geometry.stored_shape),
            "affine": geometry.affine.tolist(),
            "axcodes": "".join(nib.aff2axcodes(geometry.affine)),
        },
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


def _spec(spec):
    """A JSON form of an appearance or conventions argument, to tell data sets apart."""
    return json.loads(json.dumps(spec, sort_keys=True)) if spec is not None else None


def _appearance_record(look: dict, truth: dict) -> dict:
    record = {"setting": look["setting"]}
    if is_random(look):
        record["steps"] = {k: (None if v is None else {n: (round(x, 4) if isinstance(x, float) else x) for n, x in v.items() if n != "stream"})
                           for k, v in look["steps"].items()}
        record["off"] = look.get("off", [])
        record["on"] = look.get("on", [])
        if "record" in truth:
            record["drawn"] = truth["record"]
        if "mimics" in truth:
            from strokelabel.phantom.mri import MIMIC_CODES

            record["mimic_codes"] = MIMIC_CODES
    return record


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


def _existing(root: Path, kind: str, subject: str, session: str, seed: int, size: str, write_label: bool,
              appearance="fixed", conventions=None, family: str = "ellipsoid") -> dict | None:
    """The record of a study already generated with the same seed, size, family, appearance and conventions, or None."""
    path = truth_path(root, subject, session, "truth")
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if (record.get("generator"), record.get("kind"), record.get("seed"), record.get("size"), record.get("family", "ellipsoid")) != (
            GENERATOR, kind, int(seed), size, family):
        return None
    if (record.get("appearance_spec", "fixed"), record.get("conventions_spec")) != (_spec(appearance), _spec(conventions)):
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
    appearance="fixed",
    conventions=None,
    family: str = "ellipsoid",
) -> list[dict]:
    """``per_kind`` studies of each kind (subjects ``ctp0001``, ``mri0001``, ``cta0001``...); the first
    ``labelled_per_kind`` of each kind get their final label. Study seeds derive from (seed, kind, index).
    Studies already generated with the same seed, size, appearance and conventions are kept
    (``skip_existing``). ``appearance`` and ``conventions`` as in :func:`generate_study` (each study
    draws its own from its seed when ``"random"``); ``family`` the anatomy (``ellipsoid`` or ``template``).
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
            record = _existing(root, kind, subject, "01", s, size, labelled, appearance, conventions, family) if skip_existing else None
            if record is not None:
                progress(f"[{done}/{total}] sub-{subject} ({kind}) exists, skipped")
            else:
                record = generate_study(root, kind, subject, s, size=size, write_label=labelled, write_ctp_series=write_ctp_series,
                                        appearance=appearance, conventions=conventions, family=family)
                f = record["figures"]
                progress(
                    f"[{done}/{total}] sub-{subject} ({kind}, {f['occlusion']} {f['occluded_vessel']}): core {f['core_volume_ml']:.1f} mL, "
                    f"penumbra {f['penumbra_volume_ml']:.1f} mL, NIHSS {f['nihss']}{', labelled' if labelled else ''} "
                    f"in {time.perf_counter() - started:.1f} s"
                )
            results.append(record)
    return results
