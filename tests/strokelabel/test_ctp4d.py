"""Maps from a raw 4D CT perfusion series (strokelabel.ctp4d) against the phantom's true maps,
its warnings, and the reading of 4D NIfTI files with their frame times."""

import json

import nibabel as nib
import numpy as np
import pytest

from strokelabel import perfusion as P
from strokelabel.baselines.perfusion import healthy_side_mask
from strokelabel.ctp4d import FLAG_MOTION_MM, LOW_TISSUE_CNR, CtpSeries, compute_maps, read_ctp_nifti, series_flags
from strokelabel.errors import StrokeLabelError
from strokelabel.phantom.ctp_families import FAMILIES, apply_rigid_motion, simulate_family
from strokelabel.phantom.geometry import Grid
from strokelabel.phantom.patient import make_patient

# A central slab of the small CTP grid (1.7 mm in-plane, 5 mm slices): fast, with skull all round.
GRID = Grid((128, 128, 8), (1.7, 1.7, 5.0))
LVO_SEED = 4  # an M1 occlusion of the right hemisphere


def simulate(family, patient_seed=LVO_SEED, seed=1):
    return simulate_family(make_patient(patient_seed), GRID, family, seed)


@pytest.fixture(scope="module")
def clean():
    return simulate("clean")


@pytest.fixture(scope="module")
def clean_maps(clean):
    return compute_maps(CtpSeries(clean.ctp, GRID.affine, clean.times_s), GRID.spacing_mm)


def median_relative_error(computed: dict, truth: dict, key: str) -> float:
    scored = truth["brain"] & (computed[key] > 0)
    return float(np.median(np.abs(computed[key][scored] - truth[key][scored]) / truth[key][scored]))


def aif_peak_lag_s(computed, case) -> float:
    """The selected AIF's time of peak minus the phantom's true AIF's (same frame times)."""
    times = np.asarray(computed.aif["times_s"], np.float64) - case.times_s[0]
    true = P.arterial_input_hu(times, **make_patient(LVO_SEED).aif_ctp)
    return float(times[np.argmax(computed.aif["curve_hu"])] - times[np.argmax(true)])


def tmax_dice(computed: dict, truth: dict) -> float:
    pred, true = computed["tmax"] > 6.0, (truth["tmax"] > 6.0) & truth["brain"]
    return float(2 * (pred & true).sum() / (pred.sum() + true.sum()))


# --- recovery of the true maps ---------------------------------------------------------------


def test_clean_series_recovers_every_map_and_warns_of_nothing(clean, clean_maps):
    maps, truth = clean_maps.maps, clean.truth
    assert clean_maps.warnings == [] and clean_maps.flags == []
    assert clean_maps.quality["aif_end_fraction"] < 0.1 and clean_maps.quality["tissue_cnr"] > LOW_TISSUE_CNR
    assert (truth["brain"] & (maps["cbf"] > 0)).sum() > 0.9 * truth["brain"].sum()  # the brain is covered
    # With the AIF from the arteries (issue 23) CBF reads 0.42 low (median relative error 0.417, MTT 0.547): oSVD's
    # known under-estimate, the healthy tissue's CBF ratio 0.60-0.69 on the boundary studies. It read 0.20 (MTT 0.25)
    # while a venous AIF peaking 4.5 s late offset it; these bounds keep the arterial AIF's figures from getting worse.
    assert median_relative_error(maps, truth, "cbf") < 0.45
    assert median_relative_error(maps, truth, "cbv") < 0.35
    assert median_relative_error(maps, truth, "mtt") < 0.60
    assert tmax_dice(maps, truth) > 0.85
    scored = truth["brain"] & (maps["cbf"] > 0)
    assert np.median(np.abs(maps["tmax"][scored] - truth["tmax"][scored])) < 2.0
    assert set(maps) == {"cbf", "cbv", "mtt", "tmax", "ttp", "mip", "ncct"}
    assert all(m.dtype == np.float32 and m.shape == GRID.shape for m in maps.values())


