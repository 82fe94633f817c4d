"""Training-time appearance augmentation: per task and route, a list of MONAI dictionary random
transforms for the normalised samples the trainers draw (2-D slices ``(C, H, W)`` or 3-D crops
``(C, H, W, D)``; every transform here works on either).

Why: models trained on one look learn the look (issue 9: on a real ISLES'22 case the MRI model
drew 80-100 mL along the cortical rim where the expert drew 7 mL). The phantom generator now
draws each study's appearance (``strokelabel.phantom.appearance``); these transforms vary it
again per sample, cheaply, as SynthSeg and SynthStroke do with MONAI's random transforms.

**Channels are not all alike**, so each sample's channels are split into groups (MONAI
``SplitDimd`` / ``ConcatItemsd``), each group gets only the transforms true to its physics, and
the channels go back in their order:

- transforms given several group keys draw one random state for all of them (same bias field,
  same gamma, same blur): the channels of one acquisition stay consistent;
- one transform on a multi-channel group draws its noise per channel (independent noise, one
  level);
- channels that are not images (the NIHSS channel of core_penumbra, clot_region's head
  coordinates) are never touched.

The Siamese route's channels are DWI and the DWI mirrored about the mid-sagittal plane: only
transforms that commute with the mirror (point-wise intensity maps with the same parameters,
isotropic blur, noise) apply to them; a bias field would be mirrored in one channel and not the
other, a fake asymmetry, so it is left to the generator (which applies it before mirroring).

Every range is in :data:`RANGES`, one place, with its reason. ``spatial_dims`` (2 for slices,
the trainers' case today; 3 for crops) only sets the low-resolution transform's upsampling. Deterministic with
``Compose(...).set_random_state(seed)``. The trainers are not wired here (the lead does it):
append a task's list after its crop/squeeze transforms.
"""

from __future__ import annotations

from typing import Sequence

from monai.transforms import (
    ConcatItemsd,
    DeleteItemsd,
    EnsureTyped,
    RandAdjustContrastd,
    RandBiasFieldd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    RandRicianNoised,
    RandScaleIntensityd,
    RandSimulateLowResolutiond,
    SplitDimd,
)

#: Every knob: (value, probability). Intensities are in each channel's normalised unit.
RANGES = {
    # MRI, DWI divided by the brain median (healthy ~1, clip 6)
    # degree-3 log-polynomial (MONAI RandBiasField); coefficients per spatial dims so that the field's
    # largest deviation is ~25 % at the median draw (measured: 1.22 in 2-D and 3-D), as real coils
    "dwi_bias_coeff": ({2: (0.0, 0.04), 3: (0.0, 0.02)}, 0.4),
    "dwi_gamma": ((0.7, 1.5), 0.3),  # contrast (T2 weighting, windowing), mean and std kept
    "dwi_histogram_points": ((5, 10), 0.15),  # non-linear intensity remap (scanner post-processing)
    "dwi_scale": (0.15, 0.3),  # ± factor: brain-median normalisation off by a lesion or atrophy
    "dwi_rician_std": (0.08, 0.3),  # up to 8 % of healthy DWI: SNR down to ~12, as thick-slice 1.5 T DWI
    # MRI, ADC in 10^-3 mm²/s (quantitative: calibration and fit noise only)
    "adc_scale": (0.05, 0.3),  # ± 5 %: vendor diffusion-time and gradient calibration
    "adc_noise_std": (0.05, 0.3),  # fit noise, 10^-3 mm²/s
    # CT perfusion maps divided by typical healthy values (ischemic_lesion ctp route)
    "cbf_cbv_scale": (0.25, 0.4),  # ± 25 % vendor calibration, one factor for CBF and CBV (MTT unchanged)
    "mtt_scale": (0.15, 0.3),  # deconvolution regularisation lengthens or shortens MTT
    "tmax_scale": (0.05, 0.2),  # Tmax is absolute (the 6 s threshold): ± 5 % only
    "perfusion_noise_std": (0.05, 0.3),
    # core_penumbra: z-scored maps (relative CBF/CBV already cancel calibration)
    "zscored_noise_std": (0.1, 0.3),
    "zscored_mtt_scale": (0.1, 0.2),
    # CTA, HU window [-100, 600] -> [0, 1] (1 unit = 700 HU)
    "cta_noise_std": (0.025, 0.3),  # up to ~18 HU: low-dose CTA
    "cta_scale": (0.15, 0.3),  # bolus strength and timing: enhancement ± 15 %
    "cta_gamma": ((0.8, 1.25), 0.2),
    "spiral_scale": (0.1, 0.2),
    # every image group, spatial (in pixels of the working grid)
    "smooth_sigma_px": ((0.3, 1.0), 0.2),  # reconstruction kernel, vendor map smoothing
    "low_resolution_zoom": ((0.5, 1.0), 0.2),  # acquired coarser than the working grid (thick, 2.2 mm)
}

ROUTES = ("ctp", "mri", "siamese")


