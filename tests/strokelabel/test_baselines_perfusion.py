import numpy as np
import pytest

from strokelabel.baselines import (
    CORE,
    PENUMBRA,
    brain_mask_from_perfusion,
    core_penumbra_baseline,
    ctp_lesion_baseline,
    estimate_midsagittal_plane,
    mirror,
    relative_cbf,
)
from strokelabel.baselines.perfusion import RCBF_CORE_THRESHOLD, healthy_side_mask
from strokelabel.errors import StrokeLabelError
from strokelabel.metrics import dice
from strokelabel.phantom.geometry import Grid
from strokelabel.phantom.patient import make_patient
from strokelabel.phantom.render import PARENCHYMA_MIN, truth_volumes
from strokelabel.phantom.study import study_seed

SPACING_MM = (2.0, 2.0, 5.0)  # 0.02 mL per voxel

# Brain box x 6..35 (mid-sagittal plane at x = 20.5, off the array centre 19.5).
BRAIN = (slice(6, 36), slice(5, 25), slice(1, 5))
CORE_BLOCK = (slice(8, 12), slice(8, 14), slice(1, 5))  # left; rCBF 0.2, Tmax 10 s
PENUMBRA_BLOCK = (slice(12, 18), slice(8, 14), slice(1, 5))  # left; rCBF 0.6, Tmax 8 s
VENTRICLE = (slice(18, 24), slice(18, 22), slice(1, 5))  # symmetric; CBF 0, Tmax 0
SPECK = (30, 20, 2)  # one healthy-side voxel with CBF 5: a 0.02 mL core speck
SPECK_IN_PENUMBRA = (14, 10, 2)


def ctp_phantom():
    cbf = np.zeros((40, 30, 6))
    tmax = np.zeros_like(cbf)
    cbf[BRAIN], tmax[BRAIN] = 50.0, 1.0
    cbf[CORE_BLOCK], tmax[CORE_BLOCK] = 10.0, 10.0
    cbf[PENUMBRA_BLOCK], tmax[PENUMBRA_BLOCK] = 30.0, 8.0
    cbf[VENTRICLE], tmax[VENTRICLE] = 0.0, 0.0
    cbf[SPECK] = 5.0
    cbf[SPECK_IN_PENUMBRA] = 5.0
    return cbf, tmax


def expected_label():
    label = np.zeros((40, 30, 6), np.uint8)
    label[CORE_BLOCK] = CORE
    label[PENUMBRA_BLOCK] = PENUMBRA  # the removed core speck inside stays penumbra
    return label


def test_midsagittal_plane_of_an_off_centre_ellipsoid():
    x, y, z = np.meshgrid(np.arange(50), np.arange(30), np.arange(10), indexing="ij")
    brain = ((x - 27.5) / 15) ** 2 + ((y - 14.5) / 12) ** 2 + ((z - 4.5) / 4) ** 2 <= 1
    assert estimate_midsagittal_plane(brain) == 27.5
    cbf, _ = ctp_phantom()
    assert estimate_midsagittal_plane(cbf > 0) == 20.5


def test_mirror_maps_each_voxel_to_its_reflection():
    values = np.arange(6.0)
    np.testing.assert_array_equal(mirror(values, 2.5), [5, 4, 3, 2, 1, 0])
    np.testing.assert_array_equal(mirror(values, 2.0), [4, 3, 2, 1, 0, np.nan])


def test_brain_mask_from_perfusion_fills_the_ventricles():
    cbf, tmax = ctp_phantom()
    mask = brain_mask_from_perfusion(cbf, tmax)
    expected = np.zeros(mask.shape, bool)
    expected[BRAIN] = True
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("reference", ["contralateral", "mirror", "healthy_median"])
def test_core_and_penumbra_lie_exactly_where_the_thresholds_say(reference):
    cbf, tmax = ctp_phantom()
    label = core_penumbra_baseline(cbf, tmax, SPACING_MM, reference=reference)
    np.testing.assert_array_equal(label, expected_label())


def test_rcbf_is_relative_to_the_healthy_hemisphere_median():
    cbf, tmax = ctp_phantom()
    brain = np.zeros(cbf.shape, bool)
    brain[BRAIN] = True
    rcbf = relative_cbf(cbf, brain, SPACING_MM, tmax)
    assert rcbf[9, 9, 2] == pytest.approx(0.2)
    assert rcbf[13, 9, 2] == pytest.approx(0.6)
    assert np.isnan(rcbf[0, 0, 0])



