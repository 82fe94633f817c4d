"""On-disk conventions of a study: how sites store the same volumes.

Why: the app refused or misread real studies for how they were stored, not for what they
showed (issue 9: the same study stored LPS instead of RAS moved the core from 1.45 to 3.14 mL;
ISLES'24 CBF filled with 1e-6 outside the brain was refused as "implausible"). Training and
test phantoms are written the ways real trees are, and the truth labels always on the same
grid and orientation as their study's images.

Keys of a conventions dict (``draw_conventions`` fills what is not given with the default):

============== ================================================== =============================
key            meaning                                            default (today's files)
============== ================================================== =============================
orientation    voxel axis codes (nibabel), e.g. RAS, LAS, LPS,    ``"RAS"``
               PIR: voxels permuted/flipped, affine to match
oblique_deg    [about x, about y, about z] degrees: the grid is    ``[0, 0, 0]``
               rotated about its centre and the volume resampled
               onto it (linear; labels nearest)
dtype          float32, float64, or int16 with ``scl_slope``      ``"float32"``
               (the float images: MRI, perfusion maps, SPIRAL)
label_dtype    uint8 or uint16 (ISLES'22 masks are uint16)        ``"uint8"``
adc_unit       ``"1e-3"`` or ``"1e-6"`` mm²/s                     ``"1e-3"``
negative_noise share of the low foreground voxels of ADC and CBV    ``0.0``
               given small negative values, as fits and
               background subtraction leave them (MTT follows CBV)
fill           value written outside the foreground (head, or the  ``None`` (as computed)
               stripped/vendor brain) per volume: ``{"default": v,
               "<modality>": v, "mtt_no_flow": v}``; v a number or
               ``"nan"``; ``mtt_no_flow`` is MTT inside the brain
               where CBF ~ 0 (ISLES'24: about −29 992)
============== ================================================== =============================

Presets for ``fill``: ``FILL_PRESETS`` (``zero``, ``nan``, ``isles24``: CBF 1e-6, Tmax −30,
CBV and MTT 0, MTT −29 992 where CBF ~ 0). ``draw_conventions(seed, kind, "random")`` draws
every key from the study seed on its own RNG stream.
"""

from __future__ import annotations

import numpy as np
from nibabel import orientations as ornt
from scipy.spatial.transform import Rotation

from strokelabel.conventions import resample_array

DEFAULT = {
    "orientation": "RAS",
    "oblique_deg": [0.0, 0.0, 0.0],
    "dtype": "float32",
    "label_dtype": "uint8",
    "adc_unit": "1e-3",
    "negative_noise": 0.0,
    "fill": None,
}
ORIENTATIONS = {"RAS": 0.25, "LAS": 0.2, "LPS": 0.25, "RPS": 0.05, "LPI": 0.05, "RAI": 0.05, "PIR": 0.05, "ASL": 0.05, "LIP": 0.05}
DTYPES = {"float32": 0.5, "float64": 0.25, "int16": 0.25}
FILL_PRESETS = {
    "zero": {"default": 0.0},
    "nan": {"default": "nan"},
    "isles24": {"default": 0.0, "cbf": 1e-6, "tmax": -30.0, "mtt_no_flow": -29992.0},
}
# The volumes each convention applies to.
FLOAT_IMAGES = ("dwi", "adc", "flair", "cbf", "cbv", "mtt", "tmax", "ttp", "spiral")
FILLED = ("dwi", "adc", "flair", "cbf", "cbv", "mtt", "tmax", "ttp")
HU_IMAGES = ("ctp", "ncct", "mip", "cta1", "cta2", "cta3")  # air (-1024 HU) beyond an oblique grid's original field of view
LABELS = ("corepenumbra", "lesion", "clot", "atlas", "mimics", "msk")
MTT_NO_FLOW_CBF = 0.1  # mL/100g/min: below this CBF the vendor's MTT = CBV/CBF blows up
_STREAM = 0xC0417


def draw_conventions(seed: int, kind: str, spec=None) -> dict:
    """The conventions of one study: the default (``None``), ``spec`` over the default (dict), or
    drawn from the seed (``"random"``). Returns a complete dict with ``"default": bool``."""
    if spec is None:
        return {**DEFAULT, "default": True}
    if isinstance(spec, str):
        if spec != "random":
            raise ValueError(f"conventions must be None, 'random' or a dict, not {spec!r}")
        spec = _draw(seed, kind)
    if not isinstance(spec, dict):
        raise ValueError(f"conventions must be None, 'random' or a dict, not {spec!r}")
    unknown = set(spec) - set(DEFAULT) - {"default"}
    if unknown:
        raise ValueError(f"unknown convention keys {sorted(unknown)}; expected {sorted(DEFAULT)}")
    out = {**DEFAULT, **{k: v for k, v in spec.items() if k != "default"}}
    if isinstance(out["fill"], str):
        if out["fill"] not in FILL_PRESETS:
            raise ValueError(f"unknown fill preset {out['fill']!r}; expected one of {sorted(FILL_PRESETS)} or a dict")
        out["fill"] = dict(FILL_PRESETS[out["fill"]])
    _validate(out)
    out["default"] = {k: out[k] for k in DEFAULT} == DEFAULT
    return out


