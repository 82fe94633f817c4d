"""Value conventions of real exports (fills, NaN, negative fit noise, CT padding) -> one clean convention."""

from __future__ import annotations

import numpy as np
import pytest

from strokelabel.cleaning import background_fill, clean_volume
from strokelabel.errors import StrokeLabelError


def head_map(fill, negative_noise=0):
    """A CBF-like map: a 'brain' of values 5..80 in the middle, ``fill`` around it."""
    rng = np.random.default_rng(0)
    values = np.full((20, 20, 6), fill, dtype=np.float32)
    values[5:15, 5:15] = rng.uniform(5, 80, (10, 10, 6))
    if negative_noise:
        values[6, 6, :negative_noise] = -np.float32(29991.7)
    return values


@pytest.mark.parametrize("fill", [1e-6, -30.0, -29992.0])
def test_a_background_fill_becomes_no_value_and_zero(fill):
    clean = clean_volume(head_map(fill), "cbf")
    assert clean.notes["background_fill"] == pytest.approx(fill, rel=1e-5)
    assert clean.no_value.sum() == 20 * 20 * 6 - 10 * 10 * 6
    assert clean.values[0, 0, 0] == 0.0 and clean.values[5:15, 5:15].min() >= 5


def test_nan_background_is_no_value_and_counted():
    clean = clean_volume(head_map(np.nan), "tmax")
    assert clean.notes["nonfinite_voxels"] == 20 * 20 * 6 - 10 * 10 * 6
    assert np.isfinite(clean.values).all() and clean.values[0, 0, 0] == 0.0


def test_negative_fit_noise_is_set_to_zero_without_being_taken_for_a_fill():
    clean = clean_volume(head_map(0.0, negative_noise=3), "mtt")
    assert "background_fill" not in clean.notes
    assert clean.notes["negative_voxels_set_to_0"] == 3
    assert clean.values.min() == 0.0


def test_a_frequent_tissue_value_is_not_a_fill():
    values = np.full((10, 10, 4), 50.0, np.float32)
    values[0, 0, 0] = 51
    assert background_fill(values, np.isfinite(values)) is None
    tmax = np.zeros((10, 10, 4), np.float32)
    tmax[2:8, 2:8] = 0.5  # quantised Tmax: the smallest step is a tissue value, not a fill
    tmax[4, 4] = 9.0
    assert background_fill(tmax, np.isfinite(tmax)) is None


def test_ct_padding_and_nan_become_air():
    ct = np.full((10, 10, 4), -3024.0, np.float32)
    ct[2:8, 2:8] = 40.0
    ct[3, 3, 0] = np.nan
    clean = clean_volume(ct, "cta1")
    assert clean.values.min() == -1024.0 and clean.values[3, 3, 0] == -1024.0
    assert clean.notes["padding_below_-1024_hu_voxels"] == 10 * 10 * 4 - 36 * 4


@pytest.mark.parametrize("values,match", [(np.full((6, 6, 3), np.nan), "no finite value"), (np.zeros((6, 6, 3)), "is empty"),
                                          (np.full((6, 6, 3), -30.0), "is empty")])
def test_a_volume_with_nothing_left_is_refused(values, match):
    with pytest.raises(StrokeLabelError, match=match):
        clean_volume(values, "tmax", study="sub-x_ses-01")


def test_an_atlas_of_region_numbers_is_held_as_uint8_with_the_same_numbers():
    atlas = np.zeros((12, 10, 4), np.float64)
    atlas[2:8, 2:8] = np.arange(1, 16).repeat(10)[: 6 * 6 * 4].reshape(6, 6, 4)
    atlas[0, 0, 0] = np.nan  # outside
    clean = clean_volume(atlas, "atlas")
    assert clean.values.dtype == np.uint8
    np.testing.assert_array_equal(clean.values, np.nan_to_num(atlas, nan=0.0))


@pytest.mark.parametrize("odd", [2.5, -1.0, 300.0])
def test_an_atlas_with_values_no_uint8_holds_stays_float32_for_the_checks_to_refuse(odd):
    atlas = np.zeros((12, 10, 4), np.float32)
    atlas[2:8, 2:8] = 3.0
    atlas[4, 4, 1] = odd
    clean = clean_volume(atlas, "atlas")
    assert clean.values.dtype == np.float32 and clean.values[4, 4, 1] == np.float32(odd)
