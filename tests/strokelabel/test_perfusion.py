"""The perfusion maths against its equations (strokelabel.perfusion, eqs. 1-3)."""

import numpy as np
import pytest
from scipy import special

from strokelabel import perfusion as P

FINE_DT = 0.02
T_FINE = np.arange(0.0, 120.0, FINE_DT)
AIF_ARGS = {"t0_s": 6.0, "peak_hu": 400.0, "alpha": 3.0, "beta_s": 1.5, "recirculation": 0.0}


def aif_fine(recirculation=0.0):
    return P.arterial_input_hu(T_FINE, **{**AIF_ARGS, "recirculation": recirculation})


def test_gamma_variate_peaks_at_t0_plus_alpha_beta_with_the_given_height():
    t = np.arange(0.0, 40.0, 0.001)
    curve = P.gamma_variate(t, 5.0, 3.0, 1.5, 400.0)
    assert t[np.argmax(curve)] == pytest.approx(5.0 + 3.0 * 1.5, abs=1e-3)
    assert curve.max() == pytest.approx(400.0, rel=1e-6)
    assert np.all(curve[t <= 5.0] == 0)


def test_gamma_variate_area_matches_its_closed_form():
    t = np.arange(0.0, 200.0, 0.001)
    numeric = np.trapezoid(P.gamma_variate(t, 5.0, 2.7, 1.8, 300.0), t)
    assert numeric == pytest.approx(P.gamma_variate_area(2.7, 1.8, 300.0), rel=1e-6)


@pytest.mark.parametrize("kind", ["exponential", "box"])
@pytest.mark.parametrize("mtt", [2.0, 4.0, 11.0])
def test_residue_functions_start_at_one_and_integrate_to_the_mtt(kind, mtt):
    t = np.arange(0.0, 400.0, 0.001)
    r = P.residue(t, mtt, kind)
    assert r[0] == 1.0
    assert np.all(P.residue(-t[1:], mtt, kind) == 0)
    assert np.trapezoid(r, t) == pytest.approx(mtt, rel=1e-3)


def test_central_volume_theorem_cbv_equals_cbf_times_mtt():
    assert P.cbv_ml_100g(60.0, 4.0) == pytest.approx(4.0)
    assert P.cbv_ml_100g(25.0, 4.8) == pytest.approx(2.0)
    assert P.mtt_s(P.cbv_ml_100g(37.0, 6.5), 37.0) == pytest.approx(6.5)
    assert P.mtt_s(3.0, 0.0) == 0.0


@pytest.mark.parametrize("kind", ["exponential", "box"])
@pytest.mark.parametrize("cbf,mtt,delay", [(60.0, 4.0, 0.0), (25.0, 4.8, 2.0), (15.0, 12.0, 7.5)])
def test_tissue_curve_area_gives_cbv_by_the_central_volume_theorem(kind, cbf, mtt, delay):
    aif = aif_fine(recirculation=0.08)
    curve = P.tissue_curve_hu(T_FINE, aif, FINE_DT, cbf, mtt, delay, kind)
    cbv = P.cbv_from_curves(curve, aif, FINE_DT)  # eq. 3
    assert cbv == pytest.approx(P.cbv_ml_100g(cbf, mtt), rel=2e-3)  # eq. 2


@pytest.mark.parametrize("mtt", [2.5, 4.0, 10.0])
def test_tissue_curve_matches_the_closed_form_convolution_of_gamma_variate_and_exponential(mtt):
    # (AIF ⊛ e^{-t/m})(s) = A e^{-s/m} Γ(α+1) P(α+1, k s) / k^{α+1}, k = 1/β − 1/m.
    a, b, peak, t0 = AIF_ARGS["alpha"], AIF_ARGS["beta_s"], AIF_ARGS["peak_hu"], AIF_ARGS["t0_s"]
    t = np.arange(0.0, 60.0, 0.5)
    s = np.maximum(t - t0, 0.0)
    k = 1 / b - 1 / mtt
    amplitude = peak * np.exp(a) / (a * b) ** a
    closed = amplitude * np.exp(-s / mtt) * special.gamma(a + 1) * special.gammainc(a + 1, s * k) / k ** (a + 1)
    cbf = 50.0
    expected = P.flow_scale_per_s(cbf) * closed  # eq. 1
    numeric = P.tissue_curve_hu(t, aif_fine(), FINE_DT, cbf, mtt, 0.0)
    assert np.abs(numeric - expected).max() < 1e-4 * expected.max()


