"""Golden figures of generated volumes that every CPU reproduces.

A byte hash of floating-point results pins the processor and the numpy build, not the generator:
numpy picks its vectorised kernels by CPU (groups X86_V3 = AVX2/FMA, X86_V4 = AVX-512) and the last
bits of exp, log, sums and products differ between them (up to about 1e-6 here). So a golden
volume is kept as what it means:

- a label (integer codes: lesion, core/penumbra, atlas, clot) exactly, by a sha256 of its values;
- a float field (ADC, CBF, Tmax, a tissue fraction ...) as figures compared within a tolerance in
  the field's own unit (:data:`TOLERANCE`): voxels on a fixed lattice (about a thousand), the mean
  and standard deviation of each of 4 x 4 x 4 blocks, and the mean and standard deviation inside
  each region of a label of the same study (so that a change confined to a small lesion moves
  a figure by more than the tolerance, not diluted in a block);
- an integer image rounded from floats (CT in HU) as its lattice voxels, of which a few may differ
  by one unit (a float that sat on a .5 rounding boundary), plus the same block and region figures.

``tests/strokelabel/test_golden_figures.py`` proves the tolerances are tight enough: a seed change
or a generator setting moved by 1 % makes the comparison fail.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

GOLDEN_DIR = Path(__file__).parent / "golden"
LATTICE_POINTS_PER_AXIS = 10
BLOCKS_PER_AXIS = 4


@dataclass(frozen=True)
class Tolerance:
    """How far a figure may move between CPUs, in the field's unit, and why that is safe.

    ``atol`` bounds a voxel and (unless ``summary_atol`` is given) a block or region figure; for an
    integer image (``integer=True``) a lattice voxel may differ by ``atol`` in at most
    ``max_fraction_changed`` of the points."""

    atol: float
    why: str
    integer: bool = False
    max_fraction_changed: float = 0.0
    summary_atol: float | None = None

    def bound(self, figure: str) -> float:
        return self.atol if figure == "lattice" or self.summary_atol is None else self.summary_atol


# Each tolerance is far above numpy's CPU-to-CPU spread (about 1e-6 relative, a float32 ulp at most)
# and far below a change anyone would read: a tenth of a millisecond of Tmax is nothing next to a
# CTP frame of 1-2 s and the 6 s threshold, and a 1 % move of any generator setting moves some
# figure by 10-1000 times the tolerance (proved in test_golden_figures.py).
TOLERANCE = {
    "tmax": Tolerance(1e-3, "s; CTP frames are 1-2 s apart, the hypoperfusion threshold is 6 s"),
    "mtt": Tolerance(1e-3, "s; MTT of tissue is 3-12 s"),
    "ttp": Tolerance(1e-3, "s; a frame time, here multiples of the 1-2 s frame step"),
    "cbf": Tolerance(1e-3, "mL/100 g/min; tissue is 10-80, the core threshold is 30 % of the healthy side"),
    "cbv": Tolerance(1e-4, "mL/100 g; tissue is 1-6"),
    "adc": Tolerance(1e-4, "10^-3 mm^2/s; tissue is 0.4-3, a scanner resolves about 0.01"),
    "dwi": Tolerance(1e-2, "scanner units of about 1000; 1e-5 of the signal"),
    "flair": Tolerance(1e-2, "scanner units of about 1000; 1e-5 of the signal"),
    "spiral": Tolerance(1e-5, "a probability-like map in 0..1"),
    "fraction": Tolerance(1e-5, "a tissue fraction in 0..1 (gm, wm, csf, bone)"),
    "clot_fraction": Tolerance(1e-8, "the fraction of a voxel that is clot: a 1-2 mm lumen in 4 mm voxels is below 1e-3"),
    # A voxel whose float sat on a .5 boundary may round either way: the lattice may differ by 1 HU in
    # a few points; a block's or region's mean and std move by less than 0.01 HU unless many voxels flipped
    # (a CTA block holds about 10,000 voxels; CTA noise 1 % higher moves block stds by 0.056 HU).
    "hu": Tolerance(1, "HU, rounded to integers", integer=True, max_fraction_changed=0.005, summary_atol=0.01),
}


def label_digest(label: np.ndarray) -> str:
    """sha256 of an integer label's shape and values (as int64, so the stored dtype does not matter)."""
    label = np.asarray(label)
    if label.dtype.kind not in "biu":
        raise TypeError(f"a label digest is only exact for integer codes, not {label.dtype}")
    values = np.ascontiguousarray(label, dtype="<i8")
    return hashlib.sha256(repr(label.shape).encode() + values.tobytes()).hexdigest()


def lattice(shape) -> tuple[np.ndarray, ...]:
    """About ``LATTICE_POINTS_PER_AXIS`` evenly spread indices per axis (integers: the same on any CPU)."""
    return np.ix_(*(np.unique(np.linspace(0, n - 1, min(n, LATTICE_POINTS_PER_AXIS)).round().astype(int)) for n in shape))


