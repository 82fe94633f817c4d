"""The server on a real PACS (Debian's Orthanc with DICOMweb), driven as OHIF drives it.

Phantom studies are converted to DICOM with the project's converter (one series per map, the 4D
CTP as one multi-temporal series) and stored in Orthanc; the server is started on its DICOMweb URL.
A study is listed once, a non-reference series UID stands for its study, only the series a task
needs are fetched, the label comes back as NRRD on the series' grid with the figures, and a
correction saved through the API trains.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from monailabel.client.client import MONAILabelClientException

from strokelabel.dicom import write_study
from strokelabel.naming import truth_path
from strokelabel.orthanc import orthanc_binary, running_orthanc
from strokelabel.pacs import pseudonym
from strokelabel.phantom.study import generate_study
from tests.dciodvfy import needs_dciodvfy, validate
from tests.e2e.server import running_server, wait_for_scoring

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(orthanc_binary() is None, reason="Orthanc is not installed (scripts/setup_system.sh)"),
              pytest.mark.usefixtures("ctp_reference_phantoms")]


@pytest.fixture(scope="module")
def pacs_server(tmp_path_factory):
    work = tmp_path_factory.mktemp("pacs")
    ctp = generate_study(work / "nifti", "ctp", "pacs1", seed=4501, write_ctp_series=True)
    mri = generate_study(work / "nifti", "mri", "pacs2", seed=4504)  # a study with a lesion (63 mL)
    series4d = generate_study(work / "nifti", "ctp", "pacs3", seed=4503, write_ctp_series=True)
    series = {**{f"ctp/{m}": f for m, f in write_study(ctp["reference"], work / "dicom" / "ctp", patient_id="PAT-0001").items()},
              **{f"mri/{m}": f for m, f in write_study(mri["reference"], work / "dicom" / "mri", patient_id="PAT-0002").items()},
              # As a PACS most often holds it: the raw 4D CT perfusion series only, no maps.
              **{f"4d/{m}": f for m, f in write_study(series4d["reference"], work / "dicom" / "4d", patient_id="PAT-0003", only=("ctp",)).items()}}
    with running_orthanc(work / "orthanc") as orthanc:
        orthanc.upload(f for files in series.values() for f in files)
        with running_server(work / "server", orthanc.dicomweb, models="core_penumbra,ischemic_lesion",
                            conf={"pacs_cache": work / "cache"}, env={"STROKELABEL_PACS_REFRESH_S": "0"}, scoring=True) as server:
            server.work, server.orthanc, server.truth_root, server.dicom = work, orthanc, work / "nifti", series
            yield server


def in_ras(path) -> np.ndarray:
    """A label file's voxels in RAS order (PACS studies are stored as scanners store them, the phantoms RAS)."""
    return np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)


def save(dataset, path: Path) -> Path:
    dataset.save_as(str(path), write_like_original=False)
    return path


def series_uid(orthanc, description: str, patient: str | None = None) -> str:
    for uid in orthanc.get("/series"):
        info = orthanc.get(f"/series/{uid}")
        if patient is not None and orthanc.get(f"/series/{uid}/patient")["MainDicomTags"]["PatientID"] != patient:
            continue
        if info["MainDicomTags"].get("SeriesDescription") == description:
            return info["MainDicomTags"]["SeriesInstanceUID"]
    raise AssertionError(f"no series {description!r} in Orthanc")


def test_each_dicom_study_is_listed_once_by_its_reference_series(pacs_server):
    objects = pacs_server.client.datastore()["objects"]
    assert len(objects) == 3
    tmax, dwi = series_uid(pacs_server.orthanc, "Tmax perfusion map"), series_uid(pacs_server.orthanc, "DWI b1000 TRACE")
    series4d = series_uid(pacs_server.orthanc, "CT Perfusion 4D", patient="PAT-0003")
    assert set(objects) == {tmax, dwi, series4d}
    assert objects[tmax]["image"]["info"]["kind"] == "ctp" and objects[dwi]["image"]["info"]["kind"] == "mri"
    assert objects[series4d]["image"]["info"]["kind"] == "ctp"
    # Listing, the study's kind and active learning's start-up scoring fetch nothing: no image is in the cache yet.
    wait_for_scoring(pacs_server)
    assert not list((pacs_server.work / "cache").rglob("*.nii.gz"))


