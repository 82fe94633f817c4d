"""The physiology guard: a model's answer against the physics of the same study."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from strokelabel import guard

SPACING = (2.0, 2.0, 2.0)  # 8 uL voxels: 125 voxels = 1 mL


def box(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def test_a_core_penumbra_label_equal_to_the_physics_passes_and_says_so():
    physics = np.zeros((40, 40, 20), np.uint8)
    physics[box(physics.shape, (5, 5, 5), (25, 25, 15))] = 2
    physics[box(physics.shape, (10, 10, 8), (15, 15, 12))] = 1
    verdict = guard.verdict("core_penumbra", physics.copy(), physics, spacing_mm=SPACING)
    assert verdict.passed and verdict.reason.startswith("agrees")
    assert verdict.figures["hypoperfusion_ratio"] == 1.0 and verdict.figures["hypoperfusion_dice"] == 1.0
    assert guard.decide("core_penumbra", verdict.figures) == []
    assert guard.decide("core_penumbra", verdict.figures, {"hypo_dice_min": 1.01})  # the same figures re-decided under other limits


def test_twice_the_hypoperfusion_of_tmax6_fails_with_the_figures_in_the_reason():
    physics = np.zeros((40, 40, 20), np.uint8)
    physics[box(physics.shape, (5, 5, 5), (25, 25, 15))] = 2
    model = physics.copy()
    model[box(physics.shape, (25, 5, 5), (35, 25, 15))] = 2  # 50 % more hypoperfused tissue
    verdict = guard.verdict("core_penumbra", model, physics, spacing_mm=SPACING)
    assert not verdict.passed
    assert "1.50 x the Tmax > 6 s volume" in verdict.reason
    assert verdict.as_json()["limits"]["hypo_volume_ratio_max"] == guard.LIMITS["core_penumbra"]["hypo_volume_ratio_max"]


def test_small_volumes_are_judged_by_their_absolute_difference():
    physics = np.zeros((40, 40, 20), np.uint8)
    physics[box(physics.shape, (5, 5, 5), (10, 10, 10))] = 2  # 1 mL
    model = np.zeros_like(physics)
    model[box(physics.shape, (20, 20, 5), (25, 25, 10))] = 2  # 1 mL elsewhere: ratio 1, Dice 0, but tiny
    assert guard.verdict("core_penumbra", model, physics, spacing_mm=SPACING).passed


def test_a_core_far_from_rcbf30_fails():
    physics = np.zeros((40, 40, 20), np.uint8)
    physics[box(physics.shape, (5, 5, 5), (25, 25, 15))] = 2
    model = physics.copy()
    model[physics == 2] = 1  # all of it called core: 32 mL against none
    verdict = guard.verdict("core_penumbra", model, physics, spacing_mm=SPACING)
    assert not verdict.passed and "core 32.0 mL vs rCBF < 30 % 0.0 mL" in verdict.reason


def mri_head(shape=(48, 48, 16)):
    """DWI/ADC of a round 'brain' with a bright cortical rim on both sides and a lesion on one side."""
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.arange(shape[0]) - 23.5, np.arange(shape[1]) - 23.5, indexing="ij")
    r = np.hypot(x, y)[..., None].repeat(shape[2], axis=2)
    brain = r < 20
    dwi = np.where(brain, 100 + rng.normal(0, 4, shape), 0).astype(np.float32)
    adc = np.where(brain, 0.8, 0).astype(np.float32)
    rim = brain & (r > 18)
    dwi[rim] = 150  # symmetric: a mimic
    lesion = box(shape, (8, 20, 4), (13, 26, 10))
    dwi[lesion], adc[lesion] = 190, 0.5
    csf = box(shape, (30, 20, 4), (34, 26, 10))
    dwi[csf], adc[csf] = 160, 2.8  # bright on DWI, but CSF-like ADC: shine-through
    return dwi, adc, brain, lesion, rim, csf


def test_mri_evidence_is_the_unilateral_restricted_lesion_not_the_rim_nor_shine_through():
    dwi, adc, brain, lesion, rim, csf = mri_head()
    mirror = guard.mirror_reference(dwi * brain, SPACING)
    evidence = guard.mri_lesion_evidence(dwi, adc, brain, mirror)
    assert evidence[lesion].mean() > 0.8
    assert evidence[rim].mean() < 0.1
    assert not evidence[csf].any()


def test_a_lesion_model_labelling_the_rim_fails_and_one_labelling_the_lesion_passes():
    dwi, adc, brain, lesion, rim, csf = mri_head()
    evidence = guard.mri_lesion_evidence(dwi, adc, brain, guard.mirror_reference(dwi * brain, SPACING))
    good = guard.verdict("lesion_mri", lesion, evidence, lesion, spacing_mm=SPACING)
    assert good.passed and good.figures["support"] > 0.8 and good.figures["coverage"] == 1.0
    rim_model = guard.verdict("lesion_mri", rim, evidence, lesion, spacing_mm=SPACING)
    assert not rim_model.passed
    assert "DWI-bright" in rim_model.reason and "labels 0%" in rim_model.reason


def test_a_strict_answer_is_judged_for_coverage_on_what_the_network_sees_and_for_support_on_itself():
    dwi, adc, brain, lesion, rim, csf = mri_head()
    evidence = guard.mri_lesion_evidence(dwi, adc, brain, guard.mirror_reference(dwi * brain, SPACING))
    # the threshold rule's "unmistakable" lesion is the true lesion plus faint tissue around it; the network's
    # default answer covers it, the strict answer keeps only the sure core (a subset, as the rule guarantees)
    unmistakable = ndimage.binary_dilation(lesion, iterations=3) & brain
    sure_core = ndimage.binary_erosion(lesion, iterations=2)
    assert sure_core.any() and np.count_nonzero(sure_core) < 0.3 * np.count_nonzero(unmistakable)
    alone = guard.verdict("lesion_mri", sure_core, evidence, unmistakable, brain, spacing_mm=SPACING)
    assert not alone.passed and "with ADC < 620e-6" in alone.reason  # judged on itself: coverage fails
    strict = guard.verdict("lesion_mri", sure_core, evidence, unmistakable, brain, spacing_mm=SPACING,
                           coverage_label=ndimage.binary_dilation(lesion, iterations=3))
    assert strict.passed and strict.figures["coverage"] == 1.0
    assert strict.figures["lesion_model_ml"] == alone.figures["lesion_model_ml"]  # the volume is the served answer's
    # support stays the served answer's: a strict answer on the rim fails whatever the network's default covers
    on_rim = guard.verdict("lesion_mri", rim, evidence, unmistakable, brain, spacing_mm=SPACING, coverage_label=unmistakable)
    assert not on_rim.passed and "DWI-bright" in on_rim.reason


def test_a_lesion_outside_the_brain_goes_to_review_with_its_share_and_volume():
    dwi, adc, brain, lesion, rim, csf = mri_head()
    evidence = guard.mri_lesion_evidence(dwi, adc, brain, guard.mirror_reference(dwi * brain, SPACING))
    inside = guard.verdict("lesion_mri", lesion, evidence, lesion, brain, spacing_mm=SPACING)
    assert inside.passed and inside.figures["outside_brain_share"] == 0.0
    # The lesion and, at the skull base, a bright artefact outside the brain (where the scalp is).
    artefact = box(brain.shape, (0, 0, 0), (5, 10, 16)) & ~brain
    spilled = guard.verdict("lesion_mri", lesion | artefact, evidence | artefact, lesion, brain, spacing_mm=SPACING)
    assert not spilled.passed and "lies outside the brain" in spilled.reason
    assert spilled.figures["outside_brain_share"] > 0.1 and spilled.figures["outside_brain_ml"] > 0.5


def test_a_lesion_far_larger_than_the_studys_evidence_goes_to_review_and_a_matching_one_does_not():
    dwi, adc, brain, lesion, rim, csf = mri_head()
    evidence = guard.mri_lesion_evidence(dwi, adc, brain, guard.mirror_reference(dwi * brain, SPACING))
    # A model labelling the lesion and a whole hemisphere around it: support stays high at the lesion's
    # border only if the rest were evidence; here the volume check is what objects.
    figures = guard.lesion_mri_figures(lesion, evidence, lesion, brain, spacing_mm=SPACING)
    assert not guard.decide("lesion_mri", figures)
    big = {**figures, "lesion_model_ml": 4.0 * figures["evidence_ml"] + 2.0, "support": 1.0}
    failures = guard.decide("lesion_mri", big)
    assert len(failures) == 1 and "more than 1.5 x the" in failures[0]
    # Below volume_check_from_ml a volume ratio means little: not judged.
    small = {**big, "lesion_model_ml": 1.5, "evidence_ml": 0.2}
    assert not guard.decide("lesion_mri", small)


def test_a_clot_beside_an_enhancing_artery_is_supported_and_one_in_the_brain_is_not():
    shape = (40, 40, 20)
    cta = np.full(shape, 35.0, np.float32)
    brain = box(shape, (5, 5, 2), (35, 35, 18))
    artery = box(shape, (18, 5, 8), (20, 25, 10))
    cta[artery] = 350.0
    clot = box(shape, (18, 25, 8), (20, 28, 10))  # the artery stops: a filling defect at its end
    cta[clot] = 60.0
    evidence = guard.clot_evidence(cta, brain, SPACING)
    assert guard.verdict("clot", clot, evidence, spacing_mm=SPACING).passed
    far = box(shape, (6, 30, 14), (8, 33, 16))
    verdict = guard.verdict("clot", far, evidence, spacing_mm=SPACING)
    assert not verdict.passed and verdict.figures["support"] == 0.0
    assert guard.verdict("clot", np.zeros(shape, bool), evidence, spacing_mm=SPACING).reason == "agrees: the model finds no clot"


def test_clot_evidence_near_the_clot_equals_the_whole_grid_evidence_there():
    rng = np.random.default_rng(7)
    shape, spacing = (60, 50, 30), (0.9, 0.9, 1.6)
    cta = rng.uniform(-50.0, 400.0, shape).astype(np.float32)
    brain = box(shape, (12, 10, 6), (48, 40, 24))
    clot = box(shape, (40, 35, 20), (44, 38, 23)) | box(shape, (3, 2, 1), (5, 4, 3))
    whole = guard.clot_evidence(cta, brain, spacing)
    near = guard.clot_evidence(cta, brain, spacing, near=clot)
    region = ndimage.binary_dilation(clot, structure=np.ones((3, 3, 3), bool))
    assert whole[region].any()
    np.testing.assert_array_equal(near[region], whole[region])
    assert guard.verdict("clot", clot, near, spacing_mm=spacing).figures == guard.verdict("clot", clot, whole, spacing_mm=spacing).figures
    assert not guard.clot_evidence(cta, brain, spacing, near=np.zeros(shape, bool)).any()
    one = box(shape, (40, 35, 20), (44, 38, 23))
    only_there = guard.clot_evidence(cta, brain, spacing, near=one)
    assert only_there.any() and not only_there[~box(shape, (39, 34, 19), (45, 39, 24))].any()  # computed in its box only


def test_clot_support_read_in_the_clots_box_equals_the_whole_grid_count():
    rng = np.random.default_rng(9)
    shape = (30, 28, 12)
    evidence = rng.random(shape) > 0.97
    clot = box(shape, (0, 10, 4), (6, 16, 8)) | box(shape, (20, 2, 9), (23, 5, 12))  # touching the grid's edges
    grown = ndimage.binary_dilation(evidence, structure=np.ones((3, 3, 3), bool))
    expected = np.count_nonzero(clot & grown) / np.count_nonzero(clot)
    assert guard.clot_figures(clot, evidence, (1.0, 1.0, 2.0))["support"] == round(expected, 3)
