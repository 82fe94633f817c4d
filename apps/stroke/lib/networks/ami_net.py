"""AMI-Net: per-slice multilabel classifier of the vascular atlas regions that hold clot (seed 002).

Seed 002 (AMI-Net report) answers "which of the 15 patient-specific vascular atlas
regions hold the clot" from multiphase CTA (mCTA) or from a SPIRAL perfusion-like map:

- the volume (512 x 512 x ~257) is cut into axial slices; one 2D CNN classifies each
  slice into 15 independent binary labels (multilabel, sigmoid + BCE);
- a slice's label is the set of atlas regions under its clot voxels (clot values 1 and 2
  both count as clot);
- the study result is the union of the slice predictions (seed, Discussion: "the union
  of affected brain regions for each frame");
- positives are rare (few slices hold clot), so the positive term of the BCE is weighted
  (``pos_weight`` about 15, seed Tables 3-5; see ``lib.losses.clot_losses``);
- the best model was an ImageNet-pretrained MobileNetV2 fine-tuned on the first aligned
  CTA phase (F1 0.87 vs 0.34 for SPIRAL thresholding); inference on 257 slices took
  ~8 s on a CPU, within the client's < 5 min, < 8 GB limits.

What differs here, and why:

- **No pretrained weights.** ImageNet weights are not available to this app, and it
  trains from scratch on a site's own labels, so the backbone is a *compact*
  MobileNetV2 (inverted residual blocks with linear bottlenecks, Sandler et al. 2018):
  fewer blocks than the 17 of MobileNetV2 (``DEFAULT_BLOCKS``), a width multiplier
  ``width``, and a 512-channel feature layer (the seed's "feat dim 512") instead of 1280.
- **Sliding window over slices** (seed, future work): ``context_slices = k`` feeds the
  ``2k + 1`` neighbouring slices of every input as channels, so a slice is classified
  with its 3D neighbourhood. ``k = 0`` is the seed's frame-by-frame model.
- **Inputs.** ``input_names`` lists the volumes stacked as channels, in order: the seed
  uses ``("cta1",)`` (first aligned phase) or ``("spiral",)``; its future work proposes
  adding the other phases and SPIRAL, e.g. ``("cta1", "cta2", "cta3", "spiral")``.
  ``in_channels = len(input_names) * (2 * context_slices + 1)``.
- **Pooling.** ``pool="avgmax"`` (default) concatenates global average and global max
  pooling. A clot covers a few voxels of a 512 x 512 slice; average pooling alone dilutes
  its response over the whole feature map, max pooling keeps it. ``pool="avg"`` is
  MobileNetV2's head.
- **Full resolution.** The network is fully convolutional up to the global pooling, so
  it takes any slice size; the seed resized to 224 x 224 for the pretrained model, here
  the native 512 x 512 keeps the few-voxel clot visible (resizing is a transform choice).
- **MC dropout.** Dropout (``dropout``, default 0.25; the seed's best CNN runs used 0.25-0.27)
  sits before the last linear layer; ``mc_predict`` samples it with the backbone in eval
  mode, so the backbone runs once and the samples are nearly free.

Region numbering: the network's output column ``r`` (0..14) is the atlas region with
value ``r + region_base``. The app's atlases number regions 1..15 with 0 outside the
brain (``region_base=1``); the AMI data numbers them 0..14 (``region_base=0``).

The network returns logits; the sigmoid belongs to the caller (``predict_slices`` does it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AMINet",
    "InvertedResidual",
    "DEFAULT_BLOCKS",
    "KNOWN_INPUTS",
    "NUM_REGIONS",
    "count_parameters",
    "region_index",
    "region_values",
    "slice_windows",
    "slice_region_labels",
    "predict_slices",
    "study_flags",
    "regions_report",
]

#: Number of vascular atlas regions (seed 002: 15 categorical sites).
NUM_REGIONS = 15

#: Volumes a study provides, their reflections about the mid-sagittal plane, and head coordinates
#: (derived by ``lib.transforms.clot_region.network_input``).
KNOWN_INPUTS: tuple[str, ...] = ("cta1", "cta2", "cta3", "spiral", "cta1_mirror", "cta2_mirror", "cta3_mirror",
                                 "coord_lr", "coord_ap", "coord_si")

#: Compact MobileNetV2 stages ``(expansion t, channels c, repeats n, first stride s)``
#: after a stride-2 stem (MobileNetV2 Table 2 has 7 stages, 17 blocks and 320 channels).
#: Total stride 32: a 512 x 512 slice ends as a 16 x 16 feature map.
DEFAULT_BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 2, 2),
    (6, 64, 2, 2),
    (6, 96, 1, 1),
    (6, 160, 1, 2),
)


def _divisible(channels: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` (never below it, never < 90 %)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def _conv_bn_act(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise, linear 1x1 projection, residual if shapes match.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the depthwise convolution (1 or 2).
        expand_ratio: expansion factor ``t`` (MobileNetV2 Table 1); 1 skips the expansion.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expand_ratio: int = 6):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_act(in_channels, hidden, 1))
        layers.append(_conv_bn_act(hidden, hidden, 3, stride, groups=hidden))
        layers.append(_conv_bn_act(hidden, out_channels, 1, act=False))  # linear bottleneck
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class AMINet(nn.Module):
    """Per-slice multilabel classifier of the 15 vascular atlas regions holding clot.

    Args:
        input_names: volumes stacked as channels, in order (``KNOWN_INPUTS``); the seed's
            model uses ``("cta1",)``.
        context_slices: neighbouring slices on each side fed as extra channels (``k``);
            each input contributes slices ``z-k .. z+k``. Default 2 (5 slices; the seed
            does not give its slice spacing: at a typical 0.5-1 mm CTA spacing, 2.5-5 mm).
        num_regions: number of output labels (15 atlas regions).
        width: width multiplier of the inverted-residual stages (MobileNetV2's alpha).
        feat_channels: channels of the last 1x1 convolution before pooling (seed: 512).
        dropout: dropout probability before the classifier; also the MC-dropout rate.
        pool: ``"avgmax"`` (concatenate global average and max pooling) or ``"avg"``.
        blocks: stages ``(t, c, n, s)``; ``None`` uses ``DEFAULT_BLOCKS``.
        stem_channels: channels of the stride-2 stem convolution (scaled by ``width``).

    Input ``(B, in_channels, H, W)``, output logits ``(B, num_regions)``.
    """

    def __init__(
        self,
        input_names: Sequence[str] = ("cta1",),
        context_slices: int = 2,
        num_regions: int = NUM_REGIONS,
        width: float = 1.0,
        feat_channels: int = 512,
        dropout: float = 0.25,
        pool: str = "avgmax",
        blocks: Sequence[Sequence[int]] | None = None,
        stem_channels: int = 32,
    ):
        super().__init__()
        self.input_names = _check_inputs(input_names)
        if context_slices < 0:
            raise ValueError(f"context_slices must be >= 0, got {context_slices}")
        if pool not in ("avg", "avgmax"):
            raise ValueError(f"pool must be 'avg' or 'avgmax', got {pool!r}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.context_slices = int(context_slices)
        self.in_channels = len(self.input_names) * (2 * self.context_slices + 1)
        self.num_regions = int(num_regions)
        self.dropout = float(dropout)
        self.pool = pool

        channels = _divisible(stem_channels * width)
        layers: list[nn.Module] = [_conv_bn_act(self.in_channels, channels, 3, stride=2)]
        for t, c, n, s in blocks if blocks is not None else DEFAULT_BLOCKS:
            out_channels = _divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(channels, out_channels, s if i == 0 else 1, t))
                channels = out_channels
        layers.append(_conv_bn_act(channels, feat_channels, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(feat_channels * (2 if pool == "avgmax" else 1), self.num_regions)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def channel_names(self) -> list[str]:
        """Name of every input channel, e.g. ``cta1[z-1]``, in the order the network expects."""
        k = self.context_slices
        return [f"{name}[z{o:+d}]" if o else f"{name}[z]" for name in self.input_names for o in range(-k, k + 1)]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, feat)`` of a batch of slice windows (before dropout and classifier)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"AMINet expects (B, {self.in_channels}, H, W) for inputs {self.input_names} with "
                f"context_slices={self.context_slices}; got {tuple(x.shape)}"
            )
        h = self.features(x)
        pooled = F.adaptive_avg_pool2d(h, 1).flatten(1)
        if self.pool == "avgmax":
            pooled = torch.cat([pooled, F.adaptive_max_pool2d(h, 1).flatten(1)], dim=1)
        return pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.dropout(self.embed(x), self.dropout, self.training))

    @torch.no_grad()
    def mc_predict(self, x: torch.Tensor, samples: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
        """MC-dropout region probabilities: ``(mean, std)`` over ``samples``, each ``(B, num_regions)``.

        The backbone runs once in eval mode (batch-norm running statistics); only the
        dropout before the classifier is sampled. Restores the module's training mode.
        """
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        was_training = self.training
        self.eval()
        try:
            feats = self.embed(x)
            draws = torch.stack(
                [torch.sigmoid(self.classifier(F.dropout(feats, self.dropout, True))) for _ in range(samples)]
            )
        finally:
            self.train(was_training)
        return draws.mean(0), draws.std(0, unbiased=False)


def _check_inputs(input_names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(str(n).lower() for n in ([input_names] if isinstance(input_names, str) else input_names))
    if not names:
        raise ValueError("input_names is empty; give at least one of " + ", ".join(KNOWN_INPUTS))
    unknown = [n for n in names if n not in KNOWN_INPUTS]
    if unknown:
        raise ValueError(f"unknown inputs {unknown}; expected names from {KNOWN_INPUTS}")
    if len(set(names)) != len(names):
        raise ValueError(f"input_names has duplicates: {names}")
    return names


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --- atlas numbering -----------------------------------------------------------------


def region_values(region_base: int = 1, num_regions: int = NUM_REGIONS) -> np.ndarray:
    """Atlas value of every output column: ``[1..15]`` for ``region_base=1``, ``[0..14]`` for the AMI data."""
    _check_base(region_base)
    return np.arange(num_regions) + region_base


def region_index(atlas, region_base: int = 1, num_regions: int = NUM_REGIONS) -> torch.Tensor:
    """Output column of every atlas voxel (``int64`` tensor), -1 where the voxel is in no region.

    ``region_base=1``: values 1..15 are regions, 0 (and anything else) is outside.
    ``region_base=0``: values 0..14 are regions (AMI numbering).
    """
    _check_base(region_base)
    values = torch.as_tensor(np.asarray(atlas) if not isinstance(atlas, torch.Tensor) else atlas)
    if values.is_floating_point():
        values = values.round()
    idx = values.long() - region_base
    return torch.where((idx >= 0) & (idx < num_regions), idx, torch.full_like(idx, -1))


def _check_base(region_base: int) -> None:
    if region_base not in (0, 1):
        raise ValueError(f"region_base must be 0 (AMI numbering 0..14) or 1 (1..15, 0 outside), got {region_base}")


# --- slices in, regions out ----------------------------------------------------------


def slice_windows(volume, context_slices: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Slice windows of a channel-first volume, ready for ``AMINet`` (or the 2.5D ``ClotSegNet``).

    Args:
        volume: ``(C, X, Y, Z)`` array or tensor, one channel per input name in order; slices
            run along the last axis (axial, as the seed's 512 x 512 x 257 volumes).
        context_slices: ``k``; slice ``z`` gets slices ``z-k .. z+k`` of every channel.
            Indices beyond the ends repeat the end slice.
        start, stop: slice range to build (``stop`` exclusive; default all), so a caller can
            go through a volume in batches without holding every window in memory.

    Returns:
        float tensor ``(stop - start, C * (2k + 1), X, Y)``; channel ``c * (2k + 1) + k + o``
        is input ``c`` at offset ``o``.
    """
    vol = torch.as_tensor(volume)
    if vol.ndim != 4:
        raise ValueError(f"volume must be (C, X, Y, Z), got shape {tuple(vol.shape)}")
    depth = vol.shape[-1]
    stop = depth if stop is None else stop
    if not 0 <= start <= stop <= depth:
        raise ValueError(f"slice range [{start}, {stop}) outside 0..{depth}")
    k = int(context_slices)
    z = torch.arange(start, stop)[:, None] + torch.arange(-k, k + 1)[None, :]  # (n, 2k+1)
    z = z.clamp(0, depth - 1)
    win = vol[..., z.flatten()].reshape(*vol.shape[:-1], stop - start, 2 * k + 1)  # (C, X, Y, n, 2k+1)
    win = win.permute(3, 0, 4, 1, 2).reshape(stop - start, vol.shape[0] * (2 * k + 1), *vol.shape[1:3])
    return win.float().contiguous()


def slice_region_labels(clot, atlas, region_base: int = 1, num_regions: int = NUM_REGIONS) -> torch.Tensor:
    """Per-slice training targets ``(Z, num_regions)``: the atlas regions under each slice's clot voxels.

    Seed 002, label generation: a voxel is clot if its value is non-zero (the seed's clot
    files hold 0, 1, 2); slice ``z`` is positive for region ``r`` if any clot voxel of the
    slice lies in region ``r``. ``clot`` and ``atlas`` are ``(X, Y, Z)`` on the same grid.
    """
    clot_t = torch.as_tensor(np.asarray(clot) if not isinstance(clot, torch.Tensor) else clot)
    atlas_t = torch.as_tensor(np.asarray(atlas) if not isinstance(atlas, torch.Tensor) else atlas)
    if clot_t.shape != atlas_t.shape or clot_t.ndim != 3:
        raise ValueError(f"clot {tuple(clot_t.shape)} and atlas {tuple(atlas_t.shape)} must be the same (X, Y, Z) grid")
    where = torch.nonzero(clot_t != 0, as_tuple=True)  # clot is sparse: look the atlas up at clot voxels only
    idx = region_index(atlas_t[where], region_base, num_regions)
    inside = idx >= 0
    labels = torch.zeros(atlas_t.shape[-1], num_regions)
    labels[where[2][inside], idx[inside]] = 1.0
    return labels


@torch.no_grad()
def predict_slices(
    net: AMINet, volume, batch_size: int = 16, mc_samples: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Region probabilities of every slice of a volume, in batches of slice windows.

    Args:
        net: the classifier (put in eval mode here).
        volume: ``(C, X, Y, Z)`` with ``C == len(net.input_names)``, normalised as in training.
        batch_size: slices per forward pass (memory ~ batch_size x in_channels x X x Y floats).
        mc_samples: 0 for a plain forward pass; > 0 for MC-dropout mean and std.

    Returns:
        ``(probs, std)``: ``(Z, num_regions)`` sigmoid probabilities, and their MC-dropout
        standard deviation (``None`` when ``mc_samples == 0``).
    """
    vol = torch.as_tensor(volume)
    if vol.ndim != 4 or vol.shape[0] != len(net.input_names):
        raise ValueError(f"volume must be ({len(net.input_names)}, X, Y, Z) for inputs {net.input_names}, got {tuple(vol.shape)}")
    net.eval()
    device = next(net.parameters()).device
    probs, stds = [], []
    for start in range(0, vol.shape[-1], batch_size):
        x = slice_windows(vol, net.context_slices, start, min(start + batch_size, vol.shape[-1])).to(device)
        if mc_samples > 0:
            mean, std = net.mc_predict(x, mc_samples)
            probs.append(mean.cpu())
            stds.append(std.cpu())
        else:
            probs.append(torch.sigmoid(net(x)).cpu())
    return torch.cat(probs), (torch.cat(stds) if stds else None)


def study_flags(slice_probs, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Study-level region flags as the union over slices (seed 002, Discussion).

    Args:
        slice_probs: ``(Z, num_regions)`` per-slice probabilities (``predict_slices``).
        threshold: a slice flags a region when its probability is >= threshold.

    Returns:
        ``(flags, probs)``, each ``(num_regions,)``: ``probs[r]`` is the maximum over slices,
        ``flags[r]`` is true iff any slice flags region ``r`` (equivalently ``probs >= threshold``).
        Column ``r`` is atlas value ``r + region_base`` (``region_values``, ``regions_report``).
    """
    p = slice_probs.detach().cpu().numpy() if isinstance(slice_probs, torch.Tensor) else np.asarray(slice_probs)
    if p.ndim != 2:
        raise ValueError(f"slice_probs must be (Z, regions), got shape {p.shape}")
    probs = p.max(axis=0) if p.shape[0] else np.zeros(p.shape[1])
    probs = probs.astype(np.float32)
    return probs >= threshold, probs


def regions_report(flags, probs, region_base: int = 1) -> dict:
    """Region flags in atlas numbering, for the result JSON.

    Returns ``{"clot_regions": [atlas values flagged], "region_probabilities": {"<value>": p}}``.
    """
    values = region_values(region_base, len(probs))
    flags = np.asarray(flags, dtype=bool)
    return {
        "clot_regions": [int(v) for v in values[flags]],
        "region_probabilities": {str(int(v)): round(float(p), 4) for v, p in zip(values, np.asarray(probs))},
    }
