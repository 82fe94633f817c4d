"""Indicator-dilution maths of CT perfusion, as pure vectorised functions.

Forward model (Østergaard 1996; Fieselmann 2011 review), for a voxel of brain tissue:

    C(t) = (ρ / k_H) · F · (AIF ⊛ R)(t − delay)                       (1)
    CBV  = F · MTT          (central volume theorem)                   (2)
    CBV  = (k_H / ρ) · ∫C dt / ∫AIF dt                                 (3)

with ``F`` the flow in mL/g/s (``CBF / 6000`` for CBF in mL/100g/min), ``R`` the residue
function (R(0) = 1, ∫R = MTT), ρ = 1.04 g/mL brain density and k_H = 0.73 the large/small
vessel haematocrit correction. Concentrations are enhancement in HU (ΔHU over the
pre-contrast baseline), which is proportional to iodine concentration, so the constant of
proportionality cancels between tissue and AIF.

Inverse: the flow-scaled residue k(t) = (ρ/k_H)·F·R(t − delay) is recovered by block-circulant
truncated SVD deconvolution (Wu 2003), which is insensitive to the tissue's delay, with the noise's expected lift
of its maximum taken off (:func:`residue_noise_maximum`, strokelabel/ctp4d.py has the measurement); then
CBF = max k (eq. 1), Tmax = argmax k (or the onset of k fitted through its own truncation, :func:`residue_onset_time_s`,
which the truncation does not drag late: measured, not yet the app's, see strokelabel/ctp4d.py), CBV by eq. 3,
MTT = CBV / CBF (eq. 2).

Units: time s, CBF mL/100g/min, CBV mL/100g, MTT/Tmax/TTP s, CT HU.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage, signal, special

RHO_BRAIN_G_PER_ML = 1.04
# k_H = (1 − Hct_large) / (1 − Hct_small) = (1 − 0.45) / (1 − 0.25).
HEMATOCRIT_CORRECTION = 0.73
# mL/g/s -> mL/100g/min.
ML_100G_MIN_PER_ML_G_S = 6000.0
# Iodine contrast: ~25 HU per mg/mL at 120 kVp (about 40 at the 80 kVp of many CTP protocols).
HU_PER_MG_ML = 25.0

# oSVD (Wu 2003): the truncation thresholds tried, least truncation first, and the
# oscillation index the residue must stay under.
OSVD_THRESHOLDS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4)
OSVD_OSCILLATION_INDEX = 0.095
# perfusion_maps(tmax_from_residue=TMAX_ONSET): Tmax = the onset of the residue fitted through its truncation.
TMAX_ONSET = "onset"

RESIDUES = ("exponential", "box", "gamma", "lognormal")
# Shapes of the transit-time distributions behind the "gamma" and "lognormal" residues: a
# gamma of shape 3 and a lognormal of log-SD 0.6 (both with mean MTT), unimodal and skewed as
# capillary transit times are (Mouridsen 2006), unlike the exponential's mode at 0.
GAMMA_RESIDUE_SHAPE = 3.0
LOGNORMAL_RESIDUE_SIGMA = 0.6


# --- forward model -------------------------------------------------------------------------


def gamma_variate(t_s, t0_s: float, alpha: float, beta_s: float, peak: float) -> np.ndarray:
    """Gamma-variate bolus ``peak·(s/(αβ))^α·exp(α(1 − s/(αβ)))``, s = t − t0 > 0, else 0.

    Its maximum, ``peak``, lies at ``t0 + α·β``; its area is :func:`gamma_variate_area`.
    """
    s = np.maximum(np.asarray(t_s, dtype=np.float64) - t0_s, 0.0)
    x = s / (alpha * beta_s)
    return peak * x**alpha * np.exp(alpha * (1.0 - x))


def gamma_variate_area(alpha: float, beta_s: float, peak: float) -> float:
    """∫ gamma_variate dt = peak·β·Γ(α+1)·e^α / α^α (units of peak × s)."""
    return float(peak * beta_s * special.gamma(alpha + 1.0) * np.exp(alpha) / alpha**alpha)


def arterial_input_hu(
    t_s,
    t0_s: float = 8.0,
    peak_hu: float = 400.0,
    alpha: float = 3.0,
    beta_s: float = 1.5,
    recirculation: float = 0.08,
) -> np.ndarray:
    """Arterial enhancement (ΔHU) over time: a gamma-variate first pass plus a recirculation pass.

    The recirculation pass is a broader gamma variate (twice β) peaking ``3·α·β`` after the
    first pass, with ``recirculation·peak_hu`` as its height; 0 disables it.
    """
    first = gamma_variate(t_s, t0_s, alpha, beta_s, peak_hu)
    if recirculation <= 0:
        return first
    second_t0 = t0_s + 2.0 * alpha * beta_s
    return first + gamma_variate(t_s, second_t0, alpha, 2.0 * beta_s, recirculation * peak_hu)


def residue_exponential(t_s, mtt_s) -> np.ndarray:
    """R(t) = exp(−t / MTT) for t ≥ 0, else 0 (well-mixed compartment); ∫R = MTT."""
    t = np.asarray(t_s, dtype=np.float64)
    mtt = np.asarray(mtt_s, dtype=np.float64)
    return np.where(t >= 0, np.exp(-np.maximum(t, 0.0) / mtt), 0.0)


def residue_box(t_s, mtt_s) -> np.ndarray:
    """R(t) = 1 for 0 ≤ t < MTT, else 0 (plug flow, every transit time equal); ∫R = MTT."""
    t = np.asarray(t_s, dtype=np.float64)
    return np.where((t >= 0) & (t < np.asarray(mtt_s, dtype=np.float64)), 1.0, 0.0)


def residue_gamma(t_s, mtt_s, shape: float = GAMMA_RESIDUE_SHAPE) -> np.ndarray:
    """R(t) = 1 − CDF of a gamma transit-time distribution of mean MTT (shape ``shape``); ∫R = MTT."""
    t = np.maximum(np.asarray(t_s, dtype=np.float64), 0.0)
    scale = np.asarray(mtt_s, dtype=np.float64) / shape
    return np.where(np.asarray(t_s) >= 0, special.gammaincc(shape, t / scale), 0.0)


def residue_lognormal(t_s, mtt_s, sigma: float = LOGNORMAL_RESIDUE_SIGMA) -> np.ndarray:
    """R(t) = 1 − CDF of a lognormal transit-time distribution of mean MTT (log-SD ``sigma``); ∫R = MTT."""
    t = np.asarray(t_s, dtype=np.float64)
    mu = np.log(np.asarray(mtt_s, dtype=np.float64)) - 0.5 * sigma**2
    with np.errstate(divide="ignore"):
        z = (np.log(np.maximum(t, 1e-300)) - mu) / sigma
    return np.where(t > 0, special.ndtr(-z), np.where(t == 0, 1.0, 0.0))


def residue(t_s, mtt_s, kind: str = "exponential") -> np.ndarray:
    if kind == "exponential":
        return residue_exponential(t_s, mtt_s)
    if kind == "box":
        return residue_box(t_s, mtt_s)
    if kind == "gamma":
        return residue_gamma(t_s, mtt_s)
    if kind == "lognormal":
        return residue_lognormal(t_s, mtt_s)
    raise ValueError(f"unknown residue function {kind!r}; expected one of {RESIDUES}")


def cbv_ml_100g(cbf_ml_100g_min, mtt_s) -> np.ndarray:
    """Central volume theorem (eq. 2): CBV [mL/100g] = CBF [mL/100g/min] · MTT [s] / 60."""
    return np.asarray(cbf_ml_100g_min, dtype=np.float64) * np.asarray(mtt_s, dtype=np.float64) / 60.0


def mtt_s(cbv_ml_100g, cbf_ml_100g_min) -> np.ndarray:
    """Central volume theorem (eq. 2) solved for MTT [s]; 0 where CBF is 0."""
    cbv = np.asarray(cbv_ml_100g, dtype=np.float64)
    cbf = np.asarray(cbf_ml_100g_min, dtype=np.float64)
    return np.divide(60.0 * cbv, cbf, out=np.zeros(np.broadcast(cbv, cbf).shape), where=cbf > 0)


def flow_scale_per_s(cbf_ml_100g_min) -> np.ndarray:
    """(ρ/k_H)·F of eq. 1: the height of the flow-scaled residue k(t), in 1/s."""
    return RHO_BRAIN_G_PER_ML / HEMATOCRIT_CORRECTION * np.asarray(cbf_ml_100g_min, dtype=np.float64) / ML_100G_MIN_PER_ML_G_S


def tissue_curve_hu(
    t_s,
    aif_hu,
    aif_dt_s: float,
    cbf_ml_100g_min,
    mtt_s,
    delay_s=0.0,
    residue_kind: str = "exponential",
) -> np.ndarray:
    """Tissue enhancement C(t) in ΔHU by eq. 1.

    ``aif_hu`` is the arterial enhancement sampled at ``k·aif_dt_s`` (k = 0, 1, ...); use a
    fine step (≤ 0.1 s) for an accurate convolution, which is evaluated by the trapezoid rule.
    ``cbf_ml_100g_min``, ``mtt_s`` and ``delay_s`` broadcast against each other; the result
    has their broadcast shape plus a last axis of ``len(t_s)``. Times before the start of
    the AIF read as no enhancement; times after its end hold the last value.
    """
    aif = np.asarray(aif_hu, dtype=np.float64)
    cbf, mtt, delay = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (cbf_ml_100g_min, mtt_s, delay_s)))
    grid = np.arange(aif.size) * aif_dt_s
    r = residue(grid, mtt[..., None], residue_kind)
    if residue_kind == "box":
        # The step at MTT covers its sample cell only in part: linear coverage keeps ∫R = MTT.
        r = np.clip((mtt[..., None] - grid) / aif_dt_s + 0.5, 0.0, 1.0)
        r[..., 0] = 1.0
    conv = signal.fftconvolve(np.broadcast_to(aif, r.shape), r, axes=-1)[..., : aif.size] * aif_dt_s
    # Trapezoid rule: half weight to the two ends of each convolution sum.
    conv -= 0.5 * aif_dt_s * (aif[0] * r + aif * r[..., :1])
    curve = flow_scale_per_s(cbf)[..., None] * conv
    return sample_uniform(curve, aif_dt_s, np.asarray(t_s, dtype=np.float64) - delay[..., None])


def sample_uniform(values, dt_s: float, t_s) -> np.ndarray:
    """Linear interpolation of ``values`` (last axis sampled at k·dt_s) at times ``t_s``.

    Leading axes of ``values`` and ``t_s`` broadcast; before 0 reads 0, after the end the last value.
    """
    values = np.asarray(values, dtype=np.float64)
    t = np.asarray(t_s, dtype=np.float64)
    lead = np.broadcast_shapes(values.shape[:-1], t.shape[:-1])
    v = np.broadcast_to(values, lead + values.shape[-1:])
    t = np.broadcast_to(t, lead + t.shape[-1:])
    x = np.clip(t / dt_s, 0.0, values.shape[-1] - 1)
    i0 = np.minimum(np.floor(x).astype(np.int64), values.shape[-1] - 2)
    w = x - i0
    out = np.take_along_axis(v, i0, -1) * (1 - w) + np.take_along_axis(v, i0 + 1, -1) * w
    return np.where(t < 0, 0.0, out)


def resample_times(values, times_s, new_times_s) -> np.ndarray:
    """Linear interpolation of ``values`` (last axis sampled at the increasing, possibly
    non-uniform ``times_s``) at ``new_times_s``; outside the sampled span the end values hold.

    float32 out; the weights are computed once for all voxels.
    """
    times = np.asarray(times_s, dtype=np.float64)
    new = np.asarray(new_times_s, dtype=np.float64)
    i0 = np.clip(np.searchsorted(times, new, side="right") - 1, 0, times.size - 2)
    w = np.clip((new - times[i0]) / (times[i0 + 1] - times[i0]), 0.0, 1.0).astype(np.float32)
    v = np.asarray(values)
    return (v[..., i0] * (1 - w) + v[..., i0 + 1] * w).astype(np.float32)


def uniform_step_s(times_s, finest_s: float = 0.5) -> float:
    """The step of a uniform grid for frames at ``times_s``: their median step when the frames are
    evenly spaced, else their shortest step (not below ``finest_s``), so the dense arterial
    phase of a variable-rate protocol keeps its resolution."""
    steps = np.diff(np.asarray(times_s, dtype=np.float64))
    median = float(np.median(steps))
    if steps.max() <= 1.1 * steps.min():
        return median
    return float(max(steps.min(), finest_s))


def concentration_mg_ml(delta_hu, hu_per_mg_ml: float = HU_PER_MG_ML) -> np.ndarray:
    """Iodine concentration (mg/mL) from enhancement ΔHU (linear, kVp-dependent constant)."""
    return np.asarray(delta_hu, dtype=np.float64) / hu_per_mg_ml


def enhancement_hu(concentration, hu_per_mg_ml: float = HU_PER_MG_ML) -> np.ndarray:
    """Enhancement ΔHU from iodine concentration (mg/mL); inverse of :func:`concentration_mg_ml`."""
    return np.asarray(concentration, dtype=np.float64) * hu_per_mg_ml


def baseline_hu(series_hu, n_baseline: int) -> np.ndarray:
    """Pre-contrast value per voxel: the mean of the first ``n_baseline`` frames (time last)."""
    return np.asarray(series_hu, dtype=np.float64)[..., : max(int(n_baseline), 1)].mean(axis=-1)


def bolus_arrival_frame(aif_delta_hu, fraction: float = 0.1) -> int:
    """First frame where the AIF exceeds ``fraction`` of its peak (the end of the baseline)."""
    aif = np.asarray(aif_delta_hu, dtype=np.float64)
    above = np.flatnonzero(aif >= fraction * aif.max())
    return int(above[0]) if above.size else 0


# --- deconvolution ---------------------------------------------------------------------


def circulant_aif_matrix(aif_hu, dt_s: float, pad_factor: int = 2) -> np.ndarray:
    """Block-circulant convolution matrix D[i, j] = dt · ā[(i − j) mod L] of the zero-padded AIF.

    With the tissue curve zero-padded to L = pad_factor·T, ``D @ k = c`` is eq. 1 as a
    circular convolution, so a tissue delay wraps instead of being lost (Wu 2003).
    ā is the AIF averaged over each sampling interval, ā[l] = (a[l] + a[l−1]) / 2: the
    residue is held constant over an interval from the sample where it starts, so the
    residue's step at the bolus delay sits on a sample (the plain matrix D = dt·a puts the
    peak of k about one frame late). ā is blind to the alternating (Nyquist) component of k,
    which truncation removes anyway.
    """
    a = np.asarray(aif_hu, dtype=np.float64)
    length = pad_factor * a.size
    padded = np.zeros(length)
    padded[: a.size] = a
    averaged = 0.5 * (padded + np.roll(padded, 1))
    index = (np.arange(length)[:, None] - np.arange(length)[None, :]) % length
    return dt_s * averaged[index]


def truncated_pseudoinverse(matrix, threshold: float, svd=None) -> np.ndarray:
    """Pseudo-inverse dropping singular values below ``threshold`` × the largest one.

    ``svd`` = (u, s, vt) of ``matrix`` if already computed.
    """
    u, s, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64)) if svd is None else svd
    keep = s >= threshold * s.max()
    inv_s = np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)
    return (vt.T * inv_s) @ u.T


def oscillation_index(residues) -> np.ndarray:
    """Wu 2003: OI = Σ|k[j] − 2k[j−1] + k[j−2]| / (L · max k), over the last axis."""
    k = np.asarray(residues, dtype=np.float64)
    second = np.abs(np.diff(k, n=2, axis=-1)).sum(axis=-1)
    peak = np.abs(k).max(axis=-1)
    return np.divide(second, k.shape[-1] * peak, out=np.zeros_like(peak), where=peak > 0)


def deconvolve_bcsvd(
    tissue_hu,
    aif_hu,
    dt_s: float,
    threshold: float = 0.1,
    oscillation_limit: float | None = None,
    thresholds: Sequence[float] = OSVD_THRESHOLDS,
    pad_factor: int = 2,
    noise_hu: float | None = None,
    return_thresholds: bool = False,
):
    """Flow-scaled residue k(t) = (ρ/k_H)·F·R(t − delay) [1/s] of each tissue curve (time last).

    Fixed truncation (cSVD, block-circulant) at ``threshold`` of the largest singular value;
    with ``oscillation_limit`` set, oSVD: per voxel the least truncation among ``thresholds``
    whose residue has an oscillation index ≤ the limit (the largest threshold if none).
    Returns the first T samples of the padded residue; with ``return_thresholds``, (k, the threshold each curve
    got), which :func:`residue_onset_time_s` needs to know the low-pass each residue went through.

    The SVD of the circulant matrix :func:`circulant_aif_matrix` is its discrete Fourier
    transform: its singular values are |λ_f|, λ = dt·DFT(ā). Truncating singular values is
    therefore zeroing the frequencies with |λ_f| below the threshold, which is how this is
    computed (FFT, exactly equal to ``truncated_pseudoinverse(D) @ c``, and fast for many voxels).

    With ``noise_hu`` (the curves' frame noise, HU), each residue has the expected maximum of the noise it carries
    taken off (:func:`residue_noise_maximum`), so that CBF = max k is not raised by noise (see there and
    strokelabel/ctp4d.py for why and the measurement that chose it); its argmax, Tmax, is unchanged.
    """
    tissue = np.asarray(tissue_hu, dtype=np.float64)
    aif = np.asarray(aif_hu, dtype=np.float64)
    n_t = aif.size
    if tissue.shape[-1] != n_t:
        raise ValueError(f"tissue curves have {tissue.shape[-1]} frames but the AIF has {n_t}")
    lead = tissue.shape[:-1]
    length = pad_factor * n_t
    flat = tissue.reshape(-1, n_t)
    kernel = circulant_aif_matrix(aif, dt_s, pad_factor)[:, 0]
    spectrum = np.fft.rfft(kernel)
    magnitude = np.abs(spectrum)
    inverse = np.divide(1.0, spectrum, out=np.zeros_like(spectrum), where=magnitude > 0)
    data = np.fft.rfft(flat, n=length, axis=-1) * inverse

    def solve(rows, p):
        keep = magnitude >= p * magnitude.max()
        return np.fft.irfft(data[rows] * keep, n=length, axis=-1)

    if oscillation_limit is None:
        k = solve(slice(None), threshold)[:, :n_t]
        if noise_hu is not None:
            k -= residue_noise_maximum(k, magnitude, threshold, n_t, noise_hu, length)[:, None]
        if return_thresholds:
            return k.reshape(*lead, n_t), np.full(lead, float(threshold))
        return k.reshape(*lead, n_t)
    chosen = np.zeros((flat.shape[0], n_t))
    chosen_threshold = np.zeros(flat.shape[0])
    todo = np.arange(flat.shape[0])
    for i, p in enumerate(sorted(thresholds)):
        if todo.size == 0:
            break
        k = solve(todo, p)
        ok = oscillation_index(k) <= oscillation_limit
        if i == len(thresholds) - 1:
            ok[:] = True
        chosen[todo[ok]] = k[ok, :n_t]
        chosen_threshold[todo[ok]] = p
        if noise_hu is not None:
            chosen[todo[ok]] -= residue_noise_maximum(k[ok, :n_t], magnitude, p, n_t, noise_hu, length)[:, None]
        todo = todo[~ok]
    if return_thresholds:
        return chosen.reshape(*lead, n_t), chosen_threshold.reshape(lead)
    return chosen.reshape(*lead, n_t)


def residue_noise_maximum(residues, kernel_magnitude, threshold: float, n_frames: int, noise_hu: float,
                          length: int | None = None) -> np.ndarray:
    """The expected amount (1/s) by which noise raises the maximum of each residue (rows of ``residues``, the first
    ``n_frames`` samples of a block-circulant solution truncated at ``threshold``; ``kernel_magnitude`` the rfft
    magnitudes of its circulant AIF kernel of padded ``length``, by default 2 (n_frames)), from white frame noise
    ``noise_hu`` on the acquired frames.

    The noise in k is σ_k = σ · sqrt(T · Σ_f w_f |1 / λ_f|²) / L over the kept frequencies (w_f: how often the full
    spectrum holds an rfft bin), band-limited, so about one independent sample per L / (kept frequencies) frames.
    max k is the largest of the samples that could hold the maximum (those within 2 σ_k of it), so its bias is the
    expected maximum of m standard normals (Blom's approximation) × σ_k, m = those samples × the kept fraction: about
    0 for a sharp peak (healthy tissue), ~2 σ_k for a low plateau spanning the frames (the core)."""
    from scipy.special import ndtri

    k = np.asarray(residues, dtype=np.float64)
    sigma_k, kept_fraction = residue_noise_sd(kernel_magnitude, threshold, n_frames, noise_hu, length)
    near_peak = (k >= k.max(axis=-1, keepdims=True) - 2.0 * sigma_k).sum(axis=-1)
    independent = np.maximum(1.0, near_peak * kept_fraction)
    return sigma_k * np.maximum(ndtri((independent - 0.375) / (independent + 0.25)), 0.0)



def residue_noise_sd(kernel_magnitude, threshold: float, n_frames: int, noise_hu: float, length: int | None = None) -> tuple[float, float]:
    """(σ_k, the kept fraction of the spectrum): the standard deviation (1/s) of a block-circulant residue's samples
    from white frame noise ``noise_hu`` on ``n_frames`` acquired frames, truncated at ``threshold`` (the kernel's rfft
    magnitudes ``kernel_magnitude``, padded ``length``, by default 2 ``n_frames``): σ_k = σ · sqrt(T · Σ_f w_f |1/λ_f|²) / L
    over the kept frequencies (w_f: how often the full spectrum holds an rfft bin). It is the spread averaged over the
    padded period; the first T samples, the residue, spread 1.1-1.3 x more (measured in tests/strokelabel/test_perfusion.py)."""
    magnitude = np.asarray(kernel_magnitude, dtype=np.float64)
    length = 2 * n_frames if length is None else int(length)
    weights = np.full(magnitude.size, 2.0)  # an rfft bin stands for itself and its mirror, but for 0 and Nyquist
    weights[0] = 1.0
    if length % 2 == 0:
        weights[-1] = 1.0
    keep = magnitude >= threshold * magnitude.max()
    inverse_power = np.divide(1.0, magnitude**2, out=np.zeros_like(magnitude), where=keep & (magnitude > 0))
    sigma_k = float(noise_hu) * np.sqrt(n_frames * float((weights * inverse_power).sum())) / length
    return sigma_k, float((weights * keep).sum()) / length


# The reference residue (:func:`mean_curve_reference`): truncations tried, least first (finer than oSVD's: the mean of
# thousands of curves carries far less noise), and the precision its height must reach: the propagated noise of the
# residue at most this fraction of its maximum (a 2 % reference error moves the rCBF < 0.3 edge by 0.006).
REFERENCE_THRESHOLDS = (0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.2)
REFERENCE_RELATIVE_NOISE = 0.02
# A residue function is never negative after its maximum; the band-limited ringing of its onset step dips ~9 % (Gibbs)
# below zero. A deeper dip is the inverse's ringing on what the model cannot fit (a bolus cut off before the washout:
# on a series cut at 24 s every truncation's mean residue dipped to -17..-112 % of its maximum), and its maximum is
# then no height.
REFERENCE_MAX_DIP = 0.1


def mean_curve_reference(curves_hu, aif_hu, dt_s: float, peak_frames, noise_hu: float,
                         thresholds: Sequence[float] = REFERENCE_THRESHOLDS,
                         relative_noise: float = REFERENCE_RELATIVE_NOISE, max_dip: float = REFERENCE_MAX_DIP,
                         pad_factor: int = 2) -> dict:
    """The reference CBF (mL/100g/min) of a set of tissue curves (n, T), read from their mean curve deconvolved as one.

    Deconvolution is linear: the residue of the mean curve is the mean of the voxels' flow-scaled residues, so its
    height at the onset is their mean CBF whatever each residue's shape; and the mean of n curves has about 1/sqrt(n)
    of one curve's noise, so it needs far less truncation than a voxel (oSVD's) and keeps the height that truncation
    takes off a sharp healthy residue (docs/ctp_boundary_decisions.md, "A shape-free reference"). The voxels' delays
    differ by a few frames and would smear the mean residue's onset, lowering its maximum: each curve is first moved
    by a whole number of frames so that its residue's maximum (``peak_frames``, the frame index of each voxel's
    residue maximum) falls on the set's median one (whole frames, so no interpolation low-passes it; the remaining
    spread is below one frame). The truncation is the least of ``thresholds`` whose propagated noise
    (:func:`residue_noise_sd`, from ``noise_hu``, the noise of the mean curve per frame) is at most ``relative_noise``
    of the residue's maximum and whose dip below zero is at most :data:`REFERENCE_MAX_DIP` of it. Returns
    {cbf_ml_100g_min, threshold, noise_hu, relative_noise, dip, voxels}, or {} when no truncation gives a residue
    without a deeper dip (the caller then keeps the voxels' median)."""
    curves = np.asarray(curves_hu, dtype=np.float64)
    n, n_t = curves.shape
    if n == 0:
        raise ValueError("no tissue curves to take a reference from")
    shifts = np.asarray(peak_frames, dtype=np.int64) - int(np.median(peak_frames))
    # A curve moved later gets its baseline (0) at the start; none is given frames it was not acquired with at the end:
    # the mean curve and the AIF end where the curve moved earliest ends (an invented end makes the inverse ring).
    n_t -= int(max(shifts.max(), 0))
    if n_t < 4:
        raise ValueError("the curves' delays spread over nearly all the frames: no mean curve to read")
    frame = np.arange(n_t)[None, :] + shifts[:, None]
    aligned = np.where(frame < 0, 0.0, np.take_along_axis(curves, np.clip(frame, 0, None), axis=1))
    mean_curve = aligned.mean(axis=0)
    aif_hu = np.asarray(aif_hu, dtype=np.float64)[:n_t]
    length = pad_factor * n_t
    magnitude = np.abs(np.fft.rfft(circulant_aif_matrix(aif_hu, dt_s, pad_factor)[:, 0]))
    for threshold in sorted(thresholds):
        k = deconvolve_bcsvd(mean_curve, aif_hu, dt_s, threshold=threshold, pad_factor=pad_factor)
        sigma_k, _ = residue_noise_sd(magnitude, threshold, n_t, noise_hu, length)
        # After its maximum a residue falls to zero, never below (before it, a delayed onset's own ringing shows).
        dip = -float(k[int(np.argmax(k)):].min()) / float(k.max()) if k.max() > 0 else np.inf
        if k.max() > 0 and sigma_k <= relative_noise * k.max() and dip <= max_dip:
            return {"cbf_ml_100g_min": float(cbf_from_residue(k)), "threshold": float(threshold), "noise_hu": float(noise_hu),
                    "relative_noise": float(sigma_k / k.max()), "dip": round(dip, 4), "voxels": int(n)}
    return {}



# Decay times (s) of the trial residues the onset fit slides along k (:func:`residue_onset_time_s`): from a sharp
# healthy peak to a core plateau, log-spaced; onsets are tried every ONSET_SUBSTEPS-th of a frame.
ONSET_DECAY_TIMES_S = tuple(float(v) for v in np.geomspace(1.0, 40.0, 10))
ONSET_SUBSTEPS = 4
# How far before the deconvolved residue's maximum its onset may lie: the low-pass of truncation drags the maximum
# later by 1-4 s (more at low flow), never by more than this.
ONSET_BEFORE_PEAK_S = 8.0


def residue_onset_time_s(residues, aif_hu, dt_s: float, thresholds, pad_factor: int = 2,
                         decay_times_s: Sequence[float] = ONSET_DECAY_TIMES_S, substeps: int = ONSET_SUBSTEPS,
                         before_peak_s: float = ONSET_BEFORE_PEAK_S, chunk: int = 4096, with_height_kept: bool = False):
    """Tmax (s, from the first sample) of each deconvolved residue k (rows, the first T samples of
    :func:`deconvolve_bcsvd` truncated at ``thresholds``, one per row): the bolus delay, found as the onset of the
    falling residue whose tissue curve, deconvolved through the same AIF and the same truncation, best matches k.

    Why not the maximum of k: a residue function is a survival function (R(0) = 1, never rising), so its maximum is
    its onset, the delay; but truncation low-passes k, and the low-pass of a step-then-decay peaks after the step,
    by more the sharper the truncation and the slower the decay (forward model, the app's oSVD, 1-2 s frames:
    +1.0-1.3 s at MTT 4 s, +1.3-2.3 s at MTT 8-15 s without noise, +1.4 to +3.9 s at 1 HU). That is an estimator's
    error, not the physics: the phantom's true Tmax, and the clinical definition, is the residue's own maximum.
    The low-pass is known (the AIF and the voxel's threshold), so each trial residue exp(-(t - d)/τ) from onset d,
    averaged over each sampling interval as :func:`circulant_aif_matrix` holds k, is put through the same forward
    convolution and truncated inverse, and the onset of the best match (least squares, free positive height) is Tmax.
    The decays (:data:`ONSET_DECAY_TIMES_S`) let the fit follow the residue's fall; the trial shape is exponential, so
    it was scored on shapes it does not assume: on gamma and box residues the median error is +0.3 to +1.5 s and +0.4
    to +4.2 s against the maximum's +1.1 to +4.9 s and +0.9 to +7.3 s. On the boundary phantoms it takes the mismatch
    bias from +14..+43 mL to -0.1..+16.5 mL but is not the app's read (rule 3 of docs/ctp_boundary_decisions.md: more
    DEFUSE 3 disagreements while the core is under-read; strokelabel/ctp4d.py). Onsets are tried every
    ``substeps``-th of a frame, from ``before_peak_s`` before k's maximum to one frame after it.

    With ``with_height_kept``, also the fraction of its maximum that the best-matching trial residue keeps through the
    truncation (1 where nothing matched), for scripts/deconvolution_candidates.py's measurement of the truncation loss.
    """
    k = np.asarray(residues, dtype=np.float64)
    n_t = k.shape[-1]
    flat = k.reshape(-1, n_t)
    per_row = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), k.shape[:-1]).reshape(-1)
    length = pad_factor * n_t
    spectrum = np.fft.rfft(circulant_aif_matrix(aif_hu, dt_s, pad_factor)[:, 0])
    magnitude = np.abs(spectrum)
    inverse = np.divide(1.0, spectrum, out=np.zeros_like(spectrum), where=magnitude > 0)
    onsets = np.repeat(np.arange(n_t * substeps) * dt_s / substeps, len(decay_times_s))
    decays = np.tile(np.asarray(decay_times_s, dtype=np.float64), n_t * substeps)
    start = np.arange(n_t) * dt_s
    lower = np.maximum(start[None, :], onsets[:, None])
    upper = start[None, :] + dt_s
    trial = np.where(upper > onsets[:, None], decays[:, None] / dt_s * (np.exp(-(lower - onsets[:, None]) / decays[:, None])
                                                                         - np.exp(-(upper - onsets[:, None]) / decays[:, None])), 0.0)
    # The trial residues' tissue curves (causal, so the first T samples of the padded convolution are exact).
    trial_curves = np.fft.rfft(np.fft.irfft(np.fft.rfft(trial, n=length) * spectrum, n=length)[:, :n_t], n=length) * inverse
    peak_s = peak_time_s(flat, dt_s, subsample=False)
    out = np.zeros(flat.shape[0])
    kept = np.ones(flat.shape[0])
    for p in np.unique(per_row):
        keep = magnitude >= p * magnitude.max()
        templates = np.fft.irfft(trial_curves * keep, n=length)[:, :n_t]
        height_kept = templates.max(axis=1)  # the trial residues start at height 1 (R(0) = 1)
        templates /= np.maximum(np.linalg.norm(templates, axis=1), 1e-12)[:, None]
        templates = templates.astype(np.float32)
        rows = np.flatnonzero(per_row == p)
        for first in range(0, rows.size, chunk):
            r = rows[first : first + chunk]
            match = flat[r].astype(np.float32) @ templates.T
            window = (onsets[None, :] <= peak_s[r, None] + dt_s) & (onsets[None, :] >= peak_s[r, None] - before_peak_s) & (match > 0)
            best = np.argmax(np.where(window, match, -np.inf), axis=1)
            matched = window.any(axis=1)
            out[r] = np.where(matched, onsets[best], peak_s[r])
            kept[r] = np.where(matched, height_kept[best], 1.0)
    if with_height_kept:
        return out.reshape(k.shape[:-1]), kept.reshape(k.shape[:-1])
    return out.reshape(k.shape[:-1])