def test_a_pacs_study_with_only_its_4d_series_gets_maps_computed_and_core_penumbra(pacs_server):
    series4d = series_uid(pacs_server.orthanc, "CT Perfusion 4D", patient="PAT-0003")
    label_file, result = pacs_server.client.infer("core_penumbra", series4d, {"method": "baseline"})
    computed = result["maps_from_4d"]
    # Frame times came from the DICOM series (TriggerTime), through the one 4D assembler (ctp4d.read_ctp_nifti).
    assert "FrameTimesStart" in computed["notes"]["series"]["frame_times"]
    assert max(computed["aif"]["curve_hu"]) > 100 and result["core_volume_ml"] >= 0
    assert "summary_error" not in result and result["summary_url"]  # the picture on a PACS 4D study too (issue 23)
    label = in_ras(label_file)
    truth = in_ras(truth_path(pacs_server.truth_root, "pacs3", "01", "corepenumbra"))
    dice = 2 * ((label > 0) & (truth > 0)).sum() / max((label > 0).sum() + (truth > 0).sum(), 1)
    assert dice > 0.6, f"hypoperfusion Dice {dice:.2f} from maps computed from the PACS' 4D series"


def test_ohif_style_infer_on_a_non_reference_series_returns_nrrd_on_its_grid_with_the_figures(pacs_server):
    cbf = series_uid(pacs_server.orthanc, "CBF perfusion map")  # the series on screen, not the reference
    label_file, result = pacs_server.client.infer("core_penumbra", cbf, {"result_extension": ".nrrd", "method": "baseline", "nihss": 9})
    assert result["clinical"]["nihss"] == 9  # the request's NIHSS (a PACS study has no sidecar)
    with pytest.raises(MONAILabelClientException) as error:
        pacs_server.client.infer("core_penumbra", cbf, {"nihss": 57})
    assert "422" in error.value.msg and "nihss=57 is outside 0-42" in error.value.msg
    assert label_file.endswith(".nrrd")
    assert "PAT-0001" not in pacs_server.log.read_text() and "PAT-0001" not in result["study_id"]  # pseudonyms only
    assert result["core_volume_ml"] >= 0 and "mismatch_ratio" in result and result["summary_url"]
    # The summary picture is filed in the study as a Secondary Capture: how an OHIF user sees the figures.
    found = pacs_server.orthanc.get(f"/dicom-web/instances?SOPInstanceUID={result['summary_dicom_sop_instance_uid']}")
    assert len(found) == 1 and found[0]["00080016"]["Value"] == ["1.2.840.10008.5.1.4.1.1.7"]  # Secondary Capture
    assert found[0]["00100020"]["Value"] == ["PAT-0001"]  # filed under the patient and study of the images
    label = sitk.GetArrayFromImage(sitk.ReadImage(label_file)).transpose(2, 1, 0)  # (x, y, z) as the series' columns, rows, slices
    truth = np.asarray(nib.load(str(truth_path(pacs_server.truth_root, "pacs1", "01", "corepenumbra"))).dataobj)
    # The converter stores the series as scanners do (rows to the patient's left, columns to posterior), so
    # the series' voxel order (the order OHIF copies the answer in) is the RAS phantom's with x and y reversed.
    first_slice = min((pydicom.dcmread(str(f)) for f in pacs_server.dicom["ctp/cbf"]), key=lambda ds: float(ds.ImagePositionPatient[2]))
    nrrd = sitk.ReadImage(label_file)
    assert np.allclose(nrrd.GetOrigin(), [float(v) for v in first_slice.ImagePositionPatient], atol=1e-3)
    assert np.allclose(nrrd.GetSpacing()[:2], [float(v) for v in first_slice.PixelSpacing][::-1], atol=1e-4)
    hypo, hypo_truth = label > 0, truth[::-1, ::-1, :] > 0
    dice = 2 * (hypo & hypo_truth).sum() / max(hypo.sum() + hypo_truth.sum(), 1)
    assert label.shape == truth.shape and dice > 0.6, f"hypoperfusion Dice {dice:.2f} on the series grid"
    # Only what the task reads was fetched: the maps, not the 4D series.
    cached = {p.name.split("_")[-1] for p in pacs_server.work.rglob(f"sub-{pseudonym('PAT-0001')}_ses-*.nii.gz")}
    assert {"cbf.nii.gz", "tmax.nii.gz"} <= cached and "ctp.nii.gz" not in cached


