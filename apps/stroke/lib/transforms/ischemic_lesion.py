"""ischemic_lesion: the plan (which model reads which study, channels, normalisation, in-plane
spacing), the transform that turns a loaded study into network input, and the adapters that
let MDANet (two modality groups) and the hemispheric Siamese net (image and its mirror) sit in
MONAI engines that pass one tensor.

Routes (one task name, the model chosen by the study's modalities):

=========== ============================================ ============================================
route       study                                        input channels (normalised)
=========== ============================================ ============================================
``ctp``     CT perfusion maps                            MDANet, groups (CBF, CBV) | (MTT, Tmax)
``mri``     MRI with DWI and ADC                         MDANet, groups (DWI, DWI mirrored) | (ADC,
                                                         ADC mirrored), mirrored about the study's
                                                         mid-sagittal plane
``siamese`` MRI with DWI only (no ADC)                   Siamese, DWI | DWI mirrored about the
                                                         mid-sagittal plane found from the image
=========== ============================================ ============================================

The networks are 2-D (axial slices, as seed 003), on slices resampled in-plane to
``PLAN["inplane_spacing_mm"]`` so that 0.43 mm CTP and 1.8 mm MRI look alike; the logits go
back to the study grid. On CT perfusion the lesion is the ischemic core (ISLES 2018's label):
a saved core/penumbra label (1/2) is read as lesion = core (1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Transform
from torch import nn

from lib.transforms import grid
from lib.transforms.grid import mirror_averaged, resample_inplane
from strokelabel import guard
from strokelabel.errors import StrokeLabelError
from strokelabel.midsagittal import mirror_about_plane

ROUTES = ("ctp", "mri", "siamese")

# Data-derived decisions, kept in one place (nnU-Net's "plan").
PLAN = {
    "inplane_spacing_mm": 1.8,
    # divide each map by a typical healthy value, clip to [0, clip]
    "ctp_scale": {"cbf": 60.0, "cbv": 4.0, "mtt": 8.0, "tmax": 10.0},
    "ctp_clip": 4.0,
    "adc_clip_1e3": 4.0,
    "dwi_clip": 6.0,
}
GROUPS = {"ctp": (("cbf", "cbv"), ("mtt", "tmax")), "mri": (("dwi", "dwi_mirror"), ("adc", "adc_mirror")), "siamese": (("dwi",), ("dwi_mirror",))}
KIND_OF_ROUTE = {"ctp": "ctp", "mri": "mri", "siamese": "mri"}


def route_for(kind: str, modalities: Sequence[str]) -> str:
    """Which model reads a study of ``kind`` that has ``modalities``."""
    if kind == "ctp":
        return "ctp"
    if kind == "mri":
        return "mri" if "adc" in modalities else "siamese"
    raise StrokeLabelError(f"ischemic_lesion reads MRI (DWI, with or without ADC) or CT perfusion studies, not {kind.upper()}")


# Parenchyma on ADC (10^-3 mm²/s): below is noise or fat, above CSF (ventricles, sulci).
TISSUE_ADC_RANGE_1E3 = (0.3, 1.5)


def normalised_dwi(dwi: np.ndarray, brain: np.ndarray, adc_1e3: np.ndarray | None = None) -> np.ndarray:
    """DWI divided by the median of the brain's parenchyma (arbitrary scanner units -> ~1 in healthy tissue).

    With ADC, CSF is left out of the median: an old brain's large ventricles and sulci (dark on DWI)
    would otherwise pull the median down and make all tissue look bright."""
    tissue = brain
    if adc_1e3 is not None:
        low, high = TISSUE_ADC_RANGE_1E3
        parenchyma = brain & (adc_1e3 > low) & (adc_1e3 < high)
        tissue = parenchyma if parenchyma.sum() > 0.2 * brain.sum() else brain
    median = float(np.median(dwi[tissue])) if tissue.any() else float(np.median(dwi[dwi > 0]))
    return np.clip(dwi / max(median, 1e-6), 0.0, PLAN["dwi_clip"]).astype(np.float32)


def study_channels(study, route: str) -> tuple[np.ndarray, dict]:
    """The route's input channels (C, X, Y, Z) on the study's (RAS) grid, and facts for the result JSON.

    Everything outside the study's brain mask is 0, so a model sees the same input whether the
    site strips the skull or not; ADC arrives from the loader in 10^-3 mm²/s."""
    images, brain = study.images, study.brain_mask
    info: dict = {}
    if route == "ctp":
        chans = [np.clip(images[m] / PLAN["ctp_scale"][m], 0.0, PLAN["ctp_clip"]) * brain for m in ("cbf", "cbv", "mtt", "tmax")]
        return np.stack(chans).astype(np.float32), info
    dwi = np.asarray(images["dwi"], dtype=np.float32)
    if route == "mri":
        adc_1e3 = (np.clip(images["adc"], 0.0, PLAN["adc_clip_1e3"]) * brain).astype(np.float32)
        dwi_n = normalised_dwi(dwi, brain, images["adc"]) * brain
        info["adc_unit_assumption"] = study.notes.get("adc_unit_assumption")
        # Each modality beside its mirror about the mid-sagittal plane: the network compares the two
        # hemispheres, so brightness present on both sides (T2 of the temporal lobes, the cortical rim)
        # is told from a lesion on one (seed 000's idea inside seed 003's groups).
        plane = study.midsagittal_plane
        return np.stack([dwi_n, mirror_about_plane(dwi_n, plane), adc_1e3, mirror_about_plane(adc_1e3, plane)]).astype(np.float32), info
    if route == "siamese":
        x = normalised_dwi(dwi, brain) * brain
        plane = study.midsagittal_plane
        info["midsagittal_plane"] = {"offset_mm": round(plane.offset_mm, 2), "angle_deg": round(plane.angle_deg, 2)}
        return np.stack([x, mirror_about_plane(x, plane).astype(np.float32)]), info
    raise ValueError(f"unknown route {route!r}")


def working_image(study, route: str) -> tuple[torch.Tensor, tuple[int, int], dict]:
    """The route's input on the in-plane working grid ``(C, X', Y', Z)``, the study's in-plane size (where
    the output goes back to), and the facts of :func:`study_channels`.

    CT perfusion (a 512 x 512 grid): one map at a time, on the brain's box and resampled at once, so no
    (4 x study grid) stack is held; interpolation is per channel, so the numbers are the stacked ones."""
    if route != "ctp":
        channels, info = study_channels(study, route)
        return resample_inplane(torch.from_numpy(channels), inplane_size(channels.shape[1:], study.spacing_mm)), channels.shape[1:3], info
    from strokelabel.boxes import bounding_box, paste

    brain, shape = study.brain_mask, study.shape
    size = inplane_size(shape, study.spacing_mm)
    box = bounding_box(brain) or tuple(slice(0, n) for n in shape)
    inside = brain[box]
    planes = []
    for m in ("cbf", "cbv", "mtt", "tmax"):
        channel = (np.clip(study.images[m][box] / PLAN["ctp_scale"][m], 0.0, PLAN["ctp_clip"]) * inside).astype(np.float32)
        planes.append(resample_inplane(torch.from_numpy(paste(channel, box, shape, fill=0.0)[None]), size)[0])
    return torch.stack(planes), tuple(shape[:2]), {}


def inplane_size(shape, spacing_mm) -> tuple[int, int]:
    return grid.inplane_size(shape, spacing_mm, PLAN["inplane_spacing_mm"])


def lesion_target(label: np.ndarray, kind: str) -> np.ndarray:
    """Lesion 0/1 from a saved label: on CTP the core (1) of a core/penumbra label."""
    label = np.asarray(label)
    if label.ndim == 4:
        label = label[..., 0]
    return (label == 1).astype(np.uint8)


class IschemicLesionInputd(Transform):
    """Training/validation items ``{"image": reference path, "label": path, "kind"}`` -> network input.

    Loads the study, builds the ``route``'s channels, resamples in-plane to the plan's spacing;
    ``image`` becomes (C, X', Y', Z) float32 and ``label`` (1, X', Y', Z) lesion 0/1.
    """

    def __init__(self, route: str):
        self.route = route

    def __call__(self, data):
        from strokelabel.study import load_label, load_study

        d = dict(data)
        required = {"ctp": ("cbf", "cbv", "mtt", "tmax"), "mri": ("dwi", "adc"), "siamese": ("dwi",)}[self.route]
        study = load_study(d["image"], required)
        channels, _ = study_channels(study, self.route)
        size = inplane_size(channels.shape[1:], study.spacing_mm)
        d["image"] = resample_inplane(torch.from_numpy(channels), size)
        if "label" in d:
            label = lesion_target(load_label(study, d["label"]), study.kind)
            d["label"] = resample_inplane(torch.from_numpy(label[None].astype(np.float32)), size, mode="nearest")
        return d


class TwoGroupNet(nn.Module):
    """MDANet behind one input tensor: channels ``[group a..., group b...]``.

    In training mode the early features of both groups (for the similarity loss, eq. 8) are
    kept in ``last_features``; the output is always the logits.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.last_features = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[1] // 2
        if self.training:
            out = self.net(x[:, :k], x[:, k:], return_features=True)
            self.last_features = (out.features_a, out.features_b)
            return out.logits
        self.last_features = None
        return self.net(x[:, :k], x[:, k:])