def peak_time_s(curves, dt_s: float, subsample: bool = True) -> np.ndarray:
    """Time (s, from the first sample) of each curve's maximum, over the last axis.

    With ``subsample``, refined by the vertex of the parabola through the maximum and its
    two neighbours (clipped to ±half a sample).
    """
    c = np.asarray(curves, dtype=np.float64)
    i = np.argmax(c, axis=-1)
    t = i.astype(np.float64)
    if subsample and c.shape[-1] >= 3:
        inner = np.clip(i, 1, c.shape[-1] - 2)
        left = np.take_along_axis(c, (inner - 1)[..., None], -1)[..., 0]
        mid = np.take_along_axis(c, inner[..., None], -1)[..., 0]
        right = np.take_along_axis(c, (inner + 1)[..., None], -1)[..., 0]
        curvature = left - 2 * mid + right
        offset = np.divide(0.5 * (left - right), curvature, out=np.zeros_like(mid), where=curvature < 0)
        t = np.where((i == inner), i + np.clip(offset, -0.5, 0.5), t)
    return t * dt_s


def mip_hu(series_hu) -> np.ndarray:
    """Maximum intensity projection over time (last axis) of a CT perfusion series, HU."""
    return np.asarray(series_hu).max(axis=-1)


def ttp_s(curves, dt_s: float) -> np.ndarray:
    """Time to peak (s from the first frame) of enhancement curves (time last)."""
    return peak_time_s(curves, dt_s)


