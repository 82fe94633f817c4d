import numpy as np
import pytest

from strokelabel.baselines import atlas_region_index, clot_figures, clot_region_baseline, region_flags, region_max
from strokelabel.errors import StrokeLabelError


def atlas_1_to_15():
    """15 regions as 3x5 blocks of 2x2 voxels in each of 4 slices; 0 outside (x or y >= 6/10)."""
    atlas = np.zeros((8, 12, 4), np.int16)
    for region in range(15):
        row, col = divmod(region, 5)
        atlas[2 * row : 2 * row + 2, 2 * col : 2 * col + 2, :] = region + 1
    return atlas


def spiral_map():
    spiral = np.zeros((8, 12, 4))
    spiral[0, 4, 1] = 0.95  # region 3 (row 0, col 2), slice 1
    spiral[3, 2, 2] = 0.90  # region 7 (row 1, col 1), slice 2: exactly the threshold
    spiral[4, 8, 0] = 0.85  # region 15's neighbour? row 2, col 4 -> region 15, below threshold
    spiral[7, 11, 3] = 0.99  # outside the atlas
    return spiral


def test_spiral_baseline_flags_regions_holding_voxels_at_or_above_threshold():
    result = clot_region_baseline(spiral_map(), atlas_1_to_15())
    expected_flags = np.zeros(15, bool)
    expected_flags[[2, 6]] = True  # regions 3 and 7 (index 2 and 6)
    np.testing.assert_array_equal(result.flags, expected_flags)
    assert result.probabilities[2] == 0.95 and result.probabilities[6] == 0.90
    assert result.probabilities[14] == 0.85 and result.probabilities[0] == 0.0
    assert result.clot_mask.sum() == 2 and not result.clot_mask[7, 11, 3]
    assert result.figures()["affected_regions"] == [3, 7]


def test_ami_numbering_with_region_base_zero():
    atlas0 = atlas_1_to_15() - 1  # AMI: regions 0..14; outside now reads -1 -> give a brain mask
    brain = atlas0 >= 0
    atlas0[~brain] = 0
    result = clot_region_baseline(spiral_map(), atlas0, region_base=0, brain_mask=brain)
    assert result.figures(region_base=0)["affected_regions"] == [2, 6]  # AMI's own numbers
    np.testing.assert_array_equal(result.flags, clot_region_baseline(spiral_map(), atlas_1_to_15()).flags)
    # Without a brain mask every AMI voxel is in a region: the outside voxel falls in region 0.
    assert clot_region_baseline(spiral_map(), atlas0, region_base=0).flags[0]


def test_region_flags_per_slice():
    atlas = atlas_1_to_15()
    clot = clot_region_baseline(spiral_map(), atlas).clot_mask
    per_slice = region_flags(clot, atlas, slice_axis=-1)
    assert per_slice.shape == (4, 15)
    assert set(zip(*np.nonzero(per_slice))) == {(1, 2), (2, 6)}
    np.testing.assert_array_equal(per_slice.any(axis=0), region_flags(clot, atlas))


def test_region_max_per_slice():
    probabilities = region_max(spiral_map(), atlas_1_to_15(), slice_axis=-1)
    assert probabilities.shape == (4, 15)
    assert probabilities[1, 2] == 0.95 and probabilities[0, 14] == 0.85 and probabilities[3].max() == 0.0


@pytest.mark.parametrize("bad_value, base", [(16, 1), (15, 0), (-1, 1), (-1, 0)])
def test_atlas_values_outside_the_numbering_are_rejected(bad_value, base):
    atlas = atlas_1_to_15() - (1 - base)
    atlas[0, 0, 0] = bad_value
    with pytest.raises(StrokeLabelError, match="outside"):
        atlas_region_index(atlas, region_base=base)


def test_spiral_outside_probability_range_is_rejected():
    with pytest.raises(StrokeLabelError, match=r"\[0, 1\]"):
        clot_region_baseline(spiral_map() * 100.0, atlas_1_to_15())


def test_result_unpacks_as_clot_flags_probabilities():
    clot, flags, probabilities = clot_region_baseline(spiral_map(), atlas_1_to_15())
    assert clot.sum() == 2 and flags.sum() == 2 and probabilities.shape == (15,)


def test_without_atlas_only_the_clot_is_thresholded():
    clot, flags, probabilities = clot_region_baseline(spiral_map(), None)
    assert clot.sum() == 3 and flags is None and probabilities is None  # the voxel outside the atlas counts now
    assert "affected_regions" not in clot_region_baseline(spiral_map(), None).figures()


def test_clot_figures_volume_centre_and_regions():
    clot = np.zeros((8, 12, 4), bool)
    clot[0:2, 4, 1] = True  # two voxels in region 3
    affine = np.diag([2.0, 1.0, 5.0, 1.0])
    affine[:3, 3] = (-10.0, 0.0, 20.0)
    figures = clot_figures(clot, affine, atlas_1_to_15())
    assert figures["clot_volume_ml"] == pytest.approx(2 * 10.0 / 1000.0)
    assert figures["clot_voxels"] == 2 and figures["clot_count"] == 1
    assert figures["clot_centre_ras_mm"] == [-9.0, 4.0, 25.0]  # voxel (0.5, 4, 1)
    assert figures["atlas_regions_with_clot"] == [3]
    assert clot_figures(np.zeros_like(clot), affine)["clot_centre_ras_mm"] is None


def test_spiral_baseline_in_the_atlas_box_equals_the_whole_grid_rule():
    rng = np.random.default_rng(3)
    spiral = rng.random((30, 26, 12)).astype(np.float32)
    spiral[0, 0, 0] = np.float32(0.9)  # just below 0.9 in float64: not clot, as the seed compares
    atlas = np.zeros(spiral.shape, np.float32)
    atlas[8:20, 5:24, 3:10] = rng.integers(0, 16, (12, 19, 7))
    atlas[0, 0, 0] = 4
    clot, flags, probabilities = clot_region_baseline(spiral, atlas)
    region = atlas.astype(int) - 1
    whole = (spiral.astype(np.float64) >= 0.9) & (region >= 0)
    np.testing.assert_array_equal(clot, whole)
    np.testing.assert_array_equal(flags, [whole[region == r].any() for r in range(15)])
    np.testing.assert_array_equal(probabilities, [spiral[region == r].max() for r in range(15)])
    assert not clot[0, 0, 0]
