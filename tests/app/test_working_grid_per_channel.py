"""The CT perfusion models' input built one channel at a time on the brain's box is the stacked full-grid input, to the bit."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lib.infers.core_penumbra import brain_slices
from lib.transforms.core_penumbra import DEFAULT_PLAN, CorePenumbraInputd, input_maps, nihss_channel_value, relative_scale
from lib.transforms.grid import resample_inplane
from lib.transforms.ischemic_lesion import inplane_size, study_channels, working_image

SHAPE = (96, 80, 6)
SPACING_MM = (0.45, 0.45, 5.0)


def loaded_study(seed: int = 0):
    rng = np.random.default_rng(seed)
    brain = np.zeros(SHAPE, bool)
    brain[20:70, 15:60, 1:5] = True
    maps = {m: np.where(brain, rng.uniform(lo, hi, SHAPE), 0).astype(np.float32)
            for m, (lo, hi) in {"cbf": (10, 80), "cbv": (1, 5), "mtt": (2, 9), "tmax": (0, 12)}.items()}
    study = SimpleNamespace(brain_mask=brain, spacing_mm=SPACING_MM, clinical={"nihss": 7}, study_id="sub-t_ses-01", images=maps, shape=SHAPE)
    return {**maps, "study": study, "image": "sub-t_ses-01_tmax.nii.gz"}


def full_grid_normalised(values, brain, rule):
    """The plan's normalisation on the whole grid (the reference)."""
    x = values.astype(np.float32)
    if rule.get("relative"):
        x = x / relative_scale(values, brain)
    low, high = rule["clip"]
    return np.where(brain, (np.clip(x, low, high) - rule["mean"]) / rule["std"], 0.0).astype(np.float32)


def test_core_penumbra_input_channel_by_channel_is_the_stacked_input():
    d = loaded_study()
    brain = d["study"].brain_mask
    out = CorePenumbraInputd(plan=DEFAULT_PLAN)(d)
    maps = DEFAULT_PLAN["maps"]
    values = input_maps(d, maps, brain)
    channels = [full_grid_normalised(values[m], brain, DEFAULT_PLAN["normalisation"][m]) for m in maps]
    channels.append(np.full(SHAPE, nihss_channel_value(d["study"].clinical), np.float32))
    size = CorePenumbraInputd(plan=DEFAULT_PLAN).working_size(SHAPE, SPACING_MM)
    expected = resample_inplane(torch.from_numpy(np.stack(channels)), size, mode="area").numpy()
    assert out["image"].shape == expected.shape and np.array_equal(out["image"], expected)


def test_ischemic_lesion_ctp_input_channel_by_channel_is_the_stacked_input():
    study = loaded_study(1)["study"]
    image, out_size, _ = working_image(study, "ctp")
    channels, _ = study_channels(study, "ctp")
    expected = resample_inplane(torch.from_numpy(channels), inplane_size(channels.shape[1:], SPACING_MM))
    assert out_size == SHAPE[:2] and torch.equal(image, expected)


@pytest.mark.parametrize("first,last,expected", [(0, 64, (0, 64)), (3, 60, (0, 64)), (9, 23, (8, 24)), (17, 18, (16, 24)), (57, 61, (56, 61))])
def test_the_slices_run_are_the_brains_widened_to_whole_inferer_batches(first, last, expected):
    brain = np.zeros((4, 4, 64 if expected[1] != 61 else 61), bool)
    brain[1, 2, first:last] = True
    assert (brain_slices(brain, 8).start, brain_slices(brain, 8).stop) == expected
    assert brain_slices(np.zeros((2, 2, 5), bool)) == slice(0, 0)


def test_the_label_by_comparisons_is_torchs_argmax_first_class_on_ties():
    from lib.infers.core_penumbra import first_argmax

    probs = torch.softmax(torch.randn(3, 20, 16, 5), dim=0)
    probs[:, 0, 0, 0] = torch.tensor([0.4, 0.4, 0.2])  # a tie: the first class wins, as torch.argmax
    probs[:, 1, 0, 0] = torch.tensor([0.2, 0.4, 0.4])
    assert torch.equal(first_argmax(probs), torch.argmax(probs, dim=0).to(torch.uint8))


def test_binary_entropy_in_chunks_is_the_whole_arrays():
    from lib.transforms.ischemic_lesion import binary_entropy

    prob = np.random.default_rng(0).uniform(0, 1, (30, 20, 7)).astype(np.float32)
    p = np.clip(prob.astype(np.float64), 1e-6, 1 - 1e-6)
    expected = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    assert np.array_equal(binary_entropy(prob, chunk=1000), expected) and binary_entropy(prob[0, 0, 0]).shape == ()