def field_figures(volume: np.ndarray, regions: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The figures of a float (or rounded integer) field kept as its golden value; ``regions`` is an integer
    label of the same grid whose every value (background included) gets a mean and standard deviation."""
    volume = np.asarray(volume)
    values = volume.astype(np.float64)
    blocks = [b for xs in np.array_split(values, BLOCKS_PER_AXIS, 0) for ys in np.array_split(xs, BLOCKS_PER_AXIS, 1)
              for b in np.array_split(ys, BLOCKS_PER_AXIS, 2)]
    figures = {
        "lattice": values[lattice(volume.shape)].ravel(),
        "block_mean": np.array([b.mean() for b in blocks]),
        "block_std": np.array([b.std() for b in blocks]),
    }
    if regions is not None:
        codes = np.unique(regions)
        figures["region_codes"] = codes.astype(np.float64)
        figures["region_mean"] = np.array([values[regions == c].mean() for c in codes])
        figures["region_std"] = np.array([values[regions == c].std() for c in codes])
    return figures


def figures_of(fields: dict[str, tuple[np.ndarray, str]], labels: dict[str, np.ndarray], regions: np.ndarray | None) -> dict:
    """Golden figures of a set of volumes: ``fields`` maps a name to ``(volume, tolerance key)``, ``labels``
    a name to an integer label; ``regions`` is the label whose regions summarise every field."""
    out = {f"label/{name}": np.array(label_digest(v)) for name, v in labels.items()}
    for name, (volume, kind) in fields.items():
        if kind not in TOLERANCE:
            raise KeyError(f"no tolerance for {kind!r}; known: {sorted(TOLERANCE)}")
        out[f"kind/{name}"] = np.array(kind)
        for figure, values in field_figures(volume, regions).items():
            out[f"field/{name}/{figure}"] = values
    return out


# The kind (tolerance) of each volume a phantom study writes; its other volumes are integer labels.
STUDY_FIELD_KINDS = {
    "adc": "adc", "dwi": "dwi", "flair": "flair",
    "cbf": "cbf", "cbv": "cbv", "mtt": "mtt", "tmax": "tmax", "ttp": "ttp", "mip": "hu", "ncct": "hu",
    "cta1": "hu", "cta2": "hu", "cta3": "hu", "spiral": "spiral",
}
STUDY_LABELS = ("lesion", "corepenumbra", "atlas", "clot")


def study_figures(volumes: dict[str, np.ndarray]) -> dict:
    """Golden figures of the volumes of one phantom study (name -> array as written), its fields summarised
    inside the regions of its most detailed label (the atlas of a CTA study, else core/penumbra)."""
    unknown = set(volumes) - set(STUDY_FIELD_KINDS) - set(STUDY_LABELS)
    if unknown:
        raise KeyError(f"no golden kind for {sorted(unknown)}")
    regions = volumes["atlas"] if "atlas" in volumes else volumes["corepenumbra"]
    fields = {k: (v, STUDY_FIELD_KINDS[k]) for k, v in volumes.items() if k in STUDY_FIELD_KINDS}
    return figures_of(fields, {k: v for k, v in volumes.items() if k in STUDY_LABELS}, regions)


def save(name: str, figures: dict) -> Path:
    GOLDEN_DIR.mkdir(exist_ok=True)
    path = GOLDEN_DIR / f"{name}.npz"
    np.savez_compressed(path, **figures)
    return path


def load(name: str) -> dict:
    with np.load(GOLDEN_DIR / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def differences(figures: dict, golden: dict) -> list[str]:
    """Every figure that is not its golden value within its tolerance, described; empty when all match."""
    problems = []
    if set(figures) != set(golden):
        problems.append(f"figures differ in kind: missing {sorted(set(golden) - set(figures))}, new {sorted(set(figures) - set(golden))}")
    for key in sorted(set(figures) & set(golden)):
        got, want = figures[key], golden[key]
        if key.startswith(("label/", "kind/")):
            if str(got) != str(want):
                problems.append(f"{key}: {got} != golden {want}")
            continue
        _, name, figure = key.split("/")
        tol = TOLERANCE[str(golden[f"kind/{name}"])]
        if got.shape != want.shape:
            problems.append(f"{key}: {got.shape} values, golden has {want.shape}")
            continue
        if figure == "region_codes":
            if not np.array_equal(got, want):
                problems.append(f"{key}: regions {got} != golden {want}")
            continue
        off = np.abs(got - want)
        if tol.integer and figure == "lattice":
            changed = off > 0
            if off.max() > tol.atol or changed.mean() > tol.max_fraction_changed:
                problems.append(f"{key}: {int(changed.sum())} of {off.size} voxels differ (at most {tol.max_fraction_changed:.1%} may, "
                                f"by {tol.atol:g}), largest {off.max():g}")
        elif not off.max(initial=0.0) <= tol.bound(figure):  # `not <=` so that a NaN counts as a difference
            worst = int(np.nanargmax(off)) if np.isfinite(off).any() else 0
            problems.append(f"{key}: {int((~(off <= tol.bound(figure))).sum())} of {off.size} figures off by more than {tol.bound(figure):g} "
                            f"({tol.why}); worst {got[worst]:.7g} vs golden {want[worst]:.7g}")
    return problems


def assert_matches_golden(figures: dict, name: str) -> None:
    """The figures match golden ``name``. With STROKELABEL_WRITE_GOLDEN=1 they are written as the new golden
    instead (after a deliberate change of the generator; say why in the commit) and the test is skipped."""
    if os.environ.get("STROKELABEL_WRITE_GOLDEN") == "1":
        pytest.skip(f"golden written: {save(name, figures)}")
    problems = differences(figures, load(name))
    assert not problems, f"{len(problems)} figures differ from golden {name}:\n" + "\n".join(problems[:20])
