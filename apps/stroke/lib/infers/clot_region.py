"""clot_region: clot voxels and the vascular atlas regions that hold clot, on multiphase CTA."""

from lib.infers.stroke_infer import StrokeInferTask
from lib.transforms.baselines import ClotRegionBaselined
from lib.transforms.figures import ClotFiguresd


class ClotRegionInfer(StrokeInferTask):
    required = ("cta1",)
    optional = ("cta2", "cta3", "spiral", "atlas")

    def __init__(self, path, network, labels, **kwargs):
        super().__init__(
            path,
            network,
            labels,
            description="Clot (1) on multiphase CTA; which of the 15 vascular atlas regions hold clot, with probabilities",
            **kwargs,
        )

    def baseline_transforms(self, data):
        return [ClotRegionBaselined()]

    def figure_transforms(self, data):
        return [ClotFiguresd()]
