"""A real MONAI Label server with the stroke app, started as a subprocess on generated studies.

The app is copied into a temporary folder so that training in the tests never touches the
models shipped in ``apps/stroke/model``. Broken studies are planted beside the good ones to
prove that bad input gets a clear error while the server keeps serving.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from monailabel.client import MONAILabelClient

from tests.e2e import broken_studies
from strokelabel.phantom import generate_dataset

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def studies_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("studies")
    generate_dataset(root, per_kind=3, labelled_per_kind=2, size="small", seed=7, progress=lambda *a, **k: None)
    broken_studies.plant(root)
    return root


@pytest.fixture(scope="session")
def server(tmp_path_factory, studies_dir):
    app_dir = tmp_path_factory.mktemp("app") / "stroke"
    shutil.copytree(REPO / "apps" / "stroke", app_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pt.*"))
    port = free_port()
    log_path = tmp_path_factory.mktemp("logs") / "server.log"
    env = {**os.environ, "MONAI_LABEL_TRACKING_ENABLED": "false", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app_dir), "--studies", str(studies_dir),
           "--host", "127.0.0.1", "--port", str(port), "--conf", "models", "all"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(app_dir.parent))
    client = MONAILabelClient(f"http://127.0.0.1:{port}", tmpdir=str(tmp_path_factory.mktemp("client")))
    deadline = time.time() + STARTUP_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()[-5000:]}")
        try:
            client.info()
            break
        except Exception:
            if time.time() > deadline:
                proc.kill()
                pytest.fail(f"server did not answer /info in {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()[-5000:]}")
            time.sleep(1)
    yield type("Server", (), {"client": client, "port": port, "log": log_path, "app_dir": app_dir, "studies": studies_dir, "proc": proc})
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def client(server) -> MONAILabelClient:
    return server.client
