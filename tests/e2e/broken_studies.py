"""Broken CT perfusion studies, made from a good generated one, each with one named defect."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from strokelabel.naming import find_modalities, study_filename

# study subject -> (what is wrong, the words the error message must contain)
BROKEN = {
    "brokenmissing": ("cbv file missing", "missing modality cbv"),
    "brokenempty": ("CBF all NaN: a failed export (a few NaN voxels are read as 'no value')", "holds no finite value"),
    "brokengrid": ("CBF on another grid", "grids do not match"),
    "brokendims": ("CBF stored as 4D", "dimensions"),
}


def plant(root: Path, source_subject: str = "ctp0001") -> dict[str, str]:
    """Write the broken studies beside the good ones; returns {image id: expected message part}."""
    reference = next(Path(root).glob(f"sub-{source_subject}/ses-*/sub-{source_subject}_ses-*_tmax.nii.gz"))
    modalities = {m: p for m, p in find_modalities(reference).items() if m in ("cbf", "cbv", "mtt", "tmax", "mip")}
    expected = {}
    for subject, (_, message) in BROKEN.items():
        folder = Path(root) / f"sub-{subject}" / "ses-01"
        folder.mkdir(parents=True, exist_ok=True)
        for modality, path in modalities.items():
            if subject == "brokenmissing" and modality == "cbv":
                continue
            img = nib.load(str(path))
            data = np.asarray(img.dataobj, dtype=np.float32)
            affine = img.affine
            if modality == "cbf":
                if subject == "brokenempty":
                    data[:] = np.nan
                elif subject == "brokengrid":
                    data = data[:-4]
                elif subject == "brokendims":
                    data = np.stack([data, data], axis=-1)
            nib.save(nib.Nifti1Image(data, affine), str(folder / study_filename(subject, "01", modality)))
        expected[f"sub-{subject}_ses-01_tmax"] = message
    return expected
