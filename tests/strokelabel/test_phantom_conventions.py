"""On-disk conventions of phantom studies: every convention round-trips (read with nibabel and
reoriented to RAS gives the RAS data back, the truth lines up with it), fills appear only outside
the head (or the vendor's brain), and the ISLES'22 tree takes them too."""

import json

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to
from scipy import ndimage

from strokelabel.phantom import generate_study, grid_for, make_patient, truth_volumes
from strokelabel.phantom.conventions import DEFAULT, draw_conventions
from strokelabel.phantom.isles_layout import generate_isles_study
from strokelabel.units import detect_adc_unit

SEED = 4


def load(path):
    return np.asarray(nib.load(str(path)).dataobj)


def canonical(path):
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj), img.affine


@pytest.fixture(scope="module")
def ras(tmp_path_factory):
    """The default study (RAS float32, no fills) every variant is compared with."""
    study = generate_study(tmp_path_factory.mktemp("ras"), "mri", "ras", SEED)
    arrays = {k: load(p) for k, p in study["modalities"].items()}
    arrays["lesion"] = load(study["truth"]["lesion"])
    return arrays, nib.load(str(study["reference"])).affine


@pytest.mark.parametrize("orientation", ["LAS", "LPS", "PIR"])
def test_a_study_stored_in_another_orientation_reorients_to_the_same_ras_data(ras, tmp_path, orientation):
    arrays, affine = ras
    study = generate_study(tmp_path, "mri", "o", SEED, conventions={"orientation": orientation}, write_label=True)
    stored = nib.load(str(study["reference"]))
    assert "".join(nib.aff2axcodes(stored.affine)) == orientation
    for key in ("dwi", "adc"):
        data, aff = canonical(study["modalities"][key])
        np.testing.assert_array_equal(data, arrays[key])
        np.testing.assert_allclose(aff, affine, atol=1e-5)
    label = nib.load(str(study["truth"]["lesion"]))
    assert label.shape == stored.shape and np.allclose(label.affine, stored.affine)  # the truth on the study's own grid
    np.testing.assert_array_equal(canonical(study["truth"]["lesion"])[0], arrays["lesion"])
    np.testing.assert_array_equal(load(tmp_path / "labels" / "final" / study["reference"].name), np.asarray(label.dataobj))
    record = json.loads(study["truth"]["truth"].read_text())
    assert record["conventions"]["orientation"] == orientation and record["stored_grid"]["axcodes"] == orientation


def test_an_oblique_study_is_resampled_with_its_truth_on_one_rotated_grid(ras, tmp_path):
    arrays, affine = ras
    study = generate_study(tmp_path, "mri", "ob", SEED, conventions={"oblique_deg": [12.0, -4.0, 3.0], "orientation": "LPS"})
    dwi = nib.load(str(study["modalities"]["dwi"]))
    lesion = nib.load(str(study["truth"]["lesion"]))
    assert np.allclose(dwi.affine, lesion.affine) and dwi.shape == lesion.shape
    rotation = dwi.affine[:3, :3] / np.linalg.norm(dwi.affine[:3, :3], axis=0)
    assert np.abs(rotation - np.round(rotation)).max() > 0.05  # oblique direction cosines
    back = np.asarray(resample_from_to(dwi, (arrays["dwi"].shape, affine), order=1).dataobj)
    head = arrays["dwi"] > np.percentile(arrays["dwi"], 60)
    inside = head & (back != 0)
    assert np.corrcoef(back[inside], arrays["dwi"][inside])[0, 1] > 0.85
    lesion_back = np.asarray(resample_from_to(lesion, (arrays["lesion"].shape, affine), order=0).dataobj) > 0
    truth = arrays["lesion"] > 0
    assert 2 * (lesion_back & truth).sum() / (lesion_back.sum() + truth.sum()) > 0.75


def test_dtype_unit_and_negative_noise_conventions(ras, tmp_path):
    arrays, _ = ras
    study = generate_study(tmp_path / "a", "mri", "d", SEED, conventions={"dtype": "int16", "adc_unit": "1e-6", "negative_noise": 0.01})
    adc = nib.load(str(study["modalities"]["adc"]))
    assert adc.get_data_dtype() == np.int16 and adc.dataobj.slope != 1.0
    values = adc.get_fdata()
    assert detect_adc_unit(values).unit == "10^-6 mm²/s"
    assert (values < 0).sum() > 10  # fit noise below zero
    positive = values > 0
    np.testing.assert_allclose(values[positive], 1000.0 * arrays["adc"][positive], atol=adc.dataobj.slope)
    double = generate_study(tmp_path / "b", "mri", "d", SEED, conventions={"dtype": "float64", "label_dtype": "uint16"})
    assert nib.load(str(double["modalities"]["dwi"])).get_data_dtype() == np.float64
    np.testing.assert_array_equal(load(double["modalities"]["dwi"]), arrays["dwi"].astype(np.float64))
    assert nib.load(str(double["truth"]["lesion"])).get_data_dtype() == np.uint16


@pytest.fixture(scope="module")
def vendor_ctp(tmp_path_factory):
    """A random-appearance CT perfusion study stored as ISLES'24 stores its maps (LPS, fills)."""
    spec = {"setting": "random", "on": ["vendor_mask"], "ranges": {"tmax_quantisation.step_s": [0.5, 0.5]}}
    study = generate_study(tmp_path_factory.mktemp("ctp"), "ctp", "v", SEED, appearance=spec,
                           conventions={"fill": "isles24", "orientation": "LPS"}, write_ctp_series=False)
    maps = {k: canonical(study["modalities"][k])[0] for k in ("cbf", "cbv", "mtt", "tmax")}
    maps["corepenumbra"] = canonical(study["truth"]["corepenumbra"])[0]
    return maps


