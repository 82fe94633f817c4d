"""The deconvolutions measured against the app's own on the same series (scripts/evaluate_maps.py
``--deconvolutions``), kept here beside the measurement, not in the app: the app keeps one deconvolution,
block-circulant oSVD (strokelabel.perfusion.deconvolve_bcsvd, oscillation index 0.095), chosen by the table in
strokelabel/ctp4d.py's docstring. Each has the signature ``deconvolve(curves (n, T), aif (T,), dt_s, n_baseline)
-> k (n, T)`` that strokelabel.perfusion.perfusion_maps accepts.

- ``tsvd_discrepancy``: truncation chosen per voxel by its own baseline noise (Morozov's discrepancy principle);
- ``tikhonov_gcv``: Tikhonov regularisation with α per voxel by generalised cross-validation (Sourbron 2004);
- ``osvd_calibrated``: oSVD with the flow its truncation loses at the voxel's MTT divided out, the loss computed
  for the study's own AIF with an exponential residue (a model assumption; scored on the gamma-residue family too).

And one other way to read Tmax from the residue, ``residue_rise_time_s`` (its half-height rise instead of its
maximum): less biased on the forward model's curves, worse on the phantom series, so not kept (its docstring).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from strokelabel.perfusion import (
    OSVD_OSCILLATION_INDEX,
    OSVD_THRESHOLDS,
    cbf_from_residue,
    cbv_from_curves,
    circulant_aif_matrix,
    deconvolve_bcsvd,
    frame_noise_hu,
    oscillation_index,
    residue,
    residue_onset_time_s,
)


def _padded_spectra(tissue_hu, aif_hu, dt_s: float, pad_factor: int = 2):
    """(tissue spectra (n, F), AIF kernel spectrum λ (F,), padded length L, weights (F,)) of the block-circulant problem;
    ``weights`` count each rfft bin as often as the full spectrum holds it (Parseval: ||x||² = Σ w |X|² / L)."""
    tissue = np.asarray(tissue_hu, dtype=np.float64)
    n_t = np.asarray(aif_hu).size
    length = pad_factor * n_t
    spectrum = np.fft.rfft(circulant_aif_matrix(aif_hu, dt_s, pad_factor)[:, 0])
    data = np.fft.rfft(tissue.reshape(-1, n_t), n=length, axis=-1)
    weights = np.full(spectrum.size, 2.0)
    weights[0] = 1.0
    if length % 2 == 0:
        weights[-1] = 1.0
    return data, spectrum, length, weights


def baseline_noise_hu(tissue_hu, n_baseline: int) -> np.ndarray:
    """Each curve's noise (HU): the standard deviation of its frames before bolus arrival (at least 2 frames)."""
    tissue = np.asarray(tissue_hu, dtype=np.float64)
    n = max(2, int(n_baseline))
    return tissue[..., :n].std(axis=-1, ddof=1)


def deconvolve_tsvd_discrepancy(tissue_hu, aif_hu, dt_s: float, n_baseline: int, thresholds: Sequence[float] = OSVD_THRESHOLDS,
                                 tau: float = 1.0, pad_factor: int = 2) -> np.ndarray:
    """Block-circulant truncated SVD whose truncation each voxel chooses by its own noise (Morozov's discrepancy
    principle): the largest threshold of ``thresholds`` whose fit residual stays within ``tau`` × the noise the
    voxel's baseline frames show (:func:`baseline_noise_hu`) over the T frames. A noisy voxel is truncated more,
    a clean high-flow voxel less; oSVD's fixed oscillation index truncates by the residue's shape instead."""
    data, spectrum, length, weights = _padded_spectra(tissue_hu, aif_hu, dt_s, pad_factor)
    n_t = np.asarray(aif_hu).size
    magnitude = np.abs(spectrum)
    inverse = np.divide(1.0, spectrum, out=np.zeros_like(spectrum), where=magnitude > 0)
    noise = baseline_noise_hu(np.asarray(tissue_hu, np.float64).reshape(-1, n_t), n_baseline)
    allowed = (tau * noise) ** 2 * n_t
    chosen = np.full(data.shape[0], min(thresholds))
    for p in sorted(thresholds):
        dropped = magnitude < p * magnitude.max()
        residual = (weights * dropped * np.abs(data) ** 2).sum(axis=-1) / length
        chosen = np.where(residual <= allowed, p, chosen)
    k = np.zeros((data.shape[0], n_t))
    for p in np.unique(chosen):
        rows = chosen == p
        keep = magnitude >= p * magnitude.max()
        k[rows] = np.fft.irfft(data[rows] * inverse * keep, n=length, axis=-1)[:, :n_t]
    return k.reshape(*np.shape(tissue_hu)[:-1], n_t)