def seg_series(orthanc) -> list[dict]:
    out = []
    for uid in orthanc.get("/series"):
        info = orthanc.get(f"/series/{uid}")
        if info["MainDicomTags"].get("Modality") == "SEG":
            instance = orthanc.get(f"/instances/{info['Instances'][0]}/simplified-tags")
            out.append({"description": info["MainDicomTags"].get("SeriesDescription"), "segments": instance["SegmentSequence"]})
    return out


def test_a_saved_correction_goes_to_the_pacs_as_a_manual_seg_with_coded_segments(pacs_server, tmp_path):
    dwi = series_uid(pacs_server.orthanc, "DWI b1000 TRACE")
    adc = series_uid(pacs_server.orthanc, "ADC apparent diffusion coefficient")
    label_file, result = pacs_server.client.infer("ischemic_lesion", adc, {"method": "baseline"})
    assert result["study_kind"] == "mri" and result["lesion_volume_ml"] > 0
    pacs_server.client.save_label(adc, label_file, tag="final")
    labels = pacs_server.client.datastore()["objects"][dwi]["labels"]
    assert "final" in labels
    segs = seg_series(pacs_server.orthanc)
    corrections = [s for s in segs if s["description"] == "StrokeLabel final (manual)"]
    # Every AI answer on a PACS study is there too, as AUTOMATIC (what the segmentation viewer opens to correct).
    answers = [s for s in segs if s["description"] == "StrokeLabel original (automatic)"]
    assert len(corrections) == 1 and answers and len(segs) == len(corrections) + len(answers), [s["description"] for s in segs]
    assert all(segment["SegmentAlgorithmType"] == "AUTOMATIC" for s in answers for segment in s["segments"])
    segment = corrections[0]["segments"][0]
    assert segment["SegmentLabel"] == "lesion" and segment["SegmentAlgorithmType"] == "MANUAL"
    assert segment["SegmentedPropertyTypeCodeSequence"][0]["CodeValue"] == "55641003"  # SNOMED CT: infarct


def series_of_study(orthanc, patient: str) -> list[dict]:
    """Every series of ``patient``'s study in Orthanc: description, modality, UID and Orthanc id of its first instance."""
    (study,) = [s for s in orthanc.get("/studies?expand") if s["PatientMainDicomTags"]["PatientID"] == patient]
    out = []
    for uid in study["Series"]:
        info = orthanc.get(f"/series/{uid}")
        tags = info["MainDicomTags"]
        out.append({"description": tags.get("SeriesDescription"), "modality": tags.get("Modality"), "uid": tags["SeriesInstanceUID"],
                    "instance": info["Instances"][0], "instances": len(info["Instances"])})
    return out


