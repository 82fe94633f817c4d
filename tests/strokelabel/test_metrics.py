import math

import numpy as np
import pytest

from strokelabel.metrics import (
    absolute_volume_error_ml,
    clot_centre_distance_mm,
    clot_detection,
    dice,
    false_positive_volume_ml,
    format_table,
    hd95_mm,
    lesion_count_difference,
    lesion_counts,
    largest_lesion_detected,
    lesion_f1,
    limits_of_agreement,
    pooled_dice,
    precision,
    recall,
    region_flag_scores,
    segmentation_scores,
    summarise,
    volume_error_ml,
)

SHAPE = (8, 8, 8)


def masks_3_of_4_and_6():
    """Prediction 4 voxels, truth 6 voxels, 3 shared."""
    pred = np.zeros(SHAPE, bool)
    truth = np.zeros(SHAPE, bool)
    pred[1, 1, 1:5] = True
    truth[1, 1, 2:8] = True
    return pred, truth


def test_overlap_scores_of_a_hand_computed_case():
    pred, truth = masks_3_of_4_and_6()
    assert dice(pred, truth) == pytest.approx(2 * 3 / (4 + 6))
    assert precision(pred, truth) == pytest.approx(3 / 4)
    assert recall(pred, truth) == pytest.approx(3 / 6)


def test_overlap_scores_with_empty_masks():
    empty = np.zeros(SHAPE, bool)
    some = masks_3_of_4_and_6()[0]
    for score in (dice, precision, recall, lesion_f1):
        assert score(empty, empty) == 1.0
        assert score(some, empty) == 0.0
        assert score(empty, some) == 0.0
    assert dice(empty, empty, empty_value=math.nan) != dice(empty, empty, empty_value=math.nan)  # NaN on request


def test_volume_error_in_ml():
    pred, truth = masks_3_of_4_and_6()
    spacing = (2.0, 2.0, 2.5)  # 10 mm³ = 0.01 mL per voxel
    assert volume_error_ml(pred, truth, spacing) == pytest.approx(-0.02)
    assert absolute_volume_error_ml(pred, truth, spacing) == pytest.approx(0.02)


def test_hd95_is_in_mm_and_uses_the_spacing():
    pred = np.zeros(SHAPE, bool)
    truth = np.zeros(SHAPE, bool)
    pred[2, 2, 2] = True
    truth[2, 2, 6] = True  # 4 voxels apart along the third axis
    assert hd95_mm(pred, truth, (1.0, 1.0, 2.0)) == pytest.approx(8.0)
    assert hd95_mm(pred, truth, (3.0, 3.0, 1.0)) == pytest.approx(4.0)
    assert hd95_mm(pred, pred, (1.0, 1.0, 1.0)) == 0.0


def test_hd95_with_empty_masks():
    empty = np.zeros(SHAPE, bool)
    some = masks_3_of_4_and_6()[0]
    assert hd95_mm(empty, empty, (1.0, 1.0, 1.0)) == 0.0
    assert hd95_mm(some, empty, (1.0, 1.0, 1.0)) == math.inf


def three_true_lesions():
    truth = np.zeros((20, 20, 4), bool)
    truth[1:3, 1:3, 1] = True  # A
    truth[1:3, 4:6, 1] = True  # B (a gap of one voxel from A)
    truth[15:18, 15:18, 2] = True  # C
    return truth


def test_lesion_f1_counts_detected_missed_and_spurious_lesions():
    truth = three_true_lesions()
    pred = np.zeros(truth.shape, bool)
    pred[2, 2, 1] = True  # hits A
    pred[10, 10, 1] = True  # spurious
    pred[10, 15, 3] = True  # spurious
    assert lesion_counts(pred, truth) == {"tp": 1, "fn": 2, "fp": 2, "n_true": 3, "n_pred": 3}
    assert lesion_f1(pred, truth) == pytest.approx(1 / (1 + (2 + 2) / 2))
    assert lesion_count_difference(pred, truth) == 0


def test_one_predicted_blob_over_two_lesions_detects_both():
    truth = three_true_lesions()
    pred = np.zeros(truth.shape, bool)
    pred[1:3, 1:6, 1] = True  # A, the gap and B in one component
    assert lesion_counts(pred, truth) == {"tp": 2, "fn": 1, "fp": 0, "n_true": 3, "n_pred": 1}
    assert lesion_f1(pred, truth) == pytest.approx(2 / (2 + 0.5))
    assert lesion_count_difference(pred, truth) == 2


def test_lesions_touching_at_a_corner_are_one_lesion():
    truth = np.zeros((4, 4, 4), bool)
    truth[0, 0, 0] = truth[1, 1, 1] = True
    assert lesion_counts(truth, truth)["n_true"] == 1


