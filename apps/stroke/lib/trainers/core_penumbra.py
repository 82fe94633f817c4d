"""core_penumbra trainer: CorePenumbraNet on axial slices, focal Tversky loss, gradual fine-tuning.

The shared :class:`StrokeTrainTask` does the rest (label checks, fixed split, versions, publish
only if the validation Dice is not worse). Training samples are axial slices, drawn from each
study with MONAI's ``RandCropByPosNegLabeld`` (half of them through core or penumbra, since
most slices hold neither); validation runs the whole volume slice by slice, as inference does.

**Gradual fine-tuning** (seed 004, Exp-2): when a run starts from the model in use (the shipped
or the last published one), the epochs are split in thirds: encoders frozen (decoder, NIHSS
modulation and head train), then the deeper half of the encoders unfrozen, then everything.
A run from scratch (``pretrained: false``, or no model yet) trains everything from the start.
"""

from __future__ import annotations

import logging
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    EnsureTyped,
    RandCropByPosNegLabeld,
    RandFlipd,
    SqueezeDimd,
)
from monailabel.tasks.train.basic_train import Context
from torch import nn

from lib.losses.focal_tversky import FocalTverskyLoss
from lib.trainers.stroke_train import StrokeTrainTask
from lib.transforms.augment import core_penumbra_augmentations
from lib.transforms.core_penumbra import CorePenumbraInputd, KeepKeysd, LoadLabeld, slice_inferer, source_maps
from lib.transforms.study import LoadStudyd

logger = logging.getLogger(__name__)

#: Focal Tversky class weights (background, core, penumbra): core, the rare class, weighs most.
CLASS_WEIGHTS = (1.0, 3.0, 1.5)
#: Weight of the voxel-wise cross-entropy added to the focal Tversky loss (see CorePenumbraLoss).
CE_WEIGHT = 1.0


class CorePenumbraLoss(nn.Module):
    """Focal Tversky loss (seed 004: gamma 4/3, alpha 0.7, beta 0.3) with core weighted most, plus a
    class-weighted cross-entropy (``ce_weight``; 0 gives the seed's loss alone).

    Why the extra term: trained from scratch on CPU for a few hundred steps, the region-level
    Tversky index alone never started predicting the rare core class (validation core Dice 0
    after 10 epochs on phantoms); the voxel-wise cross-entropy gives every core voxel its own
    gradient from the first step, as MONAI's ``DiceCELoss`` does for the Dice loss.
    """

    def __init__(self, class_weights=CLASS_WEIGHTS, ce_weight: float = CE_WEIGHT):
        super().__init__()
        self.ftl = FocalTverskyLoss(class_weights=class_weights)
        self.register_buffer("ce_class_weights", torch.as_tensor(class_weights, dtype=torch.float32))
        self.ce_weight = float(ce_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.ftl(logits, target)
        if self.ce_weight:
            weights = self.ce_class_weights.to(logits)
            loss = loss + self.ce_weight * F.cross_entropy(logits, target[:, 0].long(), weight=weights)
        return loss


def fine_tuning_stage(epoch: int, max_epochs: int) -> str:
    """Stage of the gradual fine-tuning for a 1-based ``epoch``: thirds of the run."""
    if max_epochs < 3:
        return "all" if epoch == max_epochs else "decoder"
    third = max_epochs // 3
    if epoch <= third:
        return "decoder"
    if epoch <= 2 * third:
        return "deep"
    return "all"


class GradualFineTuning:
    """Ignite handler: at each epoch start, set the stage of ``fine_tuning_stage`` on the network."""

    def __init__(self, net, max_epochs: int):
        self.net = net
        self.max_epochs = max_epochs

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)
        engine.add_event_handler(Events.COMPLETED, lambda e: self.net.set_trainable("all"))

    def __call__(self, engine) -> None:
        stage = fine_tuning_stage(engine.state.epoch, self.max_epochs)
        if stage != self.net.stage:
            logger.info(f"core_penumbra: epoch {engine.state.epoch}/{self.max_epochs}: fine-tuning stage '{stage}'")
        self.net.set_trainable(stage)


def train_transforms(maps: Sequence[str], slices_per_study: int = 8) -> list:
    """Study -> ``slices_per_study`` normalised axial slices ``image`` (C, H, W) and ``label`` (1, H, W)."""
    return [
        LoadStudyd(source_maps(maps), ("mip",)),
        LoadLabeld(),
        CorePenumbraInputd(maps),
        KeepKeysd(("image", "label")),
        EnsureTyped(keys=("image", "label"), track_meta=False),
        RandCropByPosNegLabeld(
            keys=("image", "label"), label_key="label", spatial_size=(-1, -1, 1), pos=1, neg=1, num_samples=slices_per_study
        ),
        SqueezeDimd(keys=("image", "label"), dim=-1),
        RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=0),  # left-right: strokes occur on both sides
        *core_penumbra_augmentations(maps),  # appearance, per sample (lib.transforms.augment)
    ]


def val_transforms(maps: Sequence[str]) -> list:
    return [
        LoadStudyd(source_maps(maps), ("mip",)),
        LoadLabeld(),
        CorePenumbraInputd(maps),
        KeepKeysd(("image", "label")),
        EnsureTyped(keys=("image", "label"), track_meta=False),
    ]


def post_transforms() -> list:
    return [
        EnsureTyped(keys="pred", track_meta=False),
        Activationsd(keys="pred", softmax=True),
        AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=(3, 3)),
    ]


class CorePenumbraTrain(StrokeTrainTask):
    def __init__(self, model_dir, network, publish_path, labels: Dict[str, int], config=None, **kwargs):
        defaults = {"max_epochs": 6, "train_batch_size": 2, "slices_per_study": 8, "learning_rate": 1e-3}
        super().__init__(
            model_dir=model_dir,
            network=network,
            publish_path=publish_path,
            kinds=("ctp",),
            labels=labels,
            description="Train core/penumbra (CorePenumbraNet, seed 004) on the site's final labels",
            config={**defaults, **(config or {})},
            **kwargs,
        )
        self._maps = tuple(network.net.in_maps)

    def loss_function(self, context: Context):
        return CorePenumbraLoss(ce_weight=float(context.request.get("ce_weight", CE_WEIGHT)))

    def train_pre_transforms(self, context: Context):
        return train_transforms(self._maps, int(context.request.get("slices_per_study", 8)))

    def train_post_transforms(self, context: Context):
        return post_transforms()

    def val_pre_transforms(self, context: Context):
        return val_transforms(self._maps)

    def val_post_transforms(self, context: Context):
        return post_transforms()

    def val_inferer(self, context: Context):
        return slice_inferer()

    def train_handlers(self, context: Context):
        handlers = super().train_handlers(context)
        if context.pretrained and self._model_in_use:
            handlers.append(GradualFineTuning(context.network.net, int(context.max_epochs)))
        else:
            context.network.net.set_trainable("all")
        return handlers
