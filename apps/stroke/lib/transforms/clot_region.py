"""Transforms and inferers of the ``clot_region`` task: CTA normalisation, slice sampling for
training, and whole-study slice-window inference for validation.

Both clot_region networks see a study as slice windows (``slice_windows``: ``2k + 1``
neighbouring slices of every input as channels). Training samples slices of a study (a
fraction of them holding clot, since only a few slices do); validation runs every slice of
whole studies, as inference does, so the validation figure is the one a user gets.

Intensity plan (nnU-Net style: one place, not scattered constants): CTA phases are HU
windowed to ``CTA_WINDOW_HU`` and scaled to [0, 1] (the clot is an unenhanced filling defect,
~40-80 HU, inside arteries enhanced to several hundred HU); SPIRAL is already 0..1.

**Working grid.** Both networks see a study on one working grid, the spacing of the studies
they learned from (``clot_region_plan.json``, written by ``scripts/train_clot_region.py``;
1.7 x 1.7 x 3.2 mm for the shipped models). A convolution learns a vessel's width in voxels,
so a model trained at 1.7 mm does not recognise an artery four times wider in voxels at
0.45 mm. A study on another grid is resampled to it (images by area averaging, which is what
a coarser scanner grid records; the atlas by nearest neighbour; a clot label by the phantom's
own rule, lumen fraction >= 0.3 and never empty), and the clot probability goes back to the
study grid, so the label is always on the study's own grid. It also bounds the cost: a
512 x 512 x 257 CTA at 0.45 x 0.45 x 0.8 mm becomes 136 x 136 x 64 voxels.

**Mirrored inputs.** An input named ``<name>_mirror`` (``cta1_mirror``) is that volume reflected
about the head's mid-sagittal plane, found from CTA phase 1 on the working grid
(``strokelabel.midsagittal``; heads are not centred nor straight). A clot shows as an artery
that is bright on one side and dark at the same place on the other, so the networks see each
slice beside its mirror, as a radiologist compares hemispheres (seed 000's idea); without it
the segmentation learned nothing from the CTA phases alone.

**Head coordinates.** ``coord_lr``, ``coord_ap`` and ``coord_si`` are each voxel's position in the
head (dm): its signed distance from the mid-sagittal plane, along the plane from the head's
centre towards the face, and above the head's centre. Global pooling leaves a classifier no way
to tell where a clot lies, and the region a clot is in is a matter of where (left or right,
front or back, high or low): the region classifier takes them (CoordConv).

**Optional SPIRAL.** The segmentation takes the SPIRAL-like map as its last channel when the
study has it; a study without one gets zeros there, and training drops the channel at random
(``SampleClotSlicesd(drop_prob=...)``), so the model has learned to find clots from the CTA phases alone.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.transforms import MapTransform, Randomizable, Transform

from lib.networks.ami_net import NUM_REGIONS, slice_region_labels, slice_windows
from strokelabel.errors import StrokeLabelError
from strokelabel.midsagittal import find_midsagittal_plane, mirror_about_plane
from strokelabel.phantom.render import clot_mask
from strokelabel.study import load_label, load_study

CTA_WINDOW_HU = (-100.0, 600.0)
_STRIDE = 16  # BasicUNet pools four times
#: Inputs a study may lack: the model gets zeros in their place (and was trained with them dropped).
OPTIONAL_INPUTS = ("spiral",)

PLAN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clot_region_plan.json")
#: Used only when no plan file exists: the spacing of the small phantom CTA grid.
DEFAULT_PLAN = {"spacing_mm": [1.7, 1.7, 3.2]}


def load_plan(path: str = PLAN_PATH) -> dict:
    """The working-grid plan (written by ``scripts/train_clot_region.py``), else the default."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return DEFAULT_PLAN


def working_shape(shape, spacing_mm, working_spacing_mm) -> tuple[int, int, int]:
    """The study's extent on the working grid, in voxels (at least 1 per axis)."""
    return tuple(max(1, int(round(n * s / w))) for n, s, w in zip(shape[-3:], spacing_mm, working_spacing_mm))


