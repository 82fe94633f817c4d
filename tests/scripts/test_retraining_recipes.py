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


def test_the_proxy_sites_seeds_are_apart_from_each_other_and_from_the_trainers_phantoms():
    sys.path.insert(0, str(retraining_recipes.APP_DIR))
    from lib.trainers.reference_studies import REFERENCE_SEED, REHEARSAL_SEED

    seeds = [s for site in retraining_recipes.SITES.values() for s in (site["site_seed"], site["held_out_seed"])]
    seeds += [retraining_recipes.OWN_FAMILY_SEED, REFERENCE_SEED, REHEARSAL_SEED]
    assert len(seeds) == len(set(seeds))


def test_the_trainer_default_recipe_replaces_the_common_options_whole():
    assert retraining_recipes.recipe_options("trainer_default") == retraining_recipes.TRAINER_DEFAULT
    fixed_1to2 = retraining_recipes.recipe_options("own_training_fixed_norms_1to2")
    assert fixed_1to2["lesion_crop_ratio"] == "1:2" and fixed_1to2["fixed_norm_statistics"] is True
    assert fixed_1to2["learning_rate"] == retraining_recipes.OWN_TRAINING["learning_rate"]


def run_json(name, site, dice, fp_ml, own):
    steps = [{"corrections": k, "studies": [{"dice": d, "fp_ml": f, "lesion_f1": 0.5}], "own_family": [{"dice": o}]}
             for k, (d, f, o) in enumerate(zip(dice, fp_ml, own))]
    for step in steps[1:]:
        step.update({"train_s": 100.0, "cpu_s": 30.0})
    return {"recipe": name, "site": site, "request": {}, "steps": steps}


def test_the_fresh_sites_report_judges_the_fourth_comparison_and_writes_only_a_qualifying_recipe(tmp_path, capsys):
    import json

    runs = {"own_training_fixed_norms": ([0.55, 0.55, 0.54, 0.53], [2.0, 2.1, 2.3, 2.5]),
            "trainer_default": ([0.55, 0.56, 0.57, 0.58], [2.0, 1.8, 1.6, 1.4])}
    for name, (dice, fp) in runs.items():
        (tmp_path / f"recipe_{name}.json").write_text(json.dumps(run_json(name, "scanner_shift", dice, fp, [0.82] * 4)))
    chosen = tmp_path / "chosen.json"
    assert retraining_recipes.report(tmp_path, str(chosen)) == 0
    printed = capsys.readouterr().out
    assert "fourth comparison (fresh proxy site), by its rule written before the runs: trainer_default" in printed
    assert json.loads(chosen.read_text()) == retraining_recipes.TRAINER_DEFAULT

    (tmp_path / "recipe_trainer_default.json").write_text(
        json.dumps(run_json("trainer_default", "scanner_shift", [0.55, 0.50, 0.57, 0.54], [2.0, 1.2, 1.4, 1.4], [0.82] * 4)))
    chosen.unlink()
    retraining_recipes.report(tmp_path, str(chosen))
    assert "no recipe adopted" in capsys.readouterr().out and not chosen.exists()
