"""Multi-input slow-fusion network for ischemic core and penumbra (seed 004).

Seed 004 (Tomasetti et al., "Multi-input segmentation of damaged brain in acute
ischemic stroke patients using slow fusion with skip connection") segments core and
penumbra from CT perfusion parametric maps (PMs). Its architecture (seed §3, Fig. 1):

- one VGG-16 feature extractor per input map (CBF, CBV, TTP, Tmax, optionally MIP);
- at the end of each extractor two convolutional layers followed by dropout;
- slow fusion: the features of *all* inputs are concatenated at every level of the
  extractors and carried to the decoder through skip connections;
- a decoder of transpose convolutions followed by convolutions, ReLU everywhere, and
  a softmax over three classes (healthy brain, core, penumbra) at the end;
- optionally the patient's NIHSS score as an extra input (their selected model,
  ``SF_G(PMs, N)``, uses it);
- gradual fine-tuning (seed §4, Exp-2): train with the extractors frozen, then unfreeze
  "the bottom half" of their weights, then all of them.

What differs here, and why:

- **Size and weights.** The seed's extractors are ImageNet-pretrained VGG-16s: the
  convolutional part of one VGG-16 has 14.7 M parameters, so its four to five
  extractors alone hold 59-74 M parameters (plus the decoder), on colour-coded RGB
  maps at 512 x 512. Pretrained weights are not available to this app and it trains
  from scratch on a site's own labels on a CPU, so the extractors here are small
  VGG-style stacks (3 x 3 convolution + ReLU, 2 x 2 max pooling) over the scalar maps,
  with default widths ``(16, 32, 64, 128)``: 1.59 M parameters for the four default
  maps, 1.94 M with MIP (see ``count_parameters``), about 0.5 s for one 512 x 512
  slice on two CPU cores. Widths and depth are constructor knobs.
- **Normalisation.** Training from scratch, each convolution is followed by instance
  normalisation by default (``norm``; ``None`` gives the seed's plain conv + ReLU).
  Instance norm keeps no running statistics, so train and eval mode differ only in
  dropout, which is what MC-dropout needs.
- **Head input before its ReLU.** The 1 x 1 head reads the last decoder convolution's
  (normalised) output without the ReLU. On ReLU features (all >= 0) a class whose head
  weights all start negative scores lowest exactly where the features are strongest, and
  with the narrow top level (8 channels) that happened often enough: trained from scratch
  on phantoms, one torch seed in three never predicted penumbra (seed 2026), and the
  earlier 4-map model never predicted core. Without that ReLU five seeds of five learned
  both classes (validation Dice core 0.64-0.74, penumbra 0.66-0.80 after 120 steps).
- **NIHSS.** The seed does not say how the scalar is joined to the images. Here it
  modulates the fused bottleneck features (FiLM: ``h * (1 + g) + b``, with ``g``, ``b``
  from a small MLP over ``[nihss / 42, present]``). A missing score (``None``, or NaN
  for one study of a batch) is fed as ``[0, 0]``, so the network learns a "no score"
  modulation instead of failing. The last MLP layer starts at zero, so an untrained
  network is not affected by the score.
- **2.5D.** ``context_slices = k`` gives each map's encoder the ``2k + 1`` neighbouring
  slices as channels; ``k = 0`` is the seed's pure 2D per-slice model.
- **Fine-tuning stages.** ``set_trainable`` implements the three stages; the seed's
  "bottom half" is read as the deeper half of the levels (the bottom of a U-shaped
  net, next to the bottleneck), so the early, generic filters are unfrozen last.

The network returns logits; softmax (and the MIP brain mask of seed §3.1) belong to the
caller's post-transforms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, UpSample
from monai.networks.layers.factories import Pool
from torch import nn

__all__ = ["CorePenumbraNet", "count_parameters", "DEFAULT_MAPS", "NIHSS_MAX"]

#: Default input maps, in channel order (DESIGN.md: CBF, CBV, MTT (or TTP), Tmax).
DEFAULT_MAPS: tuple[str, ...] = ("cbf", "cbv", "mtt", "tmax")
#: Highest possible NIHSS score; the scalar enters the network as ``nihss / NIHSS_MAX``.
NIHSS_MAX = 42.0
_NIHSS_HIDDEN = 32


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _conv_stack(
    spatial_dims: int, in_channels: int, out_channels: int, n_convs: int, norm: tuple | str | None
) -> nn.Sequential:
    """``n_convs`` 3 x 3 convolutions, each followed by (norm and) ReLU: one VGG block without its pooling."""
    layers = []
    for i in range(n_convs):
        layers.append(
            Convolution(
                spatial_dims,
                in_channels if i == 0 else out_channels,
                out_channels,
                kernel_size=3,
                act="RELU",
                norm=norm,
                adn_ordering="NA",
            )
        )
    return nn.Sequential(*layers)


class _MapEncoder(nn.Module):
    """The feature extractor of one parametric map (one VGG-style stream of seed Fig. 1).

    ``levels[l]`` for ``l < depth`` is a VGG block at resolution ``H / 2**l``, its output
    is the level's skip feature and is max-pooled before the next level. ``levels[depth]``
    is the seed's pair of convolutions followed by dropout, at ``H / 2**depth``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: Sequence[int],
        convs_per_level: int,
        dropout: float,
        norm: tuple | str | None,
    ) -> None:
        super().__init__()
        self.depth = len(features) - 1
        levels = []
        previous = in_channels
        for level, width in enumerate(features):
            if level < self.depth:
                levels.append(_conv_stack(spatial_dims, previous, width, convs_per_level, norm))
            else:
                levels.append(
                    nn.Sequential(*_conv_stack(spatial_dims, previous, width, 2, norm), nn.Dropout(p=dropout))
                )
            previous = width
        self.levels = nn.ModuleList(levels)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at every level, shallowest (full resolution) first."""
        out = []
        for level, block in enumerate(self.levels):
            if level > 0:
                x = self.pool(x)
            x = block(x)
            out.append(x)
        return out


class CorePenumbraNet(nn.Module):
    """Multi-input slow-fusion encoder-decoder for core and penumbra (seed 004, Fig. 1).

    Input: ``x`` of shape ``(B, n_maps * (2 * context_slices + 1), *spatial)``, ordered
    map-major: channels ``[m * s, (m + 1) * s)`` with ``s = 2 * context_slices + 1`` are
    map ``in_maps[m]`` at slices ``z - context_slices .. z + context_slices``, the centre
    slice in the middle. Every spatial size must be a multiple of ``2 ** depth``
    (``depth = len(features) - 1``; 8 with the default widths, so 128 and 512 both work);
    pad (e.g. ``DivisiblePadd(k=2 ** depth)``) otherwise.

    Output: logits ``(B, out_channels, *spatial)`` for background, core (1) and
    penumbra (2) of the centre slice; apply softmax in the post-transforms.

    Structure: one ``_MapEncoder`` per map (``encoders[name]``); at each level ``l < depth``
    the features of all maps are concatenated (``n_maps * features[l]`` channels) and
    passed through a skip connection to the decoder level ``l``; at the bottleneck the
    maps' features are concatenated, mixed by a 1 x 1 convolution to ``features[-1]``
    channels and modulated by the NIHSS score; each decoder level upsamples by a 2 x 2
    transpose convolution, concatenates the fused skip and applies ``convs_per_level``
    3 x 3 convolutions; a 1 x 1 convolution gives the logits.

    Args:
        in_maps: names of the input maps, in channel order (also the keys of
            ``encoders``). Default CBF, CBV, MTT, Tmax; use ``"ttp"`` for MTT if the site
            has TTP (as the seed), append ``"mip"`` for the seed's optional MIP input.
        context_slices: neighbouring slices on each side given as extra channels per map
            (2.5D); 0 is the seed's 2D model.
        features: widths of the encoder levels, shallowest first; the last one is the
            bottleneck (the seed's two extra convolutions + dropout). ``depth = len - 1``
            poolings. The seed's VGG-16 has ``(64, 128, 256, 512, 512)`` before its extra
            convolutions.
        convs_per_level: 3 x 3 convolutions per encoder and decoder level (VGG-16: 2 in the
            first two blocks, 3 after).
        dropout: dropout probability after each encoder's bottleneck (seed §3, which does
            not report the rate); keep it active at inference with
            ``set_mc_dropout(True)`` for MC-dropout uncertainty.
        use_nihss: build the NIHSS modulation at the bottleneck (seed's "N" input). If
            False, passing a score is an error.
        norm: normalisation after each convolution (MONAI factory name or (name, args));
            ``None`` for the seed's plain conv + ReLU.
        spatial_dims: 2 (slices, as the seed) or 3 (patches of volumes).
        out_channels: number of classes (3: background, core, penumbra).
    """

    #: Fine-tuning stages for ``set_trainable``, in the order the seed runs them.
    STAGES: tuple[str, ...] = ("decoder", "deep", "all")

    def __init__(
        self,
        in_maps: Sequence[str] = DEFAULT_MAPS,
        context_slices: int = 0,
        features: Sequence[int] = (16, 32, 64, 128),
        convs_per_level: int = 2,
        dropout: float = 0.2,
        use_nihss: bool = True,
        norm: tuple | str | None = ("instance", {"affine": True}),
        spatial_dims: int = 2,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        in_maps = tuple(str(m) for m in in_maps)
        if not in_maps or len(set(in_maps)) != len(in_maps) or any(not m or "." in m for m in in_maps):
            raise ValueError(f"in_maps must be distinct non-empty names without '.', got {in_maps}")
        if context_slices < 0:
            raise ValueError(f"context_slices must be >= 0, got {context_slices}")
        features = tuple(int(f) for f in features)
        if len(features) < 2 or min(features) < 1:
            raise ValueError(f"features needs at least two positive widths (one pooling), got {features}")
        if convs_per_level < 1:
            raise ValueError(f"convs_per_level must be >= 1, got {convs_per_level}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")

        self.in_maps = in_maps
        self.context_slices = int(context_slices)
        self.slices_per_map = 2 * self.context_slices + 1
        self.in_channels = len(in_maps) * self.slices_per_map
        self.features = features
        self.depth = len(features) - 1
        self.spatial_dims = spatial_dims
        self.out_channels = out_channels
        self.use_nihss = use_nihss
        self._stage = "all"

        n_maps = len(in_maps)
        self.encoders = nn.ModuleDict(
            {
                name: _MapEncoder(spatial_dims, self.slices_per_map, features, convs_per_level, dropout, norm)
                for name in in_maps
            }
        )
        bottleneck = features[-1]
        self.bottleneck_fusion = Convolution(
            spatial_dims, n_maps * bottleneck, bottleneck, kernel_size=1, act="RELU", norm=norm, adn_ordering="NA"
        )
        if use_nihss:
            self.nihss_film = nn.Sequential(
                nn.Linear(2, _NIHSS_HIDDEN), nn.ReLU(inplace=True), nn.Linear(_NIHSS_HIDDEN, 2 * bottleneck)
            )
            nn.init.zeros_(self.nihss_film[-1].weight)
            nn.init.zeros_(self.nihss_film[-1].bias)
        else:
            self.nihss_film = None

        # decoder, listed from the deepest level up: up[i] and dec[i] belong to level depth-1-i
        ups, decs = [], []
        for level in reversed(range(self.depth)):
            ups.append(UpSample(spatial_dims, features[level + 1], features[level], scale_factor=2, mode="deconv"))
            decs.append(
                _conv_stack(spatial_dims, features[level] * (1 + n_maps), features[level], convs_per_level, norm)
            )
        self.up = nn.ModuleList(ups)
        self.dec = nn.ModuleList(decs)
        self.dec[-1][-1].adn.A = nn.Identity()  # the head reads signed features (see the module docstring)
        self.head = Convolution(spatial_dims, features[0], out_channels, kernel_size=1, conv_only=True)

    # ------------------------------------------------------------------ forward
    def _nihss_input(self, nihss, batch: int, ref: torch.Tensor) -> torch.Tensor:
        """``(B, 2)`` tensor ``[nihss / NIHSS_MAX, present]``; missing (None or NaN) is ``[0, 0]``."""
        if nihss is None:
            return ref.new_zeros((batch, 2))
        score = torch.as_tensor(nihss, dtype=ref.dtype, device=ref.device).reshape(-1)
        if score.numel() == 1 and batch > 1:
            score = score.expand(batch)
        if score.numel() != batch:
            raise ValueError(f"nihss must hold one score per batch item ({batch}), got shape {tuple(score.shape)}")
        present = torch.isfinite(score)
        value = torch.where(present, score, torch.zeros_like(score)) / NIHSS_MAX
        return torch.stack([value, present.to(ref.dtype)], dim=1)

    def forward(self, x: torch.Tensor, nihss: torch.Tensor | float | Sequence[float] | None = None) -> torch.Tensor:
        """Logits ``(B, out_channels, *spatial)``; ``nihss``: ``(B,)``/``(B, 1)`` scores or None (NaN = missing)."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected a (B, C, {self.spatial_dims} spatial dims) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} channels ({len(self.in_maps)} maps {self.in_maps} x "
                f"{self.slices_per_map} slices, map-major), got {x.shape[1]}"
            )
        factor = 2**self.depth
        if any(s % factor for s in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be a multiple of 2**depth = {factor}")
        if nihss is not None and not self.use_nihss:
            raise ValueError("this CorePenumbraNet was built with use_nihss=False but a NIHSS score was given")

        s = self.slices_per_map
        per_map = [self.encoders[name](x[:, m * s : (m + 1) * s]) for m, name in enumerate(self.in_maps)]
        # slow fusion: concatenate every map's features at every level
        fused = [torch.cat([feats[level] for feats in per_map], dim=1) for level in range(self.depth + 1)]

        h = self.bottleneck_fusion(fused[-1])
        if self.nihss_film is not None:
            gamma, beta = self.nihss_film(self._nihss_input(nihss, x.shape[0], h)).chunk(2, dim=1)
            shape = (x.shape[0], -1) + (1,) * self.spatial_dims
            h = h * (1.0 + gamma.reshape(shape)) + beta.reshape(shape)

        for i, level in enumerate(reversed(range(self.depth))):
            h = self.up[i](h)
            h = self.dec[i](torch.cat([h, fused[level]], dim=1))
        return self.head(h)

    # ------------------------------------------------------- fine-tuning helpers
    def encoder_levels(self, stage: str) -> list[int]:
        """Encoder levels (0 = shallowest, ``depth`` = bottleneck) that are trainable in ``stage``."""
        self._check_stage(stage)
        if stage == "decoder":
            return []
        if stage == "deep":
            return list(range((self.depth + 1) // 2, self.depth + 1))
        return list(range(self.depth + 1))

    def set_trainable(self, stage: str) -> None:
        """Set ``requires_grad`` for one stage of the seed's gradual fine-tuning (seed §4, Exp-2).

        - ``"decoder"``: every encoder frozen; the bottleneck fusion, NIHSS modulation,
          decoder and head train (the first stage, e.g. when retraining from a site's
          previous model).
        - ``"deep"``: additionally the deeper half of every encoder's levels
          (``encoder_levels("deep")``: levels ``(depth + 1) // 2 .. depth``) train.
        - ``"all"``: everything trains (the default state of a new network).

        Frozen parameters keep ``requires_grad = False`` until the next call; build the
        optimizer over all parameters (frozen ones get no gradient and stay unchanged)
        or rebuild it after each stage. With a running-statistics norm (``"batch"``)
        the frozen levels' norm layers are kept in eval mode by ``train()``.
        """
        trainable = set(self.encoder_levels(stage))
        for param in self.parameters():
            param.requires_grad_(True)
        for encoder in self.encoders.values():
            for level, block in enumerate(encoder.levels):
                block.requires_grad_(level in trainable)
        self._stage = stage
        if self.training:
            self.train(True)

    @property
    def stage(self) -> str:
        """The fine-tuning stage last set by ``set_trainable`` (``"all"`` for a new network)."""
        return self._stage

    def _check_stage(self, stage: str) -> None:
        if stage not in self.STAGES:
            raise ValueError(f"unknown fine-tuning stage {stage!r}; expected one of {self.STAGES}")

    def train(self, mode: bool = True) -> CorePenumbraNet:
        super().train(mode)
        if mode and self._stage != "all":
            trainable = set(self.encoder_levels(self._stage))
            for encoder in self.encoders.values():
                for level, block in enumerate(encoder.levels):
                    if level not in trainable:
                        for m in block.modules():
                            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                                m.eval()
        return self

    def set_mc_dropout(self, enabled: bool = True) -> None:
        """Keep the dropout layers sampling (``enabled``) or not, whatever the module's mode.

        For MC-dropout uncertainty: ``net.eval(); net.set_mc_dropout(True)`` then run
        several forward passes; ``net.eval()`` alone switches dropout off again.
        """
        for m in self.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.train(enabled)
