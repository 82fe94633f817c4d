"""The summary picture: the numbers it writes, the side it draws a lesion on, the PNG it leaves on disk."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from strokelabel import summary
from strokelabel.baselines import core_penumbra_figures, lesion_figures
from strokelabel.baselines.figures import clot_figures
from strokelabel.guard import verdict
from strokelabel.study import Study
from strokelabel.summary import choose_slices, render_summary, summary_figure
from strokelabel.summary_figures import RESEARCH_USE, summary_lines, tmax_figures

SHAPE = (48, 56, 10)  # RAS voxel order: x to the patient's right, y anterior, z superior
SPACING = (2.0, 2.0, 5.0)
VOXEL_ML = 0.02  # 2 x 2 x 5 mm³
AFFINE = np.diag([*SPACING, 1.0])
CENTRE = (np.array(SHAPE) - 1) / 2.0


def ellipsoid(centre, semi_axes) -> np.ndarray:
    grid = np.indices(SHAPE, dtype=np.float32)
    return sum(((grid[i] - centre[i]) / semi_axes[i]) ** 2 for i in range(3)) <= 1.0


BRAIN = ellipsoid(CENTRE, (20, 24, 6))


def on_side(mask: np.ndarray, side: str) -> np.ndarray:
    """``mask`` in the patient's left (low x in RAS) or right hemisphere: mirrored about the volume's centre for right."""
    return mask if side == "left" else mask[::-1]


def perfusion_label(side="left", core_semi=(4, 4, 2), hypo_semi=(10, 12, 3)) -> np.ndarray:
    """Core inside a larger hypoperfused region, centred in one hemisphere."""
    centre = (12, 28, 4.5)
    label = np.zeros(SHAPE, np.uint8)
    label[ellipsoid(centre, hypo_semi) & BRAIN] = 2
    label[ellipsoid(centre, core_semi) & BRAIN] = 1
    return on_side(label, side)


def ctp_study(label: np.ndarray, clinical=None) -> Study:
    """CBF low in the core, Tmax 12 s in the core and 8 s in the penumbra: Tmax > 10 s = core, Tmax > 6 s = both."""
    cbf = np.where(BRAIN, 50.0, 0.0).astype(np.float32)
    cbf[label == 1], cbf[label == 2] = 5.0, 30.0
    tmax = np.where(BRAIN, 2.0, 0.0).astype(np.float32)
    tmax[label == 1], tmax[label == 2] = 12.0, 8.0
    cbv = np.where(BRAIN, 4.0, 0.0).astype(np.float32)
    mtt = np.where(BRAIN, 5.0, 0.0).astype(np.float32)
    return Study("sub-ctp9_ses-01", "ctp", Path("sub-ctp9_ses-01_tmax.nii.gz"), AFFINE,
                 {"cbf": cbf, "cbv": cbv, "mtt": mtt, "tmax": tmax}, {}, clinical or {})


def mri_study(label: np.ndarray) -> Study:
    dwi = np.where(BRAIN, 100.0, 0.0).astype(np.float32)
    dwi[label > 0] = 300.0
    adc = np.where(BRAIN, 0.8, 0.0).astype(np.float32)
    adc[label > 0] = 0.4
    return Study("sub-mri9_ses-01", "mri", Path("sub-mri9_ses-01_dwi.nii.gz"), AFFINE, {"dwi": dwi, "adc": adc}, {})


def cta_study(label: np.ndarray, atlas: np.ndarray) -> Study:
    cta = np.where(BRAIN, 40.0, -1000.0).astype(np.float32)
    cta[10:38, 28, 2:8] = 300.0  # an enhancing artery across both hemispheres
    cta[label > 0] = 30.0  # the clot: a gap in it
    return Study("sub-cta9_ses-01", "cta", Path("sub-cta9_ses-01_acq-phase1_cta.nii.gz"), AFFINE, {"cta1": cta, "atlas": atlas}, {})


def auto_result(figures: dict, passed=True) -> dict:
    """A result as the infer task writes it when auto served the model (stroke_infer.run_inferer)."""
    if passed:
        return {"method": "model", "method_reason": "the model agrees with the physiology of this study",
                "quality": {"passed": True, "reason": "agrees: hypoperfusion as Tmax > 6 s"}, "review": False, **figures}
    return {"method": "baseline",
            "method_reason": "the model disagrees with the physiology of this study (see quality): the physiological rule was served",
            "quality": {"passed": False, "reason": "hypoperfusion 80.0 mL is 2.00 x the Tmax > 6 s volume 40.0 mL"},
            "review": True,
            "review_reason": "the model disagrees with the physiology of this study: hypoperfusion 80.0 mL is 2.00 x the Tmax > 6 s volume 40.0 mL",
            **figures}


def ml(mask) -> str:
    return f"{np.count_nonzero(mask) * VOXEL_ML:.1f} mL"


# ---- the numbers ---------------------------------------------------------------------------------
def test_core_penumbra_lines_give_volumes_ratio_hir_and_the_criteria_met():
    label = perfusion_label()
    core, hypo = label == 1, label > 0
    assert 0 < np.count_nonzero(core) * VOXEL_ML < 70 and np.count_nonzero(hypo & ~core) * VOXEL_ML >= 15  # built to meet DEFUSE 3
    study = ctp_study(label)
    lines = summary_lines(study, label, auto_result(core_penumbra_figures(label, SPACING)))
    ratio = np.count_nonzero(hypo) / np.count_nonzero(core)
    for expected in (f"Study: {study.study_id}", "Acquisition: unknown", "Task: core_penumbra on CT perfusion",
                     f"Core: {ml(core)}", f"Penumbra: {ml(label == 2)}", f"Hypoperfusion (Tmax > 6 s): {ml(hypo)}",
                     f"Mismatch volume: {ml(label == 2)}", f"Mismatch ratio: {ratio:.2f}",
                     f"Tmax > 10 s: {ml(core)}", f"HIR (Tmax > 10 s / Tmax > 6 s): {np.count_nonzero(core) / np.count_nonzero(hypo):.2f}",
                     "DEFUSE 3: met", "   core < 70 mL: met", "   mismatch ratio ≥ 1.8: met", "   mismatch volume ≥ 15 mL: met",
                     "EXTEND: met", "Method: model (chosen by auto: the model agrees with the physiology of this study)",
                     "Guard: passed (agrees: hypoperfusion as Tmax > 6 s)"):
        assert expected in lines
    assert lines[-1] == RESEARCH_USE == "Research use only — not for diagnosis"


def test_core_penumbra_lines_say_not_met_for_a_small_mismatch():
    label = perfusion_label(hypo_semi=(5, 5, 2))  # penumbra only a thin rim around the core
    mismatch_ml = np.count_nonzero(label == 2) * VOXEL_ML
    assert mismatch_ml < 10
    lines = summary_lines(ctp_study(label), label, auto_result(core_penumbra_figures(label, SPACING)))
    assert "DEFUSE 3: not met" in lines and "   mismatch volume ≥ 15 mL: not met" in lines and "   core < 70 mL: met" in lines
    assert "EXTEND: not met" in lines and "   mismatch volume > 10 mL: not met" in lines
    assert "DEFUSE 3: met" not in lines


def test_figures_missing_from_the_result_come_from_the_label():
    label = perfusion_label()
    lines = summary_lines(ctp_study(label), label, {"method": "baseline", "method_reason": "requested"}, task="core_penumbra")
    assert f"Core: {ml(label == 1)}" in lines and "Method: baseline (requested)" in lines
    assert "Guard: no verdict in the result" in lines


def test_tmax_figures_count_inside_the_brain_only():
    tmax = np.zeros((10, 10, 10), np.float32)
    tmax[:4] = 12.0  # 400 voxels above 10 s
    tmax[4:8] = 7.0  # 400 more above 6 s
    brain = np.ones(tmax.shape, bool)
    brain[0] = False  # 100 of the severe voxels outside the brain
    figures = tmax_figures(tmax, brain, (1.0, 1.0, 1.0))
    assert figures["tmax10_volume_ml"] == pytest.approx(0.3)
    assert figures["tmax6_volume_ml"] == pytest.approx(0.7)
    assert figures["hypoperfusion_intensity_ratio"] == pytest.approx(3 / 7)
    assert tmax_figures(np.zeros_like(tmax), brain, (1.0, 1.0, 1.0))["hypoperfusion_intensity_ratio"] is None


def test_tmax_figures_of_the_result_are_shown_when_it_has_them():
    label = perfusion_label()
    result = {**auto_result(core_penumbra_figures(label, SPACING)), "tmax10_volume_ml": 12.34, "hypoperfusion_intensity_ratio": 0.456}
    lines = summary_lines(ctp_study(label), label, result)
    assert "Tmax > 10 s: 12.3 mL" in lines and "HIR (Tmax > 10 s / Tmax > 6 s): 0.46" in lines


def test_a_guard_failure_is_written_with_its_reason_and_the_method_auto_served():
    label = perfusion_label()
    result = auto_result(core_penumbra_figures(label, SPACING), passed=False)
    lines = summary_lines(ctp_study(label), label, result)
    assert f"Guard: NOT passed, review: {result['review_reason']}" in lines
    assert ("Method: baseline (chosen by auto: the model disagrees with the physiology of this study (see quality): "
            "the physiological rule was served)") in lines
    assert not any(line.startswith("Guard: passed") for line in lines)


def test_the_guards_own_verdict_json_is_read():
    label = perfusion_label()
    wrong = perfusion_label(hypo_semi=(18, 22, 5))  # a model's hypoperfusion far larger than Tmax > 6 s
    quality = verdict("core_penumbra", wrong, label, spacing_mm=SPACING).as_json()
    assert not quality["passed"]
    result = {**core_penumbra_figures(wrong, SPACING), "method": "model", "method_reason": "requested", "quality": quality,
              "review": True, "review_reason": f"the model disagrees with the physiology of this study: {quality['reason']}"}
    lines = summary_lines(ctp_study(label), wrong, result)
    assert any(line.startswith("Guard: NOT passed, review:") and quality["reason"] in line for line in lines)


def test_acquisition_time_from_the_argument_else_the_clinical_sidecar():
    label = perfusion_label()
    result = auto_result(core_penumbra_figures(label, SPACING))
    study = ctp_study(label, clinical={"acquisition_time": "2026-05-01T08:30", "nihss": 14, "onset_to_imaging_min": 95})
    assert "Acquisition: 2026-05-01T08:30" in summary_lines(study, label, result)
    lines = summary_lines(study, label, result, acquisition_time="2026-05-01T09:00")
    assert "Acquisition: 2026-05-01T09:00" in lines and "NIHSS: 14" in lines and "Onset to imaging: 95 min" in lines


def test_mri_lesion_lines_give_volume_and_count():
    label = np.zeros(SHAPE, np.uint8)
    label[ellipsoid((12, 28, 4.5), (4, 4, 2)) & BRAIN] = 1
    label[ellipsoid((14, 12, 4.5), (2, 2, 1)) & BRAIN] = 1  # a second, separate lesion
    result = {"method": "baseline", "method_reason": "requested", "rule": "ADC < 620e-6 mm2/s and DWI hyperintense",
              "quality": {"check": "none needed: the baseline is the physiological rule itself", "passed": True}, "review": False,
              **lesion_figures(label, SPACING)}
    lines = summary_lines(mri_study(label), label, result)
    assert f"Lesion: {ml(label)}" in lines and "Lesion count: 2" in lines
    assert "Task: ischemic_lesion on MRI DWI/ADC" in lines
    assert "Guard: passed (none needed: the baseline is the physiological rule itself)" in lines


def clot_case():
    label = np.zeros(SHAPE, np.uint8)
    label[14:16, 28, 4:6] = 1  # in the patient's left (low x)
    atlas = np.zeros(SHAPE, np.uint8)
    atlas[BRAIN] = 15
    atlas[BRAIN & (np.indices(SHAPE)[0] < 24)] = 7  # left half: region 7
    figures = clot_figures(label, AFFINE, atlas, brain_mask=BRAIN)
    regions = [{"region": r, "clot": r == 7, "probability": 0.97 if r == 7 else 0.01} for r in range(1, 16)]
    result = {"method": "baseline", "method_reason": "requested", "quality": {"check": "none needed", "passed": True},
              "review": False, **figures, "regions": regions}
    return cta_study(label, atlas), label, result


def test_clot_lines_give_volume_location_and_the_15_region_flags():
    study, label, result = clot_case()
    lines = summary_lines(study, label, result, region_names=[f"name{r}" for r in range(1, 16)])
    assert f"Clot volume: {np.count_nonzero(label) * VOXEL_ML:.3f} mL in 1 component" in lines
    assert any(line.startswith("Location: left hemisphere, slices 4–5") for line in lines)
    assert "Main region:  7 name7" in lines
    rows = [line for line in lines if line[:2].strip().isdigit()]
    assert len(rows) == 15
    assert rows[6].split() == ["7", "name7", "CLOT", "0.97"] and rows[0].split() == ["1", "name1", "-", "0.01"]
    without_atlas = {**result, "regions": None, "regions_note": "no vascular atlas beside the study: region flags need it"}
    assert "Regions: no vascular atlas beside the study: region flags need it" in summary_lines(study, label, without_atlas)


# ---- the picture ---------------------------------------------------------------------------------
def red_pixels(rgb: np.ndarray) -> np.ndarray:
    """Where the core/lesion/clot overlay shows: red well above green and blue (grey maps, yellow and white marks never are)."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] - rgb[..., 1] > 80) & (rgb[..., 0] - rgb[..., 2] > 80)


