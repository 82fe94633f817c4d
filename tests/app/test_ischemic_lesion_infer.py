"""The ischemic_lesion infer task in-process on ISLES'22-layout and CTP phantoms: the model is chosen
by the study's modalities, bad inputs get clear errors, and the ADC unit assumption is reported."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from lib.transforms.ischemic_lesion import ROUTES, build_network
from main import build_task_configs
from strokelabel.errors import StrokeLabelError
from strokelabel.phantom import generate_study
from strokelabel.phantom.isles_layout import generate_isles_study


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("il_studies")
    mri = generate_isles_study(root, 1, seed=5, quirks={"adc_unit": "10^-6 mm2/s", "skull_stripped": False})
    ctp = generate_study(root, "ctp", "c1", seed=6, write_ctp_series=False)
    # the same MRI study without its ADC: a DWI-only study
    dwi_only = root / "dwionly" / "sub-d1" / "ses-01" / "dwi"
    dwi_only.mkdir(parents=True)
    shutil.copy(mri["paths"]["dwi"], dwi_only / "sub-d1_ses-01_dwi.nii.gz")
    adc_only = root / "adconly" / "sub-a1" / "ses-01" / "dwi"
    adc_only.mkdir(parents=True)
    shutil.copy(mri["paths"]["adc"], adc_only / "sub-a1_ses-01_adc.nii.gz")
    return {"mri": mri["paths"]["dwi"], "ctp": ctp["reference"], "dwi_only": dwi_only / "sub-d1_ses-01_dwi.nii.gz",
            "adc_only": adc_only / "sub-a1_ses-01_adc.nii.gz"}


def _infer(model_dir):
    return build_task_configs(str(model_dir), {}, "ischemic_lesion")["ischemic_lesion"].infer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """Untrained fp16 checkpoints of every route, stored as the shipped ones are."""
    d = tmp_path_factory.mktemp("il_models")
    (d / "shipped").mkdir()
    torch.manual_seed(0)
    for route in ROUTES:
        state = {k: v.half() if torch.is_floating_point(v) else v for k, v in build_network(route).state_dict().items()}
        torch.save({"model": state}, d / "shipped" / f"ischemic_lesion_{route}.pt")
    return d


def test_without_models_each_study_gets_its_baseline_and_the_result_says_so(studies, tmp_path):
    infer = _infer(tmp_path)
    for key, route in (("mri", "mri"), ("ctp", "ctp"), ("dwi_only", "siamese")):
        _, data = infer({"image": str(studies[key]), "skip_writer": True, "device": "cpu"})
        result = data["result"]
        assert result["method"] == "baseline" and result["route"] == route
        assert "no trained" in result["method_reason"]
        assert data["pred"].shape == data["study"].shape
    with pytest.raises(StrokeLabelError, match="no trained hemispheric Siamese"):
        infer({"image": str(studies["dwi_only"]), "method": "model", "skip_writer": True, "device": "cpu"})


@pytest.mark.parametrize("key,route,model", [("mri", "mri", "MDANet (DWI | ADC)"), ("ctp", "ctp", "MDANet (CBF"),
                                             ("dwi_only", "siamese", "Siamese")])
def test_the_model_is_chosen_by_the_study_modalities(studies, model_dir, key, route, model):
    _, data = _infer(model_dir)({"image": str(studies[key]), "method": "model", "skip_writer": True, "device": "cpu"})
    result = data["result"]
    assert result["method"] == "model" and result["route"] == route and model in result["model"]
    assert "passed" in result["quality"] and result["review"] is (not result["quality"]["passed"])
    assert result["model_file"] == f"shipped/ischemic_lesion_{route}.pt"
    assert data["pred"].shape == data["study"].shape and data["pred"].dtype == np.uint8
    assert 0.0 <= result["uncertainty"] <= 1.0
    assert result["lesion_volume_ml"] >= 0
    if route == "mri":
        assert "10^-6" in result["adc_unit_assumption"]
    if route == "siamese":
        assert "offset_mm" in result["midsagittal_plane"]


def test_an_adc_map_alone_is_a_clear_error_naming_the_missing_dwi(studies, model_dir):
    with pytest.raises(StrokeLabelError, match="ADC map alone") as error:
        _infer(model_dir)({"image": str(studies["adc_only"]), "skip_writer": True, "device": "cpu"})
    assert "sub-a1_ses-01_dwi.nii.gz" in str(error.value)


def test_mc_dropout_uncertainty_scores_a_study(studies, model_dir):
    figures = _infer(model_dir).mc_dropout_uncertainty(str(studies["mri"]), samples=2, device="cpu")
    assert figures["route"] == "mri"
    assert 0.0 <= figures["entropy_lesion"] <= 1.0 and figures["disagreement"] >= 0.0


def test_a_checkpoint_that_does_not_fit_the_network_falls_back_to_the_baseline_and_says_so(studies, tmp_path):
    # a model of another layout (an older app version's first layer): never a 500
    (tmp_path / "shipped").mkdir()
    state = build_network("mri").state_dict()
    first = next(k for k, v in state.items() if v.ndim == 4)
    state[first] = torch.zeros(state[first].shape[0], state[first].shape[1] + 1, *state[first].shape[2:])
    torch.save({"model": state}, tmp_path / "shipped" / "ischemic_lesion_mri.pt")
    infer = _infer(tmp_path)
    _, data = infer({"image": str(studies["mri"]), "skip_writer": True, "device": "cpu"})
    result = data["result"]
    assert result["method"] == "baseline" and result["route"] == "mri"
    assert "ischemic_lesion_mri.pt does not fit" in result["method_reason"]
    baseline = infer({"image": str(studies["mri"]), "method": "baseline", "skip_writer": True, "device": "cpu"})[1]
    assert np.array_equal(data["pred"], baseline["pred"])
    with pytest.raises(StrokeLabelError, match="does not fit this version"):
        infer({"image": str(studies["mri"]), "method": "model", "skip_writer": True, "device": "cpu"})


def test_auto_never_serves_the_ctp_lesion_model_even_when_the_guard_passes_it(studies, model_dir, monkeypatch):
    # calibration found no guard limits that keep that model within 0.02 Dice of the baseline
    infer = _infer(model_dir)
    monkeypatch.setattr(infer, "run_model", lambda data, device: infer.run_baseline(data))  # agrees with the physics exactly
    _, auto = infer({"image": str(studies["ctp"]), "skip_writer": True, "device": "cpu"})
    result = auto["result"]
    assert result["quality"]["passed"] is True and result["review"] is False
    assert result["method"] == "baseline" and "loses to the rCBF < 30 % rule" in result["method_reason"]
    _, asked = infer({"image": str(studies["ctp"]), "method": "model", "skip_writer": True, "device": "cpu"})
    assert asked["result"]["method"] == "model" and asked["result"]["method_reason"] == "requested"


def test_mri_components_without_dwi_adc_evidence_are_dropped_unless_all_are_asked_for(studies, model_dir, monkeypatch):
    """A model answer of two blobs: the phantom's lesion (DWI bright, ADC low) and its mirror image in
    the healthy hemisphere. The evidence decision keeps the first and drops the second."""
    import torch.nn.functional as F
    from scipy import ndimage

    import lib.infers.ischemic_lesion as infer_module

    def two_blobs(network, image, out_size, **kwargs):
        adc = image[2]  # the MRI route's channels: DWI, DWI mirrored, ADC (10^-3 mm2/s), ADC mirrored
        lesion = (adc > 0) & (adc < 0.55)
        prob = (lesion | torch.flip(lesion, dims=(0,))).float()
        return F.interpolate(prob.permute(2, 0, 1)[None], size=tuple(out_size), mode="nearest")[0].permute(1, 2, 0)

    monkeypatch.setattr(infer_module, "predict_volume", two_blobs)
    infer = _infer(model_dir)
    request = {"image": str(studies["mri"]), "method": "model", "skip_writer": True, "device": "cpu"}

    _, kept = infer(dict(request))
    _, every = infer({**request, "lesion_components": "all"})

    kept_label, all_label = np.asarray(kept["pred"]) > 0, np.asarray(every["pred"]) > 0
    count = lambda m: ndimage.label(m, structure=np.ones((3, 3, 3)))[1]  # noqa: E731
    removed = kept["result"]["components_removed_without_evidence"]
    assert removed >= 1 and count(kept_label) == count(all_label) - removed
    assert kept_label.any() and np.all(all_label[kept_label])  # what is kept was in the answer, whole
    assert "components_removed_without_evidence" not in every["result"]
    # the kept blob is the lesion side: DWI brighter there than in what was dropped (labels back on the study's grid)
    study = kept["study"]
    dwi, kept_c, all_c = study.images["dwi"], study.to_canonical(kept_label) > 0, study.to_canonical(all_label) > 0
    assert dwi[kept_c].mean() > 1.3 * dwi[all_c & ~kept_c].mean()


def test_strict_lesion_components_keep_a_subset_of_the_evidence_answer_and_unknown_values_are_a_clear_error(studies, model_dir, monkeypatch):
    """``lesion_components: "strict"`` (the phantom-chosen rule: probability > 0.6, >= 0.3 mL, 85 % evidence) keeps
    at most what the default keeps; a value the task does not know is a StrokeLabelError naming it."""
    import torch.nn.functional as F

    import lib.infers.ischemic_lesion as infer_module

    def faint_and_sure(network, image, out_size, **kwargs):
        adc = image[2]
        lesion = ((adc > 0) & (adc < 0.55)).float()
        prob = 0.55 * torch.flip(lesion, dims=(0,)) + 0.95 * lesion  # the lesion sure, its mirror image faint
        return F.interpolate(prob.permute(2, 0, 1)[None], size=tuple(out_size), mode="nearest")[0].permute(1, 2, 0).clamp(max=1.0)

    monkeypatch.setattr(infer_module, "predict_volume", faint_and_sure)
    infer = _infer(model_dir)
    request = {"image": str(studies["mri"]), "method": "model", "skip_writer": True, "device": "cpu"}
    _, default = infer(dict(request))
    _, strict = infer({**request, "lesion_components": "strict"})
    default_label, strict_label = np.asarray(default["pred"]) > 0, np.asarray(strict["pred"]) > 0
    assert strict_label.any() and np.all(default_label[strict_label])
    # the guard judges the strict answer's coverage on what the network sees (the default answer), its support on itself
    assert strict["result"]["quality"]["figures"]["coverage"] == default["result"]["quality"]["figures"]["coverage"]
    assert strict["result"]["quality"]["figures"]["lesion_model_ml"] <= default["result"]["quality"]["figures"]["lesion_model_ml"]
    with pytest.raises(StrokeLabelError, match="lesion_components"):
        infer({**request, "lesion_components": "loose"})
    # a site that chose the strict rule (--conf ischemic_lesion_components strict) gets it without asking,
    # as the client sends it (the dropdown's list, the site's rule first); a rule the app does not know stops the start
    site = build_task_configs(str(model_dir), {"ischemic_lesion_components": "strict"}, "ischemic_lesion")["ischemic_lesion"].infer()
    assert site.config()["lesion_components"][0] == "strict"
    _, served = site({**request, "lesion_components": site.config()["lesion_components"]})
    assert np.array_equal(np.asarray(served["pred"]) > 0, strict_label)
    with pytest.raises(ValueError, match="ischemic_lesion_components.*'loose'"):
        build_task_configs(str(model_dir), {"ischemic_lesion_components": "loose"}, "ischemic_lesion")["ischemic_lesion"].infer()
