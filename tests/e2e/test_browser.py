"""OHIF 3.13 (/ohif3/) in a real browser: the AI's SEG shown where the lesion is, corrected, stored, trained from.

Headless Debian chromium, driven by playwright-core (tests/e2e/browser/ohif_seg.mjs), on Orthanc with
a phantom MRI study whose lesion lies in the patient's left hemisphere on a few slices. The answer of
the lesion task is stored in the PACS as an AUTOMATIC SEG (``save_label``); OHIF must show it on the
slices and the side where the SEG's geometry puts it, a brush stroke must reach the PACS in the SEG
OHIF stores, and that SEG must become the study's training label. Everything installed by
``scripts/setup_viewer.sh`` (run by ``scripts/run_tests.sh``).
"""

from __future__ import annotations

import io
import urllib.request

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests.e2e.browser_support import OHIF3_DIST, WARMTH, coloured_pixels, missing_ohif3, phantom_pacs_server, run_driver, screen_half, truth_side

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(missing_ohif3() is not None, reason=str(missing_ohif3()))]


# ---- the SEG's geometry, in DICOM patient coordinates (LPS, mm) ---------------------------------------
def _frame_geometry(ds, i: int):
    def pick(group_name, item_name, attribute):
        for groups in (ds.PerFrameFunctionalGroupsSequence[i], ds.SharedFunctionalGroupsSequence[0]):
            if group_name in groups:
                return [float(v) for v in getattr(getattr(groups, group_name)[0], attribute)]
        raise AssertionError(f"SEG frame {i} has no {item_name}")

    position = np.array(pick("PlanePositionSequence", "position", "ImagePositionPatient"))
    orientation = np.array(pick("PlaneOrientationSequence", "orientation", "ImageOrientationPatient"))
    row_spacing, column_spacing = pick("PixelMeasuresSequence", "spacing", "PixelSpacing")
    return position, orientation[:3] * column_spacing, orientation[3:] * row_spacing


def seg_slices(ds) -> dict[float, np.ndarray]:
    """Each frame's mask (any segment) by its z position (mm, rounded); frames of one z are merged."""
    pixels = ds.pixel_array.reshape(int(ds.get("NumberOfFrames", 1)), ds.Rows, ds.Columns)
    out: dict[float, np.ndarray] = {}
    for i in range(pixels.shape[0]):
        z = round(_frame_geometry(ds, i)[0][2], 2)
        out[z] = out.get(z, np.zeros(pixels.shape[1:], bool)) | (pixels[i] > 0)
    return out


def lesion_points_lps(ds) -> np.ndarray:
    """The world position (LPS mm) of every SEG pixel."""
    pixels = ds.pixel_array.reshape(int(ds.get("NumberOfFrames", 1)), ds.Rows, ds.Columns)
    points = []
    for i in range(pixels.shape[0]):
        position, along_row, along_column = _frame_geometry(ds, i)
        rows, columns = np.nonzero(pixels[i])
        points += [position + c * along_row + r * along_column for r, c in zip(rows, columns)]
    return np.array(points)


def frame_centre_x(ds) -> float:
    position, along_row, along_column = _frame_geometry(ds, 0)
    return float((position + (ds.Columns - 1) / 2 * along_row + (ds.Rows - 1) / 2 * along_column)[0])


def seg_instances(orthanc) -> list[pydicom.Dataset]:
    out = []
    for uid in orthanc.get("/series"):
        info = orthanc.get(f"/series/{uid}")
        if info["MainDicomTags"].get("Modality") == "SEG":
            for instance in info["Instances"]:
                with urllib.request.urlopen(f"{orthanc.url}/instances/{instance}/file", timeout=60) as answer:
                    out.append(pydicom.dcmread(io.BytesIO(answer.read())))
    return out


# ---- the test ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ohif_server(tmp_path_factory):
    with phantom_pacs_server(tmp_path_factory.mktemp("ohif"), models="ischemic_lesion", env={"STROKELABEL_OHIF3_DIR": str(OHIF3_DIST)}) as server:
        yield server


