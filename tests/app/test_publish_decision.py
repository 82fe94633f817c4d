"""The split and the publish rule with one to three site labels (and many), without training:
the checkpoint is chosen on studies disjoint from those that decide publication, neither set is a
single study, every label trains while there are fewer than three, and a worse candidate is refused."""

from __future__ import annotations

import math

import pytest

from lib.trainers.publish_decision import (
    NONINFERIORITY_MARGIN,
    SITE_SELECTION_FROM,
    WORST_STUDY_DROP,
    decide,
    held_out_count,
    paired_differences,
    pooled_dice,
    split_site_labels,
    study_name,
)


def studies(prefix: str, n: int) -> list[dict]:
    return [{"image": f"/data/{prefix}{i:02d}_dwi.nii.gz", "label": f"/data/labels/{prefix}{i:02d}.nii.gz", "kind": "mri"} for i in range(n)]


SELECTION, DECISION = studies("phantom-sel", 2), studies("phantom-dec", 2)


def names(items):
    return {study_name(d) for d in items}


@pytest.mark.parametrize("n_site, n_held", [(1, 0), (2, 0), (3, 1), (4, 1), (6, 2), (8, 2), (16, 4)])
def test_every_label_trains_until_two_remain_after_holding_out(n_site, n_held):
    split = split_site_labels(studies("site", n_site), SELECTION, DECISION, val_split=0.25)
    assert held_out_count(n_site, 0.25) == n_held
    assert len(split.train) == n_site - n_held >= 1
    assert len(split.site_held_out) == n_held
    assert names(split.train).isdisjoint(names(split.site_held_out))
    assert names(split.train) | names(split.site_held_out) == names(studies("site", n_site))


@pytest.mark.parametrize("n_site", [1, 2, 3, 4, 8, 16, 40])
def test_checkpoint_is_chosen_on_studies_disjoint_from_the_deciding_ones_and_neither_is_one_study(n_site):
    split = split_site_labels(studies("site", n_site), SELECTION, DECISION, val_split=0.25)
    assert names(split.selection).isdisjoint(names(split.deciding))
    assert names(split.train).isdisjoint(names(split.selection) | names(split.deciding))
    assert len(split.selection) >= 2 and len(split.deciding) >= 2
    assert names(SELECTION) <= names(split.selection) and names(DECISION) <= names(split.deciding)


def test_one_two_three_labels_the_site_joins_the_decision_from_the_third():
    one, two, three = (split_site_labels(studies("site", n), SELECTION, DECISION) for n in (1, 2, 3))
    assert names(one.deciding) == names(two.deciding) == names(DECISION)  # nothing of the site's left to judge with
    assert len(three.deciding) == 3 and len(names(three.deciding) - names(DECISION)) == 1
    assert names(three.selection) == names(SELECTION)  # a single held-out label decides, it does not also choose


def test_many_held_out_labels_are_shared_between_choice_and_decision():
    split = split_site_labels(studies("site", 40), SELECTION, DECISION, val_split=0.25)
    site_selection = names(split.selection) - names(SELECTION)
    site_deciding = names(split.deciding) - names(DECISION)
    assert len(split.site_held_out) >= SITE_SELECTION_FROM
    assert len(site_selection) == 5 and len(site_deciding) == 5 and site_selection.isdisjoint(site_deciding)


def test_reference_studies_are_named_apart_from_the_sites_even_with_the_same_file_name():
    site = [{"image": "/site/sub-mri0001_ses-01_dwi.nii.gz", "label": "/site/l.nii.gz", "kind": "mri"}]
    references = [{"image": f"/cache/sub-mri000{i}_ses-01_dwi.nii.gz", "label": "/cache/l.nii.gz", "kind": "mri"} for i in (1, 2, 3, 4)]
    split = split_site_labels(site, references[:2], references[2:])
    assert split.describe()["selection_studies"] == ["reference/sub-mri0001_ses-01_dwi", "reference/sub-mri0002_ses-01_dwi"]
    assert split.name(site[0]) == "sub-mri0001_ses-01_dwi"


