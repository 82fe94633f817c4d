"""The one DICOM module: stroke volumes written as DICOM series (true geometry, rescaled values,
one series per map or phase, the 4D CT perfusion as one multi-temporal series) and DICOM series
read back as volumes.

Why by hand: MONAI Label converts labels to DICOM-SEG (``nifti_to_dicom_seg``) but has no writer
for image series, and SimpleITK's series writer neither keeps one study and frame of reference
across series nor writes the temporal attributes a CT perfusion series needs.

Geometry: arrays are (X, Y, Z[, T]) with a RAS affine (nibabel's convention); DICOM is LPS. A
volume is first put in the voxel order scanners store axial images in (the closest LPS order: each
row runs to the patient's left, each column to posterior, slices from feet to head), so viewers
that show pixels as stored (OHIF) show it the usual radiological way, patient's right on the
image's left and anterior up. Each slice k is then stored with columns along array axis 0 and rows
along axis 1: ImageOrientationPatient = (LPS direction of axis 0, LPS direction of axis 1),
PixelSpacing = (spacing of axis 1, spacing of axis 0), ImagePositionPatient = LPS(affine @ (0, 0, k)).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset, validate_file_meta
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
INT16_MAX = 32000


@dataclass
class SeriesSpec:
    """What a written series says about itself: how a PACS, a viewer and the series rules see it."""

    description: str  # SeriesDescription, e.g. "CBF" or "CT Perfusion 4D"
    modality: str = "CT"  # CT or MR
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL")
    units: str = "HU"  # written as RescaleType (and in the description where it is not HU)
    number: int = 1
    extra: dict = field(default_factory=dict)  # further attributes, keyword -> value


@dataclass
class StudySpec:
    patient_id: str
    patient_name: str = "Phantom^Stroke"
    study_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    study_date: str = "20260101"
    study_time: str = "080000"
    accession: str = ""
    study_description: str = "Acute stroke work-up"


def _scaling(values: np.ndarray, units: str) -> tuple[float, float]:
    """Slope and intercept that store ``values`` in int16 losslessly for HU, else to 1/32000 of the range."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 1.0, 0.0
    if units == "HU" and np.allclose(finite, np.round(finite)) and finite.min() >= -32768 and finite.max() <= 32767:
        return 1.0, 0.0
    low, high = float(finite.min()), float(finite.max())
    intercept = 0.0 if low >= 0 else low
    slope = max((high - intercept) / INT16_MAX, 1e-6)
    return slope, intercept


def _time_plus(start: str, seconds: float) -> str:
    t = dt.datetime.strptime(start, "%H%M%S") + dt.timedelta(seconds=float(seconds))
    return t.strftime("%H%M%S.%f")


def write_series(values: np.ndarray, affine: np.ndarray, folder: str | Path, study: StudySpec, series: SeriesSpec,
                 times_s: Sequence[float] | None = None) -> list[Path]:
    """Write ``values`` (X, Y, Z, or X, Y, Z, T with ``times_s``) as one DICOM series in ``folder``; returns the files."""
    values = np.asarray(values, dtype=np.float64)
    frames = values[..., None] if values.ndim == 3 else values
    if frames.ndim != 4 or (values.ndim == 4 and (times_s is None or len(times_s) != frames.shape[3])):
        raise ValueError(f"write_series takes (X, Y, Z) or (X, Y, Z, T) with T frame times; got {values.shape}")
    frames, affine = scanner_order(frames, np.asarray(affine, dtype=np.float64))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row_cosine = RAS_TO_LPS @ affine[:3, 0] / spacing[0]
    column_cosine = RAS_TO_LPS @ affine[:3, 1] / spacing[1]
    slope, intercept = _scaling(frames, series.units)
    series_uid = generate_uid()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    n_z, n_t = frames.shape[2], frames.shape[3]
    for t in range(n_t):
        for k in range(n_z):
            ds = _slice_dataset(study, series, series_uid)
            position = RAS_TO_LPS @ (affine @ np.array([0.0, 0.0, k, 1.0]))[:3]
            ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_cosine, *column_cosine)]
            ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
            ds.SliceThickness = f"{spacing[2]:.6f}"
            ds.SpacingBetweenSlices = f"{spacing[2]:.6f}"
            ds.InstanceNumber = t * n_z + k + 1
            pixels = np.nan_to_num(frames[:, :, k, t].T, nan=intercept)  # rows along axis 1, columns along axis 0
            stored = np.clip(np.rint((pixels - intercept) / slope), -32768, 32767).astype(np.int16)
            ds.Rows, ds.Columns = stored.shape
            ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
            ds.PixelData = stored.tobytes()
            if times_s is not None:
                ds.TemporalPositionIdentifier = t + 1
                ds.NumberOfTemporalPositions = n_t
                ds.TriggerTime = f"{1000.0 * float(times_s[t]):.1f}"  # ms from the first frame
                ds.AcquisitionTime = _time_plus(study.study_time, float(times_s[t]))
                ds.ContentTime = ds.AcquisitionTime
            path = folder / f"{series.number:03d}_{t:03d}_{k:04d}.dcm"
            ds.save_as(str(path), write_like_original=False)
            written.append(path)
    return written


