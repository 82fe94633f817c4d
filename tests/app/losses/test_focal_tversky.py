"""FocalTverskyLoss: the focal Tversky loss of seed 004 with per-class weights."""

import pytest
import torch
from monai.losses import TverskyLoss

from lib.losses.focal_tversky import FocalTverskyLoss

# Hand-computed case: one image of 4 pixels, 2 classes, probabilities given directly.
#   class 1: p = 0.9 0.6 0.2 0.1, truth = 1 1 0 0 -> TP = 1.5, FN = 0.1 + 0.4 = 0.5, FP = 0.2 + 0.1 = 0.3
#            TI_1 = 1.5 / (1.5 + 0.7 * 0.5 + 0.3 * 0.3) = 1.5 / 1.94,  1 - TI_1 = 0.44 / 1.94
#   class 0: p = 0.1 0.4 0.8 0.9, truth = 0 0 1 1 -> TP = 1.7, FN = 0.2 + 0.1 = 0.3, FP = 0.1 + 0.4 = 0.5
#            TI_0 = 1.7 / (1.7 + 0.7 * 0.3 + 0.3 * 0.5) = 1.7 / 2.06,  1 - TI_0 = 0.36 / 2.06
HAND_PROBS = torch.tensor([[0.1, 0.4, 0.8, 0.9], [0.9, 0.6, 0.2, 0.1]]).reshape(1, 2, 4, 1)
HAND_LABELS = torch.tensor([1, 1, 0, 0]).reshape(1, 1, 4, 1)
HAND_ONE_MINUS_TI = torch.tensor([0.36 / 2.06, 0.44 / 1.94])


def _hand_loss(**kwargs) -> FocalTverskyLoss:
    kwargs.setdefault("softmax", False)
    return FocalTverskyLoss(**kwargs)


def _labels(seed: int = 0, shape=(2, 1, 16, 16)) -> torch.Tensor:
    """Background with a penumbra square holding a smaller core square."""
    labels = torch.zeros(shape, dtype=torch.long)
    labels[..., 4:12, 4:12] = 2
    labels[..., 6:9, 6:9] = 1
    return labels


def _one_hot(labels: torch.Tensor, n: int = 3) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels[:, 0], n).movedim(-1, 1).float()


def test_defaults_are_the_seeds_best_setting():
    loss = FocalTverskyLoss()
    assert loss.gamma == pytest.approx(4 / 3)
    assert (loss.alpha, loss.beta) == (0.7, 0.3)
    assert loss.reduction == "mean"
    # alpha weighs false negatives: MONAI's TverskyLoss calls that weight beta
    assert (loss.tversky.beta, loss.tversky.alpha) == (0.7, 0.3)


def test_perfect_prediction_gives_zero_loss():
    labels = _labels()
    probs = _one_hot(labels)
    for batch in (True, False):
        assert _hand_loss(batch=batch)(probs, labels).item() == 0.0
    # from logits: a confident correct network is at (numerically) zero
    logits = 30.0 * (_one_hot(labels) - 0.5)
    assert FocalTverskyLoss()(logits, labels).item() < 1e-5


def test_loss_increases_with_error():
    labels = _labels()
    perfect = _one_hot(labels)
    uniform = torch.full_like(perfect, 1 / 3)
    loss = _hand_loss()
    # softer and softer predictions
    values = [loss((1 - t) * perfect + t * uniform, labels).item() for t in (0.0, 0.2, 0.5, 0.8, 1.0)]
    assert values == sorted(values) and len(set(values)) == len(values)
    # hard predictions that miss more and more lesion rows (predicted as background)
    values = []
    for rows in range(0, 9, 2):
        predicted = labels.clone()
        predicted[..., 4 : 4 + rows, :] = 0
        values.append(loss(_one_hot(predicted), labels).item())
    assert values == sorted(values) and len(set(values)) == len(values)


def test_tversky_index_matches_the_hand_computed_case_with_gamma_one():
    loss = _hand_loss(gamma=1.0, reduction="none")
    torch.testing.assert_close(loss(HAND_PROBS, HAND_LABELS), HAND_ONE_MINUS_TI, atol=1e-5, rtol=0)
    # gamma = 1 is MONAI's plain Tversky loss with its (FP, FN) weights named the other way round
    monai_tversky = TverskyLoss(to_onehot_y=True, alpha=0.3, beta=0.7, batch=True, reduction="sum")
    torch.testing.assert_close(
        _hand_loss(gamma=1.0, reduction="sum")(HAND_PROBS, HAND_LABELS), monai_tversky(HAND_PROBS, HAND_LABELS)
    )


