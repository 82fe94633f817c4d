"""The DEFUSE 3 and EXTEND verdicts: one rule set, read by the result's figures, the picture and the evaluation."""

import numpy as np
import pytest

from strokelabel.baselines.figures import core_penumbra_figures
from strokelabel.trial_criteria import CRITERIA, DEFUSE3, EXTEND


def met(criteria, core, hypo):
    return list(criteria.check(core, hypo).values())  # core, ratio, mismatch volume


def test_defuse3_limits_are_met_at_equality_and_extend_limits_only_above():
    assert met(DEFUSE3, 10, 18) == [True, True, False]  # ratio exactly 1.8 meets ≥ 1.8; mismatch 8 mL does not
    assert met(EXTEND, 10, 12) == [True, False, False]  # ratio exactly 1.2 is not > 1.2
    assert met(DEFUSE3, 10, 25) == [True, True, True]  # mismatch exactly 15 mL meets ≥ 15
    assert met(EXTEND, 10, 20) == [True, True, False]  # mismatch exactly 10 mL is not > 10
    assert met(DEFUSE3, 70, 200)[0] is False and met(EXTEND, 70, 200)[0] is False  # core exactly 70 mL is not < 70
    assert met(DEFUSE3, 0, 20) == met(EXTEND, 0, 20) == [True, True, True]  # no core: the ratio is unbounded
    assert met(DEFUSE3, 0, 0) == met(EXTEND, 0, 0) == [True, False, False]


@pytest.mark.parametrize(
    "core_ml, hypo_ml, defuse3, extend",
    [
        (60.0, 120.0, True, True),  # ratio 2.0, mismatch 60 mL
        (60.0, 100.0, False, True),  # ratio 1.67: below DEFUSE 3's 1.8, above EXTEND's 1.2
        (69.9, 126.0, True, True),  # just under the core limit
        (70.0, 140.0, False, False),  # core limit reached
        (8.0, 20.0, False, True),  # mismatch 12 mL: under 15, over 10
        (50.0, 58.0, False, False),  # ratio 1.16
    ],
)
def test_verdicts_near_the_treatment_boundary(core_ml, hypo_ml, defuse3, extend):
    assert DEFUSE3.met(core_ml, hypo_ml) is defuse3
    assert EXTEND.met(core_ml, hypo_ml) is extend


@pytest.mark.parametrize("core_voxels, penumbra_voxels", [(10, 20), (80, 100), (70, 100), (10, 8), (5, 15), (0, 20), (0, 0)])
def test_defuse3_criteria_agree_with_the_figures_the_app_reports(core_voxels, penumbra_voxels):
    label = np.zeros((200, 1, 1), np.uint8)
    label[:core_voxels] = 1
    label[core_voxels:core_voxels + penumbra_voxels] = 2
    figures = core_penumbra_figures(label, (10.0, 10.0, 10.0))  # 1 mL voxels
    checks = list(DEFUSE3.check(figures["core_volume_ml"], figures["hypoperfusion_volume_ml"]).values())
    assert checks == [figures["defuse3_core_below_70ml"], figures["defuse3_ratio_at_least_1_8"], figures["defuse3_mismatch_at_least_15ml"]]
    assert figures["defuse3_imaging_criteria_met"] is DEFUSE3.met(core_voxels, core_voxels + penumbra_voxels)


def test_criteria_are_listed_once_with_their_published_limits():
    assert [(c.name, c.max_core_ml, c.min_ratio, c.min_mismatch_ml, c.inclusive) for c in CRITERIA] == [
        ("DEFUSE 3", 70.0, 1.8, 15.0, True),
        ("EXTEND", 70.0, 1.2, 10.0, False),
    ]
