"""dciodvfy (Debian dicom3tools, David Clunie's reference IOD validator) on a dataset as the app sends it to a PACS."""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import pydicom
import pytest

needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy is not installed (Debian dicom3tools: scripts/setup_system.sh)")


def stowed_bytes(dataset: pydicom.Dataset) -> bytes:
    """The bytes a STOW-RS client sends: dicomweb_client writes the dataset and its file meta as they are
    (``pydicom.dcmwrite`` without fixing anything), so what is missing here is missing in the PACS."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset)
    return buffer.getvalue()


def validate(source: pydicom.Dataset | bytes | str | Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of dciodvfy on a dataset (serialised as STOW-RS sends it), bytes or a file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "object.dcm"
        if isinstance(source, pydicom.Dataset):
            path.write_bytes(stowed_bytes(source))
        elif isinstance(source, bytes):
            path.write_bytes(source)
        else:
            path = Path(source)
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (report.stdout + report.stderr).splitlines()
    return [l for l in lines if l.startswith("Error")], [l for l in lines if l.startswith("Warning")]