def cbf_from_residue(residue_per_s) -> np.ndarray:
    """CBF [mL/100g/min] = max k · (k_H/ρ) · 6000 (eq. 1)."""
    k_max = np.asarray(residue_per_s, dtype=np.float64).max(axis=-1)
    return np.maximum(k_max, 0.0) * HEMATOCRIT_CORRECTION / RHO_BRAIN_G_PER_ML * ML_100G_MIN_PER_ML_G_S


def cbv_from_curves(tissue_hu, aif_hu, dt_s: float) -> np.ndarray:
    """CBV [mL/100g] by eq. 3: (k_H/ρ) · ∫C / ∫AIF · 100 (trapezoid areas)."""
    tissue_area = np.trapezoid(np.asarray(tissue_hu, dtype=np.float64), dx=dt_s, axis=-1)
    aif_area = np.trapezoid(np.asarray(aif_hu, dtype=np.float64), dx=dt_s)
    return np.maximum(tissue_area, 0.0) / aif_area * HEMATOCRIT_CORRECTION / RHO_BRAIN_G_PER_ML * 100.0


# --- from a 4D series to the maps ---------------------------------------------------------


# A bolus passes: by the last frame a vessel's curve is back below this fraction of its peak (recirculation leaves
# ~0.1 in an artery, a truncated series more), while a step (residual misregistration at an edge) stays up.
BOLUS_RETURN_FRACTION = 0.6


