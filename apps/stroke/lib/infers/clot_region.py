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

Both networks run on the working grid of ``clot_region_plan.json`` (the spacing they learned
at; see ``lib/transforms/clot_region.py``); the clot probability is resampled back to the
study grid before thresholding, and the classifier's per-slice output is mapped to the
study's own slice numbers.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from scipy import ndimage

from lib.checkpoints import checkpoint_in_use, load_weights
from lib.infers.stroke_infer import StrokeInferTask, label_array
from lib.losses.clot_losses import unweighted_probability
from lib.networks.ami_net import predict_slices, study_flags
from lib.networks.clot_seg_net import regions_from_clot, segment_volume
from lib.transforms.baselines import ClotRegionBaselined
from lib.transforms.clot_region import load_plan, network_input, regions_list, resample
from lib.transforms.figures import ClotFiguresd
from strokelabel.boxes import bounding_box
from strokelabel.guard import clot_evidence, verdict

logger = logging.getLogger(__name__)

CLOT_THRESHOLD = 0.5


def keep_main_clots(prob: np.ndarray, threshold: float = CLOT_THRESHOLD, relative_mass: float = 0.5) -> tuple[np.ndarray, int]:
    """The clot mask without stray candidates: every connected component of ``prob >= threshold``
    whose probability mass is at least ``relative_mass`` of the strongest one's, and how many were dropped.

    On held-out phantoms the segmentation's false positives were one- or two-voxel specks beside a
    larger true clot. Not only the strongest component is kept: tandem occlusions and emboli
    showers give several clots of similar size.
    """
    mask = prob >= threshold
    box = bounding_box(mask)  # components are found in the candidates' box, not the whole 67 M-voxel grid
    if box is None:
        return mask, 0
    labels, n = ndimage.label(mask[box])
    if n <= 1:
        return mask, 0
    mass = ndimage.sum(prob[box], labels, index=np.arange(1, n + 1))
    keep = np.flatnonzero(mass >= relative_mass * mass.max()) + 1
    mask[box] = np.isin(labels, keep)  # in place: no second whole-grid mask beside the candidates
    return mask, int(n - len(keep))


def working_slice_of(native_slices: int, working_slices: int) -> torch.Tensor:
    """For each study slice, the index of the working-grid slice whose extent holds its centre."""
    z = (torch.arange(native_slices, dtype=torch.float64) + 0.5) * working_slices / native_slices
    return z.floor().long().clamp(0, working_slices - 1)


