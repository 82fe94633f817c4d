"""In-plane working grids shared by the slice-wise (2D) models.

A 2D network learns structures by their width in pixels, so each model runs on the in-plane
spacing it learned at (its plan's ``inplane_spacing_mm``): a study on another grid is
resampled slice by slice to it, and the model's output goes back to the study grid. Slices
are never resampled: the models see one axial slice at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def inplane_size(shape, spacing_mm, target_spacing_mm: float, minimum: int = 8) -> tuple[int, int]:
    """In-plane size (X, Y) of a study of ``shape`` and ``spacing_mm`` on a ``target_spacing_mm`` grid."""
    return tuple(max(minimum, int(round(n * sp / target_spacing_mm))) for n, sp in zip(shape[:2], spacing_mm[:2]))


def resample_inplane(volume: torch.Tensor, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """(C, X, Y, Z) -> (C, size[0], size[1], Z), slice by slice (``torch.nn.functional.interpolate``).

    ``mode``: ``bilinear`` (images, probabilities), ``area`` (images shrunk: the mean of the
    pixels each new pixel covers), ``nearest`` (labels)."""
    volume = torch.as_tensor(volume)
    c, x, y, z = volume.shape
    if (x, y) == tuple(size):
        return volume
    slices = volume.permute(3, 0, 1, 2)  # (Z, C, X, Y)
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(slices.float(), size=tuple(size), mode=mode, **kwargs)
    return out.permute(1, 2, 3, 0).contiguous()


def mirror_averaged(predict, image: torch.Tensor, lr_dim: int) -> torch.Tensor:
    """The mean of ``predict(image)`` and, flipped back, ``predict`` of the image flipped along
    ``lr_dim`` (its left-right axis; ``predict`` keeps the spatial layout). A study stored mirrored
    then gets exactly the mirrored answer: which hemisphere is affected must not change it, and a
    network alone is not symmetric."""
    return 0.5 * (predict(image) + torch.flip(predict(torch.flip(image, dims=(lr_dim,))), dims=(lr_dim,)))
