"""scripts/federated_deploy_check.sh: POC mode and a provisioned deployment, real NVFlare processes on this
machine (slow: about 5 minutes of each on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nvflare")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["provision", "poc"])
def test_the_job_runs_from_startup_kits_and_the_global_model_reaches_both_sites(tmp_path, mode):
    env = {**os.environ, "VENV": str(Path(sys.executable).parents[1]), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", str(REPO / "scripts" / "federated_deploy_check.sh"), mode, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=3600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-5000:]
    assert "status FINISHED:COMPLETED" in out and "system shut down through the admin API" in out, out[-3000:]
    for site in ("hospital-a", "hospital-b"):  # the global model came home and the site's own rule decided
        assert f"{mode}: {site}: ischemic_lesion_mri_fl_strokelabel-{mode}_r0: published" in out, out[-3000:]
    if mode == "provision":
        assert "notAfter" in out and "mutual TLS" in out
