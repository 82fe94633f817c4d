"""A stored answer is served again only for the same study (by content), models, options, settings and code;
any change of one of them, a damaged stored file, and a request that is not a server's written answer compute."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from lib.configs.core_penumbra import CorePenumbra
from lib.infers import stored_answers
from strokelabel.brain_extraction import MODE_ENV, extraction_mode
from strokelabel.derived import summary_picture_path
from strokelabel.phantom import generate_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return generate_study(tmp_path_factory.mktemp("answers_study"), "ctp", "ctp0001", seed=31)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("answers_model")
    (model_dir / "shipped").mkdir()
    config = CorePenumbra()
    config.init("core_penumbra", str(model_dir), {}, None)
    torch.manual_seed(0)
    torch.save({"model": config.network.state_dict()}, config.shipped_path)
    return config


def quick_picture(study, label, result, path, task):
    """The summary picture's stand-in (the real one takes 2-3 s to draw): which answer it is of, in its bytes."""
    from strokelabel.derived import atomic_write_bytes

    atomic_write_bytes(path, f"{task} {result.get('method')} {result.get('nihss', '')} {int(np.asarray(label).sum())}".encode())


@pytest.fixture
def ask(config, study, one_torch_thread, monkeypatch):
    import strokelabel.summary

    monkeypatch.setattr(strokelabel.summary, "render_summary", quick_picture)
    task = config.infer()

    def ask(**options):
        # As the server asks (main.StrokeApp.infer): the task's name, the study file, the datastore id.
        request = {"model": "core_penumbra", "image": str(study["reference"]), "image_id": "ctp0001", "device": "cpu", **options}
        label_file, result = task(request)
        label = np.asarray(nib.load(label_file).dataobj)
        os.unlink(label_file)  # as the server does once it has sent it
        return label, result

    return ask


def answers_stored(study) -> list[Path]:
    return sorted(Path(study["reference"]).parent.glob("derivatives/strokelabel/*/*_desc-answer*_manifest.json"))