def scanner_order(values: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (first three axes spatial) and its affine in the closest LPS voxel order (module docstring)."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    transform = ornt_transform(io_orientation(affine), axcodes2ornt(("L", "P", "S")))
    return apply_orientation(values, transform), affine @ inv_ornt_aff(transform, values.shape[:3])


def file_meta(sop_class: str, sop_instance_uid: str) -> FileMetaDataset:
    """The whole File Meta Information group (group length, version, implementation class UID, explicit VR little
    endian): a dataset is then one a strict PACS accepts however it is serialised; a STOW-RS client (dicomweb_client)
    writes the file meta as it is, without adding what is missing."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    validate_file_meta(meta, enforce_standard=True)  # adds the version and the implementation class UID and name
    meta.FileMetaInformationGroupLength = 0  # pydicom writes the true length in its place
    return meta


# Type 2 attributes (present, empty when unknown) of the modules every object written here carries (Patient, General
# Study, Frame of Reference, General Equipment): a phantom or a PACS study may lack them, and a strict PACS (dciodvfy,
# DICOM PS3.3) refuses an object without them.
TYPE_2_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName",
                     "StudyID", "AccessionNumber", "Manufacturer")


def complete_type_2(ds: pydicom.Dataset, *keywords: str) -> pydicom.Dataset:
    """``ds`` with each Type 2 attribute of :data:`TYPE_2_ATTRIBUTES` and ``keywords`` present (empty when unknown)."""
    for keyword in (*TYPE_2_ATTRIBUTES, *keywords):
        if keyword not in ds:
            setattr(ds, keyword, None)
    return ds


def _slice_dataset(study: StudySpec, series: SeriesSpec, series_uid: str) -> FileDataset:
    sop_class = MR_IMAGE_STORAGE if series.modality == "MR" else CT_IMAGE_STORAGE
    meta = file_meta(sop_class, generate_uid())
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName = study.patient_id, study.patient_name
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.study_uid, series_uid
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.StudyDate = ds.SeriesDate = study.study_date
    ds.StudyTime = ds.SeriesTime = study.study_time
    ds.StudyID, ds.AccessionNumber, ds.StudyDescription = "1", study.accession, study.study_description
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = series.modality, series.number, series.description
    ds.ImageType = list(series.image_type)
    ds.RescaleType = series.units[:16]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.Manufacturer = "StrokeLabel phantom"
    # Head first supine, as a head CT or MR is acquired; the head is not a paired body part, so no Laterality (Type 2C);
    # nothing else about the acquisition is known (Type 2, empty).
    ds.PatientPosition, ds.BodyPartExamined = "HFS", "HEAD"
    if series.modality == "MR":  # MR Image module, Type 1: "RM" (research mode) is DICOM's term for a sequence it does not name
        ds.ScanningSequence, ds.SequenceVariant = "RM", "NONE"
    acquisition = ("KVP", "AcquisitionNumber") if series.modality == "CT" else (
        "ScanOptions", "MRAcquisitionType", "RepetitionTime", "EchoTime", "EchoTrainLength")
    complete_type_2(ds, "PositionReferenceIndicator", *acquisition)
    for keyword, value in series.extra.items():
        setattr(ds, keyword, value)
    return ds


def read_series(files: Sequence[str | Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A DICOM series as (values float32 (X, Y, Z[, T]), RAS affine, frame times in s or None).

    Instances are grouped into frames by TemporalPositionIdentifier (else TriggerTime, else
    AcquisitionTime), and slices ordered along the slice normal; rescale slope/intercept applied."""
    datasets = [pydicom.dcmread(str(f)) for f in files]
    if not datasets:
        raise ValueError("no DICOM instance to read")
    first = datasets[0]
    orientation = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)

    def frame_key(ds):
        for keyword in ("TemporalPositionIdentifier", "TriggerTime", "AcquisitionTime"):
            if keyword in ds and ds.get(keyword) not in (None, ""):
                return float(ds.get(keyword)) if keyword != "AcquisitionTime" else _seconds(ds.AcquisitionTime)
        return 0.0

    keys = sorted({frame_key(ds) for ds in datasets})
    by_frame = {key: [] for key in keys}
    for ds in datasets:
        by_frame[frame_key(ds)].append(ds)
    counts = {len(v) for v in by_frame.values()}
    if len(counts) != 1:
        raise ValueError(f"the series' frames hold different numbers of slices {sorted(counts)}")
    volumes, times = [], []
    for key in keys:
        slices = sorted(by_frame[key], key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)))
        stack = [s.pixel_array.astype(np.float32) * float(s.get("RescaleSlope", 1)) + float(s.get("RescaleIntercept", 0)) for s in slices]
        volumes.append(np.stack([p.T for p in stack], axis=-1))
        times.append(_frame_time_s(slices[0]))
    spacing_rows, spacing_columns = (float(v) for v in first.PixelSpacing)
    slices = sorted(by_frame[keys[0]], key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)))
    origin = np.asarray(slices[0].ImagePositionPatient, dtype=np.float64)
    if len(slices) > 1:
        step = (np.asarray(slices[-1].ImagePositionPatient, float) - origin) / (len(slices) - 1)
    else:
        step = normal * float(first.get("SliceThickness", 1.0))
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_cosine * spacing_columns, column_cosine * spacing_rows, step, origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    if len(volumes) == 1:
        return volumes[0], affine, None
    frame_times = np.asarray(times, dtype=np.float64)
    return np.stack(volumes, axis=-1), affine, frame_times - frame_times[0]