def _r(name):
    return RANGES[name]


def grouped(groups: dict[str, Sequence[int]], n_channels: int, transforms: list, key: str = "image") -> list:
    """``transforms`` written for group keys, wrapped between a split of ``key``'s channels into
    ``groups`` (name -> channel indices) and their concatenation back in the original order.
    Channels in no group pass through untouched."""
    groups = {g: list(idx) for g, idx in groups.items()}
    used = sorted(i for idx in groups.values() for i in idx)
    if len(used) != len(set(used)) or (used and (used[0] < 0 or used[-1] >= n_channels)):
        raise ValueError(f"channel groups {groups} overlap or fall outside 0..{n_channels - 1}")
    rest = [i for i in range(n_channels) if i not in set(used)]
    if rest:
        groups["_untouched"] = rest
    if len(groups) == 1 and list(groups.values())[0] == list(range(n_channels)):
        only = next(iter(groups))
        return [_rekey(t, {only: key}) for t in transforms]
    singles = [f"{key}_c{i}" for i in range(n_channels)]
    out: list = [SplitDimd(keys=key, output_postfixes=[f"c{i}" for i in range(n_channels)], dim=0, keepdim=True, update_meta=False)]
    out += [ConcatItemsd(keys=[singles[i] for i in idx], name=g, dim=0) for g, idx in groups.items()]
    out.append(DeleteItemsd(keys=singles))
    out += transforms
    back = {}
    for g, idx in groups.items():
        out.append(SplitDimd(keys=g, output_postfixes=[f"c{i}" for i in idx], dim=0, keepdim=True, update_meta=False))
        back.update({i: f"{g}_c{i}" for i in idx})
    # Transformed groups may come back as MetaTensors and untouched ones not: one type to concatenate.
    out.append(EnsureTyped(keys=list(back.values()), data_type="tensor", track_meta=False))
    out.append(ConcatItemsd(keys=[back[i] for i in range(n_channels)], name=key, dim=0))
    out.append(DeleteItemsd(keys=[*groups, *back.values()]))
    return out


def _rekey(transform, mapping: dict):
    transform.keys = tuple(mapping.get(k, k) for k in transform.keys)
    return transform