def test_fills_appear_only_outside_the_head(ras, tmp_path):
    arrays, _ = ras
    study = generate_study(tmp_path / "mri", "mri", "f", SEED, conventions={"fill": "nan"})
    dwi = load(study["modalities"]["dwi"])
    air = truth_volumes(make_patient(SEED), grid_for("mri", "small"), keys=("air",))["air"]
    head = air <= 0.5
    assert np.isnan(dwi).any() and not np.isnan(dwi[head]).any()
    np.testing.assert_array_equal(dwi[head], arrays["dwi"][head])


def test_map_fills_appear_only_outside_the_vendors_brain_mask(vendor_ctp):
    cbf, tmax, mtt = vendor_ctp["cbf"], vendor_ctp["tmax"], vendor_ctp["mtt"]
    background = tmax == -30.0
    assert background.mean() > 0.5  # the maps are cut to the brain...
    assert np.all(cbf[background] == np.float32(1e-6)) and (cbf[~background] != np.float32(1e-6)).all()
    grid = grid_for("ctp", "small")
    icv = truth_volumes(make_patient(SEED), grid, keys=("icv",))["icv"] >= 0.5
    deep = ndimage.distance_transform_edt(icv, sampling=grid.spacing_mm) > 5.0  # the vendor's mask may cut a few mm
    assert not background[deep].any()  # ...never inside it
    no_flow = mtt == -29992.0
    assert not no_flow[background].any()  # MTT's no-flow value lies inside the brain, where CBF ~ 0
    assert np.all(cbf[no_flow] < 0.1)


def test_vendor_like_maps_keep_the_physics(vendor_ctp):
    cbf, tmax = vendor_ctp["cbf"], vendor_ctp["tmax"]
    brain = tmax != -30.0
    assert np.allclose(tmax[brain] / 0.5, np.round(tmax[brain] / 0.5), atol=1e-4)  # Tmax in 0.5 s steps
    assert np.percentile(cbf[brain], 99.9) > 3 * np.median(cbf[brain])  # bright vessels
    truth = vendor_ctp["corepenumbra"] > 0
    hypo = brain & (tmax > 6)
    assert 2 * (hypo & truth).sum() / (hypo.sum() + truth.sum()) > 0.5  # the maps still show the hypoperfusion


def test_random_conventions_vary_by_study_and_are_recorded(tmp_path):
    drawn = [draw_conventions(seed, "mri", "random") for seed in range(40)]
    assert draw_conventions(3, "mri", "random") == drawn[3]
    assert len({d["orientation"] for d in drawn}) >= 4
    assert {d["dtype"] for d in drawn} == {"float32", "float64", "int16"}
    assert any(d["fill"] for d in drawn) and any(d["fill"] is None for d in drawn)
    assert any(any(d["oblique_deg"]) for d in drawn) and any(not any(d["oblique_deg"]) for d in drawn)
    assert not any(d["dtype"] == "int16" and d["fill"] and "nan" in d["fill"].values() for d in drawn)
    assert draw_conventions(3, "mri", None) == {**DEFAULT, "default": True}
    with pytest.raises(ValueError, match="orientation"):
        draw_conventions(1, "mri", {"orientation": "XYZ"})
    with pytest.raises(ValueError, match="int16"):
        draw_conventions(1, "mri", {"dtype": "int16", "fill": "nan"})
    with pytest.raises(ValueError, match="unknown"):
        draw_conventions(1, "mri", {"colour": "blue"})


def test_the_isles22_tree_takes_appearance_and_conventions(tmp_path):
    conventions = {"orientation": "LAS", "oblique_deg": [8.0, 0.0, 0.0], "dtype": "float64", "adc_unit": "1e-6", "label_dtype": "uint16"}
    case = generate_isles_study(tmp_path, 1, seed=11, appearance="random", conventions=conventions)
    dwi, adc, flair, msk = (nib.load(str(case["paths"][k])) for k in ("dwi", "adc", "flair", "msk"))
    assert "".join(nib.aff2axcodes(dwi.affine)) == "LAS" and dwi.get_data_dtype() == np.float64
    assert msk.shape == dwi.shape and np.allclose(msk.affine, dwi.affine) and msk.get_data_dtype() == np.uint16
    assert np.asarray(msk.dataobj).any()
    assert flair.shape != dwi.shape and "".join(nib.aff2axcodes(flair.affine)) == "LAS"
    assert detect_adc_unit(np.asarray(adc.dataobj)).unit == "10^-6 mm²/s"
    assert case["quirks"]["conventions"]["orientation"] == "LAS" and case["quirks"]["appearance"] == "random"


def test_cli_takes_appearance_and_conventions(tmp_path, capsys):
    from strokelabel.phantom.__main__ import main

    assert main(["--out", str(tmp_path), "--per-kind", "1", "--labelled", "1", "--kinds", "cta", "--appearance", "random",
                 "--conventions", '{"orientation": "LPS"}']) == 0
    record = json.loads((tmp_path / "derivatives/truth/sub-cta0001/ses-01/sub-cta0001_ses-01_truth.json").read_text())
    assert record["appearance"]["setting"] == "random" and record["conventions"]["orientation"] == "LPS"
    assert "".join(nib.aff2axcodes(nib.load(str(tmp_path / "sub-cta0001/ses-01/sub-cta0001_ses-01_acq-phase1_cta.nii.gz")).affine)) == "LPS"
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--conventions", "sideways"])
