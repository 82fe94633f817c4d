"""Task config of clot_region: labels, the two networks, their model paths, infer task, trainers, scoring.

Two learned models serve one infer task (``clot_region``):

- the clot segmentation (ClotSegNet, 2.5D U-Net on the three CTA phases): ``model/clot_region.pt``;
- the region classifier (AMI-Net, seed 002, on CTA phase 1): ``model/clot_region_classifier.pt``.

Each has its starting model in ``model/shipped/`` and its own trainer (``clot_region``,
``clot_region_classifier``), both trained from the corrected clot labels of the datastore.
The architectures are fixed here, so a shipped or trained checkpoint always fits.
"""

import os

from lib.configs.base import StrokeTaskConfig
from lib.infers.clot_region import ClotRegionInfer
from lib.networks.ami_net import AMINet
from lib.networks.clot_seg_net import ClotSegNet

SEG_ARGS = dict(input_names=("cta1", "cta2", "cta3"), context_slices=2, features=(8, 16, 32, 32, 64, 8))
CLASSIFIER_ARGS = dict(input_names=("cta1",), context_slices=2, width=0.5, feat_channels=256)


def segmentation_network() -> ClotSegNet:
    return ClotSegNet(**SEG_ARGS)


def classifier_network() -> AMINet:
    return AMINet(**CLASSIFIER_ARGS)


class ClotRegion(StrokeTaskConfig):
    labels = {"clot": 1}

    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.network = segmentation_network()
        self.classifier = classifier_network()
        self.classifier_name = f"{name}_classifier"
        self.classifier_shipped_path = os.path.join(model_dir, "shipped", f"{self.classifier_name}.pt")
        self.classifier_in_use_path = os.path.join(model_dir, f"{self.classifier_name}.pt")
        self.classifier_path = [self.classifier_shipped_path, self.classifier_in_use_path]

    def infer(self):
        return ClotRegionInfer(path=self.path, network=self.network, labels=self.labels,
                               classifier_path=self.classifier_path, classifier_network=self.classifier)

    def trainer(self):
        from lib.trainers.clot_region import ClotRegionClassifierTrain, ClotSegmentationTrain

        return {
            self.name: ClotSegmentationTrain(
                self.model_dir, segmentation_network(), self.in_use_path, shipped_path=self.shipped_path,
                description="Train the clot segmentation (ClotSegNet) from corrected clot labels",
            ),
            self.classifier_name: ClotRegionClassifierTrain(
                self.model_dir, classifier_network(), self.classifier_in_use_path, shipped_path=self.classifier_shipped_path,
                description="Train the AMI-Net region classifier; region targets from the corrected clot and the atlas",
            ),
        }
