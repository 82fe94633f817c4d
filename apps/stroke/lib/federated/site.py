"""One hospital's side of a federation: its own trainer, datastore and model folder.

The site trains with the app's trainer itself (``lib.trainers``: the same network, loss, transforms,
split and validation as a retraining started from the server), on the final labels of its own
datastore (``StrokeDatastore.datalist``: saved final labels, or a data set's expert mask; an AI
answer is never one), starting from the global model the aggregator sent. What leaves the site is
the difference between its locally trained weights and the global model it received (NVFlare's
client computes it, the job's privacy filters may then drop or perturb it), the number
of studies it trained on and its validation Dice on the selection studies; never a study, a label
or a study name.

When the federation ends, the global model comes home through ``offer_global``: the trainer's own
no-regression decision (``StrokeTrainTask.offer_candidate``), either in this process or through the
site's running MONAI Label server (``POST /model/<model>/federated``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

logger = logging.getLogger(__name__)

#: federated task -> (task config, trainer): ischemic_lesion federates its MRI route (DWI | ADC)
TRAINERS = {"ischemic_lesion": ("ischemic_lesion", "ischemic_lesion_mri"), "core_penumbra": ("core_penumbra", "core_penumbra")}
#: fewest final labels a site must hold to send an update: an update from one or two studies can memorise a patient
MIN_LABELS = 3


class SiteNotReady(Exception):
    """The site sends no update this round (too few labels, unreadable data); the reason is sent instead."""


def pseudonym(federation: str, site: str) -> str:
    """A site's name in records other sites read: stable within a federation, not the hospital's name."""
    return "site-" + hashlib.sha256(f"{federation}/{site}".encode()).hexdigest()[:8]


def trainable_state(state: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """The float tensors of a state dict as float32 arrays: what is averaged (integer buffers such as
    BatchNorm's batch counters stay local)."""
    import torch

    return {k: v.detach().cpu().float().numpy() for k, v in state.items() if torch.is_floating_point(v)}


def read_state(path: str | Path) -> Dict[str, Any]:
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=False)
    return state.get("model", state) if isinstance(state, dict) else state


def write_checkpoint(path: str | Path, base: Dict[str, Any], params: Dict[str, np.ndarray]) -> Path:
    """``base`` (a state dict) with the float entries of ``params``, as the app stores a model (``{"model": ...}``)."""
    import torch

    unknown = sorted(set(params) - set(base))
    if unknown:
        raise ValueError(f"the global model has entries this network does not have: {unknown[:5]}")
    state = {k: (torch.as_tensor(np.asarray(params[k]), dtype=torch.float32).reshape(v.shape) if k in params else v) for k, v in base.items()}
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer)
    from strokelabel.derived import atomic_write_bytes

    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


