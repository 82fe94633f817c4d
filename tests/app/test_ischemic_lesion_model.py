"""ischemic_lesion: route choice, input channels, network adapters, loss on the adapter, and the
infer task's model path (DWI-only -> Siamese, ADC alone -> clear error, ADC units reported)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from lib.transforms.grid import resample_inplane
from lib.transforms.ischemic_lesion import (
    ComponentRule,
    MDANetLossOnNet,
    build_network,
    inplane_size,
    lesion_from_probability,
    lesion_target,
    predict_volume,
    route_for,
    study_channels,
    uncertainty_score,
)
from lib.losses.mdanet_loss import MDANetLoss
from strokelabel.errors import StrokeLabelError
from strokelabel.study import load_study


def test_the_study_modalities_choose_the_model():
    assert route_for("ctp", ["cbf", "cbv", "mtt", "tmax"]) == "ctp"
    assert route_for("mri", ["dwi", "adc", "flair"]) == "mri"
    assert route_for("mri", ["dwi"]) == "siamese"
    with pytest.raises(StrokeLabelError, match="not CTA"):
        route_for("cta", ["cta1"])


def test_ctp_lesion_is_the_core_of_a_core_penumbra_label():
    label = np.array([[[0, 1, 2, 1]]])
    assert lesion_target(label, "ctp").tolist() == [[[0, 1, 0, 1]]]


def _mri_arrays(adc_scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    shape = (40, 40, 6)
    x, y = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    head = ((x - 20) ** 2 + (y - 20) ** 2 < 16**2)[..., None].repeat(6, axis=2)
    dwi = np.where(head, 100 + rng.normal(0, 3, shape), 0).astype(np.float32)
    adc = np.where(head, 0.8 + rng.normal(0, 0.02, shape), 0).astype(np.float32)
    adc[~head] = -0.01  # a sloppy fit gives slightly negative background
    return {"dwi": dwi, "adc": adc * adc_scale}


def _mri_study(folder, adc_scale):
    arrays = _mri_arrays(adc_scale)
    affine = np.diag([1.8, 1.8, 5.0, 1.0])
    folder.mkdir(parents=True, exist_ok=True)
    for name, values in arrays.items():
        nib.save(nib.Nifti1Image(values, affine), str(folder / f"sub-x_ses-01_{name}.nii.gz"))
    return load_study(folder / "sub-x_ses-01_dwi.nii.gz", ("dwi", "adc"))


@pytest.mark.parametrize("scale,unit", [(1.0, "10^-3"), (1000.0, "10^-6")])
def test_adc_in_either_unit_gives_the_same_channels_and_says_which_unit_was_assumed(tmp_path, scale, unit):
    ref, _ = study_channels(_mri_study(tmp_path / "ref", 1.0), "mri")
    channels, info = study_channels(_mri_study(tmp_path / "other", scale), "mri")
    assert channels.shape == (4, 40, 40, 6)  # DWI, DWI mirrored, ADC, ADC mirrored
    assert unit in info["adc_unit_assumption"]
    np.testing.assert_allclose(channels, ref, atol=1e-4)
    assert channels[2].min() >= 0.0  # negative ADC clipped


def test_inplane_resampling_goes_to_the_plan_spacing_and_back():
    assert inplane_size((512, 512, 64), (0.43, 0.43, 2.0)) == (122, 122)
    assert inplane_size((128, 128, 24), (1.8, 1.8, 5.0)) == (128, 128)
    v = torch.rand(2, 60, 50, 3)
    out = resample_inplane(v, (30, 25))
    assert out.shape == (2, 30, 25, 3)


@pytest.mark.parametrize("route,channels", [("ctp", 4), ("mri", 4), ("siamese", 2)])
def test_networks_are_small_and_predict_a_probability_on_the_study_grid(route, channels):
    torch.manual_seed(0)
    net = build_network(route)
    n = sum(p.numel() for p in net.parameters())
    assert n < 1_000_000  # < 2 MB in fp16
    prob = predict_volume(net, torch.rand(channels, 32, 32, 5), (48, 40))
    assert prob.shape == (48, 40, 5)
    assert float(prob.min()) >= 0.0 and float(prob.max()) <= 1.0


def test_mdanet_loss_gets_the_early_features_through_the_adapter():
    torch.manual_seed(0)
    net = build_network("mri").train()
    loss = MDANetLossOnNet(MDANetLoss(lambda_similarity=1.0), net)
    x = torch.rand(2, 4, 32, 32)  # (DWI, DWI mirrored) | (ADC, ADC mirrored)
    target = (torch.rand(2, 1, 32, 32) > 0.8).float()
    logits = net(x)
    assert net.last_features is not None and net.last_features[0].shape == (2, 8, 32, 32)
    with_sim = loss(logits, target)
    seg_only = MDANetLoss(lambda_similarity=0.0)(logits, target)
    assert float(with_sim) > float(seg_only)  # the similarity term (eq. 8) is added
    with_sim.backward()
    assert net.net.stem_a[0][0].weight.grad is not None
    net.eval()
    net(x)
    assert net.last_features is None


def test_uncertainty_is_zero_when_sure_and_high_for_coin_flips():
    assert uncertainty_score(np.zeros((4, 4, 2))) == 0.0
    sure = np.zeros((4, 4, 2))
    sure[:2] = 0.999
    assert uncertainty_score(sure) < 0.05
    assert uncertainty_score(np.full((4, 4, 2), 0.5)) == pytest.approx(1.0)


def test_empty_slices_share_one_answer_equal_to_running_each_slice():
    """predict_volume runs the all-zero (no brain) slices once: the same as the network on every slice, mirror-averaged."""
    from lib.transforms.grid import mirror_averaged

    torch.manual_seed(0)
    net = build_network("mri").eval()
    image = torch.rand(4, 24, 20, 7)
    image[..., [0, 3, 6]] = 0.0
    prob = predict_volume(net, image, (30, 26), batch=2)
    with torch.no_grad():
        lesion = lambda x: torch.softmax(net(x), dim=1)[:, 1:2]  # noqa: E731
        each = [mirror_averaged(lesion, image[..., k][None], lr_dim=2) for k in range(7)]
        expected = torch.nn.functional.interpolate(torch.cat(each), size=(30, 26), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(prob, expected.permute(1, 2, 0), atol=1e-5)
    assert torch.equal(prob[..., 0], prob[..., 6])


def test_components_without_dwi_adc_evidence_are_removed_and_supported_ones_kept_whole():
    label = np.zeros((30, 30, 10), np.uint8)
    label[2:8, 2:8, 2:5] = 1  # supported: its core is evidence, its rim within one voxel of it
    label[20:26, 20:26, 2:5] = 1  # no evidence at all
    label[2:8, 20:26, 6:9] = 1  # a third of it is evidence
    evidence = np.zeros(label.shape, bool)
    evidence[3:7, 3:7, 3:4] = True
    evidence[2:4, 20:26, 6:9] = True

    def supported(label, share):  # the evidence decision alone: the label as a sure probability, no size limit
        return lesion_from_probability(label, (1.0, 1.0, 1.0), ComponentRule(min_component_ml=0.0, min_support=share), evidence)

    kept, removed = supported(label, 0.7)

    assert removed == 2
    assert np.array_equal(kept > 0, np.pad(np.ones((6, 6, 3), bool), ((2, 22), (2, 22), (2, 5))))
    assert kept.dtype == label.dtype
    # a lower share keeps the partly supported one too; an empty label stays empty
    assert supported(label, 0.3)[1] == 1
    assert supported(np.zeros_like(label), 0.7)[1] == 0


def test_the_lesion_rule_thresholds_drops_small_unsupported_and_faint_components_and_counts_them():
    spacing = (2.0, 2.0, 2.0)  # 0.008 mL per voxel
    prob = np.zeros((30, 30, 10), np.float32)
    prob[2:8, 2:8, 2:5] = 0.95  # 108 voxels, 0.86 mL: evidence, confident
    prob[20:26, 20:26, 2:5] = 0.95  # no evidence
    prob[2:8, 20:26, 6:9] = 0.6  # evidence, but never above 0.6
    prob[15, 15, 5] = 0.99  # one voxel: under 0.1 mL
    evidence = np.zeros(prob.shape, bool)
    evidence[2:8, 2:8, 2:5] = evidence[2:8, 20:26, 6:9] = evidence[15, 15, 5] = True

    none_removed, n = lesion_from_probability(prob, spacing, ComponentRule())
    assert n == 0 and none_removed.dtype == np.uint8 and np.count_nonzero(none_removed) == 3 * 108  # the voxel is too small
    supported, n = lesion_from_probability(prob, spacing, ComponentRule(min_support=0.7), evidence)
    assert n == 1 and np.count_nonzero(supported) == 2 * 108
    confident, n = lesion_from_probability(prob, spacing, ComponentRule(min_support=0.7, min_peak_probability=0.9), evidence)
    assert n == 2  # the unsupported 0.95 blob and the faint 0.6 one
    assert np.array_equal(confident > 0, (prob > 0.9) & evidence & (prob < 0.99))
    # a higher threshold is the same as dropping the 0.6 blob at the threshold
    high, n = lesion_from_probability(prob, spacing, ComponentRule(threshold=0.7, min_support=0.7), evidence)
    assert n == 1 and np.array_equal(high, confident)


def test_a_frozen_encoder_leaves_only_the_decoder_moving_and_unfreezes_for_the_next_run():
    from lib.trainers.ischemic_lesion import set_encoder_frozen

    torch.manual_seed(0)
    net = build_network("mri")
    set_encoder_frozen(net, True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    net.train()
    loss = MDANetLossOnNet(MDANetLoss(lambda_similarity=1.0), net)
    x, target = torch.rand(2, 4, 32, 32), (torch.rand(2, 1, 32, 32) > 0.8).float()
    loss(net(x), target).backward()
    optimizer.step()
    moved = {k.split(".")[1] for k, v in net.state_dict().items() if "num_batches_tracked" not in k and not torch.equal(v, before[k])}
    assert moved == {"up", "dasc", "decoder", "head"}  # encoder weights and batch-norm statistics stay
    set_encoder_frozen(net, False)
    assert all(p.requires_grad for p in net.parameters())
    assert net.net.stem_a[0][1].momentum == 0.1


def test_fixed_norm_statistics_keep_every_running_mean_while_the_weights_learn():
    from lib.trainers.ischemic_lesion import set_encoder_frozen

    torch.manual_seed(0)
    net = build_network("mri")
    set_encoder_frozen(net, False, fixed_norm_statistics=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    MDANetLossOnNet(MDANetLoss(lambda_similarity=1.0), net)(net(torch.rand(2, 4, 32, 32)), (torch.rand(2, 1, 32, 32) > 0.8).float()).backward()
    torch.optim.AdamW(net.parameters(), lr=1e-2).step()
    after = net.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if k.endswith(("running_mean", "running_var")))
    assert not torch.equal(after["net.head.weight"], before["net.head.weight"])
