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
    resample,
    resample_clot_label,
    stack_inputs,
    to_working_grid,
    working_shape,
)
from strokelabel.errors import StrokeLabelError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def test_a_missing_spiral_becomes_zeros_and_is_noted_but_a_missing_phase_one_is_an_error():
    stacked, notes = stack_inputs({"cta1": np.full((4, 4, 3), 300.0)}, ("cta1", "spiral"))
    assert stacked.shape == (2, 4, 4, 3) and not stacked[1].any() and stacked[0].all()
    assert notes == ["no spiral map: the model ran on the CTA phases alone"]
    with pytest.raises(StrokeLabelError, match="cta1"):
        stack_inputs({"spiral": np.zeros((4, 4, 3))}, ("cta1", "spiral"))


def test_a_full_size_cta_maps_to_the_working_grid_of_the_small_phantoms():
    assert working_shape((512, 512, 257), (0.45, 0.45, 0.8), (1.7, 1.7, 3.2)) == (136, 136, 64)
    assert working_shape((128, 128, 40), (1.7, 1.7, 3.2), (1.7, 1.7, 3.2)) == (128, 128, 40)
    volume = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 4)).astype(np.float32)
    same = to_working_grid(volume, (1.7, 1.7, 3.2), {"spacing_mm": [1.7, 1.7, 3.2]})
    assert np.array_equal(same.numpy(), volume)  # already on the working grid: untouched
    half = to_working_grid(volume, (0.85, 0.85, 1.6), {"spacing_mm": [1.7, 1.7, 3.2]})
    assert tuple(half.shape) == (2, 4, 4, 2)
    # area averaging: each working voxel is the mean of the 2 x 2 x 2 study voxels it covers
    assert half[0, 0, 0, 0].item() == pytest.approx(volume[0, :2, :2, :2].mean(), abs=1e-6)


def test_atlas_labels_resample_by_nearest_neighbour_and_a_tiny_clot_survives_shrinking():
    atlas = np.zeros((1, 8, 8, 4), np.uint8)
    atlas[0, :4] = 3
    atlas[0, 4:] = 14
    assert set(np.unique(resample(atlas, (4, 4, 2), kind="labels").numpy()).tolist()) == {3, 14}
    clot = np.zeros((8, 8, 4), bool)
    clot[5, 2, 1] = True  # one voxel: a fraction of 1/8 of a working voxel
    small = resample_clot_label(clot, (4, 4, 2))
    assert small.sum() == 1 and bool(small[2, 1, 0])
    big = np.zeros((8, 8, 4), bool)
    big[0:4, 0:4, 0:2] = True
    assert resample_clot_label(big, (4, 4, 2)).sum() == 4


def test_training_samples_drop_the_spiral_channels_at_the_rate_asked():
    d = toy_study()
    d["image"] = np.concatenate([d["image"], np.ones_like(d["image"])])  # channels: cta1, spiral (all ones)
    sampler = SampleClotSlicesd(1, num_samples=400, pos_fraction=0.5, flip=False, input_names=("cta1", "spiral"), drop_prob=0.3)
    sampler.set_random_state(0)
    samples = sampler(d)
    dropped = [not s["image"][3:6].any() for s in samples]
    assert 0.2 < np.mean(dropped) < 0.4
    assert all(s["image"][:3].any() for s in samples)  # the CTA channels are never dropped
    kept = SampleClotSlicesd(1, num_samples=50, input_names=("cta1", "spiral"))(d)
    assert all(s["image"][3:6].all() for s in kept)


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


def test_head_coordinates_measure_from_the_midline_the_centre_and_upwards_in_decimetres():
    from lib.transforms.clot_region import head_coordinates
    from strokelabel.midsagittal import MidSagittalPlane

    shape, spacing = (21, 31, 11), (2.0, 1.0, 3.0)
    plane = MidSagittalPlane(offset_vox=2.0, angle_deg=0.0, spacing_mm=spacing, shape=shape)  # midline at x index 12
    head = np.zeros(shape, bool)
    head[4:21, 5:26, 0:11] = True  # centre at index (12, 15, 5)
    c = head_coordinates(plane, head)
    assert c["coord_lr"][12, 0, 0].item() == pytest.approx(0.0) and c["coord_lr"][17, 3, 4].item() == pytest.approx(0.10)
    assert c["coord_ap"][0, 15, 0].item() == pytest.approx(0.0, abs=1e-6) and c["coord_ap"][3, 25, 2].item() == pytest.approx(0.10)
    assert c["coord_si"][0, 0, 5].item() == pytest.approx(0.0, abs=1e-6) and c["coord_si"][0, 0, 10].item() == pytest.approx(0.15)


def test_network_input_resampled_channel_by_channel_equals_the_stacked_volume_resampled():
    from lib.transforms.clot_region import network_input

    rng = np.random.default_rng(11)
    images = {"cta1": rng.uniform(-200, 700, (50, 46, 20)).astype(np.float32),
              "cta3": rng.uniform(-200, 700, (50, 46, 20)).astype(np.float32),
              "spiral": rng.random((50, 46, 20)).astype(np.float32)}
    names, spacing, plan = ("cta1", "cta2", "cta3", "spiral"), (0.45, 0.45, 0.8), {"spacing_mm": [1.7, 1.7, 3.2]}
    volume, notes = network_input(images, names, spacing, plan=plan)
    stacked, stacked_notes = stack_inputs(images, names)
    assert torch.equal(volume, to_working_grid(stacked, spacing, plan)) and notes == stacked_notes
    assert tuple(volume.shape) == (4, 13, 12, 5)


@pytest.mark.parametrize("kind, size", [("image", (11, 10, 6)), ("image", (90, 81, 50)), ("probability", (90, 81, 50)), ("labels", (11, 10, 6))])
def test_resample_gives_monai_resize_answer_without_its_copies(kind, size):
    from monai.transforms import Resize

    volume = torch.rand(1, 40, 37, 23) if kind != "labels" else torch.randint(0, 16, (1, 40, 37, 23)).float()
    mode = {"image": "area" if size[0] < 40 else "trilinear", "probability": "trilinear", "labels": "nearest"}[kind]
    assert torch.equal(resample(volume, size, kind=kind), Resize(spatial_size=size, mode=mode)(volume).as_tensor())
    mask = volume > 7
    assert torch.equal(resample(mask, size, kind="labels") > 0, Resize(spatial_size=size, mode="nearest")(mask.to(torch.uint8)).as_tensor() > 0)
