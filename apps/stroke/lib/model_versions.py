"""A model's versions and the one in use: list them, put one back in use, retire the published one.

Layout (``lib.checkpoints``), per model (a trainer's name: ``core_penumbra``, ``ischemic_lesion_mri``, ...):

- ``model/shipped/<name>.pt``: the starting model. **The server never writes, renames or deletes it**;
  it is in use whenever no site model is published.
- ``model/<name>.pt``: the site's published model, in use when it exists.
- ``model/<name>/versions/<version>.pt`` + ``.json``: every candidate a training run produced (with its
  figures, training data, date, who started the run and the publish decision), every model uploaded,
  and every published model when it is retired: a version is never deleted by the server.
- ``model/<name>/history.jsonl``: one line per change of the model in use (publish, use, retire,
  upload), which is how "the previous model" is known. The same change is a line in the audit log.

Which version is in use is read from the file in use itself (its sha256 against the versions'), never
from a pointer that could disagree with it. Every change is one atomic filesystem operation under a
lock per model: ``os.replace`` of ``model/<name>.pt`` by a complete, fsynced copy of a version, or
its ``unlink`` (the shipped model is in use again). A ``kill -9`` at any point leaves the old or the
new model in use, whole, never none; the history line is written after the switch.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable

from lib.checkpoints import checkpoint_in_use, model_paths
from strokelabel.derived import atomic_write_bytes, file_sha256
from strokelabel.errors import StrokeLabelError

SHIPPED = "shipped"
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")


class VersionError(StrokeLabelError):
    """A lifecycle request that cannot be done; ``status`` is its HTTP status (404 unknown, 409 conflict)."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def versions_dir(model_dir: str | Path, name: str) -> Path:
    return Path(model_dir) / name / "versions"


def history_path(model_dir: str | Path, name: str) -> Path:
    return Path(model_dir) / name / "history.jsonl"


def sha256_of(path: str | Path) -> str:
    """sha256 of a checkpoint (/info asks for it on every call): the app's one memoised file hash,
    :func:`strokelabel.derived.file_sha256`."""
    return file_sha256(path)


@contextlib.contextmanager
def model_lock(model_dir: str | Path, name: str):
    """One change of ``name``'s model in use at a time, across the server and its training children."""
    lock_path = Path(model_dir) / name / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _version_files(model_dir, name) -> Dict[str, Path]:
    folder = versions_dir(model_dir, name)
    return {p.stem: p for p in sorted(folder.glob("*.pt"))} if folder.is_dir() else {}


def _record(path: Path) -> Dict[str, Any]:
    meta = path.with_suffix(".json")
    try:
        return json.loads(meta.read_text()) if meta.exists() else {}
    except (OSError, ValueError):
        return {"record_error": f"{meta.name} is not readable JSON"}


def history(model_dir, name) -> list[Dict[str, Any]]:
    """The changes of ``name``'s model in use, oldest first (a torn last line after a crash is skipped)."""
    path = history_path(model_dir, name)
    entries = []
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
    return entries


def in_use(model_dir, name) -> Dict[str, Any]:
    """What serves ``name`` now: ``{"version": <version> | "shipped" | "unversioned" | None, "sha256", "path"}``."""
    shipped, published = model_paths(str(model_dir), name)
    path = checkpoint_in_use([shipped, published])
    if path is None:
        return {"version": None, "sha256": None, "path": None}
    digest = sha256_of(path)
    if path == shipped:
        return {"version": SHIPPED, "sha256": digest, "path": path}
    for version, file in _version_files(model_dir, name).items():
        if sha256_of(file) == digest:
            return {"version": version, "sha256": digest, "path": path}
    return {"version": "unversioned", "sha256": digest, "path": path}


def retired_versions(entries: Iterable[Dict[str, Any]]) -> set[str]:
    retired: set[str] = set()
    for entry in entries:
        if entry.get("retired"):
            retired.add(entry["retired"])
        if entry.get("in_use"):
            retired.discard(entry["in_use"])
    return retired