def test_split_is_deterministic_and_independent_of_the_datastore_order():
    site = studies("site", 7)
    a = split_site_labels(site, SELECTION, DECISION, seed=3)
    b = split_site_labels(list(reversed(site)), SELECTION, DECISION, seed=3)
    assert a == b


def test_references_must_be_two_per_role_and_disjoint():
    with pytest.raises(ValueError, match="at least two"):
        split_site_labels(studies("site", 2), SELECTION[:1], DECISION)
    with pytest.raises(ValueError, match="disjoint"):
        split_site_labels(studies("site", 2), SELECTION, SELECTION)
    with pytest.raises(ValueError, match="no site label"):
        split_site_labels([], SELECTION, DECISION)


def test_pooled_dice_weighs_each_study_the_same_and_skips_studies_without_a_figure():
    assert pooled_dice([0.9, 0.1]) == pytest.approx(0.5)
    assert pooled_dice([0.9, math.nan, 0.1]) == pytest.approx(0.5)
    assert pooled_dice([math.nan]) == 0.0


def test_a_worse_candidate_is_refused_and_a_not_worse_one_published():
    worse = decide([0.70, 0.60, 0.20], [0.70, 0.65, 0.20], "v2")
    assert not worse.published and "kept aside as v2" in worse.reason
    assert worse.candidate_dice < worse.in_use_dice
    tie = decide([0.5, 0.5], [0.5, 0.5], "v3")
    assert tie.published and ">=" in tie.reason
    better_on_the_site_worse_overall = decide([0.45, 0.60, 0.60], [0.30, 0.80, 0.80], "v4")  # site study first
    assert not better_on_the_site_worse_overall.published


def test_a_first_model_is_published_unless_it_got_nothing_right():
    assert decide([0.4, 0.0], None, "v1").reason == "first trained model"
    nothing = decide([0.0, 0.00001], None, "v1")
    assert not nothing.published and "got nothing right" in nothing.reason


def test_candidate_and_model_in_use_must_meet_the_same_studies():
    with pytest.raises(ValueError, match="same studies"):
        decide([0.5, 0.5], [0.5], "v1")


def test_a_small_gain_on_every_deciding_study_is_published():
    verdict = decide([0.52, 0.53, 0.51, 0.52], [0.50, 0.50, 0.50, 0.50], "v5")
    assert verdict.published and "within the pool's noise" in verdict.reason


def test_a_gain_on_one_study_bought_by_losses_on_the_others_is_noise_and_refused():
    # mean gain +0.0625, but one standard error (0.1125) puts it 0.05 below 0: a single study carries it
    candidate, in_use = [0.90, 0.50, 0.50, 0.50], [0.50, 0.55, 0.55, 0.55]
    gain, se, worst = paired_differences(candidate, in_use)
    assert gain == pytest.approx(0.0625) and se == pytest.approx(0.1125) and worst == pytest.approx(-0.05)
    assert gain - se < -NONINFERIORITY_MARGIN
    verdict = decide(candidate, in_use, "v6")
    assert not verdict.published and "noise" in verdict.reason and "kept aside as v6" in verdict.reason


def test_a_candidate_better_on_average_that_breaks_one_study_is_refused():
    candidate, in_use = [0.80, 0.80, 0.80, 0.44], [0.70, 0.70, 0.70, 0.50]
    gain, se, worst = paired_differences(candidate, in_use)
    assert gain - se >= -NONINFERIORITY_MARGIN and worst < -WORST_STUDY_DROP  # only the per-study limit refuses it
    verdict = decide(candidate, in_use, "v7")
    assert not verdict.published and "loses 0.0600" in verdict.reason


def test_paired_differences_skip_studies_without_a_figure_and_one_study_has_no_spread():
    assert paired_differences([0.6, math.nan, 0.4], [0.5, 0.5, math.nan]) == (pytest.approx(0.1), 0.0, pytest.approx(0.1))
    assert paired_differences([math.nan], [0.5]) == (0.0, 0.0, 0.0)
