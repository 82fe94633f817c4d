"""Losses of the ``clot_region`` task (seed 002): region classifier and clot segmentation.

``RegionBCELoss``: the seed's objective for AMI-Net, binary cross-entropy over the 15
region labels with the positive term weighted (``pos_weight``). Few slices hold clot and
a slice holds at most a few regions, so without the weight "the classifier can just
predict no brain regions are affected for each frame, and get a high accuracy" (seed,
Data cleaning). The seed tuned the weight in 10-90; its best runs sit near 15 (12.9-15.7
for the simple CNN, 15.6 for MobileNetV2, Tables 3-4), hence the default 15.
``pos_weight_from_labels`` computes per-region weights (negatives / positives) from a
site's own training labels instead, nnU-Net style: a figure planned from the data.

``TverskyFocalLoss``: for the clot mask, a target of a few mm in a 512 x 512 x 257 volume
(some 10^1-10^3 of 6.7 x 10^7 voxels; the seed: "almost all pixels are 0"). Sum of two
MONAI losses:

- **Tversky** (Salehi et al. 2017), ``1 - TP / (TP + alpha FP + beta FN)``: an overlap
  ratio, so the background voxels do not swamp it the way they swamp a voxel-mean
  cross-entropy. ``beta > alpha`` (0.7 vs 0.3, the paper's choice) weights missed clot
  voxels over false alarms: a tiny object is otherwise under-segmented, and a missed clot
  is the costlier error here. ``batch=True`` computes the ratio over the whole batch:
  most slices (2.5D) or patches hold no clot, and a per-sample ratio on an empty target
  is degenerate (its value swings between 0 and 1 on a single false-positive voxel).
- **Focal** (Lin et al. 2017), sigmoid form, ``gamma=2``: a dense per-voxel gradient that
  down-weights the many easy background voxels. It carries training while the overlap is
  still ~0 (early on, and on batches without clot, where Tversky gives almost no gradient).

This is not the *focal Tversky* loss ``(1 - TI)^gamma`` of Abraham & Khan (seed 004's
core/penumbra loss); here the two terms are added, each with its own weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import FocalLoss, TverskyLoss
from torch import nn

__all__ = ["REGION_POS_WEIGHT", "RegionBCELoss", "TverskyFocalLoss", "pos_weight_from_labels", "unweighted_probability"]

#: The region classifier's ``pos_weight`` (seed 002's best runs: 12.9-15.7), for training and for
#: reading its outputs back as probabilities (``unweighted_probability``).
REGION_POS_WEIGHT = 15.0


def unweighted_probability(p_weighted, pos_weight: float = REGION_POS_WEIGHT):
    """The probability a classifier trained with BCE ``pos_weight`` ``w`` would give unweighted.

    Weighting the positive term by ``w`` moves the optimum of ``sigmoid(x)`` from ``p`` to
    ``p_w = w p / (w p + 1 - p)``, so ``p = p_w / (p_w + w (1 - p_w))``. Without this, a slice
    the classifier is only 1 in 15 sure of reads 0.5, and the union of flags over a study's
    slices fires on most regions (held-out phantoms: study precision 0.08).
    """
    return p_weighted / (p_weighted + pos_weight * (1.0 - p_weighted))

_REDUCTIONS = ("mean", "sum", "none")


class RegionBCELoss(nn.Module):
    """Binary cross-entropy over region logits, with the positive term weighted (seed 002).

    ``loss = -[pos_weight * y * log sigmoid(x) + (1 - y) * log(1 - sigmoid(x))]``

    Args:
        pos_weight: weight of positive labels; a scalar (seed's ~15) or one per region.
        num_regions: number of labels (15 atlas regions); checks the input width.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (elementwise ``(B, num_regions)``).

    Input logits and targets ``(B, num_regions)``; targets in [0, 1].
    """

    def __init__(self, pos_weight: float | Sequence[float] | torch.Tensor = REGION_POS_WEIGHT, num_regions: int = 15, reduction: str = "mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        weight = torch.as_tensor(pos_weight, dtype=torch.float32).flatten()
        if weight.numel() == 1:
            weight = weight.expand(num_regions).clone()
        if weight.numel() != num_regions:
            raise ValueError(f"pos_weight has {weight.numel()} values for {num_regions} regions")
        if (weight <= 0).any():
            raise ValueError("pos_weight must be > 0")
        self.num_regions = num_regions
        self.reduction = reduction
        self.register_buffer("pos_weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape or logits.shape[-1] != self.num_regions:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must both be (B, {self.num_regions})")
        return F.binary_cross_entropy_with_logits(
            logits, target.to(logits.dtype), pos_weight=self.pos_weight.to(logits.dtype), reduction=self.reduction
        )


def pos_weight_from_labels(labels: torch.Tensor, max_weight: float = 100.0, min_weight: float = 1.0) -> torch.Tensor:
    """Per-region ``pos_weight = negatives / positives`` of training labels ``(N, num_regions)``.

    Regions without a positive get ``max_weight``; all weights are clipped to
    ``[min_weight, max_weight]`` (the seed searched 10-90).
    """
    labels = torch.as_tensor(labels, dtype=torch.float32)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (N, regions), got shape {tuple(labels.shape)}")
    pos = (labels > 0.5).sum(0).float()
    neg = labels.shape[0] - pos
    weight = torch.where(pos > 0, neg / pos.clamp(min=1), torch.full_like(pos, max_weight))
    return weight.clamp(min_weight, max_weight)


class TverskyFocalLoss(nn.Module):
    """Tversky loss plus sigmoid focal loss for a tiny binary target (the clot); see module doc.

    ``loss = lambda_tversky * (1 - TP / (TP + alpha FP + beta FN)) + lambda_focal * FL_gamma``

    Args:
        alpha: Tversky weight of false positives (0.3).
        beta: Tversky weight of false negatives (0.7); ``alpha = beta = 0.5`` is the Dice loss.
        gamma: focal exponent (2, Lin et al.).
        focal_alpha: optional focal class balance for positives in [0, 1] (``None``: off).
        lambda_tversky, lambda_focal: weights of the two terms.
        batch: Tversky ratio over the whole batch (default, see module doc) or per sample.
        smooth: smoothing added to the Tversky numerator and denominator.
        reduction: ``"mean"`` or ``"sum"`` of each term.

    Input logits and target ``(B, 1, *spatial)`` (sigmoid applied inside); target in {0, 1}.
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 2.0,
        focal_alpha: float | None = None,
        lambda_tversky: float = 1.0,
        lambda_focal: float = 1.0,
        batch: bool = True,
        smooth: float = 1e-5,
        reduction: str = "mean",
    ):
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if lambda_tversky < 0 or lambda_focal < 0 or lambda_tversky + lambda_focal == 0:
            raise ValueError("lambda_tversky and lambda_focal must be >= 0 and not both 0")
        self.lambda_tversky = lambda_tversky
        self.lambda_focal = lambda_focal
        self.tversky = TverskyLoss(
            sigmoid=True, alpha=alpha, beta=beta, batch=batch, smooth_nr=smooth, smooth_dr=smooth, reduction=reduction
        )
        self.focal = FocalLoss(gamma=gamma, alpha=focal_alpha, use_softmax=False, reduction=reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape or logits.ndim < 3 or logits.shape[1] != 1:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must both be (B, 1, *spatial)")
        target = target.to(logits.dtype)
        return self.lambda_tversky * self.tversky(logits, target) + self.lambda_focal * self.focal(logits, target)
