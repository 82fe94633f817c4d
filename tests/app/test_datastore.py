"""The stroke datastore: one image per study from flat folders and BIDS trees; checked labels."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from fastapi import HTTPException

from lib.datastore import StrokeDatastore
from strokelabel.naming import study_filename

AFFINE = np.diag([2.0, 2.0, 4.0, 1.0])


def write(folder, subject, modality, shape=(8, 8, 4), value=1.0):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / study_filename(subject, "01", modality)
    nib.save(nib.Nifti1Image(np.full(shape, value, np.float32), AFFINE), str(path))
    return path


@pytest.fixture
def studies(tmp_path):
    for modality in ("cbf", "cbv", "mtt", "tmax"):
        write(tmp_path / "sub-p1" / "ses-01", "p1", modality)
    write(tmp_path / "sub-m1" / "ses-01" / "dwi", "m1", "dwi")
    write(tmp_path / "sub-m1" / "ses-01" / "dwi", "m1", "adc")
    write(tmp_path, "flat1", "cta1")  # a flat-folder CTA study
    write(tmp_path / "derivatives" / "sub-p1" / "ses-01", "p9", "tmax")  # never a study
    return tmp_path


def test_one_image_per_study_is_listed_from_flat_and_bids_layouts(studies):
    store = StrokeDatastore(str(studies))
    images = sorted(store.list_images())
    assert images == ["sub-flat1_ses-01_acq-phase1_cta", "sub-m1_ses-01_dwi", "sub-p1_ses-01_tmax"]
    assert store.get_image_uri("sub-m1_ses-01_dwi").endswith("sub-m1/ses-01/dwi/sub-m1_ses-01_dwi.nii.gz")
    assert store.get_image_info("sub-p1_ses-01_tmax")["kind"] == "ctp"


def test_saved_labels_feed_the_datalist_with_the_study_kind(studies, tmp_path_factory):
    store = StrokeDatastore(str(studies))
    label = tmp_path_factory.mktemp("l") / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.uint8) * 2, AFFINE), str(label))
    store.save_label("sub-p1_ses-01_tmax", str(label), "final", {})
    (item,) = store.datalist()
    assert item["kind"] == "ctp"
    assert item["image"].endswith("sub-p1_ses-01_tmax.nii.gz")
    assert item["label"].endswith("labels/final/sub-p1_ses-01_tmax.nii.gz")
    assert store.get_unlabeled_images() and "sub-p1_ses-01_tmax" not in store.get_unlabeled_images()


def test_a_bad_label_is_refused_with_422_and_the_saved_one_is_kept(studies, tmp_path_factory):
    store = StrokeDatastore(str(studies))
    folder = tmp_path_factory.mktemp("l")
    good = folder / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.uint8), AFFINE), str(good))
    store.save_label("sub-m1_ses-01_dwi", str(good), "final", {})
    saved = studies / "labels" / "final" / "sub-m1_ses-01_dwi.nii.gz"
    before = saved.read_bytes()

    bad = folder / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 4), 2, np.uint8), AFFINE), str(bad))  # penumbra on an MRI study
    with pytest.raises(HTTPException) as error:
        store.save_label("sub-m1_ses-01_dwi", str(bad), "final", {})
    assert error.value.status_code == 422 and "values [2]" in error.value.detail
    assert saved.read_bytes() == before


def test_studies_that_disappear_are_dropped_on_refresh(studies):
    store = StrokeDatastore(str(studies))
    for path in (studies / "sub-m1").rglob("*.nii.gz"):
        path.unlink()
    store.refresh()
    assert "sub-m1_ses-01_dwi" not in store.list_images()


def test_malformed_datastore_calls_get_a_4xx_naming_the_problem_and_write_nothing(studies, tmp_path_factory):
    store = StrokeDatastore(str(studies))
    folder = tmp_path_factory.mktemp("l")
    label = folder / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.uint8), AFFINE), str(label))
    for image_id, tag, status, words in (("../../evil", "final", 404, "no study '../../evil'"),
                                         ("sub-m1_ses-01_dwi", "../../outside", 422, "label tag '../../outside'")):
        with pytest.raises(HTTPException) as error:
            store.save_label(image_id, str(label), tag, {})
        assert error.value.status_code == status and words in error.value.detail
    assert not list(studies.parent.glob("outside*")) and not (studies / "labels" / "final" / "sub-m1_ses-01_dwi.nii.gz").exists()

    text = folder / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(HTTPException) as error:
        store.add_image("sub-new_ses-01_dwi", str(text), {})
    assert error.value.status_code == 422 and "could not be read as NIfTI" in error.value.detail
    with pytest.raises(HTTPException) as error:
        store.add_image("x", str(label), {})
    assert error.value.status_code == 422 and "reference volume" in error.value.detail


def test_labels_and_the_index_are_written_atomically(studies, tmp_path_factory, monkeypatch):
    import lib.datastore as datastore_module

    store = StrokeDatastore(str(studies))
    label = tmp_path_factory.mktemp("l") / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.uint8), AFFINE), str(label))
    store.save_label("sub-m1_ses-01_dwi", str(label), "final", {})
    saved = studies / "labels" / "final" / "sub-m1_ses-01_dwi.nii.gz"
    before = saved.read_bytes()

    def crash(path, data):  # the process dies while the new label is being written
        raise OSError("disk full")

    monkeypatch.setattr(datastore_module, "atomic_write_bytes", crash)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), AFFINE), str(label))
    with pytest.raises(OSError):
        store.save_label("sub-m1_ses-01_dwi", str(label), "final", {})
    assert saved.read_bytes() == before and "final" in StrokeDatastore(str(studies)).json()["objects"]["sub-m1_ses-01_dwi"]["labels"]


def test_an_infer_that_saves_its_answer_passes_monai_labels_tag_enum_and_it_is_stored_under_its_name(studies, tmp_path_factory):
    from monailabel.interfaces.datastore import DefaultLabelTag

    store = StrokeDatastore(str(studies))
    label = tmp_path_factory.mktemp("l") / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.uint8), AFFINE), str(label))
    store.save_label("sub-m1_ses-01_dwi", str(label), DefaultLabelTag.ORIGINAL, {})
    assert (studies / "labels" / "original" / "sub-m1_ses-01_dwi.nii.gz").exists()


def test_provenance_is_ai_approved_or_corrected_and_the_ai_answer_never_trains(studies, tmp_path_factory):
    from monailabel.interfaces.datastore import DefaultLabelTag

    store = StrokeDatastore(str(studies))
    label = tmp_path_factory.mktemp("l") / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.uint8), AFFINE), str(label))
    store.save_label("sub-m1_ses-01_dwi", str(label), DefaultLabelTag.ORIGINAL, {"model": "ischemic_lesion"})
    assert store.get_label_info("sub-m1_ses-01_dwi", "original")["provenance"] == "AI"
    assert store.datalist() == []  # an answer as computed is no training label
    store.save_label("sub-m1_ses-01_dwi", str(label), "final", {"provenance": "approved"})
    (item,) = store.datalist()
    assert item["provenance"] == "approved"
    store.save_label("sub-m1_ses-01_dwi", str(label), "final", {})  # saved without saying (3D Slicer): a person's edit
    assert [i["provenance"] for i in store.datalist()] == ["corrected"]
    for bad, tag in (("AI", "final"), ("reviewed", "final")):
        with pytest.raises(HTTPException) as error:
            store.save_label("sub-m1_ses-01_dwi", str(label), tag, {"provenance": bad})
        assert error.value.status_code == 422 and bad in error.value.detail
    assert [i["provenance"] for i in store.datalist()] == ["corrected"]  # the refused saves changed nothing
