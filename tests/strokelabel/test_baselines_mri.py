import numpy as np
import pytest

from strokelabel.baselines import adc_lesion_baseline, brain_mask_from_mri
from strokelabel.errors import StrokeLabelError

SPACING_MM = (1.0, 1.0, 2.0)  # 0.002 mL per voxel
BRAIN = (slice(3, 27), slice(3, 27), slice(0, 6))
LESION = (slice(5, 15), slice(5, 15), slice(1, 5))  # ADC 0.4, DWI bright: 400 voxels, 0.8 mL
DARK_LOW_ADC = (slice(18, 24), slice(5, 11), slice(1, 5))  # ADC 0.4, DWI not bright
SMALL_LESION = (slice(20, 22), slice(20, 22), slice(2, 4))  # 8 voxels, 0.016 mL


def mri_phantom():
    """ADC in 10^-3 mm²/s and DWI on a zero background."""
    rng = np.random.default_rng(3)
    adc = np.zeros((30, 30, 6))
    dwi = np.zeros_like(adc)
    adc[BRAIN] = 0.8
    dwi[BRAIN] = rng.normal(100.0, 5.0, size=dwi[BRAIN].shape)
    for block in (LESION, SMALL_LESION):
        adc[block], dwi[block] = 0.4, 200.0
    adc[DARK_LOW_ADC], dwi[DARK_LOW_ADC] = 0.4, 100.0
    return adc, dwi


def expected_lesion():
    label = np.zeros((30, 30, 6), np.uint8)
    label[LESION] = 1
    return label


@pytest.mark.parametrize("scale, unit", [(1.0, "10^-3 mm²/s"), (1000.0, "10^-6 mm²/s")])
def test_adc_lesion_found_in_either_adc_unit(scale, unit):
    adc, dwi = mri_phantom()
    label, assumption = adc_lesion_baseline(adc * scale, dwi, SPACING_MM)
    np.testing.assert_array_equal(label, expected_lesion())
    assert unit in assumption


def test_low_adc_without_dwi_hyperintensity_is_not_lesion():
    adc, dwi = mri_phantom()
    label, _ = adc_lesion_baseline(adc, dwi, SPACING_MM)
    assert not label[DARK_LOW_ADC].any()


def test_small_adc_lesion_kept_when_minimum_cluster_allows():
    adc, dwi = mri_phantom()
    label, _ = adc_lesion_baseline(adc, dwi, SPACING_MM, min_cluster_ml=0.01)
    assert label[SMALL_LESION].all()


def test_adc_threshold_is_in_mm2_per_s():
    adc, dwi = mri_phantom()
    label, _ = adc_lesion_baseline(adc, dwi, SPACING_MM, adc_threshold_mm2_s=0.3e-3)
    assert not label.any()


def test_brain_mask_from_mri_is_the_brain_box():
    adc, dwi = mri_phantom()
    expected = np.zeros(adc.shape, bool)
    expected[BRAIN] = True
    np.testing.assert_array_equal(brain_mask_from_mri(dwi, adc), expected)


def test_adc_in_an_absurd_unit_is_rejected():
    adc, dwi = mri_phantom()
    with pytest.raises(StrokeLabelError, match="ADC"):
        adc_lesion_baseline(adc * 40.0, dwi, SPACING_MM)
