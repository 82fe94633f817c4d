"""Task config of core_penumbra: labels, network, model paths, infer, trainer, active learning.

``--conf`` knobs: ``core_penumbra_mc_samples`` (MC-dropout passes per study for the uncertainty
score, default 4).
"""

from lib.activelearning.uncertainty import MostUncertain, StrokeUncertaintyScoring
from lib.configs.base import StrokeTaskConfig
from lib.infers.core_penumbra import CorePenumbraInfer
from lib.trainers.core_penumbra import CorePenumbraTrain
from lib.transforms.core_penumbra import build_network

UNCERTAINTY_KEY = "core_penumbra_uncertainty"
STRATEGY = "core_penumbra_most_uncertain"
SCORING = "core_penumbra_mc_dropout"


class CorePenumbra(StrokeTaskConfig):
    labels = {"core": 1, "penumbra": 2}

    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.network = build_network()
        self.mc_samples = int(self.conf.get(f"{name}_mc_samples", 4))
        self._infer = None

    def infer(self):
        if self._infer is None:
            self._infer = CorePenumbraInfer(path=self.path, network=self.network, labels=self.labels)
        return self._infer

    def trainer(self):
        # Its own network instance: training never touches the one the infer task serves.
        return CorePenumbraTrain(
            model_dir=self.model_dir,
            network=build_network(),
            publish_path=self.in_use_path,
            shipped_path=self.shipped_path,
            labels=self.labels,
        )

    def strategy(self):
        return {STRATEGY: MostUncertain(key=UNCERTAINTY_KEY, kinds=("ctp",))}

    def scoring_method(self):
        infer = self.infer()
        return {
            SCORING: StrokeUncertaintyScoring(
                infer,
                infer.mc_dropout_uncertainty,
                key=UNCERTAINTY_KEY,
                score_name="entropy_brain",
                kinds=("ctp",),
                samples=self.mc_samples,
            )
        }
