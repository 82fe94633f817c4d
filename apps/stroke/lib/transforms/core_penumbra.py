"""core_penumbra: the model's input contract (normalised maps + NIHSS channel), its transforms
and the wrapper that feeds the 2D slow-fusion network slice by slice.

**Normalisation plan** (nnU-Net style: decided once from data, stored, not scattered as
constants). For each input map the plan (``core_penumbra_plan.json`` beside this file, written
by ``scripts/train_core_penumbra.py --write-plan``) says

- ``relative``: divide the map by its median over the study's brain first. CBF and CBV are
  relative quantities clinically (core = rCBF < 30 % of the healthy side) and their absolute
  level varies by scanner, AIF and patient; MTT and Tmax are kept in seconds because their
  thresholds (Tmax > 6 s) are absolute;
- ``clip``: the 0.5 and 99.5 percentiles over the brain voxels of the training phantoms
  (after the relative step), then ``(x - mean) / std`` with the training mean and std of the
  clipped values. Outside the brain every channel is 0 after normalisation.

**Channels.** ``image`` is ``(n_maps + 1, H, W, D)``: the normalised maps in the network's
``in_maps`` order, then one constant NIHSS channel holding ``nihss + 1`` (0 when the study has
no score). Carrying the scalar as a channel keeps MONAI's engines and inferers (which call
``network(image)``) unchanged; :class:`CorePenumbraSliceModel` takes it back out and passes it
to the network's NIHSS input. Zero padding cannot fake a score: the wrapper reads the channel's
maximum.

**Derived rCBF input.** Besides the maps read from files, the plan may list ``rcbf``: CBF divided
by the smoothed CBF mirrored about the mid-sagittal plane (:func:`relative_cbf`, ``mirror``), the
quantity that defines core (rCBF < 30 %). Seed 004's VGG extractors see 512 x 512 slices with a
receptive field spanning both hemispheres; the small from-scratch encoders here do not, and
without the contralateral reference they never learned core in a CPU-sized training run (core
Dice 0 after 16 epochs, shipped model of 2026-11-22 02:55). It is computed on the fly, so
sites still supply only CBF, CBV, MTT and Tmax.

**2D, not 2.5D.** The network sees one axial slice (``context_slices = 0``), as seed 004 does.
The phantoms' and most clinical CTP maps have 5 mm slices, so a neighbour slice adds little
in-plane information, costs 3x the encoder work, and a 2D model also runs on CTP with few
slices (8-16 slice coverage is common). Slices are reassembled into the volume by MONAI's
``SliceInferer``.

**In-plane working grid.** The maps go to the model at the plan's ``inplane_spacing_mm`` (the
median in-plane spacing of the training studies, 1.7 mm for the shipped model), slice by slice
(``lib.transforms.grid``), and the class probabilities come back to the study grid before the
argmax: a model that learned a hemisphere as 128 pixels does not read one of 512, and a
512 x 512 CTP costs 16 x less. The brain mask stays on the study grid.

**Memory at clinical size** (512 x 512 x 64: 64 MiB per float32 map). The input is built one channel
at a time (normalised on the brain's box, resampled to the working grid at once), never as a
(channels x study grid) stack, and the probabilities go back to the study grid 8 slices at a time
(``CorePenumbraInfer.run_model``); interpolation is per channel and per slice, so the numbers are
those of the whole-volume computation (``tests/app/test_working_grid_per_channel.py``).
"""

from __future__ import annotations

import json
import os
from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import SliceInferer
from monai.transforms import Transform
from torch import nn

from lib.transforms.baselines import perfusion_brain_mask
from lib.transforms.grid import inplane_size, resample_inplane
from strokelabel.boxes import bounding_box, paste
from strokelabel.baselines.perfusion import relative_cbf_in_box
from strokelabel.errors import StrokeLabelError
from strokelabel.study import load_label

PLAN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "core_penumbra_plan.json")

#: Used only when no plan file exists (values measured on phantoms, seed 2026, 16 studies).
DEFAULT_PLAN: Dict = {
    "maps": ["cbf", "cbv", "mtt", "tmax", "rcbf"],
    "inplane_spacing_mm": 1.7,
    "normalisation": {
        "cbf": {"relative": True, "clip": [0.0, 3.0], "mean": 1.0, "std": 0.5},
        "cbv": {"relative": True, "clip": [0.0, 3.0], "mean": 1.0, "std": 0.5},
        "mtt": {"relative": False, "clip": [0.0, 15.0], "mean": 4.0, "std": 2.0},
        "tmax": {"relative": False, "clip": [0.0, 20.0], "mean": 2.0, "std": 3.0},
        "rcbf": {"relative": False, "clip": [0.0, 2.0], "mean": 1.0, "std": 0.3},
    },
}