def test_tissue_curve_delay_shifts_the_curve_in_time():
    t = np.arange(0.0, 60.0, 0.5)
    early = P.tissue_curve_hu(t, aif_fine(), FINE_DT, 40.0, 5.0, 0.0)
    late = P.tissue_curve_hu(t, aif_fine(), FINE_DT, 40.0, 5.0, 3.0)
    np.testing.assert_allclose(late[6:], early[:-6], atol=1e-9)
    assert np.all(late[:6] <= early[:6] + 1e-12)


def test_tissue_curves_broadcast_over_parameters():
    t = np.arange(0.0, 40.0, 1.0)
    curves = P.tissue_curve_hu(t, aif_fine(), FINE_DT, np.array([20.0, 60.0])[:, None], np.array([3.0, 5.0, 8.0]), 1.0)
    assert curves.shape == (2, 3, t.size)
    np.testing.assert_allclose(curves[1], 3.0 * curves[0])  # linear in CBF


def test_hu_and_iodine_concentration_convert_both_ways():
    assert P.concentration_mg_ml(50.0, hu_per_mg_ml=25.0) == pytest.approx(2.0)
    np.testing.assert_allclose(P.enhancement_hu(P.concentration_mg_ml([0.0, 12.5, 300.0])), [0.0, 12.5, 300.0])


def sampled_case(dt, mtt=8.0, delay=0.0, cbf=60.0, kind="exponential", duration=70.0):
    t = np.arange(0.0, duration, dt)
    aif = P.arterial_input_hu(t, **AIF_ARGS)
    tissue = P.tissue_curve_hu(t, aif_fine(), FINE_DT, cbf, mtt, delay, kind)
    return t, aif, tissue


def test_deconvolution_inverts_the_discrete_convolution_model():
    dt = 1.0
    t, aif, _ = sampled_case(dt)
    # A short residue, so that its convolution with the AIF ends inside the acquisition.
    residue = 0.9 * np.exp(-(t - 4.0) / 3.0) * (t >= 4.0)
    matrix = P.circulant_aif_matrix(aif, dt)
    padded = np.zeros(2 * t.size)
    padded[: t.size] = residue
    full = matrix @ padded
    assert np.abs(full[t.size :]).max() < 1e-6 * full.max()
    tissue = full[: t.size]
    k = P.deconvolve_bcsvd(tissue, aif, dt, threshold=1e-9)
    # Exact up to the one component the interval-averaged AIF cannot see: c·(−1)^n (Nyquist).
    alternating = (residue - k) * (-1.0) ** np.arange(t.size)
    np.testing.assert_allclose(alternating, alternating.mean(), atol=1e-4)
    assert abs(alternating.mean()) < 0.05
    assert P.peak_time_s(k, dt, subsample=False) == pytest.approx(4.0)


@pytest.mark.parametrize("delay", [0.0, 3.0, 7.0])
def test_deconvolution_recovers_cbf_mtt_and_tmax_of_a_noise_free_curve(delay):
    dt, cbf, mtt = 0.5, 60.0, 8.0
    _, aif, tissue = sampled_case(dt, mtt=mtt, delay=delay, cbf=cbf)
    k = P.deconvolve_bcsvd(tissue, aif, dt, threshold=1e-3)
    cbf_est = P.cbf_from_residue(k)
    cbv_est = P.cbv_from_curves(tissue, aif, dt)
    assert cbf_est == pytest.approx(cbf, rel=0.05)
    assert cbv_est == pytest.approx(P.cbv_ml_100g(cbf, mtt), rel=0.01)
    assert P.mtt_s(cbv_est, cbf_est) == pytest.approx(mtt, rel=0.05)
    assert delay <= P.peak_time_s(k, dt) <= delay + 2 * dt