class MirrorPairNet(nn.Module):
    """SiameseLesionNet behind one input tensor: channels ``[image, image mirrored about the mid-sagittal plane]``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, :1], x[:, 1:2])


class MDANetLossOnNet(nn.Module):
    """MDANetLoss (Dice + CE + λ masked similarity) with the early features taken from the :class:`TwoGroupNet`."""

    def __init__(self, loss: nn.Module, network: TwoGroupNet):
        super().__init__()
        self.loss = loss
        self._network = [network]  # not a submodule: its parameters belong to the network

    def forward(self, logits, target):
        features = self._network[0].last_features
        if features is None:
            return self.loss(logits, target)
        return self.loss(logits, target, *features)


def build_network(route: str, widths: Sequence[int] | None = None) -> nn.Module:
    """The route's network in the shipped size (2-D, widths 8..64: ~0.1 M parameters, CPU-friendly)."""
    from lib.networks.mdanet import MDANet
    from lib.networks.siamese_net import SiameseLesionNet

    if route in ("ctp", "mri"):
        k = len(GROUPS[route][0])
        net = MDANet(spatial_dims=2, group_channels=k, out_channels=2, widths=tuple(widths or (8, 16, 32, 64)), space_grid=(8, 8), dropout=0.1)
        return TwoGroupNet(net)
    if route == "siamese":
        net = SiameseLesionNet(spatial_dims=2, in_channels=1, out_channels=2, widths=tuple(widths or (8, 16, 32, 64)), dropout=0.1)
        return MirrorPairNet(net)
    raise ValueError(f"unknown route {route!r}")