def _draw(seed: int, kind: str) -> dict:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM, {"ctp": 1, "mri": 2, "cta": 3}.get(kind, 0)]))
    pick = lambda table: list(table)[int(rng.choice(len(table), p=np.asarray(list(table.values())) / sum(table.values())))]  # noqa: E731
    oblique = [0.0, 0.0, 0.0]
    if rng.random() < 0.5:  # an oblique acquisition: mostly tilted along the AC-PC line (about x)
        oblique = [round(float(rng.uniform(-15, 15)), 2), round(float(rng.uniform(-5, 5)), 2), round(float(rng.uniform(-5, 5)), 2)]
    dtype = pick(DTYPES)
    fills = ["none", "zero", "nan", "isles24"] if dtype != "int16" else ["none", "zero", "isles24"]
    fill = fills[int(rng.integers(len(fills)))]
    return {
        "orientation": pick(ORIENTATIONS),
        "oblique_deg": oblique,
        "dtype": dtype,
        "label_dtype": "uint16" if rng.random() < 0.3 else "uint8",
        "adc_unit": "1e-6" if rng.random() < 0.4 else "1e-3",
        "negative_noise": round(float(rng.uniform(0.002, 0.03)), 4) if rng.random() < 0.6 else 0.0,
        "fill": None if fill == "none" else dict(FILL_PRESETS[fill]),
    }


def _validate(c: dict) -> None:
    codes = str(c["orientation"]).upper()
    c["orientation"] = codes
    try:
        axes = ornt.axcodes2ornt(tuple(codes))
    except Exception as error:  # nibabel raises ValueError or KeyError on bad codes
        raise ValueError(f"orientation {codes!r} is not three axis codes like RAS or LPS") from error
    if len(codes) != 3 or np.isnan(axes).any() or len(set(axes[:, 0])) != 3:
        raise ValueError(f"orientation {codes!r} is not three axis codes like RAS or LPS")
    if c["dtype"] not in DTYPES:
        raise ValueError(f"dtype {c['dtype']!r}; expected one of {sorted(DTYPES)}")
    if c["label_dtype"] not in ("uint8", "uint16"):
        raise ValueError(f"label_dtype {c['label_dtype']!r}; expected uint8 or uint16")
    if c["adc_unit"] not in ("1e-3", "1e-6"):
        raise ValueError(f"adc_unit {c['adc_unit']!r}; expected '1e-3' or '1e-6' (mm²/s)")
    c["oblique_deg"] = [float(v) for v in c["oblique_deg"]]
    if len(c["oblique_deg"]) != 3 or max(abs(v) for v in c["oblique_deg"]) > 30:
        raise ValueError("oblique_deg is three angles of at most 30 degrees")
    if c["fill"] is not None:
        if not isinstance(c["fill"], dict):
            raise ValueError("fill is None, a preset name or a dict {'default': v, '<modality>': v}")
        if c["dtype"] == "int16" and any(v == "nan" for v in c["fill"].values()):
            raise ValueError("a NaN fill cannot be stored as int16")


def rotation_deg(angles) -> np.ndarray:
    """Rotation about world x, then y, then z (degrees), as :func:`strokelabel.conventions.oblique_grid` tilts a grid."""
    return Rotation.from_euler("xyz", angles, degrees=True).as_matrix()


