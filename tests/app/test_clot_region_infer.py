"""clot_region infer task: model path (segmentation + classifier), agreement of label and flags,
studies without atlas or SPIRAL, and the trainers' bad-input errors."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from lib.datastore import StrokeDatastore
from lib.trainers.reference_studies import DECISION_PHANTOMS
from main import build_task_configs
from strokelabel.errors import StrokeLabelError
from strokelabel.naming import find_modalities
from strokelabel.phantom import generate_dataset


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("cta")
    records = generate_dataset(root, per_kind=3, labelled_per_kind=3, size="small", seed=31, kinds=("cta",), progress=lambda *a, **k: None)
    return root, records


def config_with_models(model_dir: Path, classifier: bool = True, bias: float = 0.0):
    """The task config with random-weight checkpoints in its model folder (the seg net's last bias shifted)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    config = build_task_configs(str(model_dir), {}, "clot_region")["clot_region"]
    torch.manual_seed(0)
    state = config.network.state_dict()
    last_bias = [k for k in state if k.endswith("bias")][-1]
    state[last_bias] = state[last_bias] + bias
    torch.save({"model": state}, config.in_use_path)
    if classifier:
        torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in config.classifier.state_dict().items()}},
                   config.classifier_in_use_path)
    return config


def infer(config, reference, method="model"):
    _, data = config.infer()({"image": str(reference), "method": method, "skip_writer": True, "device": "cpu"})
    return np.asarray(data["pred"]), data["result"]


def copy_study(record, root: Path, drop=()):
    """A copy of a generated study without some modalities."""
    folder = root / "copy" / record["reference"].parent.name
    folder.mkdir(parents=True, exist_ok=True)
    for modality, path in find_modalities(record["reference"]).items():
        if modality not in drop:
            (folder / path.name).write_bytes(path.read_bytes())
    return folder / record["reference"].name


@pytest.mark.parametrize("bias", [0.0, 3.0])
def test_model_label_is_clot_and_the_region_flags_are_exactly_clot_and_atlas(studies, tmp_path, bias):
    root, records = studies
    config = config_with_models(tmp_path / "model", bias=bias)
    pred, result = infer(config, records[0]["reference"])
    atlas = np.asarray(nib.load(str(records[0]["modalities"]["atlas"])).dataobj)
    assert result["method"] == "model" and result["models"] == {"segmentation": "clot_region.pt", "classifier": "clot_region_classifier.pt"}
    assert pred.shape == atlas.shape and set(np.unique(pred)) <= {0, 1}
    box = np.zeros(atlas.shape, bool)  # segmented only in the atlas' bounding box grown by 16 voxels in-plane
    (x0, y0, z0), (x1, y1, z1) = np.argwhere(atlas > 0).min(0), np.argwhere(atlas > 0).max(0)
    box[max(0, x0 - 16):x1 + 17, max(0, y0 - 16):y1 + 17, z0:z1 + 1] = True
    assert np.all(pred[~box] == 0)
    flagged = sorted(r["region"] for r in result["regions"] if r["clot"])
    assert flagged == sorted(set(np.unique(atlas[pred > 0]).tolist()) - {0}) == result["atlas_regions_with_clot"]
    assert all((r["probability"] >= 0.5) == r["clot"] for r in result["regions"])
    assert result["clot_voxels"] == int(pred.sum())
    if pred.sum():
        assert result["clot_hemisphere"] in ("L", "R") and result["clot_slice_index"] is not None
    assert len(result["classifier_regions"]) == 15 and isinstance(result["regions_agree"], bool)


def test_without_atlas_the_clot_is_still_segmented_and_the_result_says_flags_need_it(studies, tmp_path):
    root, records = studies
    config = config_with_models(tmp_path / "model", bias=3.0)
    reference = copy_study(records[1], tmp_path, drop=("atlas",))
    pred, result = infer(config, reference)
    assert pred.sum() > 0  # the shifted bias makes the random net call clot somewhere
    assert result["regions"] is None and "atlas" in result["regions_note"]
    assert len(result["classifier_regions"]) == 15  # the classifier names regions from the image alone


