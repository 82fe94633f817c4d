"""The arterial tree (circle of Willis, ICA, MCA, ACA, PCA, perforators, cortical branches) and
the dural sinuses, as polylines of tubes in the head frame; rendering of their lumen as partial
volume on a scanner grid, with the clot as its own lumen and the arteries beyond it filling late.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from strokelabel.phantom.geometry import Grid, Pose, segment_distance_mm, soft_inside

# name, parent, radius mm, polyline (brain-normalised, left side). Right side: u mirrored.
_LEFT_ARTERIES = [
    ("ICA", None, 2.2, [(-0.28, 0.10, -1.45), (-0.30, 0.06, -0.80), (-0.26, 0.16, -0.56), (-0.23, 0.10, -0.40)]),
    ("M1", "ICA", 1.5, [(-0.23, 0.10, -0.40), (-0.42, 0.13, -0.38), (-0.60, 0.08, -0.32)]),
    ("M2-superior", "M1", 1.1, [(-0.60, 0.08, -0.32), (-0.70, 0.12, -0.14), (-0.70, 0.05, 0.14)]),
    ("M2-inferior", "M1", 1.1, [(-0.60, 0.08, -0.32), (-0.74, -0.05, -0.30), (-0.78, -0.30, -0.18)]),
    ("LSA", "M1", 0.45, [(-0.38, 0.13, -0.38), (-0.33, 0.10, -0.05)]),
    ("AChA", "ICA", 0.5, [(-0.25, 0.12, -0.45), (-0.33, -0.10, -0.34)]),
    ("A1", "ICA", 1.1, [(-0.23, 0.10, -0.40), (-0.04, 0.24, -0.36)]),
    ("A2", "A1", 1.0, [(-0.04, 0.24, -0.36), (-0.04, 0.56, -0.12), (-0.05, 0.50, 0.30), (-0.05, 0.10, 0.56), (-0.05, -0.30, 0.50)]),
    ("PCom", "ICA", 0.7, [(-0.23, 0.10, -0.40), (-0.13, -0.16, -0.42)]),
    ("P1", "BA", 1.1, [(0.0, -0.18, -0.44), (-0.13, -0.16, -0.42)]),
    ("P2", "P1", 1.0, [(-0.13, -0.16, -0.42), (-0.30, -0.34, -0.36), (-0.32, -0.66, -0.20)]),
    ("TPA", "P1", 0.45, [(-0.07, -0.17, -0.43), (-0.11, -0.18, -0.05)]),
]
_MIDLINE_ARTERIES = [
    ("BA", None, 1.6, [(0.0, -0.22, -1.45), (0.0, -0.24, -0.80), (0.0, -0.18, -0.44)]),
    ("ACom", None, 0.7, [(-0.04, 0.24, -0.36), (0.04, 0.24, -0.36)]),
]
_SINUSES = [
    ("SSS", 3.0, [(0.0, 0.70, 0.50), (0.0, 0.36, 0.90), (0.0, -0.30, 0.90), (0.0, -0.78, 0.52), (0.0, -0.95, 0.05)]),
    ("straight-sinus", 2.0, [(0.0, -0.35, 0.22), (0.0, -0.95, 0.05)]),
    ("transverse-L", 2.8, [(0.0, -0.95, 0.05), (-0.55, -0.82, -0.15), (-0.78, -0.48, -0.38), (-0.70, -0.35, -0.85)]),
    ("transverse-R", 2.8, [(0.0, -0.95, 0.05), (0.55, -0.82, -0.15), (0.78, -0.48, -0.38), (0.70, -0.35, -0.85)]),
]
# Cortical branches: parent vessel, the point on it they leave from (fraction of its length), territory.
_BRANCHES = {"MCA-superior": ("M2-superior", 1.0), "MCA-inferior": ("M2-inferior", 1.0), "ACA": ("A2", None), "PCA": ("P2", 1.0)}
BRANCHES_PER_TERRITORY = 3

# Tube pieces are at most this long, so their bounding boxes stay tight.
PIECE_MM = 8.0


@dataclass
class Vessel:
    name: str  # e.g. "M1-L", "BA", "MCA-superior-L-branch2", "SSS"
    parent: str | None
    radius_mm: float
    points_mm: np.ndarray  # (n, 3) head frame
    kind: str = "artery"  # artery | vein

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(np.diff(self.points_mm, axis=0), axis=1).sum())

    def point_at(self, s_mm: float) -> np.ndarray:
        """Point at arc length ``s_mm`` from the start."""
        steps = np.linalg.norm(np.diff(self.points_mm, axis=0), axis=1)
        cum = np.r_[0.0, np.cumsum(steps)]
        s = float(np.clip(s_mm, 0.0, cum[-1]))
        i = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(steps) - 1))
        w = (s - cum[i]) / max(steps[i], 1e-9)
        return self.points_mm[i] * (1 - w) + self.points_mm[i + 1] * w

    def sub(self, s0_mm: float, s1_mm: float) -> np.ndarray:
        """Polyline between arc lengths s0 and s1."""
        steps = np.linalg.norm(np.diff(self.points_mm, axis=0), axis=1)
        cum = np.r_[0.0, np.cumsum(steps)]
        inner = [self.points_mm[i] for i in range(len(cum)) if s0_mm < cum[i] < s1_mm]
        return np.array([self.point_at(s0_mm), *inner, self.point_at(s1_mm)])


@dataclass
class Piece:
    """One straight tube of lumen with its filling: contrast arrives ``delay_s`` late, scaled by ``amplitude``."""

    p0: np.ndarray
    p1: np.ndarray
    radius_mm: float
    kind: str  # artery | vein | clot
    delay_s: float = 0.0
    amplitude: float = 1.0
    vessel: str = ""


@dataclass
class VesselTree:
    vessels: dict[str, Vessel] = field(default_factory=dict)

    def children(self, name: str) -> list[str]:
        return [v.name for v in self.vessels.values() if v.parent == name]

    def downstream(self, name: str) -> list[str]:
        """Every vessel fed through ``name`` (not ``name`` itself)."""
        out, todo = [], self.children(name)
        while todo:
            n = todo.pop()
            out.append(n)
            todo.extend(self.children(n))
        return out


def ellipsoid_layout(axes_mm: np.ndarray) -> dict:
    """The vessel layout of the ellipsoid family: the template polylines scaled to the brain's
    semi-axes (head mm), the right side mirroring the left."""
    layout = {"midline": [(name, parent, radius, np.asarray(points) * axes_mm) for name, parent, radius, points in _MIDLINE_ARTERIES]}
    for side, sign in (("L", 1.0), ("R", -1.0)):
        layout[side] = [(name, parent, radius, np.asarray(points) * [sign, 1, 1] * axes_mm) for name, parent, radius, points in _LEFT_ARTERIES]
    layout["sinuses"] = [(name, radius, np.asarray(points) * axes_mm) for name, radius, points in _SINUSES]
    return layout


def make_tree(rng: np.random.Generator, layout: dict, territory_seeds_mm, territory_seed_region, region_names, cortical_point_mm) -> VesselTree:
    """The patient's vessels: the anatomy's ``layout`` (head mm: "midline", "L", "R" arteries as
    (name, parent, radius, points), "sinuses" as (name, radius, points)), jittered per side, with
    cortical branches to the cortical territories' seeds. ``cortical_point_mm(target, depth_mm)``
    is the point that deep below the brain surface towards ``target``."""
    tree = VesselTree()

    def add(name, parent, radius, points, kind="artery"):
        tree.vessels[name] = Vessel(name, parent, radius, np.asarray(points, dtype=np.float64), kind)

    for name, parent, radius, points in layout["midline"]:
        add(name, parent, radius, points + rng.normal(0, 0.6, (len(points), 3)) * [0, 1, 1])
    for side in ("L", "R"):
        arteries = layout[side]
        jitter = rng.normal(0, 1.2, (len(arteries), 5, 3))
        for (name, parent, radius, points), jit in zip(arteries, jitter):
            pts = np.array(points, dtype=np.float64)
            pts[1:] += jit[: len(pts) - 1]  # keep each start on its parent
            add(f"{name}-{side}", None if parent is None else (parent if parent == "BA" else f"{parent}-{side}"), radius * rng.uniform(0.9, 1.1), pts)
        # Children start where their parent's polyline has moved to.
        for name, vessel in list(tree.vessels.items()):
            if name.endswith(f"-{side}") and vessel.parent in tree.vessels:
                parent = tree.vessels[vessel.parent]
                nearest = parent.points_mm[np.argmin(np.linalg.norm(parent.points_mm - vessel.points_mm[0], axis=1))]
                d = np.linalg.norm(parent.points_mm[-1] - vessel.points_mm[0])
                vessel.points_mm[0] = parent.points_mm[-1] if d < 6.0 else nearest
        for territory, (parent_name, at) in _BRANCHES.items():
            parent = tree.vessels[f"{parent_name}-{side}"]
            rid = region_names.index(f"{territory}-{side}") + 1
            targets = territory_seeds_mm[territory_seed_region == rid]
            chosen = rng.choice(len(targets), size=min(BRANCHES_PER_TERRITORY, len(targets)), replace=False)
            for b, t in enumerate(targets[chosen], start=1):
                target = cortical_point_mm(t, rng.uniform(3.0, 6.0))
                start = parent.points_mm[-1] if at is not None else parent.points_mm[np.argmin(np.linalg.norm(parent.points_mm - target, axis=1))]
                mid = 0.5 * (start + target) + rng.normal(0, 3.0, 3)
                add(f"{territory}-{side}-branch{b}", parent.name, rng.uniform(0.6, 0.8), [start, mid, target])
    for name, radius, points in layout["sinuses"]:
        add(name, None, radius, points, kind="vein")
    return tree


def cortical_point(direction_mm, axes_mm, depth_mm: float) -> np.ndarray:
    """Point ``depth_mm`` below the brain surface along the ray from the centre through ``direction_mm``."""
    d = np.asarray(direction_mm, dtype=np.float64)
    rho = np.sqrt(((d / axes_mm) ** 2).sum())
    surface = d / rho
    return surface * (1.0 - depth_mm / np.linalg.norm(surface))


def polyline_pieces(points_mm, radius_mm, kind, delay_s=0.0, amplitude=1.0, vessel="") -> list[Piece]:
    pieces = []
    for a, b in zip(points_mm[:-1], points_mm[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / PIECE_MM)))
        for i in range(n):
            pieces.append(Piece(a + (b - a) * i / n, a + (b - a) * (i + 1) / n, radius_mm, kind, delay_s, amplitude, vessel))
    return pieces


@dataclass(frozen=True)
class Clot:
    """A clot filling ``vessel`` between arc lengths ``start_mm`` and ``start_mm + length_mm``."""

    vessel: str
    start_mm: float
    length_mm: float


def tree_pieces(tree: VesselTree, clot: Clot | None, collateral_delay_s: float, collateral_amplitude: float, spared=()) -> list[Piece]:
    """All lumen pieces; beyond the clot (and in every vessel downstream of it, except ``spared``)
    arteries fill late and weakly through collaterals."""
    late = set()
    if clot is not None:
        late = set(tree.downstream(clot.vessel)) - set(spared)
    pieces: list[Piece] = []
    for v in tree.vessels.values():
        if v.kind == "vein":
            pieces += polyline_pieces(v.points_mm, v.radius_mm, "vein", vessel=v.name)
        elif clot is not None and v.name == clot.vessel:
            s0, s1 = clot.start_mm, min(clot.start_mm + clot.length_mm, v.length_mm)
            if s0 > 0:
                pieces += polyline_pieces(v.sub(0.0, s0), v.radius_mm, "artery", vessel=v.name)
            # The clot fills the lumen between s0 and s1: a capsule shortened by its round ends.
            r = v.radius_mm
            a, b = v.point_at(s0 + min(r, 0.5 * (s1 - s0))), v.point_at(s1 - min(r, 0.5 * (s1 - s0)))
            pieces.append(Piece(a, b, r, "clot", vessel=v.name))
            if s1 < v.length_mm:
                pieces += polyline_pieces(v.sub(s1, v.length_mm), v.radius_mm, "artery", collateral_delay_s, collateral_amplitude, v.name)
        elif v.name in late:
            pieces += polyline_pieces(v.points_mm, v.radius_mm, "artery", collateral_delay_s, collateral_amplitude, v.name)
        else:
            pieces += polyline_pieces(v.points_mm, v.radius_mm, "artery", vessel=v.name)
    return pieces


def render_pieces(pieces: list[Piece], pose: Pose, grid: Grid, zs: slice) -> dict[str, np.ndarray]:
    """Lumen fractions on slices ``zs`` of ``grid``: arterial (with its delay and amplitude), venous, clot.

    A tube thinner than a voxel is spread over it: its fraction is scaled by (2r / voxel)².
    Overlapping tubes take the larger fraction; an artery voxel takes the filling of the tube
    that dominates it.
    """
    shape = (grid.shape[0], grid.shape[1], zs.stop - zs.start)
    out = {
        "artery": np.zeros(shape, np.float32),
        "vein": np.zeros(shape, np.float32),
        "clot": np.zeros(shape, np.float32),
        "delay_s": np.zeros(shape, np.float32),
        "amplitude": np.ones(shape, np.float32),
    }
    if not pieces:
        return out
    h = grid.edge_mm
    n_sub = grid.subsamples_z
    ends = np.array([[pose.to_world(p.p0), pose.to_world(p.p1)] for p in pieces])  # (P, 2, 3)
    radii = np.array([p.radius_mm for p in pieces])
    margin = radii + h
    lo = grid.index_of(ends.min(axis=1) - margin[:, None])
    hi = grid.index_of(ends.max(axis=1) + margin[:, None])
    lo_i = np.floor(lo).astype(int)
    hi_i = np.ceil(hi).astype(int)
    keep = (hi_i[:, 2] >= zs.start) & (lo_i[:, 2] < zs.stop) & (hi_i[:, 0] >= 0) & (lo_i[:, 0] < grid.shape[0]) & (hi_i[:, 1] >= 0) & (lo_i[:, 1] < grid.shape[1])
    a = grid.affine
    for p_index in np.flatnonzero(keep):
        piece = pieces[p_index]
        i0, j0, k0 = np.maximum(lo_i[p_index], [0, 0, zs.start])
        i1, j1, k1 = np.minimum(hi_i[p_index] + 1, [grid.shape[0], grid.shape[1], zs.stop])
        if i1 <= i0 or j1 <= j0 or k1 <= k0:
            continue
        ii = np.arange(i0, i1) * a[0, 0] + a[0, 3]
        jj = np.arange(j0, j1) * a[1, 1] + a[1, 3]
        fraction = np.zeros((i1 - i0, j1 - j0, k1 - k0))
        for s in range(n_sub):
            kk = (np.arange(k0, k1) + (s + 0.5) / n_sub - 0.5) * a[2, 2] + a[2, 3]
            pts = np.stack(np.meshgrid(ii, jj, kk, indexing="ij"), axis=-1)
            d = segment_distance_mm(pts, ends[p_index, 0], ends[p_index, 1])
            fraction += soft_inside(d - piece.radius_mm, h)
        fraction *= min(1.0, 2 * piece.radius_mm / h) ** 2 / n_sub
        box = (slice(i0, i1), slice(j0, j1), slice(k0 - zs.start, k1 - zs.start))
        if piece.kind == "artery":
            current = out["artery"][box]
            wins = fraction > current
            out["delay_s"][box] = np.where(wins, piece.delay_s, out["delay_s"][box])
            out["amplitude"][box] = np.where(wins, piece.amplitude, out["amplitude"][box])
            out["artery"][box] = np.maximum(current, fraction)
        else:
            out[piece.kind][box] = np.maximum(out[piece.kind][box], fraction)
    # The clot fills its own lumen; the vessel's stumps overlap it only at the joints.
    out["artery"] = np.clip(out["artery"] - out["clot"], 0.0, 1.0)
    total = out["artery"] + out["vein"] + out["clot"]
    over = total > 1
    if over.any():
        for key in ("artery", "vein", "clot"):
            out[key] = np.where(over, out[key] / np.maximum(total, 1e-9), out[key])
    return out
