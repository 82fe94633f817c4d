"""Raw scanner DWI/ADC through the one study loader: a 4D series with its .bval, a trailing singleton
axis, int16 with or without scl_slope, ADC in any unit, thick oblique slices; a clear error for what
cannot be read."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from strokelabel import conventions
from strokelabel.errors import StrokeLabelError
from strokelabel.naming import study_filename
from strokelabel.study import load_study

SHAPE = (40, 44, 24)
AFFINE = np.diag([2.0, 2.0, 4.0, 1.0])
AFFINE[:3, 3] = [-40.0, -44.0, -48.0]


def head_arrays(seed: int = 0):
    """A skull-stripped brain: DWI ~100 (lesion 220), ADC in 10^-3 mm²/s ~0.8 (lesion 0.4, ventricle 3.0)."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    brain = i**2 / 0.8**2 + j**2 / 0.85**2 + k**2 / 0.8**2 < 1
    ventricle = (i / 0.12) ** 2 + (j / 0.3) ** 2 + (k / 0.2) ** 2 < 1
    lesion = ((i - 0.4) / 0.15) ** 2 + (j / 0.2) ** 2 + (k / 0.25) ** 2 < 1
    dwi = np.where(brain, 100 + 5 * rng.standard_normal(SHAPE), 0)
    dwi[lesion] = 220
    dwi[ventricle] = 30
    adc = np.where(brain, 0.8 + 0.03 * rng.standard_normal(SHAPE), 0)
    adc[lesion] = 0.4
    adc[ventricle] = 3.0
    return dwi.astype(np.float32), adc.astype(np.float32), lesion


def save(folder, modality, img):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / study_filename("raw", "01", modality)
    nib.save(img, str(path))
    return path


def image(data, dtype=np.float32, slope=None, affine=AFFINE):
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    return img


@pytest.fixture
def head():
    return head_arrays()


def load(folder):
    return load_study(folder / study_filename("raw", "01", "dwi"), ("dwi", "adc"))


def test_a_4d_dwi_series_is_read_as_the_trace_of_its_highest_b_value_with_b0_or_without(tmp_path, head):
    dwi, adc, _ = head
    # Three directions at b = 1000 (one written 995 by the converter) with different brightness:
    # the trace image is their geometric mean; the b = 0 volumes and the b = 500 one are not used.
    directions = [dwi * 0.8, dwi * 1.0, dwi * 1.25]
    for name, b0s in (("with_b0", [dwi * 3, dwi * 3]), ("without_b0", [])):
        folder = tmp_path / name
        volumes = [*b0s, dwi * 1.6, *directions]
        bvals = [0] * len(b0s) + [500, 1000, 995, 1000]
        path = save(folder, "dwi", image(np.stack(volumes, axis=-1)))
        (folder / path.name.replace(".nii.gz", ".bval")).write_text(" ".join(map(str, bvals)) + "\n")
        save(folder, "adc", image(adc))
        study = load(folder)
        assert study.shape == SHAPE
        np.testing.assert_allclose(study.images["dwi"], np.where(dwi > 0, dwi * (0.8 * 1.0 * 1.25) ** (1 / 3), 0), rtol=1e-4)
        note = study.notes["dwi_series"]
        assert note["volumes_used"] == 3 and note["used_b_s_mm2"] == 998 and note["b_values_s_mm2"][-1] == 1000


@pytest.mark.parametrize("bval_text, problem", [
    (None, r"sub-raw_ses-01_dwi\.bval \(its b-values\) is not beside it"),
    ("0 1000", r"lists 2 b-values but the DWI series has 3 volumes"),
    ("0 0 0", r"no diffusion-weighted volume: its highest b-value in sub-raw_ses-01_dwi\.bval is 0"),
    ("0 abc 1000", r"holds something other than numbers"),
])
def test_a_dwi_series_that_cannot_be_read_is_refused_naming_the_problem(tmp_path, head, bval_text, problem):
    dwi, adc, _ = head
    path = save(tmp_path, "dwi", image(np.stack([dwi, dwi, dwi], axis=-1)))
    if bval_text is not None:
        (tmp_path / path.name.replace(".nii.gz", ".bval")).write_text(bval_text)
    save(tmp_path, "adc", image(adc))
    with pytest.raises(StrokeLabelError, match=problem) as caught:
        load(tmp_path)
    assert caught.value.study == "sub-raw_ses-01"


def test_a_trailing_singleton_axis_is_read_as_the_3d_volume(tmp_path, head):
    dwi, adc, _ = head
    save(tmp_path / "plain", "dwi", image(dwi))
    save(tmp_path / "plain", "adc", image(adc))
    save(tmp_path / "4d", "dwi", image(dwi[..., None]))
    save(tmp_path / "4d", "adc", image(adc[..., None]))
    plain, singleton = load(tmp_path / "plain"), load(tmp_path / "4d")
    for m in ("dwi", "adc"):
        np.testing.assert_allclose(singleton.images[m], plain.images[m], rtol=1e-6)


