"""Studies stored in other conventions (phantoms always; the real cases of ../shared/real when they are
there): every task reads them alike and the label follows the study (same label in every voxel order)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from tests.conftest import REAL_DIR

ISLES22_DWI = Path(REAL_DIR) / "isles22/rawdata/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_dwi.nii.gz"
ISLES24_TMAX = Path(REAL_DIR) / "isles24/raw_data/sub-stroke0143/ses-01/perfusion-maps/sub-stroke0143_ses-01_tmax.nii.gz"
needs_real = pytest.mark.skipif(not ISLES22_DWI.exists(), reason=f"the real cases are not in {REAL_DIR}")


def stored_in(reference: Path, axcodes: str, out: Path) -> Path:
    """Every file of the study of ``reference`` re-stored in voxel order ``axcodes`` (same world positions)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in reference.parent.glob(reference.name.split("_")[0] + "_*.nii*"):
        img = nib.load(str(path))
        transform = ornt_transform(io_orientation(img.affine), axcodes2ornt(axcodes))
        data = apply_orientation(np.asanyarray(img.dataobj), transform)
        nib.save(nib.Nifti1Image(data, img.affine @ inv_ornt_aff(transform, img.shape)), str(out / path.name))
    return out / reference.name


def in_ras(label: np.ndarray, reference: Path) -> np.ndarray:
    return apply_orientation(label, io_orientation(nib.load(str(reference)).affine))


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """The app's tasks with the models that never saw a real case: the shipped MRI lesion models learned
    from the ISLES'22 cases, so the yardstick refuses them there; these tests are about conventions, and
    the phantom-only lesion models (model/shipped/phantom_only) stand in for them."""
    from scripts.harness import APP_DIR, load_infer_tasks

    shipped = APP_DIR / "model" / "shipped"
    folder = tmp_path_factory.mktemp("models") / "shipped"
    folder.mkdir()
    for path in shipped.iterdir():
        if path.is_file():
            stand_in = shipped / "phantom_only" / path.name
            (folder / path.name).symlink_to(stand_in if stand_in.exists() else path)
    return load_infer_tasks(folder.parent)


@pytest.fixture(scope="module")
def real_runs(tasks):
    """The run of a task's method on the real case of a kind as distributed (the ones these tests were written for,
    ISLES'22 0001 and ISLES'24 0143), computed once for the module: the voxel-order, vendor-fill and variant tests
    all compare with it. Lazy, so each run is made inside the first test that asks (with that test's torch threads)."""
    _scripts_importable()
    from evaluate_real import run_one
    from harness import real_studies

    references = {"mri": ISLES22_DWI.resolve(), "ctp": ISLES24_TMAX.resolve()}
    task_of = {"mri": "ischemic_lesion", "ctp": "core_penumbra"}
    cache = {}

    def run(kind: str, method: str):
        if (kind, method) not in cache:
            studies = [s for s in real_studies(REAL_DIR) if s.kind == kind and Path(s.reference).resolve() == references[kind]]
            assert len(studies) == 1, f"no {kind} study of the real cases found in {REAL_DIR}"
            study = studies[0]
            cache[kind, method] = run_one(task_of[kind], tasks[task_of[kind]], study, method)
            assert cache[kind, method].error is None and cache[kind, method].refused is None, cache[kind, method]
        return cache[kind, method]

    return run


@pytest.fixture(scope="module")
def native_mri_labels(real_runs):
    """The real MRI case's label as distributed, per method: computed once, compared with each voxel order's."""
    return lambda method: real_runs("mri", method).label


@needs_real
@pytest.mark.parametrize("axcodes", ["RAS", "LPS"])
def test_the_real_mri_case_gets_the_same_label_in_any_voxel_order(tasks, native_mri_labels, tmp_path, axcodes, one_torch_thread):
    from scripts.harness import run_infer

    other = stored_in(ISLES22_DWI, axcodes, tmp_path / axcodes)
    for method in ("baseline", "model"):
        native = native_mri_labels(method)
        reoriented, result = run_infer(tasks["ischemic_lesion"], other, method)
        assert reoriented.shape == nib.load(str(other)).shape  # on the variant's own stored grid
        assert np.array_equal(in_ras(native, ISLES22_DWI), in_ras(reoriented, other)), method
        if axcodes != "LAS":
            assert "orientation" in result.get("input_notes", {}) or axcodes == "RAS"


@needs_real
@pytest.mark.skipif(not ISLES24_TMAX.exists(), reason="no ISLES'24 case")
def test_the_real_perfusion_maps_with_vendor_fills_are_read_and_thresholded(real_runs):
    from strokelabel.study import load_study

    result = real_runs("ctp", "baseline").result
    notes = result["input_notes"]["values"]
    assert notes["cbf"]["background_fill"] == pytest.approx(1e-6) and notes["tmax"]["background_fill"] == -30
    study = load_study(ISLES24_TMAX, ("cbf", "cbv", "mtt", "tmax"))
    tmax6_ml = float((study.brain_mask & (study.images["tmax"] > 6)).sum() * study.voxel_volume_ml)
    assert result["hypoperfusion_volume_ml"] == pytest.approx(tmax6_ml, rel=0.05)
    assert 0 < result["core_volume_ml"] < result["hypoperfusion_volume_ml"]


