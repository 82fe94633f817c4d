"""The naming rule and the study loader: every task fails the same way on the same bad input."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from strokelabel.errors import StrokeLabelError
from strokelabel.naming import find_modalities, find_sidecar, parse_filename, study_filename, study_kind
from strokelabel.study import available_modalities, check_label, load_study

AFFINE = np.diag([1.8, 1.8, 5.0, 1.0])


def write(folder, subject, modality, data, affine=AFFINE):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / study_filename(subject, "01", modality)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return path


def ctp_study(tmp_path, subject="a", shape=(16, 16, 4)):
    rng = np.random.default_rng(0)
    folder = tmp_path / f"sub-{subject}" / "ses-01"
    maps = {"cbf": 50, "cbv": 4, "mtt": 4, "tmax": 1}
    paths = {m: write(folder, subject, m, v * (1 + 0.1 * rng.random(shape))) for m, v in maps.items()}
    return paths["tmax"], folder


def test_file_names_round_trip_through_the_naming_rule():
    assert study_filename("ctp0001", "01", "cta2") == "sub-ctp0001_ses-01_acq-phase2_cta.nii.gz"
    parsed = parse_filename("sub-ctp0001_ses-01_acq-phase2_cta.nii.gz")
    assert (parsed.subject, parsed.session, parsed.modality) == ("ctp0001", "01", "cta2")
    assert parse_filename("sub-strokecase0001_ses-0001_dwi.nii.gz").modality == "dwi"
    assert parse_filename("random.nii.gz") is None
    assert [study_kind(n) for n in ("sub-a_ses-1_tmax.nii.gz", "sub-a_ses-1_dwi.nii", "sub-a_ses-1_acq-phase1_cta.nii.gz")] == ["ctp", "mri", "cta"]
    with pytest.raises(StrokeLabelError, match="not a study reference"):
        study_kind("sub-a_ses-1_cbf.nii.gz")


def test_modalities_are_found_beside_the_reference_and_in_sibling_bids_folders(tmp_path):
    session = tmp_path / "sub-x" / "ses-0001"
    dwi = write(session / "dwi", "x", "dwi", np.ones((4, 4, 4)))
    write(session / "dwi", "x", "adc", np.ones((4, 4, 4)))
    write(session / "anat", "x", "flair", np.ones((4, 4, 4)))
    write(session / "dwi", "other", "adc", np.ones((4, 4, 4)))
    found = find_modalities(dwi)
    assert set(found) == {"dwi", "adc", "flair"}
    sidecar = session / "sub-x_ses-01.json"
    sidecar.write_text("{}")
    assert find_sidecar(dwi) == sidecar  # one folder up, beside the datatype folders


def test_a_good_study_loads_on_the_reference_grid_with_its_clinical_sidecar(tmp_path):
    tmax, folder = ctp_study(tmp_path)
    (folder / "sub-a_ses-01.json").write_text('{"nihss": 14}')
    study = load_study(tmax, ("cbf", "cbv", "mtt", "tmax"), ("mip",))
    assert study.kind == "ctp" and study.study_id == "sub-a_ses-01"
    assert set(study.images) == {"cbf", "cbv", "mtt", "tmax"}
    assert study.spacing_mm == pytest.approx((1.8, 1.8, 5.0))
    assert study.voxel_volume_ml == pytest.approx(1.8 * 1.8 * 5 / 1000)
    assert study.clinical == {"nihss": 14}


def test_a_missing_modality_is_named_with_the_file_expected(tmp_path):
    tmax, folder = ctp_study(tmp_path)
    (folder / "sub-a_ses-01_cbv.nii.gz").unlink()
    with pytest.raises(StrokeLabelError, match=r"sub-a_ses-01: missing modality cbv: expected sub-a_ses-01_cbv.nii.gz"):
        load_study(tmax, ("cbf", "cbv", "tmax"))


@pytest.mark.parametrize(
    "defect,match",
    [
        ("all-nan", "cbf holds no finite value"),
        ("shape", "cbf has shape .* grids do not match"),
        ("affine", "cbf and tmax have different affines"),
        ("4d", "cbf has 4 dimensions"),
        ("empty", "cbf is empty"),
        ("spacing", "voxel spacing .* outside"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_modality_and_problem(tmp_path, defect, match):
    tmax, folder = ctp_study(tmp_path)
    data = np.full((16, 16, 4), 50.0)
    affine = AFFINE
    if defect == "all-nan":
        data[:] = np.nan
    elif defect == "shape":
        data = data[:-2]
    elif defect == "affine":
        affine = np.diag([1.8, 1.8, 2.5, 1.0])
    elif defect == "4d":
        data = np.stack([data, data], -1)
    elif defect == "empty":
        data = np.zeros_like(data)
    if defect == "spacing":
        for m in ("cbf", "tmax"):
            write(folder, "a", m, np.random.default_rng(1).random((16, 16, 4)), affine=np.diag([1000.0, 1000.0, 5000.0, 1.0]))
    else:
        data[0, 0, 0] += 1 if defect not in ("empty",) else 0
        write(folder, "a", "cbf", data, affine)
    with pytest.raises(StrokeLabelError, match=match):
        load_study(tmax, ("cbf", "tmax"))


def test_a_label_must_sit_on_the_study_grid_and_hold_only_the_task_values():
    ref_shape = (8, 8, 4)
    check_label(np.zeros(ref_shape), AFFINE, ref_shape, AFFINE, (0, 1, 2), "s")
    with pytest.raises(StrokeLabelError, match=r"values \[3\]"):
        check_label(np.full(ref_shape, 3), AFFINE, ref_shape, AFFINE, (0, 1, 2), "s")
    with pytest.raises(StrokeLabelError, match="grids do not match"):
        check_label(np.zeros((8, 8, 3)), AFFINE, ref_shape, AFFINE, (0, 1), "s")
    with pytest.raises(StrokeLabelError, match="dimensions"):
        check_label(np.zeros((8, 8)), AFFINE, ref_shape, AFFINE, (0, 1), "s")


@pytest.mark.parametrize("layout", ["rgb24", "channels"])
def test_a_map_stored_as_a_coloured_screenshot_is_refused_by_name(tmp_path, layout):
    reference, folder = ctp_study(tmp_path)
    path = folder / study_filename("a", "01", "cbf")
    if layout == "rgb24":
        pixels = np.zeros((16, 16, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        img = nib.Nifti1Image(pixels, AFFINE)
    else:
        img = nib.Nifti1Image(np.zeros((16, 16, 4, 3), np.uint8), AFFINE)
    nib.save(img, str(path))
    with pytest.raises(StrokeLabelError, match="cbf .* is a coloured picture"):
        load_study(reference, ("cbf", "cbv", "mtt", "tmax"))


def test_a_4d_series_is_the_reference_only_of_a_study_without_a_tmax_map(tmp_path):
    from strokelabel.naming import is_reference

    folder = tmp_path / "sub-s" / "ses-01"
    series = write(folder, "s", "ctp", np.zeros((8, 8, 4, 12)))
    assert is_reference(series) and study_kind(series) == "ctp"
    write(folder / "perfusion-maps", "s", "tmax", np.ones((8, 8, 4)))
    assert not is_reference(series)  # ISLES'24: the vendor's maps lie in perfusion-maps/ beside the series


def test_a_pacs_study_offers_the_series_its_pacs_holds_before_they_are_fetched(tmp_path):
    # Only the DWI is on disk (fetched to list the study); the PACS also holds its ADC. A task that
    # chose its model from the files alone ran the DWI-only model on the first call and the DWI + ADC
    # model on the next (seen in the browser test).
    import json

    from strokelabel.pacs import SOURCE_FILE

    dwi = write(tmp_path / "sub-p" / "ses-01", "p", "dwi", np.ones((8, 8, 4)))
    assert available_modalities(dwi) == {"dwi"}
    (dwi.parent / SOURCE_FILE).write_text(json.dumps({"url": "http://pacs", "study_uid": "1.2", "series": {"dwi": "1.2.1", "adc": "1.2.2"}}))
    assert available_modalities(dwi) == {"dwi", "adc"}
    assert set(find_modalities(dwi)) == {"dwi"}  # what is on disk is unchanged


def test_the_midsagittal_plane_of_a_loaded_study_is_searched_once_and_again_when_a_file_changes(tmp_path, monkeypatch):
    import time

    import strokelabel.midsagittal as midsagittal
    from tests.strokelabel.test_midsagittal import synthetic_head

    monkeypatch.setenv("STROKELABEL_CACHE_DIR", str(tmp_path / "cache"))
    image, _, _ = synthetic_head((64, 64, 8), (3.0, 3.5, 12.0), (9.0, 0.0), 6.0)
    folder = tmp_path / "sub-m" / "ses-01"
    dwi = write(folder, "m", "dwi", 400.0 * image)
    write(folder, "m", "adc", np.where(image > 0, 0.8, 0.0))
    searches = []
    search = midsagittal.find_midsagittal_plane
    monkeypatch.setattr(midsagittal, "find_midsagittal_plane", lambda *a, **k: searches.append(1) or search(*a, **k))

    first = load_study(dwi, ("dwi", "adc")).midsagittal_plane
    again = load_study(dwi, ("dwi", "adc")).midsagittal_plane  # another process, another request: the same plane
    assert len(searches) == 1 and again == first and again.score == first.score and again.shape == (64, 64, 8)
    assert abs(first.angle_deg - 6.0) < 1.0  # the search's plane, not a default
    load_study(dwi, ("dwi",)).midsagittal_plane  # DWI alone: another brain mask, its own search
    assert len(searches) == 2
    time.sleep(0.01)
    write(folder, "m", "dwi", 400.0 * np.flip(image, axis=0))  # the study's DWI replaced: never the old plane
    flipped = load_study(dwi, ("dwi", "adc")).midsagittal_plane
    assert len(searches) == 3 and abs(flipped.angle_deg + first.angle_deg) < 0.2
