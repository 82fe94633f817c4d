"""Loading one multimodal stroke study and checking it, the same way for every task.

Every task, every method and every script reads its inputs through :func:`load_study`, so every
task sees the same clean volumes and fails the same way on the same bad input (a
:class:`StrokeLabelError` naming the study, the modality and the problem: missing file, wrong
dimensionality, grids that disagree, an empty or absurd volume).

Real scans come in every convention; the loader turns them into one:

- **voxel order**: read in the closest RAS order (:mod:`strokelabel.orientation`); ``Study.affine``
  is the affine of that order, and :meth:`Study.to_native` brings a label back to the voxel order
  and grid the study is stored in;
- **values**: background fills, NaN, negative fit noise and CT padding (:mod:`strokelabel.cleaning`);
- **units**: ADC is always 10^-3 mm²/s after loading (10^-6 and mm²/s are detected from the
  brain's values; integers are read through scl_slope, and an integer ADC without one that reads
  as whole 10^-3 units is refused: its values were rounded away); perfusion maps are checked for
  the units a threshold needs;
- **raw scanner DWI**: a 4D diffusion series with its ``.bval`` is read as the trace image of its
  highest b-value (:mod:`strokelabel.diffusion`), b = 0 present or not; a trailing axis of 1 is dropped;
- **brain**: :attr:`Study.brain_mask`, one mask per study that every method uses (from the
  perfusion maps or MIP, from DWI/ADC with or without skull, from CT).

What was assumed or cleaned is in ``Study.notes``, for the result JSON.

Cost at clinical size (a 512 x 512 x 64 CTP study, six maps): each map is decoded once and copied
once, into C-ordered float32 in RAS order (:func:`strokelabel.cleaning.c_ordered_float32`), and
cleaned in place; no check makes a float64 copy of a volume; the brain mask's morphology runs on
the bounding box of its candidate voxels (:mod:`strokelabel.baselines.masks`).
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import nibabel as nib
import numpy as np

from strokelabel.cleaning import clean_volume
from strokelabel.computed_maps import MAPS_FROM_4D, maps_from_4d
from strokelabel.derived import cached_figures
from strokelabel.diffusion import dwi_from_series
from strokelabel.errors import StrokeLabelError
from strokelabel.naming import ami_filename, find_modalities, find_sidecar, parse_filename, study_filename, study_kind
from strokelabel.orientation import Reorientation, reorientation_of
from strokelabel.pictures import is_colour_picture

# Label values a saved label may hold, per study kind (DESIGN.md).
LABEL_VALUES = {"ctp": (0, 1, 2), "mri": (0, 1), "cta": (0, 1)}

# Modalities whose voxel grid must equal the reference volume's. FLAIR is deliberately
# absent: ISLES'22 ships it on its own grid, not co-registered.
GRID_BOUND = {"cbf", "cbv", "mtt", "tmax", "ttp", "mip", "ncct", "dwi", "adc", "cta1", "cta2", "cta3", "spiral", "atlas", "ctp", "cow-msk"}
PERFUSION_MAPS = ("cbf", "cbv", "mtt", "tmax", "ttp")

# Voxel spacing outside this range (mm) is not a clinical head scan.
SPACING_RANGE_MM = (0.05, 20.0)
GRID_TOLERANCE_MM = 1e-2


@dataclass(frozen=True)
class StudyDescriptor:
    """What the name of a study's reference file tells, parsed once: id, kind, layout and where its modalities are."""

    reference: Path
    study_id: str
    kind: str
    layout: str
    subject: str
    session: str
    modality: str
    modalities: dict
    sidecar: Path | None

    def expected_filename(self, modality: str) -> str:
        """The file a missing modality is expected in, as the study's layout names it."""
        if self.layout == "ami":
            return ami_filename(modality)
        return study_filename(self.subject, self.session, modality)

    @property
    def region_base(self) -> int:
        """Atlas numbering: 1 = regions 1..15 with 0 outside (DESIGN.md), 0 = the AMI layout's 0..14."""
        return 0 if self.layout == "ami" else 1


