import numpy as np
import pytest

from strokelabel.errors import StrokeLabelError
from strokelabel.units import (
    check_ct_hu,
    check_finite,
    check_not_empty,
    check_perfusion_map,
    detect_adc_unit,
    voxel_volume_ml,
)


def _brain_adc_1e3(shape=(20, 20, 10), seed=0):
    """A head: zero background, brain 0.6-1.0, a CSF block ~3, a lesion ~0.45 (10^-3 mm²/s)."""
    rng = np.random.default_rng(seed)
    adc = np.zeros(shape)
    adc[3:17, 3:17, 2:8] = rng.uniform(0.6, 1.0, size=(14, 14, 6))
    adc[8:11, 8:11, 3:7] = 3.0
    adc[4:7, 4:7, 3:5] = 0.45
    return adc


def test_adc_unit_detected_as_1e3_mm2_s():
    unit = detect_adc_unit(_brain_adc_1e3())
    assert unit.unit == "10^-3 mm²/s"
    assert unit.factor_to_mm2_s == 1e-3
    assert "10^-3" in unit.assumption


def test_adc_unit_detected_as_1e6_mm2_s():
    unit = detect_adc_unit(_brain_adc_1e3() * 1000.0)
    assert unit.unit == "10^-6 mm²/s"
    assert unit.factor_to_mm2_s == 1e-6
    assert 600 <= unit.brain_median <= 1000


def test_adc_unit_detection_uses_the_mask_when_given():
    adc = _brain_adc_1e3() * 1000.0
    adc[adc == 0] = 5.0  # a non-zero background that would spoil the non-zero statistic
    mask = np.zeros(adc.shape, bool)
    mask[3:17, 3:17, 2:8] = True
    assert detect_adc_unit(adc, mask=mask).factor_to_mm2_s == 1e-6


@pytest.mark.parametrize(
    "adc, problem",
    [
        (np.zeros((8, 8, 8)), "empty"),
        (-_brain_adc_1e3(), "negative"),
        (_brain_adc_1e3() * 30.0, "fits no known ADC unit"),
        (np.where(_brain_adc_1e3() > 0, np.nan, 0.0), "NaN"),
    ],
    ids=["all-zero", "negative", "neither-unit", "nan"],
)
def test_adc_unit_detection_rejects_absurd_volumes(adc, problem):
    with pytest.raises(StrokeLabelError, match=problem) as err:
        detect_adc_unit(adc, study="sub-1_ses-1")
    assert "ADC" in str(err.value) and "sub-1_ses-1" in str(err.value)


def _brain(shape=(16, 16, 8)):
    mask = np.zeros(shape, bool)
    mask[2:14, 2:14, 1:7] = True
    return mask


def _perfusion(mask, low, high, seed=1):
    values = np.zeros(mask.shape)
    values[mask] = np.random.default_rng(seed).uniform(low, high, size=int(mask.sum()))
    return values


@pytest.mark.parametrize(
    "modality, low, high",
    [("cbf", 20, 70), ("cbv", 1.5, 5), ("mtt", 3, 7), ("tmax", 0, 4), ("ttp", 8, 20)],
)
def test_plausible_perfusion_maps_pass_with_their_unit_named(modality, low, high):
    mask = _brain()
    assumption = check_perfusion_map(_perfusion(mask, low, high), modality, mask=mask)
    assert modality.lower() in assumption.lower()


@pytest.mark.parametrize(
    "modality, low, high, likely",
    [
        ("tmax", 0.0, 4000.0, "ms"),
        ("mtt", 3000.0, 7000.0, "ms"),
        ("cbf", 0.2, 0.7, "mL/g/min"),
        ("cbv", 0.015, 0.05, "mL/g"),
    ],
)
def test_perfusion_map_in_a_common_wrong_unit_names_map_and_likely_unit(modality, low, high, likely):
    mask = _brain()
    with pytest.raises(StrokeLabelError, match="looks like it is in") as err:
        check_perfusion_map(_perfusion(mask, low, high), modality, mask=mask, study="sub-2_ses-1")
    message = str(err.value)
    assert modality.upper() in message.upper() and likely in message and "sub-2_ses-1" in message


def test_tmax_in_seconds_with_long_delays_is_not_mistaken_for_ms():
    mask = _brain()
    tmax = _perfusion(mask, 0.0, 2.0)
    tmax[2:8, 2:8, 1:7] = 12.0  # a large hypoperfused region
    assert "Tmax" in check_perfusion_map(tmax, "tmax", mask=mask)


def test_perfusion_map_fitting_no_unit_is_rejected():
    mask = _brain()
    with pytest.raises(StrokeLabelError, match="implausible"):
        check_perfusion_map(_perfusion(mask, 5e5, 9e5), "cbf", mask=mask)


def _head_ct_hu(shape=(24, 24, 6)):
    ct = np.full(shape, -1000.0)  # air
    ct[2:22, 2:22] = 800.0  # skull
    ct[4:20, 4:20] = 35.0  # brain
    ct[10:12, 10:12] = 5.0  # CSF
    return ct


def test_ct_in_hu_passes():
    assert "HU" in check_ct_hu(_head_ct_hu(), "NCCT")


def test_skull_stripped_ct_in_hu_passes():
    ct = np.zeros((20, 20, 5))
    ct[4:16, 4:16] = 35.0
    assert "HU" in check_ct_hu(ct, "NCCT")


def test_ct_without_rescale_intercept_is_rejected():
    with pytest.raises(StrokeLabelError, match="intercept"):
        check_ct_hu(_head_ct_hu() + 1024.0, "CTA phase 1")


def test_normalised_ct_is_rejected():
    ct = (_head_ct_hu() + 1000.0) / 1800.0
    with pytest.raises(StrokeLabelError, match="normalised") as err:
        check_ct_hu(ct, "NCCT")
    assert "NCCT" in str(err.value)


def test_ct_padding_is_ignored():
    ct = _head_ct_hu()
    ct[:, :, 0] = -3024.0
    assert "HU" in check_ct_hu(ct, "NCCT")


def test_nan_and_constant_volumes_are_rejected_naming_the_modality():
    values = np.ones((4, 4, 4))
    with pytest.raises(StrokeLabelError, match="CBF is empty"):
        check_not_empty(values, "CBF")
    values[0, 0, 0] = np.inf
    with pytest.raises(StrokeLabelError, match="Tmax contains 1 NaN or infinite"):
        check_finite(values, "Tmax")


def test_voxel_volume_in_ml():
    assert voxel_volume_ml((2.0, 2.0, 5.0)) == pytest.approx(0.02)
    with pytest.raises(StrokeLabelError, match="spacing"):
        voxel_volume_ml((1.0, 0.0, 1.0))
    with pytest.raises(StrokeLabelError, match="3D"):
        voxel_volume_ml((1.0, 1.0), ndim=3)
