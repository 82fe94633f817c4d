"""Every object the app writes (the converter's CT, MR and 4D CT perfusion series, the SEG, the summary Secondary
Capture) passes dciodvfy, the reference IOD validator, without an error, serialised as STOW-RS sends it; the SEG and
the Secondary Capture without a warning either."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from strokelabel.dicom import SERIES_OF_MODALITY, SeriesSpec, StudySpec, secondary_capture, write_seg, write_series
from tests.dciodvfy import needs_dciodvfy, validate

pytestmark = needs_dciodvfy

# Warnings the converter keeps on purpose: it writes series as vendors do, with their ImageType values (PERFUSION, CBF,
# DIFFUSION...) and map units as RescaleType, and MR maps with a rescale (ADC in 10^-6 mm²/s as scanners store it):
# the series rules are tested on such series. Anything else is a regression.
ACCEPTED_CONVERTER_WARNINGS = ("Unrecognized defined term", "Non-identity Modality LUT Module", "Attribute is not present in standard DICOM IOD",
                               "this is a Standard Extended SOP Class")
AFFINE = np.diag([-2.0, 2.0, 5.0, 1.0])


def head(shape=(16, 14, 4)) -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 80, shape).astype(np.float32)


@pytest.mark.parametrize("modality", sorted(SERIES_OF_MODALITY))
def test_each_converted_series_has_no_error(modality, tmp_path):
    description, dicom_modality, image_type, units = SERIES_OF_MODALITY[modality]
    spec = SeriesSpec(description, dicom_modality, image_type, units)
    if modality == "ctp":
        files = write_series(head((16, 14, 4, 3)), AFFINE, tmp_path, StudySpec("P1"), spec, times_s=[0.0, 1.5, 3.0])
    else:
        files = write_series(head(), AFFINE, tmp_path, StudySpec("P1"), spec)
    for path in (files[0], files[-1]):
        errors, warnings = validate(pydicom.dcmread(str(path)))
        assert not errors, f"{modality}: {errors}"
        assert all(any(w in line for w in ACCEPTED_CONVERTER_WARNINGS) for line in warnings), f"{modality}: {warnings}"


@pytest.fixture
def source_series(tmp_path):
    """A CT perfusion map series whose study header lacks what phantoms lack (birth date, sex, referring physician)."""
    folder = tmp_path / "tmax"
    write_series(head(), AFFINE, folder, StudySpec("P1"), SeriesSpec("Tmax perfusion map", units="s"))
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(str(path))
        for keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName"):
            delattr(ds, keyword)
        ds.save_as(str(path))
    return folder


@pytest.mark.parametrize("algorithm_type,segments", [("AUTOMATIC", {1: "core", 2: "penumbra"}), ("MANUAL", {1: "lesion"}),
                                                     ("SEMIAUTOMATIC", {1: "clot"}), ("AUTOMATIC", {2: "penumbra"})])
def test_a_seg_passes_without_an_error_or_a_warning(source_series, tmp_path, algorithm_type, segments):
    """Also a core_penumbra answer with penumbra only (label value 2, no core): its one segment is number 1 in the SEG."""
    from strokelabel.dicom import read_seg

    label = np.zeros((16, 14, 4), np.uint8)
    label[3:7, 3:7, 1:3] = min(segments)
    label[9:12, 8:12, 1:3] = max(segments)
    path = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(label, AFFINE), str(path))
    seg = write_seg(path, source_series, segments, algorithm_type)
    assert validate(seg) == ([], [])
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == list(range(1, len(segments) + 1))
    import SimpleITK as sitk

    read = sitk.GetArrayFromImage(read_seg(seg, {name: value for value, name in segments.items()}))
    for value in segments:  # back at the label's own values, by name
        assert (read == value).sum() == (label == value).sum() > 0
    assert str(seg.ContentCreatorName) == "StrokeLabel^"  # a person name, family^given
    assert all(s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT" for s in seg.SegmentSequence)


def test_the_summary_secondary_capture_passes_without_an_error_or_a_warning(source_series, tmp_path):
    png = tmp_path / "summary.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(png)
    header = pydicom.dcmread(str(next(source_series.glob("*.dcm"))), stop_before_pixels=True)
    sc = secondary_capture(png, header, "StrokeLabel core_penumbra summary")
    assert validate(sc) == ([], [])
    for keyword in ("FileMetaInformationGroupLength", "FileMetaInformationVersion", "ImplementationClassUID"):
        assert keyword in sc.file_meta  # as a STOW-RS client sends it, the file meta is complete


def test_an_answer_stored_again_is_the_same_object_and_another_answer_is_not(source_series, tmp_path):
    """UIDs derived from the answer (study, task, method, model, content): a PACS keeps one instance per SOP Instance UID,
    so the same answer stored twice is one object; any difference in content or model is a new series."""
    from strokelabel.dicom import answer_identity, identify

    png = tmp_path / "summary.png"
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(png)
    header = pydicom.dcmread(str(next(source_series.glob("*.dcm"))), stop_before_pixels=True)
    pixels = np.asarray(Image.open(png))
    first, again = (identify(secondary_capture(png, header, "s"), answer_identity("1.2.3", "core_penumbra", pixels)) for _ in range(2))
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == (again.SeriesInstanceUID, again.SOPInstanceUID)
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID and first.SeriesInstanceUID != first.SOPInstanceUID
    others = [answer_identity("1.2.3", "core_penumbra", pixels[:, :-1]), answer_identity("1.2.3", "ischemic_lesion", pixels),
              answer_identity("1.2.4", "core_penumbra", pixels), answer_identity("1.2.3", "core_penumbra", pixels.astype(np.uint16))]
    assert len({answer_identity("1.2.3", "core_penumbra", pixels), *others}) == 5
    assert validate(first) == ([], [])


@pytest.mark.parametrize("algorithm_type,provenance,expected", [("AUTOMATIC", None, "AI"), ("MANUAL", "approved", "approved"),
                                                                ("MANUAL", "corrected", "corrected"), ("MANUAL", None, "corrected")])
def test_a_seg_says_its_provenance_and_still_passes(source_series, tmp_path, algorithm_type, provenance, expected):
    """AI, approved or corrected: a person's SEG says which in ContentLabel (a viewer's SEG that does not say is a
    correction); the validator still finds nothing to object to."""
    from strokelabel.dicom import seg_provenance

    label = np.zeros((16, 14, 4), np.uint8)
    label[3:7, 3:7, 1:3] = 1
    path = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(label, AFFINE), str(path))
    seg = write_seg(path, source_series, {1: "lesion"}, algorithm_type, provenance=provenance)
    assert seg_provenance(seg) == expected
    assert validate(seg) == ([], [])
    seg.ContentLabel = "APPROVED"
    assert seg_provenance(seg) == ("AI" if algorithm_type == "AUTOMATIC" else "approved")  # automatic segments are AI whatever the label
