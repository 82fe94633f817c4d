"""Task config of clot_region: labels, the two networks, their model paths, infer task, trainers, scoring.

Three learned models serve one infer task (``clot_region``):

- the clot segmentation (ClotSegNet, 2.5D U-Net): ``model/clot_region.pt``;
- the CTA-only clot segmentation, for studies without a SPIRAL map: ``model/clot_region_cta.pt``;
- the region classifier (AMI-Net, seed 002): ``model/clot_region_classifier.pt``.

The first and the classifier take the three CTA phases, the SPIRAL-like map (seed 002 tried CTA
and SPIRAL as inputs) and phase 1 mirrored about the mid-sagittal plane (hemispheric
comparison); the classifier also takes head coordinates (where a clot lies decides its region).
Why a second segmentation: a model that has SPIRAL leans on it, and with the channel zeroed
it found no clot in 12 held-out studies (2 when trained with SPIRAL dropped from half of its
samples), while the same network trained on the CTA phases alone found 7 (docs/clot_region.md). A study
without SPIRAL is segmented by the CTA-only model when one is installed, else by the first
with zeros in its SPIRAL channel.

Each has its starting model in ``model/shipped/`` (when one learned anything) and its own
trainer (``clot_region``, ``clot_region_cta``, ``clot_region_classifier``), all trained from the
corrected clot labels of the datastore.
The architectures are fixed here, so a shipped or trained checkpoint always fits.

Active learning: scoring ``clot_region_least_confidence`` (1 - the highest clot probability of
the segmentation in use; the classifier's MC-dropout spread is stored beside it) and strategy
``clot_region_most_uncertain``; ``--conf clot_region_mc_samples`` (default 4).
"""

from lib.activelearning.uncertainty import MostUncertain, StrokeUncertaintyScoring
from lib.checkpoints import model_paths
from lib.configs.base import StrokeTaskConfig
from lib.infers.clot_region import ClotRegionInfer
from lib.networks.ami_net import AMINet
from lib.networks.clot_seg_net import ClotSegNet

SEG_ARGS = dict(input_names=("cta1", "cta2", "cta3", "spiral", "cta1_mirror"), context_slices=2, features=(8, 16, 32, 32, 64, 8))
#: For studies without SPIRAL: the same network on the CTA phases and the mirrored phase 1 only.
CTA_ONLY_SEG_ARGS = dict(SEG_ARGS, input_names=("cta1", "cta2", "cta3", "cta1_mirror"))
UNCERTAINTY_KEY = "clot_region_uncertainty"
STRATEGY = "clot_region_most_uncertain"
SCORING = "clot_region_least_confidence"

CLASSIFIER_ARGS = dict(input_names=("cta1", "cta2", "cta3", "spiral", "cta1_mirror", "coord_lr", "coord_ap", "coord_si"), context_slices=2, width=0.5, feat_channels=256)


def segmentation_network() -> ClotSegNet:
    return ClotSegNet(**SEG_ARGS)


def cta_only_segmentation_network() -> ClotSegNet:
    return ClotSegNet(**CTA_ONLY_SEG_ARGS)


def classifier_network() -> AMINet:
    return AMINet(**CLASSIFIER_ARGS)


class ClotRegion(StrokeTaskConfig):
    labels = {"clot": 1}

    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.network = segmentation_network()
        self.classifier = classifier_network()
        self.classifier_name = f"{name}_classifier"
        self.classifier_path = model_paths(model_dir, self.classifier_name)
        self.classifier_shipped_path, self.classifier_in_use_path = self.classifier_path
        self.cta_only_name = f"{name}_cta"
        self.cta_only_path = model_paths(model_dir, self.cta_only_name)
        self.cta_only_shipped_path, self.cta_only_in_use_path = self.cta_only_path

    def infer(self):
        if getattr(self, "_infer", None) is None:
            self._infer = ClotRegionInfer(path=self.path, network=self.network, labels=self.labels,
                                          classifier_path=self.classifier_path, classifier_network=self.classifier,
                                          cta_only_path=self.cta_only_path,
                                          cta_only_network=cta_only_segmentation_network())
        return self._infer

    def strategy(self):
        return {STRATEGY: MostUncertain(key=UNCERTAINTY_KEY, kinds=("cta",),
                                        description="The CTA study whose clot the model is least sure of")}

    def scoring_method(self):
        infer = self.infer()
        return {
            SCORING: StrokeUncertaintyScoring(
                infer, infer.clot_uncertainty, key=UNCERTAINTY_KEY, score_name="least_confidence", kinds=("cta",),
                samples=int(self.conf.get(f"{self.name}_mc_samples", 4)),
                description="1 - the highest clot probability of the segmentation in use (classifier MC-dropout spread beside it)",
            )
        }

    def trainer(self):
        from lib.trainers.clot_region import ClotRegionClassifierTrain, ClotSegmentationTrain

        return {
            self.name: ClotSegmentationTrain(
                self.model_dir, segmentation_network(), self.in_use_path, shipped_path=self.shipped_path,
                description="Train the clot segmentation (ClotSegNet) from corrected clot labels",
            ),
            self.cta_only_name: ClotSegmentationTrain(
                self.model_dir, cta_only_segmentation_network(), self.cta_only_in_use_path, shipped_path=self.cta_only_shipped_path,
                description="Train the CTA-only clot segmentation (for studies without a SPIRAL map) from corrected clot labels",
            ),
            self.classifier_name: ClotRegionClassifierTrain(
                self.model_dir, classifier_network(), self.classifier_in_use_path, shipped_path=self.classifier_shipped_path,
                description="Train the AMI-Net region classifier; region targets from the corrected clot and the atlas",
            ),
        }
