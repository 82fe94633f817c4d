"""Federated retraining through NVFlare's simulator and a running MONAI Label server (lib/federated).

Three simulated hospitals, one round, two small phantom studies each: hospital A is a running MONAI Label
server (its NVFlare client trains on A's datastore and hands the global model to A's server, which
decides by its own no-regression rule); hospital B decides in its client process; hospital C's data
is corrupt (a label that does not fit its study), so it sends no update with the reason, and the
round closes with the other two (``min_sites`` 2). One simulation serves every test of the module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from strokelabel.phantom.isles_layout import generate_isles_study
from tests.e2e.server import REPO, http, running_server

pytest.importorskip("nvflare")
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("mri_reference_phantoms")]

MODEL = "ischemic_lesion_mri"
FEDERATION = "e2e-stroke-net"
#: one small epoch: the test checks the plumbing and the rule, not what the model learns
TRAIN = "max_epochs=1,slices_per_study=2,dataset=Dataset,crop_size=96"


def _site(root: Path, seed: int, n: int = 2) -> Path:
    for i in range(1, n + 1):
        generate_isles_study(root, i, seed=seed + i)
    return root


def _app_models(root: Path) -> Path:
    (root / "shipped").mkdir(parents=True)
    shutil.copy(REPO / "apps" / "stroke" / "model" / "shipped" / f"{MODEL}.pt", root / "shipped")
    return root


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    base = tmp_path_factory.mktemp("federation")
    a_studies, b_studies, c_studies = _site(base / "a", 810), _site(base / "b", 820), _site(base / "c", 830)
    # hospital C: one expert mask of the wrong shape (a label that does not fit its study)
    mask = next(c_studies.rglob("*_msk.nii.gz"))
    image = nib.load(str(mask))
    nib.save(nib.Nifti1Image(np.zeros((7, 7, 7), np.uint8), image.affine), str(mask))
    b_models, c_models = _app_models(base / "b_model"), _app_models(base / "c_model")
    try:
        with running_server(tmp_path_factory.mktemp("fl_server"), a_studies, models="ischemic_lesion",
                            env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}) as server:  # no background scoring beside the decision
            url = f"http://127.0.0.1:{server.port}"
            before = http(server, "GET", f"/model/{MODEL}/versions")
            sites = [f"hospital-a={server.app_dir / 'model'}:{a_studies}@{url}", f"hospital-b={b_models}:{b_studies}",
                     f"hospital-c={c_models}:{c_studies}"]
            cmd = [sys.executable, "-m", "lib.federated.job", "simulate", "--task", "ischemic_lesion", "--rounds", "1",
                   "--name", FEDERATION, "--min-sites", "2", "--round-timeout", "900", "--min-labels", "2", "--threads", "3", "--train", TRAIN,
                   "--workspace", str(base / "workspace")]
            for site in sites:
                cmd += ["--site", site]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "apps" / "stroke"), str(REPO)]), "OMP_NUM_THREADS": "1",
                   "MONAI_LABEL_TRACKING_ENABLED": "false"}
            run = subprocess.run(cmd, cwd=str(REPO / "apps" / "stroke"), env=env, capture_output=True, text=True, timeout=900)
            log = run.stdout + run.stderr
            (base / "simulator.log").write_text(log)
            assert run.returncode == 0, log[-5000:]
            yield {"server": server, "before": before, "log": log, "b_models": b_models, "base": base}
    except RuntimeError as e:
        pytest.fail(str(e))


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
    assert len(sites) == 3 and all(name.startswith("site-") for name in sites)
    assert "hospital" not in json.dumps(sites)  # pseudonyms only
    trained = {k: v for k, v in sites.items() if "no_update" not in v}
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
    assert "Aggregated 2/3 results" in federation["log"]  # C answered with no update; A and B were averaged
    # hospital B decided on the same global model in its own process, with its own record
    b_versions = list((federation["b_models"] / MODEL / "versions").glob("*_fl_*.json"))
    assert len(b_versions) == 1
    b_record = json.loads(b_versions[0].read_text())
    assert b_record["federation"]["federation"] == FEDERATION and "published" in b_record


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
