"""MDANet (seed 003): shapes, the dual encoder with a shared MSC stage, DASC and GCFB."""

import pytest
import torch

from lib.networks.mdanet import DASC, GCFB, MDANet, MDANetOutput, GCFBChannel, GCFBSpace, GraphConv, MSCBlock

SMALL_2D = dict(spatial_dims=2, widths=(8, 16, 32), space_grid=(4, 4))
SMALL_3D = dict(spatial_dims=3, widths=(4, 8, 16), space_grid=(2, 2, 2))


def _params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "config, shape",
    [
        (dict(SMALL_2D, group_channels=2), (2, 2, 32, 32)),  # CTP: (CBF, CBV) vs (MTT, Tmax)
        (dict(SMALL_2D, group_channels=1), (1, 1, 30, 27)),  # odd sizes are padded and cropped
        (dict(SMALL_3D, group_channels=1), (1, 1, 16, 16, 12)),  # MRI: DWI vs ADC
        (dict(SMALL_3D, group_channels=2), (2, 2, 13, 18, 9)),
    ],
)
def test_forward_gives_two_class_logits_of_the_input_size_in_2d_and_3d(config, shape):
    net = MDANet(**config).eval()
    with torch.no_grad():
        logits = net(torch.randn(shape), torch.randn(shape))
    assert logits.shape == (shape[0], 2) + shape[2:]


@pytest.mark.parametrize("config, shape", [(SMALL_2D, (2, 1, 24, 24)), (SMALL_3D, (1, 1, 12, 12, 9))])
def test_return_features_gives_the_early_features_of_both_groups(config, shape):
    net = MDANet(**config)
    out = net(torch.randn(shape), torch.randn(shape), return_features=True)
    assert isinstance(out, MDANetOutput)
    assert out.logits.shape == (shape[0], 2) + shape[2:]
    assert out.features_a.shape == out.features_b.shape == (shape[0], config["widths"][0]) + shape[2:]


def test_gradients_reach_both_group_encoders_the_shared_encoder_dasc_and_gcfb():
    torch.manual_seed(0)
    net = MDANet(**SMALL_2D, group_channels=2)
    out = net(torch.randn(2, 2, 16, 16), torch.randn(2, 2, 16, 16), return_features=True)
    (out.logits.square().mean() + out.features_a.mean() + out.features_b.mean()).backward()
    for part in ("stem_a", "stem_b", "shared_encoder", "gcfb", "dasc", "decoder", "head"):
        grads = [p.grad for p in getattr(net, part).parameters()]
        assert grads and all(g is not None for g in grads), part
        assert sum(g.abs().sum() for g in grads) > 0, part


def test_the_two_groups_go_through_one_shared_encoder():
    net = MDANet(**SMALL_2D)
    # one MSC block per shared scale, not one per group
    assert sum(isinstance(m, MSCBlock) for m in net.modules()) == len(SMALL_2D["widths"]) - 1
    seen = []
    net.shared_encoder[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    net(torch.randn(3, 1, 16, 16), torch.randn(3, 1, 16, 16))
    assert seen == [6]  # both groups' batches, through the same parameters
    # the independent stems are distinct parameter sets
    assert not set(map(id, net.stem_a.parameters())) & set(map(id, net.stem_b.parameters()))


def test_shared_encoder_sees_the_groups_alike():
    """Same input in both groups: equal stems give equal features at every scale, so every difference is zero."""
    net = MDANet(**SMALL_2D).eval()
    net.stem_b.load_state_dict(net.stem_a.state_dict())
    x = torch.randn(1, 1, 16, 16)
    out = net(x, x, return_features=True)
    torch.testing.assert_close(out.features_a, out.features_b)


def test_msc_block_taps_chained_convolutions_at_each_branch_depth():
    block = MSCBlock(2, 4, 12, kernel_size=3, branch_depths=(1, 2, 3))
    assert len(block.chain) == 3 and block.taps == (1, 2, 3)
    assert block(torch.randn(2, 4, 10, 10)).shape == (2, 12, 10, 10)
    block3d = MSCBlock(3, 4, 8, kernel_size=5, branch_depths=(1, 3))
    assert len(block3d.chain) == 3 and block3d.taps == (1, 3)
    assert block3d(torch.randn(1, 4, 6, 6, 6)).shape == (1, 8, 6, 6, 6)


@pytest.mark.parametrize("spatial", [(8, 8), (6, 6, 4)])
def test_dasc_refines_the_group_difference_residually(spatial):
    dims = len(spatial)
    dasc = DASC(dims, skip_channels=6, decoder_channels=6)
    f1, f2, f_de = torch.randn(2, 6, *spatial), torch.randn(2, 6, *spatial), torch.randn(2, 6, *spatial)
    out = dasc(f1, f2, f_de)
    assert out.shape == f1.shape
    w = dasc.attention(f1 - f2, f_de)
    assert w.shape == (2, 1) + spatial and (w >= 0).all() and (w <= 1).all()  # eq. 2
    torch.testing.assert_close(out, (f1 - f2) * (1 + w))  # eq. 1 and 3
    assert torch.count_nonzero(dasc(f1, f1, f_de)) == 0  # no difference, nothing passed on


def test_graph_convolution_keeps_the_graph_shape():
    gcn = GraphConv(num_nodes=10, embed_dim=7)
    g = torch.randn(3, 10, 7)
    out = gcn(g)
    assert out.shape == g.shape and (out >= 0).all()  # ReLU of eq. 7


@pytest.mark.parametrize("spatial, grid", [((7, 7), (7, 7)), ((8, 6), (4, 3)), ((4, 4, 4), (2, 2, 2)), ((3, 5, 2), (2, 2, 2))])
def test_gcfb_sub_blocks_keep_shapes_and_gcfb_returns_one_difference_map(spatial, grid):
    dims = len(spatial)
    f_a, f_b = torch.randn(2, 16, *spatial), torch.randn(2, 16, *spatial)
    channel = GCFBChannel(dims, 16, num_nodes=4, embed_dim=8)
    a, b = channel(f_a, f_b)
    assert a.shape == b.shape == f_a.shape
    space = GCFBSpace(dims, 16, grid)
    assert space.num_nodes == torch.tensor(grid).prod().item()
    a, b = space(f_a, f_b)
    assert a.shape == b.shape == f_a.shape
    assert GCFB(dims, 16, grid).eval()(f_a, f_b).shape == f_a.shape


def test_seed_config_has_the_seeds_25_3_million_parameters_within_10_percent():
    for group_channels in (1, 2):
        n = _params(MDANet.seed_config(group_channels=group_channels))
        assert abs(n - 25.3e6) / 25.3e6 < 0.10, n


def test_mc_dropout_samples_in_eval_mode_only_when_enabled():
    torch.manual_seed(0)
    net = MDANet(**SMALL_2D, dropout=0.3).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x, x), net(x, x))
        net.set_mc_dropout(True)
        assert not torch.allclose(net(x, x), net(x, x))
        net.set_mc_dropout(False)
        torch.testing.assert_close(net(x, x), net(x, x))


def test_mismatched_groups_are_refused():
    net = MDANet(**SMALL_2D, group_channels=2)
    with pytest.raises(ValueError):
        net(torch.randn(1, 2, 16, 16), torch.randn(1, 2, 16, 8))
    with pytest.raises(ValueError):
        net(torch.randn(1, 1, 16, 16), torch.randn(1, 1, 16, 16))
