"""TverskyCELoss: a false positive costs more than a false negative of the same size."""

import torch

from lib.losses.tversky_ce import TverskyCELoss


def logits_of(mask: torch.Tensor) -> torch.Tensor:
    """Confident two-class logits (B, 2, H, W) for a 0/1 mask."""
    lesion = mask.float() * 8.0 - 4.0
    return torch.stack([-lesion, lesion], dim=1)


def test_false_positives_cost_more_than_false_negatives():
    target = torch.zeros(1, 1, 16, 16)
    target[0, 0, 4:8, 4:8] = 1  # 16 voxels
    over = target[:, 0].clone()
    over[0, 8:10, 4:8] = 1  # 8 voxels too many
    under = target[:, 0].clone()
    under[0, 6:8, 4:8] = 0  # 8 voxels missed
    tversky = TverskyCELoss(fp_weight=0.7, fn_weight=0.3, lambda_ce=0.0)
    dice = TverskyCELoss(fp_weight=0.5, fn_weight=0.5, lambda_ce=0.0)  # equal weights: the Dice loss
    # over-segmenting costs more than under Dice, under-segmenting less
    assert tversky(logits_of(over), target) > dice(logits_of(over), target) + 0.05
    assert tversky(logits_of(under), target) < dice(logits_of(under), target) - 0.05
    # by the index: 1 - 16 / (16 + 0.7 * 8) for the 8 extra voxels, 1 - 8 / (8 + 0.3 * 8) for the 8 missed
    assert torch.isclose(tversky(logits_of(over), target), torch.tensor(1 - 16 / 21.6), atol=0.01)
    assert torch.isclose(tversky(logits_of(under), target), torch.tensor(1 - 8 / 10.4), atol=0.01)
    # the right answer costs (almost) nothing, cross-entropy included
    assert TverskyCELoss()(logits_of(target[:, 0]), target) < 0.05