def describe_study(reference: str | Path) -> StudyDescriptor:
    """Parse a study reference file name and find its modalities (the naming rule, once)."""
    reference = Path(reference)
    parsed = parse_filename(str(reference))
    if parsed is None:
        raise StrokeLabelError(f"{reference.name} does not follow the naming rule sub-<id>_ses-<n>_<suffix>.nii.gz")
    if not reference.exists():
        raise StrokeLabelError(f"the study image {reference.name} does not exist", study=parsed.study_id)
    return StudyDescriptor(
        reference=reference,
        study_id=parsed.study_id,
        kind=study_kind(reference),
        layout=parsed.layout,
        subject=parsed.subject,
        session=parsed.session,
        modality=parsed.modality,
        modalities=find_modalities(reference),
        sidecar=find_sidecar(reference),
    )


@dataclass
class Study:
    """The arrays of one study on its reference grid in RAS voxel order, with the facts every task needs."""

    study_id: str
    kind: str
    reference: Path
    affine: np.ndarray  # of the RAS-ordered arrays
    images: dict[str, np.ndarray]
    paths: dict[str, Path]
    clinical: dict = field(default_factory=dict)
    region_base: int = 1
    reorientation: Reorientation | None = None
    notes: dict = field(default_factory=dict)
    # Voxels that held a fill or NaN in any grid-bound map (None: none did).
    no_value: np.ndarray | None = None
    # Affines of modalities on their own grid (FLAIR), in their RAS order.
    own_affines: dict = field(default_factory=dict)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return voxel_spacing_mm(self.affine)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.images[next(iter(self.images))].shape[:3]

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def native_affine(self) -> np.ndarray:
        return self.affine if self.reorientation is None else self.reorientation.native_affine

    def to_native(self, array) -> np.ndarray:
        """An array on this study's RAS grid -> the study's stored voxel order (what is written beside it)."""
        array = np.asarray(array)
        return array if self.reorientation is None else self.reorientation.to_native(array)

    def to_canonical(self, array) -> np.ndarray:
        """An array in the study's stored voxel order (a saved label) -> the RAS order of ``images``."""
        array = np.asarray(array)
        return array if self.reorientation is None else self.reorientation.to_canonical(array)

    @cached_property
    def midsagittal_plane(self):
        """The head's mid-sagittal plane (:func:`strokelabel.midsagittal.find_midsagittal_plane`), found
        once per study from its main image inside the brain (DWI, CBF, CTA phase 1): every mirror
        comparison of every method uses this one.

        Kept in the app's cache (:func:`strokelabel.derived.cached_figures`) for a study loaded from its
        files: the search costs 1-2 CPU-s on a 128 x 128 x 24 DWI and every infer, training epoch,
        validation, publish decision (twice: candidate and model in use) and scoring run of the study
        asked for it again. The entry is keyed by every file the study was loaded from (the mask reads
        them), the brain-extraction mode, and the code of the loader, the mask and the search."""
        from strokelabel.midsagittal import MidSagittalPlane, find_midsagittal_plane

        def search() -> dict:
            key = {"mri": "dwi", "ctp": "cbf", "cta": "cta1"}[self.kind]
            image = self.images[key] if key in self.images else next(iter(self.images.values()))
            plane = find_midsagittal_plane(np.where(self.brain_mask, image, 0).astype(np.float32), self.spacing_mm)
            return {"offset_vox": plane.offset_vox, "angle_deg": plane.angle_deg, "spacing_mm": list(plane.spacing_mm),
                    "shape": list(plane.shape), "score": plane.score}

        sources = self._plane_sources()
        found = cached_figures("midsagittal_plane", _plane_version(), sources, search) if sources else search()
        return MidSagittalPlane(offset_vox=float(found["offset_vox"]), angle_deg=float(found["angle_deg"]),
                                spacing_mm=tuple(float(v) for v in found["spacing_mm"]), shape=tuple(int(v) for v in found["shape"]),
                                score=float(found["score"]))

    def _plane_sources(self) -> list[Path]:
        """The files the study's arrays were read from (a DWI series' b-values too), when every array came from
        one; otherwise none (a study built in memory is never cached)."""
        from strokelabel.diffusion import bval_path

        if not self.paths or set(self.paths) != set(self.images):
            return []
        files = [Path(self.paths[m]) for m in sorted(self.paths)]
        if "dwi" in self.paths and bval_path(self.paths["dwi"]).exists():
            files.append(bval_path(self.paths["dwi"]))
        return files if all(f.is_file() for f in files) else []

    @cached_property
    def brain_mask(self) -> np.ndarray:
        """The study's brain (bool, RAS grid), one for every method: see :func:`study_brain_mask`."""
        return study_brain_mask(self)


