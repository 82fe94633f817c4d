"""The one cache policy for derived and fetched files: reuse while the sources are unchanged, atomic files,
a crash mid-way never leaves a set that is used, and a bounded cache of fetched studies."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from strokelabel.derived import DerivedSet, atomic_write_bytes, cached_figures, prune_cache


def test_a_set_is_made_once_reused_while_its_source_is_unchanged_and_made_again_when_it_changes(tmp_path):
    source = tmp_path / "series.bin"
    source.write_bytes(b"a")
    calls = []

    def make(target):
        calls.append(1)
        return {"x": atomic_write_bytes(target.path("x", ".txt"), f"made from {source.read_bytes()!r}".encode())}, {"n": len(calls)}

    first = DerivedSet(tmp_path / "d", "sub-a_ses-1", "test", "1", [source]).get_or_make(make)
    again = DerivedSet(tmp_path / "d", "sub-a_ses-1", "test", "1", [source]).get_or_make(make)
    assert first["reused"] is False and again["reused"] is True and len(calls) == 1
    time.sleep(0.01)
    source.write_bytes(b"bb")  # a new series: the maps of the old one must not be served
    changed = DerivedSet(tmp_path / "d", "sub-a_ses-1", "test", "1", [source]).get_or_make(make)
    assert changed["reused"] is False and b"bb" in changed["files"]["x"].read_bytes()
    newer_code = DerivedSet(tmp_path / "d", "sub-a_ses-1", "test", "2", [source]).get_or_make(make)
    assert newer_code["reused"] is False and len(calls) == 3


def test_a_crash_while_making_leaves_no_set_that_would_be_used(tmp_path):
    source = tmp_path / "series.bin"
    source.write_bytes(b"a")
    derived = DerivedSet(tmp_path / "d", "sub-a_ses-1", "test", "1", [source])

    def crash(target):
        atomic_write_bytes(target.path("x", ".txt"), b"half")
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError):
        derived.get_or_make(crash)
    assert derived.read() is None  # no manifest: the half-made set is made again next time
    assert not [p for p in (tmp_path / "d").iterdir() if p.name.endswith(".tmp")]


def test_the_fetched_cache_drops_old_then_least_recently_used_studies_and_never_labels(tmp_path):
    def study(name: str, mb: float, age_days: float):
        folder = tmp_path / name
        folder.mkdir()
        data = folder / "image.nii.gz"
        data.write_bytes(np.zeros(int(mb * 1e6), np.uint8).tobytes())
        when = time.time() - age_days * 86400
        os.utime(data, (when, when))
        return folder

    old, lru, recent = study("old", 1, 30), study("lru", 3, 2), study("recent", 3, 0.1)
    labels = study("labels", 5, 100)
    prune_cache(tmp_path, max_bytes=4e6, max_age_s=7 * 86400)
    assert not old.exists() and not lru.exists() and recent.exists() and labels.exists()


def test_cached_figures_are_reused_while_the_sources_and_version_hold_and_made_again_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("STROKELABEL_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "dwi.nii.gz"
    source.write_bytes(b"a")
    calls = []

    def make():
        calls.append(1)
        return {"offset_vox": 1.25 + len(calls), "shape": [4, 4, 2]}

    first = cached_figures("plane", "1", [source], make)
    assert cached_figures("plane", "1", [source], make) == first and len(calls) == 1
    assert cached_figures("plane", "2", [source], make) != first and len(calls) == 2  # another version of the code
    time.sleep(0.01)
    source.write_bytes(b"bb")  # the study changed: never the old figures
    assert cached_figures("plane", "1", [source], make)["offset_vox"] == 1.25 + 3
    (entry,) = [p for p in (tmp_path / "cache" / "figures" / "plane").iterdir() if "offset_vox\": 4.25" in p.read_text()]
    entry.write_text("{not json")  # a damaged entry is made again, not an error
    assert cached_figures("plane", "1", [source], make)["offset_vox"] == 1.25 + 4 and len(calls) == 4


def test_cached_figures_are_made_without_a_writable_cache(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("STROKELABEL_CACHE_DIR", str(blocked))
    source = tmp_path / "dwi.nii.gz"
    source.write_bytes(b"a")
    assert cached_figures("plane", "1", [source], lambda: {"x": 1}) == {"x": 1}
