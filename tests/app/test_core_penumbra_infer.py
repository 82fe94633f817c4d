"""core_penumbra model path (in-process, on one phantom) and the uncertainty active learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lib.activelearning.uncertainty import MostUncertain, StrokeUncertaintyScoring
from lib.configs.core_penumbra import CorePenumbra
from strokelabel.phantom import generate_study

APP_MODEL_DIR = Path(__file__).resolve().parents[2] / "apps" / "stroke" / "model"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("cp_study")
    return generate_study(root, "ctp", "ctp0001", seed=31)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("cp_model")
    (model_dir / "shipped").mkdir()
    config = CorePenumbra()
    config.init("core_penumbra", str(model_dir), {}, None)
    torch.manual_seed(0)
    weights = {k: v.half() if v.is_floating_point() else v for k, v in config.network.state_dict().items()}
    torch.save({"model": weights}, config.shipped_path)  # an fp16 checkpoint, as the shipped one
    return config


def test_the_model_path_labels_only_brain_voxels_and_reports_the_clinical_figures(config, study):
    task = config.infer()
    assert task.model_available()
    _, data = task({"image": str(study["reference"]), "method": "model", "skip_writer": True, "device": "cpu"})
    pred = np.asarray(data["pred"])
    result = data["result"]
    assert pred.shape == (128, 128, 24) and pred.dtype == np.uint8
    assert set(np.unique(pred)) <= {0, 1, 2}
    assert not pred[~data["brain_mask"]].any()
    assert result["method"] == "model" and result["model_path"] == "shipped"
    voxel_ml = float(np.prod(data["study"].spacing_mm)) / 1000
    assert result["core_volume_ml"] == pytest.approx((pred == 1).sum() * voxel_ml, rel=1e-6)
    assert result["penumbra_volume_ml"] == pytest.approx((pred == 2).sum() * voxel_ml, rel=1e-6)
    assert result["mismatch_volume_ml"] == pytest.approx(result["hypoperfusion_volume_ml"] - result["core_volume_ml"], abs=1e-6)
    expected = result["core_volume_ml"] < 70 and result["defuse3_ratio_at_least_1_8"] and result["mismatch_volume_ml"] >= 15
    assert result["defuse3_imaging_criteria_met"] == expected


def test_mc_dropout_uncertainty_varies_between_passes_and_is_a_bounded_entropy(config, study):
    task = config.infer()
    figures = task.mc_dropout_uncertainty(str(study["reference"]), samples=3, device="cpu")
    assert 0.0 < figures["entropy_brain"] <= np.log(3) + 1e-6
    assert 0.0 <= figures["ischemic_fraction"] <= 1.0
    # dropout is off again afterwards: two plain inferences agree exactly
    _, a = task({"image": str(study["reference"]), "skip_writer": True, "device": "cpu"})
    _, b = task({"image": str(study["reference"]), "skip_writer": True, "device": "cpu"})
    assert np.array_equal(np.asarray(a["pred"]), np.asarray(b["pred"]))


class FakeStore:
    def __init__(self, infos, labelled=()):
        self.infos = infos
        self.labelled = set(labelled)
        self.refreshed = 0

    def refresh(self):
        self.refreshed += 1

    def get_unlabeled_images(self, *a, **k):
        return [i for i in self.infos if i not in self.labelled]

    def get_image_info(self, image_id):
        return self.infos[image_id]

    def get_image_uri(self, image_id):
        return f"/data/{image_id}.nii.gz"

    def update_image_info(self, image_id, info):
        self.infos[image_id].update(info)


class FakeInfer:
    def model_available(self):
        return True

    def get_path(self):
        return None


def test_scoring_stores_a_score_per_unlabelled_study_of_the_kind_and_skips_broken_ones():
    store = FakeStore({"a": {"kind": "ctp"}, "b": {"kind": "ctp"}, "c": {"kind": "mri"}, "bad": {"kind": "ctp"}, "done": {"kind": "ctp"}},
                      labelled={"done"})

    def score(path, samples, device):
        if "bad" in path:
            raise ValueError("missing modality")
        return {"entropy": 0.5 if "/a." in path else 0.2}

    scoring = StrokeUncertaintyScoring(FakeInfer(), score, key="u", score_name="entropy", kinds=("ctp",))
    summary = scoring({"device": "cpu"}, store)
    assert summary["executed"] == 2 and summary["failed"] == 1
    assert store.infos["a"]["u"] == 0.5 and store.infos["b"]["u"] == 0.2
    assert "u" not in store.infos["c"] and "u" not in store.infos["done"]
    again = scoring({"device": "cpu"}, store)  # same model: nothing to redo
    assert again["executed"] == 0 and again["skipped"] == 2


def test_most_uncertain_returns_the_highest_scored_unlabelled_study_of_its_kind():
    store = FakeStore({"a": {"kind": "ctp", "u": 0.1}, "b": {"kind": "ctp", "u": 0.7}, "c": {"kind": "ctp"},
                       "m": {"kind": "mri", "u": 9.0}, "l": {"kind": "ctp", "u": 5.0}}, labelled={"l"})
    strategy = MostUncertain(key="u", kinds=("ctp",))
    assert strategy({}, store) == {"id": "b", "u": 0.7}
    assert store.refreshed == 1
    unscored = FakeStore({"z": {"kind": "ctp"}, "y": {"kind": "ctp"}})
    assert strategy({}, unscored)["id"] == "y"  # no scores yet: the first by name
    assert strategy({}, FakeStore({"m": {"kind": "mri"}})) is None


def test_without_any_model_auto_falls_back_to_the_baseline_and_model_is_a_clear_error(study, tmp_path):
    from strokelabel.errors import StrokeLabelError

    config = CorePenumbra()
    config.init("core_penumbra", str(tmp_path), {}, None)  # neither a shipped nor a published model
    task = config.infer()
    assert not task.model_available()
    _, data = task({"image": str(study["reference"]), "skip_writer": True, "device": "cpu"})
    assert data["result"]["method"] == "baseline" and "no trained model" in data["result"]["method_reason"]
    with pytest.raises(StrokeLabelError, match="no trained"):
        task({"image": str(study["reference"]), "skip_writer": True, "device": "cpu", "method": "model"})


def test_a_finer_in_plane_grid_is_read_at_the_plan_spacing_and_labelled_on_its_own_grid(study, tmp_path):
    import shutil

    import nibabel as nib

    # The same study at twice the in-plane resolution: each voxel repeated 2 x 2, spacing halved.
    src = study["reference"].parent
    fine = tmp_path / src.relative_to(src.parents[1])
    fine.mkdir(parents=True)
    for path in src.iterdir():
        if path.name.endswith("_ctp.nii.gz") or not path.name.endswith(".nii.gz"):
            shutil.copy(path, fine / path.name) if path.is_file() else None
            continue
        img = nib.load(str(path))
        data = np.repeat(np.repeat(np.asarray(img.dataobj), 2, axis=0), 2, axis=1)
        affine = img.affine.copy()
        affine[:3, :2] /= 2
        nib.save(nib.Nifti1Image(data.astype(img.get_data_dtype()), affine), str(fine / path.name))

    shipped = CorePenumbra()
    shipped.init("core_penumbra", str(APP_MODEL_DIR), {}, None)  # the shipped model: smooth, meaningful probabilities
    if not shipped.infer().model_available():
        pytest.skip("no shipped core_penumbra model")
    task = shipped.infer()
    seen = []
    hook = shipped.network.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    try:
        _, coarse = task({"image": str(study["reference"]), "skip_writer": True, "device": "cpu"})
        seen.clear()
        _, finer = task({"image": str(fine / study["reference"].name), "skip_writer": True, "device": "cpu"})
    finally:
        hook.remove()
    assert set(seen) == {(128, 128)}  # the network sees the plan's 1.7 mm grid, not 256 x 256
    pred_fine, pred_coarse = np.asarray(finer["pred"]), np.asarray(coarse["pred"])
    assert pred_fine.shape == (256, 256, 24)
    agree = {c: 2 * np.sum((pred_fine[::2, ::2] == c) & (pred_coarse == c)) / max(1, np.sum(pred_fine[::2, ::2] == c) + np.sum(pred_coarse == c))
             for c in (1, 2)}
    assert agree[1] > 0.9 and agree[2] > 0.9, agree  # core and penumbra: the same label, on the finer grid
    assert finer["result"]["core_volume_ml"] == pytest.approx(coarse["result"]["core_volume_ml"], rel=0.1, abs=0.5)


def whole_brain_penumbra(task):
    """A model that calls every brain voxel penumbra: what a model lost on an unfamiliar scan may do."""

    def run_model(data, device):
        data["pred"] = data["study"].brain_mask.astype(np.uint8) * 2
        return data

    return run_model


def test_auto_serves_the_baseline_when_the_model_disagrees_with_the_physiology_and_says_why(config, study, monkeypatch):
    task = config.infer()
    monkeypatch.setattr(task, "run_model", whole_brain_penumbra(task))
    _, auto = task({"image": str(study["reference"]), "skip_writer": True, "device": "cpu"})
    _, baseline = task({"image": str(study["reference"]), "method": "baseline", "skip_writer": True, "device": "cpu"})
    result = auto["result"]
    assert result["method"] == "baseline" and "disagrees with the physiology" in result["method_reason"]
    assert result["review"] is True and "Tmax > 6 s" in result["review_reason"]
    assert result["quality"]["passed"] is False and result["quality"]["figures"]["hypoperfusion_ratio"] > 1.25
    np.testing.assert_array_equal(auto["pred"], baseline["pred"])
    assert result["hypoperfusion_volume_ml"] == baseline["result"]["hypoperfusion_volume_ml"]  # figures of what was served
    assert baseline["result"]["review"] is False and baseline["result"]["method_reason"] == "requested"


def test_the_model_asked_for_by_name_is_served_with_the_review_flag(config, study, monkeypatch):
    task = config.infer()
    monkeypatch.setattr(task, "run_model", whole_brain_penumbra(task))
    _, data = task({"image": str(study["reference"]), "method": "model", "skip_writer": True, "device": "cpu"})
    assert data["result"]["method"] == "model" and data["result"]["review"] is True
    assert (np.asarray(data["pred"]) == 2).sum() == data["study"].brain_mask.sum()


def test_auto_serves_a_model_that_agrees_with_the_physiology(config, study, monkeypatch):
    task = config.infer()

    def physics_model(data, device):  # a model that reproduces the physics exactly
        return task.run_baseline(data)

    monkeypatch.setattr(task, "run_model", physics_model)
    _, data = task({"image": str(study["reference"]), "skip_writer": True, "device": "cpu"})
    assert data["result"]["method"] == "model" and data["result"]["quality"]["passed"] and data["result"]["review"] is False


def test_a_scoring_round_is_bounded_and_the_rest_waits_for_the_next_one():
    store = FakeStore({f"s{i}": {"kind": "ctp"} for i in range(5)})
    scoring = StrokeUncertaintyScoring(FakeInfer(), lambda path, samples, device: {"entropy": 0.1}, key="u", score_name="entropy",
                                       kinds=("ctp",), max_studies=2)
    first = scoring({"device": "cpu"}, store)
    assert (first["executed"], first["deferred"]) == (2, 3)
    second = scoring({"device": "cpu"}, store)
    assert (second["executed"], second["skipped"], second["deferred"]) == (2, 2, 1)
    assert scoring({"device": "cpu", "max_studies": 10}, store)["executed"] == 1
    assert scoring({"device": "cpu", "force": True, "max_seconds": -1}, store)["executed"] == 0  # no time left in the round


def test_scoring_waits_while_a_clinicians_call_is_in_flight(tmp_path, monkeypatch):
    import threading
    import time

    from strokelabel import lifeline

    monkeypatch.setenv(lifeline.BUSY_ENV, str(tmp_path / "busy"))
    scored_at = []
    scoring = StrokeUncertaintyScoring(FakeInfer(), lambda path, samples, device: scored_at.append(time.monotonic()) or {"entropy": 0.1},
                                       key="u", score_name="entropy", kinds=("ctp",))
    store = FakeStore({"a": {"kind": "ctp"}})
    with lifeline.foreground_call():  # an infer in the server
        assert (tmp_path / "busy").exists()
        worker = threading.Thread(target=lambda: scoring({"device": "cpu"}, store))
        worker.start()
        time.sleep(0.6)
        assert not scored_at  # waiting
        released = time.monotonic()
    worker.join(timeout=10)
    assert not (tmp_path / "busy").exists() and scored_at and scored_at[0] >= released


def test_the_model_runs_on_the_gpu_when_one_is_present_and_on_the_cpu_otherwise(config, study, monkeypatch):
    """The device choice, with a mocked CUDA device (no GPU here): MONAI Label lists the machine's devices
    when the task is built and a request that names none (as the 3D Slicer and OHIF clients send it) takes
    the first, so the model runs on the GPU when torch sees one, else on the CPU."""
    devices = []

    def served_on(cuda_present: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_present)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: int(cuda_present))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Mocked GPU")
        fresh = CorePenumbra()  # a task built now, on this machine (config.infer() keeps the first one)
        fresh.init("core_penumbra", str(Path(config.shipped_path).parents[1]), {}, None)
        task = fresh.infer()
        real_run_model = task.run_model

        def run_model(data, device):
            devices.append(device)
            return real_run_model(data, "cpu")  # the choice is what is proven; the arithmetic stays on the CPU

        monkeypatch.setattr(task, "run_model", run_model)
        _, data = task({"image": str(study["reference"]), "method": "model", "skip_writer": True})
        assert data["result"]["method"] == "model"

    served_on(True)
    served_on(False)
    assert devices == ["cuda", "cpu"]


def test_pending_counts_what_a_scoring_run_would_score_and_the_server_starts_runs_only_for_those():
    from monailabel.interfaces.app import MONAILabelApp

    from main import StrokeApp

    store = FakeStore({"a": {"kind": "ctp"}, "b": {"kind": "ctp"}, "c": {"kind": "mri"}, "done": {"kind": "ctp"}}, labelled={"done"})
    scoring = StrokeUncertaintyScoring(FakeInfer(), lambda path, samples, device: {"entropy": 0.3}, key="u", score_name="entropy",
                                       kinds=("ctp",))
    other = StrokeUncertaintyScoring(FakeInfer(), lambda path, samples, device: {"entropy": 0.3}, key="v", score_name="entropy",
                                     kinds=("mri",))
    assert scoring.pending(store) == 2 and other.pending(store) == 1
    assert scoring({"device": "cpu"}, store)["executed"] == 2
    assert scoring.pending(store) == 0 and scoring.pending(store, force=True) == 2  # current scores; force scores all again
    store.infos["a"]["u_ts"] = -1  # a score of an earlier model
    assert scoring.pending(store) == 1

    server = StrokeApp.__new__(StrokeApp)  # only what async_scoring reads of the app: its scoring methods and datastore
    server._scoring_methods = {"ctp_u": scoring, "mri_v": other}
    server.datastore = lambda: store
    started = []
    original = MONAILabelApp.async_scoring
    MONAILabelApp.async_scoring = lambda self, method, params=None: started.append(method) or {"id": method}
    try:
        assert server.async_scoring(None) == {"ctp_u": {"id": "ctp_u"}, "mri_v": {"id": "mri_v"}}
        assert scoring({"device": "cpu"}, store)["executed"] == 1 and other({"device": "cpu"}, store)["executed"] == 1
        started.clear()
        assert server.async_scoring(None) == {} and started == []  # every score current: no process started
        assert server.async_scoring("ctp_u")["status"] == "SKIPPED" and started == []
        assert server.async_scoring("ctp_u", {"ctp_u": {"force": True}}) == {"id": "ctp_u"}
        store.infos["b"]["kind"] = "mri"  # unlabelled study of the other kind, never scored by it: only that method runs
        assert server.async_scoring(None) == {"mri_v": {"id": "mri_v"}}
    finally:
        MONAILabelApp.async_scoring = original