def _plane_version() -> str:
    """What a cached mid-sagittal plane depends on besides the study's files: the brain-extraction mode and
    the code that reads, cleans and masks the study and searches the plane."""
    from strokelabel.brain_extraction import extraction_mode
    from strokelabel.derived import code_fingerprint

    return f"{extraction_mode()}/" + code_fingerprint("strokelabel.study", "strokelabel.cleaning", "strokelabel.diffusion", "strokelabel.orientation",
                                         "strokelabel.units", "strokelabel.baselines.masks", "strokelabel.brain_extraction",
                                         "strokelabel.midsagittal")


def study_brain_mask(study) -> np.ndarray:
    """The brain of a loaded study (:class:`strokelabel.study.Study`), one mask for every method.

    CT perfusion: from the CTP MIP when the study has one (HU), else from the maps (voxels where a
    map holds a value, fills and NaN excluded). MRI: from DWI and ADC when skull-stripped, else the
    brain-extraction model's mask (:func:`strokelabel.brain_extraction.mri_brain_mask`). CTA: from
    phase 1 (HU window of brain tissue).
    """
    from strokelabel.baselines.masks import brain_mask_from_ct, brain_mask_from_mip, brain_mask_from_perfusion
    from strokelabel.brain_extraction import mri_brain_mask

    images = study.images
    if study.kind == "ctp":
        if "mip" in images:
            return brain_mask_from_mip(images["mip"])
        maps = [images[m] for m in ("cbf", "cbv", "mtt", "tmax") if m in images]
        if not maps:
            raise StrokeLabelError("no perfusion map loaded to find the brain in", study=study.study_id)
        mask = brain_mask_from_perfusion(*maps)
        return mask if study.no_value is None else mask & ~study.no_value
    if study.kind == "mri":
        # skull-stripped: the threshold mask; skull on: deepbet, cached (strokelabel.brain_extraction)
        return mri_brain_mask(study)
    if study.kind == "cta":
        return brain_mask_from_ct(images["cta1"])
    raise ValueError(f"unknown study kind {study.kind!r}")


