"""Federated retraining through NVFlare's simulator and a running MONAI Label server (lib/federated).

Four simulated hospitals, one round, small phantom studies: hospital A is a running MONAI Label server
(its NVFlare client trains on A's datastore and hands the global model to A's server, which decides by
its own no-regression rule); hospital B decides in its client process; hospital C's data is corrupt (a
label that does not fit its study), so it sends no update with the reason; hospital D's process is
killed once it has taken the round's task (a site that drops out mid-round): the round closes
``--round-timeout`` seconds after the other three have answered (``--min-sites 3``), and the record
names D as not answering. One simulation serves every test of the module.

Kept small: two phantom studies generated once (B, C and D get copies: each site has its own datastore),
A's server starts while the simulator starts (A's client waits for it to answer before it hands the global
model over), D is killed before it loads the app, the server scores on one thread as the sites do, one epoch
of two slices a study. Most of the remaining time is the processes loading torch and the app, and the
trainer's own validation and decision (whole reference phantoms scored at A and B).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
import pytest

from strokelabel.phantom.isles_layout import generate_isles_study
from tests.e2e import server as e2e_server
from tests.e2e.server import REPO, http, running_server

pytest.importorskip("nvflare")
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("mri_reference_phantoms")]

MODEL = "ischemic_lesion_mri"
FEDERATION = "e2e-stroke-net"
#: one small epoch: the test checks the plumbing and the rule, not what the model learns
TRAIN = "max_epochs=1,slices_per_study=2,dataset=Dataset,crop_size=96"
#: how long the round waits for hospital D once A, B and C have answered (D is dead: any wait is spent idle)
ROUND_TIMEOUT_S = 5


def _site(root: Path, seed: int, n: int = 2) -> Path:
    for i in range(1, n + 1):
        generate_isles_study(root, i, seed=seed + i)
    return root


def _app_models(root: Path) -> Path:
    (root / "shipped").mkdir(parents=True)
    shutil.copy(REPO / "apps" / "stroke" / "model" / "shipped" / f"{MODEL}.pt", root / "shipped")
    return root


def _kill_once_it_takes_the_round(simulator: subprocess.Popen, workspace: Path, site: str, timeout_s: float = 600) -> int:
    """SIGKILL the simulator's worker process of ``site`` as soon as it has taken the round's ``train`` task: the
    site dies mid-round, before it can answer (NVFlare's simulator runs each site in its own worker process).
    Returns the killed process's id."""
    import psutil

    log, deadline = workspace / site / "log.txt", time.time() + timeout_s
    while time.time() < deadline and simulator.poll() is None:
        if log.exists() and "got task assignment: name=train" in log.read_text(errors="replace"):
            for child in psutil.Process(simulator.pid).children(recursive=True):
                command = child.cmdline()
                if "--client" in command and command[command.index("--client") + 1] == site:
                    os.kill(child.pid, signal.SIGKILL)
                    return child.pid
        time.sleep(0.5)
    raise AssertionError(f"{site} never took the round's task (simulator exit code {simulator.poll()})")


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    base = tmp_path_factory.mktemp("federation")
    a_studies = _site(base / "a", 810)
    # hospitals B, C and D: copies of A's two studies (each site its own datastore; the test checks the plumbing and
    # the rule, which do not need other phantoms). C's holds one expert mask of the wrong shape (a label that does
    # not fit its study); D dies mid-round.
    b_studies, c_studies, d_studies = (shutil.copytree(a_studies, base / s) for s in "bcd")
    mask = next(c_studies.rglob("*_msk.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((7, 7, 7), np.uint8), nib.load(str(mask)).affine), str(mask))
    b_models, c_models, d_models = (_app_models(base / f"{s}_model") for s in "bcd")
    # A's server starts while the simulator starts (both load torch and the app for tens of seconds): its port and
    # app folder are known before it answers, and A's client keeps offering the global model until it does
    # (lib.federated.site.offer_to_server).
    server_dir, port = tmp_path_factory.mktemp("fl_server").resolve(), e2e_server.free_port()
    stop, started = threading.Event(), concurrent.futures.Future()

    def serve():
        try:
            with mock.patch.object(e2e_server, "free_port", lambda: port):  # running_server picks the port we told A's client
                context = running_server(server_dir, a_studies, models="ischemic_lesion",
                                         env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false",  # no background scoring beside the decision
                                              "OMP_NUM_THREADS": "1"})
                server = context.__enter__()
        except BaseException as error:
            started.set_exception(error)
            return
        started.set_result(server)
        stop.wait()
        context.__exit__(None, None, None)

    serving = threading.Thread(target=serve, name="hospital-a-server")
    serving.start()
    try:
        deadline = time.time() + 120
        while not (server_dir / "server.log").exists() and not started.done() and time.time() < deadline:
            time.sleep(0.2)  # the app is copied into server_dir before the server process starts: A's model folder is there
        url = f"http://127.0.0.1:{port}"
        sites = [f"hospital-a={server_dir / 'stroke' / 'model'}:{a_studies}@{url}", f"hospital-b={b_models}:{b_studies}",
                 f"hospital-c={c_models}:{c_studies}", f"hospital-d={d_models}:{d_studies}"]
        workspace = base / "workspace"
        cmd = [sys.executable, "-m", "lib.federated.job", "simulate", "--task", "ischemic_lesion", "--rounds", "1",
               "--name", FEDERATION, "--min-sites", "3", "--round-timeout", str(ROUND_TIMEOUT_S), "--min-labels", "2",
               "--threads", "4", "--train", TRAIN, "--workspace", str(workspace)]
        for site in sites:
            cmd += ["--site", site]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "apps" / "stroke"), str(REPO)]), "OMP_NUM_THREADS": "1",
               "MONAI_LABEL_TRACKING_ENABLED": "false"}
        with open(base / "simulator.log", "w") as out:
            simulator = subprocess.Popen(cmd, cwd=str(REPO / "apps" / "stroke"), env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                killed = _kill_once_it_takes_the_round(simulator, workspace, "hospital-d")
                simulator.wait(timeout=900)
            finally:
                if simulator.poll() is None:
                    simulator.kill()
        try:
            server = started.result(timeout=300)
        except RuntimeError as e:
            pytest.fail(str(e))
        log = (base / "simulator.log").read_text()
        assert simulator.returncode == 0, log[-5000:]
        yield {"server": server, "log": log, "b_models": b_models, "d_models": d_models, "base": base, "killed": killed}
    finally:
        stop.set()
        serving.join(timeout=60)


def _federated_version(versions: dict) -> dict:
    found = [v for v in versions["versions"] if v.get("origin") == "federated"]
    assert len(found) == 1, versions
    return found[0]


def test_the_global_model_arrives_as_a_candidate_and_the_sites_own_rule_decides(federation):
    server = federation["server"]
    versions = http(server, "GET", f"/model/{MODEL}/versions")
    version = _federated_version(versions)
    record = version["federation"]
    assert record["federation"] == FEDERATION and record["round"] == 0 and record["rounds"] == 1
    sites = record["sites"]
    assert len(sites) == 4 and all(name.startswith("site-") for name in sites)
    assert "hospital" not in json.dumps(sites)  # pseudonyms only
    trained = {k: v for k, v in sites.items() if "val_dice" in v}
    assert len(trained) == 2 and all(0.0 <= v["val_dice"] <= 1.0 and v["train_studies"] >= 1 for v in trained.values())
    # the same rule as a retraining: not worse than the model in use on the same deciding studies
    candidate, in_use = version["candidate_val_dice"], version["in_use_val_dice"]
    assert version["published"] == (candidate > 0 and candidate >= in_use), version
    assert version["deciding_studies"] and any(s.startswith("reference/") for s in version["deciding_studies"])
    assert (versions["in_use"] == version["version"]) == version["published"], versions
    audit = (server.app_dir / "logs" / "audit.log").read_text()
    event = "model publish" if version["published"] else "federated model kept aside"
    assert any(event in line and version["version"] in line and FEDERATION in line for line in audit.splitlines()), audit[-2000:]


def test_a_site_with_corrupt_data_sends_no_update_and_the_others_finish(federation):
    sites = _federated_version(http(federation["server"], "GET", f"/model/{MODEL}/versions"))["federation"]["sites"]
    refused = [v for v in sites.values() if "no_update" in v]
    assert len(refused) == 1 and "the grids do not match" in refused[0]["no_update"], refused
    assert "Aggregated 2/4 results" in federation["log"]  # C answered with no update, D not at all; A and B were averaged
    # hospital B decided on the same global model in its own process, with its own record
    b_versions = list((federation["b_models"] / MODEL / "versions").glob("*_fl_*.json"))
    assert len(b_versions) == 1
    b_record = json.loads(b_versions[0].read_text())
    assert b_record["federation"]["federation"] == FEDERATION and "published" in b_record


def test_a_site_that_dies_mid_round_is_recorded_as_not_answering_and_the_others_finish(federation):
    import psutil

    assert not psutil.pid_exists(federation["killed"]), "hospital-d's worker process was killed mid-round"
    # NVFlare's simulator saw D's process go (which of its two messages depends on where its thread was waiting)
    assert re.search(r"(Subprocess died for|Communication error with) client hospital-d", federation["log"])
    version = _federated_version(http(federation["server"], "GET", f"/model/{MODEL}/versions"))
    record = version["federation"]
    silent = [v for v in record["sites"].values() if "no_answer" in v]
    assert len(silent) == 1 and silent[0]["round"] == 0 and f"closed {ROUND_TIMEOUT_S} s after 3 sites" in silent[0]["no_answer"], record
    # the model still came home to A (decided above) and B (test above); D, dead, never got it
    assert not list(federation["d_models"].rglob("*_fl_*"))


def test_bad_offers_are_named_4xx_and_the_model_in_use_stays(federation):
    import io

    import requests
    import torch

    server = federation["server"]
    url = f"http://127.0.0.1:{server.port}/model/{MODEL}/federated"
    versions = http(server, "GET", f"/model/{MODEL}/versions")
    before, taken = versions["in_use"], _federated_version(versions)["version"]
    weights = io.BytesIO()
    from lib.federated.site import read_state

    torch.save({"model": read_state(REPO / "apps" / "stroke" / "model" / "shipped" / f"{MODEL}.pt")}, weights)
    cases = {
        "not weights": (b"not a checkpoint", "v1", '{"federation": "x", "round": 0}', 422, "not a plain PyTorch weights file"),
        "origin not JSON": (weights.getvalue(), "v2", "{federation", 422, "origin is not JSON"),
        "origin without round": (weights.getvalue(), "v3", '{"federation": "x"}', 422, "naming the federation and the round"),
        "bad version name": (weights.getvalue(), "../v4", '{"federation": "x", "round": 0}', 400, "is not a version name"),
        "version exists": (weights.getvalue(), taken, '{"federation": "x", "round": 0}', 409, "already has a version"),
    }
    for case, (data, version, origin, status, words) in cases.items():
        answer = requests.post(url, files={"file": ("m.pt", data)}, data={"version": version, "origin": origin}, timeout=120)
        assert answer.status_code == status and words in answer.text, (case, answer.status_code, answer.text)
    assert http(server, "GET", f"/model/{MODEL}/versions")["in_use"] == before
