"""The "template" anatomy family: a head built from the MNI ICBM152 2009a template
(:mod:`strokelabel.phantom.mni_template`), per patient scaled, warped, aged and asymmetric.

Head frame: MNI mm re-centred on the brain's centroid c and scaled per axis S (the template
brain is 1.68 L; the patient's young brain 1.15-1.55 L, before atrophy), then displaced by a
smooth random field D. The head point h shows the template point

    t = c + (h − D(h)) / S.

D: a control grid of independent N(0, σ) displacements every 32 mm (σ = 1.5-3.5 mm; no node
on the midline, so the hemispheres deform independently), cubic-spline interpolated to 4 mm,
its left-right component tapered to 0 at the midline (the mid-sagittal plane stays u = 0),
plus petalia: the right frontal and the left occipital pole pushed out by up to 4 mm (the
usual brain torque; reversed in a quarter of patients). No head is mirror-symmetric.

Ageing (age 35-95): ventricle enlargement (a rising distance threshold on the ventricles,
0-7 mm), sulcal widening and cortical thinning (a rising threshold on the brain fraction
smoothed over 2 mm), a wider subarachnoid space, and chronic findings
(:mod:`strokelabel.phantom.chronic`). Skull 4.5-7.5 mm with smooth variation, thin over the
temporal squama, thick at the occiput; scalp with the temporalis muscle; sinus and mastoid
pneumatisation vary. Vascular territories: the template's seeds jittered (3 mm), deep shapes
jittered, per-region offsets; the arteries follow the template and the same warp.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from strokelabel.phantom import mni_template as mni
from strokelabel.phantom.anatomy import REGIONS, region_id
from strokelabel.phantom.chronic import ChronicFindings, draw_chronic, old_infarct_fractions, wmh_fraction
from strokelabel.phantom.geometry import soft_inside

TEMPLATE_BRAIN_ML = 1678.0  # grey + white matter of the template
YOUNG_BRAIN_ML = (1150.0, 1550.0)
# Half extents (MNI mm) of the template brain about its centroid: the "semi-axes" reported.
TEMPLATE_BRAIN_HALF_EXTENT_MM = np.array([71.0, 89.5, 77.0])
WILLIS_MNI = (0.0, -4.0, -18.0)
# Warp: control nodes every 32 mm over the head frame, interpolated to a 4 mm grid.
WARP_NODE_MM = 32.0
WARP_STEP_MM = 4.0
WARP_ORIGIN_MM = np.array([-112.0, -140.0, -165.0])
WARP_NODES = (8, 10, 10)
MIDLINE_TAPER_MM = 12.0
# Atrophy: brain kept where the 2 mm-smoothed brain fraction exceeds θ = 0.3 + 0.45 · atrophy.
ATROPHY_THRESHOLD = (0.3, 0.45)
ATROPHY_RAMP = 0.15
MASTOID_AIR_SHARE = 0.6  # air share of a fully pneumatised mastoid
LOW_MNI_Z = 14.0  # above this, no face, neck, skull-base bone, cavity or eye (FACE_AND_NECK tops out at z = 10)


def _temporal_weight(t: np.ndarray) -> np.ndarray:
    """1 over the temporal squama (lateral, mid-height), 0 elsewhere; MNI points (N, 3)."""
    x, y, z = t[:, 0], t[:, 1], t[:, 2]
    return np.exp(-(((z + 5.0) / 24.0) ** 2)) * np.clip((np.abs(x) - 40.0) / 20.0, 0.0, 1.0) * np.exp(-(((y + 12.0) / 38.0) ** 2))


def _occipital_weight(t: np.ndarray) -> np.ndarray:
    return np.exp(-((np.linalg.norm(t - np.array([0.0, -112.0, -20.0], np.float32), axis=1) / 25.0) ** 2))


@dataclass(frozen=True, eq=False)
class TemplateAnatomy:
    """One patient's head from the MNI template (lengths in head mm unless named otherwise)."""

    family: ClassVar[str] = "template"

    scale: np.ndarray  # (3,) head mm per MNI mm
    age_years: float
    warp_mm: np.ndarray  # (3, nx, ny, nz) displacement D on the warp grid (head frame)
    petalia_mm: tuple[float, float]  # right frontal, left occipital protrusion
    csf_mm: float  # subarachnoid space beyond the template mask
    atrophy: float  # 0..1
    ventricle_dilation_mm: float
    skull_mm: float
    skull_waves: np.ndarray  # (k, 5): direction (3), phase, relative amplitude
    scalp_mm: float
    temporalis_mm: float
    neck_mm: float  # outline of face and neck moved out (+) or in (−)
    sinus_mm: float  # pneumatisation: cavities grown (+) or shrunk (−)
    mastoid_air: float  # 0..1
    seeds_mni: np.ndarray  # cortical territory seeds
    seed_region: np.ndarray
    territory_offset_mm: np.ndarray  # (15,)
    deep_territories: tuple  # (region id, centre MNI, semi-axes MNI)
    tentorium_offset_mm: float
    territory_seeds_mm: np.ndarray  # the seeds in the head frame (branch targets of the vessel tree)
    territory_seed_region: np.ndarray
    chronic: ChronicFindings = ChronicFindings()

    @property
    def mean_scale(self) -> float:
        return float(np.mean(self.scale))

    @property
    def brain_axes_mm(self) -> np.ndarray:
        return self.scale * TEMPLATE_BRAIN_HALF_EXTENT_MM

    @property
    def willis_mm(self) -> np.ndarray:
        return self.to_head(np.array([WILLIS_MNI]))[0]

    @property
    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = (np.array([b[i] for b in mni.BRAIN_BOX_MNI], float) for i in (0, 1))
        lo[2] = -62.0  # the lowest brain (cerebellum, medulla) above the foramen magnum
        return (lo - mni.BRAIN_CENTROID_MNI) * self.scale - 5.0, (hi - mni.BRAIN_CENTROID_MNI) * self.scale + 5.0  # + the warp

    # -- frames -------------------------------------------------------------------------------
    def displacement_mm(self, head: np.ndarray) -> np.ndarray:
        index = np.ascontiguousarray(((np.asarray(head, np.float32) - WARP_ORIGIN_MM.astype(np.float32)) / np.float32(WARP_STEP_MM)).T)
        return np.stack(mni.interpolate(list(self.warp_mm), index, mode="nearest"), axis=-1)

    def to_template(self, head) -> np.ndarray:
        """MNI mm of head points (N, 3)."""
        head = np.asarray(head, np.float32).reshape(-1, 3)
        return ((head - self.displacement_mm(head)) / self.scale.astype(np.float32) + mni.BRAIN_CENTROID_MNI.astype(np.float32)).astype(np.float32)

    def to_head(self, template_mm) -> np.ndarray:
        """Head mm of MNI points (N, 3): h = q + D(h), solved by fixed-point iteration (|∇D| << 1)."""
        q = (np.asarray(template_mm, np.float64).reshape(-1, 3) - mni.BRAIN_CENTROID_MNI) * self.scale
        h = q.copy()
        for _ in range(8):
            h = q + self.displacement_mm(h)
        return h

    # -- tissues ------------------------------------------------------------------------------
    def skull_thickness_mm(self, t: np.ndarray) -> np.ndarray:
        rel = (t - mni.BRAIN_CENTROID_MNI.astype(np.float32)) / 60.0
        waves = np.zeros(t.shape[0], np.float32)
        for d0, d1, d2, phase, amplitude in self.skull_waves:
            waves += amplitude * np.sin(rel @ np.array([d0, d1, d2], np.float32) + phase)
        return self.skull_mm * (1.0 + waves) * (1.0 - 0.5 * _temporal_weight(t)) + 3.0 * _occipital_weight(t)

    @property
    def max_cranium_mm(self) -> float:
        """Upper bound of skull + scalp thickness (mm)."""
        return self.skull_mm * (1.0 + float(np.abs(self.skull_waves[:, 4]).sum())) + 3.0 + self.scalp_mm + self.temporalis_mm

    def scalp_thickness_mm(self, t: np.ndarray) -> np.ndarray:
        return self.scalp_mm + self.temporalis_mm * _temporal_weight(t)

    def tissue_fractions(self, head, edge_mm: float) -> dict[str, np.ndarray]:
        """Fractions of air, scalp (all soft tissue), bone, CSF (with the eyes' fluid), grey and
        white matter (sum 1), ``icv``, and the fields of the chronic findings and air cavities
        (see :func:`strokelabel.phantom.render.render_chunk`)."""
        head = np.asarray(head, np.float32)
        shape = head.shape[:-1]
        flat = head.reshape(-1, 3)
        n = flat.shape[0]
        s = np.float32(self.mean_scale)
        t = self.to_template(flat)
        block = mni.head_block()
        everywhere = block.sample(("icv_sd", "air_distance"), t)
        icv_sd = everywhere["icv_sd"] * s - np.float32(self.csf_mm)
        icv = soft_inside(icv_sd, edge_mm).astype(np.float32)
        # Face and neck lie below the skull base (MNI z < LOW_MNI_Z).
        low_z = t[:, 2] < LOW_MNI_Z
        face = np.zeros(n, np.float32)
        face[low_z] = soft_inside(block.sample(("head_sd",), t[low_z])["head_sd"] * s - np.float32(self.neck_mm), edge_mm)
        # Skull and scalp over the intracranial surface.
        skull_outer = np.zeros(n, np.float32)
        cranium = np.zeros(n, np.float32)
        shell = (icv_sd > -edge_mm) & (icv_sd < self.max_cranium_mm + edge_mm)
        ts = t[shell]
        thickness = self.skull_thickness_mm(ts)
        skull_outer[shell] = soft_inside(icv_sd[shell] - thickness, edge_mm)
        cranium[shell] = soft_inside(icv_sd[shell] - thickness - self.scalp_thickness_mm(ts), edge_mm)
        skull_outer[icv_sd <= -edge_mm] = 1.0
        cranium[icv_sd <= -edge_mm] = 1.0
        inside_head = np.maximum(cranium, face)
        icv = np.minimum(icv, inside_head)
        # Skull base, face and neck: only below the vertex region and inside the head.
        bone_base = np.zeros(n, np.float32)
        cavity = np.zeros(n, np.float32)
        eye = np.zeros(n, np.float32)
        low = low_z & (inside_head > 0) & (icv < 1)
        if low.any():
            v = block.sample(("bone_sd", "air_sd", "mastoid_sd", "eye_sd"), t[low])
            mastoid = soft_inside(v["mastoid_sd"] * s, edge_mm)
            bone_base[low] = np.maximum(soft_inside(v["bone_sd"] * s, edge_mm), mastoid)
            cavity[low] = np.maximum(soft_inside(v["air_sd"] * s - self.sinus_mm, edge_mm), MASTOID_AIR_SHARE * self.mastoid_air * mastoid)
            eye[low] = soft_inside(v["eye_sd"] * s, edge_mm)
        rest = np.clip(inside_head - icv, 0.0, 1.0)
        eye = np.minimum(eye, rest)
        rest = rest - eye
        cavity = np.minimum(cavity, rest)
        rest = rest - cavity
        bone = np.minimum(np.maximum(skull_outer - icv, bone_base), rest)
        soft = rest - bone

        gm, wm = np.zeros(n, np.float32), np.zeros(n, np.float32)
        zero = np.zeros(n, np.float32)
        old_infarct, gliosis, wmh = zero.copy(), zero.copy(), zero.copy()
        cavity_distance = np.maximum(everywhere["air_distance"] * s - self.sinus_mm, 0.0)
        brain = icv > 0
        if brain.any():
            brain_t, brain_head = t[brain], flat[brain]
            b = mni.brain_block().sample(("gm", "wm", "ventricle_sd", "brain_smooth"), brain_t)
            theta = ATROPHY_THRESHOLD[0] + ATROPHY_THRESHOLD[1] * self.atrophy
            keep = np.clip((b["brain_smooth"] - theta) / ATROPHY_RAMP + 0.5, 0.0, 1.0)
            outside_ventricles = b["ventricle_sd"] * s - self.ventricle_dilation_mm
            keep = keep * (1.0 - soft_inside(outside_ventricles, edge_mm))
            g, w = b["gm"] * keep, b["wm"] * keep
            total = g + w
            fit = np.where(total > icv[brain], icv[brain] / np.maximum(total, 1e-6), 1.0)  # brain within the intracranial space
            g, w = g * fit, w * fit
            hole, rim = old_infarct_fractions(brain_head, self.chronic, edge_mm)
            old_infarct[brain] = hole * (g + w)
            g, w = g * (1.0 - hole), w * (1.0 - hole)
            gliosis[brain] = rim * (g + w)
            horn = np.clip(np.abs(brain_t[:, 1] + 8.0) / 30.0, 0.0, 1.0)  # frontal and occipital horns
            wmh[brain] = wmh_fraction(brain_head, w, outside_ventricles, horn, self.chronic, edge_mm)
            gm[brain], wm[brain] = g, w
        out = {
            "air": 1.0 - inside_head + cavity,
            "scalp": soft,
            "bone": bone,
            "csf": icv - gm - wm + eye,
            "gm": gm,
            "wm": wm,
            "icv": icv,
            "old_infarct": old_infarct,
            "gliosis": gliosis,
            "wmh": wmh,
            "air_cavity_distance_mm": cavity_distance,
            "skull_base_air": cavity,
        }
        return {k: v.reshape(shape) for k, v in out.items()}

    def territory_distances_mm(self, head) -> np.ndarray:
        """Distance-like values (head mm) of the 15 territories (see :func:`mni_template.territory_values_mm`)."""
        head = np.asarray(head)
        t = self.to_template(head.reshape(-1, 3))
        values = mni.territory_values_mm(t, self.seeds_mni, self.seed_region, self.territory_offset_mm, list(self.deep_territories), self.tentorium_offset_mm)
        return (values * np.float32(self.mean_scale)).reshape(*head.shape[:-1], len(REGIONS))

    # -- vessels ------------------------------------------------------------------------------
    def vessel_layout(self):
        """(layout, cortical_point_mm) for :func:`strokelabel.phantom.vessels.make_tree`."""
        flip = np.array([-1.0, 1.0, 1.0])
        layout = {"midline": [(name, parent, radius, self.to_head(np.array(points, float))) for name, parent, radius, points in mni.MIDLINE_ARTERIES_MNI]}
        for side, sign in (("L", 1.0), ("R", -1.0)):
            mirror = np.array([sign, 1.0, 1.0])
            layout[side] = [(name, parent, radius, self.to_head(np.array(points, float) * mirror)) for name, parent, radius, points in mni.LEFT_ARTERIES_MNI]
        layout["sinuses"] = [
            ("SSS", 3.0, self.to_head(np.array(mni.superior_sagittal_sinus_mni()))),
            ("straight-sinus", 2.0, self.to_head(np.array(mni.STRAIGHT_SINUS_MNI, float))),
            ("transverse-L", 2.8, self.to_head(np.array(mni.TRANSVERSE_LEFT_MNI, float))),
            ("transverse-R", 2.8, self.to_head(np.array(mni.TRANSVERSE_LEFT_MNI, float) * flip)),
        ]

        def cortical_point_mm(target_head, depth_mm):
            target = self.to_template(np.asarray(target_head, np.float64)[None, :])[0]
            return self.to_head(mni.cortical_point_mni(target, depth_mm / self.mean_scale)[None, :])[0]

        return layout, cortical_point_mm

    def describe(self) -> dict:
        return {
            "brain_semi_axes_mm": [round(float(v), 2) for v in self.brain_axes_mm],
            "scale": [round(float(v), 4) for v in self.scale],
            "age_years": round(self.age_years, 1),
            "atrophy": round(self.atrophy, 3),
            "ventricle_dilation_mm": round(self.ventricle_dilation_mm, 2),
            "subarachnoid_mm": round(self.csf_mm, 2),
            "warp_rms_mm": round(float(np.sqrt((self.warp_mm**2).sum(axis=0).mean())), 3),
            "petalia_mm": [round(v, 2) for v in self.petalia_mm],
            "skull_mm": round(self.skull_mm, 2),
            "scalp_mm": round(self.scalp_mm, 2),
            "sinus_pneumatisation_mm": round(self.sinus_mm, 2),
            "mastoid_air": round(self.mastoid_air, 3),
            "chronic": self.chronic.describe(),
        }


