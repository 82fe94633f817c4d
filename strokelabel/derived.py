"""The one cache policy for every file the app derives from a study (maps computed from a 4D
series now; fetched PACS series and summary pictures follow the same rule).

- **Where**: beside the study, in ``<study folder>/derivatives/strokelabel/<study id>/``, so a viewer
  (3D Slicer, ITK-SNAP) opens them next to the source and the datastore never lists them
  (``derivatives`` is never searched for studies). When the study folder is read-only, under
  ``$STROKELABEL_CACHE_DIR`` (default ``~/.cache/strokelabel``), keyed by the folder's path.
- **Valid while the sources are unchanged**: a manifest records each source file's size and
  modification time and the producing step's version; any difference, a missing file or an
  unreadable manifest means the set is made again. A manifest is written last, so a set without
  one (a crash mid-way) is never used.
- **Atomic**: every file goes to a temporary name in the same folder, is fsynced and renamed,
  so a reader sees the old file or the new one, never half of one.
- **Once**: a file lock per set keeps two requests from computing the same maps twice.
- **Bounded** where it holds copies of patient images fetched from elsewhere (the PACS cache):
  :func:`prune_cache` removes what was not used for a set time, then the least recently used,
  down to a size; saved labels are never removed.

Figures a step derives from a study that no viewer opens (a study's mid-sagittal plane: a few
numbers that cost 1-2 CPU-s a load, asked for by every infer, training epoch, validation and
scoring run of the study) follow the same validity rule in :func:`cached_figures`, but live in the
app's cache (``$STROKELABEL_CACHE_DIR/figures/<what>/``), keyed by the sources' paths, sizes and
modification times: nothing is written beside a study for them, and a read-only study needs no
fallback.
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
from typing import Callable, Iterable

import nibabel as nib
import numpy as np
from filelock import FileLock

logger = logging.getLogger(__name__)

CACHE_ENV = "STROKELABEL_CACHE_DIR"
SUBFOLDER = Path("derivatives") / "strokelabel"
#: cached figures kept per step before the oldest quarter is removed (a figure file is ~300 bytes)
MAX_FIGURES = 20000


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide the file from a viewer or web server run as another user
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save_nifti(array: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """A NIfTI written atomically (``.nii.gz`` compressed by its name)."""
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    data = img.to_bytes()
    if str(path).endswith(".gz"):
        import gzip

        data = gzip.compress(data, compresslevel=1)
    return atomic_write_bytes(path, data)


def fingerprint(paths: Iterable[Path], content: bool = False) -> list[dict]:
    """Each file's name, size and modification time; with ``content``, its sha256 in place of the time (a reader
    touching a file, as the PACS cache's :func:`mark_used` does, leaves its content the same)."""
    out = []
    for p in paths:
        st = Path(p).stat()
        entry = {"name": Path(p).name, "size": st.st_size}
        entry.update({"sha256": file_sha256(p)} if content else {"mtime_ns": st.st_mtime_ns})
        out.append(entry)
    return out


_SHA256_SEEN: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, remembered per (path, inode, size, modification and change times) in this
    process: a file rewritten in place gets a new change time even when its modification time is set back."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _SHA256_SEEN:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if len(_SHA256_SEEN) > 4096:  # a long-running server sees many studies; the memo stays small
            _SHA256_SEEN.clear()
        _SHA256_SEEN[key] = digest.hexdigest()
    return _SHA256_SEEN[key]


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe"):
            return True
    except OSError:
        return False


