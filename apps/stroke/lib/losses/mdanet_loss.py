"""The MDANet loss (seed 003, Sec. 3.4, eq. 8-12): Dice + cross-entropy + λ·masked similarity.

``L = L_dice + L_ce + λ L_similarity`` (eq. 9-10). The segmentation part is MONAI's
:class:`~monai.losses.DiceCELoss` (eq. 11-12). The similarity part (eq. 8) aligns the two
modality groups' early features (the outputs of MDANet's independent first stage)
outside the lesion: each feature map is reduced to a vector by global average pooling
over the non-lesion voxels, and the loss is one minus the cosine similarity of the two
vectors, so that the difference maps of the skip connections carry the lesion and not
the groups' different grey-level distributions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn

__all__ = ["MDANetLoss", "masked_cosine_similarity_loss", "lesion_mask_from_target"]

_REDUCTIONS = ("mean", "sum")


def lesion_mask_from_target(target: torch.Tensor) -> torch.Tensor:
    """Lesion voxels (B, 1, *spatial) as float from a label-index (B, 1, ...) or one-hot (B, C, ...) target."""
    if target.shape[1] == 1:
        return (target > 0).to(torch.float32)
    return (target[:, 1:].sum(dim=1, keepdim=True) > 0).to(torch.float32)


def masked_cosine_similarity_loss(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    lesion_mask: torch.Tensor,
    reduction: str = "mean",
    eps: float = 1e-8,
) -> torch.Tensor:
    """``1 - A·B / (|A| |B|)`` of the non-lesion global-average-pooled features (seed 003, eq. 8).

    Args:
        features_a, features_b: (B, C, *spatial) early features of the two groups.
        lesion_mask: (B, 1, *spatial_mask), 1 inside the lesion. Resampled to the feature
            grid by max-pooling when sizes differ (a feature voxel touching the lesion is
            excluded).
        reduction: ``"mean"`` over the samples that have non-lesion voxels, or ``"sum"``.
        eps: guards the norms and the voxel count.

    Returns:
        A scalar. Samples entirely inside the lesion contribute nothing.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if features_a.shape != features_b.shape:
        raise ValueError(f"feature shapes differ: {tuple(features_a.shape)} vs {tuple(features_b.shape)}")
    spatial = features_a.shape[2:]
    lesion = lesion_mask.to(features_a.dtype)
    if tuple(lesion.shape[2:]) != tuple(spatial):
        pool = F.adaptive_max_pool2d if len(spatial) == 2 else F.adaptive_max_pool3d
        lesion = pool(lesion, tuple(spatial))
    keep = 1.0 - lesion  # (B, 1, *spatial)
    dims = tuple(range(2, features_a.ndim))
    count = keep.sum(dim=dims)  # (B, 1)
    vec_a = (features_a * keep).sum(dim=dims) / count.clamp_min(eps)
    vec_b = (features_b * keep).sum(dim=dims) / count.clamp_min(eps)
    per_sample = 1.0 - F.cosine_similarity(vec_a, vec_b, dim=1, eps=eps)  # (B,)
    valid = (count[:, 0] > 0).to(per_sample.dtype)
    total = (per_sample * valid).sum()
    if reduction == "sum":
        return total
    return total / valid.sum().clamp_min(1.0)


class MDANetLoss(nn.Module):
    """``L = L_dice + L_ce + λ L_similarity`` (seed 003, eq. 8-12).

    Args:
        lambda_similarity: λ of eq. 9 (seed: 1, the best of its Table 6).
        include_background: Dice over the background channel too; the seed's eq. 11 is
            the lesion's Dice, hence False.
        to_onehot_y: the target is a label index (B, 1, ...); False for one-hot targets.
        lambda_dice, lambda_ce: weights of eq. 10 (seed: 1, 1).
        reduction: ``"mean"`` or ``"sum"``, for both parts.
        smooth_nr, smooth_dr: Dice smoothing (MONAI defaults).
        segment: replaces eq. 10's Dice + CE (the arguments above then do not apply), e.g.
            :class:`~lib.losses.tversky_ce.TverskyCELoss` to weigh false positives more.

    Call with ``(logits, target, features_a, features_b)`` or with an
    :class:`~lib.networks.mdanet.MDANetOutput` as first argument; without features only
    the segmentation part is computed.
    """

    def __init__(
        self,
        lambda_similarity: float = 1.0,
        include_background: bool = False,
        to_onehot_y: bool = True,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        segment: nn.Module | None = None,
    ):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.lambda_similarity = float(lambda_similarity)
        self.reduction = reduction
        # ``segment``: another segmentation part on (logits, label index), e.g. TverskyCELoss
        self.segment = segment if segment is not None else DiceCELoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            softmax=True,
            reduction=reduction,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            lambda_dice=lambda_dice,
            lambda_ce=lambda_ce,
        )

    def terms(self, logits, target: torch.Tensor, features_a: torch.Tensor | None = None, features_b: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The unweighted parts: ``segment`` (eq. 10) and ``similarity`` (eq. 8, 0 without features)."""
        if isinstance(logits, tuple):  # MDANetOutput(logits, features_a, features_b)
            logits, features_a, features_b = logits
        segment = self.segment(logits, target)
        if features_a is None or features_b is None:
            similarity = torch.zeros((), dtype=segment.dtype, device=segment.device)
        else:
            similarity = masked_cosine_similarity_loss(
                features_a, features_b, lesion_mask_from_target(target), reduction=self.reduction
            )
        return {"segment": segment, "similarity": similarity}

    def forward(self, logits, target: torch.Tensor, features_a: torch.Tensor | None = None, features_b: torch.Tensor | None = None) -> torch.Tensor:
        parts = self.terms(logits, target, features_a, features_b)
        return parts["segment"] + self.lambda_similarity * parts["similarity"]  # eq. 9
