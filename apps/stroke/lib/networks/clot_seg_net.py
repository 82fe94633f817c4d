"""Clot segmentation from multiphase CTA, and the atlas regions and location figures it implies (seed 002).

Seed 002 stops at the region classifier (``AMINet``) and names the next goal: "a
segmentation model that can output a region that is much closer to the actual size of
the blood clot. Such a model will predict whether each pixel is part of the clot."
``ClotSegNet`` is that model; ``regions_from_clot`` derives the 15 region flags from its
output, so the clot mask and the region flags shown to the clinician always agree.

Design choice: a compact **2.5D U-Net** (MONAI ``BasicUNet`` with ``spatial_dims=2``) by
default, and a 3D U-Net as an option.

- *Tiny targets.* A clot is a few mm long; the seed does not state its voxel spacing, but
  a 512 x 512 CTA slice over a typical 20-25 cm field of view has ~0.4-0.5 mm pixels, so
  a clot is some 5-20 pixels across in-plane and a handful of slices long. The U-Net
  keeps a full-resolution level and skip connections, so a few-voxel object survives to
  the output; there is no downsampling before the first convolutions and no resizing.
- *3D context, 2D cost.* The ``2k + 1`` neighbouring slices of every phase are channels
  (``context_slices``, the same slice windows as ``AMINet``), which shows the network a
  vessel's course through neighbouring slices while every convolution stays 2D, and a
  whole slice goes through at once (no patch seams). The constraint is the seed's
  < 5 min per patient on one CPU. Measured on a busy 2-core CPU (2 threads), over an
  in-plane box of 336 x 400 x 257 voxels: the 2.5D model 54-79 s; a 3D BasicUNet with
  the same widths, sliding window 128 x 128 x 64 with 25 % overlap, 215 s. Per voxel
  without overlap the two cost about the same; the 3D model pays for its overlapping
  windows and has 3 x the parameters (1.4 M vs 0.49 M) to train from the seed's 127
  studies. ``spatial_dims=3`` is available for sites with a GPU.
- *Multiphase input.* The default channels are the three CTA phases: the clot is a
  filling defect in the arterial phase and delayed (collateral) filling shows in phases
  2 and 3. SPIRAL can be added (``"spiral"`` in ``input_names``).
- *Batch norm.* Batch normalisation (not instance norm) by default: in eval mode a
  slice's output then does not depend on how much head the slice or the crop holds
  (instance norm would renormalise by the slice's own statistics), so cropping to the
  atlas (``segment_volume(roi_mask=...)``) changes only voxels near the box edge, where
  zero padding replaces image; ``margin`` moves that edge away from the atlas.
- *Widths.* ``(8, 16, 32, 64, 128, 8)``: the full-resolution level dominates the cost,
  so it is kept narrow and the capacity sits in the deeper levels.

Output: one channel of clot logits (sigmoid by the caller, ``segment_volume`` does it).
Losses for training are in ``lib.losses.clot_losses`` (``TverskyFocalLoss``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.networks.nets import BasicUNet
from scipy import ndimage
from torch import nn

from strokelabel.baselines.figures import clot_figures

from lib.networks.ami_net import NUM_REGIONS, _check_inputs, count_parameters, region_index, region_values, slice_windows

__all__ = [
    "ClotSegNet",
    "DEFAULT_FEATURES",
    "count_parameters",
    "segment_volume",
    "regions_from_clot",
    "clot_location",
]

#: Total stride of BasicUNet (four 2x max-poolings); inputs are padded to a multiple of it.
_STRIDE = 16

#: BasicUNet widths ``(level 0..4, final)``: narrow at full resolution, where the cost is.
DEFAULT_FEATURES: tuple[int, ...] = (8, 16, 32, 64, 128, 8)


class ClotSegNet(nn.Module):
    """Compact 2.5D (or 3D) U-Net that outputs clot logits from multiphase CTA (+ optional SPIRAL).

    Args:
        input_names: volumes stacked as channels, in order (``cta1``, ``cta2``, ``cta3``, ``spiral``).
        context_slices: ``k`` neighbouring slices on each side as extra channels (2.5D only;
            must be 0 for ``spatial_dims=3``).
        spatial_dims: 2 for the 2.5D slice-window model (default), 3 for a 3D U-Net.
        features: BasicUNet widths, six numbers (``DEFAULT_FEATURES``).
        norm: normalisation of BasicUNet's convolutions (default batch norm, see module doc).
        dropout: dropout in BasicUNet's convolution blocks.

    2.5D: input ``(B, len(input_names) * (2k + 1), H, W)``, output ``(B, 1, H, W)``.
    3D: input ``(B, len(input_names), H, W, D)``, output ``(B, 1, H, W, D)``.
    """

    def __init__(
        self,
        input_names: Sequence[str] = ("cta1", "cta2", "cta3"),
        context_slices: int = 2,
        spatial_dims: int = 2,
        features: Sequence[int] = DEFAULT_FEATURES,
        norm: str | tuple = "batch",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.input_names = _check_inputs(input_names)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 (2.5D) or 3, got {spatial_dims}")
        if context_slices < 0:
            raise ValueError(f"context_slices must be >= 0, got {context_slices}")
        if spatial_dims == 3 and context_slices:
            raise ValueError("context_slices is for the 2.5D model; a 3D U-Net sees neighbouring slices itself (use 0)")
        self.spatial_dims = spatial_dims
        self.context_slices = int(context_slices)
        self.in_channels = len(self.input_names) * (2 * self.context_slices + 1)
        self.unet = BasicUNet(
            spatial_dims=spatial_dims,
            in_channels=self.in_channels,
            out_channels=1,
            features=tuple(features),
            norm=norm,
            dropout=dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            shape = "H, W" if self.spatial_dims == 2 else "H, W, D"
            raise ValueError(
                f"ClotSegNet expects (B, {self.in_channels}, {shape}) for inputs {self.input_names} with "
                f"context_slices={self.context_slices}; got {tuple(x.shape)}"
            )
        return self.unet(x)


def _roi_box(roi_mask, shape: tuple[int, int, int], margin: int) -> tuple[slice, slice, slice] | None:
    """Bounding box of ``roi_mask`` grown by ``margin`` voxels in-plane (all of it if no mask)."""
    if roi_mask is None:
        return tuple(slice(0, n) for n in shape)  # type: ignore[return-value]
    mask = np.asarray(roi_mask.cpu() if isinstance(roi_mask, torch.Tensor) else roi_mask).astype(bool)
    if mask.shape != shape:
        raise ValueError(f"roi_mask {mask.shape} is not on the volume grid {shape}")
    if not mask.any():
        return None
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    return (
        slice(max(0, box[0].start - margin), min(shape[0], box[0].stop + margin)),
        slice(max(0, box[1].start - margin), min(shape[1], box[1].stop + margin)),
        box[2],
    )


@torch.no_grad()
def segment_volume(
    net: ClotSegNet,
    volume,
    batch_size: int = 8,
    roi_mask=None,
    margin: int = 16,
    roi_size: Sequence[int] = (128, 128, 64),
    overlap: float = 0.25,
) -> torch.Tensor:
    """Clot probability ``(X, Y, Z)`` of a whole study.

    Args:
        net: the segmentation network (put in eval mode here).
        volume: ``(C, X, Y, Z)``, one channel per ``net.input_names``, normalised as in training.
        batch_size: slices per forward pass (2.5D) or patches per pass (3D).
        roi_mask: optional ``(X, Y, Z)`` mask (e.g. atlas > 0): only its bounding box, grown
            by ``margin`` voxels in-plane, is segmented; probabilities outside are 0. A clot
            outside every atlas region cannot be reported as a region anyway.
        margin: in-plane margin of the box, so the box edge is outside the receptive field
            of the voxels that matter.
        roi_size, overlap: sliding window of the 3D model.
    """
    vol = torch.as_tensor(volume)
    if vol.ndim != 4 or vol.shape[0] != len(net.input_names):
        raise ValueError(f"volume must be ({len(net.input_names)}, X, Y, Z) for inputs {net.input_names}, got {tuple(vol.shape)}")
    net.eval()
    device = next(net.parameters()).device
    out = torch.zeros(vol.shape[1:], dtype=torch.float32)
    box = _roi_box(roi_mask, tuple(vol.shape[1:]), margin)
    if box is None:
        return out
    bx, by, bz = box
    if net.spatial_dims == 3:
        if any(int(r) % _STRIDE for r in roi_size):
            raise ValueError(f"roi_size {tuple(roi_size)} must be multiples of {_STRIDE} (four 2x poolings)")
        patch = vol[:, bx, by, bz].float()[None].to(device)
        logits = sliding_window_inference(patch, roi_size, batch_size, net, overlap=overlap, mode="gaussian")
        out[bx, by, bz] = torch.sigmoid(logits[0, 0]).cpu()
        return out
    crop = vol[:, bx, by, :]  # keep all slices: context windows may reach outside the box
    for start in range(bz.start, bz.stop, batch_size):
        stop = min(start + batch_size, bz.stop)
        x = slice_windows(crop, net.context_slices, start, stop).to(device)
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % _STRIDE, 0, -h % _STRIDE), mode="replicate")  # BasicUNet pools 4 times
        out[bx, by, start:stop] = torch.sigmoid(net(x)[:, 0, :h, :w]).permute(1, 2, 0).cpu()
    return out


def _as_tensor(a) -> torch.Tensor:
    return a.detach().cpu() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def regions_from_clot(
    clot_prob, atlas, region_base: int = 1, threshold: float = 0.5, num_regions: int = NUM_REGIONS
) -> tuple[np.ndarray, np.ndarray]:
    """Region flags and probabilities from clot ∩ atlas, consistent with the clot mask.

    Args:
        clot_prob: ``(X, Y, Z)`` clot probability (``segment_volume``) or a binary clot mask.
            To report regions of a post-processed mask, pass ``prob * mask``.
        atlas: ``(X, Y, Z)`` patient-specific vascular atlas on the same grid.
        region_base: 1 for atlas values 1..15 (0 outside the brain), 0 for the AMI data's 0..14.
        threshold: clot voxels are ``clot_prob >= threshold``.

    Returns:
        ``(flags, probs)``, each ``(num_regions,)``, column ``r`` = atlas value ``r + region_base``:
        ``probs[r]`` is the highest clot probability inside region ``r`` (0 if the region is
        absent), ``flags[r]`` is true iff a voxel of the thresholded clot mask lies in region
        ``r`` (i.e. ``probs >= threshold``), the same union semantics as ``study_flags``.
    """
    p = _as_tensor(clot_prob).float()
    labels = _atlas_values(atlas)
    if p.shape != labels.shape:
        raise ValueError(f"clot {tuple(p.shape)} and atlas {tuple(labels.shape)} must be on the same grid")
    probs = np.zeros(num_regions, dtype=np.float32)
    for r, value in enumerate(region_values(region_base, num_regions)):
        in_region = labels == int(value)  # one boolean pass per region: no int64 copy of a 67 M-voxel atlas
        if in_region.any():
            probs[r] = float(p[in_region].max())
    return probs >= threshold, probs


def _atlas_values(atlas) -> torch.Tensor:
    """Atlas as a compact integer tensor (float NIfTI values rounded)."""
    a = _as_tensor(atlas)
    if a.is_floating_point():
        a = a.round()
    return a.to(torch.int16)


def clot_location(clot_mask, affine, atlas=None, region_base: int = 1, brain_mask=None) -> dict:
    """Figures that size and locate a segmented clot: :func:`strokelabel.baselines.clot_figures`.

    One implementation serves the baseline and the models (volume, components, centre in RAS mm
    and voxels, slice index and range, hemisphere, atlas regions); this only accepts tensors.
    """
    mask = _as_tensor(clot_mask).numpy()
    if mask.ndim != 3:
        raise ValueError(f"clot_mask must be (X, Y, Z), got shape {mask.shape}")
    aff = np.asarray(_as_tensor(affine).numpy(), dtype=np.float64)
    if aff.shape != (4, 4):
        raise ValueError(f"affine must be 4 x 4, got {aff.shape}")
    labels = None if atlas is None else _atlas_values(atlas).numpy()
    brain = None if brain_mask is None else _as_tensor(brain_mask).numpy().astype(bool)
    return clot_figures(mask, aff, labels, region_base=region_base, brain_mask=brain)