def _seconds(hhmmss: str) -> float:
    text = str(hhmmss)
    whole, _, fraction = text.partition(".")
    whole = whole.ljust(6, "0")
    return int(whole[:2]) * 3600 + int(whole[2:4]) * 60 + int(whole[4:6]) + (float("0." + fraction) if fraction else 0.0)


def _frame_time_s(ds) -> float:
    if "TriggerTime" in ds and ds.TriggerTime not in (None, ""):
        return float(ds.TriggerTime) / 1000.0
    if "AcquisitionTime" in ds and ds.AcquisitionTime:
        return _seconds(ds.AcquisitionTime)
    return float(ds.get("TemporalPositionIdentifier", 0))


# How each modality of a study is written to a PACS: series description, DICOM modality,
# ImageType and units, as vendors commonly label them (the default series rules read them back).
SERIES_OF_MODALITY = {
    "cbf": ("CBF perfusion map", "CT", ("DERIVED", "SECONDARY", "PERFUSION", "CBF"), "mL/100g/min"),
    "cbv": ("CBV perfusion map", "CT", ("DERIVED", "SECONDARY", "PERFUSION", "CBV"), "mL/100g"),
    "mtt": ("MTT perfusion map", "CT", ("DERIVED", "SECONDARY", "PERFUSION", "MTT"), "s"),
    "tmax": ("Tmax perfusion map", "CT", ("DERIVED", "SECONDARY", "PERFUSION", "TMAX"), "s"),
    "ttp": ("TTP perfusion map", "CT", ("DERIVED", "SECONDARY", "PERFUSION", "TTP"), "s"),
    "mip": ("MIP perfusion", "CT", ("DERIVED", "SECONDARY", "PERFUSION", "MIP"), "HU"),
    "ncct": ("Head non-contrast", "CT", ("ORIGINAL", "PRIMARY", "AXIAL"), "HU"),
    "ctp": ("CT Perfusion 4D", "CT", ("ORIGINAL", "PRIMARY", "AXIAL", "CT_SOM5 PERF"), "HU"),
    "cta1": ("CTA phase 1 arterial", "CT", ("ORIGINAL", "PRIMARY", "AXIAL"), "HU"),
    "cta2": ("CTA phase 2 peak venous", "CT", ("ORIGINAL", "PRIMARY", "AXIAL"), "HU"),
    "cta3": ("CTA phase 3 late venous", "CT", ("ORIGINAL", "PRIMARY", "AXIAL"), "HU"),
    "dwi": ("DWI b1000 TRACE", "MR", ("DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"), "US"),
    "adc": ("ADC apparent diffusion coefficient", "MR", ("DERIVED", "PRIMARY", "DIFFUSION", "ADC"), "10^-6 mm2/s"),
    "flair": ("FLAIR axial", "MR", ("ORIGINAL", "PRIMARY", "M"), "US"),
}