def deconvolve_tikhonov_gcv(tissue_hu, aif_hu, dt_s: float, n_baseline: int = 0, n_alphas: int = 16,
                            alpha_range: tuple[float, float] = (0.003, 0.5), pad_factor: int = 2) -> np.ndarray:
    """Block-circulant Tikhonov deconvolution, k = argmin ||D k − c||² + α²||k||², with α chosen per voxel by
    generalised cross-validation (Golub 1979; Sourbron 2004 for perfusion) among ``n_alphas`` values spaced
    logarithmically over ``alpha_range`` × the largest singular value. In the Fourier basis of the circulant D the
    filter is |λ|² / (|λ|² + α²), so GCV(α) = ||(1 − f)c||² / (Σ(1 − f))² is a sum over frequencies."""
    data, spectrum, length, weights = _padded_spectra(tissue_hu, aif_hu, dt_s, pad_factor)
    n_t = np.asarray(aif_hu).size
    power = np.abs(spectrum) ** 2
    alphas = np.abs(spectrum).max() * np.geomspace(alpha_range[0], alpha_range[1], n_alphas)
    data_power = weights * np.abs(data) ** 2
    best = np.full(data.shape[0], np.inf)
    chosen = np.zeros(data.shape[0], np.int64)
    for i, alpha in enumerate(alphas):
        rest = alpha**2 / (power + alpha**2)  # 1 − f
        gcv = (data_power * rest**2).sum(axis=-1) / float((weights * rest).sum()) ** 2
        better = gcv < best
        best, chosen = np.where(better, gcv, best), np.where(better, i, chosen)
    k = np.zeros((data.shape[0], n_t))
    for i in np.unique(chosen):
        rows = chosen == i
        inverse = np.conj(spectrum) / (power + alphas[i] ** 2)
        k[rows] = np.fft.irfft(data[rows] * inverse, n=length, axis=-1)[:, :n_t]
    return k.reshape(*np.shape(tissue_hu)[:-1], n_t)


