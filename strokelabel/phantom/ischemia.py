"""The occlusion and the tissue it starves.

A scenario (large-vessel ICA-T or M1, medium M2/A2/P2, or a small embolic cortical branch)
places a clot in a vessel of one hemisphere. The tissue that vessel feeds (its atlas
territories, or a small cortical field around an embolic branch's end) becomes hypoperfused:

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strokelabel.phantom.anatomy import REGIONS, Anatomy, region_id, territory_depth_mm
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


@dataclass(frozen=True)
class Ischemia:
    scenario: str
    severity_class: str
    side: str  # L or R: the patient's side of the occlusion
    clot: Clot
    clot_radius_mm: float
    affected_regions: tuple[int, ...]  # atlas ids of the territories fed (empty for embolic fields)
    end_artery_regions: tuple[int, ...]  # territories without collaterals
    spared_vessels: tuple[str, ...]  # downstream vessels that still fill normally (via ACom)
    blob_centre_mm: tuple[float, float, float] | None  # embolic field centre (head mm)
    blob_radius_mm: float
    depth_scale_mm: float  # λ
    severity: float  # S
    min_rcbf: float  # q_min
    extra_delay_s: float  # D
    collateral_grade: float  # 0 poor .. 1 good
    collateral_delay_s: float  # late filling of the arteries beyond the clot
    collateral_amplitude: float

    def describe(self) -> dict:
        return {
            "scenario": self.scenario,
            "severity_class": self.severity_class,
            "side": {"L": "left", "R": "right"}[self.side],
            "occluded_vessel": self.clot.vessel,
            "clot_start_mm": round(self.clot.start_mm, 2),
            "clot_length_mm": round(self.clot.length_mm, 2),
            "clot_diameter_mm": round(2 * self.clot_radius_mm, 2),
            "occluded_territory": [REGIONS[r - 1] for r in self.affected_regions] or ["cortical field of " + self.clot.vessel],
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


def make_ischemia(rng: np.random.Generator, tree: VesselTree, anatomy: Anatomy, onset_min: float) -> Ischemia:
    names = list(SCENARIOS)
    scenario = names[rng.choice(len(names), p=[SCENARIOS[n][0] for n in names])]
    severity_class = SCENARIOS[scenario][1]
    side = "L" if rng.random() < 0.5 else "R"
    rid = lambda name: region_id(f"{name}-{side}")  # noqa: E731
    collateral = float(rng.uniform(0.0, 1.0))
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


def _arc_length_of(points_mm: np.ndarray, target: np.ndarray) -> float:
    """Arc length along a polyline to the vertex nearest ``target``."""
    steps = np.linalg.norm(np.diff(points_mm, axis=0), axis=1)
    cum = np.r_[0.0, np.cumsum(steps)]
    return float(cum[np.argmin(np.linalg.norm(points_mm - target, axis=1))])


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def lesion_factors(head, territory_distances, ischemia: Ischemia) -> dict[str, np.ndarray]:
    """CBF factor q_f, CBV factor q_v, extra delay (s) and field membership m at head points.

    ``territory_distances`` are :func:`territory_distances_mm` at the same points.
    """
    if ischemia.blob_centre_mm is not None:
        depth = ischemia.blob_radius_mm - np.linalg.norm(np.asarray(head) - np.asarray(ischemia.blob_centre_mm), axis=-1)
    else:
        depth = territory_depth_mm(territory_distances, ischemia.affected_regions)
    m = _sigmoid(depth / MEMBERSHIP_EDGE_MM * 4.0)
    z = 1.0 - np.exp(-np.maximum(depth, 0.0) / ischemia.depth_scale_mm)
    if ischemia.end_artery_regions:
        z = np.maximum(z, _sigmoid(territory_depth_mm(territory_distances, ischemia.end_artery_regions) / MEMBERSHIP_EDGE_MM * 4.0) * m)
    ischemic = m * np.clip(ischemia.severity * z, 0.0, 1.0)
    q_f = 1.0 - (1.0 - ischemia.min_rcbf) * ischemic
    q_v = np.clip(0.25 + 2.2 * q_f, 0.25, 1.0) * (1.0 + 0.1 * m)
    delay = m * ischemia.extra_delay_s * (0.55 + 0.45 * z)
    return {"q_f": q_f, "q_v": q_v, "extra_delay_s": delay, "membership": m}
