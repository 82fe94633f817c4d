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
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List

from monailabel.datastore.local import DataModel, ImageLabelModel
from monailabel.interfaces.datastore import DefaultLabelTag

from lib.datastore import StrokeDatastore
from lib.errors import http_errors
from strokelabel import pacs
from strokelabel.naming import study_kind

logger = logging.getLogger(__name__)

# The cache holds patient images: bounded in size and in age (README, "Connecting a PACS").
CACHE_MAX_GB = float(os.environ.get("STROKELABEL_PACS_CACHE_GB", "20"))
CACHE_MAX_DAYS = float(os.environ.get("STROKELABEL_PACS_CACHE_DAYS", "7"))


def default_cache_dir(url: str) -> str:
    root = os.environ.get("STROKELABEL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "strokelabel")
    return os.path.join(root, "pacs", hashlib.sha256(url.encode()).hexdigest()[:16])


def prune_cache(cache: Path, keep: set[str], max_bytes: float, max_age_s: float) -> None:
    """Remove fetched studies older than ``max_age_s`` (by last use), then the least recently used
    ones until the cache is under ``max_bytes``; saved labels (``labels/``) are never removed."""
    studies = [d for d in cache.iterdir() if d.is_dir() and d.name not in ("labels", ".locks")] if cache.exists() else []
    used = {d: max((p.stat().st_atime for p in d.rglob("*") if p.is_file()), default=d.stat().st_mtime) for d in studies}
    now = time.time()
    for d in sorted(studies, key=used.get):
        if now - used[d] > max_age_s:
            logger.info("PACS cache: removing %s (unused for %.0f days)", d.name, (now - used[d]) / 86400)
            shutil.rmtree(d, ignore_errors=True)
    remaining = [d for d in studies if d.exists()]
    total = sum(p.stat().st_size for d in remaining for p in d.rglob("*") if p.is_file())
    for d in sorted(remaining, key=used.get):
        if total <= max_bytes:
            break
        size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
        logger.info("PACS cache: removing %s (%.0f MB) to stay under %.1f GB", d.name, size / 1e6, max_bytes / 1e9)
        shutil.rmtree(d, ignore_errors=True)
        total -= size


class StrokeDicomwebDatastore(StrokeDatastore):
    """One image per DICOM study, fetched on demand from a DICOMweb PACS into a local cache."""

    def __init__(self, url: str, cache_dir: str | None = None):
        self._url = url.rstrip("/")
        self._client = pacs.client_for(self._url)
        self._series_to_image: Dict[str, str] = {}
        self._studies: Dict[str, pacs.PacsStudy] = {}
        cache = cache_dir or default_cache_dir(self._url)
        os.makedirs(cache, exist_ok=True)
        prune_cache(Path(cache), set(), CACHE_MAX_GB * 1e9, CACHE_MAX_DAYS * 86400)
        super().__init__(cache, auto_reload=False, read_only=False)

    def name(self) -> str:
        return "StrokeLabel DICOMweb datastore"

    # ---- listing: from the PACS index, not from the disk ------------------------------------------
    def _add_non_existing_images(self) -> int:
        self._init_from_datastore_file()
        added = 0
        with http_errors():
            studies = pacs.index_pacs(self._client)
        self._studies.clear()
        for study in studies:
            reference = study.reference
            if reference is None:
                logger.info("PACS study %s: no series the rules recognise as Tmax, DWI, CTA or 4D CTP; not listed (%s)", study.study_uid,
                            ", ".join(f"{s.description!r}" for s in study.series))
                continue
            image_id = reference.uid
            self._studies[image_id] = study
            for s in study.series:
                self._series_to_image[s.uid] = image_id
            path = pacs.prepare_folder(self._datastore.image_path(), study, self._url)
            relpath = os.path.relpath(path, self._datastore.image_path())
            obj = self._datastore.objects.get(image_id)
            if obj and obj.image.info.get("relpath") == relpath:
                continue
            info = {"ts": int(time.time()), "name": path.name, "relpath": relpath, "kind": study_kind(path.name),
                    "study_uid": study.study_uid, "series": {s.uid: s.modality for s in study.series}}
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=".nii.gz"), labels=obj.labels if obj else {})
            added += 1
        return added

    def _remove_non_existing(self) -> int:
        self._init_from_datastore_file()
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
        return path

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        return super().get_image_info(self.image_id_of(image_id))

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        image_id = self.image_id_of(image_id)
        self.get_image_uri(image_id)
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def datalist(self, full_path=True) -> List[Dict[str, Any]]:
        for image_id, obj in self._datastore.objects.items():
            if DefaultLabelTag.FINAL in obj.labels:
                self.get_image_uri(image_id)  # a labelled study's reference on disk before training reads it
        return super().datalist(full_path)

    def classification(self) -> list[dict]:
        """How each series of each study was classified (the dry run a site checks its rules with)."""
        return [{"study_uid": s.study_uid, "patient_id": s.patient_id, "image": image_id,
                 "series": [x.as_json() for x in s.series]} for image_id, s in self._studies.items()]
