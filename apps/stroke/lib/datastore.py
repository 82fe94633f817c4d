"""A MONAI Label datastore that lists one image per stroke study, in a flat folder or a BIDS tree.

MONAI Label's LocalDatastore lists every NIfTI in the top folder as an image. A stroke study is
several files (maps, phases, atlas), often in ``sub-*/ses-*/`` folders (ISLES'22), so this
datastore lists only each study's reference volume (Tmax, DWI or CTA phase 1), found
recursively, and keeps its path relative to the studies root. Labels stay where MONAI Label
keeps them (``labels/<tag>/<image id>.nii.gz``), so the 3D Slicer and OHIF clients work as usual.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Dict, List

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from lib.errors import http_errors
from strokelabel.derived import atomic_save_nifti, atomic_write_bytes
from strokelabel.dicom import PROVENANCES
from strokelabel.errors import StrokeLabelError
from strokelabel.lifeline import foreground_call
from strokelabel.naming import find_derivative_mask, find_modalities, find_reference_volumes, is_reference, parse_filename, study_kind
from strokelabel.study import LABEL_VALUES, MAX_VOXELS, check_label, check_nifti_file

logger = logging.getLogger(__name__)


def label_provenance(label_info: Dict[str, Any] | None) -> str:
    """The provenance of a label a person saved (strokelabel.dicom.PROVENANCES): what the saver said in the label's
    ``provenance``, else corrected (a label saved without saying was edited: the 3D Slicer plugin's way)."""
    said = str((label_info or {}).get("provenance", "") or "").strip()
    return said if said in PROVENANCES else "corrected"



class StrokeDatastore(LocalDatastore):
    """LocalDatastore over stroke studies: one image per study, found recursively.

    ``save_label`` checks a label against its study before anything is written, so a bad
    upload never replaces a saved label.
    """

    def _image_file(self, image_id: str, obj: ImageLabelModel) -> str:
        relpath = obj.image.info.get("relpath") or self._filename(image_id, obj.image.ext)
        return os.path.realpath(os.path.join(self._datastore.image_path(), relpath))

    def _label_file(self, image_id: str, tag: str, label: DataModel) -> str:
        return os.path.realpath(os.path.join(self._datastore.label_path(tag), self._filename(image_id, label.ext)))

    def _add_non_existing_images(self) -> int:
        self._init_from_datastore_file()
        added = 0
        for name, relpath in find_reference_volumes(self._datastore.image_path()).items():
            image_id, ext = self._to_id(name)
            obj = self._datastore.objects.get(image_id)
            if obj and obj.image.info.get("relpath") == relpath:
                continue
            info = {"ts": int(time.time()), "name": name, "relpath": relpath, "kind": study_kind(name)}
            labels = obj.labels if obj else {}
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext), labels=labels)
            logger.info(f"Adding study: {image_id} => {relpath}")
            self._import_dataset_clot(image_id)
            added += 1
        return added

    def _import_dataset_clot(self, image_id: str) -> None:
        """The clot file a data set ships becomes a CTA study's final label (clot = 1) when it has none,
        so the site's own clot files train the models as they are: the AMI layout's ``<id>_clot.nii``
        (0/1/2, both 1 and 2 clot) and ISLES'24's large-vessel-occlusion mask (``lvo-msk``, in the
        same space as the CTA: ``find_modalities`` pairs files of one space only)."""
        obj = self._datastore.objects[image_id]
        tag = DefaultLabelTag.FINAL
        image = self._image_file(image_id, obj)
        if tag in obj.labels or obj.image.info.get("kind") != "cta":
            return
        modalities = find_modalities(image)
        clot_path = modalities.get("clot") or modalities.get("lvo-msk")
        if clot_path is None:
            return
        try:
            clot = nib.load(str(clot_path))
            values = np.asanyarray(clot.dataobj)
            reference = nib.load(image)
            check_label(values > 0, clot.affine, reference.shape[:3], reference.affine, allowed=(0, 1), study=image_id)
        except (StrokeLabelError, OSError, ValueError) as e:  # a data set's bad file must not stop the server: say so, go on
            logger.warning(f"{clot_path.name} not imported as the clot label of {image_id}: {e}")
            return
        unexpected = sorted(set(np.unique(values).tolist()) - {0, 1, 2})
        if unexpected:
            logger.warning(f"{clot_path}: values {unexpected[:5]} besides 0/1/2; every non-zero voxel taken as clot")
        path = os.path.join(self._datastore.label_path(tag), image_id + ".nii.gz")
        atomic_save_nifti((values > 0).astype(np.uint8), reference.affine, path)
        label_ext = ".nii.gz"
        obj.labels[tag] = DataModel(info={"ts": int(time.time()), "source": os.path.basename(str(clot_path))}, ext=label_ext)
        logger.info(f"Imported {clot_path.name} as the final clot label of {image_id}")

    def _remove_non_existing(self) -> int:
        self._init_from_datastore_file()
        removed = 0
        for image_id, obj in list(self._datastore.objects.items()):
            if not os.path.exists(self._image_file(image_id, obj)):
                logger.info(f"Removing study that no longer exists: {image_id}")
                del self._datastore.objects[image_id]
                removed += 1
                continue
            for tag, label in list(obj.labels.items()):
                if not os.path.exists(self._label_file(image_id, tag, label)):
                    logger.info(f"Removing label that no longer exists: {image_id} ({tag})")
                    del obj.labels[tag]
                    removed += 1
        return removed

    def datalist(self, full_path=True) -> List[Dict[str, Any]]:
        """Final labels; a study without a saved one uses the mask its data set ships (ISLES'22 ``derivatives/…_msk``)."""
        tag = DefaultLabelTag.FINAL
        items = []
        for k, v in sorted(self._datastore.objects.items()):
            if tag in v.labels:
                label = self._label_file(k, tag, v.labels[tag])
            else:
                mask = find_derivative_mask(self._datastore.image_path(), self._image_file(k, v))
                if mask is None:
                    continue
                label = str(mask)
            provenance = label_provenance(v.labels[tag].info) if tag in v.labels else "data set's expert mask"
            if provenance == "AI":  # the answer as computed never trains (issue 24); only a person's label does
                continue
            items.append({"image": self._image_file(k, v), "label": label, "kind": v.image.info.get("kind"), "provenance": provenance})
        return items

    def get_image_uri(self, image_id: str) -> str:
        obj = self._datastore.objects.get(image_id)
        return self._image_file(image_id, obj) if obj else ""

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        info = super().get_image_info(image_id)
        if info:
            info["path"] = self.get_image_uri(image_id)
        return info

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        # An upload is a single file: it becomes a study only if it is a reference volume whose
        # other modalities already lie in the studies root.
        name = image_id + ".nii.gz" if image_id else os.path.basename(image_filename)
        if not is_reference(name):
            raise HTTPException(status_code=422, detail=f"{name}: uploads must be a study's reference volume (…_tmax, …_dwi or …_acq-phase1_cta .nii.gz)")
        with http_errors():  # a clear 422 naming the defect, with bounded memory, before the file joins the studies
            check_nifti_file(image_filename, f"the upload for {name}", study=image_id or name, ndims=(3, 4))
        return super().add_image(image_id, image_filename, image_info)

    def remove_image(self, image_id: str) -> None:
        obj = self._datastore.objects.get(image_id)
        if obj and obj.image.info.get("relpath", "").count(os.sep):
            raise StrokeLabelError("studies in a BIDS tree are removed on disk, not through the server", study=image_id)
        super().remove_image(image_id)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        """The label, checked against its study first, written atomically (a crash mid-write leaves the
        previous label whole): MONAI Label's own save copies in place."""
        obj = self._datastore.objects.get(image_id)
        if obj is None:
            raise HTTPException(status_code=404, detail=f"no study {image_id!r} in the datastore")
        label_tag = getattr(label_tag, "value", label_tag)  # MONAI Label passes its DefaultLabelTag enum when an infer saves
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", str(label_tag)):
            raise HTTPException(status_code=422, detail=f"label tag {label_tag!r}: use letters, digits, '_' or '-' (e.g. final)")
        said = (label_info or {}).get("provenance")
        if said is not None and said not in PROVENANCES:
            raise HTTPException(status_code=422, detail=f"provenance {said!r}: one of {', '.join(PROVENANCES)}")
        if said == "AI" and label_tag != DefaultLabelTag.ORIGINAL.value:
            raise HTTPException(status_code=422, detail=f"provenance AI is the answer as computed (tag original); a {label_tag} label is a person's: approved or corrected")
        with http_errors(), foreground_call():  # background scoring waits meanwhile
            values, affine = self._check_label_fits_study(image_id, obj, label_filename)
        _, label_ext = self._to_id(os.path.basename(label_filename))
        is_nifti = label_ext in (".nii", ".nii.gz")
        label_ext = label_ext if is_nifti else ".nii.gz"  # NRRD (3D Slicer, an answer for OHIF) kept as NIfTI, as every reader here expects
        name = self._filename(image_id, label_ext)
        path = os.path.join(self._datastore.label_path(label_tag), name)
        with FileLock(self._lock_file):
            if is_nifti:
                atomic_write_bytes(path, Path(label_filename).read_bytes())
            else:
                atomic_save_nifti(np.asarray(values).astype(np.uint8), affine, path)
            provenance = "AI" if label_tag == DefaultLabelTag.ORIGINAL.value else label_provenance(label_info)
            obj.labels[label_tag] = DataModel(info={**(label_info or {}), "provenance": provenance, "ts": int(time.time()), "name": name}, ext=label_ext)
            self._update_datastore_file(lock=False)
        logger.info(f"Saved label {label_tag} of {image_id}")
        return image_id

    def _update_datastore_file(self, lock=True):
        """The datastore index written atomically, under MONAI Label's lock (its own writes in place)."""

        def write():
            self._ignore_event_config = True
            data = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            atomic_write_bytes(self._datastore_config_path, data.encode())
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()

    def _check_label_fits_study(self, image_id: str, obj: ImageLabelModel, label_filename: str):
        kind = obj.image.info.get("kind") or study_kind(obj.image.info.get("name", image_id + ".nii.gz"))
        reference = nib.load(self._image_file(image_id, obj))
        values, affine = read_label(label_filename, study=image_id)
        check_label(values, affine, reference.shape[:3], reference.affine, allowed=LABEL_VALUES[kind], study=image_id)
        values = np.asarray(values)
        return (values[..., 0] if values.ndim == 4 else values), reference.affine  # on the study's grid: its own affine