def osvd_thresholds(tissue_hu, aif_hu, dt_s: float, oscillation_limit: float = OSVD_OSCILLATION_INDEX,
                    thresholds: Sequence[float] = OSVD_THRESHOLDS, pad_factor: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """oSVD as :func:`deconvolve_bcsvd` does it, also returning the truncation each curve got: (k (n, T), threshold (n,))."""
    tissue = np.asarray(tissue_hu, dtype=np.float64).reshape(-1, np.asarray(aif_hu).size)
    k = np.zeros(tissue.shape)
    chosen = np.full(tissue.shape[0], max(thresholds))
    todo = np.arange(tissue.shape[0])
    for i, p in enumerate(sorted(thresholds)):
        if todo.size == 0:
            break
        trial = deconvolve_bcsvd(tissue[todo], aif_hu, dt_s, threshold=p, pad_factor=pad_factor)
        ok = oscillation_index(trial) <= oscillation_limit if i < len(thresholds) - 1 else np.ones(todo.size, bool)
        k[todo[ok]], chosen[todo[ok]] = trial[ok], p
        todo = todo[~ok]
    return k, chosen


def truncation_recovery(aif_hu, dt_s: float, thresholds: Sequence[float], mtt_s: np.ndarray, substeps: int = 10,
                        pad_factor: int = 2, residue_kind: str = "exponential") -> np.ndarray:
    """(len(thresholds), len(mtt_s)): the fraction of the true flow that truncated block-circulant SVD at each threshold
    recovers (max k / true k) from a noise-free tissue curve of ``residue_kind`` residue and mean transit time ``mtt_s``,
    made with this study's own AIF (linearly interpolated to ``dt_s / substeps`` for the convolution, sampled back)."""
    aif = np.asarray(aif_hu, dtype=np.float64)
    fine_dt = dt_s / substeps
    t = np.arange(aif.size) * dt_s
    fine_t = np.arange(0.0, t[-1] + 1e-9, fine_dt)
    fine_aif = np.interp(fine_t, t, aif)
    residues = residue(fine_t[None, :], np.asarray(mtt_s, np.float64)[:, None], residue_kind)
    # k_true = 1 (unit flow-scaled residue peak): tissue = ∫ aif(τ) R(t − τ) dτ
    spectrum = np.fft.rfft(fine_aif, n=2 * fine_t.size)
    fine_tissue = np.fft.irfft(np.fft.rfft(residues, n=2 * fine_t.size, axis=-1) * spectrum, n=2 * fine_t.size, axis=-1)[:, : fine_t.size]
    tissue = fine_tissue[:, ::substeps][:, : aif.size] * fine_dt
    return np.stack([deconvolve_bcsvd(tissue, aif, dt_s, threshold=p, pad_factor=pad_factor).max(axis=-1) for p in thresholds])


# Mean transit times the recovery table spans (s); outside it the nearest entry is used.
RECOVERY_MTT_S = np.geomspace(0.5, 40.0, 48)


def deconvolve_osvd_calibrated(tissue_hu, aif_hu, dt_s: float, n_baseline: int = 0, oscillation_limit: float = OSVD_OSCILLATION_INDEX,
                               thresholds: Sequence[float] = OSVD_THRESHOLDS, iterations: int = 4,
                               residue_kind: str = "exponential") -> np.ndarray:
    """oSVD whose flow is divided by the fraction its own truncation loses at the voxel's transit time.

    Truncation low-passes the residue: a short transit time (a fast decay, healthy high-flow tissue) loses more of
    its peak than a long one (the core), so oSVD's CBF is biased by flow and the rCBF < 30 % edge moves outward (the
    core shrinks). The loss is computed for this study's AIF and each voxel's chosen threshold
    (:func:`truncation_recovery`) at the voxel's MTT = CBV / CBF (CBV by the area ratio, which truncation does not
    bias), iterated a few times as the corrected CBF moves the MTT. Returns k scaled by 1 / recovery (its Tmax unchanged).
    ``residue_kind``: the residue the loss is computed for (strokelabel.perfusion.residue): "exponential" (one
    well-mixed compartment) or "gamma" (a gamma transit-time distribution, as capillaries show, Mouridsen 2006).
    """
    shape = np.shape(tissue_hu)
    curves = np.asarray(tissue_hu, dtype=np.float64).reshape(-1, shape[-1])
    k, chosen = osvd_thresholds(curves, aif_hu, dt_s, oscillation_limit, thresholds)
    table = truncation_recovery(aif_hu, dt_s, sorted(thresholds), RECOVERY_MTT_S, residue_kind=residue_kind)
    row = np.searchsorted(sorted(thresholds), chosen)
    cbv = cbv_from_curves(curves, aif_hu, dt_s)
    raw = cbf_from_residue(k)
    recovery = np.ones(curves.shape[0])
    log_mtt = np.log(RECOVERY_MTT_S)
    for _ in range(iterations):
        mtt = np.divide(cbv, raw / recovery, out=np.full(raw.shape, RECOVERY_MTT_S[-1]), where=raw > 0) * 60.0
        position = np.interp(np.log(np.clip(mtt, RECOVERY_MTT_S[0], RECOVERY_MTT_S[-1])), log_mtt, np.arange(log_mtt.size))
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, log_mtt.size - 1)
        weight = position - low
        recovery = (1 - weight) * table[row, low] + weight * table[row, high]
        recovery = np.clip(recovery, 0.2, 1.0)
    return (k / recovery[:, None]).reshape(shape)


# --- Tmax read from the residue (compute_maps(tmax_from_residue=...), evaluate_maps --tmax-from rise) ---------