@pytest.mark.parametrize("dt", [1.0, 1.5, 2.0])
def test_tmax_grows_by_the_tissue_delay_whatever_the_truncation(dt):
    tmax = {}
    for delay in (0.0, 2 * dt, 4 * dt):
        _, aif, tissue = sampled_case(dt, mtt=4.0, delay=delay)
        tmax[delay] = P.peak_time_s(P.deconvolve_bcsvd(tissue, aif, dt, threshold=0.15), dt)
    assert 0.0 <= tmax[0.0] <= 2.0  # healthy tissue: Tmax 0-2 s
    for delay in (2 * dt, 4 * dt):
        assert tmax[delay] - tmax[0.0] == pytest.approx(delay, abs=0.35)



@pytest.mark.parametrize("kind", ["exponential", "gamma", "lognormal"])
def test_the_onset_read_removes_the_lag_truncation_gives_the_residue_maximum(kind):
    """Truncation drags the maximum of k late (more at low flow); the onset fitted through the voxel's own truncation
    does not, also on residue shapes it does not assume (gamma, lognormal)."""
    dt, rng = 1.5, np.random.default_rng(5)
    delays = rng.uniform(0.0, 8.0, 120)
    for cbf, mtt in ((50.0, 4.0), (15.0, 12.0)):
        _, aif, tissue = sampled_case(dt, mtt=mtt, delay=delays, cbf=cbf, kind=kind)
        noisy = tissue + rng.normal(0.0, 0.5, tissue.shape)
        k, thresholds = P.deconvolve_bcsvd(noisy, aif, dt, oscillation_limit=P.OSVD_OSCILLATION_INDEX, return_thresholds=True)
        assert thresholds.shape == delays.shape and set(np.unique(thresholds)) <= set(P.OSVD_THRESHOLDS)
        peak_error = np.median(P.peak_time_s(k, dt) - delays)
        onset_error = np.median(P.residue_onset_time_s(k, aif, dt, thresholds) - delays)
        assert peak_error > 0.8  # the bias being removed
        assert abs(onset_error) < 0.8 and abs(onset_error) < 0.5 * peak_error


def test_the_onset_read_of_a_noise_free_exponential_residue_is_its_delay():
    dt = 1.0
    delays = np.array([0.0, 2.25, 5.5, 9.0])
    _, aif, tissue = sampled_case(dt, mtt=6.0, delay=delays, cbf=40.0)
    for threshold in (0.02, 0.1, 0.3):
        k = P.deconvolve_bcsvd(tissue, aif, dt, threshold=threshold)
        onset, kept = P.residue_onset_time_s(k, aif, dt, threshold, with_height_kept=True)
        np.testing.assert_allclose(onset, delays, atol=0.3)
        # The height the truncation keeps: what k's maximum reads of the true flow-scaled residue's height, within the
        # trial residues' piecewise-constant discretisation (the tissue curves here are convolved on a fine grid).
        np.testing.assert_allclose(kept, k.max(axis=-1) / P.flow_scale_per_s(40.0), rtol=0.15)
    # A residue that never matches a falling trial (all zero) reads at its maximum's time, as before.
    assert P.residue_onset_time_s(np.zeros((1, tissue.shape[-1])), aif, dt, [0.1])[0] == 0.0

def test_truncation_underestimates_cbf_but_keeps_cbv():
    dt = 1.5
    _, aif, tissue = sampled_case(dt, mtt=4.0)
    cbf = [P.cbf_from_residue(P.deconvolve_bcsvd(tissue, aif, dt, threshold=p)) for p in (0.02, 0.1, 0.3)]
    assert cbf[0] > cbf[1] > cbf[2]
    assert P.cbv_from_curves(tissue, aif, dt) == pytest.approx(4.0, rel=0.02)