def test_the_mean_curve_reference_reads_the_healthy_side_higher_than_its_voxels_median(clean, clean_maps):
    assert clean_maps.reference == {}  # not the rule's, so not computed unless asked for
    reference = compute_maps(CtpSeries(clean.ctp, GRID.affine, clean.times_s), GRID.spacing_mm, mean_curve_ref=True).reference
    truth = clean.truth
    true_reference = float(np.median(truth["cbf"][healthy_side_mask(truth["cbf"], truth["brain"], truth["tmax"])]))
    # Lightly truncated (its noise is the mean of thousands of curves'), it keeps height a voxel's oSVD loses; measured
    # on boundary study 10001: x 0.70 of the true reference against the voxels' median x 0.62.
    assert reference["voxels"] > 1000 and reference["threshold"] < 0.06
    assert reference["relative_noise"] <= 0.02
    assert reference["voxel_median_ml_100g_min"] < reference["cbf_ml_100g_min"] < 1.2 * true_reference


def test_ncct_mip_and_mask_are_the_series_own(clean, clean_maps):
    series = clean.ctp.astype(np.float32)
    n = clean_maps.notes["baseline_frames"]
    np.testing.assert_allclose(clean_maps.maps["mip"], series.max(axis=-1))
    np.testing.assert_allclose(clean_maps.maps["ncct"], series[..., :n].mean(axis=-1), atol=1e-3)
    assert not clean_maps.mask[clean.truth["lumen"] > 0.5].all()  # vessels are not brain tissue to map
    assert np.all(clean_maps.maps["cbf"][~clean_maps.mask] == 0)


def test_aif_comes_from_arteries_and_records_its_voxels(clean, clean_maps):
    aif = clean_maps.aif
    voxels = np.asarray(aif["voxels_ijk"])
    assert len(voxels) == 8 and len(aif["curve_hu"]) == len(aif["times_s"])
    assert np.mean(clean.truth["lumen"][tuple(voxels.T)] > 0.5) >= 0.75
    np.testing.assert_allclose(aif["centroid_ijk"], voxels.mean(axis=0), atol=0.01)
    assert max(aif["curve_hu"]) > 100.0
    # On these 8 slices the sagittal sinus outnumbers the arteries among the strongest voxels; the AIF still peaks with
    # the true one (it peaked 4.5 s late, 16.5 against 12.0 s, when candidates up to their median peak time were taken).
    assert abs(aif_peak_lag_s(clean_maps, clean)) <= 1.5  # one frame


@pytest.mark.parametrize("family", ["nonuniform", "gamma_residue"])
def test_maps_recover_on_other_timing_and_residue_families(family):
    case = simulate(family)
    computed = compute_maps(CtpSeries(case.ctp, GRID.affine, case.times_s), GRID.spacing_mm)
    # CBF 0.357 (nonuniform) and 0.285 (gamma) with the arterial AIF; 0.27 and 0.25 with main's late venous one.
    assert median_relative_error(computed.maps, case.truth, "cbf") < 0.40
    assert tmax_dice(computed.maps, case.truth) > 0.8
    assert abs(aif_peak_lag_s(computed, case)) <= 1.0  # one frame of the 1 s grid
    if family == "nonuniform":
        assert computed.notes["time_resampled"] and computed.dt_s == pytest.approx(1.0)
        assert len(computed.aif["times_s"]) > len(case.times_s)
    assert computed.warnings == []


# --- motion ----------------------------------------------------------------------------------


def shifted(case, translation_mm, from_frame=6):
    series = case.ctp.astype(np.float32).copy()
    for t in range(from_frame, series.shape[-1]):
        series[..., t] = apply_rigid_motion(series[..., t], GRID.spacing_mm, [0.0, 0.0, 0.0], translation_mm)
    return series


def test_a_3_mm_shift_is_registered_within_1_mm_and_the_maps_still_recover(clean, clean_maps):
    known = np.array([2.0, -2.0, 1.0])  # 3 mm
    computed = compute_maps(CtpSeries(shifted(clean, known), GRID.affine, clean.times_s), GRID.spacing_mm)
    found = np.array([r["translation_mm"] for r in computed.motion])
    assert np.abs(found[:6]).max() < 0.3  # the still frames stay where they are
    assert np.linalg.norm(found[6:] - known, axis=1).max() < 1.0
    assert all(r["corrected"] for r in computed.motion[6:])
    assert not any("heavy motion" in w for w in computed.warnings)
    assert tmax_dice(computed.maps, clean.truth) > 0.8
    # Registration's resampling lowers the thin arteries' peak: the VOF rescales the AIF 2.62 x (ctp4d.MAX_AIF_SCALE);
    # CBF then reads 0.367 (0.72 over unscaled; 0.27 with main's venous AIF). The step voxels the shift leaves at the
    # skull's edge are not taken as AIF (perfusion.bolus_passes): the AIF peaks with the true one.
    assert median_relative_error(computed.maps, clean.truth, "cbf") < 0.40
    assert abs(aif_peak_lag_s(computed, clean)) <= 1.5


