"""core_penumbra: ischemic core and penumbra from CT perfusion maps.

Two methods share the study loader and the figures (volumes, mismatch, DEFUSE 3): the
threshold baseline, and the learned CorePenumbraNet (seed 004) run slice by slice over the
volume, its softmax argmax masked by the brain mask (seed §3.1: nothing outside the brain).
"""

from __future__ import annotations

import os
from typing import Any, Dict

import numpy as np
import torch

from lib.infers.stroke_infer import StrokeInferTask, label_array
from lib.networks.inference import for_inference
from lib.transforms.baselines import CorePenumbraBaselined
from lib.transforms.core_penumbra import CorePenumbraInputd, slice_inferer
from lib.transforms.figures import CorePenumbraFiguresd
from lib.transforms.grid import mirror_averaged, resample_inplane
from strokelabel.boxes import bounding_box
from strokelabel.guard import verdict
from strokelabel.lifeline import wait_for_foreground


def first_argmax(probs: torch.Tensor) -> torch.Tensor:
    """``torch.argmax(probs, dim=0)`` (uint8, the first class on ties) by comparisons: torch's reduction over the
    leading axis of a (classes, H, W, slices) volume took ~1 s per 8 slices of 512 x 512, this ~0.02 s."""
    label = torch.zeros(probs.shape[1:], dtype=torch.uint8, device=probs.device)
    best = probs[0]
    for k in range(1, probs.shape[0]):
        higher = probs[k] > best
        label[higher] = k
        best = torch.where(higher, probs[k], best)
    return label


# Slices per batch of the slice inferer (also the step the brain's slice range is widened to).
SLICE_BATCH = 8


