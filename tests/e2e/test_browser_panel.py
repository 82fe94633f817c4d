"""monailabel's bundled OHIF 3.10 (/ohif/) in a real browser: each task run from its MONAI Label panel on a PACS study.

Headless Debian chromium, driven by playwright-core (tests/e2e/browser/ohif_panel.mjs), on Orthanc with
the phantom patient's MRI, CT perfusion maps and multiphase CTA, whose lesion and clot lie in the
patient's left hemisphere on a few slices. The user opens a study in the MONAI Label mode, connects the
panel to the server and runs the task (Auto-Segmentation); the panel asks
``/infer/<task>?image=<series on screen>&output=image`` for NRRD and paints the answer into its labelmap.
Every segment must be named as in ``/info``, hold exactly the answer's voxels, and show on the slices
and the side of the screen where the answer puts it, and nowhere else; the study's summary picture
(the figures) must be filed in the PACS as a Secondary Capture the viewer lists.
"""

from __future__ import annotations

import json

import numpy as np
import nibabel as nib
import pytest

from tests.e2e.browser_support import coloured_pixels, mask_sides_by_z, mask_slices_z, missing_browser, phantom_pacs_server, run_driver, screen_half, stands_out, truth_side

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser()))]
# task: (study kind, the series on screen, the truth target whose side the answer must share)
# The colours the driver gives the task's segments (one strongest channel each; not blue, OHIF's text on the viewport is).
DISPLAY_COLOURS = ([230, 0, 0, 255], [0, 210, 0, 255])
CASES = {"ischemic_lesion": ("mri", "dwi", "lesion"), "core_penumbra": ("ctp", "tmax", "corepenumbra"), "clot_region": ("cta", "cta1", "clot")}


@pytest.fixture(scope="module")
def panel_server(tmp_path_factory):
    with phantom_pacs_server(tmp_path_factory.mktemp("ohif_panel"), models=",".join(CASES), kinds=("mri", "ctp", "cta")) as server:
        yield server


