"""Uncertainty-based active learning, reusable by every stroke task.

- :class:`StrokeUncertaintyScoring` (a MONAI Label ``ScoringMethod``): for each unlabelled study
  of the task's kinds, asks the task for an uncertainty score (``score_fn(image_path) -> dict``,
  e.g. MC-dropout entropy, see ``CorePenumbraInfer.mc_dropout_uncertainty``) and stores it in
  the study's datastore info under ``key`` with the model's timestamp (``key + "_ts"``), so a
  study is scored again only when the model in use changes. A study that cannot be scored
  (broken files) is logged and skipped, never fails the run.
- :class:`MostUncertain` (a ``Strategy``): the unlabelled study with the highest stored score
  (``key``); studies never scored rank last; ties and "no scores yet" fall back to the first
  unlabelled study of the kinds, by name.

MONAI Label runs scoring in a background process after start-up, training and each
``next_sample`` (``MONAI_LABEL_AUTO_UPDATE_SCORING``), which writes the datastore file; the
strategy reloads the datastore before ranking so the server sees those scores. That process runs at a
lower CPU priority, waits between studies while a clinician's infer or save is in flight
(:mod:`strokelabel.lifeline`), and scores at most ``max_studies`` studies or ``max_seconds`` per
round (20 and 300 s by default, ``STROKELABEL_SCORING_MAX_STUDIES``/``_SECONDS``).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, Sequence

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy

from strokelabel.lifeline import wait_for_foreground

logger = logging.getLogger(__name__)


def _kind(datastore: Datastore, image_id: str) -> str | None:
    return (datastore.get_image_info(image_id) or {}).get("kind")


class StrokeUncertaintyScoring(ScoringMethod):
    """Score unlabelled studies by model uncertainty; higher = more worth labelling.

    :param infer_task: the task's infer task (its model path says when scores are stale)
    :param score_fn: ``(image_path, samples, device) -> {"<name>": float, ...}``
    :param key: datastore info key of the score (e.g. ``core_penumbra_uncertainty``)
    :param score_name: which value of ``score_fn``'s dict is the score
    :param kinds: study kinds the task reads
    :param samples: stochastic passes per study (request ``samples`` overrides)
    :param max_studies, max_seconds: bounds of one round (request ``max_studies``/``max_seconds`` override);
        the studies left over are scored in the next round
    """

    def __init__(
        self,
        infer_task,
        score_fn: Callable[[str, int, str], Dict[str, float]],
        key: str,
        score_name: str,
        kinds: Sequence[str],
        samples: int = 4,
        description: str = "MC-dropout uncertainty of the model in use",
        max_studies: int = int(os.environ.get("STROKELABEL_SCORING_MAX_STUDIES", 20)),
        max_seconds: float = float(os.environ.get("STROKELABEL_SCORING_MAX_SECONDS", 300)),
    ):
        super().__init__(description)
        self.infer_task = infer_task
        self.score_fn = score_fn
        self.key = key
        self.score_name = score_name
        self.kinds = tuple(kinds)
        self.samples = samples
        self.max_studies, self.max_seconds = max_studies, max_seconds

    def model_timestamp(self) -> int:
        path = self.infer_task.get_path() if self.infer_task.model_available() else None
        return int(os.stat(path).st_mtime) if path and os.path.exists(path) else 0

    def _current(self, info: Dict[str, Any], model_ts: int) -> bool:
        """Whether a study's stored score is of the model in use."""
        return info.get(self.key + "_ts") == model_ts and self.key in info

    def _to_score(self, datastore: Datastore, image_id: str, model_ts: int, force: bool) -> bool | None:
        """Whether a run scores this unlabelled study: None when it is not of the task's kinds, False when it is
        skipped (a PACS study no task has fetched: scoring never downloads the PACS; a score of the model in use
        already stored, unless ``force``)."""
        if _kind(datastore, image_id) not in self.kinds:
            return None
        if not getattr(datastore, "is_local", lambda _: True)(image_id):
            return False
        return force or not self._current(datastore.get_image_info(image_id) or {}, model_ts)

    def pending(self, datastore: Datastore, force: bool = False) -> int:
        """How many studies a run would score now: unlabelled studies of the task's kinds, on this server (a PACS
        study no task has fetched is never scored) and without a score of the model in use (all of them with
        ``force``). The server asks before it starts a run: a scoring process loads the whole app (~15 CPU-s) and
        MONAI Label starts one after every start-up, training and next sample, mostly to find every score current."""
        if not self.infer_task.model_available():
            return 0
        model_ts = self.model_timestamp()
        return sum(self._to_score(datastore, image_id, model_ts, force) is True for image_id in datastore.get_unlabeled_images())

    def __call__(self, request, datastore: Datastore):
        started = time.time()
        if not self.infer_task.model_available():
            return {"executed": 0, "skipped": 0, "failed": 0, "note": "no model installed: nothing to score"}
        model_ts = self.model_timestamp()
        samples = int(request.get("samples", self.samples))
        device = request.get("device", "cuda")
        import torch

        device = device if device != "cuda" or torch.cuda.is_available() else "cpu"
        executed, skipped, failed, waited_s = 0, 0, 0, 0.0
        max_studies = int(request.get("max_studies", self.max_studies))
        max_seconds = float(request.get("max_seconds", self.max_seconds))
        scores: Dict[str, float] = {}
        deferred = 0
        for image_id in sorted(datastore.get_unlabeled_images()):
            to_score = self._to_score(datastore, image_id, model_ts, bool(request.get("force")))
            if to_score is None:  # another task's study
                continue
            if not to_score:
                skipped += 1
                continue
            if executed + failed >= max_studies or time.time() - started > max_seconds:
                deferred += 1  # bounded rounds: the rest waits for the next one (after a save, training or next sample)
                continue
            waited_s += wait_for_foreground()  # a clinician's infer or save first
            try:
                figures = self.score_fn(datastore.get_image_uri(image_id), samples, device)
            except Exception as e:  # a broken study must not stop the others from being scored
                logger.warning(f"{self.key}: {image_id} not scored: {e}")
                failed += 1
                continue
            score = float(figures[self.score_name])
            scores[image_id] = score
            # Reload first: the server may have saved labels since this process read the datastore file.
            datastore.refresh()
            datastore.update_image_info(image_id, {self.key: score, self.key + "_ts": model_ts, self.key + "_figures": figures})
            executed += 1
            logger.info(f"{self.key}: {image_id} => {score:.4f}")
        summary = {"executed": executed, "skipped": skipped, "failed": failed, "deferred": deferred, "scores": scores,
                   "waited_for_clinician_s": round(waited_s, 1), "latency": round(time.time() - started, 2)}
        logger.info(f"{self.key}: {summary}")
        return summary


class MostUncertain(Strategy):
    """The unlabelled study (of ``kinds``) with the highest stored uncertainty ``key``."""

    def __init__(self, key: str, kinds: Sequence[str], description: str = "Most uncertain study first (MC dropout)"):
        super().__init__(description)
        self.key = key
        self.kinds = tuple(kinds)

    def __call__(self, request, datastore: Datastore) -> Dict[str, Any] | None:
        datastore.refresh()  # scores are written by MONAI Label's background scoring process
        candidates = [i for i in sorted(datastore.get_unlabeled_images()) if _kind(datastore, i) in self.kinds]
        if not candidates:
            return None
        scored = [(float((datastore.get_image_info(i) or {}).get(self.key, float("-inf"))), i) for i in candidates]
        best_score = max(s for s, _ in scored)
        image = next(i for s, i in scored if s == best_score)
        result = {"id": image, self.key: None if best_score == float("-inf") else best_score}
        logger.info(f"most_uncertain: {image} ({self.key} = {result[self.key]}) of {len(candidates)} unlabelled")
        return result