def brain_slices(brain: np.ndarray, multiple: int = SLICE_BATCH) -> slice:
    """The axial slices (last axis) that hold brain, widened to whole multiples of ``multiple`` from slice 0
    (empty when no slice holds brain)."""
    box = bounding_box(brain)
    if box is None:
        return slice(0, 0)
    start = (box[-1].start // multiple) * multiple
    return slice(start, min(brain.shape[-1], -(-box[-1].stop // multiple) * multiple))


class CorePenumbraInfer(StrokeInferTask):
    required = ("cbf", "cbv", "mtt", "tmax")
    optional = ("mip", "ttp")

    def __init__(self, path, network, labels, **kwargs):
        super().__init__(
            path,
            network,
            labels,
            description="Core (1) and penumbra (2) from CT perfusion maps CBF, CBV, MTT, Tmax; volumes in mL, "
            "mismatch and DEFUSE 3 imaging criteria",
            **kwargs,
        )

    def baseline_transforms(self, data):
        return [CorePenumbraBaselined()]

    def figure_transforms(self, data):
        return [CorePenumbraFiguresd()]

    def guard(self, data, physics):
        return verdict("core_penumbra", label_array(data["pred"]), physics["pred"], spacing_mm=data["study"].spacing_mm)

    # ---- the learned model -------------------------------------------------------------------
    def _get_network(self, device, data):
        """MONAI Label's cached network (reloaded when the model file changes), rewritten once for inference
        (:func:`lib.networks.inference.for_inference`: channels-last; CorePenumbraNet has no batch norm to fold).
        Full CTP maps 512 x 512 x 64: model 12.0 -> 10.1 s, label and result identical (and on the real ISLES'24 case)."""
        network = super()._get_network(device, data)
        if not getattr(network, "rewritten_for_inference", False):
            network = for_inference(network)
            network.rewritten_for_inference = True
            self._networks[device] = (network, self._networks[device][1])
        return network

    def _model_input(self, data: Dict[str, Any]) -> Dict[str, Any]:
        return CorePenumbraInputd(self.network.net.in_maps)(data)

    def probabilities(self, data: Dict[str, Any], device, mc_dropout: bool = False) -> tuple[torch.Tensor, slice]:
        """Softmax ``(3, H', W', D)`` on the working grid of the model in use for a loaded study (``data["image"]``
        set by :class:`CorePenumbraInputd`), and the slices it was computed on; ``mc_dropout`` keeps dropout
        sampling (one MC draw).

        Slices outside the brain's extent are not run (0 there): every voxel of them is outside the brain, where
        the label is 0. The extent is widened to the inferer's batches of slices, so every slice that is run sits
        in the same batch as on the whole volume and gets the same numbers."""
        network = self._get_network(device, data)
        network.eval()
        network.net.set_mc_dropout(mc_dropout)
        image = torch.as_tensor(np.asarray(data["image"]), dtype=torch.float32, device=device)[None]
        slices = brain_slices(data["brain_mask"], SLICE_BATCH)
        inferer = slice_inferer(SLICE_BATCH)
        softmax = lambda x: torch.softmax(inferer(x, network).float(), dim=1)  # noqa: E731
        probs = torch.zeros((3, *image.shape[2:]), dtype=torch.float32, device=device)
        if slices.stop > slices.start:
            part = image[..., slices]
            # The served answer is averaged with the left-right mirrored study (RAS: the volume's first
            # axis, dim 2 here); a Monte-Carlo draw needs no second pass.
            with torch.inference_mode():
                probs[..., slices] = (softmax(part) if mc_dropout else mirror_averaged(softmax, part, lr_dim=2))[0]
        network.net.set_mc_dropout(False)
        return probs, slices

    def study_grid_chunks(self, probs: torch.Tensor, slices: slice, shape, chunk: int = SLICE_BATCH):
        """The working-grid ``probs`` back on the study grid (bilinear, slice by slice), ``chunk`` slices at a
        time: (slice range, ``(3, H, W, chunk)``), never the whole ``(3, H, W, D)`` at once."""
        for start in range(slices.start, slices.stop, chunk):
            part = slice(start, min(start + chunk, slices.stop))
            yield part, resample_inplane(probs[..., part], shape[:2], mode="bilinear")

    def run_model(self, data: Dict[str, Any], device):
        d = self._model_input(data)
        brain = d["brain_mask"]
        probs, slices = self.probabilities(d, device)
        label = np.zeros(brain.shape, dtype=np.uint8)
        for part, chunk in self.study_grid_chunks(probs, slices, brain.shape):
            label[..., part] = first_argmax(chunk).cpu().numpy()
        label[~brain] = 0
        d["pred"] = label
        # The network's input (maps on the working grid, ~140 MB at 512 x 512 x 64) is not read again: the guard's
        # baseline, the figures and the writer (``image_path``) run without it.
        del probs
        d["image"] = d["image_path"]
        d["result"]["model"] = os.path.basename(self.get_path() or "")
        d["result"]["model_path"] = "published" if self.get_path() == self.path[-1] else "shipped"
        return d

    def mc_dropout_uncertainty(self, image_path: str, samples: int, device) -> Dict[str, float]:
        """MC-dropout uncertainty of one study: ``samples`` stochastic passes, the mean voxel entropy
        (nats) of the mean softmax over the brain, and over the voxels any pass called ischemic."""
        d = self._model_input(self.pre_transforms()[0]({"image": image_path}))
        brain = d["brain_mask"]
        draws = []  # per pass: the softmax at the brain's voxels, (3, brain voxels)
        for _ in range(max(2, samples)):
            wait_for_foreground()  # background scoring: a clinician's infer or save goes first, pass by pass
            probs, slices = self.probabilities(d, device, mc_dropout=True)
            draws.append(torch.cat([chunk[:, torch.from_numpy(brain[..., part])] for part, chunk in self.study_grid_chunks(probs, slices, brain.shape)], dim=1))
        draws = torch.stack(draws)
        mean = draws.mean(dim=0)
        entropy = -(mean * torch.log(mean.clamp_min(1e-8))).sum(dim=0).cpu().numpy()
        ischemic = (draws.argmax(dim=1) > 0).any(dim=0).cpu().numpy()
        return {
            "entropy_brain": float(entropy.mean()) if entropy.size else 0.0,
            "entropy_ischemic": float(entropy[ischemic].mean()) if ischemic.any() else 0.0,
            "ischemic_fraction": float(ischemic.sum() / max(int(brain.sum()), 1)),
        }