def predict_volume(
    network: nn.Module, image: torch.Tensor, out_size: Sequence[int], device: str = "cpu", batch: int = 8, mc_dropout: bool = False,
    mirror_average: bool = True,
) -> torch.Tensor:
    """Lesion probability (X, Y, Z) on the study grid from the input (C, X', Y', Z), slice by slice.

    ``mirror_average``: each slice averaged with its left-right flip (:func:`grid.mirror_averaged`), so
    a study stored mirrored gets exactly the mirrored label. ``mc_dropout`` keeps the dropout layers
    sampling (one Monte-Carlo pass).

    The slices are independent (eval mode: batch norm on running statistics, pooling and graphs per
    slice), so the all-zero slices (no brain: every channel is 0 outside it) all get the answer of
    one zero slice, computed once; not under ``mc_dropout``, where each slice draws its own dropout.
    Slices go to the network channels-last (oneDNN's convolutions on few channels are faster so)."""
    network.eval()
    if mc_dropout:
        network.net.set_mc_dropout(True)
    z = image.shape[-1]
    order = torch.arange(z)
    empty = torch.zeros(z, dtype=torch.bool) if mc_dropout else ~image.ne(0).flatten(0, 2).any(dim=0)
    if empty.any():  # the occupied slices, then one empty one standing for all
        order = torch.cat([order[~empty], order[empty][:1]])
    probs = []
    with torch.no_grad():
        for start in range(0, len(order), batch):
            chunk = image[..., order[start : start + batch]].permute(3, 0, 1, 2).to(device)  # (b, C, X', Y')
            chunk = chunk.contiguous(memory_format=torch.channels_last)
            lesion = lambda x: torch.softmax(network(x).float(), dim=1)[:, 1:2]  # noqa: E731  (b, 1, X', Y')
            p = mirror_averaged(lesion, chunk, lr_dim=2) if mirror_average else lesion(chunk)
            if tuple(p.shape[2:]) != tuple(out_size):
                p = F.interpolate(p, size=tuple(out_size), mode="bilinear", align_corners=False)
            probs.append(p[:, 0].cpu())
    probs = torch.cat(probs, dim=0)
    if empty.any():
        out = torch.empty((z,) + probs.shape[1:], dtype=probs.dtype)
        out[~empty] = probs[:-1]
        out[empty] = probs[-1]
        probs = out
    return probs.permute(1, 2, 0).contiguous()


# Component-wise decision on the study's own DWI/ADC evidence (post-processing of the MRI routes).
# Why: on real ISLES'22 cases with 1-7 mL lesions the phantom-trained model labelled 8-14 mL, its extra
# components DWI-bright where the other hemisphere is as bright (cortical rim, T2 shine-through) or not
# DWI-bright at all. Each predicted component is kept only when at least this share of its voxels
# (one voxel of tolerance) is evidence of acute ischemia by the guard's definition
# (``strokelabel.guard.mri_lesion_evidence``: DWI bright, brighter than the mirror side, ADC not high).
# The share is the guard's own whole-label limit (``guard.LIMITS["lesion_mri"]["support_min"]``, chosen
# on phantoms only), applied per component: not a value tuned on the real cases.
@dataclass(frozen=True)
class ComponentRule:
    """How the lesion label is made from a route's probability: one rule for the infer and for
    ``scripts/lesion_component_rules.py``, which measures variants of it on phantoms.

    ``threshold`` on the probability; 26-connected components under ``min_component_ml`` dropped;
    on MRI, components of which fewer than ``min_support`` of the voxels show DWI/ADC evidence
    (the evidence decision above; None: none) and components whose highest
    probability is under ``min_peak_probability`` dropped."""

    threshold: float = 0.5
    min_component_ml: float = 0.1
    min_support: float | None = None
    min_peak_probability: float = 0.0


