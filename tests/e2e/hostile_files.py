"""A corpus of broken and hostile NIfTI files, each with one named defect and the words its refusal must contain.

Made around a study's own grid (shape and affine), so that a file whose header is sound would fit the
study as a label: every refusal is then for the defect, not for a grid mismatch.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np


def _nifti_bytes(data, affine, dtype=None, gz=True, edit=None) -> bytes:
    img = nib.Nifti1Image(np.asarray(data) if dtype is None else np.asarray(data, dtype=dtype), affine)
    raw = img.to_bytes()
    if edit is not None:  # on the written header: nibabel rewrites its header from the affine when it saves
        header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
        edit(header)
        raw = header.binaryblock + raw[len(header.binaryblock):]
    return gzip.compress(raw, compresslevel=1) if gz else raw


def _header_only(shape, dtype, affine) -> bytes:
    """A NIfTI header (and its 4-byte extension flag) claiming ``shape`` of ``dtype``, without the voxels."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(affine, code=1)
    header.set_qform(affine, code=1)
    buffer = io.BytesIO()
    header.write_to(buffer)
    return buffer.getvalue() + b"\0" * 4


def _set_pixdim(value):
    def edit(header):
        header["pixdim"][1] = value
    return edit


def _zero_spacing(header):
    header["pixdim"][1] = 0.0
    header["srow_x"][:3] = 0.0
    header["qform_code"] = 0


def _nan_sform(header):
    header["srow_x"][0] = np.nan
    header["qform_code"] = 0  # nibabel would fall back to a sound qform otherwise


def _inf_sform(header):
    header["srow_y"][3] = np.inf
    header["qform_code"] = 0


def make_corpus(folder: Path, shape: tuple[int, int, int], affine: np.ndarray) -> dict[str, tuple[Path, str]]:
    """Write the corpus into ``folder``; returns {case: (file, words the refusal must contain)}."""
    folder.mkdir(parents=True, exist_ok=True)
    zeros = np.zeros(shape, np.uint8)
    good_gz = _nifti_bytes(zeros, affine)
    good_raw = _nifti_bytes(zeros, affine, gz=False)
    corrupt = bytearray(_nifti_bytes(np.random.default_rng(0).integers(0, 2, shape, dtype=np.uint8), affine))
    corrupt[len(corrupt) // 2: len(corrupt) // 2 + 64] = b"\xff" * 64
    # 2^33 voxels of zeros claimed; the gzip stream holds only 64 MiB of them (64 KiB on disk).
    bomb = gzip.compress(_header_only((2048, 2048, 2048), np.uint8, affine) + b"\0" * (64 << 20), compresslevel=9)
    cases = {
        "not NIfTI (text)": (b"this is not an image\n" * 20, ".nii.gz", "could not be read"),
        "empty file": (b"", ".nii.gz", "could not be read"),
        "truncated gzip stream": (good_gz[: len(good_gz) // 2], ".nii.gz", "could not be read"),
        "truncated uncompressed voxels": (good_raw[: 352 + zeros.size // 2], ".nii", "truncated"),
        "corrupt gzip stream": (bytes(corrupt), ".nii.gz", "could not be read"),
        "header claiming 10^9 voxels": (gzip.compress(_header_only((1000, 1000, 1000), np.uint8, affine)), ".nii.gz", "claims"),
        "gzip bomb (2^33 voxels claimed)": (bomb, ".nii.gz", "claims"),
        "5-D image": (_nifti_bytes(np.zeros((*shape[:2], 4, 2, 2), np.uint8), affine), ".nii.gz", "dimensions"),
        "zero spacing": (_nifti_bytes(zeros, affine, edit=_zero_spacing), ".nii.gz", "voxel sizes"),
        "negative voxel size in the header": (_nifti_bytes(zeros, affine, edit=_set_pixdim(-1.0)), ".nii.gz", "voxel sizes"),
        "NaN in the affine": (_nifti_bytes(zeros, affine, edit=_nan_sform), ".nii.gz", "non-finite affine"),
        "infinite affine": (_nifti_bytes(zeros, affine, edit=_inf_sform), ".nii.gz", "non-finite affine"),
        "complex values": (_nifti_bytes(zeros, affine, dtype=np.complex64), ".nii.gz", "complex64"),
        "RGB picture": (_nifti_bytes(np.zeros(shape, [("R", "u1"), ("G", "u1"), ("B", "u1")]), affine), ".nii.gz", "coloured picture"),
    }
    out = {}
    for i, (case, (content, suffix, words)) in enumerate(cases.items()):
        path = folder / f"case{i:02d}{suffix}"
        path.write_bytes(content)
        out[case] = (path, words)
    return out


class _RunsCodeWhenUnpickled:
    """A pickle that would call a function when loaded (harmless here: ``os.getpid``); a weights upload must never run it."""

    def __reduce__(self):
        import os

        return (os.getpid, ())


def _torch_bytes(obj) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def hostile_requests(model: str, pacs: bool) -> dict[str, tuple[str, str, bytes | None, int, str]]:
    """Calls on the model lifecycle and the DICOMweb proxy that must each be a named 4xx, the server still serving:
    case -> (method, raw path (sent as is, never normalised), uploaded file or None, status, words of the answer).
    ``pacs``: the server runs on a PACS (the proxy is configured) or on a folder (it is not)."""
    import torch

    calls = {
        "DELETE of a model that does not exist": ("DELETE", "/model/no_such_model", None, 404, "no model"),
        "a version that does not exist put in use": ("POST", f"/model/{model}/versions/no_such_version/use", None, 404, "no version"),
        "a version named '..' put in use": ("POST", f"/model/{model}/versions/../use", None, 404, "no version"),
        "versions of a model that does not exist": ("GET", "/model/../versions", None, 404, "no model"),
        "upload of a text file as weights": ("PUT", f"/model/{model}", b"not weights\n" * 10, 422, "not a plain PyTorch weights file"),
        "upload of a pickle that runs code": ("PUT", f"/model/{model}", _torch_bytes(_RunsCodeWhenUnpickled()), 422,
                                              "not a plain PyTorch weights file"),
        "upload of weights of another network": ("PUT", f"/model/{model}", _torch_bytes({"conv.weight": torch.zeros(2, 2)}), 422,
                                                 "does not fit"),
    }
    if pacs:
        calls.update({
            "proxy path naming another host": ("GET", "/proxy/dicom/http://127.0.0.1:22/", None, 400, "not a DICOMweb path"),
            "proxy path climbing out of DICOMweb": ("GET", "/proxy/dicom/qido/../../patients", None, 400, "not a DICOMweb path"),
            "proxy path climbing, percent-encoded": ("GET", "/proxy/dicom/wado/%2e%2e/%2e%2e/tools/now", None, 400, "not a DICOMweb path"),
            "proxy path with an empty segment (//host)": ("GET", "/proxy/dicom//127.0.0.1:22/studies", None, 400, "not a DICOMweb path"),
            "proxy path with a user@host": ("POST", "/proxy/dicom/stow/@evil.example/studies", None, 400, "not a DICOMweb path"),
        })
    else:
        calls.update({
            "proxy with no PACS configured, naming another host": ("GET", "/proxy/dicom/http://127.0.0.1:22/", None, 404, "no PACS is configured"),
            "proxy with no PACS configured": ("GET", "/proxy/dicom/qido/studies", None, 404, "no PACS is configured"),
        })
    return calls