def residue_rise_time_s(residues, dt_s: float, fraction: float = 0.5) -> np.ndarray:
    """Tmax (s, from the first sample) of each deconvolved flow-scaled residue k, over the last axis: the time
    its leading edge rises through ``fraction`` of its maximum, read at the centres of the sampling intervals.

    The idea: a residue function never rises (R(0) = 1, then non-increasing), so the true residue's maximum is the
    bolus delay. Truncation low-passes k with a symmetric filter, which spreads the step at the delay evenly about it
    but drags the maximum of a step-then-decay later. Sample j of k holds the residue over the interval from j·dt
    (strokelabel.perfusion.circulant_aif_matrix), so the crossing is read at interval centres, + dt/2.

    Measured, and not kept:
    - on curves of the forward model (400 per case, CBF 8-60, MTT 3-12 s, delay 0-12 s, dt 1 and 2 s, noise 1 and
      4 HU, exponential, gamma, lognormal and box residues): median Tmax error of the argmax +1.8 to +3.0 s, of
      this -0.4 to +0.7 s; Tmax > 6 s on the right side of the threshold for 0.71-0.85 of voxels with the argmax,
      0.82-0.95 with this;
    - on the phantom series (compute_maps, clean family): it reads 0.6 s early in healthy tissue and spreads wider
      in delayed tissue (10th percentile -2.4 s where the true Tmax is 6-10 s; the argmax +1.4 s and +0.8 s), so
      the Tmax > 6 s Dice falls: 0.959 -> 0.941 on a boundary study; 0.83, 0.72 and 0.40 in three tests of
      tests/strokelabel/test_ctp4d.py whose limits (0.85, 0.8, 0.7) the argmax passes; and the task's penumbra Dice on the clean family (3 studies, seed 0)
      0.68 -> 0.50 (study 3: 0.13). The argmax's late read partly offsets an early bias elsewhere in the chain
      (the selected AIF's own arrival is a candidate, not measured), which a rise read exposes.
    A curve whose maximum is its first sample reads 0 (no delay); an all-zero curve reads 0.
    """
    k = np.asarray(residues, dtype=np.float64)
    n_t = k.shape[-1]
    flat = k.reshape(-1, n_t)
    peak_index = np.argmax(flat, axis=-1)
    level = fraction * flat.max(axis=-1)
    samples = np.arange(n_t)
    # The last sample under the level before the maximum; the edge crosses between it and the next.
    below = (flat < level[:, None]) & (samples[None, :] < peak_index[:, None])
    found = below.any(axis=-1)
    last_below = n_t - 1 - np.argmax(below[:, ::-1], axis=-1)
    j = np.where(found, last_below, 0)
    before = np.take_along_axis(flat, j[:, None], -1)[:, 0]
    after = np.take_along_axis(flat, np.minimum(j + 1, n_t - 1)[:, None], -1)[:, 0]
    step = np.divide(level - before, after - before, out=np.zeros_like(before), where=after > before)
    rise = np.where(found, (j + step + 0.5) * dt_s, 0.0)
    return rise.reshape(k.shape[:-1])


# --- truncation chosen by the noise the residue carries (issue 23) -----------------------------------------------


# The noise a voxel's residue may carry, as a fraction of its peak (deconvolve_osvd_noise): fixed before the
# measurement as a round figure, not tuned.
RESIDUE_NOISE_FRACTION = 0.1


def deconvolve_osvd_noise(tissue_hu, aif_hu, dt_s: float, n_baseline: int, noise_fraction: float = RESIDUE_NOISE_FRACTION,
                          thresholds: Sequence[float] = OSVD_THRESHOLDS, pad_factor: int = 2) -> np.ndarray:
    """Block-circulant SVD whose truncation each voxel chooses by the noise its residue would carry: the least
    truncation among ``thresholds`` whose propagated noise, σ_k(p) = σ_c · sqrt(T · Σ_f w_f |keep_f / λ_f|²) / L
    (white noise σ_c on the T acquired frames, :func:`baseline_noise_hu`; rfft weights w_f), is at most
    ``noise_fraction`` × the residue's peak. Why this and not oSVD's oscillation index: the index counts the residue's
    own shape as oscillation too (the step at the bolus delay, the fast decay of a short transit time), so a healthy
    high-flow voxel is truncated for its shape, not its noise, and its peak, the CBF, is cut more than a slow core's."""
    data, spectrum, length, weights = _padded_spectra(tissue_hu, aif_hu, dt_s, pad_factor)
    n_t = np.asarray(aif_hu).size
    curves = np.asarray(tissue_hu, np.float64).reshape(-1, n_t)
    noise = baseline_noise_hu(curves, n_baseline)
    magnitude = np.abs(spectrum)
    inverse = np.divide(1.0, spectrum, out=np.zeros_like(spectrum), where=magnitude > 0)
    k = np.zeros((data.shape[0], n_t))
    todo = np.arange(data.shape[0])
    ordered = sorted(thresholds)
    for i, p in enumerate(ordered):
        if todo.size == 0:
            break
        keep = magnitude >= p * magnitude.max()
        gain = np.sqrt(n_t * float((weights * keep * np.abs(inverse) ** 2).sum())) / length
        trial = np.fft.irfft(data[todo] * inverse * keep, n=length, axis=-1)[:, :n_t]
        ok = noise[todo] * gain <= noise_fraction * trial.max(axis=-1) if i < len(ordered) - 1 else np.ones(todo.size, bool)
        k[todo[ok]] = trial[ok]
        todo = todo[~ok]
    return k.reshape(*np.shape(tissue_hu)[:-1], n_t)


def deconvolve_osvd_calibrated_gamma(tissue_hu, aif_hu, dt_s: float, n_baseline: int = 0) -> np.ndarray:
    """:func:`deconvolve_osvd_calibrated` with the loss computed for a gamma residue (capillary transit times)."""
    return deconvolve_osvd_calibrated(tissue_hu, aif_hu, dt_s, n_baseline, residue_kind="gamma")


