import numpy as np
import pytest
from scipy import ndimage

from strokelabel.smoothing import gaussian_filter, normalised_gaussian, reflect_index, smoothing_matrix


def test_reflect_index_folds_as_scipys_reflect_mode_including_the_edge_voxel():
    assert reflect_index(4, 5).tolist() == [3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0]


def test_every_row_of_the_smoothing_matrix_sums_to_one():
    for n, sigma in ((5, 3.0), (64, 2.0), (200, 9.3)):
        np.testing.assert_allclose(smoothing_matrix(n, sigma).sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize(
    "shape, sigma",
    [
        ((30, 25, 7), (3.0, 20.0, 1.0)),  # a kernel wider than its axis: folded more than once
        ((40, 36, 9), (9.3, 9.3, 2.0)),  # the mirror rCBF's 4 mm on a 0.43 mm CTP grid
        ((12, 10, 6, 5), (1.5, 0.0, 2.0, 0.0)),  # 4-D, axes left alone
    ],
)
def test_gaussian_filter_is_scipys_within_float32_rounding(shape, sigma):
    volume = np.random.default_rng(0).uniform(0, 80, shape)
    expected = ndimage.gaussian_filter(volume, sigma)
    got = gaussian_filter(volume, sigma)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_allclose(got, expected, rtol=2e-6)


def test_gaussian_filter_never_writes_its_input_and_skips_zero_sigma():
    volume = np.random.default_rng(1).normal(size=(8, 9, 4)).astype(np.float32)
    kept = volume.copy()
    assert np.array_equal(gaussian_filter(volume, (0, 0, 0)), volume)
    gaussian_filter(volume, (1.0, 2.0, 0.5))
    assert np.array_equal(volume, kept)
    with pytest.raises(ValueError, match="one sigma per axis"):
        gaussian_filter(volume, (1.0, 1.0))


def test_normalised_gaussian_ignores_values_outside_the_mask():
    rng = np.random.default_rng(2)
    mask = np.zeros((30, 30, 5), bool)
    mask[8:22, 6:25, 1:4] = True
    values = np.where(mask, 50.0, rng.uniform(-1e6, 1e6, mask.shape))  # hostile background
    smooth = normalised_gaussian(values, mask, (3.0, 3.0, 1.0))
    np.testing.assert_allclose(smooth[mask], 50.0, rtol=1e-5)


def test_an_axis_longer_than_a_block_is_smoothed_as_by_the_whole_matrix():
    from strokelabel import smoothing

    volume = np.random.default_rng(3).uniform(0, 10, (3, smoothing.BLOCK * 3 + 5, 4))
    expected = ndimage.gaussian_filter(volume, (0.0, 6.0, 0.0))
    np.testing.assert_allclose(gaussian_filter(volume, (0.0, 6.0, 0.0)), expected, rtol=2e-6)
    volume = np.random.default_rng(4).uniform(0, 10, (smoothing.BLOCK * 2 + 1, 3, smoothing.BLOCK + 9))
    np.testing.assert_allclose(gaussian_filter(volume, (5.0, 1.0, 7.0)), ndimage.gaussian_filter(volume, (5.0, 1.0, 7.0)), rtol=2e-6)