class ClotRegionInfer(StrokeInferTask):
    required = ("cta1",)
    optional = ("cta2", "cta3", "spiral", "atlas", "cow-msk")

    def __init__(self, path, network, labels, classifier_path=None, classifier_network=None,
                 cta_only_path=None, cta_only_network=None, **kwargs):
        super().__init__(
            path,
            network,
            labels,
            description="Clot (1) on multiphase CTA; which of the 15 vascular atlas regions hold clot, with probabilities",
            **kwargs,
        )
        # Models beside the main segmentation, each used when a checkpoint of it exists
        # (lib.checkpoints): the region classifier, and the CTA-only segmentation for studies
        # without a SPIRAL map.
        self._extra_models = {"classifier": (list(classifier_path or []), classifier_network),
                              "seg_cta": (list(cta_only_path or []), cta_only_network)}
        self._loaded: dict = {}

    def model_path_lists(self) -> list:
        return [*super().model_path_lists(), *(paths for paths, _ in self._extra_models.values())]

    def baseline_transforms(self, data):
        return [ClotRegionBaselined(region_base=self._region_base(data))]

    def figure_transforms(self, data):
        return [ClotFiguresd()]

    def baseline_possible(self, data) -> bool:
        return data.get("spiral") is not None

    def guard(self, data, physics):
        study = data["study"]
        clot = label_array(data["pred"])
        evidence = clot_evidence(study.images["cta1"], study.brain_mask, study.spacing_mm, near=clot > 0)
        return verdict("clot", clot, evidence, spacing_mm=study.spacing_mm)

    @staticmethod
    def _region_base(data) -> int:
        study = data.get("study")
        return int(getattr(study, "region_base", 1)) if study is not None else 1

    # ---- the learned models ------------------------------------------------------------------
    def _extra_model(self, key: str, device: str):
        """The extra model ``key`` (``classifier``, ``seg_cta``) on ``device`` and its checkpoint,
        reloaded when the checkpoint changes (a retraining published a new one); ``(None, None)``
        when it is not installed."""
        paths, network = self._extra_models[key]
        path = checkpoint_in_use(paths)
        if network is None or path is None:
            return None, None
        mtime = os.stat(path).st_mtime
        cached = self._loaded.get((key, device))
        if cached and cached[1] == (path, mtime):
            return cached[0], path
        import copy

        net = load_weights(copy.deepcopy(network), path, torch.device(device)).eval()
        self._loaded[(key, device)] = (net, (path, mtime))
        return net, path

    def _inputs(self, data, device, plan) -> tuple[dict, list[str], dict]:
        """Each installed network (``seg``, ``classifier``) and its input on the working grid, notes,
        and each network's checkpoint. A study without SPIRAL is segmented by the CTA-only model
        when one is installed. The inputs are built once for all (one resampling, one mid-sagittal
        search), then picked."""
        study = data["study"]
        seg, seg_path, notes = None, None, []
        if data.get("spiral") is None:
            seg, seg_path = self._extra_model("seg_cta", device)
            if seg is not None:
                notes.append(f"no SPIRAL map: the CTA-only segmentation ({os.path.basename(seg_path)}) ran")
        if seg is None:
            seg, seg_path = self._get_network(device, data), self.get_path()
        nets, paths = {"seg": seg}, {"seg": seg_path}
        classifier, classifier_path = self._extra_model("classifier", device)
        if classifier is not None:
            nets["classifier"], paths["classifier"] = classifier, classifier_path
        names = list(dict.fromkeys(n for net in nets.values() for n in net.input_names))
        volume, input_notes = network_input(data, names, study.spacing_mm, study.study_id, plan)
        picked = {key: (net, volume[[names.index(n) for n in net.input_names]]) for key, net in nets.items()}
        return picked, input_notes + notes, paths

    def _segment(self, seg, volume: torch.Tensor, data) -> torch.Tensor:
        """Clot probability on the working grid, inside the study's atlas box (if it has an atlas)."""
        atlas = data.get("atlas")
        roi = None
        if atlas is not None:
            roi = (atlas > 0) if self._region_base(data) == 1 else np.ones(atlas.shape, bool)
            roi = resample(roi[None], tuple(volume.shape[1:]), kind="labels")[0].numpy() > 0
        with torch.inference_mode():
            return segment_volume(seg, volume, roi_mask=roi)

    def clot_uncertainty(self, image_path: str, samples: int, device) -> dict:
        """Active-learning score of one study: ``least_confidence`` = 1 - the highest clot probability
        the segmentation gives anywhere (high when it finds no clot it is sure of: a stroke CTA holds one,
        so that study is worth correcting), and the classifier's MC-dropout spread beside it."""
        data = self.pre_transforms()[0]({"image": image_path})
        nets, _, _ = self._inputs(data, device, load_plan())
        prob = self._segment(*nets["seg"], data)
        figures = {"least_confidence": round(1.0 - float(prob.max()), 6), "max_clot_probability": round(float(prob.max()), 6)}
        if "classifier" in nets and samples > 0:
            _, std = predict_slices(*nets["classifier"], mc_samples=max(2, samples))
            figures["classifier_mc_std"] = round(float(std.max()), 6)
        return figures

    def run_model(self, data, device):
        study = data["study"]
        region_base = self._region_base(data)
        result = data.setdefault("result", {})
        atlas = data.get("atlas")

        # The study's brain (the guard reads it) is found first, before the network's buffers and the
        # full-size probability have grown the heap: measured on the full CTA, the peak is then the
        # loaded study plus the larger of the two, not their sum.
        study.brain_mask
        plan = load_plan()
        nets, notes, paths = self._inputs(data, device, plan)
        prob_working = self._segment(*nets["seg"], data)
        native, working = tuple(study.shape), tuple(prob_working.shape)
        prob = resample(prob_working[None], native, kind="probability")[0].numpy()
        clot, dropped = keep_main_clots(prob, CLOT_THRESHOLD)
        # The flags follow the kept clot, not the dropped candidates: its probabilities, in its box. Only
        # those are kept: the study-grid probability (270 MB on a full CTA) is freed before the next step.
        box = bounding_box(clot) or tuple(slice(0, 0) for _ in native)
        kept = prob[box] * clot[box]
        del prob
        result["clot_candidates_dropped"] = dropped
        result["working_grid"] = {"shape": list(working), "spacing_mm": list(plan["spacing_mm"])}
        data["pred"] = clot.view(np.uint8)  # 0/1 bytes as they are: no copy
        result["models"] = {"segmentation": os.path.basename(paths["seg"] or "")}
        result["clot_threshold"] = CLOT_THRESHOLD
        if atlas is not None:
            flags, probabilities = regions_from_clot(kept, np.asarray(atlas)[box], region_base, CLOT_THRESHOLD)
            data["region_flags"], data["region_probabilities"], data["region_base"] = flags, probabilities, region_base
            result["regions_from"] = "segmented clot ∩ atlas"

        if "classifier" in nets:
            slice_probs, _ = predict_slices(*nets["classifier"])
            slice_probs = unweighted_probability(slice_probs)  # trained with pos_weight: read back as probabilities
            # Each study slice takes the working slice it falls in.
            slice_probs = slice_probs[working_slice_of(native[2], slice_probs.shape[0])]
            cls_flags, cls_probs = study_flags(slice_probs, CLOT_THRESHOLD)
            result["models"]["classifier"] = os.path.basename(paths["classifier"])
            result["classifier_regions"] = regions_list(cls_flags, cls_probs, region_base)
            # Study slice -> the atlas regions the classifier flags there (slices with none left out).
            per_slice = slice_probs.numpy() >= CLOT_THRESHOLD
            result["classifier_slice_regions"] = {str(int(z)): [int(r) + region_base for r in np.flatnonzero(per_slice[z])]
                                                  for z in np.flatnonzero(per_slice.any(axis=1))}
            if atlas is not None:
                result["regions_agree"] = bool(np.array_equal(cls_flags, data["region_flags"]))
        if notes:
            result["input_notes"] = notes
        return data
