"""MDANet: multimodal difference aware network (seed 003, Zhang et al., BSPC 2024).

The ``ischemic_lesion`` network for two modality groups whose lesion contrast goes in
opposite directions: CT perfusion (CBF, CBV) vs (MTT, Tmax), or MRI DWI vs ADC.

Data path (equation numbers are the seed's)::

    group_a ─ stem_a ─┐ (early features: similarity loss, eq. 8)
    group_b ─ stem_b ─┤
                      └─ shared MSC encoder (one parameter set, both groups) ─ GCFB (eq. 4-7) ─ F̂a - F̂b
                                   │ F_a^l - F_b^l  (eq. 1)                                      │
                                   └──────────── DASC (eq. 2-3) ◄── decoder difference features ◄┘

* The first stage of each group is encoded by independent layers (``stem_a``, ``stem_b``);
  its outputs are the early features supervised by the masked similarity loss
  (``lib.losses.mdanet_loss.MDANetLoss``, eq. 8-12).
* The deeper stages are a parameter-shared encoder of multi-scale convolution (MSC)
  blocks: chains of 3×3 convolutions tapped at different depths, concatenated.
* Each skip connection carries the difference of the two groups' features (eq. 1),
  refined by an attention map computed with the decoder's difference features
  (eq. 2) and added back residually (eq. 3): the difference aware skip connection (DASC).
* The bottleneck is the graph convolution fusion block (GCFB): a channel-embedding
  sub-block (eq. 4-5) and a space-embedding sub-block, each updating the concatenated
  graph of both groups with a graph convolution written as two 1-D convolutions
  (eq. 6-7); the decoder starts from the difference of the fused features.

Decisions the seed leaves open (they are ours, not the paper's): normalisation layer,
the 1×1 fusion after the MSC concatenation, shared projections of the two groups in
GCFB, the 1/L scaling of the channel-embedding graph, a fixed node grid for the space
embedding (adaptive pooling when the bottleneck is larger, see :class:`GCFBSpace`),
internal padding of inputs to a multiple of ``2**(len(widths)-1)``, and dropout in the
bottleneck and decoder for Monte-Carlo uncertainty.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MDANet",
    "MDANetOutput",
    "MSCBlock",
    "DASC",
    "GraphConv",
    "GCFBChannel",
    "GCFBSpace",
    "GCFB",
]

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


class _DoubleConv(nn.Sequential):
    """Two (conv, norm, ReLU) layers: the independent stems and the decoder blocks."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, norm: str, dropout: float = 0.0):
        layers = [_conv_norm_act(spatial_dims, cin, cout, 3, norm)]
        if dropout > 0:
            layers.append(_DROPOUT[spatial_dims](dropout))
        layers.append(_conv_norm_act(spatial_dims, cout, cout, 3, norm))
        super().__init__(*layers)


class _Up(nn.Sequential):
    """2× (bi/tri)linear upsampling and a 1×1 convolution to the next scale's width."""

    def __init__(self, spatial_dims: int, cin: int, cout: int):
        mode = "bilinear" if spatial_dims == 2 else "trilinear"
        super().__init__(nn.Upsample(scale_factor=2, mode=mode, align_corners=False), _CONV[spatial_dims](cin, cout, 1))