def voxel_spacing_mm(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def check_dimensions(shape, modality: str, study: str, ndim: int = 3) -> None:
    """A head volume of ``ndim`` dimensions (a trailing axis of 1 is allowed), at least 2 voxels per spatial axis."""
    shape = tuple(shape)
    if len(shape) == ndim + 1 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != ndim:
        raise StrokeLabelError(f"{modality} has {len(shape)} dimensions {shape}; expected {ndim}", study=study)
    if min(shape[:3]) < 2:
        raise StrokeLabelError(f"{modality} has shape {shape}: too small to be a head scan", study=study)


def check_spacing(affine: np.ndarray, modality: str, study: str) -> None:
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise StrokeLabelError(f"{modality} has a non-finite affine (NaN or infinite in its header)", study=study)
    spacing = voxel_spacing_mm(affine)
    low, high = SPACING_RANGE_MM
    if not all(low <= s <= high for s in spacing):
        raise StrokeLabelError(
            f"{modality} has voxel spacing {tuple(round(s, 3) for s in spacing)} mm, outside {low}-{high} mm "
            "(a header in other units, or a broken affine)",
            study=study,
        )


def check_same_grid(shape, affine, ref_shape, ref_affine, modality: str, reference: str, study: str) -> None:
    if tuple(shape[:3]) != tuple(ref_shape[:3]):
        raise StrokeLabelError(
            f"{modality} has shape {tuple(shape[:3])} but {reference} has {tuple(ref_shape[:3])}: the grids do not match",
            study=study,
        )
    if not np.allclose(affine, ref_affine, atol=GRID_TOLERANCE_MM):
        spacing, ref_spacing = voxel_spacing_mm(affine), voxel_spacing_mm(ref_affine)
        raise StrokeLabelError(
            f"{modality} and {reference} have different affines (spacing {np.round(spacing, 3).tolist()} vs "
            f"{np.round(ref_spacing, 3).tolist()} mm, origin {np.round(affine[:3, 3], 2).tolist()} vs "
            f"{np.round(ref_affine[:3, 3], 2).tolist()}): the grids do not match; resample to the reference first",
            study=study,
        )


def check_label(values, affine, ref_shape, ref_affine, allowed, study: str) -> None:
    """A label to be saved: on the study's stored grid, and only the task's label values."""
    values = np.asarray(values)
    if values.ndim == 4 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 3:
        raise StrokeLabelError(f"the label has {values.ndim} dimensions {values.shape}; expected one 3D label map", study=study)
    check_same_grid(values.shape, affine, ref_shape, ref_affine, "the label", "the study image", study)
    if not np.all(np.isfinite(values)):
        raise StrokeLabelError("the label contains NaN or infinite values", study=study)
    found = np.unique(values)
    unexpected = sorted(set(found.tolist()) - set(allowed))
    if unexpected:
        raise StrokeLabelError(
            f"the label holds values {unexpected[:10]} that this study's task does not use (allowed: {list(allowed)})",
            study=study,
        )


def load_label(study: Study, path: str | Path, allowed: tuple | None = None) -> np.ndarray:
    """A saved label of ``study`` as uint8 in the RAS order of ``study.images``.

    Checked to lie on the study's stored grid and to hold only ``allowed`` values (default: the
    study kind's label values; a data set's own label files, e.g. AMI clots 0/1/2, pass theirs).
    """
    img = nib.load(str(path))
    values = np.asanyarray(img.dataobj)
    native_shape = study.reorientation.native_shape if study.reorientation else study.shape
    check_label(values, img.affine, native_shape, study.native_affine, allowed or LABEL_VALUES[study.kind], study.study_id)
    if values.ndim == 4:
        values = values[..., 0]
    return study.to_canonical(np.asarray(values, dtype=np.uint8))


def load_study(reference: str | Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> Study:
    """Load the modalities a task needs from the study that ``reference`` belongs to.

    ``required``/``optional`` are modality keys (``cbf``, ``tmax``, ``dwi``, ``cta1``...). The 4D
    CTP series (``ctp``) keeps its time axis last; every other modality must be 3D. All grid-bound
    modalities must share the reference's stored grid. See the module docstring for what is cleaned.
    """
    descriptor = describe_study(reference)
    study_id, found = descriptor.study_id, dict(descriptor.modalities)
    _add_from_pacs(descriptor, found, (*required, *optional))
    derived_notes = _add_maps_from_series(descriptor, found, (*required, *optional))
    missing = [m for m in required if m not in found]
    if missing:
        names = ", ".join(descriptor.expected_filename(m) for m in missing)
        raise StrokeLabelError(f"missing modality {', '.join(missing)}: expected {names} beside {descriptor.reference.name}", study=study_id)

    ref_img = _open(descriptor.reference, descriptor.modality, study_id)
    check_spacing(ref_img.affine, descriptor.modality, study_id)
    reorientation = reorientation_of(ref_img)
    images: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    notes: dict = dict(derived_notes)
    own_affines: dict = {}
    integer_stored: set[str] = set()
    no_value = None
    if not reorientation.is_canonical:
        notes["orientation"] = f"stored {reorientation.native_axcodes}, read as RAS; labels are written back in {reorientation.native_axcodes}"
    for modality in (*required, *[m for m in optional if m in found]):
        if modality in images:
            continue
        img = ref_img if found[modality] == descriptor.reference else _open(found[modality], modality, study_id)
        # A DWI exported as its whole diffusion series (4D, b-values in the .bval beside it) is read as
        # its highest-b trace image (strokelabel.diffusion); a trailing axis of 1 is no series.
        dwi_series = modality == "dwi" and len(img.shape) == 4 and img.shape[-1] > 1
        check_dimensions(img.shape[:3] if dwi_series else img.shape, modality, study_id, ndim=4 if modality == "ctp" else 3)
        if modality in GRID_BOUND:
            check_same_grid(img.shape, img.affine, ref_img.shape, ref_img.affine, modality, descriptor.modality, study_id)
            own = reorientation
        else:
            check_spacing(img.affine, modality, study_id)
            own = reorientation_of(img)
            own_affines[modality] = own.canonical_affine
        raw = np.asanyarray(img.dataobj)
        if dwi_series:
            raw, notes["dwi_series"] = dwi_from_series(raw, found[modality], study_id)
        elif raw.ndim == (5 if modality == "ctp" else 4):
            raw = raw[..., 0]
        if _stored_as_plain_integers(img):
            integer_stored.add(modality)
        # Cleaning copies the voxels once, into C-ordered float32: handed them in RAS order (a view),
        # that one copy is also the reorientation.
        clean = clean_volume(own.canonical_view(raw), modality, study_id)
        del raw
        images[modality] = clean.values
        paths[modality] = found[modality]
        if clean.notes:
            notes.setdefault("values", {})[modality] = clean.notes
        if clean.no_value is not None and modality in GRID_BOUND and modality != "ctp":
            no_value = clean.no_value if no_value is None else (no_value | clean.no_value)

    study = Study(
        study_id=study_id,
        kind=descriptor.kind,
        reference=descriptor.reference,
        affine=reorientation.canonical_affine,
        images=images,
        paths=paths,
        clinical=_read_clinical(descriptor.sidecar, study_id),
        region_base=descriptor.region_base,
        reorientation=reorientation,
        notes=notes,
        no_value=no_value,
        own_affines=own_affines,
    )
    _check_units(study, integer_stored)
    return study


def available_modalities(reference: str | Path) -> set[str]:
    """The modalities a task can read for the study of ``reference``: its files, and for a PACS study
    the series the PACS holds that are not fetched yet (a choice made on the files alone would take a
    PACS study for one without ADC until the ADC happened to be fetched)."""
    from strokelabel.pacs import fetchable_modalities

    return set(find_modalities(reference)) | fetchable_modalities(reference)


def _add_from_pacs(descriptor: StudyDescriptor, found: dict, wanted: tuple[str, ...]) -> None:
    """A study fetched from a PACS (:mod:`strokelabel.pacs`): the series of the modalities a task
    wants that are not on disk yet are fetched now, and only those."""
    from strokelabel.pacs import SOURCE_FILE, fetch_modalities

    missing = [m for m in wanted if m not in found]
    if missing and (descriptor.reference.parent / SOURCE_FILE).exists():
        found.update(fetch_modalities(descriptor.reference, missing))


def _add_maps_from_series(descriptor: StudyDescriptor, found: dict, wanted: tuple[str, ...]) -> dict:
    """A study whose reference is its raw 4D CTP series: the perfusion maps a task wants are computed
    from the series (or reused, :mod:`strokelabel.computed_maps`) and added to ``found``. Returns the
    notes for the result JSON (``maps_from_4d``: AIF/VOF, motion, warnings)."""
    if descriptor.modality != "ctp" or not any(m in MAPS_FROM_4D and m not in found for m in wanted):
        return {}
    header = _open(descriptor.reference, "ctp", descriptor.study_id)
    check_dimensions(header.shape, "ctp", descriptor.study_id, ndim=4)
    check_spacing(header.affine, "ctp", descriptor.study_id)
    made = maps_from_4d(descriptor.reference, descriptor.study_id)
    for name, path in made["files"].items():
        found.setdefault(name, path)
    return {"maps_from_4d": {**made["info"], "reused": made["reused"], "files": sorted(Path(p).name for p in made["files"].values())}}


def _open(path: Path, modality: str, study_id: str):
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises several types for unreadable or truncated files
        reason = str(e).replace(str(path), Path(path).name)  # never a server path in an answer
        raise StrokeLabelError(f"{modality} ({Path(path).name}) could not be read as NIfTI: {reason}", study=study_id) from e
    if is_colour_picture(img):
        raise StrokeLabelError(
            f"{modality} ({Path(path).name}) is a coloured picture (RGB, e.g. a vendor's secondary-capture screenshot), not "
            "values: its colours cannot be read as measurements; export the quantitative map instead",
            study=study_id,
        )
    return img


# The most voxels a file sent to the server may hold (2^28: a 512 x 512 x 1024 volume, or a 4D CTP of
# 512 x 512 x 32 x 32); a header claiming more is refused before any voxel is read.
MAX_VOXELS = int(os.environ.get("STROKELABEL_MAX_VOXELS", 2**28))
_CHUNK_BYTES = 1 << 22


def check_nifti_file(path: str | Path, what: str, study: str, ndims: tuple[int, ...] = (3,)) -> None:
    """A NIfTI file sent to the server (a study or a label), checked with bounded memory before anything
    reads its voxels: a readable header, ``ndims`` dimensions, at most :data:`MAX_VOXELS`, numeric values,
    a finite affine and positive spacing, and every voxel the header promises present in the file (a
    truncated or corrupt gzip stream is found by reading it through in chunks, never whole; bytes past
    the promised ones are never read, so a gzip bomb costs at most what its header declares)."""
    img = _open(Path(path), what, study)
    shape = tuple(int(n) for n in img.shape)
    if len(shape) not in ndims and not (len(shape) == max(ndims) + 1 and shape[-1] == 1):
        raise StrokeLabelError(f"{what} has {len(shape)} dimensions {shape}; expected {' or '.join(map(str, ndims))}", study=study)
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > MAX_VOXELS:
        raise StrokeLabelError(f"{what} claims {voxels:,} voxels {shape}, more than the {MAX_VOXELS:,} this server reads (STROKELABEL_MAX_VOXELS)", study=study)
    check_dimensions(shape[:3], what, study)
    dtype = img.get_data_dtype()
    if dtype.kind not in "biuf":
        raise StrokeLabelError(f"{what} stores {dtype} values; expected integers or floating point", study=study)
    with nib.openers.ImageOpener(str(path), "rb") as stream:  # nibabel silently takes abs() of negative voxel sizes
        zooms = type(img.header).from_fileobj(stream, check=False)["pixdim"][1:4]
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise StrokeLabelError(f"{what} has voxel sizes {tuple(float(z) for z in zooms)} in its header; expected positive numbers", study=study)
    check_spacing(img.affine, what, study)
    _check_all_voxels_present(img, voxels * dtype.itemsize, what, study)


def _check_all_voxels_present(img, data_bytes: int, what: str, study: str) -> None:
    # nibabel's opener (plain or gzip) reads the file lazily; reading it through in chunks finds a short
    # file or a broken gzip stream without holding the volume.
    offset = int(img.dataobj.offset)
    try:
        with nib.openers.ImageOpener(img.file_map["image"].filename, "rb") as stream:
            stream.seek(offset)
            remaining = data_bytes
            while remaining > 0:
                chunk = stream.read(min(_CHUNK_BYTES, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
            # Up to the end of the stream (a gzip file's checksum is checked there), but no further than a little
            # past the promised voxels: more than that is not the file the header describes.
            if remaining == 0 and len(stream.read(_CHUNK_BYTES)) == _CHUNK_BYTES:
                raise StrokeLabelError(f"{what} holds more data than the {data_bytes:,} bytes of voxels its header promises", study=study)
    except (OSError, EOFError, ValueError, zlib.error) as e:  # gzip's own errors are OSError/EOFError
        raise StrokeLabelError(f"{what} could not be read through: {e}", study=study) from e
    if remaining > 0:
        raise StrokeLabelError(f"{what} is truncated: {data_bytes - remaining:,} of the {data_bytes:,} bytes of voxels its header promises", study=study)


def _stored_as_plain_integers(img) -> bool:
    """Integer voxels without a scale factor (scl_slope absent, 0 or 1): the values are the integers."""
    if img.get_data_dtype().kind not in "iu":
        return False
    slope = getattr(img.dataobj, "slope", 1.0)
    return slope is None or not np.isfinite(slope) or float(slope) in (0.0, 1.0)


def _check_units(study: Study, integer_stored: set[str] = frozenset()) -> None:
    """ADC to 10^-3 mm²/s; perfusion maps in the units their thresholds need (else a clear error)."""
    from strokelabel.units import check_perfusion_map, detect_adc_unit

    if "adc" in study.images:
        unit = detect_adc_unit(study.images["adc"], mask=study.brain_mask & (study.images["adc"] > 0), study=study.study_id)
        if "adc" in integer_stored and unit.factor_to_mm2_s > 1e-6:
            # Brain ADC is 0.6-1.0 x 10^-3 mm²/s: as whole numbers of 10^-3 (or of mm²/s) it is 0, 1 or 2, no
            # measurement left. Integer ADC exports are in 10^-6 mm²/s, or carry a scale factor (scl_slope).
            raise StrokeLabelError(
                f"ADC is stored as whole numbers without a scale factor and reads as {unit.unit} (brain median "
                f"{unit.brain_median:g}): its values were rounded away; export it in 10^-6 mm²/s or with scl_slope",
                study=study.study_id,
            )
        study.notes["adc_unit_assumption"] = unit.assumption
        factor = unit.factor_to_mm2_s / 1e-3
        if factor != 1.0:
            study.images["adc"] = (study.images["adc"] * np.float32(factor)).astype(np.float32)
    maps = [m for m in PERFUSION_MAPS if m in study.images]
    if maps:
        brain = study.brain_mask
        for m in maps:
            values = study.images[m]
            # Non-zero voxels only: ventricles filled into the brain mask hold no perfusion value.
            study.notes.setdefault("units", {})[m] = check_perfusion_map(values, m, mask=brain & (values != 0), study=study.study_id)


def _read_clinical(sidecar: Path | None, study_id: str) -> dict:
    if sidecar is None:
        return {}
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as e:
        raise StrokeLabelError(f"{sidecar.name} is not valid JSON ({e})", study=study_id) from e


# Clinical values a request may carry (they override the study's sidecar), with their plausible range.
CLINICAL_RANGES = {"nihss": (0, 42), "onset_to_imaging_min": (0, 60 * 24 * 14)}


def clinical_from_request(request: dict, study_id: str) -> dict:
    """The clinical values of an infer request (``nihss``, ``onset_to_imaging_min``), checked: a value
    that is not a number in its range is a clear error, never silently ignored."""
    values = {}
    for key, (low, high) in CLINICAL_RANGES.items():
        raw = request.get(key)
        if raw in (None, ""):
            continue
        try:
            value = float(raw[0] if isinstance(raw, (list, tuple)) else raw)
        except (TypeError, ValueError):
            raise StrokeLabelError(f"{key}={raw!r} is not a number", study=study_id) from None
        if not (low <= value <= high):
            raise StrokeLabelError(f"{key}={value:g} is outside {low}-{high}", study=study_id)
        values[key] = value
    return values
