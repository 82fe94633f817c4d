"""Hemispheric Siamese network (seed 000): shapes, the twin encoder, the mirror helper."""

import numpy as np
import pytest
import torch

from lib.networks.siamese_net import MSFFBlock, SiameseLesionNet, SiameseOutput, mirror_tensor
from strokelabel.midsagittal import MidSagittalPlane, mirror_about_plane

SMALL_2D = dict(spatial_dims=2, widths=(6, 12, 24))
SMALL_3D = dict(spatial_dims=3, widths=(3, 6, 12))


def _symmetric(x, lr_axis=0):
    return 0.5 * (x + torch.flip(x, dims=(2 + lr_axis,)))


@pytest.mark.parametrize(
    "config, shape",
    [(SMALL_2D, (2, 1, 32, 32)), (SMALL_2D, (1, 1, 30, 21)), (SMALL_3D, (1, 1, 16, 16, 8)), (SMALL_3D, (2, 1, 15, 10, 7))],
)
def test_forward_gives_two_class_logits_of_the_input_size_in_2d_and_3d(config, shape):
    net = SiameseLesionNet(**config).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        assert net(x).shape == (shape[0], 2) + shape[2:]
        assert net(x, mirror_tensor(x)).shape == (shape[0], 2) + shape[2:]


def test_msff_block_concatenates_parallel_1_3_5_convolutions():
    block = MSFFBlock(2, 1, 10, kernel_sizes=(1, 3, 5))
    assert [b.kernel_size for b in block.branches] == [(1, 1), (3, 3), (5, 5)]
    assert sum(b.out_channels for b in block.branches) == 10
    assert block(torch.randn(2, 1, 9, 9)).shape == (2, 10, 9, 9)


@pytest.mark.parametrize("shape, lr_axis", [((2, 1, 9, 6), 0), ((1, 2, 7, 5, 4), 0), ((1, 1, 7, 5, 4), 2)])
def test_flip_mirror_is_an_involution(shape, lr_axis):
    x = torch.randn(shape)
    once = mirror_tensor(x, lr_axis=lr_axis)
    assert not torch.equal(once, x)
    assert torch.equal(mirror_tensor(once, lr_axis=lr_axis), x)


def test_mirror_about_a_voxel_aligned_plane_is_an_exact_involution():
    x = torch.randn(1, 1, 20, 16, 5, dtype=torch.float64)
    plane = MidSagittalPlane(offset_vox=1.5, angle_deg=0.0, spacing_mm=(1.0, 1.0, 2.0), shape=(20, 16, 5))
    twice = mirror_tensor(mirror_tensor(x, plane), plane)
    torch.testing.assert_close(twice[:, :, 3:], x[:, :, 3:])  # voxels whose mirror lies in the grid


def test_mirror_about_a_rotated_plane_is_an_involution_up_to_interpolation():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool3d(torch.randn(1, 1, 40, 40, 6, generator=g, dtype=torch.float64), 5, 1, 2)
    plane = MidSagittalPlane(offset_vox=-2.3, angle_deg=9.0, spacing_mm=(1.0, 1.2, 3.0), shape=(40, 40, 6))
    twice = mirror_tensor(mirror_tensor(x, plane), plane)
    inner = (slice(None), slice(None), slice(10, -10), slice(10, -10))
    assert (twice - x)[inner].abs().max() < 0.25 * x[inner].abs().max()


def test_tensor_mirror_agrees_with_the_numpy_mirror_of_strokelabel():
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(30, 26, 4))
    plane = MidSagittalPlane(offset_vox=2.7, angle_deg=-8.0, spacing_mm=(1.5, 1.0, 3.0), shape=vol.shape)
    expected = mirror_about_plane(vol, plane, order=1, mode="nearest")
    got = mirror_tensor(torch.from_numpy(vol)[None, None], plane)[0, 0].numpy()
    np.testing.assert_allclose(got[6:-6, 6:-6], expected[6:-6, 6:-6], atol=1e-9)
    # a 3-D plane mirrors the axial slices of its grid too
    got_slice = mirror_tensor(torch.from_numpy(vol[:, :, 1])[None, None], plane)[0, 0].numpy()
    np.testing.assert_allclose(got_slice[6:-6, 6:-6], expected[6:-6, 6:-6, 1], atol=1e-9)


@pytest.mark.parametrize("config, shape", [(SMALL_2D, (2, 1, 16, 16)), (SMALL_3D, (1, 1, 8, 8, 4))])
def test_symmetric_input_gives_zero_difference_features(config, shape):
    net = SiameseLesionNet(**config).eval()
    x = _symmetric(torch.randn(shape))
    with torch.no_grad():
        out = net(x, return_features=True)
    assert isinstance(out, SiameseOutput)
    assert len(out.differences) == len(config["widths"])
    for d in out.differences:
        assert d.abs().max() < 1e-5


def test_a_one_sided_lesion_gives_nonzero_difference_features():
    net = SiameseLesionNet(**SMALL_2D).eval()
    x = _symmetric(torch.randn(1, 1, 16, 16))
    x[:, :, 2:5, 6:10] += 3.0  # one hemisphere only
    with torch.no_grad():
        out = net(x, return_features=True)
    assert all(d.abs().max() > 1e-3 for d in out.differences)


def test_twins_share_one_encoder_and_gradients_reach_it():
    torch.manual_seed(0)
    net = SiameseLesionNet(**SMALL_2D)
    assert sum(isinstance(m, MSFFBlock) for m in net.modules()) == len(SMALL_2D["widths"])
    seen = []
    net.encoder[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    net(torch.randn(3, 1, 16, 16)).square().mean().backward()
    assert seen == [6]  # image and mirror through the same parameters
    for part in ("encoder", "compare", "decoder", "head"):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(net, part).parameters()), part


def test_wrong_mirror_shape_is_refused():
    net = SiameseLesionNet(**SMALL_2D)
    with pytest.raises(ValueError):
        net(torch.randn(1, 1, 16, 16), torch.randn(1, 1, 16, 12))
