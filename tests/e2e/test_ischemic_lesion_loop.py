"""ischemic_lesion through the real server and client, on phantoms in the ISLES'22 layout:
infer (MDANet on DWI+ADC, the Siamese model on DWI alone), save a correction, train, infer
again with the decision reported; bad input to train is a clear error and the model in use stays."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
from monailabel.client.client import MONAILabelClientException

from lib.trainers.reference_studies import DECISION_PHANTOMS
from strokelabel.phantom.isles_layout import generate_isles_study
from tests.e2e.server import running_server, wait_for_training

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("mri_reference_phantoms")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("isles22")
    for i in range(1, 5):
        generate_isles_study(root, i, seed=300 + i)
    # case 5 ships DWI only (no ADC, no mask): a single-modality study
    only = generate_isles_study(tmp_path_factory.mktemp("scratch"), 5, seed=305)
    target = root / "rawdata" / "sub-strokecase0005" / "ses-0001" / "dwi"
    target.mkdir(parents=True)
    shutil.copy(only["paths"]["dwi"], target / only["paths"]["dwi"].name)
    try:
        with running_server(tmp_path_factory.mktemp("il_server"), root, models="ischemic_lesion") as srv:
            yield srv
    except RuntimeError as e:
        pytest.fail(str(e))


def test_ischemic_lesion_infer_correct_train_infer_loop(server, tmp_path):
    client = server.client
    info = client.info()
    assert info["models"]["ischemic_lesion"]["labels"] == {"lesion": 1}
    assert {"ischemic_lesion_mri", "ischemic_lesion_ctp", "ischemic_lesion_siamese"} <= set(info["trainers"])
    assert "ischemic_lesion_most_uncertain" in info["strategies"]
    objects = client.datastore()["objects"]
    assert len(objects) == 5

    # MRI with DWI + ADC: MDANet from the shipped starting model, the ADC unit stated
    image_id = "sub-strokecase0001_ses-0001_dwi"
    label_file, result = client.infer("ischemic_lesion", image_id, {})
    assert result["method"] == "model" and result["route"] == "mri"
    assert result["model_file"] == "shipped/ischemic_lesion_mri.pt"
    assert "10^-3" in result["adc_unit_assumption"] or "10^-6" in result["adc_unit_assumption"]
    reference = nib.load(str(next(server.studies.rglob(image_id + ".nii.gz"))))
    label = nib.load(label_file)
    assert label.shape == reference.shape and np.allclose(label.affine, reference.affine, atol=1e-3)

    # DWI alone: the hemispheric Siamese model
    _, single = client.infer("ischemic_lesion", "sub-strokecase0005_ses-0001_dwi", {})
    assert single["route"] == "siamese" and "Siamese" in single["model"] and single["method"] == "model"

    # the clinician corrects case 1 (the shipped mask of the other cases stays their final label)
    data = np.asarray(label.dataobj).astype(np.uint8)
    data[:4, :4, 0] = 0
    corrected = tmp_path / "corrected.nii.gz"
    nib.save(nib.Nifti1Image(data, label.affine), str(corrected))
    client.save_label(image_id, str(corrected), tag="final")

    # bad input to train: no CTP study has a label -> a clear 4xx at once (no training process is started), nothing published
    model_in_use = server.app_dir / "model" / "ischemic_lesion_ctp.pt"
    with pytest.raises(MONAILabelClientException) as refused:
        client.train_start("ischemic_lesion_ctp", {"max_epochs": 1})
    message = refused.value.msg
    assert "Status: 422" in message and "needs a final label for at least 1 CTP study" in message, message
    assert client.train_status(check_if_running=True) is False  # nothing runs
    assert not model_in_use.exists()

    # A short run as a client may ask for one (one epoch, four slices a study): the loop and the publish decision are
    # what is checked here, not what a longer run learns.
    client.train_start("ischemic_lesion_mri", {"max_epochs": 1, "slices_per_study": 4, "device": "cpu", "dataset": "Dataset",
                                               "val_split": 0.25})
    status = wait_for_training(client)
    assert status["status"] == "DONE", status
    stats = client.info()["train_stats"]["ischemic_lesion_mri"]
    # four labels: three train; one of the site's decides beside the decision phantoms
    assert stats["train_studies"] == 3 and len(stats["site_held_out_studies"]) == 1
    assert len(stats["val_studies"]) == 1 + DECISION_PHANTOMS, stats["val_studies"]
    assert isinstance(stats["published"], bool) and stats["reason"]
    assert stats["candidate_val_dice"] is not None and stats["in_use_val_dice"] is not None  # compared with the shipped model
    published = server.app_dir / "model" / "ischemic_lesion_mri.pt"
    assert published.exists() == stats["published"]

    _, again = client.infer("ischemic_lesion", image_id, {})
    expected = "ischemic_lesion_mri.pt" if stats["published"] else "shipped/ischemic_lesion_mri.pt"
    assert again["model_file"] == expected and again["route"] == "mri"

    # the hemispheric Siamese model trains through the server too, from the DWI of the same studies
    client.train_start("ischemic_lesion_siamese", {"max_epochs": 1, "slices_per_study": 4, "device": "cpu", "dataset": "Dataset",
                                                   "val_split": 0.25})
    status = wait_for_training(client)
    assert status["status"] == "DONE", status
    siamese = client.info()["train_stats"]["ischemic_lesion_siamese"]
    assert siamese["train_studies"] == 3 and siamese["candidate_val_dice"] is not None and siamese["in_use_val_dice"] is not None
    assert (server.app_dir / "model" / "ischemic_lesion_siamese" / "versions" / f"{siamese['version']}.pt").exists()
    _, single_again = client.infer("ischemic_lesion", "sub-strokecase0005_ses-0001_dwi", {})
    expected = "ischemic_lesion_siamese.pt" if siamese["published"] else "shipped/ischemic_lesion_siamese.pt"
    assert single_again["route"] == "siamese" and single_again["model_file"] == expected
