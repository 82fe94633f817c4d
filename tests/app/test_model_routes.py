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