def bolus_passes(curves, return_fraction: float = BOLUS_RETURN_FRACTION) -> np.ndarray:
    """(N,) bool: the curves (N, T) that come back below ``return_fraction`` of their peak by the last
    frame, or peak in the last two frames (a truncated acquisition, which the caller reports)."""
    curves = np.asarray(curves)
    peak = curves.max(axis=-1)
    return (curves[:, -1] <= return_fraction * peak) | (np.argmax(curves, axis=-1) >= curves.shape[-1] - 2)


# Arterial peaks spread over about this much (s): the delays between the arteries the AIF can come from
# (carotid to distal MCA, the healthy side's branches) are 1-2 s, while the cerebral circulation puts the veins'
# peak 4-7 s after the arteries' (the VOF lags the AIF by ctp4d.VOF_LAG_S or more). Candidates peaking later than
# the earliest arterial peaks by more than this (or one frame, the peak time's own step) are not taken as AIF.
ARTERIAL_PEAK_SPREAD_S = 2.0


def select_aif(
    delta_hu, dt_s: float, n_voxels: int = 8, candidate_fraction: float = 0.01, n_candidates: int | None = None,
    venous_guard: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Automatic AIF: the mean curve of the ``n_voxels`` strongest early-peaking voxels.

    ``delta_hu`` is (N, T) enhancement. Candidates are the top ``n_candidates`` (default
    ``candidate_fraction`` of N) by peak enhancement, curves that pass as a bolus (:func:`bolus_passes`)
    before steps (a 3 mm shift left 247 step voxels of 342 candidates, none arterial, and an AIF
    peaking 3 s early once the median no longer bounded it); of those, the ones peaking no later than
    both the candidates' median time to peak and the earliest arterial peak (the time by which
    ``n_voxels`` candidates have peaked: a few early noise peaks do not set it) plus
    :data:`ARTERIAL_PEAK_SPREAD_S` or one frame, strongest first. The median alone fails where the
    veins outnumber the arteries among the strongest voxels (a few slices through the sagittal
    sinus: an 8-slice phantom had 352 venous of 448 candidates and its AIF peaked 4.5 s late);
    the window alone would admit delayed collaterals where the arteries dominate. ``venous_guard=False``
    is the selection before issue 23 (by peak, up to the median only), which the frozen phantom
    generator's derived maps keep (:func:`perfusion_maps`' own AIF). Returns (aif (T,), indices of the
    voxels used).
    """
    curves = np.asarray(delta_hu, dtype=np.float64)
    peak = curves.max(axis=-1)
    if n_candidates is None:
        n_candidates = max(n_voxels * 4, int(candidate_fraction * peak.size))
    if not venous_guard:
        candidates = np.argsort(peak)[::-1][:n_candidates]
        ttp = peak_time_s(curves[candidates], dt_s, subsample=False)
        early = candidates[ttp <= np.median(ttp)]
        chosen = early[np.argsort(peak[early])[::-1][:n_voxels]]
        return curves[chosen].mean(axis=0), chosen
    candidates = np.argsort(_bolus_first(curves))[::-1][:n_candidates]
    boluses = bolus_passes(curves[candidates])
    if np.count_nonzero(boluses) >= n_voxels:  # steps left out while enough boluses remain
        candidates = candidates[boluses]
    ttp = peak_time_s(curves[candidates], dt_s, subsample=False)
    earliest_arterial_s = np.sort(ttp)[min(n_voxels, ttp.size) - 1]
    latest_s = min(float(np.median(ttp)), earliest_arterial_s + max(ARTERIAL_PEAK_SPREAD_S, dt_s))
    early = candidates[ttp <= latest_s + 1e-6 * dt_s]  # peak times are frame multiples: no rounding loss
    chosen = early[np.argsort(peak[early])[::-1][:n_voxels]]
    return curves[chosen].mean(axis=0), chosen


def _bolus_first(curves) -> np.ndarray:
    """A ranking score: the peak enhancement, every curve that passes as a bolus above every one that does not."""
    peak = np.asarray(curves).max(axis=-1).astype(np.float64)
    return np.where(bolus_passes(curves), peak, peak - 1e6)


def select_aif_from_series(series_hu, baseline, mask, dt_s: float, n_voxels: int = 8, candidate_fraction: float = 0.01, chunk_voxels: int = 500_000,
                           venous_guard: bool = True) -> np.ndarray:
    """:func:`select_aif` over the ``mask`` voxels of a 4D series, slab by slab (bounded memory)."""
    aif, _ = select_aif_voxels_from_series(series_hu, baseline, mask, dt_s, n_voxels, candidate_fraction, chunk_voxels, venous_guard)
    return aif


def select_aif_voxels_from_series(series_hu, baseline, mask, dt_s: float, n_voxels: int = 8, candidate_fraction: float = 0.01,
                                  chunk_voxels: int = 500_000, venous_guard: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`select_aif_from_series` that also returns the voxels used, as (n, 3) indices."""
    series = np.asarray(series_hu)
    n_candidates = max(n_voxels * 4, int(candidate_fraction * np.count_nonzero(mask)))
    score = _bolus_first if venous_guard else (lambda delta: delta.max(axis=-1))
    pool, where = _strongest_voxels(series, baseline, mask, n_candidates, score, chunk_voxels)
    aif, chosen = select_aif(pool, dt_s, n_voxels, n_candidates=n_candidates, venous_guard=venous_guard)
    return aif, where[chosen]