def list_versions(model_dir, name) -> Dict[str, Any]:
    """Every version of ``name`` with its record (figures, training data, date, who, decision), which
    is in use, which are retired, and the shipped starting model."""
    current = in_use(model_dir, name)
    entries = history(model_dir, name)
    retired = retired_versions(entries)
    versions = []
    for version, file in _version_files(model_dir, name).items():
        record = {k: v for k, v in _record(file).items() if k != "version_path"}
        versions.append({**record, "version": version, "sha256": sha256_of(file), "in_use": version == current["version"],
                         "retired": version in retired, "created": record.get("created") or _mtime_iso(file)})
    versions.sort(key=lambda v: (v["created"], v["version"]))
    shipped, _ = model_paths(str(model_dir), name)
    shipped_entry = None
    if os.path.exists(shipped):
        card = _record(Path(shipped))
        shipped_entry = {"version": SHIPPED, "sha256": sha256_of(shipped), "in_use": current["version"] == SHIPPED,
                         "read_only": True, "card": card}
    return {"model": name, "in_use": current["version"], "in_use_sha256": current["sha256"], "versions": versions,
            "shipped": shipped_entry, "history": entries[-50:]}


def _mtime_iso(path: Path) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(path.stat().st_mtime))


def _keep_unversioned(model_dir, name, published: str, by: str) -> str:
    """The published file has no version record (copied in by hand, or from before versions existed):
    keep its bytes as a version before anything replaces it."""
    version = f"{name}_kept_{time.strftime('%Y%m%d_%H%M%S')}"
    target = versions_dir(model_dir, name) / f"{version}.pt"
    atomic_write_bytes(target, Path(published).read_bytes())
    record = {"version": version, "created": now_iso(), "origin": "the published model had no version record; kept when it was replaced",
              "kept_by": by, "sha256": sha256_of(target)}
    atomic_write_bytes(target.with_suffix(".json"), json.dumps(record, indent=2).encode())
    return version


def _switch_to(model_dir, name, version: str) -> None:
    """The one atomic step: ``model/<name>.pt`` becomes a whole copy of ``version`` (os.replace), or
    disappears so that the shipped model serves (unlink)."""
    _, published = model_paths(str(model_dir), name)
    if version == SHIPPED:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(published)
        _fsync_dir(os.path.dirname(published))
        return
    source = versions_dir(model_dir, name) / f"{version}.pt"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.pt.", suffix=".tmp", dir=os.path.dirname(published))
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fchmod(out.fileno(), 0o644)
            os.fsync(out.fileno())
        os.replace(tmp, published)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(os.path.dirname(published))