def deconvolve_osvd_debiased(tissue_hu, aif_hu, dt_s: float, n_baseline: int, oscillation_limit: float = OSVD_OSCILLATION_INDEX,
                             thresholds: Sequence[float] = OSVD_THRESHOLDS, pad_factor: int = 2) -> np.ndarray:
    """oSVD whose residue has the noise's expected maximum taken off, so CBF = max k is not raised by noise.

    Why: the maximum of a noisy residue is biased up by about the expected maximum of its noise. In low-flow tissue
    (the core: a low, long residue whose plateau spans many samples) that bias is a large part of the flow, in
    healthy tissue (a high, sharp peak) a small one, so the core's rCBF reads high and the core shrinks. The noise
    each voxel's residue carries is propagated from the baseline noise of the curves (their median over the curves
    given: CT noise is nearly uniform over a slab, and 3-5 baseline frames per voxel are too few to estimate it
    alone) through the voxel's own truncation: σ_k = σ_c · sqrt(T · Σ_f w_f |keep_f / λ_f|²) / L; the expected
    maximum of band-limited noise over the T frames is σ_k · sqrt(2 ln m), m = the number of frequencies kept
    (its independent samples). Tmax (the argmax) is unchanged."""
    data, spectrum, length, weights = _padded_spectra(tissue_hu, aif_hu, dt_s, pad_factor)
    n_t = np.asarray(aif_hu).size
    curves = np.asarray(tissue_hu, np.float64).reshape(-1, n_t)
    k, chosen = osvd_thresholds(curves, aif_hu, dt_s, oscillation_limit, thresholds, pad_factor)
    noise = float(np.median(baseline_noise_hu(curves, n_baseline))) if curves.shape[0] else 0.0
    magnitude = np.abs(spectrum)
    inverse_power = np.divide(1.0, magnitude**2, out=np.zeros_like(magnitude), where=magnitude > 0)
    bias = np.zeros(curves.shape[0])
    for p in np.unique(chosen):
        keep = magnitude >= p * magnitude.max()
        gain = np.sqrt(n_t * float((weights * keep * inverse_power).sum())) / length
        kept = max(2.0, float((weights * keep).sum()) * n_t / length)
        bias[chosen == p] = noise * gain * np.sqrt(2.0 * np.log(kept))
    return (k - bias[:, None]).reshape(np.shape(tissue_hu))


def deconvolve_osvd_peak(tissue_hu, aif_hu, dt_s: float, n_baseline: int = 0) -> np.ndarray:
    """The app's oSVD (the noise's lift of each maximum off) whose Tmax is always read at the residue's maximum
    (perfusion_maps reads a deconvolution given from outside at its maximum): with evaluate_maps --tmax-from onset,
    the onset read and the maximum on one series."""
    return deconvolve_bcsvd(tissue_hu, aif_hu, dt_s, oscillation_limit=OSVD_OSCILLATION_INDEX, noise_hu=frame_noise_hu(tissue_hu, n_baseline))


def deconvolve_osvd_height(tissue_hu, aif_hu, dt_s: float, n_baseline: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The app's oSVD with each residue divided by the fraction of its height that the best-matching trial residue of
    the onset fit (strokelabel.perfusion.residue_onset_time_s, its decay time fitted per voxel) keeps through the
    voxel's truncation (floored at 0.2): the flow-dependent truncation loss (a sharp healthy peak loses more than a
    core plateau, which biases the contralateral reference low) taken out by the voxel's own fitted decay rather than
    by an MTT-based calibration (``osvd_calibrated``). Returns (k, thresholds), so its Tmax is the onset read."""
    k, thresholds = deconvolve_bcsvd(tissue_hu, aif_hu, dt_s, oscillation_limit=OSVD_OSCILLATION_INDEX,
                                     noise_hu=frame_noise_hu(tissue_hu, n_baseline), return_thresholds=True)
    _, kept = residue_onset_time_s(k, aif_hu, dt_s, thresholds, with_height_kept=True)
    return k / np.clip(kept, 0.2, 1.0)[..., None], thresholds


def deconvolve_osvd_lift_on(tissue_hu, aif_hu, dt_s: float, n_baseline: int = 0) -> np.ndarray:
    """The app's oSVD as it was before issue 23: the noise's lift of each residue's maximum left in."""
    return deconvolve_bcsvd(tissue_hu, aif_hu, dt_s, oscillation_limit=OSVD_OSCILLATION_INDEX)
