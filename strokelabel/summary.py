"""The one summary picture of a result (RAPID-style, one PNG page): maps, overlays, volumes, method, verdict.

``render_summary(study, label, result, path)`` draws rows of axial slices of the study with the
served label overlaid, and a text panel with every figure a clinician reads (the lines of
:func:`strokelabel.summary_figures.summary_lines`):

- CT perfusion (core_penumbra, ischemic_lesion on CTP): CBF and Tmax with the label, CBV (or MTT)
  plain; volumes, mismatch, Tmax > 10 s and the hypoperfusion intensity ratio, DEFUSE 3 and
  EXTEND criteria; when the maps were computed from the raw 4D series (``result["maps_from_4d"]``)
  also the AIF and VOF curves and where they were sampled;
- MRI (ischemic_lesion): DWI and ADC with the lesion, DWI plain; lesion volume and count;
- CTA (clot_region): phase 1 as a 10 mm maximum-intensity slab and as thin slices with the clot
  (ringed: a clot is a few voxels); clot volume, location and the 15 atlas-region flags.

Images are shown in the **radiological convention** (the patient's right on the image's left,
anterior up), and every image panel carries explicit R and L marks. The arrays are in RAS voxel
order (:mod:`strokelabel.orientation`): the first index increases towards the patient's right
(nibabel's axis codes name the direction an index increases towards), so the displayed columns
are the first axis reversed.

The figure is built with matplotlib's object API on an Agg canvas (no pyplot state, safe in a
server thread) and written atomically: a reader never sees a half-written PNG.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image
from scipy import ndimage

from strokelabel.derived import atomic_write_bytes
from strokelabel.summary_figures import infer_task, summary_entries

FIGSIZE_IN = (12.0, 8.0)
DPI = 100
N_SLICES = 6
SLAB_MM = 10.0  # CTA maximum-intensity slab: thick enough to follow an artery, thin enough to keep the clot's gap
OVERLAY_ALPHA = 0.6
# Segment name and colour per label value (DESIGN.md labels); core red, penumbra green as RAPID shows them.
SEGMENTS = {
    "core_penumbra": {1: ("core", (0.92, 0.10, 0.10)), 2: ("penumbra", (0.10, 0.80, 0.20))},
    "ischemic_lesion": {1: ("lesion", (0.92, 0.10, 0.10))},
    "clot_region": {1: ("clot", (0.92, 0.10, 0.10))},
}
TONE_STYLE = {"plain": {"color": "black"}, "heading": {"color": "#1f3a93", "fontweight": "bold"},
              "good": {"color": "#137a2a"}, "bad": {"color": "#b00000", "fontweight": "bold"},
              "table": {"color": "black", "family": "monospace"},
              "table_heading": {"color": "#1f3a93", "family": "monospace", "fontweight": "bold"}, "table_flagged": {"color": "#b00000", "family": "monospace", "fontweight": "bold"}}
# Image area (figure fraction) left of the text panel; the text panel's left edge and line height.
IMAGES_BOX = (0.005, 0.04, 0.665, 0.855)  # left, bottom, width, height
TEXT_LEFT, TEXT_TOP, TEXT_LINE, TEXT_WRAP = 0.68, 0.935, 0.0215, 57
ROW_TITLE_HEIGHT = 0.028
CURVES_HEIGHT = 0.22


def render_summary(study, label, result: dict, path, acquisition_time: str | None = None, *, task: str | None = None,
                   region_names: Sequence[str] | None = None) -> Path:
    """Write the summary picture of ``result`` (the result JSON served for ``label``) to ``path`` (PNG), atomically.

    ``label``: the served label on the study's RAS grid (as ``study.images``). ``task``: default from the
    result (:func:`strokelabel.summary_figures.infer_task`). ``region_names``: names of the atlas regions
    in atlas order, when the site knows them (the table shows region numbers otherwise).
    """
    figure = summary_figure(study, label, result, acquisition_time, task=task, region_names=region_names)
    png = io.BytesIO()
    _write_png(figure, png)
    return atomic_write_bytes(path, png.getvalue())


def _write_png(figure: Figure, out) -> None:
    """The page as a 256-colour PNG: grey maps, a few overlay and text colours fit a palette, and the file is
    a third of the RGB one (about 100 kB, small enough to attach to a result or a PACS object)."""
    figure.canvas.draw()
    rgb = np.asarray(figure.canvas.buffer_rgba())[..., :3]
    Image.fromarray(rgb).quantize(256, method=Image.Quantize.FASTOCTREE).save(out, format="PNG", optimize=True)


def summary_figure(study, label, result: dict, acquisition_time: str | None = None, *, task: str | None = None,
                   region_names: Sequence[str] | None = None) -> Figure:
    """The summary page as a matplotlib Figure (on an Agg canvas); :func:`render_summary` saves it.

    Image panels are labelled (``Axes.get_label()``) ``overlay <row> z=<slice>`` or ``plain <row> z=<slice>``.
    """
    label = np.asarray(label)
    if label.ndim == 4 and label.shape[0] == 1:
        label = label[0]
    if label.shape != tuple(study.shape):
        raise ValueError(f"label shape {label.shape} is not the study's RAS grid {tuple(study.shape)}")
    task = task or infer_task(result)
    figure = Figure(figsize=FIGSIZE_IN, dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    figure.text(0.005, 0.975, f"StrokeLabel summary — {task} — {study.study_id}", fontsize=14, fontweight="bold", va="center")
    figure.text(0.005, 0.945, "Axial slices, radiological convention: patient's right (R) on the image's left, anterior up",
                fontsize=8.5, va="center", color="#444444")

    rows = _image_rows(study, label, task)
    maps_from_4d = result.get("maps_from_4d") if study.kind == "ctp" else None
    slices = choose_slices(label, study.brain_mask, N_SLICES)
    crop = _crop_box(study.brain_mask)
    left, bottom, width, height = IMAGES_BOX
    panel_w = width / len(slices)
    # Panels as tall as the cropped brain is, in figure fractions; rows stack from the top, the
    # AIF/VOF row (when the maps came from a 4D series) takes the space below.
    sx, sy = study.spacing_mm[:2]
    extent_mm = [(s.stop if s.stop is not None else n) - (s.start or 0) for s, n in zip(crop, study.shape[:2])]
    aspect = (extent_mm[1] * sy) / (extent_mm[0] * sx)
    available = height - (CURVES_HEIGHT if maps_from_4d else 0.0)
    panel_h = min(panel_w * aspect * FIGSIZE_IN[0] / FIGSIZE_IN[1], available / len(rows) - ROW_TITLE_HEIGHT)
    y = bottom + height
    for title, volume, window, overlay in rows:
        y -= ROW_TITLE_HEIGHT
        figure.text(left + 0.002, y + 0.004, title, fontsize=8.5, fontweight="bold", va="bottom")
        y -= panel_h
        for c, z in enumerate(slices):
            ax = figure.add_axes((left + c * panel_w, y, panel_w, panel_h))
            ax.set_label(f"{'overlay' if overlay is not None else 'plain'} {title} z={z}")
            _draw_panel(ax, study, volume, overlay, z, window, crop, task)
    if maps_from_4d:
        _draw_curves(figure, study, maps_from_4d, crop, (left, bottom, width, y - bottom - 0.01))
    handles = [Patch(facecolor=colour, label=f"{name} ({value})") for value, (name, colour) in SEGMENTS[task].items()]
    figure.legend(handles=handles, loc="upper right", bbox_to_anchor=(left + width, 0.96), ncol=len(handles), fontsize=9,
                  frameon=False, title="label overlay", title_fontsize=8)
    _draw_text(figure, summary_entries(study, label, result, acquisition_time, task, region_names))
    return figure


def choose_slices(label: np.ndarray, brain_mask: np.ndarray, n: int = N_SLICES) -> list[int]:
    """``n`` axial slices (last RAS axis) spanning the label, widened inside the brain where the label is thinner;
    the slice holding most label among them. Without a label: the central 80 % of the brain."""
    n_z = label.shape[2]
    brain_z = np.flatnonzero(np.asarray(brain_mask).any(axis=(0, 1)))
    lo, hi = (int(brain_z[0]), int(brain_z[-1])) if brain_z.size else (0, n_z - 1)
    per_slice = np.count_nonzero(label, axis=(0, 1))
    label_z = np.flatnonzero(per_slice)
    if label_z.size:
        a, b = int(label_z[0]), int(label_z[-1])
        while b - a + 1 < n and (a > lo or b < hi):
            a, b = (a - 1 if a > lo else a), (b + 1 if b < hi else b)
    else:
        margin = int(round(0.1 * (hi - lo)))
        a, b = lo + margin, hi - margin
    picks = sorted(set(np.round(np.linspace(a, b, min(n, b - a + 1))).astype(int).tolist()))
    if label_z.size:
        most = int(per_slice.argmax())
        if most not in picks:
            picks[int(np.argmin([abs(p - most) for p in picks]))] = most
    return sorted(set(picks))


def _image_rows(study, label, task) -> list[tuple]:
    """(title, volume, display window, label to overlay or None) per row; the last row shows the image without the label."""
    images, brain = study.images, study.brain_mask
    if study.kind == "ctp":
        rows = [("CBF (mL/100 g/min)", images["cbf"], _window(images["cbf"], brain), label)]
        if "tmax" in images:
            rows.append(("Tmax (s), 0–12 s", images["tmax"], (0.0, 12.0), label))
        third = "cbv" if "cbv" in images else "mtt" if "mtt" in images else None
        if third:
            unit = "mL/100 g" if third == "cbv" else "s"
            rows.append((f"{third.upper()} ({unit}), no overlay", images[third], _window(images[third], brain), None))
        return rows
    if study.kind == "mri":
        dwi_window = _window(images["dwi"], brain)
        rows = [("DWI", images["dwi"], dwi_window, label)]
        if "adc" in images:
            rows.append(("ADC (10⁻³ mm²/s), 0–2", images["adc"], (0.0, 2.0), label))
        return rows + [("DWI, no overlay", images["dwi"], dwi_window, None)]
    slab, slab_label = (SlabMip(v, study.spacing_mm[2], SLAB_MM) for v in (images["cta1"], label))
    window = (-20.0, 350.0)  # HU: brain grey, contrast-filled arteries white, a clot dark inside them
    return [(f"CTA phase 1, {SLAB_MM:g} mm MIP slab (HU), clot of the slab", slab, window, slab_label),
            ("CTA phase 1, thin slice (HU)", images["cta1"], window, label),
            (f"CTA phase 1, {SLAB_MM:g} mm MIP slab, no overlay", slab, window, None)]


def _window(values: np.ndarray, brain_mask: np.ndarray) -> tuple[float, float]:
    """0 to the 99th percentile inside the brain: robust to a few bright vessels."""
    inside = np.asarray(values)[np.asarray(brain_mask, bool)]
    high = float(np.percentile(inside, 99)) if inside.size else float(np.max(values))
    return 0.0, high if high > 0 else 1.0


class SlabMip:
    """A volume read as maximum-intensity slabs of ``slab_mm`` centred on each slice (``slab[x, y, z]``), computed
    only for the slices drawn: a 512 x 512 x 257 CTA is not projected whole for six panels."""

    def __init__(self, volume: np.ndarray, spacing_z_mm: float, slab_mm: float):
        self.volume = volume
        self.half = int(round(slab_mm / spacing_z_mm)) // 2

    def __getitem__(self, index) -> np.ndarray:
        x, y, z = index
        first, last = max(0, z - self.half), min(self.volume.shape[2], z + self.half + 1)
        return np.asarray(self.volume[x, y, first:last]).max(axis=2)


def _crop_box(brain_mask: np.ndarray, margin: int = 3) -> tuple[slice, slice]:
    """In-plane (x, y) box around the brain over all slices, so panels show the brain, not empty field of view."""
    plane = np.asarray(brain_mask).any(axis=2)
    if not plane.any():
        return slice(None), slice(None)
    xs, ys = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    return (slice(max(0, xs[0] - margin), xs[-1] + margin + 1), slice(max(0, ys[0] - margin), ys[-1] + margin + 1))


def _to_display(plane: np.ndarray) -> np.ndarray:
    """An axial RAS plane (x, y) as screen rows/columns: anterior up, the patient's right (high x) on the left."""
    return np.asarray(plane).T[::-1, ::-1]