def test_heavy_motion_is_warned():
    case = simulate("clean", seed=2)
    computed = compute_maps(CtpSeries(shifted(case, [0.0, 7.0, 0.0]), GRID.affine, case.times_s), GRID.spacing_mm)
    assert any(w.startswith("heavy motion") for w in computed.warnings)
    assert max(r["shift_mm"] for r in computed.motion) == pytest.approx(7.0, abs=1.0)
    (flag,) = [f for f in computed.flags if f["flag"] == "heavy_motion"]
    assert flag["figure"] == pytest.approx(7.0, abs=1.0) and flag["limit"] == FLAG_MOTION_MM and "7." in flag["words"]


# --- warnings and refusals ---------------------------------------------------------------------


def test_truncated_bolus_is_warned():
    case = simulate(dataclass_replace(FAMILIES["clean"], duration_s=16.0))
    assert case.ctp.shape[-1] >= 10
    computed = compute_maps(CtpSeries(case.ctp, GRID.affine, case.times_s), GRID.spacing_mm)
    assert any(w.startswith("truncated bolus") for w in computed.warnings)
    assert [f["flag"] for f in computed.flags] == ["truncated_bolus"]


def test_no_contrast_raises_and_a_weak_bolus_warns():
    none = simulate(dataclass_replace(FAMILIES["clean"], aif_peak_scale=0.0))
    with pytest.raises(StrokeLabelError, match="no arterial signal"):
        compute_maps(CtpSeries(none.ctp, GRID.affine, none.times_s), GRID.spacing_mm)
    weak = simulate(dataclass_replace(FAMILIES["clean"], aif_peak_scale=0.3))
    computed = compute_maps(CtpSeries(weak.ctp, GRID.affine, weak.times_s), GRID.spacing_mm)
    assert any(w.startswith("weak arterial signal") for w in computed.warnings)
    (flag,) = [f for f in computed.flags if f["flag"] == "weak_arterial_signal"]
    assert flag["figure"] == computed.quality["aif_peak_hu"] < flag["limit"] == 100.0


def dataclass_replace(family, **changes):
    import dataclasses

    return dataclasses.replace(family, name=f"{family.name}-test", **changes)