class MSCBlock(nn.Module):
    """Multi-scale convolution block (seed 003, Sec. 3.2 and Fig. 3a).

    A chain of ``max(branch_depths)`` convolutions with ``kernel_size`` is tapped after
    each depth in ``branch_depths``; a tap after ``d`` layers sees a receptive field of
    ``d * (kernel_size - 1) + 1`` voxels (3, 5, 7 for the seed's 3×3 layers at depths
    1, 2, 3). The taps are concatenated and fused to ``out_channels`` by a 1×1
    convolution, with a 1×1 residual projection of the input.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: channel counts.
        kernel_size: kernel of every chained convolution (seed: 3).
        branch_depths: number of chained layers per branch (seed: 1, 2, 3).
        branch_channels: channels of each tap; default ``out_channels // 2``.
        norm: ``"batch"`` or ``"instance"``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        branch_depths: Sequence[int] = (1, 2, 3),
        branch_channels: int | None = None,
        norm: str = "batch",
    ):
        super().__init__()
        depths = sorted(set(int(d) for d in branch_depths))
        if not depths or depths[0] < 1:
            raise ValueError(f"branch_depths must be positive integers, got {branch_depths!r}")
        cb = branch_channels or max(out_channels // 2, 1)
        self.taps = tuple(depths)
        self.chain = nn.ModuleList(
            _conv_norm_act(spatial_dims, in_channels if i == 0 else cb, cb, kernel_size, norm) for i in range(depths[-1])
        )
        conv = _CONV[spatial_dims]
        self.fuse = nn.Sequential(
            conv(cb * len(depths), out_channels, 1, bias=False), _norm(norm, spatial_dims, out_channels)
        )
        self.residual = nn.Sequential(conv(in_channels, out_channels, 1, bias=False), _norm(norm, spatial_dims, out_channels))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps, h = [], x
        for depth, layer in enumerate(self.chain, start=1):
            h = layer(h)
            if depth in self.taps:
                taps.append(h)
        return self.act(self.fuse(torch.cat(taps, dim=1)) + self.residual(x))


class DASC(nn.Module):
    """Difference aware skip connection (seed 003, Sec. 3.2, Fig. 4, eq. 1-3).

    ``F_D = F_m1 - F_m2`` (eq. 1) is the encoder difference at this scale, ``F_de`` the
    decoder's difference features upsampled to it. The attention map
    ``W = sigmoid(theta1(theta2(F_D) + theta3(F_de)))`` (eq. 2; point-wise convolutions,
    one output channel) refines ``F_D`` residually: ``F̂_D = F_D + W * F_D`` (eq. 3).

    Args:
        spatial_dims: 2 or 3.
        skip_channels: channels of ``F_D``.
        decoder_channels: channels of ``F_de``.
        inter_channels: width of the interaction space; default ``skip_channels // 2``.
    """

    def __init__(self, spatial_dims: int, skip_channels: int, decoder_channels: int, inter_channels: int | None = None):
        super().__init__()
        conv = _CONV[spatial_dims]
        inter = inter_channels or max(skip_channels // 2, 1)
        self.theta2 = conv(skip_channels, inter, 1)
        self.theta3 = conv(decoder_channels, inter, 1)
        self.theta1 = conv(inter, 1, 1)

    def attention(self, f_d: torch.Tensor, f_de: torch.Tensor) -> torch.Tensor:
        """The attention map ``W`` of eq. 2, shape (B, 1, *spatial)."""
        return torch.sigmoid(self.theta1(self.theta2(f_d) + self.theta3(f_de)))

    def forward(self, f_m1: torch.Tensor, f_m2: torch.Tensor, f_de: torch.Tensor) -> torch.Tensor:
        f_d = f_m1 - f_m2  # eq. 1
        return f_d + self.attention(f_d, f_de) * f_d  # eq. 3


class GraphConv(nn.Module):
    """Graph convolution ``Ĝ = ReLU(((I - A) G) W)`` as two 1-D convolutions (seed 003, eq. 6-7).

    ``G`` is (B, nodes, embed_dim); the adjacency ``A`` (nodes × nodes) is a 1×1 Conv1d
    over the node axis, the weight ``W`` (embed_dim × embed_dim) a 1×1 Conv1d over the
    feature axis: ``GCN(G) = ReLU(Conv((G - Conv(G))^T)^T)`` (eq. 7).
    """

    def __init__(self, num_nodes: int, embed_dim: int):
        super().__init__()
        self.adjacency = nn.Conv1d(num_nodes, num_nodes, 1)
        self.weight = nn.Conv1d(embed_dim, embed_dim, 1, bias=False)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        h = g - self.adjacency(g)  # (I - A) G
        return F.relu(self.weight(h.transpose(1, 2)).transpose(1, 2))  # (...) W


class GCFBChannel(nn.Module):
    """GCFB sub-block with channel embedding (seed 003, Sec. 3.3, Fig. 5, eq. 4-7).

    For each group ``F_i`` (C channels, L voxels): ``F_theta = theta(F_i)`` (N × L),
    ``F_phi = phi(F_i)`` (E × L) and the graph ``G_i = F_theta F_phi^T / L`` (eq. 4; the
    1/L makes it independent of the input size). The two groups' graphs are concatenated
    (2N nodes) and updated by :class:`GraphConv` (eq. 6-7); each updated graph returns to
    coordinate space as ``Ĝ_i^T F_theta`` (eq. 5), is projected back to C channels and
    added to ``F_i``. The projections are shared by the two groups.

    Args:
        spatial_dims: 2 or 3.
        channels: C.
        num_nodes: N per group; default ``C // 4``.
        embed_dim: E; default ``C // 2``.
    """

    def __init__(self, spatial_dims: int, channels: int, num_nodes: int | None = None, embed_dim: int | None = None, norm: str = "batch"):
        super().__init__()
        conv = _CONV[spatial_dims]
        self.num_nodes = num_nodes or max(channels // 4, 1)
        self.embed_dim = embed_dim or max(channels // 2, 1)
        self.theta = conv(channels, self.num_nodes, 1)
        self.phi = conv(channels, self.embed_dim, 1)
        self.gcn = GraphConv(2 * self.num_nodes, self.embed_dim)
        self.out = nn.Sequential(conv(self.embed_dim, channels, 1, bias=False), _norm(norm, spatial_dims, channels))

    def forward(self, f_a: torch.Tensor, f_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, spatial = f_a.shape[0], f_a.shape[2:]
        f = torch.cat([f_a, f_b], dim=0)  # both groups through the shared projections at once
        f_theta = self.theta(f).flatten(2)  # (2B, N, L)
        f_phi = self.phi(f).flatten(2)  # (2B, E, L)
        g = torch.bmm(f_theta, f_phi.transpose(1, 2)) / f_theta.shape[-1]  # eq. 4: (2B, N, E)
        g_concat = torch.cat([g[:b], g[b:]], dim=1)  # (B, 2N, E)
        g_hat = self.gcn(g_concat)
        g_hat = torch.cat([g_hat[:, : self.num_nodes], g_hat[:, self.num_nodes :]], dim=0)  # (2B, N, E)
        f_hat = torch.bmm(g_hat.transpose(1, 2), f_theta).reshape(2 * b, self.embed_dim, *spatial)  # eq. 5
        out = f + self.out(f_hat)
        return out[:b], out[b:]


class GCFBSpace(nn.Module):
    """GCFB sub-block with space embedding (seed 003, Sec. 3.3, Fig. 6, eq. 6-7).

    Each cell of a fixed node ``grid`` is a node whose embedding is the feature vector of
    that cell (E = C), plus a learnable position embedding. The two groups' graphs are
    concatenated (2N nodes), updated by :class:`GraphConv`, rearranged back to the grid
    and added to the features. When the bottleneck has exactly the grid's size (the
    seed: one node per bottleneck voxel, ``N = HW``) the rearrangement is a reshape;
    a larger bottleneck is average-pooled to the grid and the update upsampled back, so
    the learnable adjacency keeps a fixed size for any input size.

    Args:
        spatial_dims: 2 or 3.
        channels: C (the node embedding size).
        grid: nodes per axis (N = prod(grid) per group).
    """

    def __init__(self, spatial_dims: int, channels: int, grid: Sequence[int]):
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        if len(self.grid) != spatial_dims:
            raise ValueError(f"grid {grid!r} must have {spatial_dims} entries")
        self.num_nodes = math.prod(self.grid)
        self.position = nn.Parameter(torch.zeros(1, channels, self.num_nodes))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.gcn = GraphConv(2 * self.num_nodes, channels)
        self._pool = F.adaptive_avg_pool2d if spatial_dims == 2 else F.adaptive_avg_pool3d

    def forward(self, f_a: torch.Tensor, f_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, spatial = f_a.shape[0], tuple(f_a.shape[2:])
        f = torch.cat([f_a, f_b], dim=0)
        cells = f if spatial == self.grid else self._pool(f, self.grid)
        g = (cells.flatten(2) + self.position).transpose(1, 2)  # (2B, N, C)
        g_hat = self.gcn(torch.cat([g[:b], g[b:]], dim=1))  # (B, 2N, C)
        g_hat = torch.cat([g_hat[:, : self.num_nodes], g_hat[:, self.num_nodes :]], dim=0)
        back = g_hat.transpose(1, 2).reshape(2 * b, -1, *self.grid)
        if spatial != self.grid:
            back = F.interpolate(back, size=spatial, mode="nearest")
        out = f + back
        return out[:b], out[b:]


class GCFB(nn.Module):
    """Graph convolution fusion block: channel then space embedding; returns ``F̂_a - F̂_b`` (Sec. 3.3)."""

    def __init__(self, spatial_dims: int, channels: int, grid: Sequence[int], num_nodes: int | None = None, embed_dim: int | None = None, norm: str = "batch"):
        super().__init__()
        self.channel = GCFBChannel(spatial_dims, channels, num_nodes, embed_dim, norm)
        self.space = GCFBSpace(spatial_dims, channels, grid)

    def forward(self, f_a: torch.Tensor, f_b: torch.Tensor) -> torch.Tensor:
        f_a, f_b = self.channel(f_a, f_b)
        f_a, f_b = self.space(f_a, f_b)
        return f_a - f_b


class MDANetOutput(NamedTuple):
    """``forward(..., return_features=True)``: logits and the two groups' early features (eq. 8)."""

    logits: torch.Tensor
    features_a: torch.Tensor
    features_b: torch.Tensor