def test_a_given_reference_cbf_replaces_the_healthy_side_median():
    cbf, tmax = ctp_phantom()
    brain = np.zeros(cbf.shape, bool)
    brain[BRAIN] = True
    # The healthy side's median is 50; read as 40 (a reference measured otherwise), the core block reads 10 / 40.
    rcbf = relative_cbf(cbf, brain, SPACING_MM, tmax, reference_cbf=40.0)
    assert rcbf[9, 9, 2] == pytest.approx(0.25)
    assert rcbf[13, 9, 2] == pytest.approx(0.75)
    # A reference of 20 puts the penumbra block (CBF 30 -> 1.5) out of the core and the core block (10 -> 0.5) too.
    label = core_penumbra_baseline(cbf, tmax, SPACING_MM, reference_cbf=20.0)
    assert not (label == CORE).any() and (label[CORE_BLOCK] == PENUMBRA).all()
    # At 100, healthy tissue (50 -> 0.5) stays out and the penumbra block (30 -> 0.3, not below) too.
    np.testing.assert_array_equal(core_penumbra_baseline(cbf, tmax, SPACING_MM, reference_cbf=100.0), expected_label())


def test_thresholds_are_strict_inequalities():
    cbf, tmax = ctp_phantom()
    column = (slice(18, 19), slice(8, 14), slice(1, 5))
    cbf[column], tmax[column] = 15.0, 6.0  # rCBF exactly 0.30, Tmax exactly 6 s
    label = core_penumbra_baseline(cbf, tmax, SPACING_MM)
    assert not label[column].any()


def test_clusters_below_the_minimum_volume_are_removed():
    cbf, tmax = ctp_phantom()
    assert core_penumbra_baseline(cbf, tmax, SPACING_MM, min_cluster_ml=0.1)[SPECK] == 0
    kept = core_penumbra_baseline(cbf, tmax, SPACING_MM, min_cluster_ml=0.0)
    assert kept[SPECK] == CORE and kept[SPECK_IN_PENUMBRA] == CORE
    # The core block is 96 voxels = 1.92 mL: a 2 mL minimum turns it into penumbra.
    label = core_penumbra_baseline(cbf, tmax, SPACING_MM, min_cluster_ml=2.0)
    assert not (label == CORE).any() and (label[CORE_BLOCK] == PENUMBRA).all()


def test_given_brain_mask_limits_the_labels():
    cbf, tmax = ctp_phantom()
    brain = np.zeros(cbf.shape, bool)
    brain[BRAIN] = True
    brain[:12] = False  # cut the core block off
    label = core_penumbra_baseline(cbf, tmax, SPACING_MM, brain_mask=brain)
    assert not (label == CORE).any() and (label[PENUMBRA_BLOCK] == PENUMBRA).all()


def test_ctp_lesion_is_the_core():
    cbf, tmax = ctp_phantom()
    lesion = ctp_lesion_baseline(cbf, SPACING_MM, tmax=tmax)
    np.testing.assert_array_equal(lesion, expected_label() == CORE)
    # Without Tmax the healthy side is the one with the higher median CBF.
    np.testing.assert_array_equal(ctp_lesion_baseline(cbf, SPACING_MM), expected_label() == CORE)


def test_ctp_lesion_with_cbv_threshold_keeps_only_low_cbv_core():
    cbf, tmax = ctp_phantom()
    cbv = np.where(cbf > 0, 4.0, 0.0)
    low_cbv = (slice(8, 10), slice(8, 14), slice(1, 5))
    cbv[low_cbv] = 1.5
    lesion = ctp_lesion_baseline(cbf, SPACING_MM, tmax=tmax, cbv=cbv, cbv_threshold_ml_100g=2.0)
    expected = np.zeros(cbf.shape, np.uint8)
    expected[low_cbv] = 1
    np.testing.assert_array_equal(lesion, expected)


def test_mismatched_shapes_are_rejected():
    cbf, tmax = ctp_phantom()
    with pytest.raises(StrokeLabelError, match="shapes differ"):
        core_penumbra_baseline(cbf, tmax[:-1], SPACING_MM)


def test_brain_mask_from_perfusion_skips_missing_maps():
    cbf, tmax = ctp_phantom()
    np.testing.assert_array_equal(brain_mask_from_perfusion(cbf, None, tmax), brain_mask_from_perfusion(cbf, tmax))