@pytest.fixture(scope="module")
def ctp_phantom(tasks, tmp_path_factory):
    """A CTP phantom as generated (RAS), and each task's label of it per method, computed once for the voxel orders
    compared with it (lazy: made inside the first test that asks, with that test's torch threads)."""
    from scripts.harness import run_infer
    from strokelabel.phantom import generate_dataset

    # The maps only: with the maps there, no task reads the raw 4D series (strokelabel.study derives maps from it only
    # when they are missing), and writing it, then re-storing it per voxel order, was most of this test's file work.
    records = generate_dataset(tmp_path_factory.mktemp("ras"), per_kind=1, labelled_per_kind=0, seed=11, kinds=("ctp",), progress=None,
                               write_ctp_series=False)
    tmax = records[0]["reference"]
    cache = {}

    def ras_label(name: str, method: str) -> np.ndarray:
        if (name, method) not in cache:
            cache[name, method] = run_infer(tasks[name], tmax, method)[0]
        return cache[name, method]

    return tmax, ras_label


@pytest.mark.parametrize("axcodes", ["LPS", "PIL"])
def test_a_phantom_stored_in_another_voxel_order_gets_the_same_label_from_every_task(tasks, ctp_phantom, tmp_path, axcodes, one_torch_thread):
    from scripts.harness import run_infer

    tmax, ras_label = ctp_phantom
    other = stored_in(tmax, axcodes, tmp_path / axcodes)
    for name in ("core_penumbra", "ischemic_lesion"):
        for method in ("baseline", "model"):
            ras = ras_label(name, method)
            label, result = run_infer(tasks[name], other, method)
            # the baselines read no orientation: exact; a network may flip a voxel whose two
            # classes tie to float rounding (measured: 1 of 393 216)
            allowed = 0 if method == "baseline" else 10
            assert np.count_nonzero(ras != in_ras(label, other)) <= allowed, (name, method)
            assert result["input_notes"]["orientation"].startswith(f"stored {axcodes}")


# Variants of the real cases (strokelabel.conventions.standard_variants, written to tmp_path) and how
# far each figure may move. Storage order, mirror, dtype, ADC unit and fill values change no voxel's
# meaning: the label must follow exactly (a mirrored study gets the mirrored label). Thick oblique
# slices and an added skull change the data, so the figures move; the bounds are the measured
# figures with a margin (scripts/evaluate.py --real ../shared/real --variants prints them).
LOSSLESS = ("stored RAS", "stored LAS", "stored LPS", "mirrored L-R", "float32", "float64", "ADC x1000", "fill -30",
            # as a scanner stores them (issue 21): the 4D series with its .bval, a trailing axis of 1
            "4D DWI + bval", "singleton 4D")


def _scripts_importable() -> None:
    """scripts/evaluate_real.py imports its siblings by name (``from harness import ...``), as when run as a script."""
    import sys

    scripts = str(Path(__file__).resolve().parents[2] / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)


def _variant_rows(tasks, real_runs, kind, name, methods, tmp_path):
    import evaluate_real

    # One study per kind, the ones these tests were written for (ISLES'22 0001, ISLES'24 0143): every variant
    # of every case is ~10 min on 2 cores; `scripts/evaluate.py --real DIR --variants` prints all four MRI cases.
    runs = [real_runs(kind, method) for method in methods]  # the study as distributed, shared with the tests above
    studies = [runs[0].study]
    tables = evaluate_real.variant_tables({name: tasks[name]}, studies, Path(REAL_DIR), runs, set(methods), tmp_path)
    return [row for table in tables for row in table.rows]