#: The MRI routes' rule by default: components kept when 70 % of them show the study's DWI/ADC evidence (the guard's
#: whole-label limit, chosen on phantoms).
MRI_COMPONENT_RULE = ComponentRule(min_support=guard.LIMITS["lesion_mri"]["support_min"])
#: ``lesion_components: "strict"``: probability > 0.6, components of 0.3 mL or more, 85 % of each with DWI/ADC
#: evidence. Chosen on held-out phantoms by ``scripts/lesion_component_rules.py`` (8 phantoms of two families, seed
#: 9400; docs/lesion_component_rules.md) under a selection rule written before the sweep ran, frozen (ebfd10d) before
#: the real cases were scored. Phantoms: lesion-wise F1 0.39 -> 0.63, false positives 3.4 -> 2.1 mL a study. The four
#: real ISLES'22 cases (phantom-only model): pooled Dice 0.63 -> 0.67, false positives on the three small cases
#: 3.6/1.9/5.5 -> 0.7/0.9/0.0 mL, but it labels less than the threshold rule's unmistakable lesion there, so the guard
#: refuses it on those three and ``auto`` would serve the threshold rule (mean Dice of auto 0.31): opt-in, not the default.
STRICT_MRI_COMPONENT_RULE = ComponentRule(threshold=0.6, min_component_ml=0.3, min_support=0.85)
#: CT perfusion: no DWI/ADC to decide components on.
CTP_COMPONENT_RULE = ComponentRule()


def lesion_from_probability(prob: np.ndarray, spacing_mm, rule: ComponentRule, evidence: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The lesion label (uint8) of ``prob`` under ``rule``, and how many components the evidence and
    peak decisions removed (0 without ``evidence``)."""
    from scipy import ndimage

    from strokelabel.baselines import remove_small_clusters

    label = remove_small_clusters(np.asarray(prob) > rule.threshold, spacing_mm, rule.min_component_ml)
    if evidence is None:
        return label.astype(np.uint8), 0
    structure = ndimage.generate_binary_structure(label.ndim, label.ndim)
    components, count = ndimage.label(label, structure=structure)
    if count == 0:
        return label.astype(np.uint8), 0
    keep = np.ones(count + 1, dtype=bool)
    if rule.min_support is not None:
        keep &= _supported(components, count, evidence, rule.min_support, structure)
    if rule.min_peak_probability > 0:
        peak = ndimage.maximum(np.asarray(prob), components, index=np.arange(count + 1))
        keep &= np.asarray(peak) >= rule.min_peak_probability
    keep[0] = False
    return keep[components].astype(np.uint8), int(count - np.count_nonzero(keep[1:]))


def _supported(components: np.ndarray, count: int, evidence: np.ndarray, min_support: float, structure) -> np.ndarray:
    """Per component (index 0: background): at least ``min_support`` of its voxels in ``evidence`` grown by one voxel."""
    from scipy import ndimage

    grown = ndimage.binary_dilation(evidence, structure=structure) if evidence.any() else evidence
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    supported = np.bincount(components[grown & (components > 0)].ravel(), minlength=count + 1)
    return supported >= min_support * sizes


def binary_entropy(prob: np.ndarray, eps: float = 1e-6, chunk: int = 1 << 20) -> np.ndarray:
    """Binary entropy (bits) of each probability, float64; ``chunk`` values at a time, so a whole CTP grid
    of candidates (16 M voxels) costs its float64 answer and not six float64 temporaries of its size."""
    prob = np.asarray(prob)
    flat = prob.reshape(-1)
    out = np.empty(flat.shape, dtype=np.float64)
    for start in range(0, flat.size, chunk):
        p = np.clip(flat[start : start + chunk].astype(np.float64), eps, 1 - eps)
        out[start : start + chunk] = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return out.reshape(prob.shape)


def uncertainty_score(prob: np.ndarray) -> float:
    """How unsure the model is about a study, 0..1: mean binary entropy (bits) over the voxels
    it is not sure are background (p > 0.05), i.e. the lesion and its boundary. 0 when nothing
    is suspicious; ~1 when every candidate voxel is a coin flip."""
    prob = np.asarray(prob)
    candidate = prob > 0.05
    if not candidate.any():
        return 0.0
    return float(binary_entropy(prob[candidate]).mean())