def test_without_spiral_the_model_runs_and_the_baseline_names_the_missing_map(studies, tmp_path):
    root, records = studies
    config = config_with_models(tmp_path / "model", classifier=False)
    reference = copy_study(records[1], tmp_path, drop=("spiral", "cta2", "cta3"))
    pred, result = infer(config, reference)
    assert result["method"] == "model" and len(result["regions"]) == 15 and "classifier_regions" not in result
    assert "cta2 missing: phase 1 used in its place" in result["input_notes"]
    with pytest.raises(StrokeLabelError, match="spiral"):
        infer(config, reference, method="baseline")


def test_without_spiral_the_cta_only_segmentation_runs_when_installed(studies, tmp_path):
    root, records = studies
    config = config_with_models(tmp_path / "model", classifier=False, bias=-20.0)  # the main model calls nothing clot
    torch.manual_seed(1)
    cta_only = config.trainer()["clot_region_cta"]._network.state_dict()
    last_bias = [k for k in cta_only if k.endswith("bias")][-1]
    cta_only[last_bias] = cta_only[last_bias] + 20.0  # and the CTA-only one everything
    torch.save({"model": cta_only}, config.cta_only_in_use_path)

    pred, result = infer(config, copy_study(records[1], tmp_path, drop=("spiral",)))
    assert result["models"] == {"segmentation": "clot_region_cta.pt"} and pred.sum() > 0
    assert "no SPIRAL map: the CTA-only segmentation (clot_region_cta.pt) ran" in result["input_notes"]
    pred, result = infer(config, records[1]["reference"])  # with SPIRAL: the main model
    assert result["models"] == {"segmentation": "clot_region.pt"} and pred.sum() == 0


def test_without_any_model_auto_falls_back_to_the_spiral_baseline(studies, tmp_path):
    root, records = studies
    config = build_task_configs(str(tmp_path / "empty"), {}, "clot_region")["clot_region"]
    pred, result = infer(config, records[2]["reference"], method="auto")
    assert result["method"] == "baseline" and result["spiral_threshold"] == 0.9 and len(result["regions"]) == 15


def run_trainer(trainer, datastore, **request):
    return trainer({"device": "cpu", "dataset": "Dataset", "dataloader": "DataLoader", "multi_gpu": False,
                    "max_epochs": 1, "samples_per_study": 4, **request}, datastore)


def test_training_without_labels_or_with_wrong_label_values_is_a_clear_error_and_keeps_the_model(studies, tmp_path):
    root, records = studies
    config = config_with_models(tmp_path / "model")
    before = Path(config.in_use_path).read_bytes()
    unlabelled = tmp_path / "unlabelled"
    (unlabelled / "x").mkdir(parents=True)
    copy_study(records[0], unlabelled)
    for trainer in config.trainer().values():
        with pytest.raises(StrokeLabelError, match="needs a final label for at least 1 CTA study; the datastore has none"):
            run_trainer(trainer, StrokeDatastore(str(unlabelled / "copy")))
    labels = root / "labels" / "final"
    bad = labels / records[1]["reference"].name
    good = bad.read_bytes()
    try:
        img = nib.load(str(bad))
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj).astype(np.uint8) * 2, img.affine), str(bad))
        with pytest.raises(StrokeLabelError, match=r"values \[2\]"):
            run_trainer(config.trainer()["clot_region"], StrokeDatastore(str(root)))
    finally:
        bad.write_bytes(good)
    assert Path(config.in_use_path).read_bytes() == before


