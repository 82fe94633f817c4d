"""The deconvolutions measured against the app's oSVD (scripts/deconvolution_candidates.py): each recovers a
known flow from a noise-free curve, and each is data-driven in the way it claims."""

import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import deconvolution_candidates as C  # noqa: E402
from strokelabel import perfusion as P  # noqa: E402

DT = 1.0
T = np.arange(0.0, 50.0, DT)
FINE = np.arange(0.0, 50.0, 0.05)


def curves(cbf, mtt, noise_hu=0.0, n=1, seed=0):
    tissue = P.tissue_curve_hu(T, P.arterial_input_hu(FINE), 0.05, cbf, mtt, delay_s=1.0)
    return tissue[None] + noise_hu * np.random.default_rng(seed).standard_normal((n, T.size)), P.arterial_input_hu(T)


@pytest.mark.parametrize("method", [C.deconvolve_tsvd_discrepancy, C.deconvolve_tikhonov_gcv, C.deconvolve_osvd_calibrated])
def test_each_candidate_recovers_the_flow_of_a_clean_curve_within_half(method):
    tissue, aif = curves(50.0, 4.0, noise_hu=0.2, n=50)
    cbf = np.median(P.cbf_from_residue(method(tissue, aif, DT, 5)))
    assert 25.0 < cbf < 75.0


def test_the_discrepancy_principle_truncates_a_noisier_voxel_more():
    tissue, aif = curves(50.0, 4.0)
    quiet = tissue + 0.3 * np.random.default_rng(1).standard_normal((200, T.size))
    loud = tissue + 3.0 * np.random.default_rng(2).standard_normal((200, T.size))
    k_quiet, k_loud = (C.deconvolve_tsvd_discrepancy(x, aif, DT, 6) for x in (quiet, loud))
    assert P.oscillation_index(k_loud).mean() < P.oscillation_index(P.deconvolve_bcsvd(loud, aif, DT, threshold=0.02)).mean()
    assert np.median(P.cbf_from_residue(k_quiet)) > np.median(P.cbf_from_residue(k_loud))


def test_the_calibration_divides_out_the_truncation_loss_of_the_voxels_own_transit_time():
    aif = P.arterial_input_hu(T)
    physiological = C.RECOVERY_MTT_S[C.RECOVERY_MTT_S <= 12.0]  # longer ones do not fit a 50 s window
    table = C.truncation_recovery(aif, DT, sorted(P.OSVD_THRESHOLDS), physiological)
    assert np.all((table > 0) & (table <= 1.0))
    assert np.all(table[-1] < table[0])  # the most truncation keeps less of the peak than the least
    assert table[0, -1] > table[0, 5]  # a long transit time loses less than a short one
    short, _ = curves(60.0, 3.0)
    raw = P.cbf_from_residue(P.deconvolve_bcsvd(short, aif, DT, oscillation_limit=0.095))[0]
    calibrated = P.cbf_from_residue(C.deconvolve_osvd_calibrated(short, aif, DT))[0]
    assert abs(calibrated - 60.0) < abs(raw - 60.0)


@pytest.mark.parametrize("kind", ["exponential", "gamma", "box"])
@pytest.mark.parametrize("dt", [1.0, 2.0])
def test_residue_rise_time_is_the_bolus_delay_on_the_forward_model_where_the_argmax_is_late(kind, dt):
    # Noise-free curves of the forward model, oSVD as the 4D pipeline runs it; the true Tmax is the delay
    # (a residue never rises, so its maximum is at the bolus arrival). The box residue is assumed nowhere.
    t = np.arange(0.0, 60.0, dt)
    fine = np.arange(0.0, 60.0, 0.05)
    args = dict(t0_s=6.0, peak_hu=350.0, alpha=3.2, beta_s=1.5, recirculation=0.08)
    delay = np.array([0.0, 2.3, 5.0, 6.7, 9.1])
    tissue = P.tissue_curve_hu(t, P.arterial_input_hu(fine, **args), 0.05, 30.0, 6.0, delay, kind)
    k = P.deconvolve_bcsvd(tissue, P.arterial_input_hu(t, **args), dt, oscillation_limit=P.OSVD_OSCILLATION_INDEX)
    rise, peak = C.residue_rise_time_s(k, dt), P.peak_time_s(k, dt)
    assert np.abs(rise - delay).max() <= 0.5 * dt + 0.3
    assert np.median(peak - delay) > 1.0  # the argmax of the truncated residue lags the delay
    assert np.median(np.abs(rise - delay)) < np.median(np.abs(peak - delay))