def cache_root() -> Path:
    """The app's own cache folder (``$STROKELABEL_CACHE_DIR``, default ``~/.cache/strokelabel``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "strokelabel")


def derived_folder(reference: str | Path, study_id: str) -> Path:
    """Where the derived files of the study of ``reference`` live (module docstring)."""
    reference = Path(reference).resolve()
    beside = reference.parent / SUBFOLDER / study_id
    if _writable(beside):
        return beside
    key = hashlib.sha256(str(reference.parent).encode()).hexdigest()[:16]
    fallback = cache_root() / "derived" / key / study_id
    fallback.mkdir(parents=True, exist_ok=True)
    logger.info("%s is read-only: derived files of %s go to %s", reference.parent, study_id, fallback)
    return fallback


def summary_picture_path(reference: str | Path, study_id: str, task: str) -> Path:
    """The one-page summary picture of ``task``'s latest answer on the study (:mod:`strokelabel.summary`)."""
    return derived_folder(reference, study_id) / f"{study_id}_summary-{task.replace('_', '')}.png"


class DerivedSet:
    """A named set of files derived from ``sources`` by one step (``what``, ``version``).

    ``content=True`` fingerprints the sources by their bytes (sha256) besides size and modification time, and
    records the sha256 of every derived file, checked on each read: a set made from a study replaced under the
    same name, or a derived file damaged since, is made again, never served (the stored answers of
    ``lib/infers/stored_answers.py``, where serving a stale answer would be wrong, not only slow)."""

    def __init__(self, folder: Path, study_id: str, what: str, version: str, sources: Iterable[Path], content: bool = False):
        self.folder = Path(folder)
        self.study_id = study_id
        self.what = what
        self.version = version
        self.sources = [Path(s) for s in sources]
        self.content = content
        self.manifest_path = self.folder / f"{study_id}_desc-{what}_manifest.json"

    def _expected(self) -> dict:
        return {"what": self.what, "version": self.version, "sources": fingerprint(self.sources, self.content)}

    def read(self) -> dict | None:
        """The manifest (``files``: name -> path, ``info``) when the set is complete and current, else None."""
        try:
            manifest = json.loads(self.manifest_path.read_text())
            if any(manifest.get(k) != v for k, v in self._expected().items()):
                return None
            files = {name: self.folder / rel for name, rel in manifest.get("files", {}).items()}
            if not all(p.exists() for p in files.values()):
                return None
            if self.content and any(manifest.get("checksums", {}).get(name) != file_sha256(p) for name, p in files.items()):
                logger.warning("%s: a file of %s no longer matches its checksum: made again", self.study_id, self.manifest_path.name)
                return None
        except (OSError, ValueError, AttributeError, TypeError):  # unreadable, not a manifest, a source gone
            return None
        return {"files": files, "info": manifest.get("info", {})}

    def store(self, files: dict, info: dict) -> dict:
        """Record the set ``files`` (``{name: path}``, already written in :attr:`folder`) made with ``info``:
        the manifest is written last, atomically, so a set is either whole and current or absent."""
        manifest = {**self._expected(), "files": {n: Path(p).name for n, p in files.items()}, "info": info}
        if self.content:
            manifest["checksums"] = {n: file_sha256(p) for n, p in files.items()}
        atomic_write_bytes(self.manifest_path, json.dumps(manifest, indent=1).encode())
        return {"files": {n: Path(p) for n, p in files.items()}, "info": info, "reused": False}

    def get_or_make(self, make: Callable[["DerivedSet"], tuple[dict, dict]]) -> dict:
        """The current set, made by ``make(self)`` when missing or stale.

        ``make`` writes its files (with :meth:`path` and the atomic writers) and returns
        ``({name: path}, info)``; the manifest is written after them."""
        current = self.read()
        if current is not None:
            return {**current, "reused": True}
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.manifest_path) + ".lock"):
            current = self.read()  # made by another request while this one waited
            if current is not None:
                return {**current, "reused": True}
            files, info = make(self)
            return self.store(files, info)

    def path(self, suffix: str, ext: str = ".nii.gz") -> Path:
        """The path of one derived file, named by the study naming rule (``<study id>_desc-<what>_<suffix>``)."""
        return self.folder / f"{self.study_id}_desc-{self.what}_{suffix}{ext}"

    def remove(self) -> None:
        """Remove the set: its manifest first (the set is then absent), then its files."""
        try:
            manifest = json.loads(self.manifest_path.read_text())
            names = list(manifest.get("files", {}).values())
        except (OSError, ValueError, AttributeError):
            names = []
        self.manifest_path.unlink(missing_ok=True)
        for name in names:
            (self.folder / Path(name).name).unlink(missing_ok=True)