def test_progress_is_reported_per_stage_and_per_slab(clean):
    calls = []
    compute_maps(CtpSeries(clean.ctp, GRID.affine, clean.times_s), GRID.spacing_mm, progress=lambda f, m: calls.append((f, m)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    messages = " | ".join(m for _, m in calls)
    for stage in ("motion correction", "arterial and venous input", "deconvolution: slab 1/", "maps on the full grid"):
        assert stage in messages


def test_a_large_grid_is_deconvolved_in_plane_coarser_and_brought_back(clean):
    computed = compute_maps(CtpSeries(clean.ctp, GRID.affine, clean.times_s), GRID.spacing_mm, in_plane_mm=3.4)
    assert computed.notes["in_plane_factor"] == 2
    assert computed.maps["cbf"].shape == GRID.shape
    # 3.4 mm blocks put the arteries' partial volume into the AIF (the VOF rescales its area), not the sinus: the AIF
    # peaks with the true one (4.5 s late, 16.5 against 12.0 s, before the arterial window of perfusion.select_aif).
    assert abs(aif_peak_lag_s(computed, clean)) <= 1.5  # one frame
    assert computed.notes["aif_scale"] > 2.0  # the VOF restores the block's arterial partial volume (2.51 x)
    assert median_relative_error(computed.maps, clean.truth, "cbf") < 0.35  # 0.294 (0.42 with the venous AIF)
    assert tmax_dice(computed.maps, clean.truth) > 0.85  # 0.925 (0.78 with the venous AIF)
    voxels = np.asarray(computed.aif["voxels_ijk"])
    assert voxels.max(axis=0)[0] < GRID.shape[0] and (voxels[:, 0] % 2 == 1).all()  # block centres on the full grid


# --- reading 4D NIfTI --------------------------------------------------------------------------


def write_series(path, data, time_step=None, unit="sec", slope=None, sidecar=None):
    img = nib.Nifti1Image(data, np.diag([0.5, 0.5, 5.0, 1.0]))
    img.header.set_xyzt_units("mm", unit)
    if time_step is not None:
        zooms = list(img.header.get_zooms())
        zooms[3] = time_step
        img.header.set_zooms(zooms)
    if slope is not None:
        img.header.set_slope_inter(*slope)
    nib.save(img, str(path))
    if sidecar is not None:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return path


def test_sidecar_frame_times_are_read_non_uniform_and_int16_scaling_applied(tmp_path):
    raw = np.arange(4 * 3 * 2 * 12, dtype=np.int16).reshape(4, 3, 2, 12)
    starts = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.5, 11.0, 13.5, 16.0, 18.5]
    path = write_series(tmp_path / "sub-1_ses-1_ctp.nii.gz", raw, time_step=1.0, slope=(2.0, -1024.0), sidecar={"FrameTimesStart": starts})
    series = read_ctp_nifti(path)
    np.testing.assert_allclose(series.times_s, starts)
    assert "FrameTimesStart" in series.notes["frame_times"]
    assert series.values.dtype == np.float32
    np.testing.assert_allclose(series.values, raw * 2.0 - 1024.0)
    assert series.spacing_mm == pytest.approx((0.5, 0.5, 5.0))


def test_repetition_time_then_header_step_then_default_give_the_frame_times(tmp_path):
    raw = np.zeros((4, 3, 2, 10), np.float32)
    tr = read_ctp_nifti(write_series(tmp_path / "a_ctp.nii.gz", raw, time_step=1.0, sidecar={"RepetitionTime": 2.0}))
    np.testing.assert_allclose(tr.times_s, np.arange(10) * 2.0)
    assert "RepetitionTime" in tr.notes["frame_times"]
    header = read_ctp_nifti(write_series(tmp_path / "b_ctp.nii.gz", raw, time_step=1500.0, unit="msec"))
    np.testing.assert_allclose(header.times_s, np.arange(10) * 1.5)
    assert "header pixdim[4]" in header.notes["frame_times"] and "msec" in header.notes["frame_times"]
    default = read_ctp_nifti(write_series(tmp_path / "c_ctp.nii.gz", raw, time_step=0.0))
    np.testing.assert_allclose(default.times_s, np.arange(10) * 1.0)
    assert default.notes["frame_times"].startswith("default 1 s per frame")


def test_a_coloured_screenshot_is_refused_by_name(tmp_path):
    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(tmp_path / "rgb24.nii.gz"))
    with pytest.raises(StrokeLabelError, match="coloured screenshot.*cannot be read as a perfusion series"):
        read_ctp_nifti(tmp_path / "rgb24.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.uint8), np.eye(4)), str(tmp_path / "rgb_axis.nii.gz"))
    with pytest.raises(StrokeLabelError, match="coloured screenshot"):
        read_ctp_nifti(tmp_path / "rgb_axis.nii.gz")


def test_a_3d_image_too_few_frames_and_times_out_of_order_are_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), str(tmp_path / "ncct.nii.gz"))
    with pytest.raises(StrokeLabelError, match="3D .*not a 4D CT perfusion series"):
        read_ctp_nifti(tmp_path / "ncct.nii.gz")
    with pytest.raises(StrokeLabelError, match="has 6 frames; a CT perfusion series needs at least 10"):
        read_ctp_nifti(write_series(tmp_path / "short_ctp.nii.gz", np.zeros((4, 3, 2, 6), np.int16), time_step=1.0))
    starts = [0.0, 1.0, 2.0, 3.0, 2.5, 5.0, 6.0, 7.0, 8.0, 9.0]
    with pytest.raises(StrokeLabelError, match="frame times are not increasing"):
        read_ctp_nifti(write_series(tmp_path / "odd_ctp.nii.gz", np.zeros((4, 3, 2, 10), np.int16), sidecar={"FrameTimesStart": starts}))


