"""The whole MONAI Label loop in one web viewer, OHIF 3.13 with StrokeLabel's extension and mode (/ohif3/stroke).

Headless Debian chromium, driven by playwright-core (tests/e2e/browser/ohif_stroke.mjs) by clicks only, on
Orthanc with a phantom MRI, CT perfusion and multiphase CTA study whose lesion and clot lie in the patient's
left hemisphere on a few slices; the server in PACS mode with access control on (the built-in realm). An admin
logs in, and from the StrokeLabel panel (rendered by OHIF's own React) runs each task on its study with the NIHSS
typed in; each answer is an OHIF segmentation named as in ``/info``, drawn on the answer's slices and side only,
with its figures and the guard's verdict in the panel. The lesion answer is saved unedited (approved: the API's
answer voxel for voxel), painted with OHIF's brush and saved (corrected: the answer plus the painted voxels), the
task retrained from the panel with its decision shown, and the next study opened by the task's active-learning
strategy. A reader logs in, runs the task and is refused the save, in the panel, with the reason.
"""

from __future__ import annotations

import json
import time

import numpy as np
import nibabel as nib
import pytest

from strokelabel.access import add_user
from strokelabel.dicom import seg_provenance
from tests.e2e.browser_support import (OHIF3_DIST, Phases, coloured_pixels, mask_sides_by_z, mask_slices_z, missing_ohif3, phantom_pacs_server,
                                       run_driver, screen_half, truth_side)
from tests.e2e.server import free_port
from tests.e2e.test_browser import seg_instances

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(missing_ohif3() is not None, reason=str(missing_ohif3()))]

USERS = {"adam": ("admin-password-3", "admin"), "rita": ("reader-password-1", "reader")}
# task: (study kind, the series the task reads, the truth target whose side the answer must share)
CASES = {"ischemic_lesion": ("mri", "dwi", "lesion"), "core_penumbra": ("ctp", "tmax", "corepenumbra"), "clot_region": ("cta", "cta1", "clot")}
# Not figures in the panel (lib/ohif3_plugin/extension.mjs figuresOf): timings, label numbering, the guard, where the SEG is.
NOT_FIGURES = {"latencies", "computed_latencies", "label_names", "quality", "ai_seg", "input_notes", "centroids"}