def test_the_same_request_is_served_the_stored_answer_with_when_it_was_computed(ask, study):
    label, first = ask(method="baseline", nihss="12")
    again_label, again = ask(method="baseline", nihss="12")
    assert first["reused"] is False and again["reused"] is True
    assert np.array_equal(again_label, label) and label.any()
    assert again["computed_at"] and again["computed_latencies"] == first["latencies"]
    figures = {k: v for k, v in first.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert figures and all(again[k] == v for k, v in figures.items())
    # Served from the store, not a file the server has since removed: a third ask is served again.
    assert ask(method="baseline", nihss="12")[1]["reused"] is True
    # The study's summary picture is the one of the answer served: another answer drawn in between is replaced.
    picture = summary_picture_path(study["reference"], "sub-ctp0001_ses-01", "core_penumbra")
    assert picture.read_bytes().startswith(b"core_penumbra baseline")
    ask(method="model", nihss="12")
    assert picture.read_bytes().startswith(b"core_penumbra model")
    assert ask(method="baseline", nihss="12")[1]["reused"] is True and picture.read_bytes().startswith(b"core_penumbra baseline")


def test_other_options_compute_and_a_request_for_intermediate_data_is_never_served_from_the_store(ask, config, study):
    ask(method="baseline", nihss="30")
    assert ask(method="baseline", nihss="31")[1]["reused"] is False
    assert ask(method="model", nihss="30")[1]["reused"] is False
    _, data = config.infer()({"model": "core_penumbra", "image": str(study["reference"]), "method": "baseline", "nihss": "30",
                              "skip_writer": True, "device": "cpu"})
    assert "pred" in data and "reused" not in data["result"]


def test_reuse_false_computes_afresh(ask):
    ask(method="baseline", nihss="32")
    assert ask(method="baseline", nihss="32", reuse="false")[1]["reused"] is False
    assert ask(method="baseline", nihss="32")[1]["reused"] is True


def test_a_new_model_in_use_computes_and_the_earlier_model_back_in_use_is_served_its_own_answer(ask, config):
    original = Path(config.shipped_path).read_bytes()
    label, first = ask(method="model", nihss="33")
    assert ask(method="model", nihss="33")[1]["reused"] is True
    torch.manual_seed(1)
    published = {k: v + 0.5 if v.is_floating_point() else v for k, v in config.network.state_dict().items()}
    torch.save({"model": published}, config.in_use_path)  # a site model published beside the shipped one
    try:
        assert ask(method="model", nihss="33")[1]["reused"] is False
        assert ask(method="model", nihss="33")[1]["reused"] is True
    finally:
        os.unlink(config.in_use_path)  # rolled back: the shipped model is in use again
    back_label, back = ask(method="model", nihss="33")
    assert back["reused"] is True and np.array_equal(back_label, label)
    assert Path(config.shipped_path).read_bytes() == original


def test_a_study_file_rewritten_with_the_same_size_and_modification_time_computes(ask, study):
    ask(method="baseline", nihss="34")
    assert ask(method="baseline", nihss="34")[1]["reused"] is True
    tmax = next(Path(study["reference"]).parent.glob("*_tmax.nii.gz"))
    before, raw = tmax.stat(), tmax.read_bytes()
    # Other bytes, same size and modification time: the gzip header's own time stamp (bytes 4-7) changed.
    tmax.write_bytes(raw[:4] + bytes(b ^ 0xFF for b in raw[4:8]) + raw[8:])
    os.utime(tmax, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (tmax.stat().st_size, tmax.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns) and tmax.read_bytes() != raw
    assert ask(method="baseline", nihss="34")[1]["reused"] is False
    assert ask(method="baseline", nihss="34")[1]["reused"] is True  # the answer of the study as it is now
    os.utime(tmax)  # touched, not changed (the PACS cache marks the files it reads as used): still the same study
    assert ask(method="baseline", nihss="34")[1]["reused"] is True


def test_a_change_of_the_code_or_of_the_settings_computes(ask, monkeypatch):
    ask(method="baseline", nihss="35")
    assert ask(method="baseline", nihss="35")[1]["reused"] is True
    monkeypatch.setattr(stored_answers, "code_version", lambda: "another version of the app")
    assert ask(method="baseline", nihss="35")[1]["reused"] is False
    monkeypatch.setenv(MODE_ENV, "off" if extraction_mode() == "auto" else "auto")
    assert ask(method="baseline", nihss="35")[1]["reused"] is False


def test_a_damaged_or_unreadable_stored_answer_is_computed_again_not_served(ask, study):
    label, _ = ask(method="baseline", nihss="7")
    manifest = max(answers_stored(study), key=lambda p: p.stat().st_mtime_ns)  # this answer's, just stored
    stored_label = manifest.parent / json.loads(manifest.read_text())["files"]["label"]
    stored_label.write_bytes(stored_label.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    again_label, again = ask(method="baseline", nihss="7")
    assert again["reused"] is False and np.array_equal(again_label, label)
    assert ask(method="baseline", nihss="7")[1]["reused"] is True  # stored whole again
    manifest.write_text("{not json")
    assert ask(method="baseline", nihss="7")[1]["reused"] is False


def test_the_stored_answers_of_a_study_are_bounded_the_least_recently_used_removed(ask, study, monkeypatch):
    monkeypatch.setattr(stored_answers, "MAX_ANSWERS_PER_STUDY", 2)
    made = []
    for nihss in ("20", "21", "22"):
        ask(method="baseline", nihss=nihss)
        made.append(max(answers_stored(study), key=lambda p: p.stat().st_mtime_ns))
    kept = answers_stored(study)
    assert len(kept) == 2 and set(kept) == set(made[1:])
    folder = kept[0].parent
    named = {p.name.split("_desc-")[1].split("_")[0] for p in folder.iterdir() if "_desc-answer" in p.name}
    assert named == {p.name.split("_desc-")[1].split("_")[0] for p in kept}  # no file of a removed answer is left
