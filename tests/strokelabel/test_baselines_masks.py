import numpy as np
import pytest

from strokelabel.baselines import brain_mask_from_ct, brain_mask_from_mip, fill_holes, largest_component, remove_small_clusters
from strokelabel.errors import StrokeLabelError


def head_ct_hu():
    """Air, scalp soft tissue, a 4-voxel skull, brain with a ventricle and an enhanced vessel."""
    ct = np.full((40, 40, 8), -1000.0)
    ct[2:38, 2:38, 1:7] = 40.0  # scalp (same HU as brain)
    ct[4:36, 4:36, 1:7] = 1000.0  # skull
    ct[8:32, 8:32, 1:7] = 35.0  # brain
    ct[16:22, 16:22, 2:6] = 5.0  # ventricle (CSF, inside the window)
    ct[25:27, 25:27, 1:7] = 300.0  # enhanced vessel through the brain: a hole in each slice
    return ct


def test_ct_brain_mask_is_the_brain_with_holes_filled_and_no_scalp():
    mask = brain_mask_from_ct(head_ct_hu())
    expected = np.zeros(mask.shape, bool)
    expected[8:32, 8:32, 1:7] = True
    np.testing.assert_array_equal(mask, expected)


def test_mip_brain_mask():
    mip = head_ct_hu()
    mip[8:32, 8:32, 1:7] += 50.0  # enhancement at peak
    mip[16:22, 16:22, 2:6] = 10.0
    expected = np.zeros(mip.shape, bool)
    expected[8:32, 8:32, 1:7] = True
    np.testing.assert_array_equal(brain_mask_from_mip(mip), expected)


def test_no_brain_in_window_is_an_error():
    with pytest.raises(StrokeLabelError, match="no brain"):
        brain_mask_from_ct(np.full((10, 10, 4), -1000.0))


def test_largest_component_and_cluster_removal_in_ml():
    mask = np.zeros((10, 10, 10), bool)
    mask[0:3, 0:3, 0:3] = True  # 27 voxels
    mask[6:8, 6:8, 6:8] = True  # 8 voxels
    assert largest_component(mask).sum() == 27
    kept = remove_small_clusters(mask, (2.0, 2.0, 2.0), min_cluster_ml=0.1)  # 8 mm³ voxels: 0.216 and 0.064 mL
    assert kept.sum() == 27


def test_fill_holes_per_slice_fills_a_tube_open_at_both_ends():
    mask = np.ones((7, 7, 5), bool)
    mask[3, 3, :] = False  # a tube through every slice: open in 3D, a hole in each slice
    assert not fill_holes(mask, slice_axis=None)[3, 3, 2]
    assert fill_holes(mask, slice_axis=-1).all()


def test_ct_brain_mask_cuts_a_thin_bridge_to_the_scalp():
    ct = head_ct_hu()
    ct[2:8, 20, 3] = 40.0  # a one-voxel soft-tissue bridge through the skull
    mask = brain_mask_from_ct(ct)
    assert mask[8:32, 8:32, 1:7].all()
    assert not mask[:4].any() and not mask[36:].any()  # no scalp


def test_ct_brain_mask_cleaned_in_the_window_box_equals_the_whole_grid_cleaning():
    from strokelabel.baselines.masks import clean_mask

    rng = np.random.default_rng(2)
    ct = np.full((40, 36, 18), -1000.0, np.float32)
    ct[8:32, 6:30, 2:16] = 40.0  # brain
    ct[14:18, 12:16, 6:10] = 300.0  # an enhanced vessel: a hole to fill
    ct[8:32, 6:30, 2:16] += rng.normal(0, 30, (24, 24, 14)).astype(np.float32)  # noise opens holes to the border
    ct[2, 3, 1] = 50.0  # a speck outside, in the window
    whole = clean_mask((ct.astype(np.float64) >= -5.0) & (ct <= 100.0), opening_iterations=1)
    np.testing.assert_array_equal(brain_mask_from_ct(ct), whole)
    hu = np.round(ct).astype(np.int16)  # as scanners store it
    np.testing.assert_array_equal(brain_mask_from_ct(hu), clean_mask((hu >= -5) & (hu <= 100), opening_iterations=1))