def test_osvd_keeps_the_least_truncation_for_clean_curves_and_regularises_noisy_ones():
    dt = 1.0
    _, aif, tissue = sampled_case(dt, mtt=4.0)
    least = min(P.OSVD_THRESHOLDS)
    clean = P.deconvolve_bcsvd(tissue, aif, dt, oscillation_limit=0.095)
    np.testing.assert_allclose(clean, P.deconvolve_bcsvd(tissue, aif, dt, threshold=least))
    noisy = tissue + np.random.default_rng(3).normal(0.0, 0.6, (200, tissue.size))
    k = P.deconvolve_bcsvd(noisy, aif, dt, oscillation_limit=0.095)
    low = P.deconvolve_bcsvd(noisy, aif, dt, threshold=least)
    assert P.oscillation_index(k).mean() < 0.5 * P.oscillation_index(low).mean()
    assert P.cbf_from_residue(k).std() < 0.8 * P.cbf_from_residue(low).std()


def test_oscillation_index_is_zero_for_a_straight_line_and_positive_for_noise():
    assert P.oscillation_index(np.linspace(1.0, 0.0, 50)) == pytest.approx(0.0, abs=1e-12)
    assert P.oscillation_index(np.random.default_rng(0).normal(size=50)) > 0.5


def test_perfusion_maps_from_a_synthetic_4d_series():
    dt, n_t = 1.0, 50
    t = np.arange(n_t) * dt
    aif = P.arterial_input_hu(t, **AIF_ARGS)
    shape = (12, 10, 2)
    cbf = np.full(shape, 60.0)
    cbf[6:] = 20.0
    delay = np.zeros(shape)
    delay[:, 5:] = 4.0
    curves = P.tissue_curve_hu(t, aif_fine(), FINE_DT, cbf, 4.0, delay)
    series = (35.0 + curves).astype(np.float64)
    series[0, 0, :, :] = 35.0 + aif  # an artery voxel
    mask = np.ones(shape, bool)
    mask[0, 0, :] = False
    maps = P.perfusion_maps(series, dt, (2.0, 2.0, 5.0), mask=mask, aif_hu=aif, n_baseline=4, smooth_mm=0.0, oscillation_limit=None, threshold=0.1)
    ratio = np.median(maps["cbf"][6:][mask[6:]]) / np.median(maps["cbf"][:6][mask[:6]])
    assert ratio == pytest.approx(20.0 / 60.0, rel=0.03)
    assert np.median(maps["cbv"][:6][mask[:6]]) == pytest.approx(4.0, rel=0.03)
    tmax_shift = np.median(maps["tmax"][:, 5:]) - np.median(maps["tmax"][:, :5][mask[:, :5]])
    assert tmax_shift == pytest.approx(4.0, abs=0.3)
    np.testing.assert_allclose(maps["mip"], series.max(axis=-1))
    np.testing.assert_allclose(maps["ncct"], series[..., :4].mean(axis=-1), atol=1e-4)
    assert np.all(maps["cbf"][~mask] == 0)
    for key in ("cbf", "cbv", "mtt", "tmax", "ttp"):
        assert maps[key].dtype == np.float32 and maps[key].shape == shape


def test_automatic_aif_prefers_strong_early_voxels_over_late_veins():
    t = np.arange(40) * 1.0
    artery = P.arterial_input_hu(t, t0_s=5.0, peak_hu=400.0)
    vein = 1.2 * P.arterial_input_hu(t, t0_s=11.0, peak_hu=400.0)
    tissue = P.tissue_curve_hu(t, P.arterial_input_hu(T_FINE, t0_s=5.0, peak_hu=400.0), FINE_DT, 50.0, 4.0)
    curves = np.vstack([np.tile(tissue, (400, 1)), np.tile(artery, (10, 1)), np.tile(vein, (10, 1))])
    aif, chosen = P.select_aif(curves, 1.0, n_voxels=8)
    assert set(chosen.tolist()) <= set(range(400, 410))
    np.testing.assert_allclose(aif, artery)


