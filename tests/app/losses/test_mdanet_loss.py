"""MDANet loss (seed 003, eq. 8-12): Dice + CE + λ·masked cosine similarity of the early features."""

import pytest
import torch
from monai.losses import DiceCELoss

from lib.losses.mdanet_loss import MDANetLoss, masked_cosine_similarity_loss
from lib.networks.mdanet import MDANet


def _case(seed=0, spatial=(12, 12)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 2, *spatial, generator=g)
    target = torch.zeros(2, 1, *spatial)
    target[:, :, 3:7, 4:9] = 1  # the lesion
    features = torch.rand(2, 5, *spatial, generator=g)
    return logits, target, features


def test_similarity_is_zero_when_features_agree_outside_the_lesion():
    logits, target, fa = _case()
    fb = fa.clone()
    fb[target.expand_as(fb) > 0] = 7.0  # differ inside the lesion only
    parts = MDANetLoss().terms(logits, target, fa, fb)
    assert parts["similarity"].abs() < 1e-6


def test_features_inside_the_lesion_do_not_change_the_loss():
    logits, target, fa = _case()
    _, _, fb = _case(seed=1)
    loss = MDANetLoss()
    before = loss(logits, target, fa, fb)
    inside = target.expand_as(fa) > 0
    fa2, fb2 = fa.clone(), fb.clone()
    fa2[inside], fb2[inside] = 100.0, -3.0
    torch.testing.assert_close(loss(logits, target, fa2, fb2), before)


def test_lambda_scales_the_similarity_term():
    logits, target, fa = _case()
    _, _, fb = _case(seed=1)
    segment = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)(logits, target)
    sim = masked_cosine_similarity_loss(fa, fb, target)
    assert sim > 0
    for lam in (0.0, 0.25, 1.0, 3.0):
        torch.testing.assert_close(MDANetLoss(lambda_similarity=lam)(logits, target, fa, fb), segment + lam * sim)


def test_segment_part_is_monai_dice_ce_and_features_are_optional():
    logits, target, _ = _case()
    expected = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)(logits, target)
    torch.testing.assert_close(MDANetLoss()(logits, target), expected)


def test_one_hot_and_label_index_targets_agree():
    logits, target, fa = _case()
    _, _, fb = _case(seed=1)
    onehot = torch.cat([1 - target, target], dim=1)
    torch.testing.assert_close(
        MDANetLoss(to_onehot_y=False)(logits, onehot, fa, fb), MDANetLoss()(logits, target, fa, fb)
    )


def test_similarity_is_one_minus_cosine_of_masked_average_pooled_vectors():
    fa = torch.zeros(1, 2, 4, 4)
    fb = torch.zeros(1, 2, 4, 4)
    fa[:, 0], fb[:, 1] = 1.0, 1.0  # orthogonal vectors outside the lesion
    lesion = torch.zeros(1, 1, 4, 4)
    assert masked_cosine_similarity_loss(fa, fb, lesion).item() == pytest.approx(1.0)
    fb[:, 0] = 1.0  # 45 degrees
    assert masked_cosine_similarity_loss(fa, fb, lesion).item() == pytest.approx(1 - 2**-0.5)


def test_a_sample_entirely_inside_the_lesion_contributes_nothing():
    _, _, fa = _case()
    _, _, fb = _case(seed=1)
    lesion = torch.zeros(2, 1, 12, 12)
    lesion[1] = 1
    alone = masked_cosine_similarity_loss(fa[:1], fb[:1], lesion[:1])
    torch.testing.assert_close(masked_cosine_similarity_loss(fa, fb, lesion), alone)


def test_loss_of_a_network_output_trains_both_independent_stems():
    torch.manual_seed(0)
    net = MDANet(spatial_dims=2, widths=(4, 8, 16), space_grid=(4, 4))
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:9, 5:10] = 1
    out = net(torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16), return_features=True)
    MDANetLoss(lambda_similarity=1.0)(out, target).backward()
    for stem in (net.stem_a, net.stem_b):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stem.parameters())


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError):
        MDANetLoss(reduction="none")
