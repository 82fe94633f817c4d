import numpy as np
from scipy import ndimage

from strokelabel.boxes import bounding_box, grow_box, margin_voxels, paste, within


def test_bounding_box_is_the_mask_extent_grown_and_clipped():
    mask = np.zeros((10, 8, 6), bool)
    mask[2:4, 5, 1] = True
    mask[6, 3, 2] = True
    assert bounding_box(mask) == (slice(2, 7), slice(3, 6), slice(1, 3))
    assert bounding_box(mask, margin=(1, 3, 0)) == (slice(1, 8), slice(0, 8), slice(1, 3))
    assert bounding_box(np.zeros((4, 4, 4), bool)) is None
    assert bounding_box(mask) == ndimage.find_objects(mask.astype(np.uint8))[0]


def test_grow_within_and_paste_round_trip_a_crop():
    rng = np.random.default_rng(0)
    volume = rng.random((12, 9, 7))
    inner = (slice(3, 6), slice(2, 5), slice(1, 4))
    outer = grow_box(inner, 2, volume.shape)
    assert outer == (slice(1, 8), slice(0, 7), slice(0, 6))
    np.testing.assert_array_equal(volume[outer][within(outer, inner)], volume[inner])
    pasted = paste(volume[inner], inner, volume.shape)
    np.testing.assert_array_equal(pasted[inner], volume[inner])
    assert np.count_nonzero(pasted) == volume[inner].size  # zeros outside the box


def test_margin_voxels_reach_beyond_the_distance_on_every_axis():
    assert margin_voxels(4.0, (0.45, 0.45, 0.8)) == (9, 9, 6)
    assert all(m * s > 4.0 for m, s in zip(margin_voxels(4.0, (0.5, 2.0, 4.0)), (0.5, 2.0, 4.0)))