def test_automatic_aif_is_arterial_where_veins_outnumber_arteries_among_the_strongest_voxels():
    # A few slices through the sagittal sinus: 40 venous voxels (peaking 6 s after the arteries, broader, up to 320 HU)
    # against 10 arterial ones (200-300 HU). Main's rule (peak no later than the candidates' median) took the veins.
    t = np.arange(45) * 1.5
    arteries = [P.arterial_input_hu(t, t0_s=6.0, peak_hu=h) for h in np.linspace(200.0, 300.0, 10)]
    veins = [P.arterial_input_hu(t, t0_s=12.0, peak_hu=h, beta_s=2.5) for h in np.linspace(150.0, 320.0, 40)]
    tissue = P.tissue_curve_hu(t, P.arterial_input_hu(t, t0_s=6.0), 1.5, 50.0, 4.0)
    curves = np.vstack([np.tile(tissue, (400, 1)), arteries, veins])
    aif, chosen = P.select_aif(curves, 1.5, n_voxels=8)
    assert set(chosen.tolist()) <= set(range(400, 410))
    assert P.peak_time_s(aif, 1.5, subsample=False) == pytest.approx(P.peak_time_s(arteries[0], 1.5, subsample=False))
    assert np.max(aif) > 240.0  # the strongest arteries in the window, not the earliest weak ones


def test_automatic_aif_leaves_out_steps_that_a_shifted_head_leaves_at_the_skull_edge():
    # Residual misregistration after a shift at frame 6: 30 voxels step up by 250-300 HU and stay up. They peak
    # earliest and highest, yet are not a bolus (perfusion.bolus_passes): the AIF is the 10 arteries'.
    t = np.arange(45) * 1.5
    arteries = [P.arterial_input_hu(t, t0_s=6.0, peak_hu=h) for h in np.linspace(200.0, 240.0, 10)]
    steps = [np.where(t >= 9.0, h, 0.0) for h in np.linspace(250.0, 300.0, 30)]
    tissue = P.tissue_curve_hu(t, P.arterial_input_hu(t, t0_s=6.0), 1.5, 50.0, 4.0)
    curves = np.vstack([np.tile(tissue, (400, 1)), arteries, steps])
    assert P.bolus_passes(curves[400:410]).all() and not P.bolus_passes(curves[410:]).any()
    _, chosen = P.select_aif(curves, 1.5, n_voxels=8)
    assert set(chosen.tolist()) <= set(range(400, 410))


def test_brain_mask_from_ncct_is_the_soft_tissue_inside_the_skull():
    x, y = np.meshgrid(np.arange(40) - 19.5, np.arange(40) - 19.5, indexing="ij")
    r = np.hypot(x, y)
    slice_ = np.where(r < 14, 35.0, np.where(r < 17, 1200.0, -1000.0))
    slice_[r < 3] = 5.0  # CSF
    ncct = np.repeat(slice_[..., None], 3, axis=2)
    mask = P.brain_mask_from_ncct(ncct)
    assert mask[20, 26, 1] and not mask[20, 20, 1] and not mask[20, 35, 1] and not mask[0, 0, 1]


@pytest.mark.parametrize("threshold", [1e-6, 0.05, 0.2])
def test_fft_deconvolution_equals_the_truncated_svd_of_the_circulant_matrix(threshold):
    dt = 1.5
    _, aif, tissue = sampled_case(dt, mtt=5.0, delay=3.0)
    curves = tissue + np.random.default_rng(1).normal(0.0, 0.3, (5, tissue.size))
    padded = np.zeros((5, 2 * tissue.size))
    padded[:, : tissue.size] = curves
    by_matrix = padded @ P.truncated_pseudoinverse(P.circulant_aif_matrix(aif, dt), threshold).T
    np.testing.assert_allclose(P.deconvolve_bcsvd(curves, aif, dt, threshold=threshold), by_matrix[:, : tissue.size], atol=1e-9)


