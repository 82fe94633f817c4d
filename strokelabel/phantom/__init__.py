"""Digital stroke phantoms, deterministic by seed: a head with skull, grey and white matter,
ventricles, CSF, a 15-region vascular atlas, an occluded vessel with its clot and the tissue it
feeds, imaged as CT perfusion (4D series and derived maps), MRI (DWI, ADC, FLAIR) or multiphase
CTA (three phases, SPIRAL-like clot map, atlas), with ground truth by the accepted definitions.

Two anatomy families (``make_patient(seed, family=...)``): "ellipsoid", analytic shapes
(:mod:`.anatomy`), and "template", the MNI ICBM152 2009a template warped and aged per patient
(:mod:`.template_anatomy`, :mod:`.mni_template`), with focal lesion scenarios (:mod:`.ischemia`)
and chronic findings (:mod:`.chronic`).

``python -m strokelabel.phantom --out DIR [--family template]`` writes a data set; see :func:`generate_dataset`.
"""

from strokelabel.phantom.anatomy import REGIONS
from strokelabel.phantom.geometry import GRIDS, grid_for
from strokelabel.phantom.patient import FAMILIES, Patient, make_patient
from strokelabel.phantom.render import truth_volumes
from strokelabel.phantom.study import KINDS, LABEL_TARGET, generate_dataset, generate_study, study_seed

__all__ = [
    "FAMILIES",
    "GRIDS",
    "KINDS",
    "LABEL_TARGET",
    "REGIONS",
    "Patient",
    "generate_dataset",
    "generate_study",
    "grid_for",
    "make_patient",
    "study_seed",
    "truth_volumes",
]
