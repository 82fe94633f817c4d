"""clot_region transforms: input normalisation, slice sampling for training, whole-study inferers."""

import numpy as np
import pytest
import torch

from lib.networks.ami_net import AMINet, slice_region_labels
from lib.networks.clot_seg_net import ClotSegNet, segment_volume
from lib.transforms.clot_region import (
    CTA_WINDOW_HU,
    RegionTargetsd,
    SampleClotSlicesd,
    SliceRegionInferer,
    SliceSegmentationInferer,
    normalise,
    stack_inputs,
)
from strokelabel.errors import StrokeLabelError


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_study(shape=(24, 20, 10)):
    rng = np.random.default_rng(0)
    atlas = np.zeros(shape, np.uint8)
    atlas[2:12, 2:18] = 3
    atlas[12:22, 2:18] = 8
    clot = np.zeros(shape, np.float32)
    clot[5:7, 6:8, 4:6] = 1  # region 3, slices 4-5
    clot[14, 6, 5] = 1  # region 8, slice 5
    image = rng.uniform(0, 1, (1, *shape)).astype(np.float32)
    return {"image": image, "label": clot[None], "atlas": atlas, "region_base": 1, "study_id": "sub-toy_ses-01"}


def test_cta_is_windowed_to_unit_range_and_spiral_kept():
    low, high = CTA_WINDOW_HU
    hu = np.array([-1000.0, low, (low + high) / 2, high, 3000.0])
    assert normalise("cta1", hu).tolist() == pytest.approx([0, 0, 0.5, 1, 1])
    assert normalise("spiral", np.array([0.0, 0.3, 1.0])).tolist() == pytest.approx([0, 0.3, 1.0])


def test_a_missing_later_phase_is_replaced_by_phase_one_and_noted():
    cta1 = np.full((4, 4, 3), 250.0)
    stacked, notes = stack_inputs({"cta1": cta1, "cta3": cta1 * 0}, ("cta1", "cta2", "cta3"))
    assert stacked.shape == (3, 4, 4, 3)
    assert np.array_equal(stacked[1], stacked[0]) and not np.array_equal(stacked[2], stacked[0])
    assert notes == ["cta2 missing: phase 1 used in its place"]


def test_a_missing_spiral_for_a_model_that_takes_it_is_a_clear_error():
    with pytest.raises(StrokeLabelError, match="spiral"):
        stack_inputs({"cta1": np.zeros((4, 4, 3))}, ("cta1", "spiral"))


def test_clot_samples_are_slice_windows_and_positive_ones_hold_clot():
    d = toy_study()
    sampler = SampleClotSlicesd(context_slices=1, target="clot", num_samples=12, pos_fraction=1.0, flip=False)
    sampler.set_random_state(0)
    samples = sampler(d)
    assert len(samples) == 12
    for s in samples:
        assert s["image"].shape == (3, 24, 20) and s["label"].shape == (1, 24, 20)
        assert s["label"].sum() > 0  # every sample from a slice with clot
    z = [int(np.flatnonzero([np.array_equal(s["label"][0].numpy(), d["label"][0][:, :, k]) for k in range(10)])[0]) for s in samples]
    assert set(z) <= {4, 5}


def test_region_samples_carry_the_atlas_regions_under_the_slice_clot():
    d = toy_study()
    sampler = SampleClotSlicesd(context_slices=0, target="regions", num_samples=30, pos_fraction=0.5)
    sampler.set_random_state(1)
    expected = slice_region_labels(d["label"][0], d["atlas"])
    for s in sampler(d):
        assert s["label"].shape == (15,)
        z = next(k for k in range(10) if torch.equal(s["image"][0], torch.as_tensor(d["image"][0, :, :, k])))
        assert torch.equal(s["label"], expected[z])
    assert expected[5].nonzero().flatten().tolist() == [2, 7]  # regions 3 and 8


def test_region_targets_without_an_atlas_are_a_clear_error():
    d = toy_study()
    d["atlas"] = None
    with pytest.raises(StrokeLabelError, match="atlas"):
        SampleClotSlicesd(0, target="regions")(d)
    with pytest.raises(StrokeLabelError, match="atlas"):
        RegionTargetsd()(d)


def test_validation_region_targets_are_the_flattened_per_slice_labels():
    d = RegionTargetsd()(toy_study())
    assert d["label"].shape == (1, 1, 10 * 15)
    assert d["label"].sum() == 3  # slice 4: region 3; slice 5: regions 3 and 8


def test_slice_inferers_match_the_networks_whole_study_functions():
    torch.manual_seed(0)
    vol = torch.rand(2, 24, 20, 6)
    seg = ClotSegNet(("cta1", "cta2"), context_slices=1, features=(4, 4, 8, 8, 8, 4)).eval()
    with torch.no_grad():
        logits = SliceSegmentationInferer(batch_size=4)(vol[None], seg)
    assert logits.shape == (1, 1, 24, 20, 6)
    assert torch.allclose(torch.sigmoid(logits[0, 0]), segment_volume(seg, vol, batch_size=3), atol=1e-5)

    cls = AMINet(("cta1",), context_slices=1, width=0.25, feat_channels=16).eval()
    with torch.no_grad():
        flat = SliceRegionInferer(batch_size=4)(vol[None, :1], cls)
        direct = cls(torch.stack([torch.cat([vol[0, :, :, max(0, min(5, z + o))][None] for o in (-1, 0, 1)]) for z in range(6)]))
    assert flat.shape == (1, 1, 6 * 15)
    assert torch.allclose(flat.reshape(6, 15), direct, atol=1e-5)