def keep_newest_sets(folder: Path, study_id: str, what_prefix: str, keep: int) -> None:
    """Bound the sets of ``study_id`` in ``folder`` whose step name starts with ``what_prefix`` to the ``keep``
    most recently used (a manifest's modification time; readers touch it): the older ones are removed whole."""
    prefix = f"{study_id}_desc-{what_prefix}"
    manifests = sorted((p for p in Path(folder).glob(f"{prefix}*_manifest.json")), key=lambda p: p.stat().st_mtime, reverse=True)
    for manifest in manifests[keep:]:
        what = manifest.name[len(f"{study_id}_desc-"):-len("_manifest.json")]
        DerivedSet(folder, study_id, what, "", []).remove()


@functools.lru_cache(maxsize=None)  # code does not change under a running process
def code_fingerprint(*modules: str) -> str:
    """A short hash of the source code of ``modules`` (dotted names): part of a cached figure's version, so that
    a change of the code that computes it (or of what it reads through) makes the figure again."""
    import importlib.util

    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        digest.update(name.encode() + b"\0" + (Path(spec.origin).read_bytes() if spec and spec.origin else b"?"))
    return digest.hexdigest()[:16]


def cached_figures(what: str, version: str, sources: Iterable[Path], make: Callable[[], dict]) -> dict:
    """The JSON figures ``make()`` derives from the files ``sources``, from the app's cache while the sources
    (path, size, modification time) and ``version`` are unchanged (module docstring); made and stored
    atomically otherwise. An unreadable entry is made again; a cache that cannot be written only costs the
    time ``make`` takes."""
    sources = [Path(s).resolve() for s in sources]
    key = {"what": what, "version": version,
           "sources": [{"path": str(p), **{k: v for k, v in f.items() if k != "name"}} for p, f in zip(sources, fingerprint(sources))]}
    folder = cache_root() / "figures" / what
    path = folder / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32] + ".json")
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return stored["figures"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    figures = make()
    try:
        atomic_write_bytes(path, json.dumps({"key": key, "figures": figures}).encode())
        _bound(folder, MAX_FIGURES)
    except OSError as e:
        logger.warning("%s of %s not cached (%s): it is computed again on the next load", what, sources[0].name if sources else "?", e)
    return figures


def _bound(folder: Path, max_entries: int) -> None:
    """Keep at most ``max_entries`` files in ``folder``: past it, the oldest quarter goes."""
    entries = [e for e in os.scandir(folder) if e.name.endswith(".json")]
    if len(entries) <= max_entries:
        return
    entries.sort(key=lambda e: e.stat().st_mtime)
    for entry in entries[: len(entries) // 4]:
        Path(entry.path).unlink(missing_ok=True)


def prune_cache(cache: Path, max_bytes: float, max_age_s: float) -> None:
    """Remove cached studies (the folders under ``cache``) not used for ``max_age_s``, then the least
    recently used ones until the cache is under ``max_bytes``; saved labels (``labels/``) are never
    removed. Last use is the newest modification time in a study's folder (readers touch it: :func:`mark_used`)."""
    studies = [d for d in cache.iterdir() if d.is_dir() and d.name not in ("labels", ".locks")] if cache.exists() else []
    used = {d: max((p.stat().st_mtime for p in d.rglob("*") if p.is_file()), default=d.stat().st_mtime) for d in studies}
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


def mark_used(path: str | Path) -> None:
    """Record a use of the cached study holding ``path`` (for :func:`prune_cache`; access times are often not kept)."""
    try:
        os.utime(path)
    except OSError:
        pass
