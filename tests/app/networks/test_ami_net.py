"""AMI-Net region classifier (seed 002): shapes, gradients, slice windows, labels and study flags."""

import numpy as np
import pytest
import torch

from lib.networks.ami_net import (
    AMINet,
    NUM_REGIONS,
    count_parameters,
    predict_slices,
    region_index,
    region_values,
    regions_report,
    slice_region_labels,
    slice_windows,
    study_flags,
)

SMALL = dict(width=0.25, feat_channels=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    "names, k",
    [(("cta1",), 0), (("cta1",), 2), (("spiral",), 1), (("cta1", "cta2", "cta3", "spiral"), 3)],
)
def test_in_channels_follow_input_names_and_context_slices(names, k):
    net = AMINet(names, context_slices=k, **SMALL).eval()
    assert net.in_channels == len(names) * (2 * k + 1)
    assert len(net.channel_names) == net.in_channels
    assert net.channel_names[k] == f"{names[0]}[z]"
    out = net(torch.randn(2, net.in_channels, 64, 48))
    assert out.shape == (2, NUM_REGIONS)


def test_forward_rejects_a_wrong_channel_count():
    net = AMINet(("cta1", "cta2"), context_slices=1, **SMALL)
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
        net(torch.randn(1, 3, 32, 32))


def test_unknown_or_duplicate_input_names_are_rejected():
    with pytest.raises(ValueError, match="unknown inputs"):
        AMINet(("cta1", "ctp"))
    with pytest.raises(ValueError, match="duplicates"):
        AMINet(("cta1", "cta1"))


def test_width_multiplier_scales_the_backbone():
    assert count_parameters(AMINet(width=0.5)) < count_parameters(AMINet(width=1.0)) < count_parameters(AMINet(width=1.5))


@pytest.mark.parametrize("pool", ["avg", "avgmax"])
def test_gradients_reach_every_parameter(pool):
    torch.manual_seed(0)
    net = AMINet(("cta1", "spiral"), context_slices=1, pool=pool, **SMALL).train()
    loss = net(torch.randn(3, net.in_channels, 32, 32)).sum()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert net.features[0][0].weight.grad.abs().sum() > 0


def test_mc_predict_samples_dropout_only_and_restores_training_mode():
    torch.manual_seed(0)
    net = AMINet(dropout=0.5, **SMALL).train()
    x = torch.randn(2, net.in_channels, 32, 32)
    mean, std = net.mc_predict(x, samples=8)
    assert mean.shape == std.shape == (2, NUM_REGIONS)
    assert ((mean > 0) & (mean < 1)).all() and (std > 0).any()
    assert net.training
    net_no_dropout = AMINet(dropout=0.0, **SMALL)
    _, std0 = net_no_dropout.mc_predict(x, samples=4)
    assert torch.allclose(std0, torch.zeros_like(std0))


def test_slice_windows_order_channels_by_input_then_offset_and_repeat_end_slices():
    depth = 5
    z = torch.arange(depth, dtype=torch.float32)
    vol = torch.stack([z + 100 * c for c in range(2)])[:, None, None, :].expand(2, 3, 4, depth)  # value = z + 100 c
    win = slice_windows(vol, context_slices=1)
    assert win.shape == (depth, 2 * 3, 3, 4)
    assert win[0, :, 0, 0].tolist() == [0, 0, 1, 100, 100, 101]  # z-1 clamped to 0
    assert win[2, :, 0, 0].tolist() == [1, 2, 3, 101, 102, 103]
    assert win[4, :, 0, 0].tolist() == [3, 4, 4, 103, 104, 104]  # z+1 clamped to the last slice
    assert torch.equal(slice_windows(vol, 1, 1, 3), win[1:3])


def test_predict_slices_gives_one_probability_row_per_slice_in_any_batch_size():
    torch.manual_seed(0)
    net = AMINet(("cta1", "cta2"), context_slices=1, **SMALL)
    vol = torch.randn(2, 32, 32, 7)
    probs, std = predict_slices(net, vol, batch_size=3)
    assert probs.shape == (7, NUM_REGIONS) and std is None
    assert torch.allclose(probs, predict_slices(net, vol, batch_size=7)[0], atol=1e-6)
    mean, std = predict_slices(net, vol, batch_size=4, mc_samples=3)
    assert mean.shape == std.shape == (7, NUM_REGIONS)
    with pytest.raises(ValueError, match="inputs"):
        predict_slices(net, torch.randn(1, 32, 32, 7))


def test_study_flags_are_the_union_over_slices_with_the_max_probability():
    p = np.full((6, NUM_REGIONS), 0.1, dtype=np.float32)
    p[3, 2] = 0.9  # region column 2 seen on one slice only
    p[1, 5] = 0.4
    p[4, 5] = 0.45  # never above threshold
    flags, probs = study_flags(torch.from_numpy(p), threshold=0.5)
    assert flags.dtype == bool and flags.shape == probs.shape == (NUM_REGIONS,)
    assert np.flatnonzero(flags).tolist() == [2]
    assert probs[2] == pytest.approx(0.9) and probs[5] == pytest.approx(0.45) and probs[0] == pytest.approx(0.1)
    assert np.array_equal(study_flags(p, threshold=0.4)[0].nonzero()[0], [2, 5])
    no_slices = study_flags(np.zeros((0, NUM_REGIONS)))
    assert not no_slices[0].any() and not no_slices[1].any()


def test_region_numbering_app_1_to_15_and_ami_0_to_14():
    atlas = np.array([0, 1, 15, 16, 14])
    assert region_index(atlas, region_base=1).tolist() == [-1, 0, 14, -1, 13]
    assert region_index(atlas, region_base=0).tolist() == [0, 1, -1, -1, 14]
    assert region_values(1).tolist() == list(range(1, 16)) and region_values(0).tolist() == list(range(15))
    with pytest.raises(ValueError, match="region_base"):
        region_index(atlas, region_base=2)


def test_slice_region_labels_mark_regions_under_each_slice_clot_any_nonzero_value():
    atlas = np.zeros((6, 6, 4), dtype=np.int16)
    atlas[:3] = 4
    atlas[3:] = 9
    clot = np.zeros_like(atlas)
    clot[2:4, 1, 1] = 2  # seed clot files hold 1 and 2: both are clot; straddles regions 4 and 9
    clot[0, 0, 3] = 1
    labels = slice_region_labels(clot, atlas, region_base=1)
    assert labels.shape == (4, NUM_REGIONS)
    assert labels[1].nonzero().flatten().tolist() == [3, 8]  # atlas values 4, 9 -> columns 3, 8
    assert labels[3].nonzero().flatten().tolist() == [3]
    assert labels[0].sum() == 0 and labels[2].sum() == 0
    ami = slice_region_labels(clot, atlas, region_base=0)
    assert ami[1].nonzero().flatten().tolist() == [4, 9]


def test_regions_report_names_flagged_regions_by_atlas_value():
    flags = np.zeros(NUM_REGIONS, dtype=bool)
    flags[[0, 14]] = True
    probs = np.linspace(0, 1, NUM_REGIONS)
    assert regions_report(flags, probs, region_base=1)["clot_regions"] == [1, 15]
    ami = regions_report(flags, probs, region_base=0)
    assert ami["clot_regions"] == [0, 14] and ami["region_probabilities"]["14"] == 1.0
