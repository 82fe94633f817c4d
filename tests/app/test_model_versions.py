"""The model lifecycle's rules on a model folder (lib/model_versions.py): which version is in use, putting one
back, retiring the published one to the previous (else the shipped) model, history and audit lines, and the
shipped file never touched."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from lib import model_versions as mv

NAME = "core_penumbra"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model_dir(tmp_path) -> Path:
    (tmp_path / "model" / "shipped").mkdir(parents=True)
    (tmp_path / "model" / "shipped" / f"{NAME}.pt").write_bytes(b"shipped weights")
    return tmp_path / "model"


def add(model_dir, version: str, data: bytes, published: bool = True, created: str = "") -> None:
    mv.add_version(model_dir, NAME, version, data, {"published": published, "created": created or mv.now_iso(), "candidate_val_dice": 0.5})


def audit_lines(model_dir) -> list[dict]:
    path = model_dir.parent / "logs" / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_shipped_model_is_in_use_until_a_version_is_published(model_dir):
    assert mv.in_use(model_dir, NAME)["version"] == mv.SHIPPED
    add(model_dir, "v1", b"weights one")
    mv.publish(model_dir, NAME, "v1", by="adam")
    assert mv.in_use(model_dir, NAME)["version"] == "v1"
    assert (model_dir / f"{NAME}.pt").read_bytes() == b"weights one"
    listing = mv.list_versions(model_dir, NAME)
    assert listing["in_use"] == "v1" and [v["version"] for v in listing["versions"]] == ["v1"]
    assert listing["versions"][0]["in_use"] and listing["shipped"]["read_only"] and not listing["shipped"]["in_use"]
    assert audit_lines(model_dir)[-1] | {"time": None} == {"time": None, "user": "adam", "method": "MODEL", "path": f"/model/{NAME}",
                                                          "model": NAME, "event": "model publish", "version": "v1", "previous": "shipped",
                                                          "status": 200}


def test_delete_retires_the_published_model_to_the_previous_one_then_to_the_shipped_one(model_dir):
    shipped_hash = sha(model_dir / "shipped" / f"{NAME}.pt")
    add(model_dir, "v1", b"weights one")
    add(model_dir, "v2", b"weights two")
    mv.publish(model_dir, NAME, "v1", by="run")
    mv.publish(model_dir, NAME, "v2", by="run")

    first = mv.retire(model_dir, NAME, by="adam")
    assert first == {"model": NAME, "retired": "v2", "in_use": "v1", "serves": "model"}
    assert (model_dir / f"{NAME}.pt").read_bytes() == b"weights one"
    second = mv.retire(model_dir, NAME, by="adam")
    assert second["retired"] == "v1" and second["in_use"] == mv.SHIPPED
    assert not (model_dir / f"{NAME}.pt").exists() and mv.in_use(model_dir, NAME)["version"] == mv.SHIPPED

    # The shipped model is never deleted: a further DELETE is a 409 naming that, and its file is unchanged.
    with pytest.raises(mv.VersionError) as refused:
        mv.retire(model_dir, NAME, by="adam")
    assert refused.value.status == 409 and "shipped" in str(refused.value)
    assert sha(model_dir / "shipped" / f"{NAME}.pt") == shipped_hash
    listing = mv.list_versions(model_dir, NAME)
    assert {v["version"]: v["retired"] for v in listing["versions"]} == {"v1": True, "v2": True}  # kept, as versions
    assert [e["action"] for e in listing["history"]] == ["publish", "publish", "retire", "retire"]


def test_previous_means_the_model_in_use_before_not_the_newest_version(model_dir):
    for k in (1, 2, 3):
        add(model_dir, f"v{k}", f"weights {k}".encode())
    mv.publish(model_dir, NAME, "v1", by="run")
    mv.publish(model_dir, NAME, "v3", by="run")
    mv.use_version(model_dir, NAME, "v2", by="adam")  # a rollback to a version kept aside
    assert mv.retire(model_dir, NAME, by="adam")["in_use"] == "v3"  # v3 served before v2


def test_a_retired_version_can_be_put_back_in_use_and_is_then_no_longer_retired(model_dir):
    add(model_dir, "v1", b"weights one")
    mv.publish(model_dir, NAME, "v1", by="run")
    mv.retire(model_dir, NAME, by="adam")
    answer = mv.use_version(model_dir, NAME, "v1", by="adam")
    assert answer == {"model": NAME, "in_use": "v1", "previous": mv.SHIPPED, "changed": True}
    assert not mv.list_versions(model_dir, NAME)["versions"][0]["retired"]
    assert mv.use_version(model_dir, NAME, "v1", by="adam")["changed"] is False  # already in use: nothing recorded
    assert len(mv.history(model_dir, NAME)) == 3


def test_unknown_or_malformed_versions_are_404s_naming_the_known_ones(model_dir):
    add(model_dir, "v1", b"weights one")
    for bad in ("v9", "../shipped/core_penumbra", "/etc/passwd", "", "v1/../../x"):
        with pytest.raises(mv.VersionError) as refused:
            mv.use_version(model_dir, NAME, bad, by="adam")
        assert refused.value.status == 404 and "v1" in str(refused.value) and "shipped" in str(refused.value)
    with pytest.raises(mv.VersionError) as no_shipped:
        mv.use_version(model_dir, "clot_region_classifier", mv.SHIPPED, by="adam")
    assert no_shipped.value.status == 404


def test_a_version_whose_file_changed_since_it_was_recorded_is_not_put_in_use(model_dir):
    add(model_dir, "v1", b"weights one")
    (mv.versions_dir(model_dir, NAME) / "v1.pt").write_bytes(b"tampered")
    with pytest.raises(mv.VersionError) as refused:
        mv.use_version(model_dir, NAME, "v1", by="adam")
    assert refused.value.status == 409 and "changed" in str(refused.value)
    assert mv.in_use(model_dir, NAME)["version"] == mv.SHIPPED


def test_a_published_file_without_a_version_is_kept_as_one_before_it_is_replaced(model_dir):
    (model_dir / f"{NAME}.pt").write_bytes(b"copied in by hand")
    assert mv.in_use(model_dir, NAME)["version"] == "unversioned"
    answer = mv.retire(model_dir, NAME, by="adam")
    kept = answer["retired"]
    assert kept.startswith(f"{NAME}_kept_") and answer["in_use"] == mv.SHIPPED
    assert (mv.versions_dir(model_dir, NAME) / f"{kept}.pt").read_bytes() == b"copied in by hand"


def test_a_hand_published_model_replaced_by_a_version_comes_back_when_that_version_is_retired(model_dir):
    (model_dir / f"{NAME}.pt").write_bytes(b"copied in by hand")
    add(model_dir, "v1", b"weights one")
    kept = mv.use_version(model_dir, NAME, "v1", by="adam")["previous"]
    assert kept.startswith(f"{NAME}_kept_")
    assert mv.retire(model_dir, NAME, by="adam")["in_use"] == kept
    assert (model_dir / f"{NAME}.pt").read_bytes() == b"copied in by hand"


def test_without_a_shipped_model_or_earlier_version_delete_leaves_the_baseline_serving(tmp_path):
    model_dir = tmp_path / "model"
    mv.add_version(model_dir, "clot_region_classifier", "c1", b"classifier", {"published": True})
    mv.publish(model_dir, "clot_region_classifier", "c1", by="run")
    answer = mv.retire(model_dir, "clot_region_classifier", by="adam")
    assert answer == {"model": "clot_region_classifier", "retired": "c1", "in_use": None, "serves": "baseline"}
    assert mv.in_use(model_dir, "clot_region_classifier")["version"] is None


def test_a_site_without_history_rolls_back_by_the_published_versions_dates(model_dir):
    add(model_dir, "old", b"old weights", created="2026-01-01T00:00:00+0000")
    add(model_dir, "rejected", b"rejected weights", published=False, created="2026-02-01T00:00:00+0000")
    add(model_dir, "new", b"new weights", created="2026-03-01T00:00:00+0000")
    (model_dir / f"{NAME}.pt").write_bytes(b"new weights")  # published before histories existed
    assert mv.retire(model_dir, NAME, by="adam")["in_use"] == "old"


def test_a_torn_history_line_after_a_crash_is_skipped(model_dir):
    add(model_dir, "v1", b"weights one")
    mv.publish(model_dir, NAME, "v1", by="run")
    with open(mv.history_path(model_dir, NAME), "a") as f:
        f.write('{"time": "2026-')
    assert [e["in_use"] for e in mv.history(model_dir, NAME)] == ["v1"]
    assert mv.list_versions(model_dir, NAME)["in_use"] == "v1"


def test_training_record_counts_studies_and_label_provenance(tmp_path):
    checkpoint = tmp_path / "c.pt"
    checkpoint.write_bytes(b"x")
    train = [{"image": "a", "label": f"{os.sep}s{os.sep}labels{os.sep}final{os.sep}a.nii.gz", "provenance": "corrected"},
             {"image": "b", "label": f"{os.sep}s{os.sep}labels{os.sep}final{os.sep}b.nii.gz"}]
    val = [{"image": "c", "label": f"{os.sep}s{os.sep}derivatives{os.sep}c_msk.nii.gz"}]
    record = mv.training_record({"started_by": "adam"}, train, val, checkpoint)
    assert record["trained_by"] == "adam" and record["sha256"] == hashlib.sha256(b"x").hexdigest()
    assert record["training_data"] == {"studies": 3, "train_studies": 2, "val_studies": 1,
                                       "label_provenance": {"corrected": 1, "saved label, provenance not recorded": 1,
                                                            "data set's expert mask": 1}}


def test_unfinished_copies_left_by_a_kill_are_removed_at_start_and_the_model_in_use_is_kept(model_dir):
    add(model_dir, "v1", b"weights one")
    mv.publish(model_dir, NAME, "v1", by="run")
    (model_dir / f".{NAME}.pt.abc123.tmp").write_bytes(b"half a cop")
    assert mv.remove_unfinished_copies(model_dir) == [f".{NAME}.pt.abc123.tmp"]
    assert (model_dir / f"{NAME}.pt").read_bytes() == b"weights one" and (model_dir / "shipped" / f"{NAME}.pt").exists()


SWITCHING_FOREVER = """
import sys
sys.path[:0] = sys.argv[2:]
from lib import model_versions as mv
import lib.access_control  # (the audit log's writer, imported by the first switch)
model_dir = sys.argv[1]
print("switching", flush=True)
while True:
    for step in ("v1", "v2", None, None, "v2"):
        try:
            mv.use_version(model_dir, "core_penumbra", step, by="loop") if step else mv.retire(model_dir, "core_penumbra", by="loop")
        except mv.VersionError:  # the shipped model in use: nothing to retire
            pass
