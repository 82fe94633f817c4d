"""Focal Tversky loss with per-class weights (seed 004, §3.1).

Seed 004 trains its core/penumbra network with the focal Tversky loss (FTL) of its
reference [1] (Abraham & Khan, ISBI 2019) and reports gamma = 4/3, alpha = 0.7,
beta = 1 - alpha as the best setting (§4 Exp-1, Table 1, and §5). It does not restate
the equation; in Abraham & Khan's notation, for class ``c`` with predicted probability
``p_ic`` and ground truth ``g_ic`` at pixel ``i``:

    TI_c  = (sum_i p_ic g_ic + eps) /
            (sum_i p_ic g_ic + alpha sum_i (1 - p_ic) g_ic + beta sum_i p_ic (1 - g_ic) + eps)   (FTL eq. 3)
    FTL   = sum_c (1 - TI_c) ** (1 / gamma)                                                      (FTL eq. 4)

so ``alpha`` weights false negatives and ``beta`` false positives (alpha > beta favours
recall, which the rare core class needs). With gamma > 1 each term ``(1 - TI_c) ** (1 / gamma)``
is larger than the plain Tversky term ``1 - TI_c``, relatively more so as ``TI_c`` nears 1,
and its gradient does not fade as a class converges. The seed also
penalises core and penumbra errors more (§3.1); that is ``class_weights`` here:

    loss_bc = w_c * (1 - TI_bc) ** (1 / gamma)

reduced over the batch and classes as ``reduction`` says.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import TverskyLoss
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["FocalTverskyLoss"]


class FocalTverskyLoss(_Loss):
    """Focal Tversky loss, FTL eqs. 3-4 of seed 004's ref. [1], with per-class weights.

    The Tversky index is MONAI's (``monai.losses.TverskyLoss`` with ``reduction="none"``
    gives ``1 - TI_c`` per item and class). MONAI's loss has neither the focal exponent
    nor class weights, so both are applied here on top of its per-class output.

    Note the names: here, as in the seed and Abraham & Khan, ``alpha`` weights false
    negatives and ``beta`` false positives; MONAI's ``TverskyLoss`` uses the opposite
    names, so they are swapped when it is built.

    Args:
        gamma: focal parameter; the exponent is ``1 / gamma`` (seed: 4/3, searched in [1, 3];
            ``gamma = 1`` is the plain Tversky loss).
        alpha: weight of false negatives (seed: 0.7).
        beta: weight of false positives (seed: ``1 - alpha`` = 0.3).
        class_weights: one weight per class left after ``include_background`` (e.g.
            ``(1, 3, 1)`` for background, core, penumbra to penalise core errors more);
            None weighs all classes 1. The seed raises the penalty of core and penumbra
            but does not report the values.
        include_background: keep channel 0 (healthy brain / background) in the loss; the
            seed's FTL sums over all three classes.
        to_onehot_y: ``target`` is a label map ``(B, 1, *spatial)`` to one-hot encode.
        softmax: ``input`` is logits; apply softmax over channels first.
        batch: sum the Tversky counts over the batch before the ratio (one index per
            class for the whole batch). True by default because 2D slices without core
            would otherwise each give a core term near 1 for any stray probability.
        smooth_nr: ``eps`` added to the numerator of eq. 3.
        smooth_dr: ``eps`` added to the denominator of eq. 3.
        reduction: ``"mean"`` (mean over batch items and classes of ``loss_bc``),
            ``"sum"`` (sum; with ``batch=True`` this is exactly eq. 4 with weights) or
            ``"none"`` (``(B, C)``, or ``(C,)`` with ``batch=True``).
    """

    def __init__(
        self,
        gamma: float = 4.0 / 3.0,
        alpha: float = 0.7,
        beta: float = 0.3,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        include_background: bool = True,
        to_onehot_y: bool = True,
        softmax: bool = True,
        batch: bool = True,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.beta = float(beta)
        weights = None
        if class_weights is not None:
            weights = torch.as_tensor(class_weights, dtype=torch.float32).reshape(-1)
            if (weights < 0).any():
                raise ValueError(f"class_weights must be >= 0, got {weights.tolist()}")
        self.register_buffer("class_weights", weights)
        # MONAI: alpha = weight of false positives, beta = weight of false negatives.
        self.tversky = TverskyLoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            softmax=softmax,
            alpha=self.beta,
            beta=self.alpha,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            reduction=LossReduction.NONE,
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``input``: logits (or probabilities with ``softmax=False``) ``(B, C, *spatial)``;
        ``target``: labels ``(B, 1, *spatial)`` (or one-hot ``(B, C, *spatial)`` with ``to_onehot_y=False``)."""
        one_minus_ti = self.tversky(input, target).clamp(min=0.0)  # (B, C) or (C,)
        # (1 - TI) ** (1 / gamma): for gamma > 1 the derivative is infinite at 0 (a perfect
        # class), so the power is taken of a value kept away from 0 and exact zeros give 0.
        tiny = torch.finfo(one_minus_ti.dtype).tiny
        focal = torch.where(
            one_minus_ti > 0,
            one_minus_ti.clamp(min=tiny) ** (1.0 / self.gamma),
            torch.zeros_like(one_minus_ti),
        )
        if self.class_weights is not None:
            if self.class_weights.numel() != focal.shape[-1]:
                raise ValueError(
                    f"class_weights has {self.class_weights.numel()} values for {focal.shape[-1]} classes"
                )
            focal = focal * self.class_weights.to(focal)
        if self.reduction == LossReduction.MEAN.value:
            return focal.mean()
        if self.reduction == LossReduction.SUM.value:
            return focal.sum()
        return focal
