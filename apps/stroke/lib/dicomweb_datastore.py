"""The stroke datastore over a PACS (``--studies http(s)://.../dicom-web``): one image per DICOM study.

MONAI Label's own DICOMweb datastore lists one image per series (CT only by default) and would
turn a 4D CT perfusion series into one tall volume. Here a study is listed once, by its reference
series (Tmax, DWI, CTA phase 1, else the 4D CTP: :mod:`strokelabel.pacs`), any series UID of the
study is accepted for it, and series are fetched only when a task needs them, into a bounded local
cache that the folder datastore (:class:`lib.datastore.StrokeDatastore`) then serves like any study
folder, with the same label checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List

import nibabel as nib
import numpy as np
import requests
from fastapi import HTTPException
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from lib.datastore import StrokeDatastore, label_provenance
from lib.errors import http_errors
from strokelabel import pacs
from strokelabel.derived import cache_root, mark_used, prune_cache
from strokelabel.dicom import answer_identity, identify, write_seg
from strokelabel.naming import study_kind

logger = logging.getLogger(__name__)

# The cache holds patient images: bounded in size and in age (README, "Connecting a PACS").
CACHE_MAX_GB = float(os.environ.get("STROKELABEL_PACS_CACHE_GB", "20"))
CACHE_MAX_DAYS = float(os.environ.get("STROKELABEL_PACS_CACHE_DAYS", "7"))
# New studies and corrected SEGs appear when a client looks at the datastore, at most this often (QIDO metadata only).
REFRESH_S = float(os.environ.get("STROKELABEL_PACS_REFRESH_S", "60"))


# Label values -> segment names (and so codes, strokelabel.dicom.SEGMENT_CODES) per study kind (DESIGN.md).
SEGMENT_NAMES = {"ctp": {1: "core", 2: "penumbra"}, "mri": {1: "lesion"}, "cta": {1: "clot"}}


def ai_answer_identity(study_uid: str, label_info: Dict[str, Any] | None, label: np.ndarray) -> str:
    """What makes an AI answer the same answer: the study, the task, the method served and the model in use (its file
    as the result names it), and the label itself (MONAI Label's ``label_info``: ``model`` the task, ``params`` the result)."""
    info = label_info or {}
    params = info.get("params") or {}
    model = {key: params[key] for key in ("model", "model_file", "models") if key in params}
    return answer_identity(study_uid, info.get("model", ""), params.get("method", ""), json.dumps(model, sort_keys=True, default=str), label)


def default_cache_dir(url: str) -> str:
    return str(cache_root() / "pacs" / hashlib.sha256(url.encode()).hexdigest()[:16])


class StrokeDicomwebDatastore(StrokeDatastore):
    """One image per DICOM study, fetched on demand from a DICOMweb PACS into a local cache."""

    def __init__(self, url: str, cache_dir: str | None = None):
        self._url = url.rstrip("/")
        self._client = pacs.client_for(self._url)
        self._series_to_image: Dict[str, str] = {}
        self._studies: Dict[str, pacs.PacsStudy] = {}
        self._indexed_at = 0.0
        self._force_index = False
        cache = cache_dir or default_cache_dir(self._url)
        os.makedirs(cache, exist_ok=True)
        prune_cache(Path(cache), CACHE_MAX_GB * 1e9, CACHE_MAX_DAYS * 86400)
        super().__init__(cache, auto_reload=False, read_only=False)

    def name(self) -> str:
        return "StrokeLabel DICOMweb datastore"

    # ---- listing: from the PACS index, not from the disk ------------------------------------------
    def _add_non_existing_images(self) -> int:
        self._init_from_datastore_file()
        added = 0
        if self._studies and time.time() - self._indexed_at < REFRESH_S and not self._force_index:
            return 0  # a reload of the datastore file (labels, scores), not a look at the PACS
        self._force_index = False
        try:
            with http_errors():
                studies = pacs.index_pacs(self._client)
        except (requests.RequestException, HTTPException) as e:  # the PACS down must not take the server down: try again later
            logger.error("The PACS at %s did not answer its study list (%s): keeping the %d studies known so far", self._url, e, len(self._studies))
            return 0
        self._indexed_at = time.time()
        self._studies.clear()
        for study in studies:
            reference = study.reference
            if reference is None:
                logger.info("PACS study %s not listed: %s (%s)", study.study_uid, study.why_not_listed(),
                            "; ".join(f"{s.description!r}: {s.modality or 'none'}, {s.reason}" for s in study.series))
                continue
            image_id = reference.uid
            self._studies[image_id] = study
            for s in study.series:
                self._series_to_image[s.uid] = image_id
            path = pacs.prepare_folder(self._datastore.image_path(), study, self._url)
            relpath = os.path.relpath(path, self._datastore.image_path())
            obj = self._datastore.objects.get(image_id)
            if obj and obj.image.info.get("relpath") == relpath:
                self._import_corrected_seg(image_id, study)
                continue
            info = {"ts": int(time.time()), "name": path.name, "relpath": relpath, "kind": study_kind(path.name),
                    "study_uid": study.study_uid, "series": {s.uid: s.modality for s in study.series}}
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=".nii.gz"), labels=obj.labels if obj else {})
            self._import_corrected_seg(image_id, study)
            added += 1
        return added

    def _remove_non_existing(self) -> int:
        self._init_from_datastore_file()
        if not self._indexed_at:
            return 0  # the PACS has not been looked at yet: nothing is known to be gone
        removed = 0
        for image_id in list(self._datastore.objects):
            if image_id not in self._studies:
                del self._datastore.objects[image_id]
                removed += 1
        return removed

    # ---- any series UID of a study stands for the study -------------------------------------------
    def image_id_of(self, image_id: str) -> str:
        return self._series_to_image.get(image_id, image_id)

    def get_image_uri(self, image_id: str) -> str:
        image_id = self.image_id_of(image_id)
        obj = self._datastore.objects.get(image_id)
        if obj is None:
            return ""
        path = self._image_file(image_id, obj)
        reference = self._studies[image_id].reference.modality
        with http_errors():
            pacs.fetch_modalities(path, [reference])  # the reference only; the loader fetches what a task needs
        mark_used(Path(path).parent / pacs.SOURCE_FILE)
        return path

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        """The study's info with the path its reference has (or will have) in the cache: asking about a
        study (its kind, its scores) never fetches it."""
        image_id = self.image_id_of(image_id)
        info = LocalDatastore.get_image_info(self, image_id)
        obj = self._datastore.objects.get(image_id)
        if info and obj:
            info["path"] = self._image_file(image_id, obj)
        return info

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        """Saved on the server (checked first, as for folder studies), then written to the PACS as a DICOM-SEG
        referencing the study's reference series: AUTOMATIC for AI output (tag ``original``), else the
        clinician's correction (``label_info["algorithm_type"]``, default MANUAL)."""
        image_id = self.image_id_of(image_id)
        label_tag = getattr(label_tag, "value", label_tag)  # MONAI Label passes DefaultLabelTag members when an infer saves
        self.get_image_uri(image_id)
        label_id = super().save_label(image_id, label_filename, label_tag, label_info)
        obj = self._datastore.objects[image_id]
        study = self._studies[image_id]
        algorithm = "AUTOMATIC" if label_tag == DefaultLabelTag.ORIGINAL.value else str((label_info or {}).get("algorithm_type", "MANUAL")).upper()
        label_path = self._label_file(image_id, label_tag, obj.labels[label_tag])
        values = set(np.unique(np.asanyarray(nib.load(label_path).dataobj)).tolist()) - {0}
        names = {v: n for v, n in SEGMENT_NAMES[obj.image.info["kind"]].items() if v in values}
        if not names:
            return label_id  # an empty label: nothing to draw in a SEG
        headers = Path(self._image_file(image_id, obj)).parent / "dicom" / study.reference.modality
        try:
            with http_errors():
                seg = write_seg(label_path, headers, names, algorithm, algorithm_name=str((label_info or {}).get("model", "StrokeLabel")),
                                series_description=f"StrokeLabel {label_tag} ({algorithm.lower()})",
                                provenance=None if label_tag == DefaultLabelTag.ORIGINAL.value else label_provenance(label_info))
            if label_tag == DefaultLabelTag.ORIGINAL.value:
                # The AI's answer: one series per study, task, method and model, and answer; a rerun adds nothing. A
                # person's label is always its own new series (the newest correction is the training label).
                identify(seg, ai_answer_identity(study.study_uid, label_info, np.asanyarray(nib.load(label_path).dataobj)))
            stored = pacs.store_seg(self._client, seg)
        except Exception as e:  # the label is kept on the server either way; say what the PACS did not get
            logger.warning("%s: the label was saved on the server, but not stored in the PACS as DICOM-SEG: %s", image_id, e)
            raise HTTPException(status_code=502, detail=f"the label was saved on the server, but the PACS did not store its DICOM-SEG: {e}") from e
        obj.labels[label_tag].info.update({"seg_instance_uid": str(seg.SOPInstanceUID), "seg_series_uid": str(seg.SeriesInstanceUID),
                                           "algorithm_type": algorithm,
                                           "provenance": "AI" if label_tag == DefaultLabelTag.ORIGINAL.value else label_provenance(label_info)})
        self._update_datastore_file()
        logger.info("%s: label %s %s as DICOM-SEG (%s)", image_id, label_tag, "stored in the PACS" if stored else "already in the PACS", algorithm)
        return label_id

    def ai_seg(self, image_id: str) -> Dict[str, str] | None:
        """The AI SEG the study's latest answer (label ``original``) was stored as in the PACS; None for an empty answer."""
        obj = self._datastore.objects.get(self.image_id_of(image_id))
        label = obj.labels.get(DefaultLabelTag.ORIGINAL.value) if obj else None
        if label is None or not label.info.get("seg_series_uid"):
            return None
        return {"series_uid": label.info["seg_series_uid"], "instance_uid": label.info["seg_instance_uid"]}

    def _import_corrected_seg(self, image_id: str, study: pacs.PacsStudy) -> None:
        """The newest corrected SEG in the PACS (MANUAL or SEMIAUTOMATIC) becomes the study's final label,
        unless it is the one already saved; unreviewed AI output (AUTOMATIC) never does."""
        if not any(s.modality == "seg" for s in study.series):
            return
        corrected = pacs.corrected_segs(self._client, study)
        if not corrected:
            return
        newest = corrected[0]
        obj = self._datastore.objects[image_id]
        final = obj.labels.get(DefaultLabelTag.FINAL)
        if final is not None and final.info.get("seg_instance_uid") == newest["instance_uid"]:
            return
        reference = Path(self.get_image_uri(image_id))
        kind = obj.image.info["kind"]
        out = Path(self._datastore.label_path(DefaultLabelTag.FINAL)) / f"{image_id}.nii.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        pacs.fetch_seg_label(self._client, study, newest, reference, {n: v for v, n in SEGMENT_NAMES[kind].items()}, out)
        obj.labels[DefaultLabelTag.FINAL] = DataModel(info={"ts": int(time.time()), "source": "PACS DICOM-SEG", "seg_instance_uid": newest["instance_uid"],
                                                            "algorithm_type": newest["algorithm_type"],
                                                            "provenance": newest["provenance"]}, ext=".nii.gz")
        logger.info("%s: the corrected DICOM-SEG of %s is its final label", image_id, newest["when"] or "unknown date")

    def json(self):
        self.refresh()  # looks at the PACS when the index is older than REFRESH_S
        return super().json()

    def is_local(self, image_id: str) -> bool:
        """Whether the study's reference is already in the cache (active learning scores only those)."""
        obj = self._datastore.objects.get(self.image_id_of(image_id))
        return bool(obj) and os.path.exists(self._image_file(self.image_id_of(image_id), obj))

    def datalist(self, full_path=True) -> List[Dict[str, Any]]:
        self._force_index = True
        self.refresh()  # corrected SEGs stored in the PACS since the last look (metadata only; a SEG is fetched once)
        for image_id, obj in self._datastore.objects.items():
            if DefaultLabelTag.FINAL in obj.labels:
                self.get_image_uri(image_id)  # a labelled study's reference on disk before training reads it
        return super().datalist(full_path)

    def classification(self) -> list[dict]:
        """How each series of each study was classified (the dry run a site checks its rules with)."""
        return [{"study_uid": s.study_uid, "patient_id": s.patient_id, "image": image_id,
                 "series": [x.as_json() for x in s.series]} for image_id, s in self._studies.items()]