@pytest.mark.parametrize("task", list(CASES))
def test_the_monai_label_panel_runs_the_task_on_a_pacs_study_and_shows_its_named_segments_where_the_answer_puts_them(panel_server, task, tmp_path):
    server = panel_server
    kind, on_screen_modality, target = CASES[task]
    study = server.studies[kind]
    shown_series = study.series[on_screen_modality]
    labels = server.client.info()["models"][task]["labels"]  # name: value, as the panel reads them
    # Where the task puts its answer: the server's own answer for the series on screen, through the API, in z (mm) and side.
    answer, _ = server.client.infer(task, str(shown_series.SeriesInstanceUID), {"result_extension": ".nii.gz"})
    answer_values = np.asarray(nib.load(str(answer)).dataobj)
    answer_z, all_z = mask_slices_z(answer)
    assert answer_z, f"{task} found nothing"
    assert truth_side(answer) == truth_side(study.truth[target]) == "left"  # the answer lies where the phantom's lesion is
    empty_z = min((z for z in all_z if z not in answer_z), key=lambda z: min(abs(z - a) for a in answer_z))

    plan = {"server": f"http://127.0.0.1:{server.port}", "study_uid": str(shown_series.StudyInstanceUID), "image_series_uid": str(shown_series.SeriesInstanceUID),
            "task": task, "colours": dict(zip(labels, DISPLAY_COLOURS)), "slices_z": answer_z + [empty_z], "z_tolerance_mm": 0.01, "step_timeout_ms": 60000, "infer_timeout_ms": 180000}
    summaries_before = len(_summary_instances(server, shown_series.StudyInstanceUID, task))
    ai_segs_before = len(_study_instances(server, shown_series.StudyInstanceUID, "SEG", "StrokeLabel original (automatic)"))
    report = run_driver("ohif_panel.mjs", plan, tmp_path)
    print({k: report.get(k) for k in ("requests", "segments", "labelmap_voxels_by_label", "panel_models", "steps")})
    assert "error" not in report, f"{report['error']}\npage errors: {report['page_errors']}\nHTTP errors: {report['http_errors']}"
    # What the panel sent and what the server answered: /info, then the task on the series on screen, NRRD back.
    infers = [r for r in report["requests"] if r["method"] == "POST" and f"/infer/{task}?" in r["url"]]
    assert [r["url"].split("?")[0] for r in report["requests"] if r["method"] == "GET"][:1] == [f"{plan['server']}/info/"], report["requests"]
    assert len(infers) == 1 and infers[0]["status"] == 200, report["requests"]
    assert f"image={shown_series.SeriesInstanceUID}" in infers[0]["url"] and "output=image" in infers[0]["url"]
    assert '"result_extension":".nrrd"' in infers[0]["sent"] and infers[0]["bytes"] > 0, infers[0]
    assert report["http_errors"] == [e for e in report["http_errors"] if "/train/?check_if_running=true" in e], report["http_errors"]
    assert not report["page_errors"], report["page_errors"]
    assert task in report["panel_models"]

    # The panel named the segments as /info does and painted exactly the answer's voxels into its labelmap (the
    # other tasks' segments, which the panel also lists, stay empty).
    segments = {s["label"]: s for s in report["segments"]}
    assert set(labels) <= set(segments), report["segments"]
    for name in segments:
        expected = int((answer_values == labels[name]).sum()) if name in labels else 0
        assert report["labelmap_voxels_by_label"].get(name, 0) == expected, (name, expected, report["labelmap_voxels_by_label"])
    colours = {name: segments[name]["colour"] for name in labels}
    assert all(stands_out(c) for c in colours.values()), f"segment colours {colours} are not ones the pixel count can tell from the image"
    # Segments whose colours share their strongest channel cannot be told apart on screen: judge them together.
    groups: dict[int, list[str]] = {}
    for name, colour in colours.items():
        groups.setdefault(int(np.argmax(colour[:3])), []).append(name)

    # On screen (the axial viewport): each segment's colour on each of its slices, on the side of the screen where
    # the patient's side holding it is shown, and nowhere else.
    for shown in report["slices"]:
        assert "error" not in shown and shown["focal_z"] == pytest.approx(shown["z"], abs=0.01), shown
        for names in groups.values():
            left, right = coloured_pixels(shown["file"], colours[names[0]])
            on_screen = {"left": left, "right": right}
            voxels = {"left": 0, "right": 0}
            for name in names:
                for patient_side, n in mask_sides_by_z(answer, labels[name]).get(shown["z"], {}).items():
                    voxels[patient_side] += n
            for patient_side, n in voxels.items():
                pixels = on_screen[screen_half(patient_side, shown["patient_left_on_screen"])]
                assert (pixels > 0) == (n > 0), (f"{names} at z={shown['z']}: {n} voxels of the answer on the patient's {patient_side}, "
                                                 f"{pixels} pixels of that colour on that half of the screen ({shown['file']})")
    screen_sides = {s["patient_left_on_screen"] for s in report["slices"]}
    assert len(screen_sides) == 1 and {s["left_marker"] for s in report["slices"]} <= {None, {"left": "L", "right": "R"}[screen_sides.pop()]}

    # The figures: the answer's summary picture is in the PACS as a Secondary Capture, which the viewer lists. The API's
    # run above filed it; the panel's run of the same answer files no second copy (one per task, model and answer).
    assert summaries_before == 1 and len(_summary_instances(server, shown_series.StudyInstanceUID, task)) == 1, f"not one summary picture of {task}"
    assert any(f"StrokeLabel {task} summary" in text for text in report["series_list"]), report["series_list"]
    # And the answer is in the PACS as one AUTOMATIC SEG, for the segmentation viewer (/ohif3/) to open and correct.
    assert ai_segs_before >= 1 and len(_study_instances(server, shown_series.StudyInstanceUID, "SEG", "StrokeLabel original (automatic)")) == ai_segs_before