def test_a_series_assembles_from_frames_as_from_a_dicom_series():
    frames = [np.full((4, 3, 2), t, np.int16) for t in range(12)]
    series = CtpSeries.from_frames(frames, np.eye(4), np.arange(12) * 1.5, {"source": "DICOM series 1.2.3"})
    assert series.values.shape == (4, 3, 2, 12) and series.values[0, 0, 0, 7] == 7.0
    with pytest.raises(StrokeLabelError, match="frame 1 has shape"):
        CtpSeries.from_frames([np.zeros((4, 3, 2))] + [np.zeros((4, 3, 3))] * 11, np.eye(4), np.arange(12))


# --- the maths added to strokelabel.perfusion --------------------------------------------------


@pytest.mark.parametrize("kind", ["gamma", "lognormal"])
@pytest.mark.parametrize("mtt", [2.0, 4.0, 11.0])
def test_gamma_and_lognormal_residues_start_at_one_and_integrate_to_the_mtt(kind, mtt):
    t = np.arange(0.0, 400.0, 0.001)
    r = P.residue(t, mtt, kind)
    assert r[0] == 1.0 and np.all(np.diff(r) <= 1e-12)
    assert np.trapezoid(r, t) == pytest.approx(mtt, rel=1e-3)


def test_non_uniform_frames_resample_linearly_and_the_step_keeps_the_dense_phase():
    times = np.array([0.0, 1.0, 2.0, 3.0, 5.5, 8.0])
    values = 3.0 * times + 1.0
    np.testing.assert_allclose(P.resample_times(values[None], times, [0.5, 4.0, 7.5])[0], [2.5, 13.0, 23.5], rtol=1e-6)
    assert P.uniform_step_s(times) == 1.0
    assert P.uniform_step_s(np.arange(10) * 2.0) == 2.0


def test_vof_is_the_late_large_area_curve_and_a_step_is_not_a_bolus():
    t = np.arange(0.0, 40.0, 1.0)
    artery = P.gamma_variate(t, 5.0, 3.0, 1.5, 400.0)
    vein = P.gamma_variate(t, 9.0, 3.0, 2.0, 300.0)
    step = np.where(t > 15, 280.0, 0.0)  # residual motion at an edge
    tissue = 0.05 * vein
    curves = np.stack([artery, vein, step, tissue])
    vof, chosen = P.select_vof(curves, 1.0, after_s=float(t[np.argmax(artery)]) + 2.0, n_voxels=1)
    assert chosen.tolist() == [1]
    np.testing.assert_allclose(vof, vein)


def test_series_flags_name_the_figure_that_decided_each_and_none_on_a_sound_series():
    sound = {"aif_peak_hu": 320.0, "aif_end_fraction": 0.02, "vof_peak_frames_from_end": 20, "vof_end_fraction": 0.1,
             "max_shift_mm": 0.4, "max_angle_deg": 0.3,
             "unregistered_frames": 0, "tissue_peak_hu": 22.0, "baseline_noise_hu": 4.0, "tissue_cnr": 5.5}
    assert series_flags(sound) == []
    noisy = series_flags({**sound, "baseline_noise_hu": 40.0, "tissue_cnr": 0.15})
    assert [(f["flag"], f["figure"], f["limit"]) for f in noisy] == [("low_snr", 0.15, LOW_TISSUE_CNR)] and "CNR 0.15" in noisy[0]["words"]
    assert series_flags({**sound, "baseline_noise_hu": 12.0, "tissue_cnr": 0.9}) == []  # clinical low-dose noise supports it
    cut = series_flags({**sound, "vof_peak_frames_from_end": 3, "vof_end_fraction": 0.7})
    assert [(f["flag"], f["figure"]) for f in cut] == [("truncated_bolus", 0.7)] and "washout was not acquired" in cut[0]["words"]
    assert series_flags({**sound, "vof_peak_frames_from_end": None, "vof_end_fraction": None}) == []  # no VOF: no claim
    assert [f["flag"] for f in series_flags({**sound, "unregistered_frames": 2})] == ["heavy_motion"]
