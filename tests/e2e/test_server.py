"""The stroke app through the real MONAI Label server and its own client (the API Slicer and OHIF use)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from monailabel.client.client import MONAILabelClientException

from strokelabel.guard import NOT_SERVED_BY_AUTO
from strokelabel.naming import truth_path
from tests.e2e.broken_studies import BROKEN
from tests.e2e.server import REPO, running_server

pytestmark = pytest.mark.e2e

TASKS = {"core_penumbra": {"core": 1, "penumbra": 2}, "ischemic_lesion": {"lesion": 1}, "clot_region": {"clot": 1}}
SHIPPED = {"core_penumbra": "core_penumbra.pt", "ischemic_lesion": "ischemic_lesion_{kind}.pt", "clot_region": "clot_region.pt"}


def unlabelled_image(client, kind: str) -> str:
    images = client.datastore()["objects"]
    return next(k for k, v in sorted(images.items()) if v["image"]["info"]["kind"] == kind and "final" not in v["labels"]
                and not k.startswith("sub-broken"))


def test_info_lists_the_three_tasks_with_their_label_numbers(client):
    info = client.info()
    assert info["name"] == "StrokeLabel"
    for task, labels in TASKS.items():
        assert info["models"][task]["labels"] == labels
        assert info["models"][task]["dimension"] == 3
    assert {"random", "first"} <= set(info["strategies"])


def test_datastore_lists_one_image_per_study_found_in_the_bids_tree(client, server):
    objects = client.datastore()["objects"]
    studies = {p.name for p in server.studies.glob("sub-*")}
    assert len(objects) == len(studies) == 3 * 3 + len(BROKEN)
    assert all(v["image"]["info"]["relpath"].startswith("sub-") for v in objects.values())
    kinds = [v["image"]["info"]["kind"] for v in objects.values()]
    assert kinds.count("ctp") == 3 + len(BROKEN) and kinds.count("mri") == 3 and kinds.count("cta") == 3
    labelled = [k for k, v in objects.items() if "final" in v["labels"]]
    assert len(labelled) == 3 * 2


@pytest.mark.parametrize(
    "task,kind,modality",
    [("core_penumbra", "ctp", "tmax"), ("ischemic_lesion", "mri", "dwi"), ("ischemic_lesion", "ctp", "tmax"), ("clot_region", "cta", "cta")],
)
def test_each_task_infers_a_label_on_the_study_grid_with_its_figures(client, server, task, kind, modality):
    image_id = unlabelled_image(client, kind)
    label_file, result = client.infer(task, image_id, {})
    reference = nib.load(str(next(server.studies.rglob(image_id + ".nii.gz"))))
    label = nib.load(label_file)
    assert label.shape == reference.shape
    assert np.allclose(label.affine, reference.affine, atol=1e-3)
    values = set(np.unique(np.asarray(label.dataobj)).tolist())
    assert values <= {0, *TASKS[task].values()}
    # Starting models ship in model/shipped; auto serves one when the physiology guard passes it, else the
    # baseline; a task without one runs its baseline and says so.
    shipped = SHIPPED[task].format(kind=kind)
    if (REPO / "apps" / "stroke" / "model" / "shipped" / shipped).exists():
        trusted = result["quality"].get("kind") not in NOT_SERVED_BY_AUTO  # models auto never serves (guard.NOT_SERVED_BY_AUTO)
        assert result["method"] == ("model" if result["quality"]["passed"] and trusted else "baseline"), result
        assert result["review"] is (not result["quality"]["passed"]) and result["method_reason"]
    else:
        assert result["method"] == "baseline" and "no trained" in result["method_reason"]
    assert result["study_kind"] == kind
    if task == "core_penumbra":
        for key in ("core_volume_ml", "penumbra_volume_ml", "mismatch_volume_ml", "mismatch_ratio"):
            assert key in result
        assert result["core_volume_ml"] >= 0 and result["mismatch_volume_ml"] >= 0
    elif task == "ischemic_lesion":
        assert result["lesion_volume_ml"] >= 0 and result["lesion_count"] >= 0
        if kind == "mri":
            assert "10^-3" in result["adc_unit_assumption"] or "10^-6" in result["adc_unit_assumption"]
    else:
        assert len(result["regions"]) == 15
        assert all(0.0 <= r["probability"] <= 1.0 for r in result["regions"])


def test_core_penumbra_baseline_finds_the_phantom_core(client, server):
    image_id = unlabelled_image(client, "ctp")
    label_file, result = client.infer("core_penumbra", image_id, {"method": "baseline"})
    subject = image_id.split("_")[0][4:]
    truth = np.asarray(nib.load(str(truth_path(server.studies, subject, "01", "corepenumbra"))).dataobj)
    pred = np.asarray(nib.load(label_file).dataobj)
    hypo_truth, hypo_pred = truth > 0, pred > 0
    dice = 2 * (hypo_truth & hypo_pred).sum() / max(hypo_truth.sum() + hypo_pred.sum(), 1)
    assert dice > 0.5, f"hypoperfusion Dice {dice:.2f}"


def test_a_site_without_any_model_gets_the_baseline_and_a_clear_error_for_the_model(tmp_path, studies_dir):
    with running_server(tmp_path, studies_dir, models="core_penumbra", shipped_models=False) as bare:
        image_id = unlabelled_image(bare.client, "ctp")
        _, result = bare.client.infer("core_penumbra", image_id, {})
        assert result["method"] == "baseline" and "no trained model" in result["method_reason"]
        with pytest.raises(MONAILabelClientException) as error:
            bare.client.infer("core_penumbra", image_id, {"method": "model"})
        assert "422" in error.value.msg and "no trained" in error.value.msg


@pytest.mark.parametrize("subject", sorted(BROKEN))
def test_a_broken_study_gets_a_422_naming_the_problem_and_the_server_keeps_serving(client, subject):
    image_id = f"sub-{subject}_ses-01_tmax"
    with pytest.raises(MONAILabelClientException) as error:
        client.infer("core_penumbra", image_id, {})
    message = error.value.msg
    assert "Status: 422" in message
    assert BROKEN[subject][1] in message
    assert f"sub-{subject}_ses-01" in message
    assert client.info()["name"] == "StrokeLabel"


def test_only_datastore_studies_are_read_a_server_path_or_an_unknown_id_is_a_404_naming_it(client, server, tmp_path):
    """An infer names a datastore id, never a file: a path on the server (inside the served folder or out of it), a
    traversal and an unknown id are each a 404 naming what was asked, and nothing is read."""
    served = sorted(server.studies.glob("**/*_tmax.nii.gz"))[0]  # a real study file, given as a path
    outside = tmp_path / "sub-outside_ses-01_tmax.nii.gz"
    outside.write_bytes(served.read_bytes())
    for image in (str(served), str(outside), "../../../etc/passwd", "sub-nobody_ses-01_tmax"):
        with pytest.raises(MONAILabelClientException) as error:
            client.infer("core_penumbra", image, {"method": "baseline"})
        assert "Status: 404" in error.value.msg and f"no study {image!r} in the datastore" in error.value.msg, error.value.msg
    assert client.info()["name"] == "StrokeLabel"


def test_a_task_on_the_wrong_kind_of_study_is_a_clear_error(client):
    with pytest.raises(MONAILabelClientException) as error:
        client.infer("core_penumbra", unlabelled_image(client, "mri"), {})
    assert "422" in error.value.msg and "missing modality" in error.value.msg


def test_saved_correction_becomes_the_final_label_and_leaves_the_unlabelled_pool(client, server, tmp_path):
    image_id = unlabelled_image(client, "ctp")
    label_file, _ = client.infer("core_penumbra", image_id, {})
    corrected = nib.load(label_file)
    data = np.asarray(corrected.dataobj).astype(np.uint8)
    data[0:4, 0:4, 0] = 0  # the clinician's edit
    path = tmp_path / "corrected.nii.gz"
    nib.save(nib.Nifti1Image(data, corrected.affine), str(path))
    response = client.save_label(image_id, str(path), tag="final", params={"label_info": [{"name": "core", "idx": 1}]})
    assert response["image"] == image_id
    objects = client.datastore()["objects"]
    assert "final" in objects[image_id]["labels"]
    saved = np.asarray(nib.load(str(server.studies / "labels" / "final" / f"{image_id}.nii.gz")).dataobj)
    assert np.array_equal(saved, data)


def test_a_label_with_wrong_values_or_grid_is_refused_and_the_saved_label_is_kept(client, server, tmp_path):
    image_id = next(k for k, v in sorted(client.datastore()["objects"].items()) if "final" in v["labels"] and v["image"]["info"]["kind"] == "mri")
    saved_path = server.studies / "labels" / "final" / f"{image_id}.nii.gz"
    before = saved_path.read_bytes()
    reference = nib.load(str(next(server.studies.rglob(image_id + ".nii.gz"))))

    wrong_values = np.full(reference.shape, 7, dtype=np.uint8)
    bad = tmp_path / "values.nii.gz"
    nib.save(nib.Nifti1Image(wrong_values, reference.affine), str(bad))
    with pytest.raises(MONAILabelClientException) as error:
        client.save_label(image_id, str(bad), tag="final")
    assert "422" in error.value.msg and "values [7]" in error.value.msg

    wrong_grid = np.zeros(tuple(s - 2 for s in reference.shape), dtype=np.uint8)
    bad = tmp_path / "grid.nii.gz"
    nib.save(nib.Nifti1Image(wrong_grid, reference.affine), str(bad))
    with pytest.raises(MONAILabelClientException) as error:
        client.save_label(image_id, str(bad), tag="final")
    assert "422" in error.value.msg and "grids do not match" in error.value.msg

    assert saved_path.read_bytes() == before


@pytest.mark.parametrize("strategy", ["first", "random"])
def test_active_learning_returns_an_unlabelled_study(client, strategy):
    objects = client.datastore()["objects"]
    sample = client.next_sample(strategy, {})
    assert sample["id"] in objects
    assert "final" not in objects[sample["id"]]["labels"]
    assert sample["path"].endswith(sample["id"] + ".nii.gz")


def test_server_log_reports_latencies_for_each_inference(server):
    log = server.log.read_text()
    assert "Latencies => Total" in log