def seg_on_answer_grid(seg, answer_nifti) -> np.ndarray:
    """A SEG (any segment) as a mask on the grid of the API's answer (NIfTI on the study's DWI grid)."""
    import SimpleITK as sitk
    from strokelabel.dicom import read_seg

    label = read_seg(seg, {s.SegmentLabel: 1 for s in seg.SegmentSequence})
    grid = sitk.ReadImage(str(answer_nifti))
    resampled = sitk.Resample(label, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return np.transpose(sitk.GetArrayFromImage(resampled), (2, 1, 0)) > 0


def figures_of(params: dict) -> dict[str, float]:
    """The result's figures as the panel lists them: numbers, and the numbers one level down as ``<key>.<name>``."""
    out = {}
    for key, value in params.items():
        if key in NOT_FIGURES or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
        elif isinstance(value, dict):
            out.update({f"{key}.{name}": float(v) for name, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def study_instances(server, study_uid: str, modality: str, description: str) -> list[str]:
    """The PACS's instances of the study in series of ``modality`` and ``description``."""
    out = []
    for series in server.orthanc.get("/series?expand"):
        tags = series["MainDicomTags"]
        if tags.get("Modality") == modality and tags.get("SeriesDescription") == description \
                and server.orthanc.get(f"/studies/{series['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"] == study_uid:
            out += series["Instances"]
    return out


@pytest.fixture(scope="module")
def stroke_server(tmp_path_factory, mri_reference_phantoms):
    work = tmp_path_factory.mktemp("ohif_stroke")
    for name, (password, role) in USERS.items():
        add_user(work / "users.json", name, password, role)
    env = {"STROKELABEL_OHIF3_DIR": str(OHIF3_DIST), "MONAI_LABEL_AUTH_ENABLE": "true",
           "MONAI_LABEL_AUTH_REALM_URI": f"http://127.0.0.1:{free_port()}/realms/strokelabel", "STROKELABEL_USERS_FILE": str(work / "users.json")}
    with phantom_pacs_server(work, models=",".join(CASES), kinds=("mri", "ctp", "cta"), env=env, login=("adam", USERS["adam"][0])) as server:
        yield server


def test_one_viewer_runs_every_task_saves_approved_and_corrected_retrains_opens_the_next_study_and_refuses_a_readers_save(stroke_server, tmp_path):
    server = stroke_server
    info = server.client.info()
    # Where each task puts its answer: the API's own answer on the series the task reads (the viewer's run of the same
    # answer stores nothing new, and is served from the stored answers), its slices and the patient's side, and the
    # API's infer seconds in this run.
    # The API is asked with the clinical values the viewer sends (as the panel sends them: the text typed in).
    clinical = {"ischemic_lesion": {"nihss": "12", "onset_to_imaging_min": "90"}, "core_penumbra": {"nihss": "12"}, "clot_region": {"nihss": "12"}}
    api = {}
    phase = Phases("call")
    for task, (kind, modality, target) in CASES.items():
        series = server.studies[kind].series[modality]
        started = time.perf_counter()
        answer, result = server.client.infer(task, str(series.SeriesInstanceUID), {"result_extension": ".nii.gz", **clinical[task]})
        seconds = time.perf_counter() - started
        answer_z, all_z = mask_slices_z(answer)
        assert answer_z and truth_side(answer) == truth_side(server.studies[kind].truth[target]) == "left", task
        empty_z = min((z for z in all_z if z not in answer_z), key=lambda z: min(abs(z - a) for a in answer_z))
        api[task] = {"answer": answer, "result": result, "seconds": seconds, "series": series, "answer_z": answer_z, "slices_z": answer_z + [empty_z]}
        phase(f"API infer of {task}")

    # The correction: a brush stroke from the lesion's centre on its smallest slice, towards the patient's left.
    lesion = api["ischemic_lesion"]
    answer_image = nib.load(str(lesion["answer"]))
    answer_values = np.asarray(answer_image.dataobj) > 0
    z_of = {k: round(float((answer_image.affine @ [0, 0, k, 1])[2]), 2) for k in range(answer_values.shape[2])}
    edit_k = min((k for k in z_of if answer_values[:, :, k].any()), key=lambda k: answer_values[:, :, k].sum())
    i, j = np.argwhere(answer_values[:, :, edit_k]).mean(axis=0)
    x, y, z, _ = answer_image.affine @ [i, j, edit_k, 1]

    def run_of(task, **extra):
        return {"task": task, "nihss": "12", "series_description": str(api[task]["series"].SeriesDescription), "slices_z": api[task]["slices_z"], **extra}

    mri_uid, ctp_uid, cta_uid = (str(server.studies[k].series[m].StudyInstanceUID) for k, m, _ in CASES.values())
    login = {name: {"username": name, "password": password} for name, (password, _) in USERS.items()}
    plan = {"server": f"http://127.0.0.1:{server.port}", "z_tolerance_mm": 0.01, "step_timeout_ms": 180000, "infer_timeout_ms": 300000,
            "train_timeout_ms": 600000,
            "sessions": [
                {"name": "admin", "login": login["adam"], "actions": [
                    {"open": mri_uid},
                    {"run": {"task": "core_penumbra", "nihss": "12"}},  # an MRI study has no perfusion maps: the server's 4xx
                    {"run": run_of("ischemic_lesion", onset="90", save=True, brush_stroke={"z": z_of[edit_k], "point_lps": [-x, -y, z], "step_px": 4})},
                    {"retrain": {"task": "ischemic_lesion", "epochs": 1}},
                    {"next": True},
                    {"run": run_of("core_penumbra")},
                    {"open": cta_uid},
                    {"run": run_of("clot_region", display_colours={"clot": [230, 0, 0, 255]})}]},  # not blue as OHIF's controls
                {"name": "reader", "login": login["rita"], "actions": [
                    {"open": mri_uid},
                    {"run": {**run_of("ischemic_lesion"), "slices_z": [], "save": True}}]}]}
    # A training run starts a process that loads the app: minutes on a loaded machine.
    report = run_driver("ohif_stroke.mjs", plan, tmp_path, timeout_s=1800)
    phase("browser driver")
    print("driver steps (s since the browser's launch):", json.dumps(report.get("steps")))
    print({k: report.get(k) for k in ("steps", "http_errors")}, [[{k: r.get(k) for k in ("task", "rows", "timing", "error")} for r in s["runs"]] for s in report["sessions"]])
    assert "error" not in report, f"{report['error']}\npage errors: {report['page_errors']}\nHTTP errors: {report['http_errors']}"
    assert not report["page_errors"], report["page_errors"]
    # The only HTTP errors the page met are the two the test asks for: the MRI study's 422 and the reader's 403.
    assert all(e.startswith(("422 POST", "403 POST")) and ("/infer/core_penumbra?" in e or "/proxy/dicom/" in e) for e in report["http_errors"]), report["http_errors"]
    admin, reader = report["sessions"]

    # Access control: the browser went through the server's login page and came back to the study; the panel offers
    # Retrain to the admin only. The extension and mode came from the server; the panel is the viewer's one React root.
    for session, name in ((admin, "adam"), (reader, "rita")):
        assert session["login_page"].startswith(f"{plan['server']}/login?next=%2Fohif3%2Fstroke%3FStudyInstanceUIDs%3D{mri_uid}"), session
        assert session["landed"].startswith(f"{plan['server']}/ohif3/stroke?StudyInstanceUIDs={mri_uid}"), session
        assert session["panel"]["react_roots"] == 1 and session["panel"]["tasks"] == list(info["models"]), session["panel"]
    assert admin["retrain_offered"] and not reader["retrain_offered"]
    served = {r["path"] for r in report["requests"] if r["path"].startswith("/ohif3/strokelabel/") and r["status"] == 200}
    assert served == {"/ohif3/strokelabel/extension.mjs", "/ohif3/strokelabel/mode.mjs"}, report["requests"]

    failed_run, lesion_run, ctp_run, cta_run = admin["runs"]
    timings = []
    for run in (lesion_run, ctp_run, cta_run):
        task = run["task"]
        expected = api[task]
        labels = info["models"][task]["labels"]  # name: value
        # The run: the series the task reads, the NIHSS typed in, the figures and the guard's verdict on screen.
        infers = [r for r in report["requests"] if r["method"] == "POST" and r["path"] == f"/infer/{task}" and r["status"] == 200]
        assert infers and f"image={expected['series'].SeriesInstanceUID}" in infers[0]["query"], report["requests"]
        assert run["error"] is None and run["progress_text"].startswith("Running"), (task, run["error"], run["progress_text"])
        rows = dict(run["rows"])
        # The viewer asked what the API had answered (same series, models, options): the stored answer, said so.
        assert rows.get("strokelabel-reused", "").startswith("stored, computed "), (task, rows)
        assert rows["strokelabel-guard"] in ("passed", "refused") and rows["strokelabel-review"] and rows["strokelabel-segmentation"] == "loaded (editable)"
        figures = figures_of(expected["result"])
        assert figures, expected["result"]
        for key, value in figures.items():
            assert float(rows[f"strokelabel-figure-{key}"]) == pytest.approx(value, abs=0.0051), (task, key, rows)
        # The answer is an OHIF segmentation whose segments are named as in /info, shown on the answer's slices on the
        # half of the screen where the patient's side holding them is, and nowhere else.
        segments = {s["label"]: s for s in run["segments"] if s["segmentation"] == "StrokeLabel original (automatic)"}
        answer_values_of_task = np.asarray(nib.load(str(expected["answer"])).dataobj)
        present = {name for name, value in labels.items() if (answer_values_of_task == value).any()}
        assert present <= set(segments) <= set(labels), (task, run["segments"])
        for shown in run["slices"]:
            assert shown.get("index") is not None and "error" not in shown, shown
            for name in present:
                left, right = coloured_pixels(shown["file"], segments[name]["colour"])
                on_screen = {"left": left, "right": right}
                voxels = mask_sides_by_z(expected["answer"], labels[name]).get(shown["z"], {"left": 0, "right": 0})
                for patient_side, n in voxels.items():
                    pixels = on_screen[screen_half(patient_side, shown["patient_left_on_screen"])]
                    assert (pixels > 0) == (n > 0), (f"{task} {name} at z={shown['z']}: {n} voxels on the patient's {patient_side}, "
                                                     f"{pixels} pixels of its colour on that half of the screen ({shown['file']})")
        # The labelmap holds exactly the answer's voxels of each segment; OHIF's orientation marker agrees with the side.
        assert run["labelmap_voxels"] == {name: int((answer_values_of_task == labels[name]).sum()) for name in segments}, (task, run["labelmap_voxels"])
        screen_sides = {s["patient_left_on_screen"] for s in run["slices"]}
        assert len(screen_sides) == 1 and {s["left_marker"] for s in run["slices"]} <= {None, {"left": "L", "right": "R"}[screen_sides.pop()]}
        # The figures as a picture too: one summary and one AI SEG of the task in the study, API and viewer runs alike
        # (the same answer is stored once), and the viewer lists the summary.
        # (The lesion's study gets a second one later: the reader's run answers with the model the retraining published.)
        study_uid = str(expected["series"].StudyInstanceUID)
        if task != "ischemic_lesion":
            assert len(study_instances(server, study_uid, "OT", f"StrokeLabel {task} summary")) == 1, task
            assert len(study_instances(server, study_uid, "SEG", "StrokeLabel original (automatic)")) == 1, task
        assert f"StrokeLabel {task} summary" in run["series_list"], run["series_list"]
        timings.append((task, run["timing"]["on_screen_s"], run["timing"]["infer_s"], expected["seconds"]))

    # Saved unedited: approved, the AI's answer voxel for voxel; painted and saved: corrected, the answer plus the stroke.
    approved_save, corrected_save = lesion_run["saves"]
    assert approved_save["button"] == "Save as training label (approved)" and approved_save["stow_status"] == 200, approved_save
    assert corrected_save["button"] == "Save as training label (corrected)" and corrected_save["stow_status"] == 200, corrected_save
    assert approved_save["said"] == "Saved in the PACS as approved" and corrected_save["said"] == "Saved in the PACS as corrected"
    segs = {}
    for ds in seg_instances(server.orthanc):
        segs.setdefault(seg_provenance(ds), []).append(ds)
    assert len(segs["approved"]) == len(segs["corrected"]) == 1, {k: len(v) for k, v in segs.items()}
    on_grid = {name: seg_on_answer_grid(segs[name][0], lesion["answer"]) for name in ("approved", "corrected")}
    assert np.array_equal(on_grid["approved"], answer_values)
    added = on_grid["corrected"] & ~answer_values
    assert added.any() and not (answer_values & ~on_grid["corrected"]).any(), "the correction must only add the brush stroke"
    assert set(np.nonzero(added.any(axis=(0, 1)))[0]) == {edit_k}, "the stroke must be on the painted slice only"
    stroke_x = (answer_image.affine @ [*np.argwhere(added).mean(axis=0), 1])[0]
    assert stroke_x < (answer_image.affine @ [*((np.array(answer_values.shape) - 1) / 2), 1])[0], "the stroke must be on the patient's left (RAS -x)"
    dwi_uid = str(lesion["series"].SeriesInstanceUID)
    final = server.client.datastore()["objects"][dwi_uid]["labels"]["final"]["info"]
    assert final["provenance"] == "corrected" and final["seg_instance_uid"] == str(segs["corrected"][0].SOPInstanceUID), final

    # A task the study cannot answer: the server's reason on screen, not "Failed".
    assert failed_run["error"].startswith("Core / penumbra (CTP) failed: 422: ") and "missing modality" in failed_run["error"], failed_run["error"]

    # Retrained from the panel: one POST /train of the MRI lesion model with the epochs typed in, progress shown while
    # it ran, and the server's decision (the model's train stats) on screen with its figures.
    trains = [r for r in report["requests"] if r["method"] == "POST" and r["path"].startswith("/train/")]
    assert [(r["path"], r["status"]) for r in trains] == [("/train/ischemic_lesion_mri", 200)], trains
    retrain = admin["retrain"]
    assert retrain["error"] is None, retrain
    assert any("epoch 1/1" in said for said in retrain["progress"]), retrain["progress"]
    stats = server.client.info()["train_stats"]["ischemic_lesion_mri"]
    decision = retrain["decision"]
    verdict = f"published as {stats['version']}" if stats["published"] else f"kept aside as {stats['version']}"
    assert decision["strokelabel-decision-verdict"] == verdict and decision["strokelabel-decision-reason"] == stats["reason"], (decision, stats)
    assert float(decision["strokelabel-decision-candidate"]) == pytest.approx(stats["candidate_val_dice"], abs=0.0006)
    assert stats["trained_by"] == "adam" and stats["training_data"]["label_provenance"], stats

    # Next study: the task's active-learning strategy picks a study with no label yet; the perfusion task ran there.
    assert admin["next_study_url"].endswith(f"StudyInstanceUIDs={ctp_uid}"), admin["next_study_url"]

    # The reader ran the task and was refused the save, in the panel, with the server's reason.
    (reader_run,) = reader["runs"]
    assert reader_run["error"] is None and dict(reader_run["rows"])["strokelabel-segmentation"] == "loaded (editable)", reader_run
    (refused,) = reader_run["saves"]
    assert refused["stow_status"] == 403 and refused["said"].startswith("The label was not saved: 403"), refused
    assert "annotator" in refused["said"], refused["said"]
    assert len([ds for ds in seg_instances(server.orthanc) if seg_provenance(ds) != "AI"]) == 2  # the reader stored nothing
    # The viewer's calls were the users' (the login cookie), in the audit log.
    audit = [json.loads(line) for line in (server.app_dir / "logs" / "audit.log").read_text().splitlines()]
    assert any(e["user"] == "adam" and e["path"] == "/infer/clot_region" and e["status"] == 200 for e in audit)
    assert any(e["user"] == "adam" and e["path"] == "/train/ischemic_lesion_mri" and e["status"] == 200 for e in audit)
    assert any(e["user"] == "rita" and e["path"] == "/proxy/dicom" and e["method"] == "POST" and e["status"] == 403 for e in audit)

    for task, on_screen_s, panel_infer_s, api_s in timings:
        print(f"{task} from the viewer: {on_screen_s:.1f} s from the click to the segmentation on screen "
              f"({panel_infer_s:.1f} s of it the server's answer); the API's infer of the same study in this run: {api_s:.1f} s")
    print(f"retraining from the viewer (1 epoch): {retrain['seconds_to_decision']:.0f} s from the click to the decision: "
          f"{decision['strokelabel-decision-verdict']} (candidate Dice {decision['strokelabel-decision-candidate']}, "
          f"in use {decision['strokelabel-decision-in-use']})")