def read_label(path: str, study: str):
    """A label as (array in NIfTI voxel order, RAS affine), from NIfTI or NRRD (3D Slicer may send either)."""
    try:
        if path.endswith((".nii", ".nii.gz")):
            check_nifti_file(path, "the label", study)  # before any voxel is read: a hostile header costs nothing
            img = nib.load(path)
            return np.asanyarray(img.dataobj), img.affine
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
        if int(np.prod(reader.GetSize(), dtype=np.int64)) > MAX_VOXELS:
            raise StrokeLabelError(f"the label claims {reader.GetSize()} voxels, more than the {MAX_VOXELS:,} this server reads", study=study)
        image = reader.Execute()
    except StrokeLabelError:
        raise
    except Exception as e:  # nibabel and SimpleITK raise several types for unreadable files
        raise StrokeLabelError(f"the label file could not be read ({e})", study=study) from e
    # SimpleITK is LPS with (z, y, x) arrays; NIfTI/nibabel is RAS with (x, y, z).
    values = sitk.GetArrayFromImage(image).transpose(tuple(reversed(range(image.GetDimension()))))
    direction = np.asarray(image.GetDirection()).reshape(image.GetDimension(), -1)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing())[:3]
    affine[:3, 3] = image.GetOrigin()[:3]
    return values, np.diag([-1, -1, 1, 1]) @ affine