def resample(volume, shape, kind: str = "image") -> torch.Tensor:
    """A channel-first ``(C, X, Y, Z)`` volume on a grid of ``shape`` (``torch.nn.functional.interpolate``,
    as MONAI ``Resize`` calls it, without its float32 copy of the input and MetaTensor wrapping).

    ``kind``: ``"image"`` (area averaging when shrinking, trilinear when growing),
    ``"labels"`` (nearest: atlas region numbers; the dtype is kept, a bool mask comes back as uint8),
    ``"probability"`` (trilinear). Images and probabilities come back float32.
    """
    vol = torch.as_tensor(np.asarray(volume) if not isinstance(volume, torch.Tensor) else volume)
    shape = tuple(int(n) for n in shape)
    if tuple(vol.shape[1:]) == shape:
        return vol
    if kind == "labels":
        mode = "nearest"
        vol = vol.to(torch.uint8) if vol.dtype == torch.bool else vol
    else:
        mode = "area" if kind == "image" and all(n <= m for n, m in zip(shape, vol.shape[1:])) else "trilinear"
        vol = vol.float()
    return F.interpolate(vol[None], size=shape, mode=mode)[0]


def resample_clot_label(clot, shape) -> torch.Tensor:
    """A binary clot mask ``(X, Y, Z)`` on another grid: the lumen fraction each new voxel holds,
    then the phantom truth's rule (>= 0.3, and never empty if there was clot)."""
    clot = torch.as_tensor(np.asarray(clot) if not isinstance(clot, torch.Tensor) else clot) > 0
    if tuple(clot.shape) == tuple(shape):
        return clot
    fraction = resample(clot.float()[None], shape, kind="image")[0]
    return torch.as_tensor(clot_mask(fraction.numpy()))


def normalise(name: str, volume) -> np.ndarray:
    """One input volume scaled as the networks were trained: CTA HU window to [0, 1], SPIRAL as is.
    One float32 array is made and scaled in place (a full-size phase is 270 MB)."""
    v = np.asarray(volume, dtype=np.float32)
    if name.startswith("cta"):
        low, high = CTA_WINDOW_HU
        out = v - low
        out /= high - low
        return np.clip(out, 0.0, 1.0, out=out)
    return np.clip(v, 0.0, 1.0)


def input_channel(images: dict, name: str, study: str = "") -> tuple[np.ndarray, str | None]:
    """One normalised input of ``stack_inputs`` and the note on its substitution, if any.

    A missing later CTA phase is replaced by phase 1 (noted), so a study with one phase still
    gets a clot segmentation; a missing phase 1 or SPIRAL (when the model takes it) is an error.
    """
    if images.get(name) is not None:
        return normalise(name, images[name]), None
    if name in ("cta2", "cta3") and images.get("cta1") is not None:
        return normalise("cta1", images["cta1"]), f"{name} missing: phase 1 used in its place"
    if name in OPTIONAL_INPUTS and images.get("cta1") is not None:
        return np.zeros(np.shape(images["cta1"]), np.float32), f"no {name} map: the model ran on the CTA phases alone"
    raise StrokeLabelError(f"the model needs the {name} volume, which this study does not have", study=study or None)


def stack_inputs(images: dict, input_names, study: str = "") -> tuple[np.ndarray, list[str]]:
    """``(C, X, Y, Z)`` normalised channels in ``input_names`` order, and notes on substitutions (``input_channel``)."""
    channels, notes = zip(*(input_channel(images, name, study) for name in input_names)) if input_names else ((), ())
    return np.stack(channels), [n for n in notes if n]


def to_working_grid(volume: np.ndarray, spacing_mm, plan: dict | None = None) -> torch.Tensor:
    """Stacked inputs ``(C, X, Y, Z)`` of a study on its native grid -> the working grid."""
    plan = plan or load_plan()
    return resample(volume, working_shape(np.shape(volume), spacing_mm, plan["spacing_mm"]), kind="image")


MIRROR_SUFFIX = "_mirror"


def network_input(images: dict, input_names, spacing_mm, study: str = "", plan: dict | None = None) -> tuple[torch.Tensor, list[str]]:
    """A network's input ``(C, X, Y, Z)`` on the working grid, channels in ``input_names`` order, and
    notes on substitutions. Names ending in ``_mirror`` are the named volume reflected about the
    mid-sagittal plane (found from CTA phase 1 on the working grid)."""
    names = tuple(input_names)
    sources = [n for n in names if not n.endswith(MIRROR_SUFFIX) and n not in COORDINATES]
    for n in names:
        if n.endswith(MIRROR_SUFFIX) and n[: -len(MIRROR_SUFFIX)] not in sources:
            raise ValueError(f"{n} needs {n[: -len(MIRROR_SUFFIX)]} among the inputs {names}")
    # Normalised and resampled one input at a time: one full-size float32 volume alive, not a stack of four.
    plan = plan or load_plan()
    native_shape, working, notes = None, [], []
    for name in sources:
        channel, note = input_channel(images, name, study)
        native_shape = channel.shape
        working.append(to_working_grid(channel[None], spacing_mm, plan)[0])
        del channel
        notes += [note] if note else []
    volume = torch.stack(working)
    channels = {n: volume[i] for i, n in enumerate(sources)}
    mirrored = [n for n in names if n.endswith(MIRROR_SUFFIX)]
    if mirrored or any(n in COORDINATES for n in names):
        spacing_w = [n * s / w for n, s, w in zip(native_shape, spacing_mm, volume.shape[1:])]
        reference = channels["cta1"].numpy() if "cta1" in channels else channels[sources[0]].numpy()
        plane = find_midsagittal_plane(reference, spacing_w)
        for n in mirrored:
            channels[n] = torch.from_numpy(mirror_about_plane(channels[n[: -len(MIRROR_SUFFIX)]].numpy(), plane).astype(np.float32))
        if any(n in COORDINATES for n in names):
            channels.update(head_coordinates(plane, reference > HEAD_LEVEL))
    return torch.stack([channels[n] for n in names]), notes


