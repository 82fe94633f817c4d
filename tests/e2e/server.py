"""Start the real MONAI Label server with a copy of the stroke app, for end-to-end tests.

The app is copied into a temporary folder so that training in the tests never touches the
models of ``apps/stroke/model``. Use :func:`running_server` in a fixture of your own to get a
server with just the tasks a test needs (``models="core_penumbra"``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 180
# Polling steps: /info and the train and scoring status are cheap calls (a refused connection before the server
# listens, a dict after), and every step is waited out in full after the server is up or a run has ended (a few
# dozen server starts and trainings and ~50 status waits in a run): on average half a step lost each time.
STARTUP_POLL_S = 0.1
STATUS_POLL_S = 0.25


@dataclass
class Server:
    client: MONAILabelClient
    port: int
    log: Path
    app_dir: Path
    studies: Path
    proc: subprocess.Popen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(workdir: Path, studies: Path | str, models: str = "all", shipped_models: bool = True, conf: dict | None = None,
                   env: dict | None = None, tls: tuple[Path, Path] | None = None, scoring: bool = False):
    """Copy the app into ``workdir``, start the server on a free port, yield a :class:`Server`.

    ``scoring=True`` keeps MONAI Label's automatic scoring on, as a site runs it (a background process that
    loads the app, ~10 CPU-s, then MC dropout on every unlabelled study, at start-up, after each training and
    each next sample); the tests that are not about active learning or running beside it leave it off.

    ``tls=(key file, certificate file)`` serves https with uvicorn's certificate options, as the README says.

    ``shipped_models=False`` leaves out ``model/shipped``: a site with no model at all. A ``workdir``
    that already holds the app is a restart: its app (and models) are used as they are.
    """
    workdir = Path(workdir).resolve()  # the server runs in workdir: relative paths would not resolve there
    app_dir = workdir / "stroke"
    restart = app_dir.exists()
    if not restart:
        shutil.copytree(REPO / "apps" / "stroke", app_dir, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    if not shipped_models and not restart:
        shutil.rmtree(app_dir / "model" / "shipped", ignore_errors=True)
    port = free_port()
    log_path = Path(workdir) / "server.log"
    env = {**os.environ, "MONAI_LABEL_TRACKING_ENABLED": "false", "PYTHONUNBUFFERED": "1",
           "MONAI_LABEL_AUTO_UPDATE_SCORING": str(scoring).lower(), **(env or {})}
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app_dir), "--studies", str(studies),
           "--host", "127.0.0.1", "--port", str(port), "--conf", "models", models]
    for key, value in (conf or {}).items():
        cmd += ["--conf", key, str(value)]
    if tls:
        cmd += ["--ssl_keyfile", str(tls[0]), "--ssl_certfile", str(tls[1])]
    with open(log_path, "a" if restart else "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))
    try:
        client = MONAILabelClient(f"{'https' if tls else 'http'}://127.0.0.1:{port}", tmpdir=str(Path(workdir) / "client"))
        os.makedirs(Path(workdir) / "client", exist_ok=True)
        deadline = time.time() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-5000:]}")
            try:
                client.info()
                break
            except MONAILabelClientException as e:
                if "Status: 401" in str(e.msg):  # up, with access control on
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"server did not answer /info in {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()[-5000:]}")
                time.sleep(STARTUP_POLL_S)
            except Exception:
                if time.time() > deadline:
                    raise RuntimeError(f"server did not answer /info in {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()[-5000:]}")
                time.sleep(STARTUP_POLL_S)
        yield Server(client=client, port=port, log=log_path, app_dir=app_dir, studies=Path(studies), proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for_training(client: MONAILabelClient, timeout_s: float = 900) -> dict:
    """Poll the train status until the background run ends; returns the last status. The time limit only stops a
    hung run: in a parallel test run a training shares the cores with another worker's tests and takes twice as long."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = client.train_status(check_if_running=False)
        # SUBMITTED: queued behind another task, not yet started; DONE, ERROR or STOPPED end a run.
        if status and status.get("status") not in ("SUBMITTED", "RUNNING", "QUEUED"):
            return status
        time.sleep(STATUS_POLL_S)
    raise TimeoutError(f"training did not finish in {timeout_s}s")


def http(server: Server, method: str, path: str):
    """A JSON call to the server's REST API (for endpoints the client has no method for, e.g. /scoring)."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read() or b"null")


def wait_for_scoring(server: Server, timeout_s: float = 300) -> None:
    """Wait until no scoring run is running or queued."""
    import urllib.error

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            status = http(server, "GET", "/scoring/")
        except urllib.error.HTTPError as e:
            if e.code == 404:  # no scoring run was ever started (automatic scoring off: running_server's default)
                return
            raise
        if not status or status.get("status") not in ("RUNNING", "QUEUED"):
            return
        time.sleep(STATUS_POLL_S)
    raise TimeoutError("scoring did not finish")


def raw_call(server: Server, method: str, path: str, upload: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    """``(status, body)`` of a call whose path is sent exactly as given (no client normalises ``..`` or ``//`` away);
    ``upload`` goes as the multipart ``file`` MONAI Label's upload endpoints take."""
    import http.client
    import uuid

    body, headers = b"", dict(headers or {})
    if upload is not None:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"model.pt\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + upload + f"\r\n--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    try:
        connection.request(method, path, body=body if method in ("POST", "PUT") else None, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    finally:
        connection.close()