def remove_unfinished_copies(model_dir) -> list[str]:
    """At server start (no training child runs yet): the temporary copies a kill -9 left mid-switch
    (``.<name>.pt.*.tmp`` beside the models; never read as a model)."""
    removed = []
    for tmp in Path(model_dir).glob(".*.pt.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp.name)
    return removed


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record_change(model_dir, name, action: str, now_in_use: str | None, previous: str | None, by: str, **extra) -> Dict[str, Any]:
    entry = {"time": now_iso(), "action": action, "in_use": now_in_use, "previous": previous, "by": by, **extra}
    path = history_path(model_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:  # one short line per write: appends stay whole
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
    from lib.access_control import audit_event

    audit_event(Path(model_dir).parent, {"user": by, "method": extra.get("method", "MODEL"), "path": extra.get("path", f"/model/{name}"),
                                         "model": name, "event": f"model {action}", "version": now_in_use, "previous": previous,
                                         **({"federation": extra["federation"]} if "federation" in extra else {}), "status": 200})
    return entry


def _check_name(model_dir, name: str, version: str) -> None:
    if version == SHIPPED:
        shipped, _ = model_paths(str(model_dir), name)
        if not os.path.exists(shipped):
            raise VersionError(f"{name} has no shipped starting model", 404)
        return
    if not VERSION_NAME.match(version or "") or version not in _version_files(model_dir, name):
        known = sorted(_version_files(model_dir, name)) + ([SHIPPED] if os.path.exists(model_paths(str(model_dir), name)[0]) else [])
        raise VersionError(f"{name} has no version {version!r}; versions: {known}", 404)
    record = _record(versions_dir(model_dir, name) / f"{version}.pt")
    recorded = record.get("sha256")
    if recorded and recorded != sha256_of(versions_dir(model_dir, name) / f"{version}.pt"):
        raise VersionError(f"{name} version {version}: its file changed since it was recorded (sha256 differs); not put in use")


def use_version(model_dir, name: str, version: str, by: str, action: str = "use", **extra) -> Dict[str, Any]:
    """Put ``version`` (or ``"shipped"``) in use for ``name``; the model it replaces stays a version."""
    _check_name(model_dir, name, version)
    with model_lock(model_dir, name):
        before = in_use(model_dir, name)
        if before["version"] == version:
            return {"model": name, "in_use": version, "previous": version, "changed": False}
        previous = before["version"]
        if previous == "unversioned":
            previous = _keep_unversioned(model_dir, name, before["path"], by)
        _switch_to(model_dir, name, version)
        _record_change(model_dir, name, action, version, previous, by, **extra)
    return {"model": name, "in_use": version, "previous": previous, "changed": True}


def previous_in_use(model_dir, name: str, current: str | None, retired: set[str]) -> str | None:
    """The model in use before ``current`` that is still there and not retired, else the shipped one,
    else None. Read from the history; a site without one (versions from before it) goes by the
    published versions' dates."""
    entries = history(model_dir, name)
    lineage = [entries[0].get("previous")] if entries else []  # what served before the first recorded change
    lineage += [e.get("in_use") for e in entries if "in_use" in e]
    if not entries:
        records = [(v.get("created", ""), k) for k, v in ((k, _record(p)) for k, p in _version_files(model_dir, name).items()) if v.get("published")]
        lineage = [k for _, k in sorted(records)]
    existing = set(_version_files(model_dir, name))
    shipped, _ = model_paths(str(model_dir), name)
    for candidate in reversed(lineage):
        if candidate and candidate != current and candidate not in retired and candidate in existing:
            return candidate
        if candidate == SHIPPED and os.path.exists(shipped):
            return SHIPPED
    return SHIPPED if os.path.exists(shipped) else None


def retire(model_dir, name: str, by: str, **extra) -> Dict[str, Any]:
    """``DELETE /model/<name>``: retire the site's published model (kept as a version, marked retired)
    and put the previous one back in use, else the shipped one. The shipped model is never touched."""
    with model_lock(model_dir, name):
        before = in_use(model_dir, name)
        current = before["version"]
        if current is None:
            raise VersionError(f"{name} has no model in use: nothing to retire", 404)
        if current == SHIPPED:
            raise VersionError(f"{name}: the shipped starting model is in use; the server never deletes it (no site model to retire)")
        if current == "unversioned":
            current = _keep_unversioned(model_dir, name, before["path"], by)
        retired = retired_versions(history(model_dir, name)) | {current}
        target = previous_in_use(model_dir, name, current, retired)
        if target is None:  # no shipped model, no earlier version: the training-free baseline serves
            target_label = None
            _switch_to(model_dir, name, SHIPPED)
        else:
            target_label = target
            _switch_to(model_dir, name, target)
        _record_change(model_dir, name, "retire", target_label, current, by, retired=current, **extra)
    return {"model": name, "retired": current, "in_use": target_label, "serves": "model" if target_label else "baseline"}


def publish(model_dir, name: str, version: str, by: str, **extra) -> Dict[str, Any]:
    """A training run's candidate that passed the no-regression rule becomes the model in use."""
    return use_version(model_dir, name, version, by, action="publish", **extra)


def add_version(model_dir, name: str, version: str, data: bytes, record: Dict[str, Any]) -> Path:
    """Store a new version (bytes, then its record with the sha256) atomically."""
    if not VERSION_NAME.match(version):
        raise VersionError(f"{version!r} is not a version name", 400)
    target = versions_dir(model_dir, name) / f"{version}.pt"
    atomic_write_bytes(target, data)
    atomic_write_bytes(target.with_suffix(".json"), json.dumps({**record, "version": version, "sha256": sha256_of(target)}, indent=2).encode())
    return target


def training_record(request: Dict[str, Any], train_datalist, val_datalist, version_path: str | Path) -> Dict[str, Any]:
    """What a version record says about the run that made it: date, who started it, the training data
    (study counts and the provenance of their labels) and the candidate's sha256."""
    def provenance(d) -> str:
        if d.get("provenance"):
            return str(d["provenance"])
        return "saved label, provenance not recorded" if f"{os.sep}labels{os.sep}" in str(d.get("label", "")) else "data set's expert mask"

    return {
        "created": now_iso(),
        "trained_by": request.get("started_by") or "not recorded",
        "training_data": {"studies": len(train_datalist) + len(val_datalist), "train_studies": len(train_datalist),
                          "val_studies": len(val_datalist),
                          "label_provenance": dict(collections.Counter(provenance(d) for d in list(train_datalist) + list(val_datalist)))},
        "sha256": sha256_of(version_path),
    }
