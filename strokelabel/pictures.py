"""What kind of picture a NIfTI file holds, read from its header alone. Both the study loader
(:mod:`strokelabel.study`) and the 4D CTP assembler (:mod:`strokelabel.ctp4d`) refuse a coloured
screenshot; the test lives here, below both, so neither has to import the other for it."""

from __future__ import annotations

import numpy as np

# NIfTI-1 datatype codes of the colour types (nifti1.h: DT_RGB24, DT_RGBA32).
NIFTI_RGB24, NIFTI_RGBA32 = 128, 2304


def is_colour_picture(img) -> bool:
    """An RGB(A) image: NIfTI's RGB24/RGBA32 types, or 8-bit voxels with a trailing axis of 3 or 4 colour channels."""
    dtype = img.get_data_dtype()
    if dtype.names is not None or int(img.header.get("datatype", 0)) in (NIFTI_RGB24, NIFTI_RGBA32):
        return True
    return dtype == np.uint8 and len(img.shape) >= 4 and img.shape[-1] in (3, 4)