@pytest.mark.parametrize("threshold", [0.06, 0.15, 0.3])
def test_the_noise_lift_of_the_maximum_is_never_more_than_noise_gives_a_flat_residue_and_none_on_a_sharp_peak(threshold):
    dt = 1.5
    t = np.arange(40) * dt
    aif = P.arterial_input_hu(t, **AIF_ARGS)
    magnitude = np.abs(np.fft.rfft(P.circulant_aif_matrix(aif, dt)[:, 0]))
    rng = np.random.default_rng(0)
    # A flat (zero) residue: its maximum is all noise; the lift taken off is positive and not more than that.
    k_noise = P.deconvolve_bcsvd(rng.normal(0.0, 2.0, (4000, t.size)), aif, dt, threshold=threshold)
    lift = P.residue_noise_maximum(k_noise, magnitude, threshold, t.size, 2.0)
    assert 0.0 < lift.mean() <= k_noise.max(axis=-1).mean()
    # Healthy tissue (60 mL/100g/min, MTT 4 s) at 1 HU of noise: its peak stands alone, nothing is taken off it.
    tissue = P.tissue_curve_hu(t, aif_fine(), FINE_DT, np.full(200, 60.0), 4.0, delay_s=1.0) + rng.normal(0.0, 1.0, (200, t.size))
    k_healthy = P.deconvolve_bcsvd(tissue, aif, dt, threshold=threshold)
    assert np.median(P.residue_noise_maximum(k_healthy, magnitude, threshold, t.size, 1.0) / k_healthy.max(axis=-1)) < 0.05


def test_taking_the_noise_maximum_off_lowers_a_noisy_low_flow_cbf_and_keeps_tmax():
    dt, cbf = 1.5, 3.0
    t = np.arange(40) * dt
    aif = P.arterial_input_hu(t, **AIF_ARGS)
    clean = P.tissue_curve_hu(t, aif_fine(), FINE_DT, np.full(500, cbf), 30.0, delay_s=8.0)
    noisy = clean + np.random.default_rng(1).normal(0.0, 1.0, clean.shape)
    raw = P.deconvolve_bcsvd(noisy, aif, dt, threshold=0.2)
    debiased = P.deconvolve_bcsvd(noisy, aif, dt, threshold=0.2, noise_hu=1.0)
    # The noise lifts max k well above the noise-free CBF; with its expected maximum off, the bias is far smaller.
    free = P.cbf_from_residue(P.deconvolve_bcsvd(clean, aif, dt, threshold=0.2)).mean()
    assert P.cbf_from_residue(raw).mean() > 1.4 * free
    assert abs(P.cbf_from_residue(debiased).mean() - free) < 0.5 * abs(P.cbf_from_residue(raw).mean() - free)
    np.testing.assert_allclose(P.peak_time_s(debiased, dt), P.peak_time_s(raw, dt))



def test_residue_noise_sd_is_the_spread_of_deconvolved_noise():
    dt = 1.5
    t = np.arange(40) * dt
    aif = P.arterial_input_hu(t, **AIF_ARGS)
    magnitude = np.abs(np.fft.rfft(P.circulant_aif_matrix(aif, dt)[:, 0]))
    for threshold in (0.02, 0.1):
        k = P.deconvolve_bcsvd(np.random.default_rng(2).normal(0.0, 2.0, (3000, t.size)), aif, dt, threshold=threshold)
        sigma_k, kept = P.residue_noise_sd(magnitude, threshold, t.size, 2.0)
        # sigma_k is the spread averaged over the padded period; the first T samples (the residue) spread a little more.
        assert sigma_k < k.std() < 1.35 * sigma_k
        assert 0.0 < kept <= 1.0