def panel_halves(figure, ax, image: np.ndarray):
    """The PNG pixels of an axes' left and right halves (the image is centred in its axes)."""
    height, width = image.shape[:2]
    x0, y0, w, h = ax.get_position().bounds
    top, bottom = int(round((1 - y0 - h) * height)), int(round((1 - y0) * height))
    left, mid, right = int(round(x0 * width)), int(round((x0 + w / 2) * width)), int(round((x0 + w) * width))
    return image[top:bottom, left:mid], image[top:bottom, mid:right]


def mark_side(ax, letter: str) -> str:
    (x,) = [t.get_position()[0] for t in ax.texts if t.get_text() == letter]
    return "left" if x < 0.5 else "right"


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_lesion_in_one_hemisphere_is_drawn_on_the_half_marked_with_that_side(side, tmp_path):
    assert nib.aff2axcodes(AFFINE) == ("R", "A", "S")  # +x is the patient's right: low x is the left hemisphere
    label = perfusion_label(side=side)
    study = ctp_study(label)
    result = auto_result(core_penumbra_figures(label, SPACING))
    image = np.asarray(Image.open(render_summary(study, label, result, tmp_path / "s.png")).convert("RGB"))
    figure = summary_figure(study, label, result)
    overlays = [ax for ax in figure.axes if ax.get_label().startswith("overlay")]
    assert len(overlays) == 2 * len(choose_slices(label, study.brain_mask))  # CBF and Tmax rows
    mark = "L" if side == "left" else "R"
    seen = 0
    for ax in overlays:
        halves = dict(zip(("left", "right"), panel_halves(figure, ax, image)))
        marked, other = halves[mark_side(ax, mark)], halves[mark_side(ax, "R" if mark == "L" else "L")]
        assert not red_pixels(other).any(), ax.get_label()
        seen += int(red_pixels(marked).any())
    assert seen >= len(overlays) // 2  # the label is on most of the chosen slices, on the right side of each


