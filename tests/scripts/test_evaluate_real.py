"""scripts/evaluate.py --real on a tiny tree shaped as ISLES'22 and ISLES'24 distribute theirs
(synthetic volumes written to tmp_path; the real cases are never copied)."""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import evaluate  # noqa: E402
import evaluate_real  # noqa: E402
from harness import load_infer_tasks, real_studies  # noqa: E402

MRI_ID, CTP_ID = "sub-strokecase0007_ses-0001", "sub-stroke0042_ses-01"


def ellipsoid(shape, fraction=0.38):
    idx = np.indices(shape).astype(np.float64)
    centre = (np.asarray(shape) - 1) / 2.0
    return sum(((idx[i] - centre[i]) / (fraction * shape[i])) ** 2 for i in range(3)) <= 1.0


def save(img, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def write_isles22(root: Path) -> np.ndarray:
    """DWI/ADC (LAS, 2 mm, float64, ADC in 10^-3, skull-stripped) and the mask; returns the lesion."""
    shape = (40, 44, 20)
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (40.0, -44.0, -20.0)
    rng = np.random.default_rng(7)
    brain = ellipsoid(shape)
    lesion = np.zeros(shape, bool)
    lesion[10:15, 18:23, 8:12] = True  # one hemisphere only
    dwi = np.where(brain, 300 + rng.normal(0, 10, shape), 0.0)
    adc = np.where(brain, 0.8 + rng.normal(0, 0.03, shape), 0.0)
    dwi[lesion], adc[lesion] = 900.0, 0.4
    ses = root / "rawdata" / "sub-strokecase0007" / "ses-0001"
    save(nib.Nifti1Image(dwi, affine), ses / "dwi" / f"{MRI_ID}_dwi.nii.gz")
    save(nib.Nifti1Image(adc, affine), ses / "dwi" / f"{MRI_ID}_adc.nii.gz")
    save(nib.Nifti1Image(lesion.astype(np.uint16), affine),
         root / "derivatives" / "sub-strokecase0007" / "ses-0001" / f"{MRI_ID}_msk.nii.gz")
    return lesion


def write_isles24(root: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """CBF/CBV/MTT/Tmax (LPS, 2 x 2 x 4 mm, float32, Tmax filled with -30 outside); returns
    (Tmax > 6 s, rCBF < 30 %, voxel mL)."""
    shape = (48, 48, 10)
    affine = np.diag([-2.0, -2.0, 4.0, 1.0])
    affine[:3, 3] = (48.0, 48.0, -20.0)
    rng = np.random.default_rng(3)
    brain = ellipsoid(shape, 0.42)
    hypo = brain & (np.indices(shape)[0] < 18)
    core = hypo & (np.indices(shape)[1] < 24)
    cbf = np.where(brain, 50 + rng.normal(0, 2, shape), 0.0)
    cbf[core] = 10.0
    tmax = np.where(brain, 2.0, -30.0)
    tmax[hypo] = 9.0
    maps = {"cbf": cbf, "cbv": np.where(brain, 4.0, 0.0), "mtt": np.where(brain, 5.0, 0.0), "tmax": tmax}
    folder = root / "raw_data" / "sub-stroke0042" / "ses-01" / "perfusion-maps"
    for name, values in maps.items():
        save(nib.Nifti1Image(values.astype(np.float32), affine), folder / f"{CTP_ID}_{name}.nii.gz")
    return hypo, core, 2 * 2 * 4 / 1000.0


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    top = tmp_path_factory.mktemp("real")
    lesion = write_isles22(top / "isles22")
    hypo, core, voxel_ml = write_isles24(top / "isles24")
    return top, lesion, hypo, core, voxel_ml


@pytest.fixture(scope="module")
def lesion_task():
    return load_infer_tasks(models="ischemic_lesion")


def table_after(text: str, heading: str) -> list[dict]:
    """The rows of the first table printed after the line starting with ``heading``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    header = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("study") or lines[i].startswith("variant"))
    columns = lines[header].split()
    rows = []
    for line in lines[header + 2:]:
        if not line.strip():
            break
        rows.append(dict(zip(columns, line.split())))
    return rows


def test_real_studies_are_found_in_isles22_and_isles24_trees_under_one_folder(tree):
    top, *_ = tree
    studies = {s.study_id: s for s in real_studies(top)}
    assert set(studies) == {MRI_ID, CTP_ID}
    assert studies[MRI_ID].kind == "mri" and studies[MRI_ID].expert_mask.name == f"{MRI_ID}_msk.nii.gz"
    assert studies[CTP_ID].kind == "ctp" and studies[CTP_ID].expert_mask is None
    # the same study found when DIR is the data set's own folder
    assert real_studies(top / "isles22")[0].expert_mask == studies[MRI_ID].expert_mask


def test_real_tables_score_the_mask_and_the_physiology(tree, capsys):
    top, lesion, hypo, core, voxel_ml = tree

    assert evaluate.main(["--real", str(top), "--tasks", "core_penumbra,ischemic_lesion", "--methods", "baseline"]) == 0

    out = capsys.readouterr().out
    mri = table_after(out, "## ischemic_lesion: against the expert mask")
    assert [(r["study"], r["method"]) for r in mri] == [(MRI_ID, "baseline")]
    assert float(mri[0]["dice"]) > 0.9
    assert float(mri[0]["mask_ml"]) == pytest.approx(lesion.sum() * 0.008, abs=1e-3)
    assert mri[0]["served"] == "baseline/mri"
    ctp = table_after(out, "## core_penumbra: perfusion maps without a mask")
    assert [(r["study"], r["method"]) for r in ctp] == [(CTP_ID, "baseline")]
    assert float(ctp[0]["tmax6_ml"]) == pytest.approx(hypo.sum() * voxel_ml, abs=1e-3)
    assert float(ctp[0]["rcbf30_ml"]) == pytest.approx(core.sum() * voxel_ml, abs=1e-3)
    assert float(ctp[0]["hypo_dice"]) > 0.95 and float(ctp[0]["core_dice"]) > 0.95
    assert "the baseline's" in out or "the loader's" in out  # the header names the brain mask used
    assert table_after(out, "## ischemic_lesion: perfusion maps without a mask")[0]["study"] == CTP_ID


def test_variants_carry_the_label_and_the_expert_mask_through_each_transform(tree, lesion_task, tmp_path):
    top, *_ = tree
    studies = [s for s in real_studies(top) if s.kind == "mri"]
    runs = evaluate_real.run_all(lesion_task, studies, {"baseline"})

    (table,) = evaluate_real.variant_tables(lesion_task, studies, top, runs, {"baseline"}, tmp_path)

    rows = {row["variant"]: row for row in table.rows}
    assert {"unchanged", "stored RAS", "stored LPS", "mirrored L-R", "oblique 1.8x1.8x4.8", "ADC x1000", "synthetic skull"} <= set(rows)
    # the threshold baseline reads no orientation: the label follows storage and the mirror exactly
    for name in ("stored RAS", "stored LPS", "mirrored L-R", "ADC x1000"):
        assert rows[name]["lesion_dice_vs_original"] == pytest.approx(1.0), name
        assert rows[name]["dice_vs_expert"] == pytest.approx(rows["unchanged"]["dice_vs_expert"]), name
        assert rows[name]["lesion_change_pct"] == pytest.approx(0.0), name
    # thick oblique slices keep the lesion's place and most of its volume
    assert rows["oblique 1.8x1.8x4.8"]["lesion_dice_vs_original"] > 0.5


def model_dir_with_cards(tmp_path: Path, cards: dict) -> Path:
    """The app's shipped MRI lesion models copied into a model folder, with the given cards (None: no card)."""
    import json
    import shutil

    shipped = Path(evaluate.__file__).resolve().parents[1] / "apps" / "stroke" / "model" / "shipped"
    target = tmp_path / "model" / "shipped"
    target.mkdir(parents=True)
    for route, card in cards.items():
        shutil.copy(shipped / f"ischemic_lesion_{route}.pt", target / f"ischemic_lesion_{route}.pt")
        if card is not None:
            (target / f"ischemic_lesion_{route}.json").write_text(json.dumps(card))
    return tmp_path / "model"


def test_a_model_is_refused_on_a_case_its_card_says_it_trained_on(tree, tmp_path):
    top, *_ = tree
    model_dir = model_dir_with_cards(tmp_path, {"mri": {"trained_on_real": ["isles22/sub-strokecase0007"]},
                                                "siamese": {"trained_on_real": ["isles22/sub-strokecase0001"]}})
    tasks = load_infer_tasks(model_dir, models="ischemic_lesion")
    studies = [s for s in real_studies(top) if s.kind == "mri"]

    runs = {run.method: run for run in evaluate_real.run_all(tasks, studies, {"baseline", "model", "siamese", "auto"})}

    # the MDANet route saw the case (model, and auto which may serve it): refused, never run
    for method in ("model", "auto"):
        assert runs[method].label is None and "trained on sub-strokecase0007" in runs[method].refused
        assert evaluate_real.expert_row(runs[method], np.zeros((40, 44, 20), bool))["served"] == "REFUSED"
    # the Siamese route learned from another case, the baseline from none: scored
    assert runs["siamese"].refused is None and runs["siamese"].label is not None
    assert runs["baseline"].refused is None and runs["baseline"].label is not None


def test_a_model_without_a_card_is_refused_on_real_cases(tree, tmp_path, capsys):
    top, *_ = tree
    model_dir = model_dir_with_cards(tmp_path, {"mri": None})

    assert evaluate.main(["--real", str(top / "isles22"), "--tasks", "ischemic_lesion", "--methods", "baseline,model",
                          "--model-dir", str(model_dir)]) == 0

    out = capsys.readouterr().out
    rows = {r["method"]: r for r in table_after(out, "## ischemic_lesion: against the expert mask")}
    assert rows["model"]["served"] == "REFUSED" and rows["baseline"]["served"] == "baseline/mri"
    assert "model on sub-strokecase0007_ses-0001 REFUSED: ischemic_lesion_mri.pt has no model card" in out
    lines = out.splitlines()  # the pooled table: one row per method
    start = next(i for i, line in enumerate(lines) if line.startswith("## ischemic_lesion: pooled"))
    header = lines[start + 2].split()
    values = {line.split()[0]: dict(zip(header, line.split())) for line in lines[start + 4:start + 6]}
    assert values["model"]["n"] == "0" and values["model"]["refused"] == "1"
    assert values["baseline"]["n"] == "1" and float(values["baseline"]["pooled_dice"]) > 0.9
