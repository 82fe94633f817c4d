"""A trained network rewritten for inference: the same function, fewer and faster operations.

Measured on ischemic_lesion's MDANet over the 73 slices of an ISLES'22 MRI (124 x 124 working
grid, one CPU thread): 1.19 s as trained, 0.78 s with activations and weights channels-last
(oneDNN convolutions on 8-32 channels are about twice as fast in NHWC), 0.70 s with each
batch norm folded into the convolution before it; logits equal within 3e-5.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_FOLDABLE = ((nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))


def for_inference(network: nn.Module) -> nn.Module:
    """A copy of ``network`` in eval mode with every batch norm that directly follows a convolution
    inside an ``nn.Sequential`` folded into it (running statistics and affine into the weights and
    bias), parameters channels-last. Dropout layers stay, so Monte-Carlo dropout still samples.
    Not for training: the folded layers no longer update running statistics."""
    folded = copy.deepcopy(network).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if any(isinstance(conv, c) and type(norm) is n for c, n in _FOLDABLE) and norm.track_running_stats:
                module[i], module[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    spatial_dims = 3 if any(isinstance(m, nn.Conv3d) for m in folded.modules()) else 2
    return folded.to(memory_format=torch.channels_last if spatial_dims == 2 else torch.channels_last_3d)
