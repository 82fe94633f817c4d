"""The model routes' answers that need no trained model (lib/model_routes.py), on a bare FastAPI app."""

from __future__ import annotations

from types import SimpleNamespace

from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from lib.model_routes import add_model_routes


def test_a_training_started_while_another_runs_is_a_409_saying_so_and_who_started_a_run_goes_with_it(tmp_path, monkeypatch):
    import monailabel.endpoints.train as monailabel_train

    started = []

    def run_model(model, params, run_sync, enqueue):  # MONAI Label's: a second run while one runs is its 429
        if started:
            raise HTTPException(status_code=429, detail="++++++++++ Train Task is Already Running")
        started.append((model, params))
        return {"id": "run-1", "status": "SUBMITTED"}

    monkeypatch.setattr(monailabel_train, "run_model", run_model)
    app = FastAPI()
    add_model_routes(app, SimpleNamespace(model_dir=str(tmp_path), task_models={}))
    client = TestClient(app)

    first = client.post("/train/ischemic_lesion_mri", json={"max_epochs": 1})
    assert first.status_code == 200 and first.json()["status"] == "SUBMITTED"
    assert started == [("ischemic_lesion_mri", {"max_epochs": 1, "started_by": "anonymous"})]
    second = client.post("/train/ischemic_lesion_mri", json={"max_epochs": 1})
    assert second.status_code == 409, second.text
    assert second.json()["detail"].startswith("a training is already running on this server: ischemic_lesion_mri can start when it has ended")
    assert len(started) == 1


def test_a_training_without_a_final_label_of_its_kind_is_a_422_naming_it_and_no_training_process_starts(tmp_path, monkeypatch):
    import monailabel.endpoints.train as monailabel_train

    from lib.trainers.ischemic_lesion import IschemicLesionTrain

    started = []
    monkeypatch.setattr(monailabel_train, "run_model", lambda model, params, run_sync, enqueue: started.append(model) or {"status": "SUBMITTED"})
    trainer = IschemicLesionTrain.__new__(IschemicLesionTrain)  # only what the check reads: the task's name and study kinds
    trainer._task_name, trainer._kinds = "ischemic_lesion_ctp", ("ctp",)
    labels = [{"image": "/s/sub-m_ses-1_dwi.nii.gz", "label": "/s/labels/final/sub-m_ses-1_dwi.nii.gz", "kind": "mri"}]
    store = SimpleNamespace(datalist=lambda: list(labels))
    app = FastAPI()
    add_model_routes(app, SimpleNamespace(model_dir=str(tmp_path), task_models={}, _trainers={"ischemic_lesion_ctp": trainer},
                                          datastore=lambda: store))
    client = TestClient(app)

    refused = client.post("/train/ischemic_lesion_ctp", json={"max_epochs": 1})
    assert refused.status_code == 422, refused.text
    assert "ischemic_lesion_ctp needs a final label for at least 1 CTP study" in refused.json()["detail"] and started == []
    labels.append({"image": "/s/sub-c_ses-1_tmax.nii.gz", "label": "/s/labels/final/sub-c_ses-1_tmax.nii.gz", "kind": "ctp"})
    assert client.post("/train/ischemic_lesion_ctp", json={"max_epochs": 1}).status_code == 200 and started == ["ischemic_lesion_ctp"]