@pytest.mark.parametrize("gamma, expected", [(4 / 3, 0.5989413), (2.0, (0.36 / 2.06) ** 0.5 + (0.44 / 1.94) ** 0.5)])
def test_focal_exponent_is_one_over_gamma_on_the_hand_computed_case(gamma, expected):
    # FTL = sum_c (1 - TI_c) ** (1 / gamma); 0.5989413 = (0.36/2.06) ** 0.75 + (0.44/1.94) ** 0.75
    loss = _hand_loss(gamma=gamma, reduction="sum")(HAND_PROBS, HAND_LABELS)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    per_class = _hand_loss(gamma=gamma, reduction="none")(HAND_PROBS, HAND_LABELS)
    torch.testing.assert_close(per_class, HAND_ONE_MINUS_TI ** (1 / gamma), atol=1e-5, rtol=0)
    # 0 < 1 - TI < 1, so gamma > 1 raises every term above the plain Tversky term
    assert (per_class > HAND_ONE_MINUS_TI).all()


def test_alpha_penalises_missed_lesion_more_than_false_alarm():
    labels = torch.tensor([1, 1, 0, 0]).reshape(1, 1, 4, 1)
    missed = torch.tensor([[0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]]).reshape(1, 2, 4, 1)  # one FN pixel
    false_alarm = torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]]).reshape(1, 2, 4, 1)  # one FP pixel
    per_class_missed = _hand_loss(reduction="none")(missed, labels)
    per_class_alarm = _hand_loss(reduction="none")(false_alarm, labels)
    assert per_class_missed[1] > per_class_alarm[1]


def test_class_weights_raise_the_core_term():
    labels = _labels()
    probs = _one_hot(labels)
    probs[:, :, 6:9, 6:9] = torch.tensor([0.2, 0.3, 0.5]).reshape(1, 3, 1, 1)  # core half missed
    plain = _hand_loss(reduction="none")(probs, labels)
    weighted = _hand_loss(reduction="none", class_weights=(1.0, 3.0, 1.0))(probs, labels)
    torch.testing.assert_close(weighted[1], 3.0 * plain[1])
    torch.testing.assert_close(weighted[[0, 2]], plain[[0, 2]])
    assert _hand_loss(class_weights=(1.0, 3.0, 1.0))(probs, labels) > _hand_loss()(probs, labels)


def test_class_weights_follow_include_background():
    labels = _labels()
    loss = FocalTverskyLoss(include_background=False, class_weights=(3.0, 1.0), reduction="none")
    assert loss(torch.randn(2, 3, 16, 16), labels).shape == (2,)
    with pytest.raises(ValueError, match="class_weights has 3 values for 2 classes"):
        FocalTverskyLoss(include_background=False, class_weights=(1.0, 3.0, 1.0))(torch.randn(2, 3, 16, 16), labels)


def test_reductions_are_explicit():
    labels = _labels()
    logits = torch.randn(2, 3, 16, 16)
    per_item = FocalTverskyLoss(batch=False, reduction="none")(logits, labels)
    assert per_item.shape == (2, 3)
    torch.testing.assert_close(FocalTverskyLoss(batch=False, reduction="mean")(logits, labels), per_item.mean())
    torch.testing.assert_close(FocalTverskyLoss(batch=False, reduction="sum")(logits, labels), per_item.sum())
    assert FocalTverskyLoss(reduction="none")(logits, labels).shape == (3,)
    with pytest.raises(ValueError):
        FocalTverskyLoss(reduction="median")


@pytest.mark.parametrize("case", ["random", "perfect", "absent_class"])
def test_gradient_is_finite(case):
    labels = _labels()
    if case == "absent_class":
        labels = torch.zeros_like(labels)
    if case == "random":
        torch.manual_seed(0)
        logits = torch.randn(2, 3, 16, 16)
    else:
        logits = 30.0 * (_one_hot(labels) - 0.5)
    logits.requires_grad_(True)
    FocalTverskyLoss(class_weights=(1.0, 4.0, 2.0))(logits, labels).backward()
    assert torch.isfinite(logits.grad).all()
    probs = _one_hot(labels).requires_grad_(True)
    _hand_loss()(probs, labels).backward()
    assert torch.isfinite(probs.grad).all()
