"""One patient, drawn from a seed: anatomy, pose in the scanner, vessels, occlusion, tissue values,
contrast timing and clinical values. Every study kind of the same seed images this same patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strokelabel.phantom.anatomy import REGIONS, make_anatomy
from strokelabel.phantom.geometry import Pose, rotation_matrix
from strokelabel.phantom.ischemia import ELLIPSOID_MIX, TEMPLATE_MIX, Ischemia, make_ischemia
from strokelabel.phantom.vessels import VesselTree, make_tree

# Anatomy families: "ellipsoid" (analytic, the original phantoms) and "template" (the MNI
# ICBM152 2009a template warped per patient), with their scenario mixes.
FAMILIES = ("ellipsoid", "template")
SCENARIO_MIX = {"ellipsoid": ELLIPSOID_MIX, "template": TEMPLATE_MIX}


@dataclass(frozen=True)
class Patient:
    seed: int
    anatomy: object  # anatomy.Anatomy (ellipsoid family) or template_anatomy.TemplateAnatomy
    pose: Pose
    pose_deg: dict
    tree: VesselTree
    ischemia: Ischemia
    onset_to_imaging_min: float
    tissue: dict  # perfusion and image values per tissue (see make_patient)
    aif_ctp: dict  # arterial_input_hu() arguments of the CT perfusion bolus
    aif_cta: dict  # ... of the longer multiphase-CTA bolus
    ctp_protocol: dict  # dt_s, n_frames
    noise: dict  # per modality
    base_delay: dict  # healthy bolus delay: d0_s + per_100mm_s · distance from the circle of Willis
    nihss_offset: float

    @property
    def family(self) -> str:
        return self.anatomy.family

    def describe(self) -> dict:
        return {
            "seed": self.seed,
            "family": self.family,
            **self.anatomy.describe(),
            "pose_deg": {k: round(v, 3) for k, v in self.pose_deg.items()},
            "head_centre_world_mm": [round(float(v), 3) for v in self.pose.centre_mm],
            "onset_to_imaging_min": round(self.onset_to_imaging_min, 1),
            "tissue": {k: round(float(v), 4) for k, v in self.tissue.items()},
            "aif_ctp": {k: round(float(v), 4) for k, v in self.aif_ctp.items()},
            "aif_cta": {k: round(float(v), 4) for k, v in self.aif_cta.items()},
            "ctp_protocol": self.ctp_protocol,
            "noise": {k: round(float(v), 4) for k, v in self.noise.items()},
            "healthy_delay": {k: round(float(v), 4) for k, v in self.base_delay.items()},
            "ischemia": self.ischemia.describe(),
            "regions": list(REGIONS),
        }


def make_patient(seed: int, family: str = "ellipsoid", scenario: str | None = None) -> Patient:
    """The patient of ``seed`` (deterministic: the same seed and family give the same patient).

    ``family``: "ellipsoid" or "template" (see FAMILIES); ``scenario`` forces the occlusion
    scenario (see ischemia.SEVERITY_CLASS) instead of drawing it from the family's mix.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown anatomy family {family!r}; expected one of {FAMILIES}")
    if family == "ellipsoid":
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5747]))
        anatomy = make_anatomy(rng)
    else:
        from strokelabel.phantom.template_anatomy import make_template_anatomy

        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5747, 0x7E]))
        anatomy = make_template_anatomy(rng)
    pose_deg = {"yaw": rng.uniform(-10, 10), "pitch": rng.uniform(-8, 8), "roll": rng.uniform(-3, 3)}
    centre = np.array([rng.uniform(-9, 9), rng.uniform(-12, 8), rng.uniform(-8, 2)])
    pose = Pose(rotation_matrix(pose_deg["yaw"], pose_deg["pitch"], pose_deg["roll"]), centre)
    layout, cortical_point_mm = anatomy.vessel_layout()
    tree = make_tree(rng, layout, anatomy.territory_seeds_mm, anatomy.territory_seed_region, list(REGIONS), cortical_point_mm)
    onset = 40.0 + 680.0 * rng.random() ** 1.5
    ischemia = make_ischemia(rng, tree, anatomy, onset, mix=SCENARIO_MIX[family], scenario=scenario)
    cbf_gm = float(np.clip(rng.normal(60, 5), 48, 72))
    cbf_wm = float(np.clip(rng.normal(24, 2.5), 18, 30))
    tissue = {
        "cbf_gm_ml_100g_min": cbf_gm,
        "cbf_wm_ml_100g_min": cbf_wm,
        "mtt_gm_s": rng.uniform(3.4, 4.4),
        "mtt_wm_s": rng.uniform(4.2, 5.2),
        "hu_gm": rng.uniform(34, 40),
        "hu_wm": rng.uniform(24, 30),
        "hu_csf": rng.uniform(2, 9),
        "hu_bone": rng.uniform(1000, 1600),
        "hu_soft": rng.uniform(20, 45),
        "hu_blood": rng.uniform(38, 48),
        "hu_clot": rng.uniform(45, 60),
        "core_hypodensity_hu": rng.uniform(1.0, 4.0) * min(onset / 240.0, 1.5),
        "adc_gm_1e3_mm2_s": rng.uniform(0.78, 0.88),
        "adc_wm_1e3_mm2_s": rng.uniform(0.68, 0.78),
        "adc_csf_1e3_mm2_s": rng.uniform(2.9, 3.2),
        "adc_core_1e3_mm2_s": rng.uniform(0.40, 0.55),
        "flair_core_gain": 0.45 * float(np.clip((onset - 180.0) / 300.0, 0.0, 1.0)),
        "mri_scale": rng.uniform(800, 1200),
    }
    t0 = rng.uniform(3.5, 8.0)
    aif_ctp = {"t0_s": t0, "peak_hu": rng.uniform(250, 450), "alpha": rng.uniform(2.6, 3.8), "beta_s": rng.uniform(1.2, 1.9), "recirculation": rng.uniform(0.05, 0.12)}
    aif_cta = {"t0_s": t0, "peak_hu": rng.uniform(330, 480), "alpha": 3.0, "beta_s": rng.uniform(3.4, 4.4), "recirculation": rng.uniform(0.15, 0.25)}
    dt = float(rng.choice([1.0, 1.5, 2.0], p=[0.2, 0.5, 0.3]))
    protocol = {"dt_s": dt, "n_frames": int(np.clip(round(rng.uniform(55, 70) / dt), 30, 40))}
    noise = {"ctp_hu": rng.uniform(3.0, 6.0), "cta_hu": rng.uniform(5.0, 9.0), "mri_fraction": rng.uniform(0.015, 0.025)}
    base_delay = {"d0_s": rng.uniform(0.2, 0.8), "per_100mm_s": rng.uniform(0.5, 1.2)}
    return Patient(
        seed=int(seed),
        anatomy=anatomy,
        pose=pose,
        pose_deg=pose_deg,
        tree=tree,
        ischemia=ischemia,
        onset_to_imaging_min=float(onset),
        tissue={k: float(v) for k, v in tissue.items()},
        aif_ctp={k: float(v) for k, v in aif_ctp.items()},
        aif_cta={k: float(v) for k, v in aif_cta.items()},
        ctp_protocol=protocol,
        noise={k: float(v) for k, v in noise.items()},
        base_delay={k: float(v) for k, v in base_delay.items()},
        nihss_offset=float(rng.normal(0.0, 1.5)),
    )


def nihss(core_ml: float, penumbra_ml: float, offset: float = 0.0) -> int:
    """NIHSS rising with the ischemic volume (log-like: small lesions a few points, large-vessel 15-25)."""
    score = 1.5 + 3.2 * np.log1p((core_ml + 0.5 * penumbra_ml) / 3.0) + offset
    return int(np.clip(round(score), 0, 42))