class MDANet(nn.Module):
    """Multimodal difference aware network (seed 003).

    Args:
        spatial_dims: 2 (slices, as the seed) or 3 (volumes).
        group_channels: channels of each modality group, k (2 for CBF,CBV | MTT,Tmax;
            1 for DWI | ADC). Both groups have the same count.
        out_channels: classes of the logits (2: background, lesion).
        widths: features per scale; ``widths[0]`` is the independent first stage, the
            rest the shared MSC encoder stages, each after a 2× max-pooling.
        msc_kernel_size: kernel of the MSC chained layers (seed: 3).
        msc_branch_depths: layers per MSC branch (seed: 1, 2, 3 → receptive fields 3, 5, 7).
        gcn_nodes: N of the GCFB channel embedding (eq. 4); default ``widths[-1] // 4``.
        gcn_embed_dim: E of the GCFB channel embedding; default ``widths[-1] // 2``.
        space_grid: GCFB space-embedding node grid (nodes per axis); default 7 per axis
            in 2D (112-voxel slices, 4 poolings), 4 per axis in 3D.
        norm: ``"batch"`` (seed) or ``"instance"``.
        dropout: dropout probability in the bottleneck and decoder blocks (0 disables);
            keep it on at inference with :meth:`set_mc_dropout` for Monte-Carlo uncertainty.

    Inputs of any spatial size are padded (replicate) to a multiple of
    ``2 ** (len(widths) - 1)`` and the logits cropped back.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        group_channels: int = 1,
        out_channels: int = 2,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        msc_kernel_size: int = 3,
        msc_branch_depths: Sequence[int] = (1, 2, 3),
        gcn_nodes: int | None = None,
        gcn_embed_dim: int | None = None,
        space_grid: Sequence[int] | None = None,
        norm: str = "batch",
        dropout: float = 0.0,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2:
            raise ValueError("widths needs at least two scales (independent stage and one shared stage)")
        self.spatial_dims = spatial_dims
        self.group_channels = group_channels
        self.widths = widths
        self.divisor = 2 ** (len(widths) - 1)
        if space_grid is None:
            space_grid = (7, 7) if spatial_dims == 2 else (4, 4, 4)

        # independent first stage per group (its outputs feed the similarity loss)
        self.stem_a = _DoubleConv(spatial_dims, group_channels, widths[0], norm)
        self.stem_b = _DoubleConv(spatial_dims, group_channels, widths[0], norm)
        # parameter-shared multi-scale encoder: one module applied to both groups
        self.pool = _POOL[spatial_dims](2)
        self.shared_encoder = nn.ModuleList(
            MSCBlock(spatial_dims, widths[i - 1], widths[i], msc_kernel_size, msc_branch_depths, norm=norm)
            for i in range(1, len(widths))
        )
        self.gcfb = GCFB(spatial_dims, widths[-1], space_grid, gcn_nodes, gcn_embed_dim, norm)
        self.bottleneck_dropout = _DROPOUT[spatial_dims](dropout) if dropout > 0 else nn.Identity()
        # decoder, deepest first
        self.up = nn.ModuleList()
        self.dasc = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in range(len(widths) - 1, 0, -1):
            self.up.append(_Up(spatial_dims, widths[i], widths[i - 1]))
            self.dasc.append(DASC(spatial_dims, widths[i - 1], widths[i - 1]))
            self.decoder.append(_DoubleConv(spatial_dims, 2 * widths[i - 1], widths[i - 1], norm, dropout))
        self.head = _CONV[spatial_dims](widths[0], out_channels, 1)

    @classmethod
    def seed_config(cls, group_channels: int = 2, **overrides) -> "MDANet":
        """The seed's size: 2-D slices, widths 64..1024, batch norm (25.3 M parameters in Table 1).

        The seed reports the parameter count, not the widths; its U-Net of 30.0 M
        suggests the usual 64..1024. This layout has 25.7 M parameters (CTP,
        ``group_channels=2``), of which GCFB 2.9 M (the seed's Table 5: 25.3 M with GCFB,
        22.5 M without). ``space_grid`` 7×7 is one node per bottleneck voxel for
        ISLES'22 112×112 slices, as in the seed (N = HW).
        """
        config = dict(
            spatial_dims=2,
            group_channels=group_channels,
            out_channels=2,
            widths=(64, 128, 256, 512, 1024),
            space_grid=(7, 7),
            norm="batch",
        )
        config.update(overrides)
        return cls(**config)

    def set_mc_dropout(self, enabled: bool = True) -> "MDANet":
        """Keep the dropout layers sampling in eval mode (Monte-Carlo dropout) or not."""
        for module in self.modules():
            if isinstance(module, (nn.Dropout, nn.Dropout2d, nn.Dropout3d)):
                module.train(enabled or self.training)
        return self

    def encode(self, x: torch.Tensor, stem: nn.Module) -> torch.Tensor:
        """The independent first stage of one group: its early features."""
        return stem(x)

    def forward(self, group_a: torch.Tensor, group_b: torch.Tensor, return_features: bool = False):
        """Segment from the two modality groups.

        Args:
            group_a, group_b: (B, group_channels, *spatial), same shape.
            return_features: also return the early features of both groups.

        Returns:
            logits (B, out_channels, *spatial), or :class:`MDANetOutput` with
            ``features_a``/``features_b`` (B, widths[0], *spatial) when ``return_features``.
        """
        if group_a.shape != group_b.shape:
            raise ValueError(f"group shapes differ: {tuple(group_a.shape)} vs {tuple(group_b.shape)}")
        if group_a.ndim != self.spatial_dims + 2 or group_a.shape[1] != self.group_channels:
            raise ValueError(
                f"expected (B, {self.group_channels}, {'*' * self.spatial_dims}) inputs, got {tuple(group_a.shape)}"
            )
        spatial = tuple(group_a.shape[2:])
        group_a, group_b = _pad_to_multiple(group_a, self.divisor), _pad_to_multiple(group_b, self.divisor)
        b = group_a.shape[0]

        early_a, early_b = self.encode(group_a, self.stem_a), self.encode(group_b, self.stem_b)
        h = torch.cat([early_a, early_b], dim=0)  # the shared encoder sees both groups, one parameter set
        skips = [h]
        for block in self.shared_encoder:
            h = block(self.pool(h))
            skips.append(h)
        d = self.bottleneck_dropout(self.gcfb(h[:b], h[b:]))
        for up, dasc, block, skip in zip(self.up, self.dasc, self.decoder, reversed(skips[:-1])):
            d = up(d)
            d = block(torch.cat([dasc(skip[:b], skip[b:], d), d], dim=1))
        logits = _crop(self.head(d), spatial)
        if return_features:
            return MDANetOutput(logits, _crop(early_a, spatial), _crop(early_b, spatial))
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
