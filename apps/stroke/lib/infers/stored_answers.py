"""A stored answer served again: the same study, model, options and code ask for an infer again.

A clinician re-opening a study, a viewer asking for the answer the API already gave, a second reader: each
would recompute an answer that cannot differ. An answer is stored beside the study as a derived set
(:class:`strokelabel.derived.DerivedSet`, the app's one cache policy: atomic files, manifest last) with

- **the study by content**: the sha256 of every file of the study (each modality, the clinical sidecar,
  b-values, a PACS study's source record), as they are once the answer is made (a PACS study fetches the
  series a task reads during its first infer);
- **the models by content**: the sha256 of every checkpoint in use the task may read (a publish, a
  rollback or a ``PUT /model`` changes it);
- **the options**: every request value that can change the answer (``method``, the clinical values, the
  output format, ...), not the ones that only say where the answer goes (``save_label``, ``label_tag``);
- **the code**: the bytes of the app's ``lib`` and of ``strokelabel`` (every step, the maps' version),
  the versions of the numerical packages and the ``STROKELABEL_*`` settings.

Any difference is another entry, so an answer is never served across a change of any of them; a stored
file that no longer matches its checksum is recomputed, not served. At most :data:`MAX_ANSWERS_PER_STUDY`
answers are kept per study, the least recently used removed first. The result says ``reused`` and, when
reused, ``computed_at`` and the seconds the stored answer took to compute (``computed_latencies``).
``reuse=false`` in a request computes afresh and stores nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from lib.checkpoints import checkpoint_in_use
from lib.model_versions import now_iso, sha256_of
from strokelabel.derived import DerivedSet, fingerprint, atomic_write_bytes, derived_folder, keep_newest_sets, summary_picture_path

logger = logging.getLogger(__name__)

MAX_ANSWERS_PER_STUDY = 12
# Request values that say where an answer goes or how the call is logged, not what the answer is.
NOT_OPTIONS = frozenset({"image", "image_path", "save_label", "label_tag", "logging", "description", "timeout", "reuse", "client_id", "skip_writer"})
WHAT = "answer"


def _false(value) -> bool:
    return str(value).lower() in ("false", "0", "no")


def reuse_wanted(request: dict) -> bool:
    """Whether the request may be served (and stores) a stored answer: a server's infer of a task (``model``) on a
    study file, written out (scripts reading the intermediate data ask ``skip_writer``), no interactive input (a
    label or session sent with the request), and not ``reuse=false``."""
    image = request.get("image")
    return (isinstance(image, str) and os.path.isfile(image) and bool(request.get("model")) and not request.get("label")
            and not request.get("session") and _false(request.get("skip_writer", False)) and not _false(request.get("reuse", True)))


def study_files(reference: str | Path, descriptor=None) -> list[Path]:
    """Every file an answer on the study of ``reference`` (described by ``descriptor``, else described here) may be
    read from (module docstring)."""
    from strokelabel.diffusion import bval_path
    from strokelabel.pacs import SOURCE_FILE
    from strokelabel.study import describe_study

    descriptor = descriptor or describe_study(reference)
    files = {Path(descriptor.reference), *map(Path, descriptor.modalities.values())}
    files |= {bval_path(f) for f in list(files) if bval_path(f).is_file()}
    if descriptor.sidecar is not None:
        files.add(Path(descriptor.sidecar))
    if (Path(reference).parent / SOURCE_FILE).is_file():
        files.add(Path(reference).parent / SOURCE_FILE)
    return sorted(f for f in files if f.is_file())


@functools.lru_cache(maxsize=None)  # the code does not change under a running process
def code_version() -> str:
    """The bytes of the app's ``lib`` and of ``strokelabel``, the numerical packages' versions, the app's settings."""
    import lib
    import monai
    import monailabel
    import numpy
    import scipy
    import torch

    import strokelabel

    digest = hashlib.sha256()
    for package in (lib, strokelabel):
        root = Path(package.__file__).parent
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    versions = [strokelabel.__version__, monai.__version__, monailabel.__version__, torch.__version__, numpy.__version__, scipy.__version__]
    digest.update(json.dumps(versions).encode())
    return digest.hexdigest()


def settings() -> dict:
    """The app's settings from the environment (brain extraction mode, ...): conservative, all of ``STROKELABEL_*``."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("STROKELABEL_") and k != "STROKELABEL_CACHE_DIR"}


def models_in_use(task) -> list:
    """Each checkpoint in use that ``task`` may read, as (file name, sha256); None where none is installed."""
    out = []
    for paths in task.model_path_lists():
        path = checkpoint_in_use(paths)
        out.append(None if path is None else [os.path.basename(path), sha256_of(path)])
    return out


def task_settings(task) -> dict:
    """The task's own plain settings (``lesion_components`` from the app's ``--conf``, ...)."""
    return {k: v for k, v in sorted(vars(task).items()) if isinstance(v, (str, int, float, bool)) and not k.startswith("_")}


def answer_key(task, request: dict) -> str:
    """What besides the study's files decides the answer (module docstring), hashed."""
    options = {k: v for k, v in request.items() if k not in NOT_OPTIONS}
    key = {"task": type(task).__name__, "options": options, "task_settings": task_settings(task),
           "models": models_in_use(task), "code": code_version(), "settings": settings()}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