"""


def test_kill_9_at_any_moment_of_switching_leaves_exactly_one_whole_model_in_use(model_dir):
    """A process switching the model in use as fast as it can, killed (SIGKILL) at random moments: every time, the
    model in use is the shipped one or a version, whole, never none and never a partial copy."""
    import random
    import signal
    import subprocess
    import sys
    import time

    from lib.checkpoints import checkpoint_in_use, model_paths

    versions = {"v1": os.urandom(3 << 20), "v2": os.urandom(3 << 20)}  # 3 MiB: a copy takes long enough to be cut
    for name, data in versions.items():
        add(model_dir, name, data)
    whole = {(model_dir / "shipped" / f"{NAME}.pt").read_bytes(), *versions.values()}
    app_dir = os.path.dirname(os.path.dirname(mv.__file__))
    rng = random.Random(0)
    seen = set()
    for _ in range(6):
        switching = subprocess.Popen([sys.executable, "-c", SWITCHING_FOREVER, str(model_dir), app_dir, *sys.path], stdout=subprocess.PIPE)
        assert switching.stdout.readline().strip() == b"switching"  # imports done (torch takes seconds)
        time.sleep(0.2 + rng.random())
        switching.send_signal(signal.SIGKILL)
        switching.wait()
        path = checkpoint_in_use(model_paths(str(model_dir), NAME))
        assert path is not None and Path(path).read_bytes() in whole
        seen.add(mv.in_use(model_dir, NAME)["version"])
    assert len(mv.history(model_dir, NAME)) > 12  # it did switch, many times between the kills
    print(f"\nin use after each kill: {sorted(seen)}; {len(mv.history(model_dir, NAME))} switches recorded")