def select_vof(delta_hu, dt_s: float, after_s: float, n_voxels: int = 8, min_peak_hu: float = 50.0,
               return_fraction: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Venous output function: the mean curve of the ``n_voxels`` late-peaking voxels of largest area.

    ``delta_hu`` is (N, T) enhancement (candidates from the venous region); only voxels peaking
    at or after ``after_s`` (s from the first sample), above ``min_peak_hu``, and back below
    ``return_fraction`` of their peak by the last sample count: a bolus passes, while a step
    (residual motion at an edge) stays up. A curve peaking in its last two samples is kept (a
    truncated acquisition, which the caller reports). A large sinus is the one place where the
    indicator's full area is seen without partial volume, which is why its area calibrates the
    AIF's. Returns (vof (T,), indices used), empty indices if none.
    """
    curves = np.asarray(delta_hu, dtype=np.float64)
    if curves.shape[0] == 0:
        return np.zeros(curves.shape[-1]), np.zeros(0, np.int64)
    peak = curves.max(axis=-1)
    late = (peak_time_s(curves, dt_s, subsample=False) >= after_s) & (peak >= min_peak_hu) & bolus_passes(curves, return_fraction)
    candidates = np.flatnonzero(late)
    if candidates.size == 0:
        return np.zeros(curves.shape[-1]), candidates
    area = np.trapezoid(curves[candidates], dx=dt_s, axis=-1)
    chosen = candidates[np.argsort(area)[::-1][:n_voxels]]
    return curves[chosen].mean(axis=0), chosen


def select_vof_voxels_from_series(series_hu, baseline, mask, dt_s: float, after_s: float, n_voxels: int = 8, n_candidates: int = 400,
                                  min_peak_hu: float = 50.0, chunk_voxels: int = 500_000) -> tuple[np.ndarray, np.ndarray]:
    """:func:`select_vof` over the ``mask`` voxels of a 4D series (the venous region), slab by slab;
    candidates are the ``n_candidates`` voxels of largest enhancement area. Returns (vof, (n, 3) indices)."""
    series = np.asarray(series_hu)
    pool, where = _strongest_voxels(series, baseline, mask, n_candidates, lambda delta: delta.sum(axis=-1), chunk_voxels)
    vof, chosen = select_vof(pool, dt_s, after_s, n_voxels, min_peak_hu)
    return vof, where[chosen]


def _strongest_voxels(series, baseline, mask, n_keep: int, score, chunk_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """The enhancement curves (n, T) of the ``n_keep`` ``mask`` voxels of highest ``score(curves)``
    and their (n, 3) indices, slab by slab: only the best seen so far are kept (bounded memory)."""
    pool = np.zeros((0, series.shape[-1]), np.float32)
    where = np.zeros((0, 3), np.int64)
    for zs in _slabs(series.shape, chunk_voxels):
        m = mask[:, :, zs]
        if not m.any():
            continue
        delta = series[:, :, zs][m].astype(np.float32) - baseline[:, :, zs][m][:, None]
        ijk = np.argwhere(m) + np.array([0, 0, zs.start])
        pool = np.concatenate([pool, delta])
        where = np.concatenate([where, ijk])
        if pool.shape[0] > n_keep:
            keep = np.argpartition(score(pool), -n_keep)[-n_keep:]
            pool, where = pool[keep], where[keep]
    return pool, where


def baseline_from_series(series_hu, n_baseline: int, chunk_voxels: int = 500_000) -> np.ndarray:
    """:func:`baseline_hu` (float32) of a 4D series, slab by slab."""
    series = np.asarray(series_hu)
    out = np.zeros(series.shape[:3], np.float32)
    for zs in _slabs(series.shape, chunk_voxels):
        out[:, :, zs] = baseline_hu(series[:, :, zs], n_baseline)
    return out


def _slabs(shape, chunk_voxels: int) -> list[slice]:
    n = max(1, chunk_voxels // (shape[0] * shape[1]))
    return [slice(z, min(z + n, shape[2])) for z in range(0, shape[2], n)]


def smooth_in_plane(volume, mask, sigma_mm: float, spacing_mm: Sequence[float]) -> np.ndarray:
    """Gaussian smoothing of each axial slice inside ``mask`` only (normalised convolution).

    ``volume`` is (X, Y, Z[, T]); smoothing never crosses slices or mixes in voxels outside the mask.
    """
    if sigma_mm <= 0:
        return np.asarray(volume, dtype=np.float32)
    vol = np.asarray(volume, dtype=np.float32)
    m = np.asarray(mask, dtype=np.float32)
    sigma = [sigma_mm / spacing_mm[0], sigma_mm / spacing_mm[1], 0.0] + [0.0] * (vol.ndim - 3)
    weight = ndimage.gaussian_filter(m, sigma[:3], truncate=3.0)
    if vol.ndim == 4:
        weight = weight[..., None]
        m = m[..., None]
    out = ndimage.gaussian_filter(vol * m, sigma, truncate=3.0) / np.maximum(weight, 1e-6)
    return np.where(m > 0, out, 0.0)


def perfusion_maps(
    series_hu,
    dt_s: float,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    mask=None,
    aif_hu=None,
    n_baseline: int | None = None,
    threshold: float = 0.1,
    oscillation_limit: float | None = OSVD_OSCILLATION_INDEX,
    smooth_mm: float = 3.0,
    vessel_threshold_hu: float = 100.0,
    chunk_voxels: int = 500_000,
    deconvolve=None,
    tmax_from_residue=peak_time_s,
    noise_maximum_off: bool = False,
) -> dict[str, np.ndarray]:
    """CBF, CBV, MTT, Tmax, TTP, MIP and NCCT from a 4D CT perfusion series (X, Y, Z, T) in HU.

    - baseline: the frames before bolus arrival (``n_baseline``, else found from the AIF);
      NCCT is their mean.
    - AIF: ``aif_hu`` (ΔHU per frame) if given, else :func:`select_aif` inside ``mask`` as the frozen phantom
      generator made its maps (``venous_guard=False``; strokelabel.ctp4d selects with the guard).
    - tissue: enhancement smoothed in-plane by ``smooth_mm`` (σ, inside the mask), then
      deconvolved by :func:`deconvolve_bcsvd` (oSVD when ``oscillation_limit`` is set), or by
      ``deconvolve(curves (n, T), aif (T,), dt_s, n_baseline) -> k (n, T)`` when given.
    - with ``noise_maximum_off``, each residue has the expected maximum of its noise taken off
      (``deconvolve_bcsvd(noise_hu=...)``), the frame noise being the median over the slab's tissue curves of the
      standard deviation of their baseline frames (:func:`frame_noise_hu`).
    - Tmax: ``tmax_from_residue(k, dt_s)``, by default the time of k's maximum (:func:`peak_time_s`, what the phantom
      generator's own maps and strokelabel.ctp4d use); :data:`TMAX_ONSET` reads the residue's onset through its known
      truncation (:func:`residue_onset_time_s`: measured, not kept by rule 3); a half-height rise read was measured and not kept
      (scripts/deconvolution_candidates.py, residue_rise_time_s).
    - maps are 0 outside ``mask`` and in vessels (peak enhancement > ``vessel_threshold_hu``).
      ``mask`` defaults to :func:`brain_mask_from_ncct`.

    Works through slabs of about ``chunk_voxels`` voxels to bound memory. Returns float32
    maps (X, Y, Z) plus ``aif`` (ΔHU per frame), ``mask`` and ``n_baseline``.
    """
    series = np.asarray(series_hu)
    if series.ndim != 4:
        raise ValueError(f"a CT perfusion series is 4D (X, Y, Z, T); got shape {series.shape}")
    shape = series.shape[:3]
    mip = mip_hu(series)
    if n_baseline is None:
        # Bolus arrival from a first AIF guess on a two-frame baseline.
        guess = aif_hu
        if guess is None:
            rough = baseline_from_series(series, 2, chunk_voxels)
            inside = brain_mask_from_ncct(rough) if mask is None else np.asarray(mask, bool)
            guess = select_aif_from_series(series, rough, inside, dt_s, chunk_voxels=chunk_voxels, venous_guard=False)
        n_baseline = max(1, bolus_arrival_frame(guess) - 1)
    ncct = baseline_from_series(series, n_baseline, chunk_voxels)
    mask = brain_mask_from_ncct(ncct) if mask is None else np.asarray(mask, dtype=bool)
    if aif_hu is None:  # the phantom generator's derived maps (frozen for issue 23): the selection they were made with
        aif_hu = select_aif_from_series(series, ncct, mask, dt_s, chunk_voxels=chunk_voxels, venous_guard=False)
    aif = np.asarray(aif_hu, dtype=np.float64)

    maps = {name: np.zeros(shape, np.float32) for name in ("cbf", "cbv", "mtt", "tmax", "ttp")}
    for zs in _slabs(series.shape, chunk_voxels):
        m = mask[:, :, zs]
        if not m.any():
            continue
        delta = series[:, :, zs].astype(np.float32) - ncct[:, :, zs, None]
        tissue_mask = m & (delta.max(axis=-1) <= vessel_threshold_hu)
        smooth = smooth_in_plane(delta, tissue_mask, smooth_mm, spacing_mm)
        curves = smooth[tissue_mask]
        del delta, smooth
        truncation = None
        if deconvolve is None:
            noise = frame_noise_hu(curves, n_baseline) if noise_maximum_off else None
            k, truncation = deconvolve_bcsvd(curves, aif, dt_s, threshold=threshold, oscillation_limit=oscillation_limit, noise_hu=noise,
                                             return_thresholds=True)
        else:
            k = deconvolve(curves, aif, dt_s, n_baseline)
            if isinstance(k, tuple):  # (k, the truncation each residue got): a block-circulant SVD from outside
                k, truncation = k
        if tmax_from_residue == TMAX_ONSET:
            # The onset fit needs the truncation each residue got; other deconvolutions' residues are read at their maximum.
            tmax = residue_onset_time_s(k, aif, dt_s, truncation) if truncation is not None else peak_time_s(k, dt_s)
        else:
            tmax = tmax_from_residue(k, dt_s)
        cbf = cbf_from_residue(k)
        cbv = cbv_from_curves(curves, aif, dt_s)
        values = {
            "cbf": cbf,
            "cbv": cbv,
            "mtt": np.clip(mtt_s(cbv, cbf), 0.0, 60.0),
            "tmax": tmax,
            "ttp": ttp_s(curves, dt_s),
        }
        for name, v in values.items():
            chunk = np.zeros(m.shape, np.float32)
            chunk[tissue_mask] = v
            maps[name][:, :, zs] = chunk
    return {**maps, "mip": mip, "ncct": ncct, "aif": aif.astype(np.float32), "mask": mask, "n_baseline": int(n_baseline)}


def reference_from_series(series_hu, ncct_hu, mask, selected, tmax_s, aif_hu, dt_s: float, n_baseline: int,
                          spacing_mm: Sequence[float], smooth_mm: float = 3.0, vessel_threshold_hu: float = 100.0,
                          chunk_voxels: int = 500_000) -> dict:
    """:func:`mean_curve_reference` of the ``selected`` voxels of a 4D series (X, Y, Z, T; ``ncct_hu`` its baseline),
    their tissue curves made exactly as :func:`perfusion_maps` makes them (enhancement, vessels left out, smoothed
    in-plane by ``smooth_mm`` inside ``mask``), aligned by their residue maxima (``tmax_s``, s).

    The mean curve's frame noise is computed, not guessed: the mean of normalised-convolution-smoothed curves is a
    weighted sum of the raw curves, Σ_j c_j x_j / n with c = m · G(selected / G(m)) (G the in-plane Gaussian, m the
    tissue), so its noise is σ · sqrt(Σ c_j²) / n, σ the raw curves' frame noise (:func:`frame_noise_hu`, before
    smoothing); neighbours that share raw voxels count as correlated, as they are."""
    series = np.asarray(series_hu)
    curves, peaks, raw_noise = [], [], []
    weight_power, count = 0.0, 0
    sigma = [smooth_mm / spacing_mm[0], smooth_mm / spacing_mm[1], 0.0]
    for zs in _slabs(series.shape, chunk_voxels):
        m = np.asarray(mask)[:, :, zs]
        if not m.any():
            continue
        delta = series[:, :, zs].astype(np.float32) - np.asarray(ncct_hu)[:, :, zs, None]
        tissue = m & (delta.max(axis=-1) <= vessel_threshold_hu)
        chosen = tissue & np.asarray(selected)[:, :, zs]
        raw_noise.append(delta[tissue][:, : min(max(2, int(n_baseline)), delta.shape[-1])].std(axis=-1, ddof=1))
        if not chosen.any():
            continue
        smooth = smooth_in_plane(delta, tissue, smooth_mm, spacing_mm)
        curves.append(smooth[chosen])
        peaks.append(np.rint(np.asarray(tmax_s)[:, :, zs][chosen] / dt_s).astype(np.int64))
        if smooth_mm > 0:
            t = tissue.astype(np.float64)
            spread = ndimage.gaussian_filter(chosen / np.maximum(ndimage.gaussian_filter(t, sigma, truncate=3.0), 1e-6), sigma, truncate=3.0)
            weight_power += float(((t * spread) ** 2).sum())
        else:
            weight_power += float(chosen.sum())
        count += int(chosen.sum())
    if count == 0:
        raise ValueError("none of the selected voxels is tissue: no reference curve")
    sigma_raw = float(np.median(np.concatenate(raw_noise)))
    noise = sigma_raw * np.sqrt(weight_power) / count
    out = mean_curve_reference(np.concatenate(curves), aif_hu, dt_s, np.concatenate(peaks), noise)
    return {**out, "frame_noise_hu": sigma_raw} if out else {}


def frame_noise_hu(curves_hu, n_baseline: int) -> float:
    """The frame noise (HU) of tissue curves (n, T): the median over the curves of the standard deviation of their
    frames before bolus arrival (at least 2). CT noise is nearly uniform over a slab, and a voxel's 3-5 baseline
    frames are too few to estimate it alone."""
    curves = np.asarray(curves_hu, dtype=np.float64)
    if curves.shape[0] == 0:
        return 0.0
    n = min(max(2, int(n_baseline)), curves.shape[-1])
    return float(np.median(curves[:, :n].std(axis=-1, ddof=1)))


def brain_mask_from_ncct(ncct_hu, low_hu: float = 15.0, high_hu: float = 100.0, bone_hu: float = 300.0) -> np.ndarray:
    """Brain parenchyma of a non-contrast CT: inside the skull ring, between ``low_hu`` and ``high_hu``
    (CSF, below ~15 HU, is left out so its noise makes no perfusion values).

    The skull (> ``bone_hu``) is closed and hole-filled slice by slice; what it encloses,
    minus the bone, is intracranial.
    """
    ncct = np.asarray(ncct_hu, dtype=np.float64)
    bone = ndimage.binary_closing(ncct > bone_hu, structure=np.ones((3, 3, 1), bool), iterations=2)
    inside = np.zeros(ncct.shape, dtype=bool)
    for z in range(ncct.shape[2]):
        inside[:, :, z] = ndimage.binary_fill_holes(bone[:, :, z]) & ~bone[:, :, z]
    return inside & (ncct > low_hu) & (ncct < high_hu)