def write_study(reference: str | Path, out_dir: str | Path, patient_id: str | None = None, only: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """Write every modality of the NIfTI study of ``reference`` (the naming rule) as one DICOM study in
    ``out_dir``, one series per map or phase (``only``: these modalities); returns {modality: files}. ADC is written in 10^-6 mm²/s
    (integers, as scanners store it); the 4D CTP's frame times come from its header's time step."""
    import nibabel as nib

    from strokelabel.naming import find_modalities, parse_filename

    parsed = parse_filename(str(reference))
    study = StudySpec(patient_id=patient_id or parsed.subject, patient_name=f"Phantom^{parsed.subject}")
    written = {}
    for number, (modality, path) in enumerate(sorted(find_modalities(reference).items()), start=1):
        if modality not in SERIES_OF_MODALITY or (only is not None and modality not in only):
            continue
        description, dicom_modality, image_type, units = SERIES_OF_MODALITY[modality]
        img = nib.load(str(path))
        values = np.asarray(img.dataobj, dtype=np.float32)
        times = None
        if modality == "ctp":
            step = float(img.header.get_zooms()[3]) or 1.0
            times = [step * t for t in range(values.shape[3])]
        if modality == "adc":
            values = values * (1000.0 if float(np.nanmax(values)) < 10 else 1.0)  # 10^-3 -> 10^-6 mm²/s
        spec = SeriesSpec(description, dicom_modality, image_type, units, number)
        written[modality] = write_series(values, img.affine, Path(out_dir) / modality, study, spec, times_s=times)
    return written


# ---- DICOM-SEG ---------------------------------------------------------------------------------------
# Segments by code as well as by name, in SNOMED CT. The ischemic penumbra has no concept of its own: it is coded as
# what it is, ischemic tissue (52674009 Ischemia) beside the core's infarct, and named "penumbra". (A local coding
# scheme, "99...", is legal with a Coding Scheme Identification Sequence, but a strict validator, dciodvfy, still
# flags a designator it does not know.)
MORPHOLOGICALLY_ALTERED = {"CodeValue": "49755003", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Morphologically Altered Structure"}
SEGMENT_CODES = {
    "core": {"CodeValue": "55641003", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Infarct"},
    "lesion": {"CodeValue": "55641003", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Infarct"},
    "penumbra": {"CodeValue": "52674009", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Ischemia"},
    "clot": {"CodeValue": "396339007", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Thrombus"},
}
SEGMENT_COLOURS = {"core": (220, 30, 30), "penumbra": (40, 200, 60), "lesion": (230, 120, 20), "clot": (60, 120, 255)}
ALGORITHM_TYPES = ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL")


def write_seg(label_path: str | Path, source_dir: str | Path, segments: dict[int, str], algorithm_type: str,
              algorithm_name: str = "StrokeLabel", series_description: str = "StrokeLabel segmentation",
              creator: str = "StrokeLabel^", provenance: str | None = None) -> pydicom.Dataset:
    """A DICOM-SEG of ``label_path`` (NIfTI on the source series' grid) referencing the source series whose
    headers are in ``source_dir``; ``segments``: label value -> name (core, penumbra, lesion, clot);
    ``algorithm_type`` AUTOMATIC for AI output, MANUAL or SEMIAUTOMATIC for a clinician's correction; ``creator``: the
    Content Creator's Name as a DICOM person name (the software for AI output)."""
    import pydicom_seg
    import SimpleITK as sitk

    if algorithm_type not in ALGORITHM_TYPES:
        raise ValueError(f"SegmentAlgorithmType must be one of {ALGORITHM_TYPES}, not {algorithm_type!r}")
    attributes = []
    # Segments are numbered 1, 2... in the SEG whatever their label values (PS3.3 C.8.20.2: from one, by one; a core_penumbra
    # answer without core has only value 2); a reader matches segments by name (read_seg).
    numbered = dict(enumerate(sorted(segments.items()), start=1))
    for number, (value, name) in numbered.items():
        attribute = {
            "labelID": number, "SegmentLabel": name, "SegmentDescription": name, "SegmentAlgorithmType": algorithm_type,
            "SegmentedPropertyCategoryCodeSequence": MORPHOLOGICALLY_ALTERED,
            "SegmentedPropertyTypeCodeSequence": SEGMENT_CODES[name],
            "recommendedDisplayRGBValue": list(SEGMENT_COLOURS[name]),
        }
        if algorithm_type != "MANUAL":
            attribute["SegmentAlgorithmName"] = algorithm_name[:64]
        attributes.append(attribute)
    template = pydicom_seg.template.from_dcmqi_metainfo({
        "ContentCreatorName": creator, "SeriesDescription": series_description[:64], "SeriesNumber": "300", "InstanceNumber": "1",
        "segmentAttributes": [attributes], "ContentLabel": PROVENANCE_CONTENT_LABELS.get(provenance or "", "SEGMENTATION"),
        "ContentDescription": f"{algorithm_type} ({provenance})"[:64] if provenance else algorithm_type[:64],
        "ClinicalTrialSeriesID": "1", "ClinicalTrialTimePointID": "1", "BodyPartExamined": "HEAD",
    })
    writer = pydicom_seg.MultiClassWriter(template=template, inplane_cropping=False, skip_empty_slices=False, skip_missing_segment=False)
    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in sorted(Path(source_dir).glob("*.dcm"))]
    if not sources:
        raise ValueError(f"no source DICOM headers in {source_dir}")
    label = sitk.ReadImage(str(label_path))
    values = sitk.GetArrayFromImage(label)
    numbers = np.zeros(values.shape, np.uint16)
    for number, (value, _) in numbered.items():
        numbers[values == value] = number
    mask = sitk.GetImageFromArray(numbers)
    mask.CopyInformation(label)
    seg = writer.write(mask, sources)
    for segment in seg.SegmentSequence:  # pydicom-seg leaves it empty; a MANUAL segment has no algorithm (Type 1C)
        if segment.SegmentAlgorithmType == "MANUAL" and "SegmentAlgorithmName" in segment:
            del segment.SegmentAlgorithmName
    return complete_type_2(seg, "PositionReferenceIndicator")


def seg_algorithm_type(dataset: pydicom.Dataset) -> str:
    """The SEG's SegmentAlgorithmType (the least automatic of its segments: a corrected SEG counts as corrected)."""
    kinds = {str(s.get("SegmentAlgorithmType", "")) for s in dataset.get("SegmentSequence", [])}
    return next((k for k in ("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC") if k in kinds), "")


# Provenance of a label, one vocabulary everywhere (README, datastore, SEG, trainers, federated job): the answer as
# computed (AI, never trains), saved by a person without an edit (approved) or edited by a person (corrected).
PROVENANCES = ("AI", "approved", "corrected")
# In a SEG a person saved, ContentLabel says which (viewers mark every exported segment MANUAL whether edited or not).
PROVENANCE_CONTENT_LABELS = {"approved": "APPROVED", "corrected": "CORRECTED"}


def seg_provenance(dataset: pydicom.Dataset) -> str:
    """AI for a SEG of automatic segments; else approved when its ContentLabel says APPROVED, otherwise corrected
    (a SEG exported by hand from a viewer that does not say is taken as a person's correction)."""
    if seg_algorithm_type(dataset) == "AUTOMATIC":
        return "AI"
    return "approved" if str(dataset.get("ContentLabel", "")).strip().upper() == PROVENANCE_CONTENT_LABELS["approved"] else "corrected"


def read_seg(dataset: pydicom.Dataset, names_to_values: dict[str, int]):
    """A DICOM-SEG as a SimpleITK label image, each segment given the value of its name (``names_to_values``)."""
    import pydicom_seg
    import SimpleITK as sitk

    result = pydicom_seg.MultiClassReader().read(dataset)
    values = sitk.GetArrayFromImage(result.image)
    out = np.zeros_like(values, dtype=np.uint8)
    for number, segment in result.segment_infos.items():
        name = str(segment.get("SegmentLabel", "")).lower()
        if name in names_to_values:
            out[values == number] = names_to_values[name]
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(result.image)
    return image


# ---- identity of what the app stores -------------------------------------------------------------------
def answer_identity(*parts) -> str:
    """A fingerprint of an answer: its study, task, method and model, and its content (arrays by shape and bytes)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype.str}{part.shape}".encode())
            part = np.ascontiguousarray(part).tobytes()
        digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def identify(dataset: pydicom.Dataset, identity: str) -> pydicom.Dataset:
    """``dataset`` with a Series and a SOP Instance UID derived from ``identity`` (:func:`answer_identity`): the same
    answer is the same object, so storing it again adds nothing to a PACS (which keeps one instance per SOP Instance
    UID), even when two runs store it at once."""
    dataset.SeriesInstanceUID = generate_uid(entropy_srcs=[identity, "series"])
    dataset.SOPInstanceUID = generate_uid(entropy_srcs=[identity, "instance"])
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


# ---- Secondary Capture -------------------------------------------------------------------------------
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
# Attributes copied from the study's own images so that the picture files under the same patient and study.
STUDY_ATTRIBUTES = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
                    "StudyID", "AccessionNumber", "StudyDescription", "ReferringPhysicianName")


def secondary_capture(png_path: str | Path, study_header: pydicom.Dataset, description: str) -> pydicom.Dataset:
    """The summary picture (PNG) as a DICOM Secondary Capture in the study of ``study_header`` (its own series),
    as RAPID stores its summaries: how a PACS or OHIF user sees the figures."""
    from PIL import Image

    rgb = np.asarray(Image.open(str(png_path)).convert("RGB"), dtype=np.uint8)
    meta = file_meta(SECONDARY_CAPTURE_STORAGE, generate_uid())
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False  # as the file meta says: written as is by any writer (STOW-RS too)
    for keyword in STUDY_ATTRIBUTES:
        if keyword in study_header:
            setattr(ds, keyword, study_header.get(keyword))
    now = dt.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality, ds.ConversionType, ds.ImageType = "OT", "WSD", ["DERIVED", "SECONDARY"]
    ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = description[:64], 301, 1
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SeriesDate, ds.SeriesTime = ds.ContentDate, ds.ContentTime
    ds.Manufacturer, ds.BurnedInAnnotation = "StrokeLabel", "YES"  # study id and figures are drawn into the picture
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    # A picture of the head (not a paired body part: no Laterality), its rows and columns in no patient direction (Type 2C: empty).
    ds.BodyPartExamined = study_header.get("BodyPartExamined") or "HEAD"
    return complete_type_2(ds, "PatientOrientation")