#: Derived position channels (see the module docstring) and the normalised CTA level above which a voxel is head.
COORDINATES = ("coord_lr", "coord_ap", "coord_si")
HEAD_LEVEL = 0.1  # -30 HU on the CTA window: soft tissue and bone, not air


def head_coordinates(plane, head: np.ndarray) -> dict[str, torch.Tensor]:
    """Each voxel's position in the head in decimetres: from the mid-sagittal ``plane`` (lr), along it
    from the head's centre (ap), and above the head's centre (si); ``head`` is a mask of head voxels."""
    spacing = np.asarray(plane.spacing_mm, dtype=float)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in plane.shape], indexing="ij"), axis=-1).astype(np.float32)
    centre = (np.argwhere(head).mean(axis=0) if head.any() else (np.asarray(plane.shape) - 1) / 2.0) * spacing
    offset = index * spacing - centre
    normal = plane.normal
    along = np.array([-normal[1], normal[0], 0.0])  # in-plane, perpendicular to the normal
    return {
        "coord_lr": torch.from_numpy((plane.signed_distance_mm(index) / 100.0).astype(np.float32)),
        "coord_ap": torch.from_numpy((offset @ along / 100.0).astype(np.float32)),
        "coord_si": torch.from_numpy((offset[..., 2] / 100.0).astype(np.float32)),
    }


class LoadClotStudyd(Transform):
    """Training/validation: load the study of ``image`` (its reference path) and its clot label.

    Output keys, all on the working grid (``plan``): ``image`` (C, X, Y, Z) float32 normalised
    inputs, ``label`` (1, X, Y, Z) clot (any non-zero label value is clot, as in the AMI data's
    0/1/2 clot files), ``atlas`` (X, Y, Z) or None, ``region_base`` (atlas numbering), ``study_id``.
    """

    def __init__(self, input_names, region_base: int = 1, need_atlas: bool = False, plan: dict | None = None):
        self.input_names = tuple(input_names)
        self.region_base = region_base
        self.need_atlas = need_atlas
        self.plan = plan or load_plan()

    def __call__(self, data):
        d = dict(data)
        required = ("cta1",) + (("atlas",) if self.need_atlas else ())
        optional = tuple(n for n in self.input_names if n not in required and not n.endswith(MIRROR_SUFFIX) and n not in COORDINATES) + ("atlas",)
        study = load_study(d["image"], required, optional)
        image, _ = network_input(study.images, self.input_names, study.spacing_mm, study.study_id, self.plan)
        shape = tuple(image.shape[1:])
        clot = load_label(study, d["label"], allowed=(0, 1, 2))  # AMI clot files hold 0/1/2, both clot
        d["image"] = image.numpy().astype(np.float32, copy=False)
        d["label"] = resample_clot_label(clot, shape).numpy().astype(np.float32)[None]
        atlas = study.images.get("atlas")
        d["atlas"] = None if atlas is None else resample(np.asarray(atlas)[None], shape, kind="labels")[0].numpy()
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
                 crop_size: int | None = 256, flip: bool = True, input_names=(), drop_prob: float = 0.0):
        if target not in ("clot", "regions"):
            raise ValueError(f"target must be 'clot' or 'regions', got {target!r}")
        self.k = int(context_slices)
        # Channels of the optional inputs (SPIRAL), zeroed in a sample with probability drop_prob.
        width = 2 * self.k + 1
        self.drop_channels = [c for i, name in enumerate(input_names) if name in OPTIONAL_INPUTS
                              for c in range(i * width, (i + 1) * width)]
        self.drop_prob = float(drop_prob)
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
            if self.drop_channels and self.R.rand() < self.drop_prob:
                x = x.clone()
                x[self.drop_channels] = 0.0  # as a study without that map arrives (stack_inputs)
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
