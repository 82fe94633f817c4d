"""Task config of clot_region: labels, model path, infer task (DESIGN.md label numbers)."""

from lib.configs.base import StrokeTaskConfig
from lib.infers.clot_region import ClotRegionInfer


class ClotRegion(StrokeTaskConfig):
    labels = {"clot": 1}

    def infer(self):
        return ClotRegionInfer(path=self.path, network=self.network, labels=self.labels)
