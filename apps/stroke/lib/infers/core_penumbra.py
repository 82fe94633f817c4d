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
from lib.transforms.baselines import CorePenumbraBaselined
from lib.transforms.core_penumbra import CorePenumbraInputd, slice_inferer
from lib.transforms.figures import CorePenumbraFiguresd
from lib.transforms.grid import mirror_averaged, resample_inplane
from strokelabel.guard import verdict
from strokelabel.lifeline import wait_for_foreground


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
    def _model_input(self, data: Dict[str, Any]) -> Dict[str, Any]:
        return CorePenumbraInputd(self.network.net.in_maps)(data)

    def probabilities(self, data: Dict[str, Any], device, mc_dropout: bool = False) -> torch.Tensor:
        """Softmax ``(3, H, W, D)`` on the study grid, of the model in use for a loaded study (``data["image"]`` set by
        :class:`CorePenumbraInputd`); ``mc_dropout`` keeps dropout sampling (one MC draw)."""
        network = self._get_network(device, data)
        network.eval()
        network.net.set_mc_dropout(mc_dropout)
        image = torch.as_tensor(np.asarray(data["image"]), dtype=torch.float32, device=device)[None]
        softmax = lambda x: torch.softmax(slice_inferer()(x, network).float(), dim=1)  # noqa: E731
        # The served answer is averaged with the left-right mirrored study (RAS: the volume's first
        # axis, dim 2 here); a Monte-Carlo draw needs no second pass.
        with torch.no_grad():
            probs = (softmax(image) if mc_dropout else mirror_averaged(softmax, image, lr_dim=2))[0]
        network.net.set_mc_dropout(False)
        return resample_inplane(probs, data["brain_mask"].shape[:2], mode="bilinear")  # back to the study grid

    def run_model(self, data: Dict[str, Any], device):
        d = self._model_input(data)
        probs = self.probabilities(d, device)
        label = torch.argmax(probs, dim=0).cpu().numpy().astype(np.uint8)
        label[~d["brain_mask"]] = 0
        d["pred"] = label
        d["result"]["model"] = os.path.basename(self.get_path() or "")
        d["result"]["model_path"] = "published" if self.get_path() == self.path[-1] else "shipped"
        return d

    def mc_dropout_uncertainty(self, image_path: str, samples: int, device) -> Dict[str, float]:
        """MC-dropout uncertainty of one study: ``samples`` stochastic passes, the mean voxel entropy
        (nats) of the mean softmax over the brain, and over the voxels any pass called ischemic."""
        d = self._model_input(self.pre_transforms()[0]({"image": image_path}))
        draws = []
        for _ in range(max(2, samples)):
            wait_for_foreground()  # background scoring: a clinician's infer or save goes first, pass by pass
            draws.append(self.probabilities(d, device, mc_dropout=True))
        draws = torch.stack(draws)
        mean = draws.mean(dim=0)
        entropy = -(mean * torch.log(mean.clamp_min(1e-8))).sum(dim=0).cpu().numpy()
        brain = d["brain_mask"]
        ischemic = (draws.argmax(dim=1) > 0).any(dim=0).cpu().numpy() & brain
        return {
            "entropy_brain": float(entropy[brain].mean()) if brain.any() else 0.0,
            "entropy_ischemic": float(entropy[ischemic].mean()) if ischemic.any() else 0.0,
            "ischemic_fraction": float(ischemic.sum() / max(int(brain.sum()), 1)),
        }
