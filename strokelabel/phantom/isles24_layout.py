"""Phantom CT studies in the ISLES'24 distributed layout (one patient: NCCT, CTA, 4D CTP and maps).

ISLES'24 ships, per patient::

    raw_data/sub-stroke0001/ses-01/sub-stroke0001_ses-01_{ncct,cta,ctp}.nii.gz          each on its own grid
    raw_data/sub-stroke0001/ses-01/perfusion-maps/sub-stroke0001_ses-01_{cbf,cbv,mtt,tmax}.nii.gz
    derivatives/sub-stroke0001/ses-01/sub-stroke0001_ses-01_space-ncct_{cta,ctp}.nii.gz  co-registered to the NCCT
    derivatives/sub-stroke0001/ses-01/perfusion-maps/sub-stroke0001_ses-01_space-ncct_{cbf,cbv,mtt,tmax}.nii.gz
    derivatives/sub-stroke0001/ses-01/sub-stroke0001_ses-01_space-ncct_{lvo,cow}-msk.nii.gz
    derivatives/sub-stroke0001/ses-02/sub-stroke0001_ses-02_space-ncct_lesion-msk.nii.gz  final infarct (follow-up MRI)

Here the CT perfusion and CTA phantoms of one patient seed (the same anatomy and clot in world
coordinates) are written natively, and resampled onto the CTP grid as the ``space-ncct`` copies
(the phantom's NCCT is the CTP's baseline, on the CTP grid). The LVO mask is the true clot, the
Circle-of-Willis map labels the enhancing arteries L/R MCA by side (TopCoW numbers 7 and 5: a
stand-in, not a segmentation), and the final infarct is the true core and penumbra (an
untreated course), which is neither of them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from strokelabel.conventions import resample_array
from strokelabel.phantom.isles_layout import _save
from strokelabel.phantom.study import generate_study

MAPS = ("cbf", "cbv", "mtt", "tmax")


def isles24_subject(index: int) -> str:
    return f"stroke{index:04d}"


def generate_isles24_study(root, index: int, seed: int, derivatives: bool = True) -> dict:
    """Write one patient as ISLES'24 distributes it under ``root``; returns {name: path} of what was written."""
    root = Path(root)
    subject = isles24_subject(index)
    base = f"sub-{subject}_ses-01"
    raw = root / "raw_data" / f"sub-{subject}" / "ses-01"
    der = root / "derivatives" / f"sub-{subject}" / "ses-01"
    written: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        ctp = generate_study(Path(tmp) / "ctp", "ctp", subject, seed, write_ctp_series=True)
        cta = generate_study(Path(tmp) / "cta", "cta", subject, seed)
        ctp_img = nib.load(str(ctp["modalities"]["tmax"]))
        grid_affine, grid_shape = ctp_img.affine, ctp_img.shape[:3]
        cta_img = nib.load(str(cta["modalities"]["cta1"]))
        cta1 = np.asarray(cta_img.dataobj, dtype=np.float32)

        def copy(modality: str, folder: Path, name: str) -> None:
            img = nib.load(str(ctp["modalities"][modality]))
            written[name] = _save(folder / name, np.asarray(img.dataobj), img.affine, f"ISLES'24-layout phantom {modality}")

        copy("ncct", raw, f"{base}_ncct.nii.gz")
        copy("ctp", raw, f"{base}_ctp.nii.gz")
        written[f"{base}_cta.nii.gz"] = _save(raw / f"{base}_cta.nii.gz", cta1.astype(np.int16), cta_img.affine, "ISLES'24-layout phantom CTA")
        for m in MAPS:
            copy(m, raw / "perfusion-maps", f"{base}_{m}.nii.gz")
        truth = {"corepenumbra": np.asarray(nib.load(str(ctp["truth"]["corepenumbra"])).dataobj)}
        clot = np.asarray(nib.load(str(cta["truth"]["clot"])).dataobj).astype(np.float32)
        if derivatives:
            for m in MAPS:
                copy(m, der / "perfusion-maps", f"{base}_space-ncct_{m}.nii.gz")
            copy("ctp", der, f"{base}_space-ncct_ctp.nii.gz")
            cta_ncct = resample_array(cta1, cta_img.affine, grid_shape, grid_affine, order=1, cval=float(cta1.min()))
            written["space-ncct_cta"] = _save(der / f"{base}_space-ncct_cta.nii.gz", np.rint(cta_ncct).astype(np.int16), grid_affine,
                                              "ISLES'24-layout phantom CTA, space-ncct")
            # A clot a few mm across survives the coarser grid as the voxels it partly fills.
            lvo = resample_array(clot, cta_img.affine, grid_shape, grid_affine, order=1, cval=float(clot.min())) > 0.1
            written["lvo-msk"] = _save(der / f"{base}_space-ncct_lvo-msk.nii.gz", lvo.astype(np.uint8), grid_affine, "LVO mask")
            arteries = cta_ncct > 150
            left = (np.arange(grid_shape[0])[:, None, None] * grid_affine[0, 0] + grid_affine[0, 3]) < 0  # RAS+: +x is the patient's right
            cow = np.where(arteries, np.where(left, 7, 5), 0).astype(np.uint8)
            written["cow-msk"] = _save(der / f"{base}_space-ncct_cow-msk.nii.gz", cow, grid_affine, "Circle of Willis stand-in")
            final = (truth["corepenumbra"] > 0).astype(np.uint8)
            ses2 = root / "derivatives" / f"sub-{subject}" / "ses-02"
            written["lesion-msk"] = _save(ses2 / f"sub-{subject}_ses-02_space-ncct_lesion-msk.nii.gz", final, grid_affine, "final infarct")
    return {"subject": subject, "written": written, "truth_corepenumbra": truth["corepenumbra"], "clot_voxels_space_ncct": int(lvo.sum()) if derivatives else None}
