"""scripts/retraining_recipes.py's choice rules, on figures written by hand: a recipe is adopted only when it
gains, keeps false positives and the starting model's own family, and none is adopted otherwise."""

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import retraining_recipes  # noqa: E402


def summary(dice, fp_ml, own_dice, train_s=100.0):
    return {"dice": dice, "fp_ml": fp_ml, "own_dice": own_dice, "train_s": train_s,
            "worst_step_drop": max(a - b for a, b in zip(dice, dice[1:]))}


def test_no_recipe_is_adopted_when_none_gains_without_more_false_positives():
    name, why = retraining_recipes.choose({
        "flat": summary([0.65, 0.65, 0.65, 0.655], [2.8, 2.8, 2.8, 2.7], [0.82, 0.82, 0.82, 0.82]),
        "more_fp": summary([0.65, 0.66, 0.67, 0.70], [2.8, 3.0, 3.5, 4.0], [0.82, 0.82, 0.82, 0.82]),
        "forgets": summary([0.65, 0.66, 0.67, 0.70], [2.8, 2.6, 2.4, 2.0], [0.82, 0.80, 0.79, 0.78]),
    })
    assert name is None
    assert "flat: proxy Dice gain +0.005" in why and "more_fp: FP up" in why and "forgets: own family" in why


def test_the_best_qualifying_recipe_wins_and_a_cheaper_one_within_0_005_beats_it():
    good = summary([0.65, 0.66, 0.67, 0.700], [2.8, 2.6, 2.4, 2.0], [0.82, 0.82, 0.82, 0.815], train_s=300)
    cheaper = summary([0.65, 0.66, 0.67, 0.697], [2.8, 2.6, 2.4, 2.0], [0.82, 0.82, 0.82, 0.82], train_s=100)
    worse = summary([0.65, 0.66, 0.67, 0.680], [2.8, 2.6, 2.4, 2.0], [0.82, 0.82, 0.82, 0.82], train_s=50)
    assert retraining_recipes.choose({"good": good, "worse": worse})[0] == "good"
    assert retraining_recipes.choose({"good": good, "cheaper": cheaper, "worse": worse})[0] == "cheaper"
    dropping = summary([0.65, 0.59, 0.67, 0.70], [2.8, 2.6, 2.4, 2.0], [0.82, 0.82, 0.82, 0.82])
    assert retraining_recipes.qualifies(dropping) == ["a step drops 0.060"]