@needs_real
def test_the_real_mri_case_in_other_conventions_keeps_its_label(tasks, real_runs, tmp_path, one_torch_thread):
    rows = _variant_rows(tasks, real_runs, "mri", "ischemic_lesion", ("baseline", "model", "auto"), tmp_path)
    by = {(row["variant"], row["method"]): row for row in rows}
    for row in rows:
        assert "error" not in row, row
        if row["variant"] == "mirrored L-R":
            # the model's probability is mirror-averaged and the mid-sagittal plane mirror-consistent, so the
            # mirror channels and the DWI/ADC evidence decision mirror too (measured on 0001-0004 with the
            # phantom-only model: label agreement 1.000, the same components removed; before the plane was
            # made mirror-consistent 0.964 on 0002, where auto also flipped to the baseline); auto serves the
            # same method
            original = by.get(("unchanged", row["method"]))
            assert row["lesion_dice_vs_original"] >= 0.999 and abs(row["lesion_change_pct"]) <= 0.5, row
            if original is not None:
                assert row.get("served") == original.get("served"), (row, original)
        elif row["variant"] in LOSSLESS:
            assert row["lesion_dice_vs_original"] >= 0.98 and abs(row["lesion_change_pct"]) <= 2.0, row
        elif row["variant"] == "int16":
            # whole numbers (DWI scaled to 2000, ADC in 10^-6 mm²/s): quantisation moves threshold voxels
            # (measured: the baseline's 1.6 mL lesion -5.5 %, Dice 0.97 against the float study)
            assert row["lesion_dice_vs_original"] >= 0.95 and abs(row["lesion_change_pct"]) <= 10.0, row
        elif row["variant"] == "synthetic skull":
            assert row["lesion_dice_vs_original"] >= 0.8 and abs(row["lesion_change_pct"]) <= 25.0, row
    # 4.8 mm oblique slices: the model keeps the lesion's place against the expert (measured: Dice vs the
    # expert 0.38 there, 0.33 on the study as distributed), with less volume (3.4 mL, -44 % of its answer on
    # the distributed study: the DWI/ADC evidence filter drops components partial volume made faint; before
    # the filter 0.61 vs the original, -8 %); the threshold baseline loses most of a 1.6 mL lesion to partial
    # volume (measured -75 %), and auto serves one of the two with the guard's verdict
    oblique = {m: by[("oblique 1.8x1.8x4.8", m)] for m in ("baseline", "model", "auto")}
    assert oblique["model"]["dice_vs_expert"] >= 0.3 and abs(oblique["model"]["lesion_change_pct"]) <= 50.0, oblique["model"]
    assert oblique["baseline"]["lesion_dice_vs_original"] >= 0.2
    assert oblique["auto"]["lesion_ml"] in (oblique["model"]["lesion_ml"], oblique["baseline"]["lesion_ml"])


@needs_real
@pytest.mark.skipif(not ISLES24_TMAX.exists(), reason="no ISLES'24 case")
def test_the_real_perfusion_maps_in_other_conventions_keep_their_label(tasks, real_runs, tmp_path, one_torch_thread):
    rows = _variant_rows(tasks, real_runs, "ctp", "core_penumbra", ("baseline", "auto"), tmp_path)
    for row in rows:
        assert "error" not in row, row
        if row["variant"] in LOSSLESS:
            assert row["hypo_dice_vs_original"] >= 0.98 and abs(row["hypo_change_pct"]) <= 2.0, row
        elif row["variant"].startswith("fill"):
            # a fill of 0 or NaN inside the brain's edge reads as "no value" there: a few voxels differ
            assert row["hypo_dice_vs_original"] >= 0.95 and abs(row["hypo_change_pct"]) <= 3.0, row
        elif row["variant"].startswith("oblique"):
            assert row["hypo_dice_vs_original"] >= 0.85 and abs(row["hypo_change_pct"]) <= 10.0, row


@pytest.mark.parametrize("kind", ["ctp", "mri"])
def test_a_mirrored_phantom_gets_the_mirrored_label_from_every_method(tasks, tmp_path, kind, one_torch_thread):
    # the same check as on the real cases, on a phantom, so it runs where ../shared/real is absent
    from scripts.harness import run_infer
    from strokelabel.conventions import mirror_left_right
    from strokelabel.phantom import generate_dataset

    (record,) = generate_dataset(tmp_path / "original", per_kind=1, labelled_per_kind=0, seed=12, kinds=(kind,), progress=None,
                                 write_ctp_series=False)  # the maps only (see ctp_phantom)
    reference = Path(record["reference"])
    mirrored_dir = tmp_path / "mirrored"
    mirrored_dir.mkdir()
    for path in reference.parent.glob(reference.name.split("_")[0] + "_*.nii*"):
        nib.save(mirror_left_right(nib.load(str(path))), str(mirrored_dir / path.name))
    mirrored = mirrored_dir / reference.name
    names = ("core_penumbra", "ischemic_lesion") if kind == "ctp" else ("ischemic_lesion",)
    for name in names:
        for method in ("baseline", "model"):
            label, _ = run_infer(tasks[name], reference, method)
            other, _ = run_infer(tasks[name], mirrored, method)
            expected = np.asarray(mirror_left_right(nib.Nifti1Image(label.astype(np.uint8), nib.load(str(reference)).affine)).dataobj)
            assert np.count_nonzero(label) > 0, (name, method)
            # the mid-sagittal plane is mirror-consistent and the model mirror-averaged: exact but for voxels whose
            # two classes tie to float rounding (before the plane was mirror-consistent: 12 of 8 423 on MRI)
            allowed = 0 if method == "baseline" else 10
            assert np.count_nonzero(expected != other) <= allowed, (name, method, np.count_nonzero(expected != other))
