"""scripts/leave_one_out.py: the issue's targets are judged on the figures given, met or not."""

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from leave_one_out import fold_command, fold_is_trained, target_lines  # noqa: E402


def row(study, method, dice, fp_ml=0.0, mask_ml=5.0, found=True):
    return {"study": study, "method": method, "dice": dice, "fp_ml": fp_ml, "mask_ml": mask_ml, "largest_found": found}


def test_targets_are_met_or_not_by_the_measured_figures():
    rows = [row("sub-strokecase0001_ses-0001", "baseline", 0.30), row("sub-strokecase0001_ses-0001", "model", 0.70, fp_ml=1.0),
            row("sub-strokecase0001_ses-0001", "auto", 0.69),
            row("sub-strokecase0002_ses-0001", "baseline", 0.50), row("sub-strokecase0002_ses-0001", "model", 0.40, fp_ml=2.5, found=False),
            row("sub-strokecase0002_ses-0001", "auto", 0.40)]
    pooled = [{"method": "model", "mean_lesion_f1": 0.55, "pooled_dice": 0.6}]


    text = "\n".join(target_lines(rows, pooled))
    assert "NOT met  model: FP volume <= 2 mL on the cases under 10 mL: strokecase0001 1.00, strokecase0002 2.50" in text
    assert "NOT met  model: each case's largest expert lesion detected" in text
    assert "met      model: mean lesion-wise F1 >= 0.5: 0.550" in text
    assert "NOT met  model: pooled Dice >= 0.65: 0.600" in text
    assert "NOT met  model: no case more than 0.05 Dice below the baseline: strokecase0001 +0.400, strokecase0002 -0.100" in text
    assert "NOT met  auto >= max(model, baseline) - 0.02 Dice per case: strokecase0001 -0.010, strokecase0002 -0.100" in text


def test_a_fold_is_reused_only_when_its_cards_record_the_same_command(tmp_path):
    import json

    fold = tmp_path / "without-sub-strokecase0001"
    command = fold_command(Path("/real"), "sub-strokecase0001", "small_lesions", tmp_path / "phantoms", fold)
    assert not fold_is_trained(fold, command)
    (fold / "model" / "shipped").mkdir(parents=True)
    for route in ("mri", "siamese"):
        card = {"command": "python scripts/train_ischemic_lesion.py " + " ".join(command)}
        (fold / "model" / "shipped" / f"ischemic_lesion_{route}.json").write_text(json.dumps(card))
    assert fold_is_trained(fold, command)
    other = fold_command(Path("/real"), "sub-strokecase0001", "as_shipped", tmp_path / "phantoms", fold)
    assert not fold_is_trained(fold, other)
