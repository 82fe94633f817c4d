"""Loading one multimodal stroke study and checking it, the same way for every task.

Every task reads its inputs through :func:`load_study`, so every task fails the same way on
the same bad input: a :class:`StrokeLabelError` naming the study, the modality and the problem
(missing file, wrong dimensionality, grids that disagree, NaN, empty or absurd volume).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from strokelabel.errors import StrokeLabelError
from strokelabel.units import check_finite, check_not_empty
from strokelabel.naming import ami_filename, find_modalities, find_sidecar, parse_filename, study_filename, study_kind

# Label values a saved label may hold, per study kind (DESIGN.md).
LABEL_VALUES = {"ctp": (0, 1, 2), "mri": (0, 1), "cta": (0, 1)}

# Modalities whose voxel grid must equal the reference volume's. FLAIR is deliberately
# absent: ISLES'22 ships it on its own grid, not co-registered.
GRID_BOUND = {"cbf", "cbv", "mtt", "tmax", "ttp", "mip", "ncct", "dwi", "adc", "cta1", "cta2", "cta3", "spiral", "atlas", "ctp"}

# Voxel spacing outside this range (mm) is not a clinical head scan.
SPACING_RANGE_MM = (0.05, 20.0)
GRID_TOLERANCE_MM = 1e-2


@dataclass
class Study:
    """The arrays of one study on its reference grid, with the facts every task needs."""

    study_id: str
    kind: str
    reference: Path
    affine: np.ndarray
    images: dict[str, np.ndarray]
    paths: dict[str, Path]
    clinical: dict = field(default_factory=dict)
    # Atlas numbering: 1 = regions 1..15 with 0 outside (DESIGN.md), 0 = the AMI layout's 0..14.
    region_base: int = 1

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return voxel_spacing_mm(self.affine)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.images[next(iter(self.images))].shape[:3]

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0


def voxel_spacing_mm(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def check_volume(array: np.ndarray, modality: str, study: str, ndim: int = 3) -> np.ndarray:
    """Dimensionality, finiteness and emptiness of one volume; returns it as float32."""
    if array.ndim == ndim + 1 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != ndim:
        raise StrokeLabelError(f"{modality} has {array.ndim} dimensions {array.shape}; expected {ndim}", study=study)
    if min(array.shape[:3]) < 2:
        raise StrokeLabelError(f"{modality} has shape {array.shape}: too small to be a head scan", study=study)
    array = np.asarray(array, dtype=np.float32)
    check_finite(array, modality, study)
    check_not_empty(array, modality, study)
    return array


def check_spacing(affine: np.ndarray, modality: str, study: str) -> None:
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
    """A label to be saved: on the study's grid, and only the task's label values."""
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


def load_study(reference: str | Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> Study:
    """Load the modalities a task needs from the study that ``reference`` belongs to.

    ``required``/``optional`` are modality keys (``cbf``, ``tmax``, ``dwi``, ``cta1``...). The 4D
    CTP series (``ctp``) keeps its time axis last; every other modality must be 3D. All grid-bound
    modalities must share the reference's grid.
    """
    reference = Path(reference)
    parsed = parse_filename(str(reference))
    if parsed is None:
        raise StrokeLabelError(f"{reference.name} does not follow the naming rule sub-<id>_ses-<n>_<suffix>.nii.gz")
    study_id = parsed.study_id
    if not reference.exists():
        raise StrokeLabelError(f"the study image {reference} does not exist", study=study_id)
    found = find_modalities(reference)
    missing = [m for m in required if m not in found]
    if missing:
        names = ", ".join(ami_filename(m) if parsed.layout == "ami" else study_filename(parsed.subject, parsed.session, m) for m in missing)
        raise StrokeLabelError(
            f"missing modality {', '.join(missing)}: expected {names} beside {reference.name}", study=study_id
        )

    ref_img = nib.load(str(reference))
    check_spacing(ref_img.affine, parsed.modality, study_id)
    images: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    for modality in (*required, *[m for m in optional if m in found]):
        if modality in images:
            continue
        img = ref_img if found[modality] == reference else nib.load(str(found[modality]))
        if modality in GRID_BOUND:
            check_same_grid(img.shape, img.affine, ref_img.shape, ref_img.affine, modality, parsed.modality, study_id)
        else:
            check_spacing(img.affine, modality, study_id)
        images[modality] = check_volume(np.asanyarray(img.dataobj), modality, study_id, ndim=4 if modality == "ctp" else 3)
        paths[modality] = found[modality]

    return Study(
        study_id=study_id,
        kind=study_kind(reference),
        reference=reference,
        affine=np.asarray(ref_img.affine, dtype=np.float64),
        images=images,
        paths=paths,
        clinical=_read_clinical(reference, study_id),
        region_base=0 if parsed.layout == "ami" else 1,
    )


def _read_clinical(reference: Path, study_id: str) -> dict:
    sidecar = find_sidecar(reference)
    if sidecar is None:
        return {}
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as e:
        raise StrokeLabelError(f"{sidecar.name} is not valid JSON ({e})", study=study_id) from e
