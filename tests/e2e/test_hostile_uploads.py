"""The real server under the hostile corpus (tests/e2e/hostile_files.py): each file uploaded as a study and as a
label is refused with a 4xx naming its defect, in bounded memory; the saved label and the study list are untouched
and the server keeps serving."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monailabel.client.client import MONAILabelClientException

from strokelabel.phantom.study import generate_study
from tests.e2e.hostile_files import make_corpus
from tests.e2e.server import running_server

pytestmark = pytest.mark.e2e


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (Linux VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def refusal(call) -> tuple[int, str]:
    """The HTTP status and message of a refused client call (the client puts the status in its message only)."""
    with pytest.raises(MONAILabelClientException) as error:
        call()
    status = re.match(r"Status: (\d+);", error.value.msg)
    return (int(status.group(1)) if status else None), error.value.msg


def test_hostile_files_uploaded_as_studies_and_labels_are_refused_and_nothing_is_lost(tmp_path):
    studies = tmp_path / "studies"
    study = generate_study(studies, "mri", "fuzz", seed=4505)
    reference = nib.load(str(study["reference"]))
    corpus = make_corpus(tmp_path / "corpus", reference.shape[:3], reference.affine)
    with running_server(tmp_path / "server", studies, models="ischemic_lesion") as server:
        image_id = "sub-fuzz_ses-01_dwi"
        good = np.zeros(reference.shape[:3], np.uint8)
        good[40:44, 40:44, 10] = 1
        nib.save(nib.Nifti1Image(good, reference.affine), str(tmp_path / "good.nii.gz"))
        server.client.save_label(image_id, str(tmp_path / "good.nii.gz"), tag="final")
        saved = studies / "labels" / "final" / f"{image_id}.nii.gz"
        saved_bytes = saved.read_bytes()
        rss_before = peak_rss_mib(server.proc.pid)

        outcomes = []
        for i, (case, (path, words)) in enumerate(corpus.items()):
            as_study = refusal(lambda: server.client.upload_image(str(path), image_id=f"sub-bad{i:02d}_ses-01_dwi"))
            as_label = refusal(lambda: server.client.save_label(image_id, str(path), tag="final"))
            for what, (status, message) in (("study", as_study), ("label", as_label)):
                outcomes.append((case, what, status))
                assert status is not None and 400 <= status < 500, (case, what, message)
                assert words in message and str(tmp_path) not in message and "/tmp/" not in message, (case, what, message)
        print("\n".join(f"{case:40s} as {what:5s}: {status}" for case, what, status in outcomes))

        assert server.client.info()["name"]  # still serving
        assert saved.read_bytes() == saved_bytes  # the saved label is whole
        assert sorted(server.client.datastore()["objects"]) == [image_id]  # no refused upload became a study
        growth = peak_rss_mib(server.proc.pid) - rss_before
        assert growth < 256, f"the server's peak memory grew by {growth:.0f} MiB under the corpus"
        print(f"{len(outcomes)} refusals; server peak memory grew {growth:.0f} MiB")