@pytest.mark.parametrize("stored", ["int16 10^-6", "int16 scl_slope 10^-3", "float mm2/s", "float 10^-6"])
def test_adc_in_any_unit_and_integer_storage_is_read_in_1e3_mm2_s(tmp_path, head, stored):
    dwi, adc, _ = head
    if stored == "int16 10^-6":
        adc_img = image(np.round(adc * 1000), np.int16)
    elif stored == "int16 scl_slope 10^-3":  # the integers times scl_slope are the values
        adc_img = image(np.round(adc * 1000), np.int16, slope=1e-3)
    elif stored == "float mm2/s":
        adc_img = image(adc * 1e-3)
    else:
        adc_img = image(adc * 1000)
    save(tmp_path, "dwi", image(np.round(dwi), np.int16))  # DWI as the scanner's int16
    save(tmp_path, "adc", adc_img)
    study = load(tmp_path)
    inside = adc > 0
    np.testing.assert_allclose(study.images["adc"][inside], adc[inside], atol=1e-3)
    np.testing.assert_allclose(study.images["dwi"], np.round(dwi), atol=1e-4)
    assert "ADC taken as" in study.notes["adc_unit_assumption"]


def test_an_integer_adc_rounded_to_whole_1e3_units_is_refused(tmp_path, head):
    dwi, adc, _ = head
    save(tmp_path, "dwi", image(dwi))
    save(tmp_path, "adc", image(np.round(adc), np.int16))  # 0.8 x 10^-3 mm²/s stored as the integer 1
    with pytest.raises(StrokeLabelError, match=r"ADC is stored as whole numbers without a scale factor"):
        load(tmp_path)


def test_thick_oblique_int16_slices_load_on_their_own_grid_with_the_lesion_where_it_was(tmp_path, head):
    dwi, adc, lesion = head
    oblique = {m: conventions.resample_oblique(image(v), order=1) for m, v in (("dwi", dwi), ("adc", adc * 1000))}
    lesion_oblique = np.asarray(conventions.resample_oblique(image(lesion.astype(np.uint8)), order=0).dataobj) > 0
    save(tmp_path, "dwi", image(np.round(np.asarray(oblique["dwi"].dataobj)), np.int16, affine=oblique["dwi"].affine))
    save(tmp_path, "adc", image(np.round(np.asarray(oblique["adc"].dataobj)), np.int16, affine=oblique["adc"].affine))
    study = load(tmp_path)
    assert np.allclose(study.spacing_mm, (1.8, 1.8, 4.8), atol=1e-3)
    lesion_canonical = study.to_canonical(lesion_oblique)
    # The lesion keeps its restricted diffusion after resampling, in 10^-3 mm²/s.
    assert np.median(study.images["adc"][lesion_canonical]) == pytest.approx(0.4, abs=0.05)
    assert study.brain_mask[lesion_canonical].mean() > 0.99


@pytest.mark.parametrize("name", ["int16", "4D DWI + bval", "singleton 4D", "raw scanner"])
def test_the_scanner_variants_of_a_study_load_back_to_its_values(tmp_path, head, name, monkeypatch):
    from strokelabel.brain_extraction import MODE_ENV

    monkeypatch.setenv(MODE_ENV, "off")  # the model's mask is tested on its own (test_brain_extraction)
    dwi, adc, lesion = head
    folder = tmp_path / "orig"
    files = {"dwi": save(folder, "dwi", image(dwi)), "adc": save(folder, "adc", image(adc)),
             "msk": folder / "lesion_msk.nii.gz"}
    nib.save(image(lesion.astype(np.uint8), np.uint8), str(files["msk"]))
    variants = {v.name: v for v in [*conventions.standard_variants("mri"), conventions.raw_scanner_variant()]}
    variant = variants[name]
    written = conventions.write_variant_study(files, tmp_path / "orig", tmp_path / "variant", variant, labels={"msk"})
    study = load(tmp_path / "variant")
    assert ("dwi_series" in study.notes) == (name in ("4D DWI + bval", "raw scanner"))
    stored_lesion = study.to_canonical(np.asarray(nib.load(str(written["msk"])).dataobj) > 0)
    # Restricted diffusion where the lesion is, in 10^-3 mm²/s, and the DWI's lesion/brain contrast kept.
    assert np.median(study.images["adc"][stored_lesion]) == pytest.approx(0.4, abs=0.03)
    brain = study.images["adc"] > 0.6
    assert np.median(study.images["dwi"][stored_lesion]) / np.median(study.images["dwi"][brain]) == pytest.approx(2.2, rel=0.1)