def test_ohif_shows_the_ai_seg_where_the_lesion_is_and_stores_the_correction_that_becomes_the_training_label(ohif_server, tmp_path):
    server, orthanc = ohif_server, ohif_server.orthanc
    dwi = server.studies["mri"].series["dwi"]
    # The task's answer, stored in the PACS as an AUTOMATIC SEG (MONAI Label's save_label: the datastore's "original").
    _, result = server.client.infer("ischemic_lesion", str(dwi.SeriesInstanceUID), {"method": "baseline", "save_label": True})
    assert result["lesion_volume_ml"] > 0
    (ai_seg,) = seg_instances(orthanc)
    assert ai_seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC" and ai_seg.SeriesDescription == "StrokeLabel original (automatic)"

    # Where the lesion is, from the SEG's own geometry: its slices and the patient's side (LPS: +x is the left).
    ai_slices = seg_slices(ai_seg)
    lesion_z = sorted(z for z, mask in ai_slices.items() if mask.any())
    empty_z = max((z for z in ai_slices if not ai_slices[z].any()), key=lambda z: min(abs(z - l) for l in lesion_z))
    points = lesion_points_lps(ai_seg)
    side = "left" if points[:, 0].mean() > frame_centre_x(ai_seg) else "right"
    assert side == truth_side(server.studies["mri"].truth["lesion"]) == "left"  # the phantom's truth (RAS) agrees: patient's left
    assert 1 <= len(lesion_z) <= 8, f"a lesion on a few slices expected, got {lesion_z}"

    # The correction: a brush stroke from the lesion's centre on its smallest slice.
    edit_z = min(lesion_z, key=lambda z: ai_slices[z].sum())
    on_edit_slice = points[np.isclose(points[:, 2], edit_z, atol=0.01)]
    plan = {
        "server": f"http://127.0.0.1:{server.port}",
        "study_uid": str(dwi.StudyInstanceUID), "image_series_uid": str(dwi.SeriesInstanceUID),
        "seg_series_uid": str(ai_seg.SeriesInstanceUID), "seg_description": str(ai_seg.SeriesDescription),
        "slices_z": lesion_z + [empty_z], "z_tolerance_mm": 0.01, "step_timeout_ms": 180000,
        "brush_stroke": {"z": edit_z, "point_lps": on_edit_slice.mean(axis=0).tolist(), "step_px": 4},
        "export_name": "Lesion corrected in OHIF",
    }
    report = run_driver("ohif_seg.mjs", plan, tmp_path)
    assert "error" not in report, f"{report['error']}\npage errors: {report['page_errors']}\nHTTP errors: {report['http_errors']}"
    assert [(s["segmentation"], s["label"]) for s in report["segments"]] == [(ai_seg.SeriesDescription, "lesion")]
    red, _, blue = report["segments"][0]["colour"][:3]
    assert red - blue > 2 * WARMTH, f"the segment's colour {report['segments'][0]['colour']} is not one the pixel count can tell from the image"

    # On screen: the segment's colour on every lesion slice, on the side where the patient's left is, and nowhere else.
    for shown in report["slices"]:
        assert shown.get("index") is not None, shown
        left, right = coloured_pixels(shown["file"])
        expected_half = screen_half(side, shown["patient_left_on_screen"])
        if shown["z"] in lesion_z:
            near, far = (left, right) if expected_half == "left" else (right, left)
            assert near > 0 and far == 0, f"z={shown['z']}: segment pixels {near} on the lesion's side ({expected_half} half), {far} on the other"
        else:
            assert left + right == 0, f"z={shown['z']} (no lesion): {left + right} segment pixels"
    markers = {s["left_marker"] for s in report["slices"]}
    screen_sides = {s["patient_left_on_screen"] for s in report["slices"]}
    assert len(screen_sides) == 1 and markers <= {None, {"left": "L", "right": "R"}[screen_sides.pop()]}  # OHIF's own marker agrees

    # Stored: STOW-RS through the server's proxy into Orthanc, a new SEG series with the brush stroke in it.
    assert report["stow"]["status"] == 200 and "/proxy/dicom/" in report["stow"]["url"], report["stow"]
    stored = [ds for ds in seg_instances(orthanc) if ds.SeriesDescription == plan["export_name"]]
    assert len(stored) == 1, [ds.SeriesDescription for ds in seg_instances(orthanc)]
    ohif_seg = stored[0]
    assert ohif_seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ohif_seg.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ohif_seg.ReferencedSeriesSequence[0].SeriesInstanceUID == dwi.SeriesInstanceUID
    assert [s.SegmentLabel for s in ohif_seg.SegmentSequence] == ["lesion"]
    assert ohif_seg.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"  # what OHIF 3.13 writes on export (README)
    corrected = seg_slices(ohif_seg)
    for z in lesion_z:
        before, after = ai_slices[z], corrected.get(z, np.zeros_like(ai_slices[z]))
        if z == edit_z:
            assert after.sum() > before.sum() and (after >= before).all(), f"the brush stroke on z={z} is not in the stored SEG"
        else:
            assert np.array_equal(after, before), f"z={z} changed without an edit"
    assert not any(mask.any() for z, mask in corrected.items() if z not in lesion_z)

    # The datastore takes OHIF's SEG as the study's training label, voxel for voxel.
    final = server.client.datastore()["objects"][str(dwi.SeriesInstanceUID)]["labels"]["final"]
    assert final["info"]["source"] == "PACS DICOM-SEG" and final["info"]["seg_instance_uid"] == ohif_seg.SOPInstanceUID
    label = np.asarray(nib.load(server.client.download_label(str(dwi.SeriesInstanceUID), "final")).dataobj)
    assert int((label > 0).sum()) == sum(int(m.sum()) for m in corrected.values())