def test_tmax_in_milliseconds_is_rejected_before_thresholding():
    cbf, tmax = ctp_phantom()
    with pytest.raises(StrokeLabelError, match="Tmax looks like it is in ms") as err:
        core_penumbra_baseline(cbf, tmax * 1000.0, SPACING_MM, study="sub-3_ses-1")
    assert "sub-3_ses-1" in str(err.value)
    # The check can be switched off (then every voxel is Tmax > 6 s "penumbra").
    label = core_penumbra_baseline(cbf, tmax * 1000.0, SPACING_MM, check_units=False)
    assert (label > 0).sum() > (expected_label() > 0).sum()


def test_a_generous_brain_mask_does_not_fail_the_unit_check():
    cbf, tmax = ctp_phantom()
    head = np.ones(cbf.shape, bool)  # e.g. a mask that also holds skull and scalp
    np.testing.assert_array_equal(core_penumbra_baseline(cbf, tmax, SPACING_MM, brain_mask=head), expected_label())


# --- the contralateral reference on bilateral and posterior strokes (the generator's own patients) ----------------

COARSE_CTP_GRID = Grid((64, 64, 12), (3.4, 3.4, 10.0))  # the small CTP grid, 2 x coarser: the same head, 8 x fewer voxels


def true_maps(scenario: str, index: int) -> dict:
    """A phantom patient's true CBF, Tmax and lesion flow factor q (CBF / the same tissue unaffected), brain, midline."""
    patient = make_patient(study_seed(0, "ctp", index), scenario=scenario)
    truth = truth_volumes(patient, COARSE_CTP_GRID, keys=("cbf", "rcbf", "tmax", "parenchyma"))
    brain = truth["parenchyma"] >= PARENCHYMA_MIN
    # The truth's rCBF is q over the healthy mirror point, so 1/q on the mirror of the lesion: q = min(rCBF, 1).
    q = np.where(brain, np.minimum(truth["rcbf"], 1.0), 1.0)
    plane = patient.pose.midsagittal_plane(COARSE_CTP_GRID)["offset_vox"] + (COARSE_CTP_GRID.shape[0] - 1) / 2
    return {"cbf": truth["cbf"], "tmax": truth["tmax"], "q": q, "brain": brain, "plane": plane}


def reference_and_core_dice(cbf, tmax, q, brain) -> tuple[float, float]:
    """(the contralateral reference CBF / the unaffected tissue's median CBF, Dice of the rule's core vs q < 0.3)."""
    unaffected = np.median((cbf / np.maximum(q, 1e-6))[brain])
    reference = np.median(cbf[healthy_side_mask(cbf, brain, tmax)])
    label = core_penumbra_baseline(cbf, tmax, COARSE_CTP_GRID.spacing_mm, brain_mask=brain, check_units=False)
    return reference / unaffected, dice(label == 1, brain & (q < RCBF_CORE_THRESHOLD))


@pytest.mark.parametrize("scenario, index", [("M2", 10001), ("P2", 20001)])
def test_contralateral_reference_stays_on_unaffected_tissue_when_both_hemispheres_are_struck(scenario, index):
    # The patient's own lesion plus its mirror image on the other side (flow factors multiply, the later bolus wins):
    # both hemispheres hold core. The reference is the less affected side without its Tmax > 6 s tissue.
    m = true_maps(scenario, index)
    healthy_cbf = m["cbf"] / np.maximum(m["q"], 1e-6)
    q_both = m["q"] * mirror(m["q"], m["plane"], fill=1.0)
    tmax_both = np.maximum(m["tmax"], mirror(m["tmax"], m["plane"], fill=0.0))
    core_both = m["brain"] & (q_both < RCBF_CORE_THRESHOLD)
    left, right = core_both[: int(m["plane"])].sum(), core_both[int(m["plane"]) + 1 :].sum()
    assert min(left, right) > 0.3 * max(left, right)  # a bilateral stroke, not a speck across the midline
    one_ratio, one_dice = reference_and_core_dice(m["cbf"], m["tmax"], m["q"], m["brain"])
    both_ratio, both_dice = reference_and_core_dice(healthy_cbf * q_both, tmax_both, q_both, m["brain"])
    assert abs(one_ratio - 1.0) < 0.06 and abs(both_ratio - 1.0) < 0.06
    assert both_dice > 0.7 and both_dice > one_dice - 0.05


def test_contralateral_reference_of_a_posterior_stroke_is_the_unaffected_tissue():
    m = true_maps("P2", 20001)  # a P2 occlusion: occipital and thalamic tissue of one side
    ratio, core_dice = reference_and_core_dice(m["cbf"], m["tmax"], m["q"], m["brain"])
    assert abs(ratio - 1.0) < 0.06 and core_dice > 0.7