def test_with_access_control_on_the_clinician_logs_in_and_the_panel_runs_the_task(panel_server, tmp_path_factory, tmp_path):
    """A networked server (access control on, the built-in realm), in front of the module's PACS: the browser opening
    the viewer is sent to the server's login page, comes back to the study after it, and the panel's calls are the
    user's (session cookie)."""
    from monailabel.client import MONAILabelClient

    from strokelabel.access import add_user
    from tests.e2e.browser_support import server_in_front
    from tests.e2e.server import free_port

    work = tmp_path_factory.mktemp("ohif_panel_login")
    add_user(work / "users.json", "anna", "annotator-password-2", "annotator")
    env = {"MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": f"http://127.0.0.1:{free_port()}/realms/strokelabel",
           "STROKELABEL_USERS_FILE": str(work / "users.json")}
    with server_in_front(work, panel_server.orthanc, panel_server.studies, models="ischemic_lesion", env=env) as server:
        shown = server.studies["mri"].series["dwi"]
        client = MONAILabelClient(f"http://127.0.0.1:{server.port}", tmpdir=str(tmp_path))
        client.update_auth(client.auth_token("anna", "annotator-password-2"))
        answer, _ = client.infer("ischemic_lesion", str(shown.SeriesInstanceUID), {"result_extension": ".nii.gz"})
        lesion_voxels = int((np.asarray(nib.load(str(answer)).dataobj) == 1).sum())
        plan = {"server": f"http://127.0.0.1:{server.port}", "study_uid": str(shown.StudyInstanceUID), "image_series_uid": str(shown.SeriesInstanceUID),
                "task": "ischemic_lesion", "colours": {"lesion": DISPLAY_COLOURS[0]}, "slices_z": [], "z_tolerance_mm": 0.01,
                "step_timeout_ms": 60000, "infer_timeout_ms": 180000, "login": {"username": "anna", "password": "annotator-password-2"}}
        report = run_driver("ohif_panel.mjs", plan, tmp_path)
        assert "error" not in report, f"{report['error']}\npage errors: {report['page_errors']}\nHTTP errors: {report['http_errors']}"
        assert report["login"]["page"].startswith(f"{plan['server']}/login?next=%2Fohif%2Fmonai-label%3FStudyInstanceUIDs%3D")
        assert report["login"]["landed"].startswith(f"{plan['server']}/ohif/monai-label?StudyInstanceUIDs={plan['study_uid']}")
        infers = [r for r in report["requests"] if r["method"] == "POST" and "/infer/ischemic_lesion?" in r["url"]]
        assert len(infers) == 1 and infers[0]["status"] == 200, report["requests"]
        assert report["labelmap_voxels_by_label"].get("lesion", 0) == lesion_voxels > 0
        audit = [json.loads(line) for line in (server.app_dir / "logs" / "audit.log").read_text().splitlines()]
        assert sum(e["user"] == "anna" and e["path"] == "/infer/ischemic_lesion" and e["status"] == 200 for e in audit) == 2  # client + panel


def _summary_instances(server, study_uid, task) -> list[str]:
    """The PACS's summary pictures (Secondary Capture) of ``task`` in the study."""
    return _study_instances(server, study_uid, "OT", f"StrokeLabel {task} summary")


def _study_instances(server, study_uid, modality: str, description: str) -> list[str]:
    """The PACS's instances of the study in series of ``modality`` and ``description``."""
    out = []
    for series in server.orthanc.get("/series?expand"):
        tags = series["MainDicomTags"]
        if tags.get("Modality") == modality and tags.get("SeriesDescription") == description \
                and server.orthanc.get(f"/studies/{series['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"] == str(study_uid):
            out += series["Instances"]
    return out