def test_lesion_f1_follows_the_isles22_scoring_where_6_and_26_connectivity_differ():
    # The challenge's scoring (isles22 eval_utils / atlas2 isles/scoring.py) labels components with
    # 26-connectivity: a true lesion made of two voxels meeting at a corner is one lesion, so a
    # prediction of one of them detects it (F1 1, count difference 0); with 6-connectivity it
    # would be two lesions, one missed (F1 2/3, count difference 1).
    truth = np.zeros((6, 6, 6), bool)
    truth[1, 1, 1] = truth[2, 2, 2] = True
    pred = np.zeros_like(truth)
    pred[1, 1, 1] = True
    assert lesion_counts(pred, truth) == {"tp": 1, "fn": 0, "fp": 0, "n_true": 1, "n_pred": 1}
    assert lesion_f1(pred, truth) == 1.0
    assert lesion_count_difference(pred, truth) == 0
    # a predicted component sharing one voxel with the truth is a hit, however far it spills over;
    # one that only borders the truth (no shared voxel) is a false positive
    pred[4:6, 4:6, 4:6] = True  # 8 voxels, none in the truth, none next to it
    assert lesion_counts(pred, truth) == {"tp": 1, "fn": 0, "fp": 1, "n_true": 1, "n_pred": 2}
    assert lesion_f1(pred, truth) == pytest.approx(1 / (1 + 0.5))
    pred[2:4, 2:4, 2:4] = True  # joins that block to the truth through the one shared voxel (2, 2, 2)
    pred[1, 1, 1] = False
    assert lesion_counts(pred, truth) == {"tp": 1, "fn": 0, "fp": 0, "n_true": 1, "n_pred": 1}
    assert lesion_f1(pred, truth) == 1.0


def test_lesion_f1_on_empty_masks_as_the_isles22_scoring():
    empty = np.zeros((5, 5, 5), bool)
    spot = empty.copy()
    spot[2, 2, 2] = True
    assert lesion_f1(empty, empty) == 1.0  # nothing to find, nothing found
    assert lesion_f1(spot, empty) == 0.0  # one false positive, no true lesion
    assert lesion_f1(empty, spot) == 0.0  # one true lesion missed
    assert lesion_count_difference(spot, empty) == 1


def test_segmentation_scores_row():
    pred, truth = masks_3_of_4_and_6()
    row = segmentation_scores(pred, truth, (1.0, 1.0, 1.0))
    assert row["dice"] == pytest.approx(0.6) and row["lesion_f1"] == 1.0 and row["lesion_count_difference"] == 0
    assert row["volume_error_ml"] == pytest.approx(-0.002)


def test_false_positive_volume_leaves_out_a_two_voxel_rim_around_the_truth():
    truth = np.zeros((30, 30, 30), bool)
    truth[10:15, 10:15, 10:15] = True
    pred = truth.copy()
    pred[8:17, 12, 12] = True  # 2 voxels beyond the truth on either side: within the margin
    assert false_positive_volume_ml(pred, truth, (2.0, 2.0, 2.0)) == 0.0
    pred[17, 12, 12] = True  # 3 voxels beyond: a false positive
    pred[25:27, 25, 25] = True  # a spurious lesion far away: 2 voxels
    assert false_positive_volume_ml(pred, truth, (2.0, 2.0, 2.0)) == pytest.approx(3 * 0.008)
    # the margin is in voxels whatever the spacing, the volume in mL of the given spacing
    assert false_positive_volume_ml(pred, truth, (1.0, 1.0, 1.0)) == pytest.approx(3 * 0.001)
    assert false_positive_volume_ml(pred, truth, (1.0, 1.0, 1.0), margin_voxels=0) == pytest.approx(7 * 0.001)


def test_false_positive_volume_with_empty_masks():
    empty = np.zeros((5, 5, 5), bool)
    pred = empty.copy()
    pred[1, 1, 1] = True
    assert false_positive_volume_ml(empty, empty, (1, 1, 1)) == 0.0
    assert false_positive_volume_ml(pred, empty, (2, 2, 2)) == pytest.approx(0.008)
    assert false_positive_volume_ml(empty, pred, (2, 2, 2)) == 0.0


def test_largest_lesion_detected_looks_at_the_largest_true_component_only():
    truth = three_true_lesions()  # C (3x3) is the largest
    pred = np.zeros(truth.shape, bool)
    pred[2, 2, 1] = True  # hits A only
    assert largest_lesion_detected(pred, truth) is False
    pred[16, 16, 2] = True
    assert largest_lesion_detected(pred, truth) is True
    assert largest_lesion_detected(pred, np.zeros_like(truth)) is None


def test_pooled_dice_sums_voxels_over_studies_before_the_ratio():
    big_truth = np.zeros((10, 10, 10), bool)
    big_truth[:5] = True  # 500 voxels, found exactly
    small_truth = np.zeros((10, 10, 10), bool)
    small_truth[0, 0, :4] = True  # 4 voxels, missed
    pairs = [(big_truth, big_truth), (np.zeros_like(small_truth), small_truth)]
    assert pooled_dice(pairs) == pytest.approx(2 * 500 / (500 + 504))
    assert np.mean([dice(p, t) for p, t in pairs]) == pytest.approx(0.5)  # the mean weighs the tiny miss as a study
    assert pooled_dice([(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))]) == 1.0


