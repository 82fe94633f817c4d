"""The occlusion and the tissue it starves.

A territorial scenario (large-vessel ICA-T or M1, medium M2/A2/P2, or a small embolic cortical
branch) places a clot in a vessel of one hemisphere. The tissue that vessel feeds (its atlas
territories, or a small cortical field around an embolic branch's end) becomes hypoperfused.
A focal scenario makes small fields instead ("blobs": spheroids of radius r stretched k-fold
along a random axis, so that they are not all round):

- ``lacunar``: one deep infarct of 3-15 mm in the basal ganglia, internal capsule, thalamus
  or paramedian pons, stretched along the vertical perforators (no clot to see on CTA);
- ``shower``: 2-12 embolic infarcts of 2-10 mm, cortical and subcortical, in one territory or
  scattered over both hemispheres (no clot in a named vessel);
- ``watershed``: a chain of 2-7 infarcts of 6-16 mm in the deep white matter along the border
  zone between ACA and MCA or MCA and PCA (hypoperfusion, no clot);
- ``cortical``: 1-3 cortical infarcts of 5-18 mm near the end of one cortical branch, which
  holds a small clot.

Focal fields are sharp-edged and severe, so small lesions are mostly core with little penumbra.
No field may touch the mirror image of another (or of itself): the truth compares CBF with
the mirror point, which must be healthy. For each field:

- ``depth`` δ (mm) inside the field: distance to the field's border (Voronoi border between
  territories, or a sphere for embolic fields); leptomeningeal collaterals enter from that
  border, so tissue deep in the field is worst off. End-artery (perforator) territories of an
  occluded M1/ICA get no collaterals at all.
- ischemia I = m · clip(S · z, 0, 1), with m the field membership (soft over ~2.5 mm), z =
  1 − exp(−δ/λ) the depth term and S the severity (collaterals, time since onset).
- CBF factor  q_f = 1 − (1 − q_min) · I  (relative to the same tissue unaffected)
- CBV factor  q_v = clip(0.25 + 2.2 q_f, 0.25, 1) · (1 + 0.1 m)  (autoregulatory vasodilation
  keeps or raises CBV in the penumbra; CBV collapses in the core)
- extra delay m · D · (0.55 + 0.45 z) (s) of the bolus arriving through collaterals.

For blobs, δ_i = r_i − √(|p − c_i|² − (1 − 1/k_i²)((p − c_i)·a_i)²) (r_i − the stretched
distance to the centre), δ the deepest, and z = max over blobs of 1 − exp(−δ_i / (ratio · r_i)).

Scenario mixes: the ellipsoid family keeps its own (``SCENARIOS``); the template family draws
like ISLES'22 (many small and scattered lesions under 10 mL, some large territorial ones),
``TEMPLATE_MIX``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strokelabel.phantom import sites as lesion_sites
from strokelabel.phantom.anatomy import REGIONS, region_id, territory_depth_mm
from strokelabel.phantom.vessels import Clot, VesselTree

# scenario: (probability, severity class)
SCENARIOS = {
    "ICA-T": (0.08, "large-vessel"),
    "M1": (0.22, "large-vessel"),
    "M2": (0.20, "medium-vessel"),
    "A2": (0.07, "medium-vessel"),
    "P2": (0.08, "medium-vessel"),
    "embolic": (0.35, "small-embolic"),
}
MEMBERSHIP_EDGE_MM = 2.5
EMBOLIC_TERRITORY_WEIGHT = {"MCA-superior": 0.35, "MCA-inferior": 0.35, "ACA": 0.1, "PCA": 0.2}
# Focal scenarios: severity class.
FOCAL_SCENARIOS = {"lacunar": "small-vessel", "shower": "small-embolic", "watershed": "hemodynamic", "cortical": "small-embolic"}
SEVERITY_CLASS = {**{name: cls for name, (_, cls) in SCENARIOS.items()}, **FOCAL_SCENARIOS}
# The template family's mix (probabilities): 45 % focal lesions (lacunar, shower, watershed,
# cortical; almost all under 10 mL) and 55 % territorial or single embolic ones, like ISLES'22.
TEMPLATE_MIX = {
    "ICA-T": 0.05, "M1": 0.12, "M2": 0.14, "A2": 0.03, "P2": 0.06, "embolic": 0.15,
    "lacunar": 0.10, "shower": 0.13, "watershed": 0.08, "cortical": 0.14,
}  # fmt: skip
ELLIPSOID_MIX = {name: p for name, (p, _) in SCENARIOS.items()}
FOCAL_EDGE_MM = {"lacunar": 1.0, "shower": 1.0, "watershed": 1.5, "cortical": 1.0}
FOCAL_DELAY_S = {"lacunar": (3.0, 7.0), "shower": (3.0, 7.0), "watershed": (5.0, 9.0), "cortical": (4.0, 8.0)}
BLOB_DEPTH_RATIO = 0.3
MIRROR_CLEARANCE_EDGES = 3.0  # a blob keeps this many membership edges away from any blob's mirror image
SHOWER_TERRITORIES = {("MCA-superior", "MCA-inferior"): 0.7, ("ACA",): 0.1, ("PCA",): 0.2}
BORDER_ZONE_WEIGHT = {lesion_sites.BORDER_ZONES[0]: 0.4, lesion_sites.BORDER_ZONES[1]: 0.3, lesion_sites.BORDER_ZONES[2]: 0.3}


@dataclass(frozen=True)
class Ischemia:
    scenario: str
    severity_class: str
    side: str  # L or R: the patient's side of the occlusion (of the largest blob)
    clot: Clot | None  # None: no clot in a vessel of the tree (lacunar, shower, watershed)
    clot_radius_mm: float
    affected_regions: tuple[int, ...]  # atlas ids of the territories fed (empty for embolic fields)
    end_artery_regions: tuple[int, ...]  # territories without collaterals
    spared_vessels: tuple[str, ...]  # downstream vessels that still fill normally (via ACom)
    blob_centre_mm: tuple[float, float, float] | None  # embolic field centre (head mm)
    blob_radius_mm: float
    depth_scale_mm: float  # λ (mm); for focal blobs the ratio λ_i / r_i
    severity: float  # S
    min_rcbf: float  # q_min
    extra_delay_s: float  # D
    collateral_grade: float  # 0 poor .. 1 good
    collateral_delay_s: float  # late filling of the arteries beyond the clot
    collateral_amplitude: float
    blobs: tuple[tuple[float, ...], ...] = ()  # focal fields: centre (head mm), radius r, axis a (3), stretch k
    membership_edge_mm: float = MEMBERSHIP_EDGE_MM
    bilateral: bool = False
    site: str = ""  # where a focal lesion lies

    @property
    def uses_territories(self) -> bool:
        return not self.blobs and self.blob_centre_mm is None

    def describe(self) -> dict:
        clot = self.clot
        if self.blobs:
            territory = [REGIONS[r - 1] for r in self.affected_regions]
        else:
            territory = [REGIONS[r - 1] for r in self.affected_regions] or ["cortical field of " + clot.vessel]
        out = {
            "scenario": self.scenario,
            "severity_class": self.severity_class,
            "side": {"L": "left", "R": "right"}[self.side],
            "occluded_vessel": clot.vessel if clot else None,
            "clot_start_mm": round(clot.start_mm, 2) if clot else None,
            "clot_length_mm": round(clot.length_mm, 2) if clot else 0.0,
            "clot_diameter_mm": round(2 * self.clot_radius_mm, 2) if clot else 0.0,
            "occluded_territory": territory,
            "occluded_territory_ids": list(self.affected_regions),
            "end_artery_territory": [REGIONS[r - 1] for r in self.end_artery_regions],
            "embolic_field_centre_head_mm": None if self.blob_centre_mm is None else [round(v, 2) for v in self.blob_centre_mm],
            "embolic_field_radius_mm": round(self.blob_radius_mm, 2),
            "depth_scale_mm": round(self.depth_scale_mm, 2),
            "severity": round(self.severity, 3),
            "min_rcbf": round(self.min_rcbf, 3),
            "extra_delay_s": round(self.extra_delay_s, 2),
            "collateral_grade": round(self.collateral_grade, 3),
            "collateral_delay_s": round(self.collateral_delay_s, 2),
            "collateral_amplitude": round(self.collateral_amplitude, 3),
        }
        if self.blobs:
            out.update(
                site=self.site,
                bilateral=self.bilateral,
                lesions=[{"centre_head_mm": [round(v, 2) for v in b[:3]], "radius_mm": round(b[3], 2), "axis": [round(v, 3) for v in b[4:7]], "stretch": round(b[7], 3)} for b in self.blobs],
            )
        return out


def make_ischemia(rng: np.random.Generator, tree: VesselTree, anatomy, onset_min: float, mix: dict | None = None, scenario: str | None = None) -> Ischemia:
    """The occlusion of a patient: ``scenario`` drawn from ``mix`` (default: the ellipsoid
    family's), or the one given."""
    if scenario is None:
        mix = ELLIPSOID_MIX if mix is None else mix
        names = list(mix)
        scenario = names[rng.choice(len(names), p=[mix[n] for n in names])]
    elif scenario not in SEVERITY_CLASS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {tuple(SEVERITY_CLASS)}")
    severity_class = SEVERITY_CLASS[scenario]
    side = "L" if rng.random() < 0.5 else "R"
    rid = lambda name: region_id(f"{name}-{side}")  # noqa: E731
    collateral = float(rng.uniform(0.0, 1.0))
    if scenario in FOCAL_SCENARIOS:
        return _focal_ischemia(rng, scenario, side, collateral, tree, anatomy)
    time_factor = float(np.clip(onset_min / 360.0, 0.2, 1.5))
    severity = (0.9 + 1.0 * (1 - collateral)) * (0.8 + 0.35 * time_factor)
    extra_delay = {"large-vessel": rng.uniform(8.0, 14.0), "medium-vessel": rng.uniform(7.0, 12.0), "small-embolic": rng.uniform(7.0, 11.0)}[severity_class]
    extra_delay += 2.0 * (1 - collateral)
    end_arteries: tuple[int, ...] = ()
    spared: tuple[str, ...] = ()
    blob, blob_radius = None, 0.0
    if scenario == "ICA-T":
        vessel = tree.vessels[f"ICA-{side}"]
        length = rng.uniform(5.0, 10.0)
        start = vessel.length_mm - length - rng.uniform(0.0, 2.0)
        regions = [rid("MCA-superior"), rid("MCA-inferior"), rid("MCA-deep"), rid("AChA")]
        end_arteries = (rid("MCA-deep"), rid("AChA"))
        if rng.random() < 0.6:  # a patent ACom feeds the ipsilateral ACA from the other side
            spared = (f"A1-{side}", f"A2-{side}", *[n for n in tree.vessels if n.startswith(f"ACA-{side}-branch")])
        else:
            regions.append(rid("ACA"))
        spared = spared + (f"PCom-{side}",)
    elif scenario == "M1":
        vessel = tree.vessels[f"M1-{side}"]
        length = rng.uniform(4.0, 9.0)
        lsa_origin = float(np.min(np.linalg.norm(vessel.points_mm - tree.vessels[f"LSA-{side}"].points_mm[0], axis=1)))
        lsa_at = _arc_length_of(vessel.points_mm, tree.vessels[f"LSA-{side}"].points_mm[0]) if lsa_origin < 8 else 10.0
        if rng.random() < 0.6:
            start = rng.uniform(1.0, 3.0)
            regions = [rid("MCA-superior"), rid("MCA-inferior"), rid("MCA-deep")]
            end_arteries = (rid("MCA-deep"),)
        else:
            start = lsa_at + rng.uniform(2.0, 4.0)
            regions = [rid("MCA-superior"), rid("MCA-inferior")]
            spared = (f"LSA-{side}",)
        length = min(length, vessel.length_mm - start - 1.0)
    elif scenario in ("M2", "A2", "P2"):
        name, territory = {
            "M2": ("M2-superior" if rng.random() < 0.5 else "M2-inferior", None),
            "A2": ("A2", "ACA"),
            "P2": ("P2", "PCA"),
        }[scenario]
        territory = territory or ("MCA-superior" if name == "M2-superior" else "MCA-inferior")
        vessel = tree.vessels[f"{name}-{side}"]
        start = rng.uniform(3.0, 12.0) if scenario != "A2" else rng.uniform(12.0, 35.0)
        length = rng.uniform(3.0, 7.0)
        regions = [rid(territory)]
    else:
        branches = sorted(n for n in tree.vessels if "-branch" in n and n.split("-branch")[0].endswith(f"-{side}"))
        # Emboli go mostly where the flow goes: the MCA.
        weights = np.array([EMBOLIC_TERRITORY_WEIGHT[n.split(f"-{side}-branch")[0]] for n in branches])
        vessel = tree.vessels[branches[rng.choice(len(branches), p=weights / weights.sum())]]
        length = rng.uniform(2.0, 4.0)
        start = rng.uniform(0.3, 0.6) * vessel.length_mm
        regions = []
        blob = tuple(float(v) for v in vessel.points_mm[-1])
        blob_radius = float(rng.uniform(10.0, 22.0))
    depth_scale = {"large-vessel": rng.uniform(16.0, 26.0), "medium-vessel": rng.uniform(9.0, 15.0), "small-embolic": blob_radius / 3.0}[severity_class]
    return Ischemia(
        scenario=scenario,
        severity_class=severity_class,
        side=side,
        clot=Clot(vessel.name, float(start), float(length)),
        clot_radius_mm=vessel.radius_mm,
        affected_regions=tuple(sorted(regions)),
        end_artery_regions=tuple(sorted(end_arteries)),
        spared_vessels=spared,
        blob_centre_mm=blob,
        blob_radius_mm=blob_radius,
        depth_scale_mm=float(depth_scale),
        severity=float(severity),
        min_rcbf=float(rng.uniform(0.03, 0.12)),
        extra_delay_s=float(extra_delay),
        collateral_grade=collateral,
        collateral_delay_s=float(extra_delay * rng.uniform(0.7, 1.0)),
        collateral_amplitude=float(0.25 + 0.6 * collateral),
    )


def _focal_ischemia(rng: np.random.Generator, scenario: str, side: str, collateral: float, tree: VesselTree, anatomy) -> Ischemia:
    sites = lesion_sites.probe_sites(anatomy, rng)
    edge = FOCAL_EDGE_MM[scenario]
    clot, clot_radius, bilateral = None, 0.0, False
    if scenario == "lacunar":
        radius = float(np.exp(rng.uniform(np.log(1.5), np.log(6.0))))
        shapes = _shapes(rng, [radius], (1.2, 2.0), vertical=True, max_extent_mm=7.5)
        clearance = radius * shapes[0][2] + MIRROR_CLEARANCE_EDGES * edge
        candidates, site = lesion_sites.pons(sites, tree.vessels["BA"].points_mm, min_offset_mm=clearance), "pons"
        if rng.random() < 0.8 or not candidates.any():
            candidates, site = lesion_sites.deep_perforator(sites, side), "basal ganglia, internal capsule or thalamus"
        blobs = _place_blobs(rng, sites.points_mm, candidates, shapes, edge)
    elif scenario == "shower":
        shapes = _shapes(rng, np.exp(rng.uniform(np.log(1.0), np.log(5.0), int(rng.integers(2, 13)))), (1.0, 1.4))
        if rng.random() < 0.35:
            bilateral, site = True, "both hemispheres"
            # One infarct in each hemisphere first, then anywhere.
            blobs = _place_blobs(rng, sites.points_mm, lesion_sites.subcortex(sites, side="L"), shapes[:1], edge)
            blobs = _place_blobs(rng, sites.points_mm, lesion_sites.subcortex(sites, side="R"), shapes[1:2], edge, existing=blobs)
            blobs = _place_blobs(rng, sites.points_mm, lesion_sites.subcortex(sites), shapes[2:], edge, existing=blobs)
        else:
            names = list(SHOWER_TERRITORIES)
            territories = names[rng.choice(len(names), p=list(SHOWER_TERRITORIES.values()))]
            candidates, site = lesion_sites.subcortex(sites, territories, side), "/".join(territories)
            blobs = _place_blobs(rng, sites.points_mm, candidates, shapes, edge)
    elif scenario == "watershed":
        # A border zone of this side with white matter along it (an anatomy may lack one).
        zones = [(z, s) for s in (side, "R" if side == "L" else "L") for z in BORDER_ZONE_WEIGHT if lesion_sites.border_zone(sites, z, s).any()]
        weights = np.array([BORDER_ZONE_WEIGHT[z] * (1.0 if s == side else 1e-3) for z, s in zones])
        pair, zone_side = zones[rng.choice(len(zones), p=weights / weights.sum())] if zones else (next(iter(BORDER_ZONE_WEIGHT)), side)
        shapes = _shapes(rng, rng.uniform(3.0, 8.0, int(rng.integers(2, 8))), (1.2, 2.0))
        candidates, site = lesion_sites.border_zone(sites, pair, zone_side), f"{pair[0]}/{pair[1]} border zone"
        if not candidates.any():
            candidates, site = lesion_sites.deep_white_matter(sites, side), "deep white matter"
        blobs = _place_blobs(rng, sites.points_mm, candidates, shapes, edge, chain_mm=(4.0, 14.0))
    else:  # cortical
        names = list(EMBOLIC_TERRITORY_WEIGHT)
        territory = names[rng.choice(len(names), p=list(EMBOLIC_TERRITORY_WEIGHT.values()))]
        shapes = _shapes(rng, rng.uniform(2.5, 9.0, int(rng.integers(1, 4))), (1.0, 1.6))
        candidates, site = lesion_sites.cortex(sites, (territory,), side), f"{territory} cortex"
        blobs = _place_blobs(rng, sites.points_mm, candidates, shapes, edge, chain_mm=(4.0, 20.0))
        if blobs:
            # The clot sits in the cortical branch whose end lies nearest the first infarct.
            branches = [v for n, v in tree.vessels.items() if n.startswith(f"{territory}-{side}-branch")]
            vessel = min(branches, key=lambda v: float(np.linalg.norm(v.points_mm[-1] - np.asarray(blobs[0][:3]))))
            clot = Clot(vessel.name, float(rng.uniform(0.4, 0.7) * vessel.length_mm), float(rng.uniform(1.5, 3.0)))
            clot_radius = vessel.radius_mm
    if not blobs:
        raise RuntimeError(f"no site for a {scenario} lesion in this anatomy")
    largest = max(blobs, key=lambda b: b[3] ** 3 * b[7])
    side = "L" if largest[0] < 0 else "R"
    regions = sorted({int(sites.region[np.argmin(np.linalg.norm(sites.points_mm - np.asarray(b[:3]), axis=1))]) for b in blobs})
    extra_delay = float(rng.uniform(*FOCAL_DELAY_S[scenario]))
    return Ischemia(
        scenario=scenario,
        severity_class=FOCAL_SCENARIOS[scenario],
        side=side,
        clot=clot,
        clot_radius_mm=float(clot_radius),
        affected_regions=tuple(regions),
        end_artery_regions=(),
        spared_vessels=(),
        blob_centre_mm=None,
        blob_radius_mm=0.0,
        depth_scale_mm=BLOB_DEPTH_RATIO,
        severity=float(rng.uniform(1.6, 2.6)),
        min_rcbf=float(rng.uniform(0.03, 0.12)),
        extra_delay_s=extra_delay,
        collateral_grade=collateral,
        collateral_delay_s=float(extra_delay * rng.uniform(0.7, 1.0)),
        collateral_amplitude=float(0.25 + 0.6 * collateral),
        blobs=tuple(blobs),
        membership_edge_mm=edge,
        bilateral=bilateral,
        site=site,
    )


def _shapes(rng: np.random.Generator, radii, stretch, vertical: bool = False, max_extent_mm: float | None = None) -> list:
    """(radius, axis, stretch k) per blob: k uniform in ``stretch``, the axis random (near
    vertical for perforator territories); the half-length r·k at most ``max_extent_mm``."""
    out = []
    for radius in radii:
        axis = rng.normal(0.0, 0.3, 3) + [0.0, 0.0, 1.0] if vertical else rng.normal(size=3)
        k = float(rng.uniform(*stretch))
        if max_extent_mm is not None:
            k = max(1.0, min(k, max_extent_mm / radius))
        out.append((float(radius), axis / np.linalg.norm(axis), k))
    return out


def _place_blobs(rng: np.random.Generator, points: np.ndarray, candidates: np.ndarray, shapes, edge_mm: float, chain_mm=None, existing=(), tries: int = 400) -> list:
    """``existing`` blobs and new ones of ``shapes`` (see :func:`_shapes`) centred on candidate
    points: apart from each other, clear of every blob's mirror image (the truth's reference),
    each within ``chain_mm`` (min, max) of the previous one if given. Returns blob tuples
    (x, y, z, r, ax, ay, az, k); fewer new ones than asked where no site fits."""
    blobs: list = list(existing)
    pool = points[np.flatnonzero(candidates)]
    if pool.size == 0:
        return blobs
    flip = np.array([-1.0, 1.0, 1.0])
    clearance = MIRROR_CLEARANCE_EDGES * edge_mm
    for radius, axis, k in shapes:
        reach = radius * k  # bounding radius
        for _ in range(tries):
            if chain_mm is not None and blobs:
                previous = np.asarray(blobs[-1][:3])
                d = np.linalg.norm(pool - previous, axis=1)
                near = np.flatnonzero((d >= chain_mm[0]) & (d <= chain_mm[1]))
                if near.size == 0:
                    break
                centre = pool[rng.choice(near)]
            else:
                centre = pool[rng.integers(len(pool))]
            mirror = centre * flip
            if np.linalg.norm(mirror - centre) < 2 * reach + clearance:
                continue
            others = [(np.asarray(b[:3]), b[3] * b[7]) for b in blobs]
            if chain_mm is None and any(np.linalg.norm(centre - c) < reach + r for c, r in others):
                continue
            if any(np.linalg.norm(mirror - c) < reach + r + clearance for c, r in others):
                continue
            blobs.append((*(float(v) for v in centre), radius, *(float(v) for v in axis), k))
            break
    return blobs


def blob_gap_mm(points: np.ndarray, blobs) -> np.ndarray:
    """Distance (mm) from points (..., 3) to the nearest blob's bounding sphere (radius r·k)."""
    gap = np.full(np.shape(points)[:-1], np.inf)
    for b in blobs:
        x, y, z = b[:3]
        gap = np.minimum(gap, np.sqrt((points[..., 0] - x) ** 2 + (points[..., 1] - y) ** 2 + (points[..., 2] - z) ** 2) - b[3] * b[7])
    return gap


def _arc_length_of(points_mm: np.ndarray, target: np.ndarray) -> float:
    """Arc length along a polyline to the vertex nearest ``target``."""
    steps = np.linalg.norm(np.diff(points_mm, axis=0), axis=1)
    cum = np.r_[0.0, np.cumsum(steps)]
    return float(cum[np.argmin(np.linalg.norm(points_mm - target, axis=1))])


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def lesion_factors(head, territory_distances, ischemia: Ischemia) -> dict[str, np.ndarray]:
    """CBF factor q_f, CBV factor q_v, extra delay (s) and field membership m at head points.

    ``territory_distances`` are the anatomy's territory distances at the same points (unused,
    may be None, for focal fields).
    """
    if ischemia.blobs:
        depth, z = _blob_depth(np.asarray(head), np.asarray(ischemia.blobs), ischemia.depth_scale_mm)
    elif ischemia.blob_centre_mm is not None:
        depth = ischemia.blob_radius_mm - np.linalg.norm(np.asarray(head) - np.asarray(ischemia.blob_centre_mm), axis=-1)
    else:
        depth = territory_depth_mm(territory_distances, ischemia.affected_regions)
    m = _sigmoid(depth / ischemia.membership_edge_mm * 4.0)
    if not ischemia.blobs:
        z = 1.0 - np.exp(-np.maximum(depth, 0.0) / ischemia.depth_scale_mm)
    if ischemia.end_artery_regions:
        z = np.maximum(z, _sigmoid(territory_depth_mm(territory_distances, ischemia.end_artery_regions) / MEMBERSHIP_EDGE_MM * 4.0) * m)
    ischemic = m * np.clip(ischemia.severity * z, 0.0, 1.0)
    q_f = 1.0 - (1.0 - ischemia.min_rcbf) * ischemic
    q_v = np.clip(0.25 + 2.2 * q_f, 0.25, 1.0) * (1.0 + 0.1 * m)
    delay = m * ischemia.extra_delay_s * (0.55 + 0.45 * z)
    return {"q_f": q_f, "q_v": q_v, "extra_delay_s": delay, "membership": m}


def _blob_depth(head: np.ndarray, blobs: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Depth (mm) inside the deepest blob, and the depth term z = max_i 1 − exp(−δ_i / (ratio · r_i))."""
    flat = head.reshape(-1, 3)
    depth = np.full(flat.shape[0], -np.inf)
    z = np.zeros(flat.shape[0])
    for x, y, zc, radius, ax, ay, az, k in blobs:
        rel = flat - np.array([x, y, zc])
        along = rel @ np.array([ax, ay, az])
        d = radius - np.sqrt(np.maximum(np.einsum("ij,ij->i", rel, rel) - (1.0 - 1.0 / k**2) * along**2, 0.0))
        depth = np.maximum(depth, d)
        z = np.maximum(z, 1.0 - np.exp(-np.maximum(d, 0.0) / (ratio * radius)))
    return depth.reshape(head.shape[:-1]), z.reshape(head.shape[:-1])
