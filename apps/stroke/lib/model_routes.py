"""The model lifecycle over HTTP, in front of MONAI Label's own ``/model`` endpoints (lib/model_versions.py).

- ``GET /model/<model>/versions`` (any user): the versions with their figures, training data, date, who,
  the publish decision, which one is in use and which are retired; the shipped starting model.
- ``POST /model/<model>/versions/<version>/use`` (admin): put a version (or ``shipped``) back in use.
- ``DELETE /model/<model>`` (admin): MONAI Label renames the file in use, which was the *shipped* model
  when no site model was published. Here it retires the site's published model (kept as a version) and
  puts the previous one back in use, else the shipped one; the shipped file is never touched.
- ``PUT /model/<model>`` (admin; MONAI Label lets an annotator copy any upload over the model in use): the
  upload must be plain weights that fit the model's network; it becomes a version and is put in use.
- ``POST /model/<model>/federated`` (admin): a federation's global model (lib/federated) as a candidate; it
  becomes a version and is put in use only by the model's own no-regression decision, as a retraining's
  candidate is (lib/trainers/stroke_train.py); its record names the federation, round and sites.
- ``POST /train/<model>``: as MONAI Label's, with who started the run passed to the trainer, so the
  version it makes records it; a run while another runs is a 409 saying so (MONAI Label's is a 429).

``<model>`` is a model's own name (a trainer: ``core_penumbra``, ``ischemic_lesion_mri``, ...); a task with
one model may be named by the task. Every change of the model in use is a line in the audit log.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import tempfile
import threading
import time
from typing import Dict, Iterable, Optional

from fastapi import Depends, Form, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User

from lib import model_versions
from lib.checkpoints import UnusableModel, load_weights

logger = logging.getLogger(__name__)


def lifecycle_models(trainers: Dict) -> Dict[str, object]:
    """Model name -> its trainer, for the trainers that publish versions (lib/trainers/stroke_train.py)."""
    from lib.trainers.stroke_train import StrokeTrainTask

    return {t._task_name: t for t in trainers.values() if isinstance(t, StrokeTrainTask)}


def versions_in_use(model_dir: str, models: Iterable[str]) -> Dict[str, Optional[str]]:
    """``{model: version in use}`` (``shipped``, a version name, ``unversioned`` or None: the baseline serves)."""
    return {m: model_versions.in_use(model_dir, m)["version"] for m in models}


def who(user: User) -> str:
    """The user as the audit log names them (MONAI Label's stand-in user when access control is off is nobody)."""
    return user.username if settings.MONAI_LABEL_AUTH_ENABLE else "anonymous"


def add_model_routes(app, stroke_app) -> None:
    admin = RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)
    any_user = RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)
    model_dir = stroke_app.model_dir

    def trainers() -> Dict[str, object]:
        found = {}
        for models in stroke_app.task_models.values():
            found.update(models)
        return found

    def resolve(model: str) -> str:
        known = trainers()
        if model in known:
            return model
        of_task = sorted(stroke_app.task_models.get(model, {}))
        if len(of_task) == 1:
            return of_task[0]
        if of_task:
            raise HTTPException(status_code=400, detail=f"task {model} has several models {of_task}: name one")
        raise HTTPException(status_code=404, detail=f"no model {model!r}; models: {sorted(known)}")

    def lifecycle(call):
        try:
            return call()
        except model_versions.VersionError as e:
            raise HTTPException(status_code=e.status, detail=str(e)) from e

    async def list_versions(model: str, user: User = Depends(any_user)):
        name = resolve(model)
        return lifecycle(lambda: model_versions.list_versions(model_dir, name))

    async def use_version(model: str, version: str, user: User = Depends(admin)):
        name = resolve(model)
        return lifecycle(lambda: model_versions.use_version(model_dir, name, version, who(user), method="POST",
                                                            path=f"/model/{name}/versions/{version}/use"))

    async def retire(model: str, user: User = Depends(admin)):
        name = resolve(model)
        return lifecycle(lambda: model_versions.retire(model_dir, name, who(user), method="DELETE", path=f"/model/{name}"))

    async def upload(model: str, file: UploadFile, user: User = Depends(admin)):
        name = resolve(model)
        data = await file.read()
        check_weights(data, trainers()[name]._network, name)
        version = f"{name}_upload_{time.strftime('%Y%m%d_%H%M%S')}"
        record = {"created": model_versions.now_iso(), "origin": f"uploaded (PUT /model/{name})", "uploaded_by": who(user),
                  "file_name": os.path.basename(file.filename or "")}
        lifecycle(lambda: model_versions.add_version(model_dir, name, version, data, record))
        return lifecycle(lambda: model_versions.use_version(model_dir, name, version, who(user), action="upload", method="PUT",
                                                            path=f"/model/{name}"))

    offer_lock = threading.Lock()  # one federated candidate scored at a time (the trainer keeps the split it decides on)

    async def federated(model: str, file: UploadFile, version: str = Form(...), origin: str = Form(...), user: User = Depends(admin)):
        name = resolve(model)
        data = await file.read()
        check_weights(data, trainers()[name]._network, name)
        try:
            record = json.loads(origin)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=f"origin is not JSON ({e})") from e
        if not isinstance(record, dict) or not record.get("federation") or "round" not in record:
            raise HTTPException(status_code=422, detail="origin must be a JSON object naming the federation and the round")
        if not model_versions.VERSION_NAME.match(version or ""):
            raise HTTPException(status_code=400, detail=f"{version!r} is not a version name")
        if (model_versions.versions_dir(model_dir, name) / f"{version}.pt").exists():
            raise HTTPException(status_code=409, detail=f"{name} already has a version {version}")
        trainer = trainers()[name]

        def decide():
            with offer_lock, tempfile.TemporaryDirectory() as folder:
                candidate = os.path.join(folder, f"{version}.pt")
                with open(candidate, "wb") as f:
                    f.write(data)
                return trainer.offer_candidate({"started_by": who(user)}, stroke_app.datastore(), candidate, version, record)

        from lib.errors import http_errors

        with http_errors():  # a site without a final label of the task's kind: a 4xx naming it
            return await run_in_threadpool(decide)

    async def train(model: str, params: Optional[dict] = None, run_sync: Optional[bool] = False, enqueue: Optional[bool] = False,
                    user: User = Depends(admin)):
        from monailabel.endpoints.train import run_model

        from lib.errors import http_errors

        trainer = (getattr(stroke_app, "_trainers", None) or {}).get(model)  # MONAI Label's trainers by name (an unknown one: its error below)
        if hasattr(trainer, "site_labels") and not getattr(stroke_app, "on_pacs", False):  # a PACS' label list fetches the labelled studies: the run's to wait for
            with http_errors():  # no final label of the task's kind: a 4xx naming it, before a training process starts
                trainer.site_labels(stroke_app.datastore())
        # Who started the run goes with it (never what a client claims): the version it makes records it.
        try:
            return run_model(model, {**(params or {}), "started_by": who(user)}, run_sync, enqueue)
        except HTTPException as e:
            # MONAI Label answers 429 "++++++++++ Train Task is Already Running": a conflict with the run going on, not
            # too many requests; the viewer shows this reason.
            if e.status_code == 429:
                raise HTTPException(status_code=409, detail=f"a training is already running on this server: {model} can start when it "
                                                            "has ended (GET /train/ shows it; an admin may stop it: DELETE /train/)") from e
            raise

    routes = [
        ("/model/{model}/versions", list_versions, ["GET"], "A model's versions, their figures and which is in use"),
        ("/model/{model}/versions/{version}/use", use_version, ["POST"], "Put a version (or the shipped model) back in use"),
        ("/model/{model}", retire, ["DELETE"], "Retire the published model; the previous one (else the shipped one) serves"),
        ("/model/{model}", upload, ["PUT"], "Upload weights as a new version and put it in use"),
        ("/model/{model}/federated", federated, ["POST"], "A federation's global model as a candidate, put in use only if not worse"),
        ("/train/{model}", train, ["POST"], "Run training of a model"),
    ]
    for path, handler, methods, summary in routes:
        app.add_api_route(path, handler, methods=methods, tags=["Model"], summary=summary)
        app.router.routes.insert(0, app.router.routes.pop())  # in front of MONAI Label's routes of the same path


def check_weights(data: bytes, network, name: str) -> None:
    """422 unless ``data`` is plain weights (no pickled code: ``weights_only``) that fit ``name``'s network."""
    import torch

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # any refusal of torch's safe loader: not plain weights
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise HTTPException(status_code=422, detail=f"the upload for {name} is not a plain PyTorch weights file ({first})") from e
    if not isinstance(state, dict):
        raise HTTPException(status_code=422, detail=f"the upload for {name} holds a {type(state).__name__}, not a state dict")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"{name}.pt")
        with open(path, "wb") as f:
            f.write(data)
        try:
            load_weights(copy.deepcopy(network), path)
        except UnusableModel as e:
            raise HTTPException(status_code=422, detail=f"the upload does not fit {name}'s network: {e}") from e
