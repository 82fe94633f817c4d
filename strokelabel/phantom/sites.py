"""Where focal lesions can lie, found by probing an anatomy (either family) with random points:
cortex, deep perforator territories, the pons, deep white matter, arterial border zones.

Probing uses only what every anatomy offers (``tissue_fractions``, ``territory_distances_mm``,
``bounds_mm``), so the focal scenarios (lacunes, showers, border-zone and small cortical
infarcts, old infarcts) work on both families.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strokelabel.phantom.anatomy import region_id
from strokelabel.phantom.geometry import segment_distance_mm

PROBES = 8000
CORTICAL_TERRITORIES = ("ACA", "MCA-superior", "MCA-inferior", "PCA")
PERFORATOR_TERRITORIES = ("MCA-deep", "AChA", "thalamic")
# Arterial border zones (pairs of territories of one side) where hypoperfusion infarcts.
BORDER_ZONES = (("ACA", "MCA-superior"), ("MCA-superior", "PCA"), ("MCA-inferior", "PCA"))


@dataclass(frozen=True, eq=False)
class Sites:
    """Probe points inside the brain (head mm) with their tissue and territory."""

    points_mm: np.ndarray  # (n, 3)
    gm: np.ndarray
    wm: np.ndarray
    region: np.ndarray  # atlas id 1..15
    distances: np.ndarray  # (n, 15) territory distances
    radius: np.ndarray  # ellipsoidal radius in the brain's box: 0 at its centre, 1 at its faces

    @property
    def parenchyma(self) -> np.ndarray:
        return self.gm + self.wm

    def in_regions(self, names, side: str | None = None) -> np.ndarray:
        sides = ("L", "R") if side is None else (side,)
        ids = [region_id(f"{n}-{s}") for n in names for s in sides]
        return np.isin(self.region, ids)


def probe_sites(anatomy, rng: np.random.Generator, n: int = PROBES) -> Sites:
    lo, hi = anatomy.bounds_mm
    points = rng.uniform(lo, hi, (n, 3))
    f = anatomy.tissue_fractions(points, 1.0)
    keep = (f["gm"] + f["wm"] >= 0.5) & (f["icv"] >= 0.99)
    points = points[keep]
    distances = anatomy.territory_distances_mm(points)
    radius = np.linalg.norm((points - 0.5 * (lo + hi)) / (0.5 * (hi - lo)), axis=1)
    return Sites(points, f["gm"][keep], f["wm"][keep], np.argmin(distances, axis=1) + 1, distances, radius)


PERIPHERY = 0.6  # grey matter this far out is cortex, not deep grey (the caudate tail, the pulvinar)


def cortex(sites: Sites, territories=CORTICAL_TERRITORIES, side: str | None = None) -> np.ndarray:
    """Cortical grey matter of the given territories."""
    return (sites.gm >= 0.6) & (sites.radius >= PERIPHERY) & sites.in_regions(territories, side)


def subcortex(sites: Sites, territories=CORTICAL_TERRITORIES, side: str | None = None) -> np.ndarray:
    """Cortex and the white matter beneath it, of the given territories."""
    return (sites.parenchyma >= 0.8) & sites.in_regions(territories, side)


def deep_perforator(sites: Sites, side: str | None = None) -> np.ndarray:
    """Basal ganglia, internal capsule and thalamus: the lenticulostriate, anterior choroidal and thalamic territories."""
    return (sites.parenchyma >= 0.8) & sites.in_regions(PERFORATOR_TERRITORIES, side)


def pons(sites: Sites, basilar_mm: np.ndarray, min_offset_mm: float = 0.0) -> np.ndarray:
    """Paramedian pons: vertebrobasilar tissue 4-20 mm behind the basilar artery, at least
    ``min_offset_mm`` off the midline (a lesion must not cross it)."""
    near = np.full(len(sites.points_mm), np.inf)
    for a, b in zip(basilar_mm[:-1], basilar_mm[1:]):
        near = np.minimum(near, segment_distance_mm(sites.points_mm, a, b))
    vb = sites.region == region_id("vertebrobasilar")
    return vb & (sites.parenchyma >= 0.8) & (near > 4.0) & (near < 20.0) & (np.abs(sites.points_mm[:, 0]) >= min_offset_mm)


def deep_white_matter(sites: Sites, side: str | None = None) -> np.ndarray:
    """Centrum semiovale and periventricular white matter of the supratentorial territories."""
    return (sites.wm >= 0.8) & sites.in_regions(CORTICAL_TERRITORIES + ("MCA-deep",), side)


def border_zone(sites: Sites, pair, side: str, width_mm: float = 4.0) -> np.ndarray:
    """White matter within ``width_mm`` of the border between the two territories of ``pair``."""
    a, b = (region_id(f"{n}-{side}") - 1 for n in pair)
    nearest_two = np.sort(sites.distances, axis=1)[:, :2]
    pair_is_nearest = np.isin(np.argsort(sites.distances, axis=1)[:, :2], [a, b]).all(axis=1)
    gap = 0.5 * (nearest_two[:, 1] - nearest_two[:, 0])
    return (sites.wm >= 0.7) & pair_is_nearest & (gap < width_mm)
