"""Task config of ischemic_lesion: labels, model path, infer task (DESIGN.md label numbers)."""

from lib.configs.base import StrokeTaskConfig
from lib.infers.ischemic_lesion import IschemicLesionInfer


class IschemicLesion(StrokeTaskConfig):
    labels = {"lesion": 1}

    def infer(self):
        return IschemicLesionInfer(path=self.path, network=self.network, labels=self.labels)