class StoredAnswers:
    """The stored answer of one request (:meth:`find`), or the request's new answer stored (:meth:`store`)."""

    def __init__(self, task, request: dict):
        from strokelabel.study import describe_study

        self.task = task
        self.request = request
        self.reference = Path(request["image"])
        descriptor = describe_study(self.reference)
        self.study_id = descriptor.study_id
        self.key = answer_key(task, request)
        self.sources = study_files(self.reference, descriptor)
        self.sources_before = fingerprint(self.sources, content=True)
        self.folder = derived_folder(self.reference, self.study_id)
        self.derived = DerivedSet(self.folder, self.study_id, f"{WHAT}{self.key[:20]}", self.key, self.sources, content=True)

    def find(self) -> Optional[Tuple[str, Dict]]:
        """The stored answer as MONAI Label's infer returns one (a label file of its own, the result JSON), or None."""
        started = time.perf_counter()
        stored = self.derived.read()
        if stored is None:
            return None
        files, info = stored["files"], stored["info"]
        result = json.loads(json.dumps(info["result"]))
        picture = files.get("summary")
        if picture is not None and self.request.get("model"):  # the study's summary picture is this answer's again
            atomic_write_bytes(summary_picture_path(self.reference, self.study_id, self.request["model"]), picture.read_bytes())
        label = files["label"]
        # The server removes the file it sends: the caller gets a copy, the stored answer stays.
        fd, copy = tempfile.mkstemp(suffix="".join(label.suffixes[-2:]) if label.name.endswith(".nii.gz") else label.suffix)
        os.close(fd)
        shutil.copyfile(label, copy)
        os.utime(self.derived.manifest_path)  # recently used (keep_newest_sets)
        seconds = round(time.perf_counter() - started, 2)
        result.update(reused=True, computed_at=info["computed_at"], computed_latencies=result.get("latencies"),
                      latencies={"pre": 0.0, "infer": 0.0, "invert": 0.0, "post": 0.0, "write": seconds, "total": seconds, "transform": None})
        logger.info("%s: %s answered with the answer stored at %s (%.2f s)", self.study_id, self.request.get("model"), info["computed_at"], seconds)
        return copy, result

    def store(self, label_file: Optional[str], result: Dict) -> None:
        """Keep the answer just computed, unless the study, the model or the code changed while it was computed."""
        if not label_file or not os.path.isfile(label_file):
            return
        after = study_files(self.reference)
        now = {f["name"]: f for f in fingerprint(after, content=True)}
        if any(now.get(f["name"]) != f for f in self.sources_before) or answer_key(self.task, self.request) != self.key:
            logger.info("%s: the study or the model changed during the infer: its answer is not stored", self.study_id)
            return
        self.derived.sources = after  # a PACS study's series fetched by this infer are sources of the answer too
        label = Path(label_file)
        ext = ".nii.gz" if label.name.endswith(".nii.gz") else label.suffix
        files = {"label": atomic_write_bytes(self.derived.path("label", ext), label.read_bytes())}
        picture = summary_picture_path(self.reference, self.study_id, self.request["model"]) if self.request.get("model") else None
        if picture is not None and result.get("summary_url") and picture.is_file():
            files["summary"] = atomic_write_bytes(self.derived.path("summary", ".png"), picture.read_bytes())
        self.derived.store(files, {"computed_at": now_iso(), "result": json.loads(json.dumps(result, default=str))})
        keep_newest_sets(self.folder, self.study_id, WHAT, MAX_ANSWERS_PER_STUDY)


def answer_or_compute(task, request: dict, compute: Callable[[], Tuple[Optional[str], Dict]]) -> Tuple[Optional[str], Dict]:
    """The stored answer of ``request`` when there is a current one, else ``compute()``'s, stored for the next time.
    Anything going wrong with the store costs only the time of computing (never the answer)."""
    if not reuse_wanted(request):
        label_file, result = compute()
        if label_file is not None and request.get("model") and isinstance(result, dict):  # a server's answer, computed
            result["reused"] = False
        return label_file, result
    try:
        stored = StoredAnswers(task, request)
        found = stored.find()
        if found is not None:
            return found
    except Exception as e:  # e.g. a study name off the naming rule: the infer itself says what is wrong
        logger.info("no stored answer for this request (%s): computed", e)
        stored = None
    label_file, result = compute()
    result["reused"] = False
    if stored is not None:
        try:
            stored.store(label_file, result)
        except Exception as e:
            logger.warning("%s: the answer could not be stored for reuse: %s", stored.study_id, e)
    return label_file, result
