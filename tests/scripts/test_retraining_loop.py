"""scripts/retraining_loop.py --real, the parts that need no server: the start model is refused when
its card lists a loop case (or does not say), false positives count only beyond the 2-voxel margin,
and the targets are judged on the figures as measured."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import retraining_loop  # noqa: E402

CASES = ["isles22/sub-strokecase0001", "isles22/sub-strokecase0002"]


def model_with_card(tmp_path, card):
    model = tmp_path / "ischemic_lesion_mri.pt"
    model.write_bytes(b"weights")
    if card is not None:
        model.with_suffix(".json").write_text(json.dumps(card))
    return model


def test_a_phantom_only_model_is_accepted(tmp_path):
    retraining_loop.refuse_seen_model(model_with_card(tmp_path, {"trained_on_real": []}), CASES)
    retraining_loop.refuse_seen_model(model_with_card(tmp_path, {"trained_on_real": ["isles22/sub-strokecase0009"]}), CASES)


@pytest.mark.parametrize("card, message", [
    ({"trained_on_real": ["isles22/sub-strokecase0002"]}, "trained on isles22/sub-strokecase0002"),
    ({"task": "ischemic_lesion"}, "does not say which real cases"),
    (None, "no such model with its card"),
])
def test_a_model_that_saw_a_loop_case_or_does_not_say_is_refused(tmp_path, card, message):
    with pytest.raises(SystemExit, match=message):
        retraining_loop.refuse_seen_model(model_with_card(tmp_path, card), CASES)


def test_false_positive_volume_counts_only_beyond_two_voxels_of_the_expert_mask():
    truth = np.zeros((20, 20, 20), bool)
    truth[8:12, 8:12, 8:12] = True
    pred = np.zeros_like(truth)
    pred[6:14, 8:12, 8:12] = True  # two voxels beyond the mask on each side: a border disagreement
    spacing = (2.0, 2.0, 2.0)  # 0.008 mL a voxel
    assert retraining_loop.score_real(pred, truth, spacing)["fp_ml"] == 0.0
    pred[0:2, 0:2, 0:2] = True  # a separate false lesion of 8 voxels
    assert retraining_loop.score_real(pred, truth, spacing)["fp_ml"] == pytest.approx(8 * 0.008)
    assert retraining_loop.score_real(pred, np.zeros_like(truth), spacing)["fp_ml"] == pytest.approx(pred.sum() * 0.008)


def test_targets_are_judged_on_the_measured_curve():
    rows = [{"fold": "a", "corrections": c, "dice": d, "fp_ml": f, "lesion_f1": 0.0, "volume_ml": 0.0}
            for c, d, f in ((0, 0.30, 5.0), (1, 0.33, 4.0), (2, 0.40, 3.0))]
    rows += [{"fold": "b", "corrections": c, "dice": d, "fp_ml": f, "lesion_f1": 0.0, "volume_ml": 0.0}
             for c, d, f in ((0, 0.50, 2.0), (1, 0.44, 2.0), (2, 0.52, 1.0))]
    means = retraining_loop.mean_rows(rows, 2)
    assert [round(m["dice"], 3) for m in means] == [0.4, 0.385, 0.46]
    met = {t["target"]: t["met"] for t in retraining_loop.targets(means, rows)}
    assert met["mean Dice after the last correction >= start + 0.05"] is True
    assert met["false-positive mL going down"] is True
    assert met["no fold drops by more than 0.05 Dice at any step"] is False  # fold b: 0.50 -> 0.44


def test_the_report_prints_every_table_and_draws_the_curve(tmp_path, capsys):
    names = ["isles22/sub-strokecase0001", "isles22/sub-strokecase0002"]
    rows = [{"fold": f, "corrections": c, "dice": 0.3 + 0.1 * c, "fp_ml": 2.0 - c, "lesion_f1": 0.2, "volume_ml": 3.0, "expert_ml": 2.0,
             "model": "ischemic_lesion_mri.pt", **({"published": True, "reason": "r", "train_s": 60.0} if c else {})}
            for f in names for c in (0, 1)]
    trainings = [{"fold": f, "corrections": 1, "corrected": g, "seconds": 60.0, "train_studies": 1, "deciding": 2, "site_deciding": 0,
                  "checkpoint_epoch": 2, "candidate": 0.5, "in_use": 0.4, "published": True, "reason": "pooled Dice 0.5 >= 0.4"}
                 for f, g in zip(names, reversed(names))]
    png = tmp_path / "curve.png"
    retraining_loop.report_real(rows, trainings, names, 2, tmp_path / "model.pt", {"max_epochs": 1}, png)
    out = capsys.readouterr().out
    assert "## Mean over folds" in out and "## Every retraining" in out and "retraining seconds per correction" in out
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
