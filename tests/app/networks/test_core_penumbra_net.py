"""CorePenumbraNet: the multi-input slow-fusion network of seed 004."""

import pytest
import torch
from torch import nn

from lib.networks.core_penumbra_net import DEFAULT_MAPS, CorePenumbraNet, count_parameters

SMALL = (4, 8, 16)  # depth 2: spatial sizes must be multiples of 4
MAPS_WITH_MIP = DEFAULT_MAPS + ("mip",)


def _net(**kwargs) -> CorePenumbraNet:
    torch.manual_seed(0)
    kwargs.setdefault("features", SMALL)
    return CorePenumbraNet(**kwargs)


def _input(net: CorePenumbraNet, batch: int = 2, size: int = 16) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, net.in_channels, *([size] * net.spatial_dims))


def _randomise_nihss_head(net: CorePenumbraNet) -> None:
    """The NIHSS modulation starts at identity; give it weights so the score matters."""
    torch.manual_seed(2)
    nn.init.normal_(net.nihss_film[-1].weight, std=0.5)
    nn.init.normal_(net.nihss_film[-1].bias, std=0.5)


@pytest.mark.parametrize(
    "kwargs, channels",
    [
        ({}, 4),
        ({"context_slices": 1}, 12),
        ({"context_slices": 2}, 20),
        ({"in_maps": MAPS_WITH_MIP}, 5),
        ({"in_maps": MAPS_WITH_MIP, "context_slices": 1}, 15),
        ({"use_nihss": False}, 4),
        ({"in_maps": ("cbf", "cbv", "ttp", "tmax"), "norm": None}, 4),
    ],
)
@pytest.mark.parametrize("nihss", [None, torch.tensor([7.0, 22.0])])
def test_output_is_three_class_logits_of_the_input_slice_size(kwargs, channels, nihss):
    net = _net(**kwargs).eval()
    assert net.in_channels == channels
    if not net.use_nihss:
        nihss = None  # passing a score is an error there (test_bad_inputs_raise_clear_errors)
    with torch.no_grad():
        out = net(_input(net, batch=2, size=16), nihss=nihss)
    assert out.shape == (2, 3, 16, 16)
    assert torch.isfinite(out).all()


def test_non_square_slices_and_default_widths_work():
    net = CorePenumbraNet().eval()
    assert net.depth == 3
    with torch.no_grad():
        out = net(torch.randn(1, 4, 32, 48))
    assert out.shape == (1, 3, 32, 48)


def test_three_dimensional_patches_work():
    net = _net(spatial_dims=3, features=(2, 4)).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 4, 8, 8, 4), nihss=[3.0])
    assert out.shape == (1, 3, 8, 8, 4)


def test_nihss_accepts_scalar_column_and_missing_values():
    net = _net().eval()
    _randomise_nihss_head(net)
    x = _input(net, batch=2)
    with torch.no_grad():
        absent = net(x)
        column = net(x, nihss=torch.tensor([[7.0], [22.0]]))
        flat = net(x, nihss=[7.0, 22.0])
        one_missing = net(x, nihss=torch.tensor([float("nan"), 22.0]))
        broadcast = net(x, nihss=7.0)
    torch.testing.assert_close(column, flat)
    assert not torch.allclose(absent, flat)
    # a NaN score is the same as no score for that study, the other study keeps its score
    torch.testing.assert_close(one_missing[0], absent[0])
    torch.testing.assert_close(one_missing[1], flat[1])
    torch.testing.assert_close(broadcast[0], flat[0])


def test_nihss_changes_the_segmentation_once_trained():
    net = _net().eval()
    x = _input(net, batch=1)
    with torch.no_grad():
        # untrained: the modulation starts at identity, so the score has no effect yet
        torch.testing.assert_close(net(x, nihss=[4.0]), net(x, nihss=[30.0]))
        _randomise_nihss_head(net)
        assert not torch.allclose(net(x, nihss=[4.0]), net(x, nihss=[30.0]))


