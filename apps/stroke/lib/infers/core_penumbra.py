"""core_penumbra: ischemic core and penumbra from CT perfusion maps."""

from lib.infers.stroke_infer import StrokeInferTask
from lib.transforms.baselines import CorePenumbraBaselined
from lib.transforms.figures import CorePenumbraFiguresd


class CorePenumbraInfer(StrokeInferTask):
    required = ("cbf", "cbv", "mtt", "tmax")
    optional = ("mip", "ttp")

    def __init__(self, path, network, labels, **kwargs):
        super().__init__(
            path,
            network,
            labels,
            description="Core (1) and penumbra (2) from CT perfusion maps CBF, CBV, MTT, Tmax; volumes in mL, "
            "mismatch and DEFUSE 3 imaging criteria",
            **kwargs,
        )

    def baseline_transforms(self, data):
        return [CorePenumbraBaselined()]

    def figure_transforms(self, data):
        return [CorePenumbraFiguresd()]
