"""lib.networks.inference: the rewritten network computes the trained function."""

from __future__ import annotations

import torch
from torch import nn

from lib.networks.inference import for_inference
from lib.transforms.ischemic_lesion import build_network


def _trained_looking(route: str) -> nn.Module:
    """A network whose batch norms hold non-trivial running statistics and affine parameters (as after training)."""
    torch.manual_seed(0)
    net = build_network(route)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def test_folded_channels_last_network_gives_the_trained_logits():
    for route, channels in (("mri", 4), ("siamese", 2), ("ctp", 4)):
        net = _trained_looking(route)
        fast = for_inference(net)
        norms = lambda m: sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())  # noqa: E731
        assert norms(fast) < norms(net)  # folded (the Siamese net's norms after a sum of branches stay)
        x = torch.rand(3, channels, 40, 36)
        with torch.no_grad():
            assert torch.allclose(fast(x), net(x), atol=1e-4, rtol=1e-4)


def test_the_original_network_is_left_trainable():
    net = _trained_looking("mri")
    for_inference(net)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > 0
    assert all(p.is_contiguous() for p in net.parameters())


def test_monte_carlo_dropout_still_samples_after_folding():
    fast = for_inference(_trained_looking("mri"))
    fast.net.set_mc_dropout(True)
    x = torch.rand(1, 4, 32, 32)
    with torch.no_grad():
        assert not torch.equal(fast(x), fast(x))


def test_core_penumbra_network_rewritten_gives_the_trained_logits_with_and_without_nihss():
    """CorePenumbraNet normalises per instance (nothing to fold): the rewrite is channels-last only."""
    from lib.transforms.core_penumbra import build_network as core_penumbra_network

    torch.manual_seed(1)
    net = core_penumbra_network()
    net.eval()
    fast = for_inference(net)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)
    x = torch.rand(4, len(net.net.in_maps) + 1, 50, 46)  # an odd in-plane size: padded and cropped back
    x[:2, -1] = 0.0  # no NIHSS
    with torch.no_grad():
        assert torch.allclose(fast(x), net(x), atol=1e-4, rtol=1e-4)
