"""StrokeLabel's extension and mode for OHIF 3.13 (/ohif3/stroke) in a real browser: a task run from the viewer.

Headless Debian chromium, driven by playwright-core (tests/e2e/browser/ohif_stroke.mjs) by clicks only, on
Orthanc with a phantom MRI study whose lesion lies in the patient's left hemisphere. The StrokeLabel panel,
rendered by OHIF's own React, lists the server's tasks, runs one on the series on screen with the NIHSS typed
in, shows the figures and the guard's verdict, and loads the AI SEG the server stored in the PACS as an
editable OHIF segmentation named as in ``/info``, on the lesion's slices and side. A task the study cannot
answer shows the server's 4xx reason.
"""

from __future__ import annotations

import numpy as np
import nibabel as nib
import pytest

from strokelabel.dicom import seg_provenance
from tests.e2e.test_browser import seg_instances
from tests.e2e.browser_support import OHIF3_DIST, coloured_pixels, mask_slices_z, missing_ohif3, phantom_pacs_server, run_driver, screen_half, truth_side

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(missing_ohif3() is not None, reason=str(missing_ohif3()))]


def seg_on_answer_grid(seg, answer_nifti) -> np.ndarray:
    """A SEG (any segment) as a mask on the grid of the API's answer (NIfTI on the study's DWI grid)."""
    import SimpleITK as sitk
    from strokelabel.dicom import read_seg

    label = read_seg(seg, {s.SegmentLabel: 1 for s in seg.SegmentSequence})
    grid = sitk.ReadImage(str(answer_nifti))
    resampled = sitk.Resample(label, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return np.transpose(sitk.GetArrayFromImage(resampled), (2, 1, 0)) > 0


@pytest.fixture(scope="module")
def stroke_server(tmp_path_factory):
    with phantom_pacs_server(tmp_path_factory.mktemp("ohif_stroke"), models="ischemic_lesion,core_penumbra", kinds=("mri", "ctp"),
                             env={"STROKELABEL_OHIF3_DIR": str(OHIF3_DIST)}) as server:
        yield server


def test_the_strokelabel_panel_runs_a_task_from_ohif_and_shows_its_answer_as_an_editable_segmentation_where_the_lesion_is(stroke_server, tmp_path):
    server = stroke_server
    dwi = server.studies["mri"].series["dwi"]
    info = server.client.info()
    # Where the lesion task puts its answer: the API's own answer on the same series (stored nothing new: same answer).
    answer, api_result = server.client.infer("ischemic_lesion", str(dwi.SeriesInstanceUID), {"result_extension": ".nii.gz"})
    lesion_z, all_z = mask_slices_z(answer)
    assert lesion_z and truth_side(answer) == truth_side(server.studies["mri"].truth["lesion"]) == "left"
    empty_z = min((z for z in all_z if z not in lesion_z), key=lambda z: min(abs(z - a) for a in lesion_z))

    # The correction: a brush stroke from the lesion's centre on its smallest slice, towards the patient's left.
    answer_image = nib.load(str(answer))
    answer_values = np.asarray(answer_image.dataobj) > 0
    z_of = {k: round(float((answer_image.affine @ [0, 0, k, 1])[2]), 2) for k in range(answer_values.shape[2])}
    edit_k = min((k for k in z_of if answer_values[:, :, k].any()), key=lambda k: answer_values[:, :, k].sum())
    i, j = np.argwhere(answer_values[:, :, edit_k]).mean(axis=0)
    x, y, z, _ = answer_image.affine @ [i, j, edit_k, 1]
    plan = {"server": f"http://127.0.0.1:{server.port}", "study_uid": str(dwi.StudyInstanceUID), "z_tolerance_mm": 0.01,
            "step_timeout_ms": 60000, "infer_timeout_ms": 180000, "next_study": True,
            "runs": [{"task": "ischemic_lesion", "nihss": "12", "onset": "90", "series_description": str(dwi.SeriesDescription), "slices_z": lesion_z + [empty_z],
                      "save": True, "brush_stroke": {"z": z_of[edit_k], "point_lps": [-x, -y, z], "step_px": 4}},
                     {"task": "core_penumbra", "nihss": "12"}]}  # an MRI study has no perfusion maps: the server's 4xx
    report = run_driver("ohif_stroke.mjs", plan, tmp_path)
    print({k: report.get(k) for k in ("panel", "steps", "requests")}, [{k: r.get(k) for k in ("task", "rows", "timing", "error")} for r in report["runs"]])
    assert "error" not in report, f"{report['error']}\npage errors: {report['page_errors']}\nHTTP errors: {report['http_errors']}"
    assert not report["page_errors"], report["page_errors"]

    # The extension and mode came from the server, and the panel is drawn by the viewer's one React root.
    served = {r["path"] for r in report["requests"] if r["path"].startswith("/ohif3/strokelabel/") and r["status"] == 200}
    assert served == {"/ohif3/strokelabel/extension.mjs", "/ohif3/strokelabel/mode.mjs"}, report["requests"]
    assert report["panel"]["react_roots"] == 1
    assert report["panel"]["tasks"] == list(info["models"]), report["panel"]

    lesion_run, failed_run = report["runs"]
    # The run: the series on screen, the NIHSS and onset typed in, the figures and the guard's verdict on screen.
    infers = [r for r in report["requests"] if r["method"] == "POST" and r["path"] == "/infer/ischemic_lesion"]
    assert len(infers) == 1 and f"image={dwi.SeriesInstanceUID}" in infers[0]["query"] and infers[0]["status"] == 200, report["requests"]
    assert lesion_run["error"] is None, lesion_run["error"]
    assert lesion_run["progress_text"].startswith("Running"), lesion_run["progress_text"]
    rows = dict(lesion_run["rows"])
    assert rows["strokelabel-guard"] in ("passed", "refused") and rows["strokelabel-review"]
    assert rows["strokelabel-segmentation"] == "loaded (editable)"
    assert rows["strokelabel-figure-lesion_volume_ml"] == f"{infers[0]['answer']['lesion_volume_ml']:.2f}" == f"{api_result['lesion_volume_ml']:.2f}"
    # The answer is an OHIF segmentation named as in /info, on the lesion's slices and on the patient's left.
    assert [(s["segmentation"], s["label"]) for s in lesion_run["segments"]] == [("StrokeLabel original (automatic)", "lesion")], lesion_run["segments"]
    colour = lesion_run["segments"][0]["colour"]
    for shown in lesion_run["slices"]:
        assert shown.get("index") is not None, shown
        left, right = coloured_pixels(shown["file"], colour)
        if shown["z"] in lesion_z:
            near, far = (left, right) if screen_half("left", shown["patient_left_on_screen"]) == "left" else (right, left)
            assert near > 0 and far == 0, f"z={shown['z']}: {near} segment pixels on the lesion's side, {far} on the other"
        else:
            assert left + right == 0, f"z={shown['z']} (no lesion): {left + right} segment pixels"
    print(f"ischemic_lesion from the viewer: {lesion_run['timing']['on_screen_s']:.1f} s from the click to the segmentation on screen, "
          f"{lesion_run['timing']['infer_s']:.1f} s of it the server's infer")

    # Saved unedited: approved, the AI's answer voxel for voxel; painted and saved: corrected, the answer plus the stroke.
    approved_save, corrected_save = lesion_run["saves"]
    assert approved_save["button"] == "Save as training label (approved)" and approved_save["stow_status"] == 200, approved_save
    assert corrected_save["button"] == "Save as training label (corrected)" and corrected_save["stow_status"] == 200, corrected_save
    assert approved_save["said"] == "Saved in the PACS as approved" and corrected_save["said"] == "Saved in the PACS as corrected"
    segs = {seg_provenance(ds): ds for ds in seg_instances(server.orthanc)}
    assert set(segs) == {"AI", "approved", "corrected"}, [(ds.SeriesDescription, ds.get("ContentLabel")) for ds in seg_instances(server.orthanc)]
    on_grid = {name: seg_on_answer_grid(segs[name], answer) for name in ("approved", "corrected")}
    assert np.array_equal(on_grid["approved"], answer_values)
    added = on_grid["corrected"] & ~answer_values
    assert added.any() and not (answer_values & ~on_grid["corrected"]).any(), "the correction must only add the brush stroke"
    assert set(np.nonzero(added.any(axis=(0, 1)))[0]) == {edit_k}, "the stroke must be on the painted slice only"
    stroke_x = (answer_image.affine @ [*np.argwhere(added).mean(axis=0), 1])[0]
    assert stroke_x < (answer_image.affine @ [*((np.array(answer_values.shape) - 1) / 2), 1])[0], "the stroke must be on the patient's left (RAS -x)"
    # The datastore: the newest person's SEG is the study's training label, with its provenance; the AI's answer never is.
    final = server.client.datastore()["objects"][str(dwi.SeriesInstanceUID)]["labels"]["final"]["info"]
    assert final["provenance"] == "corrected" and final["seg_instance_uid"] == str(segs["corrected"].SOPInstanceUID), final

    # Next study: the task's active-learning strategy picks the study with no label yet (the CT perfusion study).
    ctp_uid = str(server.studies["ctp"].series["tmax"].StudyInstanceUID)
    assert report["next_study_url"].endswith(f"StudyInstanceUIDs={ctp_uid}"), report["next_study_url"]

    # A task the study cannot answer: the server's reason on screen, not "Failed".
    assert failed_run["error"].startswith("Core / penumbra (CTP) failed: 422: ") and "missing modality" in failed_run["error"], failed_run["error"]
