"""What the stroke task configs share. Abstract (no ``infer``), so the app does not serve it."""

from typing import Dict

from monailabel.interfaces.config import TaskConfig

from lib.checkpoints import model_paths


class StrokeTaskConfig(TaskConfig):
    """A task's labels, model path and ``--conf`` knobs; subclasses add ``infer`` (and trainers)."""

    labels: Dict[str, int] = {}

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.labels = dict(type(self).labels)
        # The model in use is model/<task>.pt, written only by a training run that did not get
        # worse; until one exists, the starting model shipped in model/shipped/<task>.pt (if any)
        # is used (lib.checkpoints).
        self.path = model_paths(model_dir, name)
        self.shipped_path, self.in_use_path = self.path

    def trainer(self):
        return None

    def strategy(self):
        return None

    def scoring_method(self):
        return None
