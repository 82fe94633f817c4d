"""Hemispheric Siamese lesion network (seed 000, Rana: Enhanced Siamese Network with
multi-scale feature fusion), for single-modality studies (DWI alone, NCCT).

The seed compares two images with twin weight-shared encoders built of multi-scale
feature fusion blocks (parallel 1×1, 3×3, 5×5 convolutions, concatenated; Sec. 4.3-4.5)
and scores their similarity. Here the pair is a head and its mirror image about the
mid-sagittal plane, so the comparison is between each point and its contralateral
homologue, which is how a reader finds an ischemic lesion on a single modality: the
healthy hemisphere is the reference. The seed outputs a similarity score; for
segmentation the per-scale feature differences ``f(x) - f(mirror(x))``, with the
features of ``x``, drive a U-Net-style decoder that outputs lesion logits.

The difference is signed, so the decoder can tell a lesion on this side from its
mirror image on the other side. A perfectly symmetric head gives zero differences.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from strokelabel.midsagittal import mirror_tensor  # the one plane mirror of tensors (also used on numpy volumes)

__all__ = ["SiameseLesionNet", "SiameseOutput", "MSFFBlock", "mirror_tensor"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}


def _norm(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    if norm == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if norm == "instance":
        return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    raise ValueError(f"norm must be 'batch' or 'instance', got {norm!r}")


def _conv_norm_act(spatial_dims: int, cin: int, cout: int, kernel_size: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        _CONV[spatial_dims](cin, cout, kernel_size, padding=kernel_size // 2, bias=False),
        _norm(norm, spatial_dims, cout),
        nn.ReLU(inplace=True),
    )


class MSFFBlock(nn.Module):
    """Multi-scale feature fusion block (seed 000, Sec. 4.3-4.4).

    Parallel convolutions with ``kernel_sizes`` (seed: 1×1 for fine detail, 3×3 and 5×5
    for context), concatenated, normalised and rectified; a 3×3 convolution then mixes
    the scales.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: channel counts; the branches share ``out_channels``
            (remainder to the first).
        kernel_sizes: odd kernel sizes of the parallel branches.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_sizes: Sequence[int] = (1, 3, 5), norm: str = "batch"):
        super().__init__()
        ks = tuple(int(k) for k in kernel_sizes)
        if any(k % 2 == 0 for k in ks):
            raise ValueError(f"kernel sizes must be odd, got {kernel_sizes!r}")
        split = [out_channels // len(ks)] * len(ks)
        split[0] += out_channels - sum(split)
        conv = _CONV[spatial_dims]
        self.branches = nn.ModuleList(conv(in_channels, c, k, padding=k // 2, bias=False) for c, k in zip(split, ks))
        self.fuse = nn.Sequential(_norm(norm, spatial_dims, out_channels), nn.ReLU(inplace=True))
        self.mix = _conv_norm_act(spatial_dims, out_channels, out_channels, 3, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1)))


class SiameseOutput(NamedTuple):
    """``forward(..., return_features=True)``: logits, per-scale features of x and the differences."""

    logits: torch.Tensor
    features: list
    differences: list


class SiameseLesionNet(nn.Module):
    """Twin weight-shared multi-scale encoders on a head and its mirror; a decoder on their difference.

    Args:
        spatial_dims: 2 (axial slices) or 3.
        in_channels: image channels (1: DWI or NCCT).
        out_channels: classes of the logits (2: background, lesion).
        widths: features per scale; a 2× max-pooling between scales.
        kernel_sizes: kernels of the parallel branches of each MSFF block (seed: 1, 3, 5).
        lr_axis: spatial axis of left-right, for the mirror made when none is given.
        norm: ``"batch"`` or ``"instance"``.
        dropout: dropout in the decoder for Monte-Carlo uncertainty (0 disables).

    Inputs of any spatial size are padded (replicate) to a multiple of
    ``2 ** (len(widths) - 1)`` and the logits cropped back.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        widths: Sequence[int] = (16, 32, 64, 128),
        kernel_sizes: Sequence[int] = (1, 3, 5),
        lr_axis: int = 0,
        norm: str = "batch",
        dropout: float = 0.0,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        widths = tuple(int(w) for w in widths)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.lr_axis = lr_axis
        self.divisor = 2 ** (len(widths) - 1)
        conv = _CONV[spatial_dims]
        self.pool = _POOL[spatial_dims](2)
        # one encoder: both twins are this module (weights shared by construction)
        self.encoder = nn.ModuleList(
            MSFFBlock(spatial_dims, in_channels if i == 0 else widths[i - 1], w, kernel_sizes, norm) for i, w in enumerate(widths)
        )
        # per scale: features of x and their difference to the mirror, fused by a 1×1 convolution
        self.compare = nn.ModuleList(
            nn.Sequential(conv(2 * w, w, 1, bias=False), _norm(norm, spatial_dims, w), nn.ReLU(inplace=True)) for w in widths
        )
        mode = "bilinear" if spatial_dims == 2 else "trilinear"
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in range(len(widths) - 1, 0, -1):
            self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode=mode, align_corners=False), conv(widths[i], widths[i - 1], 1)))
            layers = [_conv_norm_act(spatial_dims, 2 * widths[i - 1], widths[i - 1], 3, norm)]
            if dropout > 0:
                layers.append(_DROPOUT[spatial_dims](dropout))
            layers.append(_conv_norm_act(spatial_dims, widths[i - 1], widths[i - 1], 3, norm))
            self.decoder.append(nn.Sequential(*layers))
        self.head = conv(widths[0], out_channels, 1)

    def set_mc_dropout(self, enabled: bool = True) -> "SiameseLesionNet":
        """Keep the dropout layers sampling in eval mode (Monte-Carlo dropout) or not."""
        for module in self.modules():
            if isinstance(module, (nn.Dropout, nn.Dropout2d, nn.Dropout3d)):
                module.train(enabled or self.training)
        return self

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every scale from the (shared) twin encoder."""
        features = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            features.append(x)
        return features

    def forward(self, x: torch.Tensor, x_mirrored: torch.Tensor | None = None, return_features: bool = False):
        """Segment the lesion of ``x`` by comparing it with its mirror image.

        Args:
            x: (B, in_channels, *spatial).
            x_mirrored: ``x`` mirrored about its mid-sagittal plane (see
                :func:`mirror_tensor` and :mod:`strokelabel.midsagittal`); default: flipped
                about the middle of the array along ``lr_axis``.
            return_features: also return the per-scale features and differences.

        Returns:
            logits (B, out_channels, *spatial), or :class:`SiameseOutput`.
        """
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, {'*' * self.spatial_dims}) input, got {tuple(x.shape)}")
        if x_mirrored is None:
            x_mirrored = mirror_tensor(x, lr_axis=self.lr_axis)
        if x_mirrored.shape != x.shape:
            raise ValueError(f"mirror shape {tuple(x_mirrored.shape)} differs from the image's {tuple(x.shape)}")
        spatial = tuple(x.shape[2:])
        b = x.shape[0]
        both = _pad_to_multiple(torch.cat([x, x_mirrored], dim=0), self.divisor)
        twins = self.encode(both)
        features = [f[:b] for f in twins]
        differences = [f[:b] - f[b:] for f in twins]
        skips = [cmp(torch.cat([f, d], dim=1)) for cmp, f, d in zip(self.compare, features, differences)]
        h = skips[-1]
        for up, block, skip in zip(self.up, self.decoder, reversed(skips[:-1])):
            h = block(torch.cat([skip, up(h)], dim=1))
        logits = _crop(self.head(h), spatial)
        if return_features:
            return SiameseOutput(logits, features, differences)
        return logits


def _pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    pads = []
    for size in reversed(x.shape[2:]):
        pads += [0, (-size) % divisor]
    if not any(pads):
        return x
    return F.pad(x, pads, mode="replicate")


def _crop(x: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(spatial):
        return x
    return x[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]