def _spline_matrix(n_nodes: int, factor: int) -> np.ndarray:
    """(m, n) weights of the natural cubic spline through n nodes, at m = (n − 1)·factor + 1 points."""
    from scipy.interpolate import CubicSpline

    x = np.arange(n_nodes, dtype=float)
    return CubicSpline(x, np.eye(n_nodes), bc_type="natural")(np.arange((n_nodes - 1) * factor + 1) / factor)


def _warp_field(rng: np.random.Generator, sigma_mm: float, petalia: tuple[float, float]) -> np.ndarray:
    """Dense displacement (3, nx, ny, nz) on the warp grid: independent control nodes, cubic
    spline interpolation, the left-right component tapered at the midline, plus petalia."""
    coarse = rng.normal(0.0, sigma_mm, (3, *WARP_NODES))
    factor = int(WARP_NODE_MM / WARP_STEP_MM)
    bx, by, bz = (_spline_matrix(n, factor) for n in WARP_NODES)
    dense = np.einsum("ia,jb,kc,dabc->dijk", bx, by, bz, coarse, optimize=True)
    axes = [WARP_ORIGIN_MM[i] + WARP_STEP_MM * np.arange(dense.shape[i + 1]) for i in range(3)]
    u, v = axes[0][:, None, None], axes[1][None, :, None]
    dense[0] *= np.tanh(np.abs(u) / MIDLINE_TAPER_MM)
    right, left = 1.0 / (1.0 + np.exp(-u / 8.0)), 1.0 / (1.0 + np.exp(u / 8.0))
    frontal, occipital = petalia
    dense[1] += frontal * right * np.clip((v - 10.0) / 50.0, 0.0, 1.0) - occipital * left * np.clip((-v - 40.0) / 50.0, 0.0, 1.0)
    return dense.astype(np.float32)