def _spatial(keys, spatial_dims: int) -> list:
    """Blur and low resolution, one random state for all ``keys`` (one acquisition)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims is 2 (slices) or 3 (crops), not {spatial_dims}")
    (low, high), p = _r("smooth_sigma_px")
    zoom, pz = _r("low_resolution_zoom")
    return [
        RandGaussianSmoothd(keys=keys, sigma_x=(low, high), sigma_y=(low, high), sigma_z=(low, high), prob=p),
        RandSimulateLowResolutiond(keys=keys, zoom_range=zoom, prob=pz, upsample_mode="bilinear" if spatial_dims == 2 else "trilinear"),
    ]


def ischemic_lesion_augmentations(route: str, spatial_dims: int = 2) -> list:
    """For ``ischemic_lesion`` samples of ``route``: ``mri`` (DWI | ADC), ``siamese`` (DWI | DWI
    mirrored) or ``ctp`` (CBF, CBV | MTT, Tmax), channels as ``lib.transforms.ischemic_lesion``."""
    if route == "mri":
        (bias, pb), (gamma, pg), (points, ph) = _r("dwi_bias_coeff"), _r("dwi_gamma"), _r("dwi_histogram_points")
        # DWI and its mirror share one state (channels 0, 1), ADC and its mirror another (2, 3)
        return grouped({"dwi": [0, 1], "adc": [2, 3]}, 4, [
            RandBiasFieldd(keys="dwi", degree=3, coeff_range=bias[spatial_dims], prob=pb),
            RandAdjustContrastd(keys="dwi", gamma=gamma, retain_stats=True, prob=pg),
            RandHistogramShiftd(keys="dwi", num_control_points=points, prob=ph),
            RandScaleIntensityd(keys="dwi", factors=_r("dwi_scale")[0], prob=_r("dwi_scale")[1]),
            RandRicianNoised(keys="dwi", std=_r("dwi_rician_std")[0], prob=_r("dwi_rician_std")[1], sample_std=True),
            RandScaleIntensityd(keys="adc", factors=_r("adc_scale")[0], prob=_r("adc_scale")[1]),
            RandGaussianNoised(keys="adc", std=_r("adc_noise_std")[0], prob=_r("adc_noise_std")[1], sample_std=True),
            *_spatial(("dwi", "adc"), spatial_dims),
        ])
    if route == "siamese":
        (gamma, pg), (points, ph) = _r("dwi_gamma"), _r("dwi_histogram_points")
        return grouped({"pair": [0, 1]}, 2, [
            RandAdjustContrastd(keys="pair", gamma=gamma, retain_stats=True, prob=pg),
            RandHistogramShiftd(keys="pair", num_control_points=points, prob=ph),
            RandScaleIntensityd(keys="pair", factors=_r("dwi_scale")[0], prob=_r("dwi_scale")[1]),
            RandRicianNoised(keys="pair", std=_r("dwi_rician_std")[0], prob=_r("dwi_rician_std")[1], sample_std=True),
            *_spatial("pair", spatial_dims),
        ])
    if route == "ctp":
        return grouped({"flow": [0, 1], "mtt": [2], "tmax": [3]}, 4, [
            RandScaleIntensityd(keys="flow", factors=_r("cbf_cbv_scale")[0], prob=_r("cbf_cbv_scale")[1]),
            RandScaleIntensityd(keys="mtt", factors=_r("mtt_scale")[0], prob=_r("mtt_scale")[1]),
            RandScaleIntensityd(keys="tmax", factors=_r("tmax_scale")[0], prob=_r("tmax_scale")[1]),
            RandGaussianNoised(keys="flow", std=_r("perfusion_noise_std")[0], prob=_r("perfusion_noise_std")[1], sample_std=True),
            RandGaussianNoised(keys="mtt", std=_r("perfusion_noise_std")[0], prob=_r("perfusion_noise_std")[1], sample_std=True),
            RandGaussianNoised(keys="tmax", std=_r("perfusion_noise_std")[0], prob=_r("perfusion_noise_std")[1], sample_std=True),
            *_spatial(("flow", "mtt", "tmax"), spatial_dims),
        ])
    raise ValueError(f"unknown ischemic_lesion route {route!r}; expected one of {ROUTES}")


def core_penumbra_augmentations(maps: Sequence[str], spatial_dims: int = 2) -> list:
    """For ``core_penumbra`` samples: the plan's normalised ``maps`` in order, then the NIHSS channel
    (left untouched: it carries a score, not an image)."""
    maps = list(maps)
    groups = {"maps": list(range(len(maps)))}
    transforms = [RandGaussianNoised(keys="maps", std=_r("zscored_noise_std")[0], prob=_r("zscored_noise_std")[1], sample_std=True)]
    if "mtt" in maps:
        groups = {"maps": [i for i, m in enumerate(maps) if m != "mtt"], "mtt": [maps.index("mtt")]}
        transforms = [
            RandScaleIntensityd(keys="mtt", factors=_r("zscored_mtt_scale")[0], prob=_r("zscored_mtt_scale")[1]),
            RandGaussianNoised(keys="maps", std=_r("zscored_noise_std")[0], prob=_r("zscored_noise_std")[1], sample_std=True),
            RandGaussianNoised(keys="mtt", std=_r("zscored_noise_std")[0], prob=_r("zscored_noise_std")[1], sample_std=True),
        ]
    return grouped(groups, len(maps) + 1, transforms + _spatial(tuple(groups), spatial_dims))


def clot_region_augmentations(input_names: Sequence[str], context_slices: int, spatial_dims: int = 2) -> list:
    """For ``clot_region`` samples: channels ``input_names`` x (2k + 1) slices, grouped by input as
    ``lib.networks.ami_net.slice_windows`` lays them out. CTA phases and their mirrors share one
    intensity and blur state (a mirror must stay the mirror of its phase); SPIRAL only scales;
    head coordinates are never touched."""
    width = 2 * int(context_slices) + 1
    channels = {name: list(range(i * width, (i + 1) * width)) for i, name in enumerate(input_names)}
    cta = [c for name, idx in channels.items() if name.startswith("cta") for c in idx]
    spiral = channels.get("spiral", [])
    groups = {"cta": cta, **({"spiral": spiral} if spiral else {})}
    (gamma, pg) = _r("cta_gamma")
    transforms = [
        RandScaleIntensityd(keys="cta", factors=_r("cta_scale")[0], prob=_r("cta_scale")[1]),
        RandAdjustContrastd(keys="cta", gamma=gamma, retain_stats=True, prob=pg),
        RandGaussianNoised(keys="cta", std=_r("cta_noise_std")[0], prob=_r("cta_noise_std")[1], sample_std=True),
        *_spatial("cta", spatial_dims),
    ]
    if spiral:
        transforms.append(RandScaleIntensityd(keys="spiral", factors=_r("spiral_scale")[0], prob=_r("spiral_scale")[1]))
    return grouped(groups, len(input_names) * width, transforms)


def augmentations(task: str, route: str | None = None, spatial_dims: int = 2, **kwargs) -> list:
    """The list of a task (``ischemic_lesion`` with ``route``; ``core_penumbra`` with ``maps``;
    ``clot_region`` with ``input_names`` and ``context_slices``), for 2-D slices or 3-D crops."""
    if task == "ischemic_lesion":
        return ischemic_lesion_augmentations(route, spatial_dims)
    if task == "core_penumbra":
        return core_penumbra_augmentations(kwargs["maps"], spatial_dims)
    if task == "clot_region":
        return clot_region_augmentations(kwargs["input_names"], kwargs["context_slices"], spatial_dims)
    raise ValueError(f"unknown task {task!r}; expected ischemic_lesion, core_penumbra or clot_region")