def test_residue_rise_time_reads_the_leading_edge_at_interval_centres():
    dt = 2.0
    k = np.array([[0.0, 0.0, 1.0, 4.0, 3.0, 2.0], [5.0, 4.0, 3.0, 0.0, 0.0, 0.0], [0.0] * 6])
    # Row 0: half of the maximum 4 is crossed between samples 2 (1.0) and 3 (4.0), at 2 + 1/3; row 1 peaks at 0.
    np.testing.assert_allclose(C.residue_rise_time_s(k, dt), [(2 + 1.0 / 3.0 + 0.5) * dt, 0.0, 0.0])
    assert C.residue_rise_time_s(k[0], dt).shape == ()


def test_the_app_residues_read_at_their_maximum_and_the_height_candidate_returns_its_truncation():
    tissue, aif = curves(50.0, 4.0, noise_hu=0.5, n=40)
    app, thresholds = P.deconvolve_bcsvd(tissue, aif, DT, oscillation_limit=P.OSVD_OSCILLATION_INDEX,
                                         noise_hu=P.frame_noise_hu(tissue, 5), return_thresholds=True)
    np.testing.assert_allclose(C.deconvolve_osvd_peak(tissue, aif, DT, 5), app)
    k, got = C.deconvolve_osvd_height(tissue, aif, DT, 5)
    np.testing.assert_array_equal(got, thresholds)
    # A sharp (MTT 4 s) residue lost height through truncation; the candidate puts some back, never takes any off.
    assert np.all(P.cbf_from_residue(k) >= P.cbf_from_residue(app) - 1e-9)
    assert np.median(P.cbf_from_residue(k)) > np.median(P.cbf_from_residue(app))


def test_perfusion_maps_reads_the_onset_of_an_outside_deconvolution_that_returns_its_truncation():
    """perfusion_maps(tmax_from_residue=TMAX_ONSET) reads the onset when the deconvolution returns (k, thresholds) and
    the maximum when it returns k alone; the default (the phantom generator's and the app's) is the maximum."""
    delays = np.array([1.0, 4.0, 7.0])
    tissue = P.tissue_curve_hu(T, P.arterial_input_hu(FINE), 0.05, 30.0, 8.0, delay_s=delays)
    series = (40.0 + np.broadcast_to(tissue[:, None, None, :], (3, 4, 1, T.size))).astype(np.float32)
    aif = P.arterial_input_hu(T)
    common = dict(mask=np.ones((3, 4, 1), bool), aif_hu=aif, n_baseline=4, smooth_mm=0.0)
    outside = lambda c, a, dt, nb: P.deconvolve_bcsvd(c, a, dt, threshold=0.1, return_thresholds=True)  # noqa: E731
    onset = P.perfusion_maps(series, DT, deconvolve=outside, tmax_from_residue=P.TMAX_ONSET, **common)["tmax"][:, 0, 0]
    peak = P.perfusion_maps(series, DT, deconvolve=lambda c, a, dt, nb: outside(c, a, dt, nb)[0], tmax_from_residue=P.TMAX_ONSET,
                            **common)["tmax"][:, 0, 0]
    default = P.perfusion_maps(series, DT, deconvolve=outside, **common)["tmax"][:, 0, 0]
    np.testing.assert_allclose(onset, delays, atol=0.5)
    assert np.all(peak > delays + 0.8)
    np.testing.assert_allclose(default, peak)