#: Inputs computed from loaded maps (name -> the maps it needs), not read from a file.
DERIVED_MAPS: Dict[str, tuple] = {"rcbf": ("cbf", "tmax")}


def source_maps(maps: Sequence[str]) -> tuple:
    """The map files ``maps`` need: the listed ones that are not derived, plus what the derived need."""
    needed = []
    for m in maps:
        for name in DERIVED_MAPS.get(m, (m,)):
            if name not in needed:
                needed.append(name)
    return tuple(needed)


def input_maps(d: Dict, maps: Sequence[str], brain: np.ndarray) -> Dict[str, np.ndarray]:
    """Each of ``maps`` for a loaded study ``d``: read (``d[m]``) or derived (``rcbf``)."""
    out = {}
    for m in maps:
        if m == "rcbf":
            # Voxels with a perfusion signal, as the threshold baseline uses (ventricles have none).
            tissue = brain & ((np.asarray(d["cbf"]) > 0) | (np.asarray(d["tmax"]) > 0))
            # On the tissue's box (float64 there only); 0 outside it, as NaN -> 0 gives on the full grid.
            rcbf, box = relative_cbf_in_box(d["cbf"], tissue, d["study"].spacing_mm, d["tmax"], reference="mirror")
            rcbf = np.nan_to_num(rcbf, nan=0.0, posinf=0.0, neginf=0.0, copy=False).astype(np.float32)  # in place, then float32
            out[m] = paste(rcbf, box, tissue.shape)
            del rcbf, tissue
        else:
            out[m] = np.asarray(d[m])
    return out