def _display_position(i: float, j: float, crop, cropped_shape) -> tuple[int, int]:
    """(column, row) on screen of RAS voxel (i, j), by the same :func:`_to_display` as the images (so they cannot disagree)."""
    x = int(np.clip(round(i) - (crop[0].start or 0), 0, cropped_shape[0] - 1))
    y = int(np.clip(round(j) - (crop[1].start or 0), 0, cropped_shape[1] - 1))
    mark = np.zeros(cropped_shape[:2], bool)
    mark[x, y] = True
    row, column = np.argwhere(_to_display(mark))[0]
    return int(column), int(row)


def _draw_panel(ax, study, volume, label, z, window, crop, task) -> None:
    sx, sy = study.spacing_mm[:2]
    image = _to_display(volume[crop[0], crop[1], z])
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest", aspect=sy / sx)
    if label is not None:
        plane = _to_display(label[crop[0], crop[1], z])
        rgba = np.zeros((*plane.shape, 4), np.float32)
        for value, (_, colour) in SEGMENTS[task].items():
            rgba[plane == value] = (*colour, OVERLAY_ALPHA)
        ax.imshow(rgba, interpolation="nearest", aspect=sy / sx)
        if task == "clot_region" and plane.any():  # ring each clot: a few voxels are invisible otherwise
            parts, n = ndimage.label(plane > 0)
            for row, col in ndimage.center_of_mass(plane > 0, parts, range(1, n + 1)):
                ax.plot(col, row, "o", markersize=16, markerfacecolor="none", markeredgecolor="yellow", markeredgewidth=1.3)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.03, 0.5, "R", transform=ax.transAxes, color="yellow", fontsize=9, fontweight="bold", ha="left", va="center")
    ax.text(0.97, 0.5, "L", transform=ax.transAxes, color="yellow", fontsize=9, fontweight="bold", ha="right", va="center")
    ax.text(0.03, 0.03, f"z={z}", transform=ax.transAxes, color="white", fontsize=7, ha="left", va="bottom")