def test_bad_inputs_raise_clear_errors():
    net = _net()
    with pytest.raises(ValueError, match="channels"):
        net(torch.randn(1, 5, 16, 16))
    with pytest.raises(ValueError, match="multiple of 2\\*\\*depth = 4"):
        net(torch.randn(1, 4, 18, 16))
    with pytest.raises(ValueError, match="one score per batch item"):
        net(torch.randn(2, 4, 16, 16), nihss=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="use_nihss=False"):
        _net(use_nihss=False)(torch.randn(1, 4, 16, 16), nihss=[5.0])
    with pytest.raises(ValueError, match="distinct"):
        CorePenumbraNet(in_maps=("cbf", "cbf"))


def test_there_is_one_encoder_per_input_map():
    net = _net(in_maps=MAPS_WITH_MIP)
    assert tuple(net.encoders.keys()) == MAPS_WITH_MIP
    encoders = list(net.encoders.values())
    assert len({id(e) for e in encoders}) == 5
    # no weight sharing between the streams
    first_weights = {id(p) for p in encoders[0].parameters()}
    assert all(first_weights.isdisjoint(id(p) for p in e.parameters()) for e in encoders[1:])


@pytest.mark.parametrize("context_slices", [0, 1])
def test_each_map_channel_block_feeds_only_its_own_encoder(context_slices):
    net = _net(context_slices=context_slices).eval()
    s = net.slices_per_map
    x = _input(net)
    with torch.no_grad():
        seen = {}
        hooks = [
            enc.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].clone()))
            for name, enc in net.encoders.items()
        ]
        net(x)
        for hook in hooks:
            hook.remove()
    for m, name in enumerate(net.in_maps):
        torch.testing.assert_close(seen[name], x[:, m * s : (m + 1) * s])
        assert seen[name].shape[1] == 2 * context_slices + 1


@pytest.mark.parametrize("perturbed", range(len(DEFAULT_MAPS)))
def test_slow_fusion_every_map_reaches_every_decoder_level_and_the_output(perturbed):
    net = _net().eval()
    n_maps = len(net.in_maps)
    x = _input(net)
    x2 = x.clone()
    x2[:, perturbed] += 1.0  # change one map only

    def decoder_inputs(inp):
        seen = []
        hooks = [blk.register_forward_hook(lambda mod, i, o: seen.append(i[0].clone())) for blk in net.dec]
        with torch.no_grad():
            out = net(inp)
        for hook in hooks:
            hook.remove()
        return out, seen

    out1, dec1 = decoder_inputs(x)
    out2, dec2 = decoder_inputs(x2)
    assert not torch.allclose(out1, out2)
    levels = list(reversed(range(net.depth)))
    assert len(dec1) == len(levels)
    for level, a, b in zip(levels, dec1, dec2):
        width = net.features[level]
        # decoder input at each level = upsampled path + the skip features of ALL maps
        assert a.shape[1] == width * (1 + n_maps)
        for m in range(n_maps):
            skip = slice(width * (1 + m), width * (2 + m))
            changed = not torch.allclose(a[:, skip], b[:, skip])
            assert changed == (m == perturbed), f"level {level}, map {m}"


def test_gradients_reach_every_encoder_and_the_nihss_modulation():
    net = _net(in_maps=MAPS_WITH_MIP, context_slices=1).train()
    out = net(_input(net), nihss=[5.0, 12.0])
    out.square().mean().backward()
    for name, encoder in net.encoders.items():
        for pname, p in encoder.named_parameters():
            assert p.grad is not None, f"{name}.{pname}"
        assert sum(p.grad.abs().sum() for p in encoder.parameters()) > 0, name
    assert net.nihss_film[-1].weight.grad.abs().sum() > 0


