"""Spatial building blocks of the MRI appearance: smooth random fields, the coil bias, skull-base
air spaces and their susceptibility field, EPI distortion and drop-out, and the stroke mimics
that made today's models draw lesions where there are none (issue 9: false positives along
the cortical rim and in the temporal lobes/cerebellum).

Everything works on whole volumes on the study grid (X, Y, Z), spacing in mm; the grid's axes
are the scanner's (x right, y anterior, z along B0), so B0 is along axis 2.

EPI susceptibility (why DWI lies at the skull base). Air (χ ≈ +9.4 ppm relative to tissue)
and bone (≈ −2 ppm) perturb B0 by the dipole field ΔB/B0 = F⁻¹[(1/3 − k_z²/k²) F[χ]]. The
off-resonance Δf = γ·B0·ΔB/B0 (Hz) shifts EPI signal along the phase-encode axis by
Δf / (bandwidth per pixel) pixels: where neighbouring voxels shift together the signal piles up
(bright), where they spread it stretches (dark); the field gradient across a thick slice
dephases it (drop-out, |sinc(∂f/∂z · Δz · TE)|). b = 0 and b = 1000 share the distortion, but
b = 1000 also carries an eddy-current shift, and where the signal dropped out both are noise:
the fitted ADC is wrong there, as on real scans near the sinuses and mastoids.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import legendre
from scipy import ndimage

GAMMA_HZ_PER_T_PPM = 42.577  # proton gyromagnetic ratio: Hz per ppm per tesla
CHI_AIR_PPM = 9.4  # air relative to water/tissue
CHI_BONE_PPM = -2.0  # cortical bone relative to tissue


def smooth_field(shape, spacing_mm, length_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A zero-mean, unit-variance Gaussian random field with correlation length ``length_mm``."""
    white = rng.standard_normal(tuple(shape)).astype(np.float32)
    sigma = [max(length_mm / s, 0.3) for s in spacing_mm]
    field = ndimage.gaussian_filter(white, sigma, mode="wrap")
    return ((field - field.mean()) / max(float(field.std()), 1e-6)).astype(np.float32)


def bias_field(shape, amplitude: float, rng: np.random.Generator, degree: int = 3) -> np.ndarray:
    """Multiplicative coil sensitivity exp(Σ c_ijk P_i(x) P_j(y) P_k(z)) (MONAI RandBiasField's model),
    scaled so its largest deviation from 1 is ``amplitude`` (0.25: from 0.8 to 1.25)."""
    if amplitude <= 0:
        return np.ones(shape, np.float32)
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    coeff = rng.uniform(-1.0, 1.0, (degree + 1,) * 3)
    mask = np.add.outer(np.add.outer(np.arange(degree + 1), np.arange(degree + 1)), np.arange(degree + 1)) <= degree
    coeff = coeff * mask
    coeff[0, 0, 0] = 0.0
    poly = legendre.leggrid3d(*axes, coeff)
    poly = poly / max(float(np.abs(poly).max()), 1e-6) * np.log1p(amplitude)
    return np.exp(poly).astype(np.float32)


def distance_mm(mask: np.ndarray, spacing_mm) -> np.ndarray:
    """Distance (mm) of every voxel to the nearest voxel of ``mask`` (0 inside)."""
    if not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    return ndimage.distance_transform_edt(~mask, sampling=spacing_mm).astype(np.float32)


def signed_distance_mm(mask: np.ndarray, spacing_mm) -> np.ndarray:
    """Signed distance (mm) to the boundary of ``mask``: negative inside, positive outside."""
    return distance_mm(mask, spacing_mm) - distance_mm(~mask, spacing_mm)


def _ellipsoid_fraction(points, centre, semi_axes, edge_mm: float) -> np.ndarray:
    q = (points - np.asarray(centre)) / np.asarray(semi_axes)
    rho = np.sqrt((q**2).sum(axis=-1))
    distance = (rho - 1.0) * float(np.min(semi_axes))
    return np.clip(0.5 - distance / edge_mm, 0.0, 1.0)