def test_region_flag_scores_per_study():
    pred = np.zeros(15, bool)
    true = np.zeros(15, bool)
    pred[[0, 1]] = True
    true[[0, 2]] = True  # TP 1, FP 1, FN 1, TN 12
    scores = region_flag_scores(pred, true)
    assert scores["precision"] == 0.5 and scores["recall"] == 0.5 and scores["f1"] == 0.5
    assert scores["accuracy"] == pytest.approx(13 / 15)
    assert scores["exact_match"] == 0.0


def test_region_flag_scores_per_slice_pool_all_slices():
    pred = np.zeros((4, 15), bool)
    true = np.zeros((4, 15), bool)
    true[1, 3] = pred[1, 3] = True  # TP
    true[2, 5] = True  # FN
    pred[3, 7] = pred[3, 8] = True  # 2 FP
    scores = region_flag_scores(pred, true)
    assert scores["precision"] == pytest.approx(1 / 3)
    assert scores["recall"] == pytest.approx(1 / 2)
    assert scores["f1"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))
    assert scores["accuracy"] == pytest.approx(57 / 60)
    assert scores["exact_match"] == pytest.approx(2 / 4)  # slices 0 and 1 fully right
    assert region_flag_scores(np.zeros((2, 15), bool), np.zeros((2, 15), bool))["f1"] == 1.0


def test_clot_centre_distance_in_mm():
    pred = np.zeros(SHAPE, bool)
    truth = np.zeros(SHAPE, bool)
    pred[0, 0, 0] = pred[2, 0, 0] = True  # centre (1, 0, 0)
    truth[1, 3, 0] = True
    assert clot_centre_distance_mm(pred, truth, (1.0, 0.5, 1.0)) == pytest.approx(1.5)
    assert clot_centre_distance_mm(np.zeros(SHAPE), truth, (1.0, 1.0, 1.0)) is None


def test_clot_detection_requires_overlap():
    truth = np.zeros(SHAPE, bool)
    truth[4, 4, 4] = True
    near = np.zeros(SHAPE, bool)
    near[4, 4, 5] = True
    result = clot_detection(near, truth, (1.0, 1.0, 2.0))
    assert result == {
        "clot_present_true": True,
        "clot_present_pred": True,
        "clot_detected": False,
        "clot_centre_distance_mm": pytest.approx(2.0),
    }
    assert clot_detection(truth, truth, (1.0, 1.0, 1.0))["clot_detected"]


def test_summarise_averages_per_study_rows_by_method():
    rows = [
        {"study": "s1", "method": "baseline", "dice": 0.5, "hd95_mm": 4.0, "eligible": True},
        {"study": "s2", "method": "baseline", "dice": 0.7, "hd95_mm": None, "eligible": False},
        {"study": "s1", "method": "model", "dice": 0.9, "hd95_mm": 2.0, "eligible": True},
    ]
    table = summarise(rows, by="method", with_sd=True)
    assert table[0] == {
        "method": "baseline",
        "n": 2,
        "dice": pytest.approx(0.6),
        "dice_sd": pytest.approx(np.std([0.5, 0.7], ddof=1)),
        "hd95_mm": 4.0,
        "hd95_mm_sd": None,
        "eligible": 0.5,
        "eligible_sd": pytest.approx(np.std([1.0, 0.0], ddof=1)),
    }
    assert table[1]["method"] == "model" and table[1]["n"] == 1 and table[1]["dice"] == 0.9
    assert summarise(rows)[0]["n"] == 3


def test_format_table_aligns_columns():
    rows = [{"method": "baseline", "dice": 0.6, "n": 2}, {"method": "model", "dice": None, "n": 10}]
    text = format_table(rows, ["method", "n", "dice"], digits=2)
    assert text.splitlines() == [
        "method     n  dice",
        "--------  --  ----",
        "baseline   2  0.60",
        "model     10     -",
    ]


def test_limits_of_agreement_are_the_bias_and_1_96_sample_sd_of_the_differences():
    agreement = limits_of_agreement([1.0, 3.0, 5.0, 7.0])  # mean 4, sample SD sqrt(20/3)
    half_width = 1.96 * np.sqrt(20.0 / 3.0)
    assert agreement["n"] == 4 and agreement["bias"] == pytest.approx(4.0)
    assert agreement["low"] == pytest.approx(4.0 - half_width) and agreement["high"] == pytest.approx(4.0 + half_width)
    assert limits_of_agreement([2.5]) == {"n": 1, "bias": 2.5, "low": None, "high": None}
    assert limits_of_agreement([])["bias"] is None
