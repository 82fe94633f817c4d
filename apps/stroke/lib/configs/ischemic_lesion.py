"""Task config of ischemic_lesion: labels, model paths, the infer task and its trainers.

One infer task ``ischemic_lesion`` picks the model by the study's modalities (MDANet on CTP,
MDANet on MRI DWI+ADC, the hemispheric Siamese net on DWI alone). Each model has its own
trainer, registered as a dict: ``ischemic_lesion_ctp``, ``ischemic_lesion_mri``,
``ischemic_lesion_siamese``. Active learning: the generic MC-dropout scoring
(``ischemic_lesion_mc_dropout``) and ``ischemic_lesion_most_uncertain`` strategy of
``lib.activelearning.uncertainty``; ``--conf ischemic_lesion_mc_samples`` (default 4). ``--conf ischemic_lesion_components``
(``strict``, ``evidence`` or ``all``; default ``strict``, chosen on phantoms: docs/lesion_component_rules.md) is the site's default MRI component rule (a request's
``lesion_components`` still chooses per study). Each model is ``model/ischemic_lesion_<route>.pt`` once trained,
else the starting model ``model/shipped/ischemic_lesion_<route>.pt``.
"""

from lib.activelearning.uncertainty import MostUncertain, StrokeUncertaintyScoring
from lib.configs.base import StrokeTaskConfig
from lib.infers.ischemic_lesion import IschemicLesionInfer, route_paths
from lib.transforms.ischemic_lesion import ROUTES, build_network

UNCERTAINTY_KEY = "ischemic_lesion_uncertainty"
STRATEGY = "ischemic_lesion_most_uncertain"
SCORING = "ischemic_lesion_mc_dropout"


class IschemicLesion(StrokeTaskConfig):
    labels = {"lesion": 1}

    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.route_paths = route_paths(model_dir)

    def infer(self):
        if getattr(self, "_infer", None) is None:
            self._infer = IschemicLesionInfer(path=self.path, network=None, labels=self.labels, model_dir=self.model_dir,
                                              lesion_components=self.conf.get("ischemic_lesion_components", "strict"))
        return self._infer

    def trainer(self):
        from lib.trainers.ischemic_lesion import IschemicLesionTrain

        return {
            f"ischemic_lesion_{route}": IschemicLesionTrain(
                route=route,
                model_dir=self.model_dir,
                network=build_network(route),
                publish_path=self.route_paths[route][1],
                shipped_path=self.route_paths[route][0],
                labels=self.labels,
            )
            for route in ROUTES
        }

    # ---- active learning: the generic MC-dropout scoring and strategy (lib.activelearning.uncertainty)
    def strategy(self):
        return {STRATEGY: MostUncertain(key=UNCERTAINTY_KEY, kinds=("mri", "ctp"), description="Most uncertain lesion study first (MC dropout)")}

    def scoring_method(self):
        infer = self.infer()
        return {
            SCORING: StrokeUncertaintyScoring(
                infer,
                infer.mc_dropout_uncertainty,
                key=UNCERTAINTY_KEY,
                score_name="entropy_lesion",
                kinds=("mri", "ctp"),
                samples=int(self.conf.get("ischemic_lesion_mc_samples", 4)),
            )
        }