def mixed_healthy_curves(dt, n=400, delays_s=(0.0,), noise_hu=0.0, seed=0):
    """Healthy tissue of two residue shapes (exponential and gamma), CBF 20-70, CBV 2-4.5, at the given delays."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(60 / dt)) * dt
    cbf = rng.uniform(20.0, 70.0, n)
    mtt = 60.0 * rng.uniform(2.0, 4.5, n) / cbf
    delay = np.asarray(delays_s)[rng.integers(0, len(delays_s), n)]
    half = n // 2
    curves = np.concatenate([P.tissue_curve_hu(t, aif_fine(), FINE_DT, cbf[:half], mtt[:half], delay[:half], "exponential"),
                             P.tissue_curve_hu(t, aif_fine(), FINE_DT, cbf[half:], mtt[half:], delay[half:], "gamma")])
    return t, cbf, delay, curves + rng.normal(0.0, noise_hu, curves.shape)


def test_the_mean_curve_reference_reads_nearer_the_mean_cbf_than_the_voxels_median_whatever_the_residue_shapes():
    dt = 1.0
    t, cbf, _, curves = mixed_healthy_curves(dt, noise_hu=1.0)
    aif = P.arterial_input_hu(t, **AIF_ARGS)
    k = P.deconvolve_bcsvd(curves, aif, dt, oscillation_limit=P.OSVD_OSCILLATION_INDEX, noise_hu=1.0)
    voxel_median = np.median(P.cbf_from_residue(k)) / np.median(cbf)
    out = P.mean_curve_reference(curves, aif, dt, np.argmax(k, axis=-1), 1.0 / np.sqrt(len(cbf)))
    reference = out["cbf_ml_100g_min"] / cbf.mean()
    # Measured: the voxels' median x 0.74 of the true median, the mean curve x 0.84 of the true mean (400 voxels, 1 HU;
    # what it still loses is the 1 s frame step on the sharp exponential residues and its own light truncation).
    assert voxel_median < 0.8
    assert abs(reference - 1.0) < abs(voxel_median - 1.0) - 0.05
    assert out["threshold"] <= 0.02 and out["relative_noise"] <= P.REFERENCE_RELATIVE_NOISE
    assert out["voxels"] == len(cbf)
    # Noise-free and at a fine frame step, nearly all the mean CBF is kept (0.97, the oSVD voxels' median 0.84).
    t, cbf, _, curves = mixed_healthy_curves(0.5)
    aif = P.arterial_input_hu(t, **AIF_ARGS)
    out = P.mean_curve_reference(curves, aif, 0.5, np.zeros(len(cbf), int), 1e-4)
    assert out["cbf_ml_100g_min"] == pytest.approx(cbf.mean(), rel=0.06)


def test_the_mean_curve_reference_is_not_lowered_by_delays_spread_over_frames():
    dt = 1.0
    t, cbf, delay, curves = mixed_healthy_curves(dt, delays_s=(0.0, 2.0, 4.0))
    aif = P.arterial_input_hu(t, **AIF_ARGS)
    k = P.deconvolve_bcsvd(curves, aif, dt, oscillation_limit=P.OSVD_OSCILLATION_INDEX)
    aligned = P.mean_curve_reference(curves, aif, dt, np.argmax(k, axis=-1), 1e-3)
    same_delay = P.mean_curve_reference(curves, aif, dt, np.rint(delay / dt).astype(int), 1e-3)
    smeared = P.mean_curve_reference(curves, aif, dt, np.zeros(len(cbf), int), 1e-3)
    _, _, _, undelayed = mixed_healthy_curves(dt)
    unspread = P.mean_curve_reference(undelayed, aif, dt, np.zeros(len(cbf), int), 1e-3)
    # Moved by whole frames to a common onset, the delayed set reads as the undelayed one; left as it is, far lower.
    assert same_delay["cbf_ml_100g_min"] == pytest.approx(unspread["cbf_ml_100g_min"], rel=0.01)
    assert aligned["cbf_ml_100g_min"] == pytest.approx(unspread["cbf_ml_100g_min"], rel=0.05)
    assert smeared["cbf_ml_100g_min"] < 0.8 * unspread["cbf_ml_100g_min"]


def test_the_mean_curve_reference_truncates_more_when_its_curve_is_noisier():
    dt = 1.0
    t, cbf, _, curves = mixed_healthy_curves(dt)
    aif = P.arterial_input_hu(t, **AIF_ARGS)
    peaks = np.zeros(len(cbf), int)
    light = P.mean_curve_reference(curves, aif, dt, peaks, 0.001)["threshold"]
    heavy = P.mean_curve_reference(curves, aif, dt, peaks, 0.3)["threshold"]
    assert light < heavy


def test_reference_from_series_takes_the_selected_voxels_curves_and_their_smoothed_noise():
    dt = 1.0
    t = np.arange(50) * dt
    aif = P.arterial_input_hu(t, **AIF_ARGS)
    rng = np.random.default_rng(4)
    shape = (24, 24, 2)
    cbf = np.full(shape, 50.0)
    cbf[:12] = 25.0
    tissue = P.tissue_curve_hu(t, aif_fine(), FINE_DT, cbf, 60.0 * 3.0 / cbf)
    series = 40.0 + tissue + rng.normal(0.0, 4.0, tissue.shape)
    ncct = P.baseline_from_series(series, 5).astype(np.float32)
    mask = np.ones(shape, bool)
    selected = np.zeros(shape, bool)
    selected[14:22, 4:20] = True  # CBF 50 only
    out = P.reference_from_series(series, ncct, mask, selected, np.zeros(shape), aif, dt, 5, (2.0, 2.0, 5.0), smooth_mm=3.0)
    assert out["voxels"] == selected.sum()
    assert out["frame_noise_hu"] == pytest.approx(4.0, rel=0.25)
    # The mean of 256 smoothed voxels: below 4 / sqrt(256) (smoothing shares raw voxels, which counts as correlated)
    # but not below 4 / sqrt(all raw voxels that reach the selection).
    # The mean of 256 smoothed voxels: smoothing shares raw voxels between them, so its noise is above 4 / sqrt(256)
    # less than it would be without smoothing (every selected curve independent) and not as much as one voxel's.
    assert 4.0 / np.sqrt(4 * selected.sum()) < out["noise_hu"] < 4.0 / np.sqrt(selected.sum()) * 2.0
    # Its CBF is the noise-free CBF-50 curve's read through the same truncation (within the smoothing's reach of the
    # CBF-25 half and the noise).
    clean = P.tissue_curve_hu(t, aif_fine(), FINE_DT, 50.0, 3.6)
    expected = P.cbf_from_residue(P.deconvolve_bcsvd(clean, aif, dt, threshold=out["threshold"]))
    assert out["cbf_ml_100g_min"] == pytest.approx(expected, rel=0.1)


def test_the_mean_curve_reference_gives_none_where_a_bolus_cut_off_leaves_no_residue_without_deep_ringing():
    dt = 1.0
    t, cbf, _, curves = mixed_healthy_curves(dt, noise_hu=1.0)
    aif = P.arterial_input_hu(t, **AIF_ARGS)
    peaks = np.zeros(len(cbf), int)
    whole = P.mean_curve_reference(curves, aif, dt, peaks, 1.0 / 20)
    assert whole and whole["dip"] <= P.REFERENCE_MAX_DIP
    # Cut at 20 s, 10 s after the AIF's peak: the tissue has not washed out, every truncation's residue rings below zero
    # after its maximum by more than a step's own ringing, so its maximum is no height and the caller keeps the median.
    assert P.mean_curve_reference(curves[:, :20], aif[:20], dt, peaks, 1.0 / 20) == {}
