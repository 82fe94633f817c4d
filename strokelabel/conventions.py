"""The same study stored in the other conventions real sites use: derived variants of a study.

Each function takes nibabel images and returns new ones; nothing is read from or written to
disk except by :func:`write_variant_study`. Each models one thing a site does differently
from our phantoms (issue 9), so that a loader, a task or a yardstick can be run on the same
patient stored several ways and its answers compared:

- :func:`reorient`: voxels stored in another axis order/direction (RAS, LAS, LPS...), the
  world position of every voxel unchanged (scanners and converters differ: ISLES'22 is LAS,
  ISLES'24 is LPS, our phantoms RAS).
- :func:`resample_oblique`: an acquisition on a tilted grid with thick slices (clinical DWI
  is often 1.8 x 1.8 x 4.8 mm with the slices angled a few degrees to the AC-PC line).
- :func:`scale_values`: another unit (ADC in 10^-6 instead of 10^-3 mm²/s is x 1000).
- :func:`add_synthetic_skull`: the raw, non-skull-stripped DWI/ADC a scanner exports.
- :func:`mirror_left_right`: the other hemisphere affected (voxels mirrored, affine kept),
  so a label that does not follow was not read from the image.
- :func:`as_dtype`: float32 vs float64 storage.
- :func:`with_background_fill`: the vendor's fill outside the brain (0, NaN, 1e-6, -30...).
- :func:`as_scanner_int16`, :func:`as_diffusion_series`, :func:`with_singleton_axis`: DWI/ADC as a
  scanner exports them (int16 with ADC in 10^-6 mm²/s; the 4D series with its ``.bval``; a
  trailing axis of 1).

Label maps go through the same geometric transforms with nearest-neighbour sampling
(``order=0``), so a label of the original study can be carried to any variant and compared
voxel by voxel with the label a task gives on the variant. :class:`Variant` bundles one such
change over a whole study (images and labels), :func:`standard_variants` lists those of the
issue, and :func:`write_variant_study` writes a variant of a study tree with the file names
kept, so the naming rule finds the modalities as in the original.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Mapping, Sequence

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from scipy import ndimage
from scipy.spatial.transform import Rotation

Image = nib.Nifti1Image


def image_like(img, data: np.ndarray, affine: np.ndarray | None = None) -> Image:
    """A NIfTI image holding ``data`` with ``img``'s header (dtype from ``data``) and ``affine`` (default ``img``'s)."""
    header = img.header.copy()
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(None, None)  # the data are stored as they are, never rescaled
    out = nib.Nifti1Image(data, np.asarray(img.affine if affine is None else affine, dtype=np.float64), header)
    out.set_sform(out.affine, code=int(img.header["sform_code"]) or 1)
    out.set_qform(out.affine, code=int(img.header["qform_code"]) or 1)
    return out


def _data(img) -> np.ndarray:
    """Stored values, in the stored dtype (no float conversion of integer label maps)."""
    return np.asanyarray(img.dataobj)


# ---- background -------------------------------------------------------------------------------
def fill_value(img) -> float:
    """The value a volume holds outside the head or brain: the most frequent of its 8 corner voxels.

    Skull-stripped MRI is 0 there, vendor perfusion maps their fill (CBF 1e-6, Tmax -30,
    MTT 0 in ISLES'24); NaN when the corners are NaN.
    """
    data = _data(img)
    corners = np.array([data[i, j, k] for i in (0, -1) for j in (0, -1) for k in (0, -1)], dtype=np.float64)
    if np.isnan(corners).sum() >= 4:
        return float("nan")
    values, counts = np.unique(corners[~np.isnan(corners)], return_counts=True)
    return float(values[np.argmax(counts)])


def background_of(img) -> np.ndarray:
    """Voxels holding the volume's fill value (NaN counts as background when the fill is NaN)."""
    data = np.asarray(_data(img), dtype=np.float64)
    fill = fill_value(img)
    return np.isnan(data) if np.isnan(fill) else data == fill


def foreground_mask(*imgs) -> np.ndarray:
    """Voxels where any of the volumes (one grid) differs from its own fill value: the stored brain or head."""
    mask = np.zeros(imgs[0].shape[:3], dtype=bool)
    for img in imgs:
        mask |= ~background_of(img)
    return mask


def with_background_fill(img, value: float, mask: np.ndarray) -> Image:
    """Every voxel outside ``mask`` (the brain) set to ``value``: another vendor's fill convention.

    Models maps exported with 0, NaN, 1e-6, -30 or -29 992 outside the brain. Integer images
    become float32 when ``value`` is NaN or not an integer.
    """
    data = np.array(_data(img))
    if data.dtype.kind in "iu" and not float(value).is_integer():
        data = data.astype(np.float32)
    data[~np.asarray(mask, dtype=bool)] = value
    return image_like(img, data)


# ---- values -----------------------------------------------------------------------------------
def scale_values(img, factor: float) -> Image:
    """Values x ``factor`` (dtype kept if float): another unit, e.g. ADC 10^-3 -> 10^-6 mm²/s is x 1000."""
    data = np.asarray(_data(img))
    dtype = data.dtype if data.dtype.kind == "f" else np.float32
    return image_like(img, (data.astype(np.float64) * factor).astype(dtype))


def as_dtype(img, dtype) -> Image:
    """The same values stored as ``dtype`` (float32 vs float64 exports)."""
    return image_like(img, np.asarray(_data(img)).astype(dtype))


# ---- geometry -----------------------------------------------------------------------------------
def reorient(img, axcodes: Sequence[str]) -> Image:
    """The voxels stored in the orientation ``axcodes`` (e.g. ``"LPS"``), world positions unchanged.

    Axes are permuted and flipped only (no resampling), so values are exact; an oblique grid
    stays oblique, with the axis order nearest to ``axcodes``.
    """
    transform = ornt_transform(io_orientation(img.affine), axcodes2ornt(tuple(axcodes)))
    out = img.as_reoriented(transform)
    return image_like(img, np.asarray(_data(out)), out.affine)


def lr_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to the world left-right axis."""
    return int(np.flatnonzero(io_orientation(affine)[:, 0] == 0)[0])


def mirror_left_right(img) -> Image:
    """The voxels mirrored along the voxel axis nearest to left-right, the affine unchanged.

    The brain really is mirrored in the world (a left-hemisphere lesion becomes a right one),
    about the centre of the field of view along that axis; on an oblique grid the mirror plane
    is the grid's, a few degrees off the world's. Mirroring twice is the identity.
    """
    return image_like(img, np.flip(_data(img), axis=lr_axis(img.affine)).copy())


def resample_array(values: np.ndarray, affine: np.ndarray, shape: Sequence[int], target_affine: np.ndarray,
                   order: int = 0, cval: float = 0.0) -> np.ndarray:
    """``values`` (on the grid ``affine``) sampled at the voxel centres of the grid (``shape``, ``target_affine``).

    ``order`` 0 is nearest neighbour (label maps), 1 trilinear; voxels outside the source get
    ``cval``. A pure reorientation of the same grid maps voxel centres onto voxel centres, so
    nearest neighbour is exact there.
    """
    to_source = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(target_affine, dtype=np.float64)
    values = np.asarray(values)
    out = ndimage.affine_transform(values.astype(np.float64) if order > 0 or values.dtype == bool else values, to_source[:3, :3],
                                   offset=to_source[:3, 3], output_shape=tuple(int(s) for s in shape[:3]), order=order,
                                   mode="constant", cval=cval)
    return out.astype(bool) if values.dtype == bool else out


def oblique_grid(img, spacing_mm: Sequence[float], rotation_deg: Sequence[float]) -> tuple[tuple[int, int, int], np.ndarray]:
    """(shape, affine) of a grid with ``spacing_mm`` whose axes are ``img``'s axes rotated by
    ``rotation_deg`` (degrees about world x, y, z) about the centre of ``img``'s field of view,
    and which covers that field of view."""
    affine = np.asarray(img.affine, dtype=np.float64)
    shape = np.asarray(img.shape[:3])
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    directions = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix() @ directions
    corners_vox = np.array([[i, j, k] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5) for k in (-0.5, shape[2] - 0.5)])
    corners = corners_vox @ affine[:3, :3].T + affine[:3, 3]
    centre = corners.mean(axis=0)
    extent = np.ptp((corners - centre) @ directions, axis=0)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    new_shape = np.maximum(np.ceil(extent / spacing).astype(int), 1)
    new_affine = np.eye(4)
    new_affine[:3, :3] = directions * spacing
    new_affine[:3, 3] = centre - new_affine[:3, :3] @ ((new_shape - 1) / 2.0)
    return tuple(int(s) for s in new_shape), new_affine


def resample_oblique(img, spacing_mm: Sequence[float] = (1.8, 1.8, 4.8), rotation_deg: Sequence[float] = (4.0, -3.0, 5.0),
                     order: int = 1) -> Image:
    """The study as acquired on a tilted grid of ``spacing_mm`` (see :func:`oblique_grid`).

    Images (``order`` >= 1): the foreground is smoothed (Gaussian, sigma = (new/old - 1) / 2
    voxels where the spacing grows, as scikit-image's anti-aliasing) and interpolated by
    normalised convolution, so the fill outside the brain never bleeds into it, and the
    background keeps the image's own fill value exactly (maps computed on the new grid).
    Label maps: ``order=0``, nearest neighbour, values and dtype kept.
    """
    shape, affine = oblique_grid(img, spacing_mm, rotation_deg)
    data = _data(img)
    fill = fill_value(img)
    if order == 0:
        return image_like(img, resample_array(data, img.affine, shape, affine, order=0, cval=0 if np.isnan(fill) else fill).astype(data.dtype), affine)
    foreground = ~background_of(img)
    old_spacing = np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0)
    sigma = np.maximum((np.asarray(spacing_mm, dtype=np.float64) / old_spacing - 1.0) / 2.0, 0.0)
    weight = foreground.astype(np.float64)
    values = np.where(foreground, np.asarray(data, dtype=np.float64), 0.0)
    if np.any(sigma > 0):
        weight, values = ndimage.gaussian_filter(weight, sigma), ndimage.gaussian_filter(values, sigma)
    weight = resample_array(weight, img.affine, shape, affine, order=order)
    values = resample_array(values, img.affine, shape, affine, order=order)
    inside = resample_array(foreground, img.affine, shape, affine, order=0)
    out = np.where(inside, values / np.maximum(weight, 1e-6), fill)
    return image_like(img, out.astype(data.dtype if data.dtype.kind == "f" else np.float32), affine)


# ---- skull --------------------------------------------------------------------------------------
# Layers outside the skull-stripped brain (mm from its surface) and their DWI (b = 1000) and ADC
# as multiples of the brain's median: CSF is dark on DWI with ADC ~3.0e-3 (3.5 x brain); cortical
# bone has no signal, so its ADC is fit noise; scalp fat keeps some signal on EPI DWI and has a
# very low ADC (~0.3e-3), which is what makes an ADC threshold flag the scalp of a raw scan.
SKULL_LAYERS_MM = {"csf": (0.0, 2.0), "bone": (2.0, 7.0), "scalp": (7.0, 11.0)}
SKULL_DWI_FRACTION = {"csf": (0.15, 0.3), "bone": (0.0, 0.06), "scalp": (0.5, 1.1)}
SKULL_ADC_FRACTION = {"csf": (3.0, 4.0), "bone": (0.0, 4.0), "scalp": (0.2, 0.6)}
# Rician-like noise floor of the air around the head, as a fraction of the brain's median DWI.
AIR_DWI_FRACTION = 0.03


def add_synthetic_skull(dwi_img, adc_img, brain_mask: np.ndarray | None = None, seed: int = 0) -> tuple[Image, Image]:
    """Raw-scanner DWI/ADC from skull-stripped ones: CSF, bone and scalp shells around the brain.

    ``brain_mask`` defaults to the stored brain (voxels differing from the fill in DWI or ADC,
    holes filled). Inside it nothing changes; outside, each layer of :data:`SKULL_LAYERS_MM`
    gets DWI and ADC drawn uniformly from its range (multiples of the brain's median, so the
    ADC unit is kept), and the air beyond the scalp a DWI noise floor and ADC 0. Deterministic
    from ``seed``. Shells reaching the edge of the field of view are cut there, as in a tight FOV.
    """
    brain = foreground_mask(dwi_img, adc_img) if brain_mask is None else np.asarray(brain_mask, dtype=bool)
    brain = ndimage.binary_fill_holes(brain)
    dwi, adc = np.array(_data(dwi_img), dtype=np.float64), np.array(_data(adc_img), dtype=np.float64)
    dwi_median, adc_median = np.median(dwi[brain]), np.median(adc[brain])
    spacing = np.linalg.norm(np.asarray(dwi_img.affine)[:3, :3], axis=0)
    distance_mm = ndimage.distance_transform_edt(~brain, sampling=spacing)
    rng = np.random.default_rng(seed)
    outside = ~brain
    dwi[outside] = np.abs(rng.normal(0.0, AIR_DWI_FRACTION * dwi_median, outside.sum()))
    adc[outside] = 0.0
    for layer, (inner, outer) in SKULL_LAYERS_MM.items():
        shell = outside & (distance_mm > inner) & (distance_mm <= outer)
        dwi[shell] = dwi_median * rng.uniform(*SKULL_DWI_FRACTION[layer], shell.sum())
        adc[shell] = adc_median * rng.uniform(*SKULL_ADC_FRACTION[layer], shell.sum())
    return (image_like(dwi_img, dwi.astype(_data(dwi_img).dtype)), image_like(adc_img, adc.astype(_data(adc_img).dtype)))


# ---- raw scanner storage (issue 21) -------------------------------------------------------------
# A scanner's DWI in int16 spans this many units at its 99.9th percentile (the scale is arbitrary:
# every method normalises DWI by the brain's median).
SCANNER_DWI_P999 = 2000.0


def _adc_to_mm2_s(dwi_img, adc_img) -> float:
    """The factor turning ``adc_img``'s values into mm²/s (its unit, detected as the loader does)."""
    from strokelabel.units import detect_adc_unit

    adc = np.asarray(adc_img.dataobj, dtype=np.float64)
    dwi = np.asarray(dwi_img.dataobj, dtype=np.float64)
    return detect_adc_unit(adc, mask=(adc > 0) & (dwi > 0)).factor_to_mm2_s


def as_scanner_int16(dwi_img, adc_img) -> tuple[Image, Image]:
    """DWI and ADC as a scanner stores them: int16, DWI scaled to :data:`SCANNER_DWI_P999`, ADC in
    10^-6 mm²/s (whole numbers), no scale factor in the header."""
    dwi = np.asarray(dwi_img.dataobj, dtype=np.float64)
    positive = dwi[dwi > 0]
    scale = SCANNER_DWI_P999 / float(np.percentile(positive, 99.9)) if positive.size else 1.0
    adc_1e6 = np.asarray(adc_img.dataobj, dtype=np.float64) * (_adc_to_mm2_s(dwi_img, adc_img) / 1e-6)
    to_int16 = lambda v: np.clip(np.round(v), -32768, 32767).astype(np.int16)  # noqa: E731
    return image_like(dwi_img, to_int16(dwi * scale)), image_like(adc_img, to_int16(adc_1e6))


def as_diffusion_series(dwi_img, adc_img, b_s_mm2: float = 1000.0) -> Image:
    """The 4D series a DWI was computed from: one b = 0 volume (S0 = S_b exp(b ADC)) and three
    directions at ``b_s_mm2`` whose geometric mean is the DWI (x 0.9, 1, 1/0.9: anisotropy), with
    the b-values in ``img.extra["bvals"]`` (written as the ``.bval`` beside it by :func:`write_variant_study`)."""
    dwi = np.asarray(dwi_img.dataobj, dtype=np.float64)
    adc_mm2_s = np.clip(np.asarray(adc_img.dataobj, dtype=np.float64) * _adc_to_mm2_s(dwi_img, adc_img), 0.0, 4e-3)
    b0 = dwi * np.exp(b_s_mm2 * adc_mm2_s)
    dtype = np.asarray(dwi_img.dataobj).dtype
    series = np.stack([b0, dwi * 0.9, dwi, dwi / 0.9], axis=-1)
    if dtype.kind in "iu":
        series = np.clip(np.round(series), np.iinfo(dtype).min, np.iinfo(dtype).max)
    out = image_like(dwi_img, series.astype(dtype))
    out.extra["bvals"] = [0.0, b_s_mm2, b_s_mm2, b_s_mm2]
    return out


def with_singleton_axis(img) -> Image:
    """The volume with a trailing 4th axis of length 1 (what some converters write)."""
    return image_like(img, _data(img)[..., None])


# ---- whole studies ------------------------------------------------------------------------------
Transform = Callable[[dict, frozenset], dict]


@dataclass(frozen=True)
class Variant:
    """One change of convention applied to a whole study: ``apply(images, labels)``.

    ``images`` maps keys (modality keys ``dwi``, ``adc``, ``cbf``..., or any key for a label
    map) to images on one grid; keys in ``labels`` are label maps and are carried with nearest
    neighbour, never rescaled or refilled. ``kinds`` are the study kinds it applies to.
    """

    name: str
    models: str
    kinds: tuple[str, ...]
    transform: Transform

    def apply(self, images: Mapping[str, object], labels: Collection[str] = ()) -> dict:
        return self.transform(dict(images), frozenset(labels))


def each(image_fn: Callable, label_fn: Callable | None = None, keys: Collection[str] | None = None) -> Transform:
    """A study transform applying ``image_fn`` to each image (only ``keys`` if given) and
    ``label_fn`` to each label map (labels unchanged when None)."""

    def transform(images: dict, labels: frozenset) -> dict:
        out = {}
        for key, img in images.items():
            if key in labels:
                out[key] = label_fn(img) if label_fn else img
            else:
                out[key] = image_fn(img) if keys is None or key in keys else img
        return out

    return transform


def diffusion_pair_transform(pair_fn) -> Transform:
    """DWI and ADC through ``pair_fn(dwi, adc) -> (dwi, adc)`` together; labels and other images unchanged."""

    def transform(images: dict, labels: frozenset) -> dict:
        out = dict(images)
        if "dwi" in images and "adc" in images:
            out["dwi"], out["adc"] = pair_fn(images["dwi"], images["adc"])
        return out

    return transform


def skull_transform(seed: int = 0) -> Transform:
    """DWI and ADC get :func:`add_synthetic_skull` together."""
    return diffusion_pair_transform(lambda dwi, adc: add_synthetic_skull(dwi, adc, seed=seed))


def scanner_int16_transform() -> Transform:
    """DWI and ADC through :func:`as_scanner_int16` together."""
    return diffusion_pair_transform(as_scanner_int16)


def diffusion_series_transform() -> Transform:
    """The DWI replaced by its 4D series with b-values (:func:`as_diffusion_series`)."""

    def transform(images: dict, labels: frozenset) -> dict:
        out = dict(images)
        if "dwi" in images and "adc" in images:
            out["dwi"] = as_diffusion_series(images["dwi"], images["adc"])
        return out

    return transform


def chain(*transforms: Transform) -> Transform:
    """Study transforms applied in order."""

    def transform(images: dict, labels: frozenset) -> dict:
        for t in transforms:
            images = t(images, labels)
        return images

    return transform


def refill_transform(value: float) -> Transform:
    """Every image's background (outside the union foreground of all images) refilled with ``value``."""

    def transform(images: dict, labels: frozenset) -> dict:
        maps = [img for key, img in images.items() if key not in labels]
        if not maps:
            return dict(images)
        brain = foreground_mask(*maps)
        return {k: img if k in labels else with_background_fill(img, value, brain) for k, img in images.items()}

    return transform


PERFUSION_MAPS = ("cbf", "cbv", "mtt", "tmax", "ttp")


def standard_variants(kind: str, stored_dtype=None) -> list[Variant]:
    """The variants of issue 9 that apply to a study of ``kind`` (``mri`` or ``ctp``).

    ``stored_dtype`` is the study's own float dtype; the dtype variant stores the other one.
    """
    oblique_image = lambda img: resample_oblique(img, order=1)  # noqa: E731
    oblique_label = lambda img: resample_oblique(img, order=0)  # noqa: E731
    other_dtype = np.float32 if np.dtype(stored_dtype or np.float64) == np.float64 else np.float64
    both = ("mri", "ctp")
    variants = [
        *(Variant(f"stored {codes}", f"voxels stored {codes} (world positions unchanged)", both,
                  each(lambda img, c=codes: reorient(img, c), lambda img, c=codes: reorient(img, c))) for codes in ("RAS", "LAS", "LPS")),
        Variant("oblique 1.8x1.8x4.8", "tilted grid (4, -3, 5 degrees), 1.8 x 1.8 x 4.8 mm thick slices", both,
                each(oblique_image, oblique_label)),
        Variant("mirrored L-R", "voxels mirrored left-right, affine kept: the other hemisphere affected", both,
                each(mirror_left_right, mirror_left_right)),
        Variant(f"{np.dtype(other_dtype).name}", f"values stored as {np.dtype(other_dtype).name}", both,
                each(lambda img: as_dtype(img, other_dtype))),
        Variant("ADC x1000", "ADC in 10^-6 mm²/s", ("mri",), each(lambda img: scale_values(img, 1000.0), keys=("adc",))),
        Variant("synthetic skull", "raw DWI/ADC with CSF, bone and scalp around the brain", ("mri",), skull_transform()),
        Variant("int16", "DWI and ADC stored as the scanner's int16 (ADC in 10^-6 mm²/s, no scale factor)", ("mri",),
                scanner_int16_transform()),
        Variant("4D DWI + bval", "DWI as its 4D series (b = 0 and three directions at b = 1000) with the .bval beside it", ("mri",),
                diffusion_series_transform()),
        Variant("singleton 4D", "DWI and ADC with a trailing 4th axis of length 1", ("mri",),
                each(with_singleton_axis, keys=("dwi", "adc"))),
        *(Variant(f"fill {value:g}", f"background outside the brain filled with {value:g}", ("ctp",), refill_transform(value))
          for value in (0.0, float("nan"), -30.0)),
    ]
    return [v for v in variants if kind in v.kinds]


def raw_scanner_variant() -> Variant:
    """A skull-stripped MRI study as a scanner exports it, everything at once: skull and scalp, a tilted
    grid of 1.8 x 1.8 x 4.8 mm slices, int16 (ADC in 10^-6 mm²/s) and the DWI as its 4D series with
    its .bval. Not in :func:`standard_variants` (each of its parts is): it needs brain extraction,
    which the test suite leaves off."""
    oblique_image = lambda img: resample_oblique(img, order=1)  # noqa: E731
    oblique_label = lambda img: resample_oblique(img, order=0)  # noqa: E731
    return Variant("raw scanner", "all at once: skull, oblique 1.8 x 1.8 x 4.8 mm slices, int16 (ADC 10^-6 mm²/s), 4D DWI + bval",
                   ("mri",), chain(skull_transform(), each(oblique_image, oblique_label), scanner_int16_transform(),
                                   diffusion_series_transform()))


def write_variant_study(files: Mapping[str, str | Path], root: str | Path, out_dir: str | Path, variant: Variant,
                        labels: Collection[str] = ()) -> dict[str, Path]:
    """Write ``variant`` of the study ``files`` ({key: path}) under ``out_dir``, each file at its
    path relative to ``root`` (the tree and the file names kept, so the naming rule and the
    data set's layout find the modalities and masks as in the original). ``labels``: the keys
    that are label maps. Returns {key: written path}."""
    root, out_dir = Path(root), Path(out_dir)
    images = {key: nib.load(str(path)) for key, path in files.items()}
    derived = variant.apply(images, labels)
    written = {}
    for key, path in files.items():
        target = out_dir / Path(path).relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        nib.save(derived[key], str(target))
        bvals = getattr(derived[key], "extra", {}).get("bvals")
        if bvals is not None:  # a diffusion series: its b-values beside it, as dcm2niix writes them
            from strokelabel.diffusion import bval_path

            bval_path(target).write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
        written[key] = target
    return written
