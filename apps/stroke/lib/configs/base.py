"""What the stroke task configs share. Abstract (no ``infer``), so the app does not serve it."""

import os
from typing import Dict

from monailabel.interfaces.config import TaskConfig


class StrokeTaskConfig(TaskConfig):
    """A task's labels, model path and ``--conf`` knobs; subclasses add ``infer`` (and trainers)."""

    labels: Dict[str, int] = {}

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.labels = dict(type(self).labels)
        # The model in use is model/<task>.pt, written only by a training run that did not get
        # worse; until one exists, the starting model shipped in model/shipped/<task>.pt (if any)
        # is used. BasicInferTask loads the last existing path of the list.
        self.shipped_path = os.path.join(model_dir, "shipped", f"{name}.pt")
        self.in_use_path = os.path.join(model_dir, f"{name}.pt")
        self.path = [self.shipped_path, self.in_use_path]

    def trainer(self):
        return None

    def strategy(self):
        return None

    def scoring_method(self):
        return None
