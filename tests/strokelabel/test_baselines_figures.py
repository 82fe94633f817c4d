import numpy as np
import pytest

from strokelabel.baselines import core_penumbra_figures, lesion_figures

ONE_ML_VOXEL = (10.0, 10.0, 10.0)  # 1000 mm³ = 1 mL per voxel


def label_with(core_ml: int, penumbra_ml: int) -> np.ndarray:
    label = np.zeros((200, 1, 1), np.uint8)
    label[:core_ml] = 1
    label[core_ml : core_ml + penumbra_ml] = 2
    return label


def test_lesion_figures_volumes_and_component_count():
    label = np.zeros((10, 10, 10), np.uint8)
    label[0:2, 0:2, 0:2] = 1  # 8 mL
    label[5:7, 5:7, 5] = 2  # 4 mL
    label[9, 9, 9] = 1  # a second component of label 1, touching nothing
    label[7, 7, 6] = 1  # touches the label-2 block only at a corner: same lesion
    figures = lesion_figures(label, ONE_ML_VOXEL)
    assert figures["volumes_ml"] == {1: 10.0, 2: 4.0}
    assert figures["lesion_volume_ml"] == 14.0
    assert figures["lesion_count"] == 3


def test_lesion_figures_of_an_empty_label():
    assert lesion_figures(np.zeros((3, 3, 3)), (1.0, 1.0, 1.0)) == {"volumes_ml": {}, "lesion_volume_ml": 0.0, "lesion_count": 0}


@pytest.mark.parametrize(
    "core, penumbra, ratio, core_ok, ratio_ok, mismatch_ok",
    [
        (10, 20, 3.0, True, True, True),  # eligible
        (80, 100, 180 / 80, False, True, True),  # core too large
        (70, 100, 170 / 70, False, True, True),  # core exactly 70 mL is not < 70
        (10, 5, 1.5, True, False, False),  # small mismatch
        (10, 8, 1.8, True, True, False),  # ratio exactly 1.8 meets it; mismatch 8 mL does not
        (5, 15, 4.0, True, True, True),  # mismatch exactly 15 mL meets it
        (0, 20, None, True, True, True),  # no core: unbounded ratio
        (0, 0, None, True, False, False),  # nothing: no mismatch
    ],
)
def test_core_penumbra_figures_and_defuse3_criteria(core, penumbra, ratio, core_ok, ratio_ok, mismatch_ok):
    figures = core_penumbra_figures(label_with(core, penumbra), ONE_ML_VOXEL)
    assert figures["core_volume_ml"] == core
    assert figures["penumbra_volume_ml"] == penumbra
    assert figures["hypoperfusion_volume_ml"] == core + penumbra
    assert figures["mismatch_volume_ml"] == penumbra
    assert figures["mismatch_ratio"] == (pytest.approx(ratio) if ratio is not None else None)
    assert figures["defuse3_core_below_70ml"] is core_ok
    assert figures["defuse3_ratio_at_least_1_8"] is ratio_ok
    assert figures["defuse3_mismatch_at_least_15ml"] is mismatch_ok
    assert figures["defuse3_imaging_criteria_met"] is (core_ok and ratio_ok and mismatch_ok)
