"""Task config of core_penumbra: labels, model path, infer task (DESIGN.md label numbers)."""

from lib.configs.base import StrokeTaskConfig
from lib.infers.core_penumbra import CorePenumbraInfer


class CorePenumbra(StrokeTaskConfig):
    labels = {"core": 1, "penumbra": 2}

    def infer(self):
        return CorePenumbraInfer(path=self.path, network=self.network, labels=self.labels)