def skull_base_air(head_mm: np.ndarray, parenchyma: np.ndarray, icv: np.ndarray, scale: float, edge_mm: float,
                   brain_semi_axes_mm=None) -> np.ndarray:
    """Air fraction of the paranasal sinuses and mastoid air cells, placed from the brain's extent
    in the head frame (u right, v anterior, w superior): frontal and ethmoid sinuses under the
    orbitofrontal cortex, the sphenoid sinus under the middle, mastoid cells under the temporal
    lobes. For anatomies that do not model them; never inside the intracranial space.

    ``brain_semi_axes_mm`` (brain centred at the head origin) when the anatomy has them, else
    the extent of the parenchyma seen on the grid."""
    if brain_semi_axes_mm is not None:
        a, b, c = np.asarray(brain_semi_axes_mm, dtype=np.float64)
        centre = np.zeros(3)
    else:
        brain = head_mm[parenchyma > 0.5]
        if brain.size == 0:
            return np.zeros(parenchyma.shape, np.float32)
        low, high = brain.min(axis=0), brain.max(axis=0)
        a, b, c = (high - low) / 2.0
        centre = (high + low) / 2.0
    s = float(scale)
    cavities = [
        # (centre: brain half-extents from the brain centre, plus mm beyond the brain surface; semi-axes mm)
        ((0.0, 1.0, -0.25), (0.0, 14.0, 0.0), (14.0 * s, 8.0 * s, 12.0 * s)),  # frontal sinus
        ((0.0, 0.62, -0.785), (0.0, 0.0, -14.0), (10.0 * s, 16.0 * s, 9.0 * s)),  # ethmoid cells
        ((0.0, 0.2, -1.0), (0.0, 0.0, -15.0), (13.0 * s, 12.0 * s, 11.0 * s)),  # sphenoid sinus
        ((-0.72, -0.30, -0.63), (0.0, 0.0, -14.0), (10.0 * s, 14.0 * s, 10.0 * s)),  # mastoid cells, both sides
        ((0.72, -0.30, -0.63), (0.0, 0.0, -14.0), (10.0 * s, 14.0 * s, 10.0 * s)),
    ]
    air = np.zeros(parenchyma.shape, np.float32)
    # Only points outside the intracranial space, below the brain's middle, can hold them.
    candidates = (icv < 1.0) & (head_mm[..., 2] < centre[2])
    points = head_mm[candidates]
    values = np.zeros(len(points), np.float32)
    for offset, beyond_mm, semi in cavities:
        point = centre + np.asarray(offset) * (a, b, c) + np.asarray(beyond_mm)
        values = np.maximum(values, _ellipsoid_fraction(points, point, semi, edge_mm))
    air[candidates] = values * (1.0 - icv[candidates])
    return air


