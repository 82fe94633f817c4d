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
        # The model in use; trainers write versions beside it and replace it only when better.
        self.path = os.path.join(model_dir, f"{name}.pt")

    def trainer(self):
        return None

    def strategy(self):
        return None

    def scoring_method(self):
        return None