def test_every_trainer_trains_from_clot_labels_and_publish_or_keep_aside(studies, tmp_path):
    root, records = studies
    config = build_task_configs(str(tmp_path / "model"), {}, "clot_region")["clot_region"]
    datastore = StrokeDatastore(str(root))
    for name, trainer in config.trainer().items():
        stats = run_trainer(trainer, datastore, max_epochs=1)
        # three labels: two train, one of the site's decides beside the decision phantoms
        assert 0.0 <= stats["candidate_val_dice"] <= 1.0 and stats["train_studies"] == 2 and len(stats["site_held_out_studies"]) == 1
        assert len(stats["val_studies"]) == 1 + DECISION_PHANTOMS
        assert sum(s.startswith("reference/") for s in stats["val_studies"]) == DECISION_PHANTOMS
        # a first model is published unless it got nothing right on validation
        assert stats["published"] == (stats["candidate_val_dice"] > 0), stats
        assert Path(tmp_path / "model" / f"{name}.pt").exists() == stats["published"]
        assert stats["reason"] == "first trained model" if stats["published"] else "got nothing right" in stats["reason"]
        again = run_trainer(trainer, datastore, max_epochs=1)
        assert (again["in_use_val_dice"] is not None) == stats["published"]
        in_use = again["in_use_val_dice"] if again["in_use_val_dice"] is not None else 0.0
        assert again["published"] == (again["candidate_val_dice"] > 0 and again["candidate_val_dice"] >= in_use)


def test_the_active_learning_score_is_high_where_the_model_finds_no_clot_it_is_sure_of(studies, tmp_path):
    root, records = studies
    reference = str(records[0]["reference"])
    sure = config_with_models(tmp_path / "sure", bias=8.0).infer().clot_uncertainty(reference, samples=2, device="cpu")
    unsure = config_with_models(tmp_path / "unsure", bias=-8.0, classifier=False).infer().clot_uncertainty(reference, samples=2, device="cpu")
    assert sure["least_confidence"] < 0.01 < 0.99 < unsure["least_confidence"]
    assert sure["least_confidence"] == pytest.approx(1 - sure["max_clot_probability"])
    assert sure["classifier_mc_std"] >= 0.0 and "classifier_mc_std" not in unsure  # MC dropout only with a classifier


def test_the_config_registers_the_clot_scoring_and_the_most_uncertain_strategy(tmp_path):
    from lib.configs.clot_region import SCORING, STRATEGY, UNCERTAINTY_KEY

    config = build_task_configs(str(tmp_path / "model"), {}, "clot_region")["clot_region"]
    scoring, strategy = config.scoring_method()[SCORING], config.strategy()[STRATEGY]
    assert scoring.key == strategy.key == UNCERTAINTY_KEY and scoring.kinds == strategy.kinds == ("cta",)
    assert scoring.infer_task is config.infer()  # one infer task: the scores are of the model that infers


def test_stray_clot_specks_are_dropped_but_a_second_clot_of_similar_mass_is_kept():
    from lib.infers.clot_region import keep_main_clots

    prob = np.zeros((20, 20, 5), np.float32)
    prob[2:5, 2:5, 1] = 0.9  # the clot: 9 voxels
    prob[10:13, 10:12, 3] = 0.8  # a tandem clot: 6 voxels, mass 4.8 >= half of 8.1
    prob[17, 17, 4] = 0.6  # a speck
    mask, dropped = keep_main_clots(prob)
    assert dropped == 1 and mask.sum() == 15 and not mask[17, 17, 4]
    assert keep_main_clots(np.zeros((4, 4, 2), np.float32))[1] == 0


def test_keep_main_clots_in_the_candidates_box_equals_the_whole_grid_labelling():
    from scipy import ndimage

    from lib.infers.clot_region import keep_main_clots

    rng = np.random.default_rng(5)
    prob = np.zeros((40, 36, 16), np.float32)
    prob[10:14, 20:23, 5:8] = 0.9  # the clot
    prob[25:28, 8:11, 9:13] = 0.8  # a second clot of similar mass: kept
    prob[30, 30, 12] = 0.6  # a speck: dropped
    prob += rng.random(prob.shape).astype(np.float32) * 0.3
    mask, dropped = keep_main_clots(prob)
    labels, n = ndimage.label(prob >= 0.5)  # the rule on the whole grid
    mass = ndimage.sum(prob, labels, index=np.arange(1, n + 1))
    whole = np.isin(labels, np.flatnonzero(mass >= 0.5 * mass.max()) + 1)
    np.testing.assert_array_equal(mask, whole)
    assert dropped == n - len(np.unique(labels[whole])) and mask[11, 21, 6] and mask[25, 8, 9] and not mask[30, 30, 12]
