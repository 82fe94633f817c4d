"""Clot segmentation network, its region flags (clot ∩ atlas) and the clot location figures."""

import numpy as np
import pytest
import torch

from lib.networks.ami_net import slice_region_labels, study_flags
from lib.networks.clot_seg_net import ClotSegNet, clot_location, count_parameters, regions_from_clot, segment_volume

TINY = (4, 4, 8, 8, 8, 4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("names, k", [(("cta1",), 0), (("cta1", "cta2", "cta3"), 2), (("cta1", "cta2", "cta3", "spiral"), 1)])
def test_2p5d_channels_follow_inputs_and_context_and_output_is_one_logit_map(names, k):
    net = ClotSegNet(names, context_slices=k, features=TINY).eval()
    assert net.in_channels == len(names) * (2 * k + 1)
    assert net(torch.randn(2, net.in_channels, 48, 32)).shape == (2, 1, 48, 32)


def test_3d_variant_takes_phases_as_channels_and_refuses_context_slices():
    net = ClotSegNet(context_slices=0, spatial_dims=3, features=TINY).eval()
    assert net(torch.randn(1, 3, 32, 32, 16)).shape == (1, 1, 32, 32, 16)
    with pytest.raises(ValueError, match="context_slices"):
        ClotSegNet(context_slices=1, spatial_dims=3)
    with pytest.raises(ValueError, match=r"\(B, 9, H, W\)"):
        ClotSegNet(context_slices=1)(torch.randn(1, 3, 32, 32))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = ClotSegNet(("cta1", "spiral"), context_slices=1, features=TINY).train()
    net(torch.randn(2, net.in_channels, 32, 32)).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert count_parameters(net) > 0


def test_segment_volume_matches_per_slice_forward_and_is_zero_outside_the_roi():
    torch.manual_seed(0)
    net = ClotSegNet(("cta1", "cta2"), context_slices=1, features=TINY).eval()
    vol = torch.randn(2, 32, 32, 5)
    prob = segment_volume(net, vol, batch_size=2)
    assert prob.shape == (32, 32, 5)
    with torch.no_grad():
        z = 2
        x = torch.cat([vol[:, :, :, zz : zz + 1].permute(3, 0, 1, 2) for zz in (1, 2, 3)], 0)  # (3, 2, 32, 32)
        x = x.permute(1, 0, 2, 3).reshape(1, 6, 32, 32)  # channels: cta1 z-1, z, z+1, cta2 z-1, z, z+1
        assert torch.allclose(prob[..., z], torch.sigmoid(net(x))[0, 0], atol=1e-5)
    roi = torch.zeros(32, 32, 5, dtype=torch.bool)
    roi[10:14, 12:20, 1:3] = True
    cropped = segment_volume(net, vol, batch_size=4, roi_mask=roi, margin=3)
    assert (cropped[:, :, [0, 3, 4]] == 0).all() and (cropped[:6] == 0).all()
    assert (cropped[7:17, 9:23, 1:3] > 0).all()
    assert not segment_volume(net, vol, roi_mask=torch.zeros_like(roi)).any()


def test_segment_volume_3d_uses_a_sliding_window():
    net = ClotSegNet(context_slices=0, spatial_dims=3, features=TINY)
    prob = segment_volume(net, torch.randn(3, 40, 36, 20), batch_size=2, roi_size=(32, 32, 16))
    assert prob.shape == (40, 36, 20) and ((prob > 0) & (prob < 1)).all()
    with pytest.raises(ValueError, match="multiples of 16"):
        segment_volume(net, torch.randn(3, 40, 36, 20), roi_size=(30, 32, 16))


def _two_region_atlas(base):
    atlas = np.zeros((8, 8, 4), dtype=np.int16)  # base 1: 0 outside the brain
    atlas[1:7, 1:4] = 2 + base  # column 2
    atlas[1:7, 4:7] = 6 + base  # column 6
    return atlas


@pytest.mark.parametrize("base", [1, 0])
def test_regions_from_clot_flags_exactly_the_regions_under_the_thresholded_clot(base):
    atlas = _two_region_atlas(base)
    prob = np.zeros(atlas.shape, dtype=np.float32)
    prob[2, 3, 1] = 0.8  # clot voxel in column 2
    prob[2, 4, 1] = 0.3  # sub-threshold voxel in column 6
    prob[0, 0, 0] = 0.99  # outside every region (base 1) / in region value 0 (base 0)
    flags, probs = regions_from_clot(prob, atlas, region_base=base, threshold=0.5)
    expected = {2} if base == 1 else {0, 2}
    assert set(np.flatnonzero(flags)) == expected
    assert probs[2] == pytest.approx(0.8) and probs[6] == pytest.approx(0.3)
    assert probs[0] == pytest.approx(0.99 if base == 0 else 0.0)
    assert np.array_equal(flags, probs >= 0.5)
    # the two outputs agree: union over slices of the per-slice labels of the same mask
    per_slice = slice_region_labels(prob >= 0.5, atlas, region_base=base)
    assert np.array_equal(study_flags(per_slice)[0], flags)


def test_regions_from_clot_accepts_float_atlases_and_tensors():
    atlas = torch.from_numpy(_two_region_atlas(1).astype(np.float32))
    mask = torch.zeros(atlas.shape)
    mask[5, 5, 2] = 1
    flags, _ = regions_from_clot(mask, atlas)
    assert np.flatnonzero(flags).tolist() == [6]
    with pytest.raises(ValueError, match="same grid"):
        regions_from_clot(mask[:4], atlas)


def _affine(flip_x):
    aff = np.diag([0.5, 0.5, 2.0, 1.0])
    aff[:3, 3] = [-10.0, -20.0, -30.0]
    if flip_x:  # voxel i runs right-to-left (RAS x decreases with i), as many scanners store it
        aff[0, 0] = -0.5
        aff[0, 3] = 10.0
    return aff


def test_clot_location_volume_centre_slice_and_region():
    atlas = np.zeros((40, 20, 10), dtype=np.int16)
    atlas[2:38, 2:18, :] = 3
    atlas[2:20, 2:10, :] = 5
    clot = np.zeros(atlas.shape, dtype=bool)
    clot[4:6, 4:6, 6:8] = True  # 8 voxels in region 5
    clot[4:6, 11, 6] = True  # 2 voxels in region 3, a second component
    loc = clot_location(clot, _affine(False), atlas=atlas)
    voxel_ml = 0.5 * 0.5 * 2.0 / 1000
    assert loc["clot_volume_ml"] == pytest.approx(10 * voxel_ml, abs=1e-4) and loc["clot_voxels"] == 10
    assert loc["clot_count"] == 2
    centre = np.argwhere(clot).mean(0)
    assert loc["clot_centre_voxel"] == pytest.approx(centre, abs=0.01)
    assert loc["clot_centre_ras_mm"] == pytest.approx(_affine(False)[:3, :3] @ centre + _affine(False)[:3, 3], abs=0.01)
    assert loc["clot_slice_index"] == round(centre[2]) and loc["clot_slice_range"] == [6, 7]
    assert loc["clot_region"] == 5 and loc["atlas_regions_with_clot"] == [3, 5]
    ami = clot_location(clot, _affine(False), atlas=np.where(atlas > 0, atlas - 1, 0), region_base=0)  # AMI: 0..14
    assert ami["clot_region"] == 4 and ami["atlas_regions_with_clot"] == [2, 4]


@pytest.mark.parametrize("flip_x, expected", [(False, "L"), (True, "R")])
def test_clot_hemisphere_follows_the_ras_affine(flip_x, expected):
    atlas = np.zeros((40, 20, 10), dtype=np.int16)
    atlas[2:38, 2:18, :] = 1  # brain centred in the field of view
    clot = np.zeros(atlas.shape, dtype=bool)
    clot[8:10, 9:11, 5] = True  # low voxel i
    assert clot_location(clot, _affine(flip_x), atlas=atlas)["clot_hemisphere"] == expected
    assert clot_location(clot, _affine(flip_x))["clot_hemisphere"] == expected  # midline from the volume centre
    shifted = np.zeros_like(atlas)
    shifted[:10] = 1  # brain mask over low i only: the clot is now right/left of *its* midline
    opposite = "R" if expected == "L" else "L"
    assert clot_location(clot, _affine(flip_x), brain_mask=shifted)["clot_hemisphere"] == opposite


def test_clot_location_of_an_empty_mask_has_zero_volume_and_no_position():
    loc = clot_location(np.zeros((4, 4, 4)), np.eye(4), atlas=np.ones((4, 4, 4)))
    assert loc["clot_volume_ml"] == 0 and loc["clot_centre_ras_mm"] is None
    assert loc["clot_hemisphere"] is None and loc["clot_region"] is None and loc["atlas_regions_with_clot"] == []
