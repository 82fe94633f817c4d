"""Phantom MRI studies in the ISLES'22 layout: paths, grids, site quirks, and the datastore reading them."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from strokelabel.naming import find_derivative_mask, find_modalities
from strokelabel.phantom.isles_layout import generate_isles_study, isles_paths
from strokelabel.study import load_study
from strokelabel.units import detect_adc_unit


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("isles")
    a = generate_isles_study(root, 1, seed=11, quirks={"adc_unit": "10^-6 mm2/s", "skull_stripped": True})
    b = generate_isles_study(root, 2, seed=12, quirks={"adc_unit": "10^-3 mm2/s", "skull_stripped": False})
    return root, a, b


def test_files_follow_the_isles22_tree(two_sites):
    root, a, _ = two_sites
    paths = isles_paths(root, "strokecase0001")
    assert paths["dwi"] == root / "rawdata/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_dwi.nii.gz"
    assert paths["flair"].parent.name == "anat"
    for p in paths.values():
        assert p.exists(), p
    found = find_modalities(paths["dwi"])
    assert set(found) >= {"dwi", "adc", "flair"}
    assert find_derivative_mask(root, paths["dwi"]) == paths["msk"]


def test_flair_is_on_its_own_grid_and_the_mask_on_the_dwi_grid(two_sites):
    root, a, _ = two_sites
    paths = a["paths"]
    dwi, flair, msk = (nib.load(str(paths[k])) for k in ("dwi", "flair", "msk"))
    assert flair.shape != dwi.shape
    assert not np.allclose(flair.affine, dwi.affine)
    assert msk.shape == dwi.shape and np.allclose(msk.affine, dwi.affine)
    values = np.unique(np.asarray(msk.dataobj))
    assert set(values.tolist()) <= {0, 1} and 1 in values
    # the study loader accepts FLAIR off-grid
    study = load_study(paths["dwi"], ("dwi", "adc"), ("flair",))
    assert study.images["flair"].shape == flair.shape


def test_adc_units_negative_values_and_skull_stripping_vary_by_site(two_sites):
    _, a, b = two_sites
    adc_a = np.asarray(nib.load(str(a["paths"]["adc"])).dataobj)
    adc_b = np.asarray(nib.load(str(b["paths"]["adc"])).dataobj)
    assert detect_adc_unit(adc_a).unit == "10^-6 mm²/s"
    assert detect_adc_unit(adc_b).unit == "10^-3 mm²/s"
    assert (adc_a < 0).any() and (adc_b < 0).any()
    dwi_a = np.asarray(nib.load(str(a["paths"]["dwi"])).dataobj)
    dwi_b = np.asarray(nib.load(str(b["paths"]["dwi"])).dataobj)
    assert (dwi_a == 0).mean() > (dwi_b == 0).mean() + 0.1  # stripped: zero outside the brain


def test_datastore_uses_the_derivative_masks_as_final_labels_until_a_label_is_saved(two_sites, tmp_path):
    from lib.datastore import StrokeDatastore

    root, a, b = two_sites
    store = StrokeDatastore(str(root))
    assert sorted(store.list_images()) == ["sub-strokecase0001_ses-0001_dwi", "sub-strokecase0002_ses-0001_dwi"]
    items = {d["image"].split("/")[-1]: d for d in store.datalist()}
    assert items["sub-strokecase0001_ses-0001_dwi.nii.gz"]["label"].endswith("sub-strokecase0001_ses-0001_msk.nii.gz")
    assert all(d["kind"] == "mri" for d in items.values())
    # a saved label wins over the shipped mask
    dwi = nib.load(str(a["paths"]["dwi"]))
    saved = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(dwi.shape, np.uint8), dwi.affine), str(saved))
    store.save_label("sub-strokecase0001_ses-0001_dwi", str(saved), "final", {})
    items = {d["image"].split("/")[-1]: d for d in store.datalist()}
    assert "/labels/final/" in items["sub-strokecase0001_ses-0001_dwi.nii.gz"]["label"]
    assert items["sub-strokecase0002_ses-0001_dwi.nii.gz"]["label"].endswith("_msk.nii.gz")
