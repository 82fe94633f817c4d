"""CT perfusion series for evaluating map computation: families of acquisitions that a real
scanner produces and the generator's default series does not, each with its true maps.

A family varies one thing at a time over the generator's physics (:mod:`strokelabel.phantom.ctp`):

- ``clean``: the generator's series (its noise, uniform frames, exponential residue);
- ``clinical_noise``: frame noise of a low-dose 80 kVp protocol, 8–15 HU;
- ``motion``: the head moving rigidly after the baseline, up to 5 mm and 5° (known transforms);
- ``dispersed``: in the ischemic field (collateral-fed tissue), the arterial curve reaching the
  tissue delayed by a further 1 s and dispersed by an exponential kernel (τ = 1.5 s), as a
  long collateral path does; the rest of the brain is fed as in ``clean``;
- ``nonuniform``: 1 s frames over the first pass, then 2.5 s frames, as clinical protocols space them;
- ``gamma_residue``: a gamma transit-time distribution (residue ≠ the exponential that the
  default series uses and deconvolution is usually tested on).

Every family's venous curve has the arterial curve's area (mass conservation), so a venous
output function can calibrate the AIF as on real scans. The truth is what the generator used:
the flow CBF, CBV, MTT of each voxel and Tmax = the time of the maximum of the residue the
tissue shows (its bolus delay plus, under dispersion, the peak of residue ⊛ kernel). Under
dispersion a deconvolution sees a lower, later residue peak, so its CBF falls below the true flow:
that bias is part of what the ``dispersed`` family measures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strokelabel.phantom.ctp import CurveTable, enhancement_hu, precontrast_hu
from strokelabel.phantom.geometry import Grid
from strokelabel.phantom.patient import Patient
from strokelabel.phantom.render import PARENCHYMA_MIN, patient_pieces, render_chunk


@dataclass(frozen=True)
class CtpFamily:
    """How a family's series departs from the generator's default one."""

    name: str
    noise_hu: tuple[float, float] | None = None  # frame noise drawn in this range; None: the patient's
    motion_mm: float = 0.0  # largest head displacement after the baseline
    motion_deg: float = 0.0  # largest head rotation after the baseline
    dispersion_s: float = 0.0  # time constant of the exponential kernel on the ischemic field's arterial supply
    extra_delay_s: float = 0.0  # added to the ischemic field's bolus delay
    residue_kind: str = "exponential"
    frame_times: str = "uniform"  # "uniform" (the patient's protocol) or "variable" (1 s, then 2.5 s)
    aif_peak_scale: float = 1.0  # bolus strength (weak-bolus and no-contrast cases)
    duration_s: float | None = None  # acquisition length; None: the protocol's


FAMILIES = {
    "clean": CtpFamily("clean"),
    "clinical_noise": CtpFamily("clinical_noise", noise_hu=(8.0, 15.0)),
    "motion": CtpFamily("motion", motion_mm=5.0, motion_deg=5.0),
    "dispersed": CtpFamily("dispersed", dispersion_s=1.5, extra_delay_s=1.0),
    "nonuniform": CtpFamily("nonuniform", frame_times="variable"),
    "gamma_residue": CtpFamily("gamma_residue", residue_kind="gamma"),
}

# The variable protocol: dense frames over the arterial first pass, sparse over the washout.
DENSE_STEP_S, DENSE_UNTIL_S, SPARSE_STEP_S = 1.0, 30.0, 2.5
# Voxels at least this much in the ischemic field get the family's dispersion and extra delay.
COLLATERAL_MEMBERSHIP = 0.5
# Motion starts after this many still frames (the baseline the registration reference is taken from).
STILL_FRAMES = 4


@dataclass
class FamilySeries:
    """A simulated series with its truth on the series' grid (the head's position at frame 0)."""

    family: CtpFamily
    ctp: np.ndarray  # (X, Y, Z, T) int16 HU
    times_s: np.ndarray  # (T,) frame start times
    grid: Grid
    truth: dict  # cbf, cbv, mtt, tmax (float32), parenchyma, brain (tissue evaluated), corepenumbra, lumen
    motion: list  # per frame {"angles_deg": [3], "translation_mm": [3]}: the head's rigid motion
    noise_hu: float


def frame_times_s(patient: Patient, family: CtpFamily) -> np.ndarray:
    dt, n_frames = patient.ctp_protocol["dt_s"], patient.ctp_protocol["n_frames"]
    end = family.duration_s if family.duration_s is not None else (n_frames - 1) * dt
    if family.frame_times == "uniform":
        return np.arange(0.0, end + 1e-6, dt)
    if family.frame_times == "variable":
        dense = np.arange(0.0, DENSE_UNTIL_S, DENSE_STEP_S)
        return np.concatenate([dense, np.arange(DENSE_UNTIL_S, end + 1e-6, SPARSE_STEP_S)])
    raise ValueError(f"unknown frame timing {family.frame_times!r}; expected 'uniform' or 'variable'")


def motion_transforms(n_frames: int, rng: np.random.Generator, max_mm: float, max_deg: float, still: int = STILL_FRAMES) -> list[dict]:
    """Per-frame rigid head motion: still over the baseline, then a few jerks to new positions
    (each of random direction, up to ``max_mm`` and ``max_deg`` from the start), held between them."""
    none = {"angles_deg": [0.0, 0.0, 0.0], "translation_mm": [0.0, 0.0, 0.0]}
    if max_mm <= 0 and max_deg <= 0 or n_frames <= still:
        return [dict(none) for _ in range(n_frames)]
    jerks = np.sort(rng.choice(np.arange(still, n_frames), size=min(3, n_frames - still), replace=False))
    out, current = [], none
    for frame in range(n_frames):
        if frame in jerks:
            current = {"angles_deg": list(_random_vector(rng, max_deg)), "translation_mm": list(_random_vector(rng, max_mm))}
        out.append(current)
    return out


def _random_vector(rng: np.random.Generator, largest: float) -> np.ndarray:
    direction = rng.standard_normal(3)
    return direction / np.linalg.norm(direction) * largest * rng.uniform(0.4, 1.0)


def apply_rigid_motion(frame_hu: np.ndarray, spacing_mm, angles_deg, translation_mm) -> np.ndarray:
    """The frame as the scanner sees it once the head has moved by the rigid transform M (Euler
    angles about the array axes, through the grid centre; then the translation): out(y) = in(M⁻¹ y).
    Registering this frame to the still one recovers M."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(frame_hu, np.float32).transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing_mm])
    motion = sitk.Euler3DTransform()
    motion.SetCenter([(n - 1) / 2.0 * s for n, s in zip(frame_hu.shape, spacing_mm)])
    motion.SetRotation(*np.radians(angles_deg))
    motion.SetTranslation([float(t) for t in translation_mm])
    moved = sitk.Resample(image, image, motion.GetInverse(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32, True)
    return sitk.GetArrayFromImage(moved).transpose(2, 1, 0)


def simulate_family(patient: Patient, grid: Grid, family: CtpFamily | str, seed: int) -> FamilySeries:
    """The 4D series of ``family`` for ``patient`` on ``grid``, with its truth (see the module docstring)."""
    family = FAMILIES[family] if isinstance(family, str) else family
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC7F]))
    times = frame_times_s(patient, family)
    aif_args = {**patient.aif_ctp, "peak_hu": patient.aif_ctp["peak_hu"] * family.aif_peak_scale}
    direct = CurveTable(aif_args, times[-1], family.residue_kind, 0.0, vof_area_matched=True)
    collateral = direct
    if family.dispersion_s > 0 or family.extra_delay_s > 0:
        collateral = CurveTable(aif_args, times[-1], family.residue_kind, family.dispersion_s, vof_area_matched=True)
    noise = patient.noise["ctp_hu"] if family.noise_hu is None else float(rng.uniform(*family.noise_hu))
    pieces = patient_pieces(patient)
    series = np.zeros(grid.shape + (times.size,), np.int16)
    truth = {k: np.zeros(grid.shape, np.float32) for k in ("cbf", "cbv", "mtt", "tmax", "parenchyma", "lumen")}
    truth["corepenumbra"] = np.zeros(grid.shape, np.uint8)
    for index, zs in enumerate(grid.chunks()):
        chunk_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC7F, index]))
        r = render_chunk(patient, grid, zs, pieces)
        fed = r["membership"] >= COLLATERAL_MEMBERSHIP if collateral is not direct else np.zeros(r["cbf"].shape, bool)
        hu = precontrast_hu(r, patient)[..., None] + enhancement_hu({**r, "cbf": np.where(fed, 0.0, r["cbf"])}, direct, times)
        tmax_seen = np.where(fed, r["tmax"] + family.extra_delay_s, r["tmax"])
        if fed.any():
            no_lumen = {k: np.zeros_like(r[k]) for k in ("lumen_artery", "lumen_vein", "lumen_clot")}
            hu += enhancement_hu({**r, **no_lumen, "cbf": np.where(fed, r["cbf"], 0.0), "tmax": tmax_seen}, collateral, times)
        hu += noise * chunk_rng.standard_normal(hu.shape, dtype=np.float32)
        series[:, :, zs] = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
        peak_shift = np.where(fed, collateral.effective_residue_peak(r["mtt"])[0], 0.0)
        for key in ("cbf", "cbv", "mtt"):
            truth[key][:, :, zs] = r[key]
        truth["tmax"][:, :, zs] = np.where(r["cbf"] > 0, tmax_seen + peak_shift, 0.0)
        truth["parenchyma"][:, :, zs] = r["parenchyma"]
        truth["lumen"][:, :, zs] = r["lumen_artery"] + r["lumen_vein"] + r["lumen_clot"]
        truth["corepenumbra"][:, :, zs] = r["corepenumbra"]
    # Tissue to score maps on: mostly parenchyma, no vessel lumen.
    truth["brain"] = (truth["parenchyma"] >= PARENCHYMA_MIN) & (truth["lumen"] < 0.05)
    motion = motion_transforms(times.size, rng, family.motion_mm, family.motion_deg)
    for frame, m in enumerate(motion):
        if any(m["angles_deg"]) or any(m["translation_mm"]):
            moved = apply_rigid_motion(series[..., frame], grid.spacing_mm, m["angles_deg"], m["translation_mm"])
            series[..., frame] = np.clip(np.rint(moved), -1024, 3071).astype(np.int16)
    return FamilySeries(family, series, times, grid, truth, motion, noise)

