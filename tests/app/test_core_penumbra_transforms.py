"""core_penumbra input contract: normalisation plan, NIHSS channel, slice model wrapper, fine-tuning schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lib.trainers.core_penumbra import GradualFineTuning, fine_tuning_stage
from lib.transforms.core_penumbra import (
    CorePenumbraSliceModel,
    build_network,
    compute_plan,
    load_plan,
    nihss_channel_value,
    normalise_map,
    slice_inferer,
)


def test_relative_maps_are_divided_by_the_brain_median_then_clipped_and_standardised():
    brain = np.zeros((4, 4, 2), bool)
    brain[1:3, 1:3] = True
    cbf = np.full((4, 4, 2), 50.0, np.float32)
    cbf[1, 1, 0] = 10.0  # a core voxel at 20 % of the healthy median
    cbf[0, 0, 0] = 1000.0  # outside the brain
    rule = {"relative": True, "clip": [0.0, 3.0], "mean": 1.0, "std": 0.5}
    out = normalise_map(cbf, brain, rule)
    assert out[1, 1, 0] == pytest.approx((0.2 - 1.0) / 0.5)
    assert out[2, 2, 1] == pytest.approx(0.0)  # median -> (1 - 1) / 0.5
    assert out[0, 0, 0] == 0.0 and not out[~brain].any()


def test_absolute_maps_keep_their_units_so_the_tmax_threshold_stays_meaningful():
    brain = np.ones((2, 2, 1), bool)
    tmax = np.array([[[2.0], [8.0]], [[40.0], [0.0]]], np.float32)
    out = normalise_map(tmax, brain, {"relative": False, "clip": [0.0, 20.0], "mean": 2.0, "std": 4.0})
    np.testing.assert_allclose(out[..., 0], [[0.0, 1.5], [4.5, -0.5]])


def test_the_plan_is_computed_from_brain_voxels_of_the_training_studies():
    rng = np.random.default_rng(0)
    brain = np.zeros((8, 8, 4), bool)
    brain[2:6, 2:6] = True
    studies = [{"cbf": rng.uniform(20, 80, brain.shape) * s, "tmax": rng.uniform(0, 10, brain.shape), "brain": brain,
                "spacing_mm": spacing} for s, spacing in ((1, (1.7, 1.7, 5.0)), (3, (0.43, 0.43, 2.0)), (1, (1.8, 1.8, 5.0)))]
    plan = compute_plan(studies, ("cbf", "tmax"), relative=("cbf",))
    assert plan["maps"] == ["cbf", "tmax"]
    assert plan["inplane_spacing_mm"] == 1.7  # the median study's in-plane spacing
    cbf, tmax = plan["normalisation"]["cbf"], plan["normalisation"]["tmax"]
    assert cbf["relative"] and not tmax["relative"]
    assert 0.9 < cbf["mean"] < 1.1  # relative: the scanner-level factor 3 is gone
    assert 0.0 <= tmax["clip"][0] < tmax["clip"][1] <= 10.0
    assert set(load_plan()["normalisation"]) >= set(load_plan()["maps"])


@pytest.mark.parametrize("clinical,value", [({"nihss": 10}, 11.0), ({"nihss": 0}, 1.0), ({}, 0.0), ({"nihss": None}, 0.0),
                                            ({"nihss": "n/a"}, 0.0), ({"nihss": 99}, 0.0), (None, 0.0)])
def test_the_nihss_channel_holds_score_plus_one_and_zero_for_none(clinical, value):
    assert nihss_channel_value(clinical) == value


class _Spy(nn.Module):
    """Stands in for CorePenumbraNet: records the NIHSS it gets, returns 3 channels of the input size."""

    use_nihss = True
    depth = 3

    def __init__(self):
        super().__init__()
        self.seen = None

    def forward(self, x, nihss=None):
        assert all(s % 8 == 0 for s in x.shape[-2:])
        self.seen = nihss
        return x[:, :1].repeat(1, 3, 1, 1)


def test_the_slice_model_decodes_the_nihss_channel_and_a_missing_score_as_nan():
    spy = _Spy()
    model = CorePenumbraSliceModel(spy)
    x = torch.zeros(2, 5, 16, 16)
    x[0, -1] = 11.0  # NIHSS 10
    model(x)
    assert spy.seen[0].item() == pytest.approx(10.0)
    assert torch.isnan(spy.seen[1])


def test_the_slice_model_pads_any_size_and_crops_back():
    spy = _Spy()
    model = CorePenumbraSliceModel(spy)
    x = torch.randn(1, 5, 21, 30)
    out = model(x)
    assert out.shape == (1, 3, 21, 30)
    torch.testing.assert_close(out[:, 0], x[:, 0])  # the crop is exactly the input's place


def test_the_real_network_runs_slice_by_slice_over_a_volume():
    model = build_network().eval()
    volume = torch.randn(1, len(model.net.in_maps) + 1, 24, 16, 3)  # the plan's maps, then NIHSS
    volume[:, -1] = 9.0
    with torch.no_grad():
        out = slice_inferer()(volume, model)
    assert out.shape == (1, 3, 24, 16, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("max_epochs,stages", [(1, ["all"]), (2, ["decoder", "all"]), (3, ["decoder", "deep", "all"]),
                                               (6, ["decoder", "decoder", "deep", "deep", "all", "all"]),
                                               (7, ["decoder", "decoder", "deep", "deep", "all", "all", "all"])])
def test_gradual_fine_tuning_runs_decoder_then_deep_then_all(max_epochs, stages):
    assert [fine_tuning_stage(e, max_epochs) for e in range(1, max_epochs + 1)] == stages


def test_the_fine_tuning_handler_freezes_the_encoders_and_unfreezes_them_at_the_end():
    from ignite.engine import Engine

    net = build_network().net
    seen = []
    engine = Engine(lambda e, b: seen.append((net.stage, any(p.requires_grad for p in net.encoders.parameters()))))
    GradualFineTuning(net, max_epochs=3).attach(engine)
    engine.run([0], max_epochs=3)
    assert seen == [("decoder", False), ("deep", True), ("all", True)]
    assert net.stage == "all"
    assert all(p.requires_grad for p in net.parameters())


def test_the_training_loss_is_the_focal_tversky_loss_plus_a_weighted_cross_entropy():
    from lib.losses.focal_tversky import FocalTverskyLoss
    from lib.trainers.core_penumbra import CLASS_WEIGHTS, CorePenumbraLoss

    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 1, 8, 8))
    logits = torch.randn(2, 3, 8, 8)
    ftl = FocalTverskyLoss(class_weights=CLASS_WEIGHTS)(logits, target)
    assert CorePenumbraLoss(ce_weight=0.0)(logits, target) == pytest.approx(float(ftl))
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0], weight=torch.tensor(CLASS_WEIGHTS))
    assert CorePenumbraLoss(ce_weight=0.5)(logits, target) == pytest.approx(float(ftl + 0.5 * ce), rel=1e-5)
    perfect = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 3, 1, 2).float() * 20
    assert CorePenumbraLoss()(perfect, target) < 0.05 < CorePenumbraLoss()(logits, target)
