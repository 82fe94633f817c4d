"""ischemic_lesion: the ischemic lesion on MRI (DWI, ADC) or on CT perfusion maps."""

from lib.infers.stroke_infer import StrokeInferTask
from lib.transforms.baselines import LesionBaselined
from lib.transforms.figures import LesionFiguresd
from lib.transforms.study import LoadStudyd
from strokelabel.naming import study_kind

# Modalities per study kind: an MRI study is read from DWI and ADC, a CTP study from its maps.
MODALITIES = {"mri": (("dwi", "adc"), ("flair",)), "ctp": (("cbf", "cbv", "mtt", "tmax"), ("mip",))}


class IschemicLesionInfer(StrokeInferTask):
    def __init__(self, path, network, labels, **kwargs):
        super().__init__(
            path,
            network,
            labels,
            description="Ischemic lesion (1) on MRI (DWI + ADC) or CT perfusion; volume in mL and lesion count",
            **kwargs,
        )

    def pre_transforms(self, data=None):
        kind = study_kind(data["image"])
        if kind not in MODALITIES:
            from strokelabel.errors import StrokeLabelError

            raise StrokeLabelError(f"ischemic_lesion reads MRI (DWI/ADC) or CT perfusion studies, not {kind.upper()}")
        required, optional = MODALITIES[kind]
        return [LoadStudyd(required, optional)]

    def baseline_transforms(self, data):
        return [LesionBaselined()]

    def figure_transforms(self, data):
        return [LesionFiguresd()]
