"""Brain extraction: run only on a study that is not skull-stripped (decided from the data), once,
cached as a derived file in the study's own voxel order, and used as the study's brain mask."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from strokelabel import brain_extraction, conventions
from strokelabel.baselines.masks import brain_mask_from_mri
from strokelabel.naming import study_filename
from strokelabel.study import load_study
from tests.conftest import REAL_DIR
from tests.strokelabel.test_study_raw_mri import AFFINE, SHAPE, head_arrays


def stripped_and_raw():
    dwi, adc, lesion = head_arrays()
    stripped = (nib.Nifti1Image(dwi, AFFINE), nib.Nifti1Image(adc, AFFINE))
    raw = conventions.add_synthetic_skull(*stripped, seed=1)
    return stripped, raw, dwi > 0, lesion


def decision(dwi, adc, spacing_mm=(2.0, 2.0, 4.0)):
    dwi, adc = (np.asarray(i.dataobj, dtype=np.float32) for i in (dwi, adc))
    return brain_extraction.skull_stripped(dwi, brain_mask_from_mri(dwi, adc, spacing_mm=spacing_mm))


def test_a_stripped_dwi_is_told_from_one_with_skull_and_air_noise_or_with_skull_and_a_zeroed_background():
    stripped, raw, brain, _ = stripped_and_raw()
    assert decision(*stripped)[0] is True
    is_stripped, figures = decision(*raw)
    assert is_stripped is False and figures["zero_share"] < 0.01
    # Scanner-zeroed air around scalp and skull: a zero background, but far more than the brain inside it.
    dwi_raw = np.asarray(raw[0].dataobj)
    zeroed = np.where(dwi_raw > 0.1 * np.median(dwi_raw[brain]), dwi_raw, 0).astype(np.float32)
    is_stripped, figures = decision(nib.Nifti1Image(zeroed, AFFINE), raw[1])
    assert is_stripped is False and figures["zero_share"] > 0.1 and figures["foreground_to_brain_ratio"] > 1.6


def write_study(folder, dwi_img, adc_img, axcodes="LAS"):
    folder.mkdir(parents=True, exist_ok=True)
    for modality, img in (("dwi", dwi_img), ("adc", adc_img)):
        nib.save(conventions.reorient(img, axcodes), str(folder / study_filename("bx", "01", modality)))
    return folder / study_filename("bx", "01", "dwi")


@pytest.fixture
def counted_deepbet(monkeypatch):
    """deepbet replaced by the true brain (in RAS order), counting its runs."""
    _, _, brain, _ = stripped_and_raw()
    calls = []

    def fake(volume, threshold=0.5):
        assert volume.shape == SHAPE  # RAS order, as deepbet's own runner gives it
        calls.append(1)
        return brain.copy()

    monkeypatch.setattr(brain_extraction, "deepbet_mask", fake)
    monkeypatch.setenv(brain_extraction.MODE_ENV, "auto")  # the suite's default is off (tests/conftest.py)
    return calls, brain


def test_a_raw_study_gets_the_extracted_mask_once_cached_beside_it_and_again_when_the_dwi_changes(tmp_path, counted_deepbet):
    calls, brain = counted_deepbet
    _, raw, _, _ = stripped_and_raw()
    reference = write_study(tmp_path / "sub-bx" / "ses-01", *raw)
    study = load_study(reference, ("dwi", "adc"))  # the ADC unit check reads the brain mask: extraction runs in the loader
    assert np.array_equal(study.brain_mask, brain) and len(calls) == 1
    note = study.notes["brain_extraction"]
    assert note["skull_stripped"] is False and note["reused"] is False and note["method"].startswith("deepbet")
    cached = tmp_path / "sub-bx" / "ses-01" / "derivatives" / "strokelabel" / "sub-bx_ses-01" / note["file"]
    stored = np.asarray(nib.load(str(cached)).dataobj) > 0
    assert np.array_equal(stored, conventions.reorient(nib.Nifti1Image(brain.astype(np.uint8), AFFINE), "LAS").get_fdata() > 0)

    again = load_study(reference, ("dwi", "adc"))
    assert np.array_equal(again.brain_mask, brain) and len(calls) == 1 and again.notes["brain_extraction"]["reused"] is True

    stat = reference.stat()
    os.utime(reference, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the DWI replaced
    load_study(reference, ("dwi", "adc"))
    assert len(calls) == 2


def test_a_stripped_study_or_extraction_switched_off_keeps_the_threshold_mask_and_never_runs_the_model(tmp_path, counted_deepbet, monkeypatch):
    calls, _ = counted_deepbet
    stripped, raw, _, _ = stripped_and_raw()
    study = load_study(write_study(tmp_path / "a" / "sub-bx" / "ses-01", *stripped), ("dwi", "adc"))
    assert study.notes["brain_extraction"]["skull_stripped"] is True
    monkeypatch.setenv(brain_extraction.MODE_ENV, "off")
    study = load_study(write_study(tmp_path / "b" / "sub-bx" / "ses-01", *raw), ("dwi", "adc"))
    assert study.notes["brain_extraction"]["method"].endswith("=off)")
    assert not calls


@pytest.mark.slow
def test_deepbet_finds_the_brain_of_a_skull_on_phantom_and_keeps_its_lesion():
    """The real model on a phantom with skull, scalp and skull-base susceptibility artefacts (~30 s)."""
    from strokelabel.phantom.study import simulate_study

    spec = {"setting": "random", "off": ["skull"], "on": ["susceptibility"]}
    # A 10.6 mL lesion reaching the skull base, where part of it lies in an EPI signal void (ADC not fitted).
    study = simulate_study("mri", 2109151844, "small", appearance=spec, family="template")
    truth, lesion = study.truth["brain"], study.labels["lesion"] > 0
    visible = lesion & (study.images["adc"] > 0)
    assert 0 < np.count_nonzero(visible) < np.count_nonzero(lesion)
    mask = brain_extraction.deepbet_mask(study.images["dwi"])
    dice = 2 * np.count_nonzero(mask & truth) / (np.count_nonzero(mask) + np.count_nonzero(truth))
    assert dice >= 0.9
    assert np.count_nonzero(mask & visible) / np.count_nonzero(visible) >= 0.99


REAL_ISLES22 = os.path.join(REAL_DIR, "isles22")


@pytest.mark.skipif(not os.path.isdir(REAL_ISLES22), reason="no ../shared/real/isles22 on this machine")
def test_the_real_isles22_cases_are_taken_as_stripped_and_with_a_synthetic_skull_as_not():
    from pathlib import Path

    for dwi_path in sorted(Path(REAL_ISLES22).glob("rawdata/sub-*/ses-*/dwi/*_dwi.nii.gz")):
        dwi = nib.load(str(dwi_path))
        adc = nib.load(str(dwi_path).replace("_dwi.nii", "_adc.nii"))
        adc = nib.Nifti1Image(np.clip(np.asarray(adc.dataobj, dtype=np.float32), 0, None), adc.affine)  # the loader's cleaning
        assert decision(dwi, adc, (2.0, 2.0, 2.0))[0] is True, dwi_path.name
        assert decision(*conventions.add_synthetic_skull(dwi, adc, seed=2), (2.0, 2.0, 2.0))[0] is False, dwi_path.name


@pytest.mark.parametrize("skull", [True, False])
def test_a_phantom_with_its_skull_is_told_from_a_stripped_one(skull):
    """Seed 77's stripping is the loosest measured (foreground 1.41 x the threshold mask)."""
    from strokelabel.phantom.study import simulate_study

    spec = {"setting": "random", **({"off": ["skull"]} if skull else {"on": ["skull"]})}
    study = simulate_study("mri", 77, "small", appearance=spec, family="ellipsoid")
    dwi, adc = study.images["dwi"], study.images["adc"]
    is_stripped, _ = brain_extraction.skull_stripped(dwi, brain_mask_from_mri(dwi, adc, spacing_mm=study.grid.spacing_mm))
    assert is_stripped is (not skull)
