"""Trainers of ``clot_region``: the clot segmentation (ClotSegNet) and the region classifier (AMINet).

Both learn from the same datastore labels, the clinician's corrected clot (label 1); the
classifier's per-slice region targets are derived from that clot and the study's vascular
atlas (seed 002's label rule), so correcting the clot in 3D Slicer corrects both models.
The shared base (``StrokeTrainTask``) checks the labels, splits the studies, fine-tunes from
the model in use and publishes a candidate only if its validation figure is not worse:

- segmentation: clot Dice over whole validation studies (all slices, as inference runs);
- classifier: per-slice region F1 (micro-averaged over slices and regions, seed 002's metric;
  for binary flags Dice and F1 are the same number), also over whole validation studies.
"""

from __future__ import annotations

import torch
from monai.handlers import MeanDice, from_engine
from monai.transforms import Activationsd, AsDiscreted, Lambdad

from lib.losses.clot_losses import REGION_POS_WEIGHT, RegionBCELoss, TverskyFocalLoss
from lib.trainers.stroke_train import VAL_METRIC, StrokeTrainTask
from lib.transforms.augment import clot_region_augmentations
from lib.transforms.clot_region import (
    DropKeysd,
    LoadClotStudyd,
    RegionTargetsd,
    SampleClotSlicesd,
    SliceRegionInferer,
    SliceSegmentationInferer,
)

# train_batch_size counts studies: each gives samples_per_study slice windows, so a step sees
# train_batch_size x samples_per_study slices.
# spiral_dropout: share of samples whose SPIRAL channels are zeroed, so the model also works without one.
DEFAULTS = {"max_epochs": 20, "train_batch_size": 1, "samples_per_study": 16, "pos_fraction": 0.5, "crop_size": 256,
            "learning_rate": 2e-3, "spiral_dropout": 0.3}


class _ClotTrainBase(StrokeTrainTask):
    target = "clot"

    def __init__(self, model_dir, network, publish_path, description, region_base: int = 1, config=None, **kwargs):
        self.region_base = region_base
        super().__init__(model_dir, network, publish_path, kinds=("cta",), labels={"clot": 1}, description=description,
                         config={**DEFAULTS, **(config or {})}, **kwargs)

    def _load(self, need_atlas: bool):
        return LoadClotStudyd(self._network.input_names, self.region_base, need_atlas=need_atlas)

    def train_pre_transforms(self, context):
        request = context.request
        return [
            self._load(need_atlas=self.target == "regions"),
            SampleClotSlicesd(self._network.context_slices, target=self.target,
                              num_samples=int(request.get("samples_per_study", 16)),
                              pos_fraction=float(request.get("pos_fraction", 0.5)),
                              crop_size=int(request.get("crop_size", 256)) or None,
                              input_names=self._network.input_names,
                              drop_prob=float(request.get("spiral_dropout", 0.3))),
            # appearance, per sample (lib.transforms.augment)
            *clot_region_augmentations(self._network.input_names, self._network.context_slices),
        ]

    def val_key_metric(self, context):
        return {VAL_METRIC: MeanDice(output_transform=from_engine(["pred", "label"]), include_background=True)}

    def train_post_transforms(self, context):
        return [Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=0.5)]


class ClotSegmentationTrain(_ClotTrainBase):
    """ClotSegNet on slice windows; Tversky + focal loss (tiny targets, see ``clot_losses``)."""

    target = "clot"

    def loss_function(self, context):
        return TverskyFocalLoss()

    def train_key_metric(self, context):
        return {"train_dice": MeanDice(output_transform=from_engine(["pred", "label"]), include_background=True)}

    def val_pre_transforms(self, context):
        return [self._load(need_atlas=False), DropKeysd(keys=("atlas", "region_base", "study_id"))]

    def val_inferer(self, context):
        return SliceSegmentationInferer()


class ClotRegionClassifierTrain(_ClotTrainBase):
    """AMINet on slice windows; BCE with the positive term weighted (seed 002's pos_weight ~15)."""

    target = "regions"

    def loss_function(self, context):
        # Fixed, not a request option: inference reads the outputs back with the same weight.
        return RegionBCELoss(pos_weight=REGION_POS_WEIGHT)

    def train_key_metric(self, context):
        return {"train_f1": MeanDice(output_transform=from_engine(["pred", "label"]), include_background=True)}

    def train_post_transforms(self, context):
        # A flag where the unweighted probability is >= 0.5 (see unweighted_probability), as inference
        # flags; then (15,) per sample -> (1, 15), so Dice over it is the sample's region F1.
        threshold = REGION_POS_WEIGHT / (1.0 + REGION_POS_WEIGHT)
        return [Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=threshold),
                Lambdad(keys=("pred", "label"), func=lambda t: torch.as_tensor(t).reshape(1, -1))]

    def val_pre_transforms(self, context):
        return [self._load(need_atlas=True), RegionTargetsd(), DropKeysd(keys=("region_base", "study_id"))]

    def val_inferer(self, context):
        return SliceRegionInferer()