class StoredGeometry:
    """How the volumes of one study, given on a RAS grid (``affine``, ``shape``), are stored."""

    def __init__(self, affine: np.ndarray, shape, conventions: dict):
        self.affine_ras = np.asarray(affine, dtype=np.float64)
        self.shape = tuple(int(n) for n in shape[:3])
        self.oblique = any(abs(a) > 1e-9 for a in conventions["oblique_deg"])
        affine = self.affine_ras
        if self.oblique:
            centre = affine[:3, :3] @ ((np.asarray(self.shape) - 1) / 2.0) + affine[:3, 3]
            turn = np.eye(4)
            turn[:3, :3] = rotation_deg(conventions["oblique_deg"])
            turn[:3, 3] = centre - turn[:3, :3] @ centre
            affine = turn @ affine
        self.affine_oblique = affine
        current = ornt.io_orientation(affine)
        self.transform = ornt.ornt_transform(current, ornt.axcodes2ornt(tuple(conventions["orientation"])))
        self.affine = affine @ ornt.inv_ornt_aff(self.transform, self.shape)

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in ornt.apply_orientation(np.empty(self.shape, np.uint8), self.transform).shape)

    def apply(self, volume: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
        """A RAS-grid volume (X, Y, Z[, T]) as stored: resampled if oblique (``cval`` where the
        rotated grid leaves the original field of view), then permuted/flipped."""
        out = np.asarray(volume)
        if self.oblique:
            out = self._resample(out, order, cval)
        return np.ascontiguousarray(ornt.apply_orientation(out, self.transform))

    def _resample(self, volume: np.ndarray, order: int, cval: float) -> np.ndarray:
        dtype = volume.dtype
        work = volume.astype(np.float32) if order > 0 else volume

        def one(v):
            return resample_array(v, self.affine_ras, self.shape, self.affine_oblique, order=order, cval=cval)

        if volume.ndim == 4:
            out = np.stack([one(work[..., t]) for t in range(volume.shape[3])], axis=-1)
        else:
            out = one(work)
        if np.issubdtype(dtype, np.integer) and order > 0:
            info = np.iinfo(dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        return out.astype(dtype)


def fill_value(conventions: dict, key: str):
    """The value written outside the foreground of volume ``key`` (None: leave it as computed)."""
    fill = conventions.get("fill")
    if fill is None or key not in FILLED:
        return None
    v = fill.get(key, fill.get("default"))
    return None if v is None else (np.nan if v == "nan" else float(v))


def vendor_negative_noise(images: dict, foreground: dict, fraction: float, rng: np.random.Generator) -> dict:
    """Small negative values where fits and background subtraction leave them: in ADC among the
    lowest foreground values (its noise floor), in CBV in the foreground's CSF-like voxels
    (CBV < 0.5 mL/100g); where CBV turns negative the vendor's MTT = 60·CBV/CBF turns negative too."""
    out = dict(images)
    if fraction <= 0:
        return out
    if "adc" in out and "adc" in foreground:
        adc = out["adc"].copy()
        fg = foreground["adc"]
        low = fg & (adc <= np.percentile(adc[fg], 5)) if fg.any() else fg
        chosen = _choose(low, fraction, rng)
        adc[chosen] = -np.abs(rng.normal(0.0, 0.08, chosen.sum())).astype(adc.dtype)
        out["adc"] = adc
    if "cbv" in out and "cbv" in foreground:
        cbv = out["cbv"].copy()
        chosen = _choose(foreground["cbv"] & (cbv < 0.5), fraction, rng)
        cbv[chosen] = -np.abs(rng.normal(0.0, 1.5, chosen.sum())).astype(cbv.dtype)
        out["cbv"] = cbv
        if "mtt" in out and "cbf" in out:
            mtt = out["mtt"].copy()
            mtt[chosen] = np.maximum(60.0 * cbv[chosen] / np.maximum(out["cbf"][chosen], 1e-3), -29992.0)
            out["mtt"] = mtt
    return out


def _choose(mask: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    chosen = np.zeros(mask.shape, bool)
    index = np.flatnonzero(mask)
    n = int(round(fraction * index.size))
    if n:
        chosen.flat[rng.choice(index, size=n, replace=False)] = True
    return chosen


def in_unit(key: str, volume: np.ndarray, conventions: dict) -> np.ndarray:
    """The volume in the stored unit (ADC in 10^-6 mm²/s when asked)."""
    if key == "adc" and conventions["adc_unit"] == "1e-6":
        return np.asarray(volume) * 1000.0
    return np.asarray(volume)


def filled(key: str, volume: np.ndarray, foreground: np.ndarray | None, conventions: dict, no_flow: np.ndarray | None = None) -> np.ndarray:
    """The fill value outside ``foreground`` (on the stored grid); MTT's no-flow value where CBF ~ 0."""
    out = np.asarray(volume)
    value = fill_value(conventions, key)
    if value is not None and foreground is not None:
        out = np.where(foreground, out, np.asarray(value, dtype=out.dtype) if np.isfinite(value) else np.nan).astype(out.dtype)
    no_flow_value = (conventions.get("fill") or {}).get("mtt_no_flow")
    if key == "mtt" and no_flow_value is not None and no_flow is not None:
        out = np.where(no_flow, np.asarray(float(no_flow_value), dtype=out.dtype), out)
    return out


def encode(key: str, volume: np.ndarray, conventions: dict) -> tuple[np.ndarray, float | None]:
    """The array to save and its ``scl_slope`` (None: unscaled) for the stored dtype."""
    if key in LABELS and key != "atlas":
        return volume.astype(conventions["label_dtype"]), None
    if key not in FLOAT_IMAGES:
        return volume, None
    dtype = conventions["dtype"]
    if dtype == "int16":
        finite = np.nan_to_num(volume.astype(np.float64), nan=0.0)
        largest = float(np.abs(finite).max()) if finite.size else 0.0
        slope = largest / 32000.0 if largest > 0 else 1.0
        return np.clip(np.rint(finite / slope), -32768, 32767).astype(np.int16), slope
    return volume.astype(dtype), None