def susceptibility_field_ppm(chi_ppm: np.ndarray, spacing_mm, air_above: bool = True) -> np.ndarray:
    """ΔB/B0 (ppm) of a susceptibility map, B0 along axis 2 (dipole kernel in k-space).

    Padded by a quarter of the size on every side: with the edge values (the neck goes on
    below the volume), air above it (``air_above``: the volume holds the top of the head)."""
    from scipy import fft

    pad = [(n // 4, n // 4) for n in chi_ppm.shape]
    chi = np.pad(chi_ppm.astype(np.float32), pad, mode="edge")
    if air_above:
        chi[:, :, pad[2][0] + chi_ppm.shape[2]:] = CHI_AIR_PPM
    shape = chi.shape
    k = np.meshgrid(np.fft.fftfreq(shape[0], spacing_mm[0]), np.fft.fftfreq(shape[1], spacing_mm[1]),
                    np.fft.rfftfreq(shape[2], spacing_mm[2]), indexing="ij", sparse=True)
    k2 = k[0] ** 2 + k[1] ** 2 + k[2] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(k2 > 0, 1.0 / 3.0 - k[2] ** 2 / k2, 0.0).astype(np.float32)
    field = fft.irfftn(fft.rfftn(chi) * kernel, s=shape).astype(np.float32)
    return field[tuple(slice(p[0], p[0] + n) for p, n in zip(pad, chi_ppm.shape))]


def dropout(field_hz: np.ndarray, slice_mm: float, te_s: float) -> np.ndarray:
    """Signal left after through-plane dephasing across a slice: |sinc(∂f/∂z · Δz · TE)|."""
    gradient = np.gradient(field_hz, slice_mm, axis=2)  # Hz per mm along z
    return np.abs(np.sinc(gradient * slice_mm * te_s)).astype(np.float32)


def epi_shift(volume: np.ndarray, shift_px: np.ndarray, axis: int) -> np.ndarray:
    """Move each voxel's signal ``shift_px`` voxels along ``axis`` (linear splatting): signal is
    conserved, so converging shifts pile up and diverging ones stretch."""
    vol = np.moveaxis(np.asarray(volume, np.float32), axis, -1)
    shift = np.moveaxis(np.asarray(shift_px, np.float32), axis, -1)
    n = vol.shape[-1]
    target = np.arange(n, dtype=np.float32) + shift
    lower = np.floor(target)
    weight = target - lower
    lower = lower.astype(np.int64)
    rows = np.arange(vol.size // n).reshape(vol.shape[:-1])[..., None] * n
    out = np.zeros(vol.size, np.float64)
    for index, w in ((lower, 1.0 - weight), (lower + 1, weight)):
        ok = (index >= 0) & (index < n)
        out += np.bincount((rows + index)[ok], weights=(vol * w)[ok], minlength=vol.size)
    return np.moveaxis(out.reshape(vol.shape).astype(np.float32), -1, axis)


def warp_nearest(volume: np.ndarray, shift_px: np.ndarray, axis: int) -> np.ndarray:
    """Labels (or masks) moved with the signal: value at y' taken from y' − shift(y') (nearest)."""
    vol = np.moveaxis(np.asarray(volume), axis, -1)
    shift = np.moveaxis(np.asarray(shift_px, np.float32), axis, -1)
    n = vol.shape[-1]
    source = np.clip(np.rint(np.arange(n, dtype=np.float32) - shift), 0, n - 1).astype(np.int64)
    return np.moveaxis(np.take_along_axis(vol, source, axis=-1), -1, axis)


def cortical_rim(gm: np.ndarray, csf: np.ndarray, depth_mm: np.ndarray, spacing_mm, width_mm: float) -> np.ndarray:
    """0..1 weight of the cortical ribbon next to the subarachnoid CSF (``depth_mm``, the depth
    below the skull's inner surface, under 15 mm: the caudate by the ventricles is no "cortical" rim)."""
    near_surface = depth_mm < 15.0
    sigma = [width_mm / s for s in spacing_mm]
    contact = ndimage.gaussian_filter(csf.astype(np.float32), sigma)
    weight = np.clip(contact / 0.25, 0.0, 1.0) * np.clip(gm, 0.0, 1.0) * near_surface
    return weight.astype(np.float32)


# Atlas regions (strokelabel.phantom.anatomy.REGIONS, 1-based) of each regional-brightness zone, and
# whether the zone is the lower part of them only (temporal and orbitofrontal: below the brain's middle).
REGIONAL_ZONES = {"temporal": ((7, 8), True), "frontal": ((1, 2, 5, 6), True), "cerebellar": ((15,), False)}


def regional_t2(atlas: np.ndarray, parenchyma: np.ndarray, spacing_mm, gains: dict, side_ratio: float, smoothing_mm: float,
                rng: np.random.Generator) -> np.ndarray:
    """Multiplicative T2 gain minus 1 (0 = none) over the ``gains`` zones (``REGIONAL_ZONES``), smooth,
    on parenchyma. Zones with a left and a right region get the gain on one side and ``side_ratio``
    of it on the other (which side drawn from ``rng``): roughly, not exactly, bilateral."""
    out = np.zeros(atlas.shape, np.float32)
    sigma = [smoothing_mm / s for s in spacing_mm]
    brain_z = np.flatnonzero(parenchyma.sum(axis=(0, 1)) > 0)
    middle = 0.5 * (brain_z.min() + brain_z.max()) if brain_z.size else atlas.shape[2] / 2
    below = np.clip((middle - np.arange(atlas.shape[2])) / max(1.0, 0.25 * (np.ptp(brain_z) if brain_z.size else 1)), 0.0, 1.0)
    for zone, gain in gains.items():
        regions, lower_only = REGIONAL_ZONES[zone]
        if gain <= 1.0:
            continue
        weak = int(rng.integers(2))
        for i, region in enumerate(regions):
            mask = (atlas == region).astype(np.float32)
            if lower_only:
                mask *= below[None, None, :]
            side = side_ratio if (len(regions) > 1 and i % 2 == weak) else 1.0
            out += (gain - 1.0) * side * ndimage.gaussian_filter(mask, sigma)
    return (out * np.clip(parenchyma, 0.0, 1.0)).astype(np.float32)


def place_blobs(candidates: np.ndarray, avoid: np.ndarray, count: int, radius_mm: float, spacing_mm, rng: np.random.Generator,
                margin_mm: float = 4.0) -> list[np.ndarray]:
    """Up to ``count`` blob centres (voxel indices) among ``candidates``, at least radius + margin
    from ``avoid`` (the truth lesion) and from each other."""
    from scipy.spatial import cKDTree

    spacing = np.asarray(spacing_mm, dtype=np.float64)
    index = np.argwhere(candidates)
    if len(index) == 0:
        return []
    index = index[rng.permutation(len(index))[:4000]]  # a random sample is enough to choose from
    if avoid.any():
        near, _ = cKDTree(np.argwhere(avoid) * spacing).query(index * spacing, distance_upper_bound=radius_mm + margin_mm)
        index = index[~np.isfinite(near)]
    centres: list[np.ndarray] = []
    for _ in range(count):
        if len(index) == 0:
            break
        centre = index[rng.integers(len(index))]
        centres.append(centre)
        index = index[np.linalg.norm((index - centre) * spacing, axis=1) > 2 * radius_mm + margin_mm]
    return centres


def shifted_mask(mask: np.ndarray, offset_mm, spacing_mm, sigma_mm: float = 3.0) -> np.ndarray:
    """``mask`` with its boundary moved outwards by ``offset_mm`` (a number or a field; negative
    shrinks): a level set of the Gaussian-blurred mask, for a plane boundary Φ(−d/σ) at distance d."""
    from scipy.special import ndtr

    blurred = ndimage.gaussian_filter(mask.astype(np.float32), [sigma_mm / s for s in spacing_mm])
    level = ndtr(-np.asarray(offset_mm, dtype=np.float32) / sigma_mm)
    return (blurred > np.clip(level, 1e-4, 1 - 1e-4)) & (blurred > 1e-4)


def blob_fraction(shape, centres, radius_mm: float, spacing_mm, edge_mm: float, wobble: np.ndarray | None = None) -> np.ndarray:
    """Soft balls of ``radius_mm`` at ``centres`` (voxel indices); ``wobble`` (mm) roughens their surface."""
    out = np.zeros(shape, np.float32)
    spacing = np.asarray(spacing_mm)
    for centre in centres:
        reach = np.ceil((radius_mm + 2 * edge_mm + 6.0) / spacing).astype(int)
        lo = np.maximum(np.asarray(centre) - reach, 0)
        hi = np.minimum(np.asarray(centre) + reach + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1)
        d = np.linalg.norm((grid - centre) * spacing, axis=-1) - radius_mm
        if wobble is not None:
            d = d + wobble[box]
        out[box] = np.maximum(out[box], np.clip(0.5 - d / edge_mm, 0.0, 1.0))
    return out


def ventricles(csf: np.ndarray, depth_mm: np.ndarray) -> np.ndarray:
    """CSF deep inside the intracranial space (``depth_mm`` below its surface over 12 mm): the ventricles."""
    return (csf > 0.5) & (depth_mm > 12.0)


def wmh_pattern(wm: np.ndarray, vents: np.ndarray, grade: int, spacing_mm, rng: np.random.Generator) -> np.ndarray:
    """White-matter hyperintensity fraction (Fazekas-like grade 1-3): periventricular caps and
    rims growing with the grade, and deep patches thresholded from a smooth random field."""
    near = distance_mm(vents, spacing_mm)
    rim_mm = {1: 3.0, 2: 6.0, 3: 10.0}[grade]
    texture = smooth_field(wm.shape, spacing_mm, 4.0, rng)
    periventricular = np.clip((rim_mm + 2.0 * texture - near) / 2.0, 0.0, 1.0)
    deep = smooth_field(wm.shape, spacing_mm, 3.0, rng)
    threshold = {1: 2.6, 2: 2.2, 3: 1.8}[grade]
    patches = np.clip((deep - threshold) / 0.3, 0.0, 1.0)
    return (np.maximum(periventricular, patches) * np.clip(wm, 0.0, 1.0) * (wm > 0.3)).astype(np.float32)


def kspace_truncate(volume: np.ndarray, fraction: float, taper: float = 0.5) -> np.ndarray:
    """Keep the central ``fraction`` of in-plane k-space (a matrix acquired smaller than it is
    reconstructed): blur and Gibbs ringing at sharp edges (brain/CSF, skull). The kept band is
    tapered over its outer ``taper`` part (a Tukey window, as scanners filter k-space), so the
    ringing stays at strong edges instead of striping the whole brain."""
    if fraction >= 0.999:
        return volume
    spectrum = np.fft.fft2(volume, axes=(0, 1))
    window = np.ones(volume.shape[:2], np.float32)
    for axis, n in enumerate(volume.shape[:2]):
        r = np.abs(np.fft.fftfreq(n)) / (0.5 * fraction)  # 0 at the centre, 1 at the band's edge
        w = np.where(r <= 1 - taper, 1.0, 0.5 * (1 + np.cos(np.pi * (r - (1 - taper)) / max(taper, 1e-6))))
        w = np.where(r <= 1, w, 0.0).astype(np.float32)
        window *= w[:, None] if axis == 0 else w[None, :]
    return np.real(np.fft.ifft2(spectrum * window[..., None], axes=(0, 1))).astype(np.float32)
