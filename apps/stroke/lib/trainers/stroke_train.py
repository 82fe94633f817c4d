"""What every stroke trainer shares: labels checked before training, a split that holds with one to
three labels, versioned models, and a model in use that only a model at least as good replaces.

MONAI Label's BasicTrainTask runs the loop (ignite engines, checkpoints, stats). It would also
publish each run's best checkpoint straight over the model in use; here nothing is published
during training. Which studies train, which choose the run's checkpoint (the run's validation:
held-out reference phantoms) and which decide publication (the site's held-out labels pooled with
other reference phantoms) is ``publish_decision``'s rule, with its reasons. After the run, the
candidate (the run's best checkpoint on the selection studies) and the model in use are scored by
the same SupervisedEvaluator on the same deciding studies, and the candidate replaces the model in
use only if its pooled Dice is not lower (and above 0: a first model that got nothing right is not
published either). Either way the candidate is kept as a version under ``model/<task>/versions/``
with its figures, and the response says which model is in use and why.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from monai.engines import SupervisedEvaluator
from monai.handlers import LrScheduleHandler, MeanDice, from_engine
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.basic_train import BasicTrainTask, Context

from lib.checkpoints import checkpoint_in_use
from lib.model_versions import publish, training_record
from lib.trainers.publish_decision import Split, decide, split_site_labels
from lib.trainers.reference_studies import ReferenceSource, phantom_references, rehearsal_phantoms
from strokelabel.derived import atomic_write_bytes
from strokelabel.errors import StrokeLabelError
from strokelabel.lifeline import server_alive
from strokelabel.study import LABEL_VALUES, check_label

logger = logging.getLogger(__name__)

VAL_METRIC = BasicTrainTask.VAL_METRIC_MEAN_DICE


class StrokeTrainTask(BasicTrainTask):
    """Base trainer of a stroke task. Subclasses give network, loss, optimizer and transforms.

    :param publish_path: where a better model is published (what the infer task loads), ``model/<task>.pt``
    :param kinds: study kinds this task learns from (``ctp``, ``mri``, ``cta``)
    :param shipped_path: the starting model shipped with the app, in use until a first model is published
    :param reference_studies: kind -> (selection, decision) reference studies pooled with the site's labels
        (default: the app's held-out phantoms, generated once into the app's cache, see ``reference_studies``)
    """

    def __init__(
        self,
        model_dir: str,
        network: torch.nn.Module,
        publish_path: str,
        kinds: Sequence[str],
        labels: Dict[str, int],
        description: str,
        config: Dict[str, Any] | None = None,
        shipped_path: str | None = None,
        reference_studies: ReferenceSource | None = None,
        rehearsal_studies=None,
        **kwargs,
    ):
        self._network = network
        self._reference_studies = reference_studies or phantom_references()
        #: (kind, n) -> n labelled phantoms the starting model's generator makes, mixed into training (``rehearsal_studies``)
        self._rehearsal_studies = rehearsal_studies or rehearsal_phantoms
        self._publish_path_in_use = publish_path
        self._shipped_path = shipped_path
        self._kinds = tuple(kinds)
        #: a federated round starts from the federation's global model, not from the model in use (lib.federated.site)
        self._start_checkpoint: str | None = None
        #: FedProx's mu in a federated round (None: FedAvg), set by the aggregator (lib.federated.proximal)
        self._fedprox_mu: float | None = None
        self._task_name = os.path.splitext(os.path.basename(publish_path))[0]
        defaults = {
            "name": self._task_name,  # run folder: model/<task>/
            "max_epochs": 10,
            "train_batch_size": 8,
            "val_batch_size": 1,
            "val_split": 0.25,
            "learning_rate": 1e-3,
            "split_seed": 0,
            "dataset": ["CacheDataset", "Dataset"],
            "dataloader": ["ThreadDataLoader", "DataLoader"],
            "pretrained": True,
            "val_interval": 1,
            "tracking": ["None", "mlflow"],
        }
        super().__init__(
            model_dir=model_dir,
            description=description,
            config={**defaults, **(config or {})},
            amp=False,
            load_path=publish_path,
            publish_path=None,  # published by _publish_if_not_worse, never mid-run
            stats_path=os.path.join(model_dir, f"{self._task_name}_train_stats.json"),
            labels=labels,
            tracking=None,
            # Used only when a request asks for tracking=mlflow: MLflow 3 refuses the file store
            # MONAI Label would default to, so runs go to a SQLite database beside the models.
            tracking_uri=f"sqlite:///{os.path.join(model_dir, 'mlflow.db')}",
            **kwargs,
        )

    # ---- data ------------------------------------------------------------------------------
    def site_labels(self, datastore: Datastore) -> List[dict]:
        """The datastore's final labels of this task's study kinds; none is a StrokeLabelError naming the task. The
        server asks before it starts a training process (``POST /train/<model>``: a 4xx at once, not a process that
        loads the app for ~15 CPU-s to end in ERROR), the run again in :meth:`pre_process`."""
        datalist = [d for d in datastore.datalist() if d.get("kind") in self._kinds]
        if not datalist:
            raise StrokeLabelError(
                f"{self._task_name} needs a final label for at least 1 {'/'.join(k.upper() for k in self._kinds)} study; "
                f"the datastore has none"
            )
        return datalist

    def pre_process(self, request, datastore: Datastore):
        """The final labels of this task's studies, each checked against its study first."""
        import nibabel as nib

        datalist = self.site_labels(datastore)
        for d in datalist:
            label, image = nib.load(d["label"]), nib.load(d["image"])
            study = os.path.basename(d["image"]).split(".nii")[0]
            check_label(np.asanyarray(label.dataobj), label.affine, image.shape[:3], image.affine, LABEL_VALUES[d["kind"]], study)
        return datalist

    def partition_datalist(self, context: Context, shuffle=False):
        """Site labels to train on, and the run's validation: the selection reference studies, on which
        the run's checkpoint is chosen. The deciding studies are kept for the decision after the run."""
        kinds = sorted({d["kind"] for d in context.datalist})
        selection, decision = [], []
        for kind in kinds:  # a task learns from one kind; several kinds pool their references
            chosen, deciding = self._reference_studies(kind)
            selection, decision = selection + list(chosen), decision + list(deciding)
        self._split = split_site_labels(context.datalist, selection, decision, float(context.request.get("val_split", 0.25)),
                                        int(context.request.get("split_seed", 0)))
        # Rehearsal: phantoms of the starting model's own generator trained on beside the site's labels, so
        # that one to three labels cannot drag the model away from what it knew. They never choose or decide.
        # (the keys of a datastore item, so that a batch mixing both collates)
        rehearsal = [{"provenance": "rehearsal phantom", **d} for kind in kinds
                     for d in self._rehearsal_studies(kind, int(context.request.get("rehearsal_studies", 0)))]
        if rehearsal:
            logger.info(f"{self._task_name}: {len(rehearsal)} rehearsal phantoms trained on beside the site's labels")
        self._rehearsal = rehearsal
        logger.info(f"{self._task_name}: {len(self._split.train)} site studies to train on; checkpoint chosen on "
                    f"{len(self._split.selection)} reference studies; publication decided on {len(self._split.deciding)} "
                    f"({len(self._split.site_held_out)} of the site's)")
        return [*self._split.train, *rehearsal], self._split.selection

    # ---- model -----------------------------------------------------------------------------
    @property
    def _model_in_use(self) -> str | None:
        """The checkpoint the infer task loads now: the published model, else the shipped one."""
        return checkpoint_in_use([self._shipped_path, self._publish_path_in_use])

    def network(self, context: Context):
        return self._network

    def optimizer(self, context: Context):
        return torch.optim.AdamW(context.network.parameters(), lr=float(context.request.get("learning_rate", 1e-3)))

    def load_path(self, output_dir, pretrained=True):
        # Fine-tune from the model in use, never from an earlier rejected candidate (in a federated round:
        # from the global model the aggregator sent, set by lib.federated.site, never by a request).
        if self._start_checkpoint:
            return self._start_checkpoint
        return self._model_in_use if pretrained else None

    def _create_trainer(self, context: Context):
        trainer = super()._create_trainer(context)
        if self._fedprox_mu and self._start_checkpoint:  # a FedProx round: the task's loss plus the proximal term
            from lib.federated.proximal import ProximalLoss

            state = torch.load(self._start_checkpoint, map_location=context.device)
            trainer.loss_function = ProximalLoss(trainer.loss_function, context.network, state.get(self._model_dict_key, state),
                                                 self._fedprox_mu)
        return trainer

    def lr_scheduler_handler(self, context: Context):
        # Cosine decay over the run, per epoch, to 2 % of the starting rate: MONAI Label's default
        # (StepLR every 1000 epochs) never decays within a site's runs of tens of epochs.
        lr = float(context.request.get("learning_rate", 1e-3))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(context.optimizer, T_max=max(1, int(context.max_epochs)), eta_min=0.02 * lr)
        return LrScheduleHandler(scheduler, print_lr=False)

    def val_key_metric(self, context: Context):
        return {VAL_METRIC: MeanDice(output_transform=from_engine(["pred", "label"]), include_background=False)}

    # ---- the run ---------------------------------------------------------------------------
    def __call__(self, request, datastore: Datastore):
        started = time.time()
        stats = super().__call__(request, datastore)
        decision = self._publish_if_not_worse(request, started)
        stats.update(decision)
        with open(self._stats_path, "w") as f:
            json.dump(stats, f, indent=2, default=str)
        return stats

    def train(self, rank, world_size, request, datalist):
        # Keep the run's context: the decision after the run needs its device, split and transforms.
        self._last_request = request
        # Validating whole studies costs more than an epoch of sampled slices on a large set.
        self._val_interval = max(1, int(request.get("val_interval", self._val_interval)))
        stale = os.path.join(self._model_dir, request["name"], self._key_metric_filename)
        if os.path.exists(stale):
            os.remove(stale)  # an earlier run's best must never pass for this run's candidate
        return super().train(rank, world_size, request, datalist)

    def finalize(self, context):
        super().finalize(context)
        self._last_context = context

    def _dice_per_study(self, context: Context, checkpoint: str, datalist: Sequence[dict], dataset=None) -> list[float]:
        """The task's validation Dice of ``checkpoint`` on each study of ``datalist``, in order (NaN where
        the label and the answer are both empty), by the same SupervisedEvaluator as the run's validation.
        ``dataset``: ``datalist`` already prepared (:meth:`_prepared`), when several checkpoints are scored on it."""
        network = context.network
        state = torch.load(checkpoint, map_location=context.device)
        network.load_state_dict(state.get(self._model_dict_key, state))
        if dataset is None:
            dataset, _ = self._dataset(context, list(datalist), is_train=False)
        evaluator = SupervisedEvaluator(
            device=context.device,
            val_data_loader=self._dataloader(context, dataset, 1, 0),  # one study per batch: one figure per study
            network=network,
            inferer=self.val_inferer(context),
            postprocessing=self._validate_transforms(self.val_post_transforms(context), "Validation", "post"),
            key_val_metric=self.val_key_metric(context),
        )
        evaluator.run()
        details = evaluator.state.metric_details[VAL_METRIC]  # (studies, classes), as MeanDice keeps them
        details = details.detach().cpu().numpy() if hasattr(details, "detach") else np.asarray(details)
        with np.errstate(all="ignore"):
            per_study = np.nanmean(details.reshape(len(datalist), -1), axis=1) if np.size(details) else np.full(len(datalist), np.nan)
        return [float(v) for v in per_study]

    def _prepared(self, context: Context, datalist: Sequence[dict]):
        """``datalist`` through the validation pre-transforms once, kept in memory: the candidate and the model in use
        are scored on the same deciding studies, whose preparation (loading, brain mask, midsagittal plane, resampling:
        about 5 CPU-s a small MRI study) would otherwise be done once per model. The transforms are deterministic."""
        from monai.data import CacheDataset

        transforms = self._validate_transforms(self.val_pre_transforms(context), "Validation", "pre")
        return CacheDataset(list(datalist), transforms, progress=False)

    # ---- federated learning (lib.federated): the same data, split, network and validation -------
    def train_round(self, request, datastore: Datastore, start_checkpoint: str, fedprox_mu: float | None = None) -> Dict[str, Any]:
        """One site's local training of a federated round: this trainer's run (``BasicTrainTask``'s loop on
        the site's final labels, checkpoint chosen on the selection studies), started from
        ``start_checkpoint`` (the global model), and nothing published; with ``fedprox_mu`` the loss gains
        FedProx's proximal term to the global model. Returns the run's stats with ``checkpoint`` (the chosen
        one), ``train_studies`` and ``selection_best``."""
        self._start_checkpoint, self._fedprox_mu = start_checkpoint, fedprox_mu
        try:
            stats = BasicTrainTask.__call__(self, {**request, "pretrained": True}, datastore)
        finally:
            self._start_checkpoint, self._fedprox_mu = None, None
        context = self._last_context
        checkpoint = os.path.join(context.output_dir, self._key_metric_filename)
        return {**stats, "checkpoint": checkpoint if os.path.exists(checkpoint) else None, "train_studies": len(self._split.train),
                "selection_best": self._selection_best(context)}

    def offer_candidate(self, request, datastore: Datastore, candidate: str, version: str, origin: Dict[str, Any]) -> Dict[str, Any]:
        """A model trained elsewhere (the federation's global model) offered to this site: kept as a version
        and put in use only through the same no-regression decision as this trainer's own runs, on the
        same deciding studies (the site's held-out labels and the decision phantoms). ``origin`` joins
        the version record (federation, round, sites and their figures)."""
        started = time.time()
        context = self._scoring_context(request, self.pre_process({**self._config, **request}, datastore))
        self.partition_datalist(context)
        self._last_context = context
        return self._publish_if_not_worse(context.request, started, candidate=candidate, version=version, origin=origin)

    def score(self, checkpoint: str, datalist: Sequence[dict], request: Dict[str, Any] | None = None) -> list[float]:
        """The validation Dice of ``checkpoint`` on each study of ``datalist`` (``image``, ``label``, ``kind``), as
        the run's validation and the publish decision compute it (scripts/federated_benchmark.py)."""
        return self._dice_per_study(self._scoring_context(request or {}, list(datalist)), checkpoint, datalist)

    def _scoring_context(self, request: Dict[str, Any], datalist: Sequence[dict]):
        """What ``_dice_per_study`` needs of a run's context, without a run (BasicTrainTask.train builds it)."""
        from monailabel.tasks.train.basic_train import Context
        from monailabel.utils.others.generic import name_to_device

        req = {**self._config, **request, "run_id": time.strftime("%Y%m%d_%H%M%S")}
        req["device"] = name_to_device(req.get("device", "cpu"))
        context = Context()
        context.request, context.run_id, context.multi_gpu, context.local_rank, context.world_size = req, req["run_id"], False, 0, 1
        context.datalist = list(datalist)
        context.device = self._device(context)
        context.dataset_type, context.dataloader_type = "Dataset", "DataLoader"  # scored once: nothing to cache
        context.output_dir = os.path.join(self._model_dir, req["name"])
        context.cache_dir = os.path.join(context.output_dir, f"cache_{context.run_id}")
        context.network = self.network(context).to(context.device)
        return context

    def _publish_if_not_worse(self, request, started: float, candidate: str | None = None, version: str | None = None,
                              origin: Dict[str, Any] | None = None) -> Dict[str, Any]:
        context = self._last_context
        split: Split = self._split
        candidate = candidate or os.path.join(context.output_dir, self._key_metric_filename)
        if not os.path.exists(candidate):
            return {"published": False, "reason": "training produced no checkpoint; the model in use is unchanged"}
        if not server_alive():  # an orphaned run must never change a restarted server's model
            logger.error(f"{self._task_name}: the server that started this training is gone: nothing published")
            return {"published": False, "reason": "the server that started this training is gone; the model in use is unchanged"}

        version = version or f"{self._task_name}_{context.run_id}"
        versions_dir = os.path.join(context.output_dir, "versions")
        os.makedirs(versions_dir, exist_ok=True)
        version_path = os.path.join(versions_dir, version + ".pt")
        atomic_write_bytes(version_path, Path(candidate).read_bytes())

        # Both models on the same deciding studies (none of them chose the candidate's checkpoint).
        deciding = self._prepared(context, split.deciding)
        candidate_dice = self._dice_per_study(context, candidate, split.deciding, deciding)
        in_use = self._model_in_use
        in_use_dice = self._dice_per_study(context, in_use, split.deciding, deciding) if in_use else None
        verdict = decide(candidate_dice, in_use_dice, version)
        decision = {
            "version": version,
            "version_path": version_path,
            **verdict.as_json(),
            "val_studies": [split.name(d) for d in split.deciding],
            **split.describe(),
            "candidate_dice_by_study": _by_study(split, candidate_dice),
            "in_use_dice_by_study": _by_study(split, in_use_dice) if in_use_dice else None,
            "selection_best_dice": self._selection_best(context),
            "train_seconds": round(time.time() - started, 1),
            # date, who started the run, the site's training data (counts, label provenance), sha256 (lib/model_versions.py)
            **training_record(request, split.train, split.site_held_out, version_path),
            **({"origin": "federated", "federation": origin, "selection_best_dice": None,
                "training_data": {"site": "trained elsewhere: the federation's sites (see federation)"}} if origin else {}),
        }
        by = request.get("started_by") or ("federation" if origin else "training run")
        path = f"/model/{self._task_name}/federated" if origin else f"/train/{self._task_name}"
        if verdict.published:
            # temp file, fsync, rename under the model's lock, recorded in its history and the audit log:
            # an infer never reads half a file, a crash never leaves none in use (lib/model_versions.py)
            extra = {"federation": _federation_summary(origin)} if origin else {}
            publish(self._model_dir, self._task_name, version, by=by, method="POST", path=path, **extra)
        elif origin:  # a refused global model is a line in the audit log too (a refused local run is only a version)
            from lib.access_control import audit_event

            audit_event(Path(self._model_dir).parent, {"user": by, "method": "POST", "path": path, "model": self._task_name,
                                                       "event": "federated model kept aside", "version": version,
                                                       "federation": _federation_summary(origin), "reason": verdict.reason, "status": 200})
        atomic_write_bytes(os.path.join(versions_dir, version + ".json"), json.dumps(decision, indent=2).encode())
        logger.info(f"{self._task_name}: {decision['reason']}")
        return decision

    @staticmethod
    def _selection_best(context: Context) -> Dict[str, Any] | None:
        """The checkpoint choice: the best selection Dice of the run and its epoch."""
        evaluator = getattr(context, "evaluator", None)
        if evaluator is None:
            return None
        return {"dice": round(float(evaluator.state.best_metric), 4), "epoch": int(evaluator.state.best_metric_epoch)}


def _federation_summary(origin: Dict[str, Any]) -> Dict[str, Any]:
    """What the history and the audit log keep of a federated model: federation, round, pseudonymous sites."""
    return {k: origin.get(k) for k in ("federation", "job_id", "round", "sites")}


def _by_study(split: Split, dice: Sequence[float]) -> Dict[str, float | None]:
    """Per deciding study figures for the response (JSON has no NaN: a study without a figure is null)."""
    return {split.name(d): (None if np.isnan(v) else round(float(v), 4)) for d, v in zip(split.deciding, dice)}