@pytest.mark.parametrize("kind", ["ctp", "mri", "cta"])
def test_render_writes_one_page_png_that_is_not_blank(kind, tmp_path):
    if kind == "cta":
        study, label, result = clot_case()
    else:
        label = perfusion_label() if kind == "ctp" else (perfusion_label() > 0).astype(np.uint8)
        study = ctp_study(label) if kind == "ctp" else mri_study(label)
        result = auto_result(core_penumbra_figures(label, SPACING) if kind == "ctp" else lesion_figures(label, SPACING))
    path = render_summary(study, label, result, tmp_path / "out" / "summary.png")
    assert path == tmp_path / "out" / "summary.png" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["summary.png"]  # no temporary file left
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (1200, 800)
        rgb = np.asarray(png.convert("RGB"))
    assert np.mean(rgb.min(axis=-1) < 250) > 0.2  # images and text cover a good part of the page
    assert red_pixels(rgb).sum() > 20  # the label is visible
    assert path.stat().st_size < 300_000 and path.stat().st_mode & 0o777 == 0o644


def test_a_failed_render_leaves_the_previous_picture_and_no_temporary_file(tmp_path, monkeypatch):
    label = perfusion_label()
    study, result = ctp_study(label), auto_result(core_penumbra_figures(label, SPACING))
    path = render_summary(study, label, result, tmp_path / "s.png")
    before = path.read_bytes()

    def broken(figure, out):
        out.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(summary, "_write_png", broken)
    with pytest.raises(OSError, match="disk full"):
        render_summary(study, label, result, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["s.png"]
    with pytest.raises(ValueError, match="not the study's RAS grid"):
        render_summary(study, label[:, :, :5], result, path)


def test_aif_and_vof_are_drawn_only_when_the_maps_came_from_a_4d_series():
    label = perfusion_label()
    study, result = ctp_study(label), auto_result(core_penumbra_figures(label, SPACING))
    assert not any("AIF/VOF" in ax.get_label() for ax in summary_figure(study, label, result).axes)
    times = list(np.arange(0.0, 40.0, 2.0))
    curve = lambda peak, t0: [peak * max(0.0, (t - t0) / 6.0) * np.exp(-max(0.0, t - t0) / 6.0) for t in times]  # noqa: E731
    result["maps_from_4d"] = {"aif": {"times_s": times, "curve_hu": curve(300, 8), "centroid_ijk": [10, 30, 4]},
                              "vof": {"times_s": times, "curve_hu": curve(200, 14), "centroid_ijk": [24, 6, 5]}}
    figure = summary_figure(study, label, result)
    (where,) = [ax for ax in figure.axes if "AIF/VOF" in ax.get_label()]
    aif_marker = [line for line in where.lines if line.get_marker() == "+"][0]
    width = where.images[0].get_array().shape[1]
    # i = 10 is in the patient's left: the marker sits on the half marked L
    assert (aif_marker.get_xdata()[0] > width / 2) == (mark_side(where, "L") == "right")
    curves = [ax for ax in figure.axes if ax.get_xlabel() == "time (s)"]
    assert len(curves) == 1 and [line.get_label() for line in curves[0].lines] == ["AIF", "VOF"]


def test_slices_span_the_label_and_include_its_largest_slice():
    label = np.zeros(SHAPE, np.uint8)
    label[10:20, 20:30, 2:9] = 1
    label[5:30, 10:40, 6] = 1  # the slice with most label
    slices = choose_slices(label, BRAIN, 6)
    assert len(slices) == 6 and slices[0] == 2 and slices[-1] == 8 and 6 in slices
    thin = np.zeros(SHAPE, np.uint8)
    thin[10:12, 20:22, 5] = 1
    slices = choose_slices(thin, BRAIN, 6)
    assert 5 in slices and len(slices) == 6 and min(slices) >= 0 and max(slices) <= 9
    empty = choose_slices(np.zeros(SHAPE, np.uint8), BRAIN, 6)
    assert empty == sorted(set(empty)) and 0 < len(empty) <= 6


def test_a_ctp_lesion_is_drawn_on_the_perfusion_maps_with_its_tmax_figures(tmp_path):
    perfusion = perfusion_label()
    lesion = (perfusion == 1).astype(np.uint8)
    study = ctp_study(perfusion)
    result = {"method": "baseline", "method_reason": "requested", "rule": "rCBF < 30 % of the healthy side",
              "quality": {"check": "none needed: the baseline is the physiological rule itself", "passed": True}, "review": False,
              **lesion_figures(lesion, SPACING)}
    lines = summary_lines(study, lesion, result)
    assert f"Lesion (ischemic core): {ml(lesion)}" in lines and "Lesion count: 1" in lines
    assert f"Tmax > 10 s: {ml(perfusion == 1)}" in lines and f"Tmax > 6 s (map): {ml(perfusion > 0)}" in lines
    assert not any(line.startswith("DEFUSE 3") for line in lines)  # no penumbra in this task: no mismatch criteria
    figure = summary_figure(study, lesion, result)
    assert {ax.get_label().split(" z=")[0] for ax in figure.axes} == {
        "overlay CBF (mL/100 g/min)", "overlay Tmax (s), 0–12 s", "plain CBV (mL/100 g), no overlay"}
    assert render_summary(study, lesion, result, tmp_path / "lesion.png").exists()


def test_a_series_whose_venous_output_was_not_found_still_gets_its_picture_saying_so():
    """compute_maps leaves the VOF's lists empty when it finds none (as on a short flat-folder probe series);
    the picture was then lost to 'matmul: ... size 1 is different from 4' (issue 23)."""
    from lib.infers.stroke_infer import picture_result

    label = perfusion_label()
    study, result = ctp_study(label), auto_result(core_penumbra_figures(label, SPACING))
    times = [float(t) for t in np.arange(0.0, 40.0, 2.0)]
    aif = [300.0 * max(0.0, (t - 8) / 6.0) * np.exp(-max(0.0, t - 8) / 6.0) for t in times]
    result["maps_from_4d"] = {"aif": {"times_s": times, "curve_hu": aif, "voxels_ijk": [[10, 30, 4]], "centroid_ijk": [10.0, 30.0, 4.0]},
                              "vof": {"times_s": times, "curve_hu": [], "voxels_ijk": [], "centroid_ijk": []}}
    drawn = picture_result(result, study)
    assert drawn["maps_from_4d"]["vof"]["centroid_ijk"] == [] and len(drawn["maps_from_4d"]["aif"]["centroid_ijk"]) == 3
    figure = summary_figure(study, label, drawn)
    (curves,) = [ax for ax in figure.axes if ax.get_xlabel() == "time (s)"]
    assert [line.get_label() for line in curves.lines] == ["AIF"]
    assert "VOF not found" in [text.get_text() for text in curves.texts]
    (where,) = [ax for ax in figure.axes if "AIF/VOF" in ax.get_label()]
    assert [line.get_marker() for line in where.lines] == ["+"]  # the AIF's position only


def test_a_flagged_series_puts_the_answer_under_review_with_its_figures_in_the_text_and_on_the_curves():
    from lib.infers.stroke_infer import flag_series

    label = perfusion_label()
    study, result = ctp_study(label), auto_result(core_penumbra_figures(label, SPACING))
    times = [float(t) for t in np.arange(0.0, 20.0, 2.0)]
    flags = [{"flag": "truncated_bolus", "figure": 0.52, "limit": 0.35,
              "words": "truncated bolus: the AIF is still at 52 % of its peak at the last frame (> 35 %)"}]
    result["maps_from_4d"] = {"aif": {"times_s": times, "curve_hu": [10.0 * t for t in times], "centroid_ijk": [10.0, 30.0, 4.0]},
                              "vof": {"times_s": times, "curve_hu": [], "centroid_ijk": []}, "flags": flags}
    flag_series(result, flags)
    assert result["review"] is True and result["quality"]["passed"] is False and result["quality"]["series_flags"] == flags
    assert result["review_reason"].endswith("the 4D series cannot support a core estimate: " + flags[0]["words"])
    lines = summary_lines(study, label, result)
    assert any(line.startswith("Guard: NOT passed") and "52 % of its peak" in line for line in lines)
    (curves,) = [ax for ax in summary_figure(study, label, result).axes if ax.get_xlabel() == "time (s)"]
    assert "truncated bolus: 0.52 (limit 0.35)" in [text.get_text() for text in curves.texts]
    unflagged = auto_result(core_penumbra_figures(label, SPACING))
    flag_series(unflagged, [])
    assert unflagged == auto_result(core_penumbra_figures(label, SPACING))
