"""Transforms and inferers of the ``clot_region`` task: CTA normalisation, slice sampling for
training, and whole-study slice-window inference for validation.

Both clot_region networks see a study as slice windows (``slice_windows``: ``2k + 1``
neighbouring slices of every input as channels). Training samples slices of a study (a
fraction of them holding clot, since only a few slices do); validation runs every slice of
whole studies, as inference does, so the validation figure is the one a user gets.

Intensity plan (nnU-Net style: one place, not scattered constants): CTA phases are HU
windowed to ``CTA_WINDOW_HU`` and scaled to [0, 1] (the clot is an unenhanced filling defect,
~40-80 HU, inside arteries enhanced to several hundred HU); SPIRAL is already 0..1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.transforms import MapTransform, Randomizable, Transform

from lib.networks.ami_net import NUM_REGIONS, slice_region_labels, slice_windows
from strokelabel.errors import StrokeLabelError
from strokelabel.study import load_study

CTA_WINDOW_HU = (-100.0, 600.0)
_STRIDE = 16  # BasicUNet pools four times


def normalise(name: str, volume) -> np.ndarray:
    """One input volume scaled as the networks were trained: CTA HU window to [0, 1], SPIRAL as is."""
    v = np.asarray(volume, dtype=np.float32)
    if name.startswith("cta"):
        low, high = CTA_WINDOW_HU
        return np.clip((v - low) / (high - low), 0.0, 1.0)
    return np.clip(v, 0.0, 1.0)


def stack_inputs(images: dict, input_names, study: str = "") -> tuple[np.ndarray, list[str]]:
    """``(C, X, Y, Z)`` normalised channels in ``input_names`` order, and notes on substitutions.

    A missing later CTA phase is replaced by phase 1 (noted), so a study with one phase still
    gets a clot segmentation; a missing phase 1 or SPIRAL (when the model takes it) is an error.
    """
    channels, notes = [], []
    for name in input_names:
        if images.get(name) is None:
            if name in ("cta2", "cta3") and images.get("cta1") is not None:
                notes.append(f"{name} missing: phase 1 used in its place")
                channels.append(normalise("cta1", images["cta1"]))
                continue
            raise StrokeLabelError(f"the model needs the {name} volume, which this study does not have", study=study or None)
        channels.append(normalise(name, images[name]))
    return np.stack(channels), notes


class LoadClotStudyd(Transform):
    """Training/validation: load the study of ``image`` (its reference path) and its clot label.

    Output keys: ``image`` (C, X, Y, Z) float32 normalised inputs, ``label`` (1, X, Y, Z) clot
    (any non-zero label value is clot, as in the AMI data's 0/1/2 clot files), ``atlas``
    (X, Y, Z) or None, ``region_base`` (atlas numbering), ``study_id``.
    """

    def __init__(self, input_names, region_base: int = 1, need_atlas: bool = False):
        self.input_names = tuple(input_names)
        self.region_base = region_base
        self.need_atlas = need_atlas

    def __call__(self, data):
        import nibabel as nib

        d = dict(data)
        required = ("cta1",) + (("atlas",) if self.need_atlas else ())
        optional = tuple(n for n in self.input_names if n not in required) + ("atlas",)
        study = load_study(d["image"], required, optional)
        d["image"], _ = stack_inputs(study.images, self.input_names, study.study_id)
        clot = np.asarray(nib.load(str(d["label"])).dataobj)
        if clot.ndim == 4 and clot.shape[-1] == 1:
            clot = clot[..., 0]
        d["label"] = (clot > 0).astype(np.float32)[None]
        d["atlas"] = study.images.get("atlas")
        d["region_base"] = getattr(study, "region_base", self.region_base)
        d["study_id"] = study.study_id
        return d


class SampleClotSlicesd(Randomizable, Transform):
    """Draw ``num_samples`` slice windows of a loaded study (a list of samples, MONAI style).

    ``pos_fraction`` of them are drawn from slices holding clot (when there are any). With
    ``target="clot"`` a sample's label is the slice's clot ``(1, X, Y)`` (ClotSegNet); with
    ``target="regions"`` the slice's 15 region targets (AMINet), derived from clot ∩ atlas.
    ``crop_size`` crops larger slices in-plane to a square that, for a clot slice, holds a clot
    voxel (full-size 512 x 512 studies train at a fraction of the cost).
    """

    def __init__(self, context_slices: int, target: str = "clot", num_samples: int = 8, pos_fraction: float = 0.5,
                 crop_size: int | None = 256, flip: bool = True):
        if target not in ("clot", "regions"):
            raise ValueError(f"target must be 'clot' or 'regions', got {target!r}")
        self.k = int(context_slices)
        self.target = target
        self.num_samples = int(num_samples)
        self.pos_fraction = float(pos_fraction)
        self.crop_size = crop_size
        self.flip = flip

    def randomize(self, data=None):
        pass

    def __call__(self, data):
        d = dict(data)
        image = torch.as_tensor(d["image"])
        clot = torch.as_tensor(d["label"])[0] > 0
        depth = clot.shape[-1]
        if self.target == "regions":
            if d.get("atlas") is None:
                raise StrokeLabelError("region targets need the study's vascular atlas (…_atlas.nii.gz)", study=d.get("study_id"))
            regions = slice_region_labels(clot, d["atlas"], d.get("region_base", 1))
        positive = torch.nonzero(clot.flatten(0, 1).any(0)).flatten().tolist()
        samples = []
        for _ in range(self.num_samples):
            if positive and self.R.rand() < self.pos_fraction:
                z = int(positive[self.R.randint(len(positive))])
            else:
                z = int(self.R.randint(depth))
            x = slice_windows(image, self.k, z, z + 1)[0]
            y = clot[:, :, z].float()[None]
            x, y = self._crop(x, y)
            # Left-right mirror (a clot may sit in either hemisphere); not for region targets,
            # which name a hemisphere.
            if self.flip and self.target == "clot" and self.R.rand() < 0.5:
                x, y = x.flip(-2), y.flip(-2)
            label = y if self.target == "clot" else regions[z].clone()
            samples.append({"image": x, "label": label, "study_id": d.get("study_id", "")})
        return samples

    def _crop(self, x, y):
        size = self.crop_size
        h, w = x.shape[-2:]
        if not size or (h <= size and w <= size):
            return x, y
        where = torch.nonzero(y[0])
        if len(where):
            cx, cy = where[self.R.randint(len(where))].tolist()
            x0 = int(np.clip(cx - self.R.randint(size), 0, max(0, h - size)))
            y0 = int(np.clip(cy - self.R.randint(size), 0, max(0, w - size)))
        else:
            x0, y0 = int(self.R.randint(max(1, h - size + 1))), int(self.R.randint(max(1, w - size + 1)))
        return x[:, x0:x0 + size, y0:y0 + size], y[:, x0:x0 + size, y0:y0 + size]


class RegionTargetsd(Transform):
    """Validation of the classifier: the label becomes the per-slice region targets ``(1, 1, Z * 15)``.

    Flattened as one channel, so Dice over it is the micro-averaged per-slice F1 of seed 002.
    """

    def __call__(self, data):
        d = dict(data)
        if d.get("atlas") is None:
            raise StrokeLabelError("region targets need the study's vascular atlas (…_atlas.nii.gz)", study=d.get("study_id"))
        regions = slice_region_labels(torch.as_tensor(d["label"])[0] > 0, d["atlas"], d.get("region_base", 1))
        d["label"] = regions.reshape(1, 1, -1)
        d.pop("atlas")
        return d


class DropKeysd(MapTransform):
    """Remove keys the data loader cannot collate (None atlas, strings)."""

    def __call__(self, data):
        d = dict(data)
        for key in self.keys:
            d.pop(key, None)
        return d


class SliceSegmentationInferer(Inferer):
    """Clot logits ``(B, 1, X, Y, Z)`` of whole volumes ``(B, C, X, Y, Z)``, slice window by slice window."""

    def __init__(self, batch_size: int = 8):
        self.batch_size = batch_size

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs):
        out = []
        for vol in inputs:
            depth = vol.shape[-1]
            logits = torch.empty((1, *vol.shape[1:]), device=vol.device)
            for start in range(0, depth, self.batch_size):
                stop = min(start + self.batch_size, depth)
                x = slice_windows(vol, network.context_slices, start, stop).to(vol.device)
                h, w = x.shape[-2:]
                x = F.pad(x, (0, -w % _STRIDE, 0, -h % _STRIDE), mode="replicate")
                logits[0, :, :, start:stop] = network(x)[:, 0, :h, :w].permute(1, 2, 0)
            out.append(logits)
        return torch.stack(out)


class SliceRegionInferer(Inferer):
    """Region logits of every slice of whole volumes, flattened to ``(B, 1, Z * 15)`` (see RegionTargetsd)."""

    def __init__(self, batch_size: int = 16):
        self.batch_size = batch_size

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs):
        out = []
        for vol in inputs:
            depth = vol.shape[-1]
            logits = [network(slice_windows(vol, network.context_slices, s, min(s + self.batch_size, depth)).to(vol.device))
                      for s in range(0, depth, self.batch_size)]
            out.append(torch.cat(logits).reshape(1, -1))
        return torch.stack(out)


def regions_list(flags, probabilities, region_base: int = 1) -> list[dict]:
    """The 15 region flags as the result JSON lists them (atlas numbering)."""
    return [{"region": i + region_base, "clot": bool(flags[i]), "probability": round(float(probabilities[i]), 4)}
            for i in range(NUM_REGIONS)]