def _territories(rng: np.random.Generator):
    seeds, owners = [], []
    for name, points in mni.CORTICAL_SEEDS_LEFT.items():
        for side, sign in (("L", 1.0), ("R", -1.0)):
            for p in points:
                seeds.append(np.array(p, float) * [sign, 1, 1] + rng.normal(0.0, 3.0, 3))
                owners.append(region_id(f"{name}-{side}"))
    offsets = np.zeros(len(REGIONS))
    for name in mni.CORTICAL_SEEDS_LEFT:
        for side in ("L", "R"):
            offsets[region_id(f"{name}-{side}") - 1] = rng.normal(0.0, 2.5)
    deep = []
    for name, centre, semi in mni.DEEP_TERRITORIES_LEFT:
        for side, sign in (("L", 1.0), ("R", -1.0)):
            deep.append((region_id(f"{name}-{side}"), tuple(np.array(centre, float) * [sign, 1, 1] + rng.normal(0.0, 1.5, 3)), tuple(np.array(semi, float) * rng.uniform(0.9, 1.1, 3))))
    return np.array(seeds), np.array(owners), offsets, tuple(deep), float(rng.normal(0.0, 2.0))


def make_template_anatomy(rng: np.random.Generator) -> TemplateAnatomy:
    """A patient drawn from ``rng``: size, warp, age and its findings, skull, territories."""
    from strokelabel.phantom.sites import probe_sites

    age = float(np.clip(rng.normal(70.0, 12.0), 35.0, 95.0))
    ageing = float(np.clip((age - 40.0) / 50.0, 0.0, 1.0))
    young_ml = rng.uniform(*YOUNG_BRAIN_ML)
    scale = (young_ml / TEMPLATE_BRAIN_ML) ** (1.0 / 3.0) * (1.0 + rng.normal(0.0, 0.025, 3))
    petalia = tuple(float(rng.uniform(0.0, 4.0) * (1.0 if rng.random() < 0.75 else -1.0)) for _ in range(2))
    warp = _warp_field(rng, float(rng.uniform(1.5, 3.5)), petalia)
    atrophy = float(np.clip(ageing + rng.normal(0.0, 0.15), 0.0, 1.0))
    skull_waves = np.column_stack([rng.normal(size=(4, 3)), rng.uniform(0, 2 * np.pi, 4), rng.uniform(0.04, 0.12, 4)])
    seeds, owners, offsets, deep, tentorium = _territories(rng)
    anatomy = TemplateAnatomy(
        scale=scale,
        age_years=age,
        warp_mm=warp,
        petalia_mm=petalia,
        csf_mm=float(rng.uniform(0.3, 1.0) + 1.2 * atrophy),
        atrophy=atrophy,
        ventricle_dilation_mm=float(np.clip(5.0 * ageing + rng.normal(0.0, 1.0), 0.0, 7.0)),
        skull_mm=float(rng.uniform(4.5, 7.5)),
        skull_waves=skull_waves,
        scalp_mm=float(rng.uniform(3.0, 6.5)),
        temporalis_mm=float(rng.uniform(4.0, 10.0)),
        neck_mm=float(np.clip(rng.normal(0.0, 4.0), -8.0, 8.0)),
        sinus_mm=float(rng.uniform(-3.0, 2.0)),
        mastoid_air=float(rng.uniform(0.0, 1.0)),
        seeds_mni=seeds,
        seed_region=owners,
        territory_offset_mm=offsets,
        deep_territories=deep,
        tentorium_offset_mm=tentorium,
        territory_seeds_mm=np.zeros((0, 3)),
        territory_seed_region=owners,
    )
    anatomy = replace(anatomy, territory_seeds_mm=anatomy.to_head(seeds))
    chronic = draw_chronic(rng, age, probe_sites(anatomy, rng))
    return replace(anatomy, chronic=chronic)