def test_rerunning_a_task_stores_one_ai_answer_and_one_summary_and_a_saved_label_is_its_own_series(pacs_server):
    """A PACS is a shared archive: three runs of one task with the same inputs leave one AI SEG and one summary in the
    study; the label a person saves is a series of its own beside them (the earlier test saved one)."""
    adc = series_uid(pacs_server.orthanc, "ADC apparent diffusion coefficient")
    before = series_of_study(pacs_server.orthanc, "PAT-0002")
    results = [pacs_server.client.infer("ischemic_lesion", adc, {"method": "baseline"})[1] for _ in range(2)]
    after = series_of_study(pacs_server.orthanc, "PAT-0002")
    assert sorted(s["uid"] for s in after) == sorted(s["uid"] for s in before), "a rerun with the same inputs stored something new"
    answers = [s for s in after if s["description"] == "StrokeLabel original (automatic)"]
    summaries = [s for s in after if s["description"] == "StrokeLabel ischemic_lesion summary"]
    corrections = [s for s in after if s["description"] == "StrokeLabel final (manual)"]
    assert len(answers) == 1 and len(summaries) == 1 and len(corrections) == 1, [s["description"] for s in after]
    assert all(s["instances"] == 1 for s in answers + summaries + corrections)
    assert {r["summary_dicom_sop_instance_uid"] for r in results} == {pacs_server.orthanc.get(f"/instances/{summaries[0]['instance']}")["MainDicomTags"]["SOPInstanceUID"]}
    assert corrections[0]["uid"] != answers[0]["uid"]


@needs_dciodvfy
def test_what_the_app_stored_in_the_pacs_passes_a_strict_validator(pacs_server):
    """The SEGs (AI answer, saved label) and the summary Secondary Captures, as Orthanc holds them: no dciodvfy error
    and no warning; the converter's series (what a scanner would have stored) no error."""
    import urllib.request

    def stored_file(instance: str) -> bytes:
        with urllib.request.urlopen(f"{pacs_server.orthanc.url}/instances/{instance}/file", timeout=60) as answer:
            return answer.read()

    written_by_the_app = [s for patient in ("PAT-0001", "PAT-0002", "PAT-0003") for s in series_of_study(pacs_server.orthanc, patient)
                          if (s["description"] or "").startswith("StrokeLabel")]
    kinds = {s["modality"] for s in written_by_the_app}
    assert {"SEG", "OT"} <= kinds, kinds
    for s in written_by_the_app:
        assert validate(stored_file(s["instance"])) == ([], []), s["description"]
    for s in series_of_study(pacs_server.orthanc, "PAT-0002"):
        if s["modality"] == "MR":
            errors, _ = validate(stored_file(s["instance"]))
            assert not errors, (s["description"], errors)


def test_a_corrected_seg_exported_by_a_viewer_becomes_the_training_label_and_ai_output_never_does(pacs_server, tmp_path):
    from strokelabel.dicom import write_seg

    tmax = series_uid(pacs_server.orthanc, "Tmax perfusion map")
    truth_file = truth_path(pacs_server.truth_root, "pacs1", "01", "corepenumbra")
    headers = tmp_path / "headers"
    headers.mkdir()
    for i, f in enumerate(pacs_server.dicom["ctp/tmax"]):
        shutil.copy(f, headers / f"{i:04d}.dcm")
    # As a viewer exports them: the AI's answer (AUTOMATIC), the clinician's correction (MANUAL), and a
    # later AI answer again (AUTOMATIC, newest): only the correction may become the training label.
    truth_img = nib.load(str(truth_file))
    wrong = tmp_path / "wrong.nii.gz"
    nib.save(nib.Nifti1Image((np.asarray(truth_img.dataobj) > 0).astype(np.uint8), truth_img.affine), str(wrong))
    for kind, time_of_day, label in (("AUTOMATIC", "1000", wrong), ("MANUAL", "1100", truth_file), ("AUTOMATIC", "1200", wrong)):
        segments = {1: "core", 2: "penumbra"} if label == truth_file else {1: "core"}
        seg = write_seg(label, headers, segments, kind, series_description=f"viewer {kind.lower()} {time_of_day}")
        seg.ContentDate, seg.ContentTime = "20260102", time_of_day
        pacs_server.orthanc.upload([save(seg, tmp_path / f"{kind}{time_of_day}.dcm")])
    # A client's look at the datastore finds new SEGs (refresh interval 0 here); a look that overlaps another
    # refresh still shows the label before them, so look again for up to a minute.
    deadline = time.monotonic() + 60
    while True:
        final = pacs_server.client.datastore()["objects"][tmax]["labels"]["final"]
        if final["info"].get("source") == "PACS DICOM-SEG" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert final["info"]["algorithm_type"] == "MANUAL" and final["info"]["source"] == "PACS DICOM-SEG"
    label = in_ras(pacs_server.client.download_label(tmax, "final"))
    truth = in_ras(truth_file)
    assert np.array_equal(label, truth)  # the MANUAL SEG, on the reference grid, segments back at their values


