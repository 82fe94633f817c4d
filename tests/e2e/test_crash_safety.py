"""`kill -9` of the real server during training and during label saves: the model in use and every saved label
stay whole, the training child dies with the server (an orphan must never publish after a restart), and the
server restarts clean on the same folders.

Each kill costs a server that loads the app and a restart that loads it again: the label saves and the model switches
(two stores apart) are cut short by one kill and checked after one restart (``killed_during_saves_and_model_switches``)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from strokelabel.lifeline import ZYGOTE_MODULE, background_children
from strokelabel.phantom.isles_layout import generate_isles_study
from tests.e2e.server import running_server

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("mri_reference_phantoms")]


def models_in_use(model_dir: Path) -> dict[str, str]:
    """sha256 of each checkpoint an infer may load: the published models and the shipped ones (not a run's own files)."""
    files = list(model_dir.glob("*.pt")) + list((model_dir / "shipped").glob("*.pt"))
    return {str(p.relative_to(model_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def children_running(parent_pid: int, method: str = "train") -> list[int]:
    """The pids of MONAI Label's background children of ``method`` (train, scoring, ...) under the server."""
    return [pid for pid, cmdline in background_children(parent_pid).items() if f" -m {method} " in cmdline]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, timeout_s: float, step_s: float = 0.5):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    return condition()


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash_isles22")
    for i in range(1, 5):
        generate_isles_study(root, i, seed=300 + i)
    return root


def zygotes(parent_pid: int) -> list[int]:
    """The server's zygote (strokelabel/warm_start.py), whose children are the runs started warm."""
    import psutil

    return [p.pid for p in psutil.Process(parent_pid).children() if ZYGOTE_MODULE in " ".join(p.cmdline())]


def test_kill_9_during_training_leaves_the_model_in_use_and_the_trainer_dies_with_the_server(studies, tmp_path):
    """With the training started warm (forked from the server's zygote, as every run after a server's first is): its
    progress reaches the train status and the log, ``DELETE /train/`` kills it and its children, and at the kill -9 of
    the server the zygote and the second run die with it."""
    import psutil

    work = tmp_path / "server"
    request = {"max_epochs": 500, "device": "cpu", "dataset": "Dataset", "val_split": 0.25}
    with running_server(work, studies, models="ischemic_lesion", scoring=True, env={"STROKELABEL_WARM_START": "eager"}) as server:
        model_dir = server.app_dir / "model"
        before = models_in_use(model_dir)
        assert wait_until(lambda: "warm start: zygote pid" in server.log.read_text() and " ready (" in server.log.read_text(), 600), \
            server.log.read_text()[-3000:]
        (zygote,) = zygotes(server.proc.pid)

        server.client.train_start("ischemic_lesion_mri", request)
        (stopped,) = wait_until(lambda: children_running(server.proc.pid), 60)
        assert psutil.Process(stopped).ppid() == zygote  # started warm
        # Its progress, as a cold run's: in the train status and in the server's log.
        assert wait_until(lambda: any("Epoch: 1/500" in line for line in server.client.train_status()["details"]), 600), \
            server.client.train_status()
        assert "Epoch: 1/500" in server.log.read_text()
        its_children = [p.pid for p in psutil.Process(stopped).children(recursive=True)]
        assert server.client.train_stop()["status"] == "STOPPED"
        assert wait_until(lambda: not any(alive(pid) for pid in [stopped, *its_children]), 20)
        assert models_in_use(model_dir) == before

        server.client.train_start("ischemic_lesion_mri", request)
        trainers = wait_until(lambda: children_running(server.proc.pid), 60)
        assert trainers, "no training child started"
        # Training, not starting: the child has logged an epoch.
        assert wait_until(lambda: "Epoch: 1/500" in server.log.read_text().split("Kill:: Process pid")[-1], 600), server.log.read_text()[-3000:]
        server.proc.kill()
        server.proc.wait(timeout=30)
        assert wait_until(lambda: not any(alive(pid) for pid in [*trainers, zygote]), 20), f"training child {trainers} or zygote outlived the server"
        assert models_in_use(model_dir) == before

    # Restart on the same app, models and labels. The killed server ran with automatic scoring, as a site runs it, so
    # its scoring child was there at the kill too; the restart checks what the kill left, which no scoring run changes.
    with running_server(work, studies, models="ischemic_lesion") as again:
        assert models_in_use(again.app_dir / "model") == before
        assert again.client.train_status(check_if_running=True) is False  # nothing runs after the restart
        assert not children_running(again.proc.pid)
        image_id = next(iter(again.client.datastore()["objects"]))
        _, result = again.client.infer("ischemic_lesion", image_id, {})
        assert result["method"] in ("model", "baseline")


MODEL = "ischemic_lesion_mri"


def label_versions(reference, folder: Path, n: int, step: int) -> list[Path]:
    """``n`` valid corrections of a study, told apart by their bytes (boxes ``step`` voxels apart)."""
    versions = []
    for k in range(n):
        values = np.zeros(reference.shape[:3], np.uint8)
        values[10 + step * k: 10 + step * (k + 1), 20:30, 2:4] = 1
        path = folder / f"label{k}.nii.gz"
        nib.save(nib.Nifti1Image(values, reference.affine), str(path))
        versions.append(path)
    return versions


def model_versions(model_dir: Path) -> tuple[bytes, dict[str, bytes]]:
    """The shipped model's bytes and two versions added beside it (``va``, ``vb``: weights nudged, told apart by their bytes)."""
    import io

    import torch

    from lib.model_versions import add_version

    shipped = (model_dir / "shipped" / f"{MODEL}.pt").read_bytes()
    state = torch.load(io.BytesIO(shipped), map_location="cpu", weights_only=True)
    state = state.get("model", state)
    versions = {}
    for k, name in enumerate(("va", "vb")):
        nudged = {key: (v.float() + 1e-4 * k) if torch.is_floating_point(v) else v for key, v in state.items()}
        buffer = io.BytesIO()
        torch.save(nudged, buffer)
        versions[name] = buffer.getvalue()
        add_version(model_dir, MODEL, name, versions[name], {"published": True, "created": f"2026-01-0{k + 1}T00:00:00+0000"})
    return shipped, versions


@pytest.fixture(scope="module")
def killed_during_saves_and_model_switches(studies, tmp_path_factory):
    """One server (automatic scoring on, as a site runs it) killed with ``kill -9`` while one client keeps saving a
    study's label and another keeps putting model versions in use and retiring them (the datastore's labels and the
    model folder: two stores apart, each the subject of one test below), then restarted on the same folders (without
    scoring, see the first test). What the kill left and what the restarted server says, for the two tests to check:
    one kill and one restart serve both (each is a server loading the app)."""
    import requests

    from lib.checkpoints import checkpoint_in_use, model_paths

    folder = tmp_path_factory.mktemp("crash_saves_switches")
    work = folder / "server"
    out = {}
    with running_server(work, studies, models="ischemic_lesion", scoring=True) as server:
        model_dir = server.app_dir / "model"
        image_id = sorted(server.client.datastore()["objects"])[0]
        reference = nib.load(str(server.studies / server.client.datastore()["objects"][image_id]["image"]["info"]["relpath"]))
        labels = label_versions(reference, folder, 2, 10)
        server.client.save_label(image_id, str(labels[0]), tag="final")
        saved_path = server.studies / "labels" / "final" / f"{image_id}.nii.gz"
        out["first_save_whole"] = saved_path.read_bytes() == labels[0].read_bytes()
        shipped, versions = model_versions(model_dir)

        saves, changes = {"done": 0, "errors": 0}, {"done": 0}
        stop = threading.Event()

        def keep_saving():
            k = 1
            while not stop.is_set():
                try:
                    server.client.save_label(image_id, str(labels[k]), tag="final")
                    saves["done"] += 1
                except Exception:
                    saves["errors"] += 1
                    return
                k = 1 - k

        def keep_changing():
            base = f"http://127.0.0.1:{server.port}/model/{MODEL}"
            steps = [("POST", "/versions/va/use"), ("POST", "/versions/vb/use"), ("DELETE", ""), ("DELETE", ""), ("POST", "/versions/vb/use")]
            while not stop.is_set():
                for method, path in steps:
                    try:
                        answer = requests.request(method, base + path, timeout=30)
                    except requests.RequestException:
                        return
                    if answer.status_code not in (200, 409):  # 409: the shipped model in use, nothing to retire
                        changes["error"] = answer.text
                        return
                    changes["done"] += 1

        threads = [threading.Thread(target=keep_saving), threading.Thread(target=keep_changing)]
        for thread in threads:
            thread.start()
        wait_until(lambda: saves["done"] >= 2 or saves["errors"], 300)  # on a busy CPU a save takes more than a second
        wait_until(lambda: changes["done"] >= 10 or "error" in changes, 600, 0.05)
        server.proc.kill()
        server.proc.wait(timeout=30)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        out.update(saves=dict(saves), changes=dict(changes), image_id=image_id, saved_path=saved_path, labels=labels,
                   label_after_kill=saved_path.read_bytes(), shipped=shipped, versions=versions, model_dir=model_dir)
        path = checkpoint_in_use(model_paths(str(model_dir), MODEL))
        out["model_after_kill"] = None if path is None else Path(path).read_bytes()
        out["shipped_after_kill"] = (model_dir / "shipped" / f"{MODEL}.pt").read_bytes()

    with running_server(work, studies, models="ischemic_lesion") as again:
        out["labels_after_restart"] = again.client.datastore()["objects"][image_id]["labels"]
        out["downloaded"] = Path(again.client.download_label(image_id, "final")).read_bytes()
        out["label_tmp_files"] = [p for p in (studies / "labels" / "final").glob("*") if p.suffix == ".tmp" and not p.name.startswith(".")]
        out["in_use_after_restart"] = again.client.info()["models"]["ischemic_lesion"]["versions_in_use"][MODEL]
        out["model_tmp_files"] = list((again.app_dir / "model").glob(".*.tmp"))  # a copy the kill cut short is cleared at start
        infer_id = next(iter(again.client.datastore()["objects"]))
        out["infer_after_restart"] = again.client.infer("ischemic_lesion", infer_id, {"method": "model"})[1]
    return out


def test_kill_9_during_label_saves_leaves_one_whole_label_and_a_readable_datastore(killed_during_saves_and_model_switches):
    run = killed_during_saves_and_model_switches
    assert run["first_save_whole"]
    whole = {path.read_bytes() for path in run["labels"]}
    assert run["saves"]["done"] >= 2, run["saves"]  # the kill came while saves were going on
    assert run["label_after_kill"] in whole  # one whole label, never half of one
    # the restarted server
    assert "final" in run["labels_after_restart"]
    assert run["downloaded"] in whole
    assert not run["label_tmp_files"]
    print(f"{run['saves']['done']} saves before the kill; the label kept: version {[p.read_bytes() for p in run['labels']].index(run['downloaded'])}")
    assert os.path.exists(run["saved_path"])


def test_concurrent_infers_saves_and_training_on_one_study_keep_the_last_saved_label(studies, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from tests.e2e.server import wait_for_training

    with running_server(tmp_path / "server", studies, models="ischemic_lesion", scoring=True) as server:
        client = server.client
        image_id = sorted(client.datastore()["objects"])[0]
        reference = nib.load(str(server.studies / client.datastore()["objects"][image_id]["image"]["info"]["relpath"]))
        versions = []
        for k in range(3):
            values = np.zeros(reference.shape[:3], np.uint8)
            values[10 + 8 * k: 18 + 8 * k, 20:30, 2:4] = 1
            path = tmp_path / f"label{k}.nii.gz"
            nib.save(nib.Nifti1Image(values, reference.affine), str(path))
            versions.append(path)
        # one short epoch: the infers and saves race the training run as a whole (its child's start, data loading, the run
        # and the publish decision), which more epochs only lengthen
        client.train_start("ischemic_lesion_mri", {"max_epochs": 1, "slices_per_study": 4, "device": "cpu", "dataset": "Dataset",
                                                   "val_split": 0.25})

        def infer(_):
            _, result = client.infer("ischemic_lesion", image_id, {})
            return result["method"]

        with ThreadPoolExecutor(max_workers=3) as pool:
            answers = pool.map(infer, range(4))
            for k in (0, 1, 2, 0, 2):  # the last save is version 2
                client.save_label(image_id, str(versions[k]), tag="final")
            methods = list(answers)
        status = wait_for_training(client)
        assert status["status"] == "DONE", status
        assert set(methods) <= {"model", "baseline"} and len(methods) == 4
        saved = server.studies / "labels" / "final" / f"{image_id}.nii.gz"
        assert saved.read_bytes() == versions[2].read_bytes()  # the last save wins, whole
        for checkpoint in (server.app_dir / "model").glob("*.pt"):  # whatever is in use loads whole
            torch.load(checkpoint, map_location="cpu", weights_only=False)
        _, after = client.infer("ischemic_lesion", image_id, {})
        assert after["method"] in ("model", "baseline")


def test_kill_9_during_rollbacks_and_deletes_leaves_one_whole_model_in_use(killed_during_saves_and_model_switches):
    """Versions put in use and retired in a loop (lib/model_versions.py) while the server is killed: afterwards exactly
    one model is in use, whole (the shipped one or a version, byte for byte), the shipped file unchanged, and the
    restarted server says which and answers with it."""
    import io

    import torch

    run = killed_during_saves_and_model_switches
    shipped, versions, changes = run["shipped"], run["versions"], run["changes"]
    whole = {shipped, *versions.values()}
    assert changes["done"] >= 10 and "error" not in changes, changes  # the kill came while the model in use was changing
    kept = run["model_after_kill"]
    assert kept is not None and kept in whole  # one model in use, whole, never none
    torch.load(io.BytesIO(kept), map_location="cpu", weights_only=True)
    assert run["shipped_after_kill"] == shipped
    # the restarted server
    assert not run["model_tmp_files"]
    assert run["in_use_after_restart"] == {shipped: "shipped", versions["va"]: "va", versions["vb"]: "vb"}[kept]
    assert run["infer_after_restart"]["method"] == "model"
    print(f"{changes['done']} changes of the model in use before the kill; in use after it: {run['in_use_after_restart']}")