def _draw_curves(figure, study, maps_from_4d: dict, crop, box) -> None:
    """AIF and VOF curves (HU over time) and where they were sampled, on the axial MIP of the CTP series' MIP map."""
    left, bottom, width, height = box
    # room inside the box for the axis labels below and the titles above
    curves = figure.add_axes((left + 0.045, bottom + 0.05, width * 0.55, height - 0.085))
    missing = []
    for key, colour in (("aif", "#d62728"), ("vof", "#1f77b4")):
        entry = maps_from_4d.get(key)
        # compute_maps leaves an input's lists empty when none was found (a VOF on a short or weak series)
        if entry and entry.get("curve_hu"):
            curves.plot(entry["times_s"], entry["curve_hu"], color=colour, lw=1.5, label=key.upper())
        else:
            missing.append(key.upper())
    notes = [f"{' and '.join(missing)} not found"] if missing else []
    # Why the series may not support a core estimate (strokelabel.ctp4d.series_flags), each with its deciding figure.
    notes += [f"{flag['flag'].replace('_', ' ')}: {flag['figure']:g} (limit {flag['limit']:g})" for flag in maps_from_4d.get("flags") or []]
    for row, note in enumerate(notes):
        curves.text(0.98, 0.95 - 0.11 * row, note, transform=curves.transAxes, ha="right", va="top", fontsize=7.5, color="#b00000",
                    fontweight="bold")
    curves.set_xlabel("time (s)", fontsize=8)
    curves.set_ylabel("enhancement (HU)", fontsize=8)
    curves.tick_params(labelsize=7)
    if curves.lines:
        curves.legend(fontsize=8, frameon=False)
    curves.set_title("Maps computed from the 4D series: AIF and VOF", fontsize=8.5, loc="left")
    where = figure.add_axes((left + width * 0.68, bottom, width * 0.3, height - 0.03))
    where.set_label("plain AIF/VOF positions")
    base = study.images.get("mip", study.images.get("cbv", study.images["cbf"]))
    projection = np.asarray(base)[crop[0], crop[1]].max(axis=2)
    sx, sy = study.spacing_mm[:2]
    where.imshow(_to_display(projection), cmap="gray", vmin=0, vmax=_window(base, study.brain_mask)[1], aspect=sy / sx,
                 interpolation="nearest")
    for key, colour, marker in (("aif", "#ff4040", "+"), ("vof", "#40a0ff", "x")):
        entry = maps_from_4d.get(key)
        if entry and entry.get("centroid_ijk"):
            i, j, k = entry["centroid_ijk"]
            column, row = _display_position(i, j, crop, projection.shape)
            where.plot(column, row, marker, color=colour, markersize=10, markeredgewidth=2)
            where.text(column + 3, row - 3, f"{key.upper()} z={int(round(k))}", color=colour, fontsize=7)
    where.set_xticks([])
    where.set_yticks([])
    where.set_title("sampled at (projection over slices)", fontsize=7.5)
    where.text(0.03, 0.5, "R", transform=where.transAxes, color="yellow", fontsize=9, fontweight="bold", ha="left", va="center")
    where.text(0.97, 0.5, "L", transform=where.transAxes, color="yellow", fontsize=9, fontweight="bold", ha="right", va="center")


def _draw_text(figure, entries) -> None:
    """The text panel, top to bottom; long lines wrap at the panel's width."""
    import textwrap

    y = TEXT_TOP
    for text, tone in entries:
        bold = TONE_STYLE[tone].get("fontweight") == "bold"
        wrapped = textwrap.wrap(text, TEXT_WRAP - (6 if bold else 0), subsequent_indent="      ") or [""]
        if tone in ("heading", "table_heading"):
            y -= TEXT_LINE * 0.4
        for part in wrapped:
            figure.text(TEXT_LEFT, y, part, fontsize=8.5, va="top", **TONE_STYLE[tone])
            y -= TEXT_LINE