@dataclass
class Site:
    """A site of the federation: ``model_dir`` is its app's model folder (``apps/stroke/model``), ``studies``
    its datastore folder, ``task`` a key of ``TRAINERS``."""

    model_dir: str
    studies: str
    task: str
    min_labels: int = MIN_LABELS
    request: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TRAINERS:
            raise ValueError(f"no federated job for task {self.task!r}; tasks: {sorted(TRAINERS)}")
        self.config_name, self.model = TRAINERS[self.task]
        self._trainer = None

    @property
    def trainer(self):
        if self._trainer is None:
            from main import build_task_configs

            config = build_task_configs(self.model_dir, {}, self.config_name)[self.config_name]
            trainers = config.trainer()
            self._trainer = trainers[self.model] if isinstance(trainers, dict) else trainers
        return self._trainer

    def datastore(self):
        from lib.datastore import StrokeDatastore

        return StrokeDatastore(self.studies)

    def final_labels(self) -> int:
        """The site's final labels of this task's study kind (what its trainer would train on)."""
        return len([d for d in self.datastore().datalist() if d.get("kind") in self.trainer._kinds])

    def start_state(self) -> Dict[str, Any]:
        """The model in use at this site (published, else shipped): where a federation starts."""
        path = self.trainer._model_in_use
        if not path:
            raise SiteNotReady(f"{self.model} has no model in use at this site (no shipped or published model)")
        return read_state(path)

    def train_round(self, global_params: Dict[str, np.ndarray], fedprox_mu: float | None = None) -> Tuple[Dict[str, np.ndarray], int, Dict[str, float]]:
        """Local training from the global model: (local weights, studies trained on, metrics). NVFlare's
        client turns the weights into their difference from the global model before they leave. ``fedprox_mu``
        (sent by a FedProx aggregator) adds the proximal term to the trainer's loss."""
        n = self.final_labels()
        if n < self.min_labels:
            raise SiteNotReady(f"{n} final {self.task} labels at this site, fewer than the {self.min_labels} needed to send an update")
        with tempfile.TemporaryDirectory(prefix="fl-round-") as tmp:
            start = write_checkpoint(Path(tmp) / "global.pt", self.start_state(), global_params)
            request = {"device": "cpu", "multi_gpu": False, "dataset": "CacheDataset", "dataloader": "DataLoader", **self.request}
            stats = self.trainer.train_round(request, self.datastore(), str(start), fedprox_mu=fedprox_mu)
        if not stats.get("checkpoint"):
            raise SiteNotReady("the local run produced no checkpoint")
        local = trainable_state(read_state(stats["checkpoint"]))
        best = stats.get("selection_best") or {}
        return {k: v for k, v in local.items() if k in global_params}, int(stats["train_studies"]), {"val_dice": float(best.get("dice", 0.0)), "train_studies": float(stats["train_studies"])}

    def offer_global(self, global_params: Dict[str, np.ndarray], origin: Dict[str, Any], server_url: str | None = None,
                     token: str | None = None) -> Dict[str, Any]:
        """The global model as a candidate at this site, decided by its own no-regression rule; through the
        site's running server when ``server_url`` is given (its admin route), else in this process."""
        version = f"{self.model}_fl_{origin.get('federation', 'federation')}_r{origin.get('round', 0)}"
        version = "".join(c if c.isalnum() or c in "_.-" else "-" for c in version)[:200]
        with tempfile.TemporaryDirectory(prefix="fl-home-") as tmp:
            candidate = write_checkpoint(Path(tmp) / "global.pt", self.start_state(), global_params)
            if server_url:
                return offer_to_server(server_url, self.model, candidate, version, origin, token)
            return self.trainer.offer_candidate({"device": "cpu", **self.request}, self.datastore(), str(candidate), version, origin)


#: how long a site's client keeps trying to reach its own server to hand over the global model (the server may be
#: restarting when the federation ends: the model must not be lost for that)
SERVER_WAIT_S = float(os.environ.get("STROKELABEL_FL_SERVER_WAIT_S", "300"))


def offer_to_server(server_url: str, model: str, candidate: Path, version: str, origin: Dict[str, Any], token: str | None = None,
                    wait_s: float = SERVER_WAIT_S) -> Dict[str, Any]:
    """``POST /model/<model>/federated`` on the site's MONAI Label server (admin): the server decides. A server that
    does not answer yet (refused connection: starting or restarting) is tried again for up to ``wait_s`` seconds."""
    import requests

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.time() + wait_s
    while True:
        try:
            with open(candidate, "rb") as f:
                answer = requests.post(f"{server_url.rstrip('/')}/model/{model}/federated", headers=headers, timeout=1800,
                                       files={"file": (f"{version}.pt", f, "application/octet-stream")},
                                       data={"version": version, "origin": json.dumps(origin)})
            break
        except requests.ConnectionError as error:
            if time.time() >= deadline:
                raise RuntimeError(f"the site's server at {server_url} did not answer in {wait_s:.0f} s: {error}") from error
            time.sleep(2.0)
    if answer.status_code != 200:
        raise RuntimeError(f"the site's server refused the global model: HTTP {answer.status_code} {answer.text[:300]}")
    return answer.json()


def app_on_path() -> None:
    """Make the app's ``lib`` and ``main`` importable (a client script runs outside the server)."""
    import sys

    app_dir = str(Path(__file__).resolve().parents[2])
    repo = str(Path(app_dir).parents[1])
    for path in (app_dir, repo):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ.setdefault("MONAI_LABEL_TRACKING_ENABLED", "false")