def test_an_unknown_series_is_a_404_naming_it(pacs_server):
    with pytest.raises(MONAILabelClientException) as error:
        pacs_server.client.infer("core_penumbra", "1.2.3.4.5.6.7.8.9", {})
    assert "404" in error.value.msg and "1.2.3.4.5.6.7.8.9" in error.value.msg


def test_ohifs_study_search_through_the_proxy_keeps_its_query(pacs_server):
    import json
    import urllib.request

    def studies(query: str) -> list:
        with urllib.request.urlopen(f"http://127.0.0.1:{pacs_server.port}/proxy/dicom/qido/studies{query}", timeout=60) as answer:
            return json.loads(answer.read())

    assert len(studies("")) == 3  # (the summary pictures stored by earlier tests are in existing studies)
    only = studies("?PatientID=PAT-0001")
    assert len(only) == 1 and only[0]["00100020"]["Value"] == ["PAT-0001"]


def test_training_runs_on_the_labels_that_came_from_the_pacs(pacs_server):
    """The corrected SEG (an earlier test) and a label saved through the API on the 4D-only study train core_penumbra."""
    from tests.e2e.server import wait_for_training

    series4d = series_uid(pacs_server.orthanc, "CT Perfusion 4D", patient="PAT-0003")
    label_file, _ = pacs_server.client.infer("core_penumbra", series4d, {"method": "baseline"})
    pacs_server.client.save_label(series4d, label_file, tag="final")
    pacs_server.client.train_start("core_penumbra", {"max_epochs": 1, "device": "cpu", "slices_per_study": 4})
    status = wait_for_training(pacs_server.client)
    assert status["status"] == "DONE", status
    stats = pacs_server.client.info()["train_stats"]["core_penumbra"]
    assert stats["train_studies"] + len(stats["site_held_out_studies"]) == 2  # both PACS studies, one of them labelled in the viewer


def test_the_server_log_names_no_patient_and_the_proxy_reaches_only_the_pacs(pacs_server):
    """Last in the module: by now the server has listed, fetched, inferred on, stored SEGs and summaries for, and
    trained on the three patients' studies. Neither the log /logs/ serves, nor the server's output, nor the audit log
    holds a PatientID or PatientName; the proxy's hostile paths are named 4xx and it still forwards to the PACS."""
    from tests.e2e.hostile_files import hostile_requests
    from tests.e2e.server import raw_call

    status, served_log = raw_call(pacs_server, "GET", "/logs/?text=true&lines=1000000")
    assert status == 200 and "Init stroke datastore for the PACS" in served_log  # the whole log, not an empty file
    logs = {"/logs/": served_log, "server output": pacs_server.log.read_text(),
            "audit log": (pacs_server.app_dir / "logs" / "audit.log").read_text()}
    identifiers = [f"PAT-000{k}" for k in (1, 2, 3)] + [f"Phantom^pacs{k}" for k in (1, 2, 3)] + [f"Phantom pacs{k}" for k in (1, 2, 3)]
    for where, text in logs.items():
        assert not [i for i in identifiers if i in text], f"patient identifiers in the {where}"

    for case, (method, path, upload, expected, words) in hostile_requests("core_penumbra", pacs=True).items():
        if path.startswith("/proxy"):
            status, body = raw_call(pacs_server, method, path, upload)
            assert status == expected and words in body, (case, status, body)
    status, body = raw_call(pacs_server, "GET", "/proxy/dicom/qido/studies?PatientID=PAT-0002")
    assert status == 200 and len(json.loads(body)) == 1  # still forwarding to the PACS