def load_plan(path: str = PLAN_PATH) -> Dict:
    """The normalisation plan (written by ``scripts/train_core_penumbra.py``), else the default."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return DEFAULT_PLAN


def relative_scale(values: np.ndarray, brain: np.ndarray) -> float:
    """Median of a map over the brain, the divisor of a ``relative`` map (1.0 if not positive)."""
    inside = values[brain]
    median = float(np.median(inside)) if inside.size else 0.0
    return median if median > 0 else 1.0


def compute_plan(studies: Sequence[Dict[str, np.ndarray]], maps: Sequence[str], relative: Sequence[str] = ("cbf", "cbv")) -> Dict:
    """A normalisation plan from training studies: each a dict of maps plus ``brain`` (bool mask) and
    ``spacing_mm``; the working in-plane spacing is their median."""
    normalisation = {}
    for name in maps:
        values = []
        for study in studies:
            brain = study["brain"]
            x = study[name][brain].astype(np.float64)
            if name in relative:
                x = x / relative_scale(study[name], brain)
            values.append(x)
        allv = np.concatenate(values)
        low, high = np.percentile(allv, [0.5, 99.5])
        clipped = np.clip(allv, low, high)
        normalisation[name] = {
            "relative": name in relative,
            "clip": [round(float(low), 5), round(float(high), 5)],
            "mean": round(float(clipped.mean()), 5),
            "std": round(float(max(clipped.std(), 1e-6)), 5),
        }
    inplane = float(np.median([min(study["spacing_mm"][:2]) for study in studies]))
    return {"maps": list(maps), "inplane_spacing_mm": round(inplane, 4), "normalisation": normalisation}


def normalise_map(values: np.ndarray, brain: np.ndarray, rule: Dict) -> np.ndarray:
    """One map by its plan rule; 0 outside the brain (computed on the brain's box only)."""
    box = bounding_box(brain)
    if box is None:
        return np.zeros(np.shape(brain), dtype=np.float32)
    values, inside = np.asarray(values)[box], np.asarray(brain, dtype=bool)[box]
    x = values.astype(np.float32)
    if rule.get("relative"):
        x = x / relative_scale(values, inside)
    low, high = rule["clip"]
    x = (np.clip(x, low, high) - rule["mean"]) / rule["std"]
    return paste(np.where(inside, x, 0.0).astype(np.float32), box, np.shape(brain))


def nihss_channel_value(clinical: Dict) -> float:
    """``nihss + 1`` for a valid score (0..42), 0 for none; what the NIHSS channel holds."""
    score = (clinical or {}).get("nihss")
    try:
        score = float(score)
    except (TypeError, ValueError):
        return 0.0
    return score + 1.0 if np.isfinite(score) and 0 <= score <= 42 else 0.0


class CorePenumbraInputd(Transform):
    """After :class:`LoadStudyd` (and :class:`LoadLabeld` in training): ``image`` = normalised maps +
    NIHSS channel on the in-plane working grid, ``label`` (if any) on that grid too, ``brain_mask``
    (H, W, D) bool on the study grid."""

    def __init__(self, maps: Sequence[str] | None = None, plan: Dict | None = None, use_nihss: bool = True):
        self.plan = plan or load_plan()
        self.maps = tuple(maps or self.plan["maps"])
        missing = [m for m in self.maps if m not in self.plan["normalisation"]]
        if missing:
            raise ValueError(f"the normalisation plan has no rule for {missing}")
        self.use_nihss = use_nihss

    def __call__(self, data):
        d = dict(data)
        study = d["study"]
        for m in source_maps(self.maps):
            if m not in d:
                raise StrokeLabelError(f"the core/penumbra model needs the {m} map", study=study.study_id)
        brain = np.asarray(perfusion_brain_mask(d), dtype=bool)
        size = self.working_size(brain.shape, study.spacing_mm)
        mode = "area" if all(n <= m for n, m in zip(size, brain.shape[:2])) else "bilinear"
        # One channel at a time to the working grid (interpolation is per channel: the same values as
        # the stacked volume), so no (channels x study grid) stack is ever held.
        values = input_maps(d, self.maps, brain)
        channels = []
        for m in self.maps:
            normalised = normalise_map(values.pop(m), brain, self.plan["normalisation"][m])
            channels.append(resample_inplane(torch.from_numpy(normalised[None]), size, mode=mode)[0])
            del normalised
        # The NIHSS channel is one value everywhere: one slice resampled stands for every slice.
        nihss = nihss_channel_value(study.clinical) if self.use_nihss else 0.0
        plane = resample_inplane(torch.full((1, *brain.shape[:2], 1), nihss, dtype=torch.float32), size, mode=mode)[0]
        channels.append(plane.expand(*plane.shape[:2], brain.shape[2]))
        d.setdefault("image_path", d.get("image"))
        d["image"] = torch.stack(channels).numpy()
        if isinstance(d.get("label"), np.ndarray):
            d["label"] = resample_inplane(torch.from_numpy(d["label"]), size, mode="nearest").numpy().astype(np.uint8)
        d["brain_mask"] = brain
        return d

    def working_size(self, shape, spacing_mm) -> tuple[int, int]:
        """The study's in-plane size on the plan's grid (its own size if the plan names none)."""
        target = self.plan.get("inplane_spacing_mm")
        return tuple(shape[:2]) if not target else inplane_size(shape, spacing_mm, float(target))


class LoadLabeld(Transform):
    """After :class:`LoadStudyd`: the saved label (``label`` path) as a ``(1, H, W, D)`` uint8 array in the study's RAS order."""

    def __call__(self, data):
        d = dict(data)
        d["label"] = load_label(d["study"], d["label"])[None]
        return d


class KeepKeysd(Transform):
    """Drop everything but ``keys`` (the Study object and raw maps cannot be collated)."""

    def __init__(self, keys: Sequence[str]):
        self.keys = tuple(keys)

    def __call__(self, data):
        return {k: data[k] for k in self.keys if k in data}


class CorePenumbraSliceModel(nn.Module):
    """The 2D network behind the channel contract above, for any in-plane size.

    Input ``(B, n_maps + 1, H, W)``: maps, then the NIHSS channel (``nihss + 1``, 0 = none).
    Pads H and W to a multiple of ``2 ** depth`` (reflect) and crops the logits back.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps, nihss_channel = x[:, :-1], x[:, -1]
        code = nihss_channel.flatten(1).amax(dim=1)
        nihss = torch.where(code > 0, code - 1.0, torch.full_like(code, float("nan"))) if self.net.use_nihss else None
        factor = 2**self.net.depth
        h, w = maps.shape[-2:]
        ph, pw = (-h) % factor, (-w) % factor
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "constant"
            maps = F.pad(maps, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode=mode)
        logits = self.net(maps, nihss)
        if ph or pw:
            logits = logits[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
        return logits


def slice_inferer(sw_batch_size: int = 8) -> SliceInferer:
    """Axial slices (the last axis) through the 2D model, reassembled into the volume."""
    return SliceInferer(roi_size=(-1, -1), sw_batch_size=sw_batch_size, spatial_dim=2, progress=False)


def build_network(features: Sequence[int] = (8, 16, 32, 64), maps: Sequence[str] | None = None, dropout: float = 0.2) -> CorePenumbraSliceModel:
    """The core_penumbra model as the app trains and serves it (CorePenumbraNet, 2D, NIHSS on)."""
    from lib.networks.core_penumbra_net import CorePenumbraNet

    maps = tuple(maps or load_plan()["maps"])
    return CorePenumbraSliceModel(CorePenumbraNet(in_maps=maps, features=features, dropout=dropout, use_nihss=True))
