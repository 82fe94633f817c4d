"""The embedded PACS: Debian's Orthanc with its DICOMweb plugin, on loopback, in a folder of its own.

Used by the README's PACS command (``scripts/run_pacs_demo.sh``) and by the end-to-end tests: it
starts Orthanc with a generated configuration (its own storage folder and port, DICOMweb at
``/dicom-web/``, HTTP on 127.0.0.1 only, no DICOM port), waits until it answers, uploads DICOM
files through its REST API, and stops it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

ORTHANC_BINARIES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc", "Orthanc")
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DEBIAN_PACKAGES = "orthanc orthanc-dicomweb"


@dataclass
class Orthanc:
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def upload(self, files: Iterable[Path]) -> int:
        """Store DICOM files (REST ``POST /instances``); returns how many were stored."""
        count = 0
        for path in files:
            request = urllib.request.Request(f"{self.url}/instances", data=Path(path).read_bytes(), method="POST",
                                             headers={"Content-Type": "application/dicom"})
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
            count += 1
        return count

    def get(self, path: str):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=60) as response:
            return json.loads(response.read())


def orthanc_binary() -> str | None:
    for candidate in ORTHANC_BINARIES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_orthanc(workdir: str | Path, port: int | None = None, timeout_s: float = 60):
    """Start Orthanc in ``workdir`` (storage, config, log) and yield an :class:`Orthanc`; stopped on exit."""
    binary = orthanc_binary()
    if binary is None or not Path(DICOMWEB_PLUGIN).exists():
        raise RuntimeError(f"Orthanc with its DICOMweb plugin is not installed: apt-get install {DEBIAN_PACKAGES} (scripts/setup_system.sh)")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    config = {
        "Name": "StrokeLabel PACS", "StorageDirectory": str(workdir / "db"), "IndexDirectory": str(workdir / "db"),
        "HttpPort": port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomServerEnabled": False,
        "Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{port}"},
        "HttpCompressionEnabled": False, "StableAge": 1,
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=1))
    log = workdir / "orthanc.log"
    with open(log, "w") as out:
        process = subprocess.Popen([binary, str(config_path)], stdout=out, stderr=subprocess.STDOUT, cwd=str(workdir))
    server = Orthanc(port, process, log)
    try:
        deadline = time.time() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                server.get("/system")
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"Orthanc did not answer in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def load_studies(orthanc: Orthanc, studies_root: str | Path, dicom_dir: str | Path) -> int:
    """Convert every study under ``studies_root`` to DICOM (once, kept in ``dicom_dir``) and store it; returns instances stored."""
    from strokelabel.dicom import write_study
    from strokelabel.naming import find_reference_volumes, parse_filename

    stored = 0
    for name, relpath in sorted(find_reference_volumes(studies_root).items()):
        parsed = parse_filename(name)
        folder = Path(dicom_dir) / parsed.study_id
        done = folder / ".converted"
        if not done.exists():
            write_study(Path(studies_root) / relpath, folder, patient_id=parsed.subject)
            done.touch()
        stored += orthanc.upload(sorted(folder.rglob("*.dcm")))
    return stored


def main(argv=None) -> int:
    """Run the embedded PACS in the foreground, with the studies of a folder stored in it as DICOM."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m strokelabel.orthanc", description=main.__doc__)
    parser.add_argument("--workdir", required=True, help="Orthanc's storage, configuration and log")
    parser.add_argument("--port", type=int, default=8042)
    parser.add_argument("--load", default=None, help="a studies folder (the naming rule) to convert and store")
    parser.add_argument("--ready-file", default=None, help="written once the studies are stored (for scripts that wait)")
    args = parser.parse_args(argv)
    with running_orthanc(args.workdir, args.port) as orthanc:
        if args.load:
            count = load_studies(orthanc, args.load, Path(args.workdir) / "dicom")
            print(f"[pacs] {count} DICOM instances stored from {args.load}", flush=True)
        print(f"[pacs] Orthanc on {orthanc.url} (DICOMweb {orthanc.dicomweb}); Ctrl-C stops it", flush=True)
        if args.ready_file:
            Path(args.ready_file).write_text(orthanc.dicomweb)
        try:
            orthanc.process.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
