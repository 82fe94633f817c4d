"""ISLES'24 trees as the challenge distributes them: native ``raw_data`` and co-registered ``space-ncct``
derivatives, masks paired only with images of their own space, the final infarct never a CTP label."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from lib.datastore import StrokeDatastore
from strokelabel.naming import find_derivative_mask, find_final_infarct, find_modalities, find_reference_volumes, parse_filename
from strokelabel.phantom.isles24_layout import generate_isles24_study
from strokelabel.study import load_study

BASE = "sub-stroke0001_ses-01"


@pytest.fixture(scope="module")
def isles24(tmp_path_factory):
    root = tmp_path_factory.mktemp("isles24")
    generate_isles24_study(root, 1, seed=501)
    return root


def test_isles24_names_parse_with_their_space_and_mask_target():
    lvo = parse_filename(f"{BASE}_space-ncct_lvo-msk.nii.gz")
    assert (lvo.modality, lvo.space, lvo.study_id) == ("lvo-msk", "ncct", BASE)
    final = parse_filename("sub-stroke0001_ses-02_space-ncct_lesion-msk.nii.gz")
    assert final.modality == "lesion-msk" and final.study_id == "sub-stroke0001_ses-02"
    assert parse_filename(f"{BASE}_space-ncct_tmax.nii.gz").modality == "tmax"
    assert parse_filename(f"{BASE}_cta.nii.gz").modality == "cta1"  # single-phase CTA is phase 1
    assert parse_filename(f"{BASE}_foo-cbf.nii.gz") is None  # a target only ever qualifies a mask


def test_the_co_registered_studies_are_listed_once_per_kind_and_see_every_image_of_their_space(isles24):
    listed = find_reference_volumes(isles24)
    assert sorted(listed) == [f"{BASE}_space-ncct_cta.nii.gz", f"{BASE}_space-ncct_tmax.nii.gz"]
    ctp = isles24 / listed[f"{BASE}_space-ncct_tmax.nii.gz"]
    found = find_modalities(ctp)
    assert {"cbf", "cbv", "mtt", "tmax", "ctp", "cta1", "ncct", "lvo-msk", "cow-msk"} <= set(found)
    # Every image is the co-registered copy; the NCCT is the raw one that defines that space.
    assert all("derivatives" in str(p) for m, p in found.items() if m != "ncct")
    assert "raw_data" in str(found["ncct"])
    study = load_study(ctp, ("cbf", "cbv", "mtt", "tmax"), ("ncct", "cta1"))
    assert study.images["cta1"].shape == study.images["tmax"].shape


def test_without_derivatives_the_native_studies_are_listed_and_no_mask_pairs_with_them(isles24, tmp_path):
    root = tmp_path / "raw-only"
    shutil.copytree(isles24 / "raw_data", root / "raw_data")
    listed = find_reference_volumes(root)
    assert sorted(listed) == [f"{BASE}_cta.nii.gz", f"{BASE}_tmax.nii.gz"]
    found = find_modalities(root / listed[f"{BASE}_tmax.nii.gz"])
    assert {"ncct", "ctp", "cta1", "tmax"} <= set(found) and not any(m.endswith("msk") for m in found)
    # With derivatives beside them, the native maps still never take a space-ncct mask.
    native = isles24 / "raw_data" / "sub-stroke0001" / "ses-01" / "perfusion-maps" / f"{BASE}_tmax.nii.gz"
    assert not any(m.endswith("msk") for m in find_modalities(native))


def test_the_lvo_mask_becomes_the_cta_studys_clot_label_and_the_final_infarct_labels_nothing(isles24, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(isles24, root)
    store = StrokeDatastore(str(root))
    assert sorted(store.list_images()) == [f"{BASE}_space-ncct_cta", f"{BASE}_space-ncct_tmax"]
    labelled = {item["image"].split("/")[-1]: item["label"] for item in store.datalist()}
    assert list(labelled) == [f"{BASE}_space-ncct_cta.nii.gz"]
    label = np.asarray(nib.load(labelled[f"{BASE}_space-ncct_cta.nii.gz"]).dataobj)
    lvo = np.asarray(nib.load(str(next(root.rglob("*_lvo-msk.nii.gz")))).dataobj)
    assert np.array_equal(label > 0, lvo > 0) and label.max() == 1
    # The session-02 lesion is the final infarct after treatment: never the acute CTP study's label.
    ctp = next(root.rglob(f"{BASE}_space-ncct_tmax.nii.gz"))
    assert find_derivative_mask(root, ctp) is None


def test_the_final_infarct_is_found_for_scoring_in_the_same_space_only(isles24):
    ctp = next(isles24.rglob(f"{BASE}_space-ncct_tmax.nii.gz"))
    assert find_final_infarct(ctp).name == "sub-stroke0001_ses-02_space-ncct_lesion-msk.nii.gz"
    native = next(isles24.rglob(f"raw_data/**/{BASE}_tmax.nii.gz"))
    assert find_final_infarct(native) is None  # native maps: the space-ncct mask is on another grid
