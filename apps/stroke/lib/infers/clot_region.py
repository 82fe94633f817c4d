"""clot_region: clot voxels and the vascular atlas regions that hold clot, on multiphase CTA.

Methods (``method`` in the request):

- ``baseline``: seed 002's SPIRAL threshold (0.9) mapped through the atlas; needs the SPIRAL map.
- ``model``: the clot segmentation (ClotSegNet) gives the label (clot = 1); the 15 region flags
  of ``regions`` are derived from that clot ∩ atlas, so the label and the flags always agree.
  When a region classifier (AMI-Net, seed 002) is installed too, its own flags (union over
  slices, probability = highest slice probability) are reported beside them as
  ``classifier_regions``, with ``regions_agree``. Neither needs the SPIRAL map; the
  segmentation-derived flags need the atlas (the result says so when there is none), the
  classifier's do not (it names atlas regions from the image alone).
- ``auto``: the model when one is installed, else the baseline.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from lib.infers.stroke_infer import StrokeInferTask
from lib.networks.ami_net import predict_slices, study_flags
from lib.networks.clot_seg_net import regions_from_clot, segment_volume
from lib.transforms.baselines import ClotRegionBaselined
from lib.transforms.clot_region import regions_list, stack_inputs
from lib.transforms.figures import ClotFiguresd

logger = logging.getLogger(__name__)

CLOT_THRESHOLD = 0.5


class ClotRegionInfer(StrokeInferTask):
    required = ("cta1",)
    optional = ("cta2", "cta3", "spiral", "atlas")

    def __init__(self, path, network, labels, classifier_path=None, classifier_network=None, **kwargs):
        super().__init__(
            path,
            network,
            labels,
            description="Clot (1) on multiphase CTA; which of the 15 vascular atlas regions hold clot, with probabilities",
            **kwargs,
        )
        self.classifier_path = list(classifier_path or [])
        self.classifier_network = classifier_network
        self._classifiers: dict = {}

    def baseline_transforms(self, data):
        return [ClotRegionBaselined(region_base=self._region_base(data))]

    def figure_transforms(self, data):
        return [ClotFiguresd()]

    @staticmethod
    def _region_base(data) -> int:
        study = data.get("study")
        return int(getattr(study, "region_base", 1)) if study is not None else 1

    # ---- the learned models ------------------------------------------------------------------
    def classifier_checkpoint(self) -> str | None:
        existing = [p for p in self.classifier_path if p and os.path.exists(p)]
        return existing[-1] if existing else None

    def _classifier(self, device: str):
        path = self.classifier_checkpoint()
        if self.classifier_network is None or path is None:
            return None, None
        mtime = os.stat(path).st_mtime
        cached = self._classifiers.get(device)
        if cached and cached[1] == (path, mtime):
            return cached[0], path
        import copy

        net = copy.deepcopy(self.classifier_network).to(torch.device(device))
        state = torch.load(path, map_location=torch.device(device))
        net.load_state_dict(state.get("model", state))
        net.eval()
        self._classifiers[device] = (net, (path, mtime))
        return net, path

    def run_model(self, data, device):
        study = data["study"]
        region_base = self._region_base(data)
        result = data.setdefault("result", {})
        atlas = data.get("atlas")

        seg = self._get_network(device, data)
        volume, notes = stack_inputs(data, seg.input_names, study.study_id)
        roi = None
        if atlas is not None:
            roi = (atlas > 0) if region_base == 1 else np.ones(atlas.shape, bool)
        with torch.no_grad():
            prob = segment_volume(seg, torch.from_numpy(volume), roi_mask=roi)
        clot = (prob >= CLOT_THRESHOLD).numpy()
        data["pred"] = clot.astype(np.uint8)
        result["models"] = {"segmentation": os.path.basename(self.get_path() or "")}
        result["clot_threshold"] = CLOT_THRESHOLD
        if atlas is not None:
            flags, probabilities = regions_from_clot(prob, atlas, region_base, CLOT_THRESHOLD)
            data["region_flags"], data["region_probabilities"], data["region_base"] = flags, probabilities, region_base
            result["regions_from"] = "segmented clot ∩ atlas"

        classifier, path = self._classifier(device)
        if classifier is not None:
            cls_volume, cls_notes = stack_inputs(data, classifier.input_names, study.study_id)
            notes += [n for n in cls_notes if n not in notes]
            slice_probs, _ = predict_slices(classifier, torch.from_numpy(cls_volume))
            cls_flags, cls_probs = study_flags(slice_probs, CLOT_THRESHOLD)
            result["models"]["classifier"] = os.path.basename(path)
            result["classifier_regions"] = regions_list(cls_flags, cls_probs, region_base)
            per_slice = (slice_probs.numpy() >= CLOT_THRESHOLD).any(axis=1)
            result["classifier_slices_with_clot"] = [int(z) for z in np.flatnonzero(per_slice)]
            if atlas is not None:
                result["regions_agree"] = bool(np.array_equal(cls_flags, data["region_flags"]))
        if notes:
            result["input_notes"] = notes
        return data