def test_set_trainable_stages_follow_gradual_fine_tuning():
    net = _net(features=(4, 8, 16, 32))  # 4 encoder levels, depth 3
    decoder_side = [p for n, p in net.named_parameters() if not n.startswith("encoders.")]

    def level_flags():
        return {
            (name, level): {p.requires_grad for p in block.parameters()}
            for name, enc in net.encoders.items()
            for level, block in enumerate(enc.levels)
        }

    assert net.stage == "all"
    assert all(p.requires_grad for p in net.parameters())

    net.set_trainable("decoder")
    assert net.stage == "decoder"
    assert all(flags == {False} for flags in level_flags().values())
    assert all(p.requires_grad for p in decoder_side)

    net.set_trainable("deep")
    assert net.encoder_levels("deep") == [2, 3]
    for (_, level), flags in level_flags().items():
        assert flags == {level >= 2}
    assert all(p.requires_grad for p in decoder_side)

    net.set_trainable("all")
    assert all(p.requires_grad for p in net.parameters())
    assert count_parameters(net, trainable_only=True) == count_parameters(net)

    with pytest.raises(ValueError, match="unknown fine-tuning stage"):
        net.set_trainable("encoders")


def test_frozen_encoders_do_not_change_during_a_training_step():
    net = _net().train()
    net.set_trainable("decoder")
    frozen = {n: p.detach().clone() for n, p in net.named_parameters() if n.startswith("encoders.")}
    head = net.head.conv.weight.detach().clone()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    net(_input(net)).square().mean().backward()
    optimizer.step()
    for n, p in net.named_parameters():
        if n in frozen:
            assert p.grad is None, n
            torch.testing.assert_close(p.detach(), frozen[n])
    assert not torch.allclose(net.head.conv.weight, head)


def test_frozen_batch_norm_levels_keep_their_running_statistics():
    net = _net(norm="batch")
    net.set_trainable("deep")
    net.train()
    frozen_bn = [m for m in net.encoders["cbf"].levels[0].modules() if isinstance(m, nn.BatchNorm2d)]
    trained_bn = [m for m in net.encoders["cbf"].levels[-1].modules() if isinstance(m, nn.BatchNorm2d)]
    assert frozen_bn and trained_bn
    assert not any(m.training for m in frozen_bn)
    assert all(m.training for m in trained_bn)


def test_dropout_samples_in_train_mode_and_for_mc_dropout_only():
    net = _net(dropout=0.5)
    x = _input(net)
    with torch.no_grad():
        net.train()
        assert not torch.allclose(net(x), net(x))
        net.eval()
        torch.testing.assert_close(net(x), net(x))
        net.set_mc_dropout(True)
        assert not torch.allclose(net(x), net(x))
        net.eval()
        torch.testing.assert_close(net(x), net(x))
    no_dropout = _net(dropout=0.0).train()
    with torch.no_grad():
        torch.testing.assert_close(no_dropout(x), no_dropout(x))


def test_default_sizes_are_practical_on_cpu():
    counts = {
        "default (4 maps)": count_parameters(CorePenumbraNet()),
        "with MIP (5 maps)": count_parameters(CorePenumbraNet(in_maps=MAPS_WITH_MIP)),
        "2.5D, 1 context slice": count_parameters(CorePenumbraNet(context_slices=1)),
    }
    print("CorePenumbraNet parameters:", counts)
    assert counts["default (4 maps)"] < 2_000_000
    assert counts["with MIP (5 maps)"] < 2_000_000
    # seed: one ImageNet VGG-16 convolutional part alone has 14.7 M parameters per map
    assert counts["default (4 maps)"] < 14_714_688 / 5


def test_the_head_reads_signed_features_so_no_class_starts_dead():
    # With ReLU features (>= 0), a class whose head weights all start negative could never score
    # high where the features are strong; the head must see the features before that ReLU.
    torch.manual_seed(0)
    net = CorePenumbraNet(features=(8, 16))
    seen = {}
    net.dec[-1].register_forward_hook(lambda module, args, out: seen.setdefault("features", out))
    net(torch.randn(2, 4, 32, 32))
    assert (seen["features"] < 0).any() and (seen["features"] > 0).any()
