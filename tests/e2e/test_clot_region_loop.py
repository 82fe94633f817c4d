"""clot_region's whole loop through the real MONAI Label server and its client: infer, save a
corrected clot, train both models, infer again with the published model; bad input is refused."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
from monailabel.client.client import MONAILabelClientException

from lib.configs.clot_region import SCORING, STRATEGY, UNCERTAINTY_KEY
from lib.trainers.reference_studies import DECISION_PHANTOMS
from strokelabel.naming import truth_path
from strokelabel.phantom import generate_dataset
from tests.e2e.server import REPO, http, running_server, wait_for_scoring, wait_for_training

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("cta_reference_phantoms")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    studies = tmp_path_factory.mktemp("clot-studies")
    generate_dataset(studies, per_kind=4, labelled_per_kind=2, size="small", seed=55, kinds=("cta",), progress=lambda *a, **k: None)
    try:
        with running_server(tmp_path_factory.mktemp("clot-server"), studies, models="clot_region", scoring=True) as srv:
            yield srv
    except RuntimeError as e:
        pytest.fail(str(e))


def unlabelled(client) -> list[str]:
    return sorted(k for k, v in client.datastore()["objects"].items() if "final" not in v["labels"])


def train(client, model: str, **params) -> dict:
    client.train_start(model, {"max_epochs": 1, "samples_per_study": 4, "device": "cpu", **params})
    status = wait_for_training(client)
    assert status["status"] == "DONE", status
    return status


def test_info_lists_the_task_and_its_three_trainers(server):
    info = server.client.info()
    assert info["models"]["clot_region"]["labels"] == {"clot": 1}
    assert {"clot_region", "clot_region_cta", "clot_region_classifier"} <= set(info["trainers"])
    assert STRATEGY in info["strategies"] and SCORING in info["scoring"]


def test_active_learning_picks_the_study_whose_clot_the_model_is_least_sure_of(server):
    if not (REPO / "apps" / "stroke" / "model" / "shipped" / "clot_region.pt").exists():
        pytest.skip("no shipped clot_region model to score with")
    wait_for_scoring(server)  # the start-up run
    http(server, "POST", f"/scoring/{SCORING}?run_sync=true")
    objects = server.client.datastore()["objects"]
    scores = {k: v["image"]["info"].get(UNCERTAINTY_KEY) for k, v in objects.items() if "final" not in v["labels"]}
    assert scores and all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores.values()), scores
    sample = server.client.next_sample(STRATEGY, {})
    assert sample["id"] == max(scores, key=scores.get) and sample[UNCERTAINTY_KEY] == pytest.approx(max(scores.values()))


def test_infer_correct_train_and_infer_again(server, tmp_path):
    client = server.client
    image_id = unlabelled(client)[0]
    label_file, result = client.infer("clot_region", image_id, {})
    shipped = "models" in result
    assert result["method"] == ("model" if shipped else "baseline") and len(result["regions"]) == 15

    # The neuroradiologist's correction: the true clot, saved as the final label (clot = 1).
    subject = image_id.split("_")[0][4:]
    truth = nib.load(str(truth_path(server.studies, subject, "01", "clot")))
    corrected = tmp_path / "corrected.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(truth.dataobj).astype(np.uint8), truth.affine), str(corrected))
    client.save_label(image_id, str(corrected), tag="final")
    assert image_id not in unlabelled(client)

    published = {}
    for model in ("clot_region", "clot_region_classifier"):
        train(client, model)
        stats = client.info()["train_stats"][model]
        published[model] = stats["published"]
        # three labels: two train; one of the site's decides beside the decision phantoms
        assert stats["train_studies"] == 2 and len(stats["site_held_out_studies"]) == 1, stats
        assert len(stats["val_studies"]) == 1 + DECISION_PHANTOMS, stats
        assert isinstance(stats["published"], bool) and stats["reason"]
        if stats["published"]:
            assert (server.app_dir / "model" / f"{model}.pt").exists()
        else:
            assert "kept aside" in stats["reason"]
        assert (server.app_dir / "model" / model / "versions" / f"{stats['version']}.pt").exists()

    label_file, result = client.infer("clot_region", unlabelled(client)[0], {"method": "model"})
    assert result["method"] == "model" and len(result["regions"]) == 15
    # no classifier ships: its flags appear once a trained one is published (not if it got nothing right)
    assert ("classifier_regions" in result) == published["clot_region_classifier"]
    if not published["clot_region_classifier"]:
        # An administrator may still put a kept-aside version in use by hand; the server picks it up.
        version = client.info()["train_stats"]["clot_region_classifier"]["version"]
        shutil.copy(server.app_dir / "model" / "clot_region_classifier" / "versions" / f"{version}.pt",
                    server.app_dir / "model" / "clot_region_classifier.pt")
        label_file, result = client.infer("clot_region", unlabelled(client)[0], {"method": "model"})
    assert result["models"]["classifier"] == "clot_region_classifier.pt" and len(result["classifier_regions"]) == 15
    assert all(0.0 <= r["probability"] <= 1.0 for r in result["classifier_regions"])
    assert result["regions_from"] == "segmented clot ∩ atlas"
    values = set(np.unique(np.asarray(nib.load(label_file).dataobj)).tolist())
    assert values <= {0, 1}


def test_a_clot_label_with_value_2_is_refused_and_nothing_is_saved(server, tmp_path):
    client = server.client
    image_id = unlabelled(client)[-1]
    reference = nib.load(str(next(server.studies.rglob(image_id + ".nii.gz"))))
    bad = np.zeros(reference.shape, np.uint8)
    bad[10:12, 10:12, 5] = 2
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(bad, reference.affine), str(path))
    with pytest.raises(MONAILabelClientException) as error:
        client.save_label(image_id, str(path), tag="final")
    assert "422" in error.value.msg and "values [2]" in error.value.msg
    assert image_id in unlabelled(client)
