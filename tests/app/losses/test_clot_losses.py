"""Losses of the clot_region task: weighted region BCE and the Tversky + focal clot loss."""

import pytest
import torch

from lib.losses.clot_losses import RegionBCELoss, TverskyFocalLoss, pos_weight_from_labels


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pos_weight_scales_the_positive_term_only():
    logits = torch.randn(4, 15)
    ones, zeros = torch.ones(4, 15), torch.zeros(4, 15)
    plain, weighted = RegionBCELoss(pos_weight=1.0), RegionBCELoss(pos_weight=15.0)
    assert weighted(logits, ones) == pytest.approx(15 * plain(logits, ones).item(), rel=1e-5)
    assert weighted(logits, zeros) == pytest.approx(plain(logits, zeros).item(), rel=1e-6)
    assert RegionBCELoss().pos_weight.tolist() == [15.0] * 15  # seed 002's ~15


def test_region_bce_matches_the_weighted_formula_and_reductions():
    torch.manual_seed(0)
    logits, target = torch.randn(3, 15), (torch.rand(3, 15) > 0.8).float()
    w = torch.linspace(1, 30, 15)
    p = torch.sigmoid(logits)
    manual = -(w * target * torch.log(p) + (1 - target) * torch.log(1 - p))
    loss = RegionBCELoss(pos_weight=w, reduction="none")(logits, target)
    assert torch.allclose(loss, manual, atol=1e-5)
    assert RegionBCELoss(w, reduction="sum")(logits, target) == pytest.approx(manual.sum().item(), rel=1e-5)
    with pytest.raises(ValueError, match="values for 15 regions"):
        RegionBCELoss(pos_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"\(B, 15\)"):
        RegionBCELoss()(torch.randn(2, 14), torch.zeros(2, 14))


def test_pos_weight_from_labels_is_negatives_over_positives_clipped():
    labels = torch.zeros(40, 3)
    labels[:4, 0] = 1  # 36 / 4 = 9
    labels[:1, 1] = 1  # 39 -> clipped to 20
    w = pos_weight_from_labels(labels, max_weight=20.0)
    assert w.tolist() == [9.0, 20.0, 20.0]  # region 2 has no positive: max_weight


def _clot_case():
    target = torch.zeros(4, 1, 32, 32)
    target[1, 0, 10:13, 20:23] = 1  # a 3 x 3 clot on one slice of four
    return target


def _logits(mask, confidence=12.0):
    return torch.where(mask > 0.5, torch.tensor(confidence), torch.tensor(-confidence))


def test_tiny_target_loss_is_finite_and_falls_as_predictions_improve():
    target = _clot_case()
    loss = TverskyFocalLoss()
    missed = _logits(torch.zeros_like(target))
    shifted = _logits(torch.roll(target, shifts=(2, 2), dims=(2, 3)))
    half = target.clone()
    half[1, 0, 10:13, 22] = 0
    partial = _logits(half)
    perfect = _logits(target)
    values = [loss(x, target).item() for x in (missed, shifted, partial, perfect)]
    assert all(torch.isfinite(torch.tensor(values)))
    assert values[0] > values[2] > values[3] and values[1] > values[2]
    assert values[3] < 0.01
    # a batch without clot: finite, and lower for more confident background (the focal term
    # carries it; the Tversky ratio of an empty batch is ~1 whatever the prediction)
    empty = torch.zeros_like(target)
    on_empty = [loss(torch.full_like(target, c), empty).item() for c in (2.0, -2.0, -12.0)]
    assert all(torch.isfinite(torch.tensor(on_empty))) and on_empty[0] > on_empty[1] > on_empty[2]


def test_tiny_target_loss_weights_missed_clot_over_false_alarms_and_has_gradient():
    target = _clot_case()
    under, over = target.clone(), target.clone()
    under[1, 0, 12, 20:23] = 0  # 3 clot voxels missed
    over[1, 0, 13, 20:23] = 1  # 3 background voxels added
    tversky_only = TverskyFocalLoss(lambda_focal=0.0)
    assert tversky_only(_logits(under), target) > tversky_only(_logits(over), target)
    logits = torch.zeros_like(target, requires_grad=True)
    TverskyFocalLoss()(logits, target).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[1, 0, 11, 21] < 0 < logits.grad[0, 0, 0, 0]  # raise clot logits, lower background


def test_tiny_target_loss_checks_shapes_and_arguments():
    with pytest.raises(ValueError, match=r"\(B, 1, \*spatial\)"):
        TverskyFocalLoss()(torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="not both 0"):
        TverskyFocalLoss(lambda_tversky=0, lambda_focal=0)


def test_unweighted_probability_undoes_the_pos_weight_shift_of_the_optimum():
    from lib.losses.clot_losses import unweighted_probability

    w = 15.0
    p = torch.tensor([0.01, 0.2, 0.5, 0.9])
    p_weighted = w * p / (w * p + 1 - p)  # where BCE with pos_weight w puts the sigmoid for a true posterior p
    torch.testing.assert_close(unweighted_probability(p_weighted, w), p)
    assert unweighted_probability(torch.tensor(w / (1 + w)), w).item() == pytest.approx(0.5)  # the flag threshold
