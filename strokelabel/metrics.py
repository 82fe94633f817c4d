"""Evaluation metrics for the three tasks, and small tables of them.

Segmentation (per study, binary masks): Dice, precision, recall, volume error (mL),
HD95 (mm), the ISLES'22 measures (Dice, absolute volume difference, lesion-wise F1, absolute
lesion-count difference), the false-positive volume (mL outside the expert mask widened by a
margin, so a boundary disagreement is not counted as a false lesion), whether the largest true
lesion is found, and the pooled Dice of several studies (voxels summed before the ratio). Clot regions
(seed 002): precision, recall, F1 and accuracy of the 15 region flags, per study or per
slice. Clot: detection and distance between predicted and true clot centres (mm).

Empty masks: every score has a defined value. Overlap scores (Dice, precision, recall,
F1) are 1 when prediction and truth are both empty and 0 when only one of them is (the
ISLES'22 convention, ``empty_value=1``). HD95 is 0 when both are empty and infinite when
only one is. Connectivity is full (26 in 3D), as in the ISLES'22 evaluation.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from strokelabel.units import voxel_volume_ml


def _binary(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    return pred, truth


def _ratio(numerator: float, denominator: float, both_empty: bool, empty_value: float) -> float:
    """numerator / denominator; a zero denominator gives ``empty_value`` when both masks are empty, else 0."""
    if denominator == 0:
        return float(empty_value) if both_empty else 0.0
    return float(numerator) / float(denominator)


def dice(pred: np.ndarray, truth: np.ndarray, empty_value: float = 1.0) -> float:
    """Dice coefficient of two binary masks (MONAI ``compute_dice``); ``empty_value`` when both are empty."""
    pred, truth = _binary(pred, truth)
    if not pred.any() and not truth.any():
        return float(empty_value)
    # Imported here: importing monai.metrics takes seconds, and tables/counts need none of it.
    import torch
    from monai.metrics import compute_dice

    as_tensor = lambda m: torch.from_numpy(m[None, None].astype(np.float32))  # noqa: E731 - (batch, channel, ...)
    return float(compute_dice(as_tensor(pred), as_tensor(truth), include_background=True, ignore_empty=False).item())


# Precision and recall are counted by hand rather than with MONAI's confusion-matrix
# metrics, which return NaN on an empty denominator; here the empty cases are defined.
def precision(pred: np.ndarray, truth: np.ndarray, empty_value: float = 1.0) -> float:
    """TP / (TP + FP) over voxels."""
    pred, truth = _binary(pred, truth)
    both_empty = not pred.any() and not truth.any()
    return _ratio(np.count_nonzero(pred & truth), np.count_nonzero(pred), both_empty, empty_value)


def recall(pred: np.ndarray, truth: np.ndarray, empty_value: float = 1.0) -> float:
    """TP / (TP + FN) over voxels (sensitivity)."""
    pred, truth = _binary(pred, truth)
    both_empty = not pred.any() and not truth.any()
    return _ratio(np.count_nonzero(pred & truth), np.count_nonzero(truth), both_empty, empty_value)


def volume_error_ml(pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Signed volume error, predicted minus true volume, in mL (positive = over-segmentation)."""
    pred, truth = _binary(pred, truth)
    voxel_ml = voxel_volume_ml(spacing_mm, pred.ndim)
    return (int(np.count_nonzero(pred)) - int(np.count_nonzero(truth))) * voxel_ml


def absolute_volume_error_ml(pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """|predicted - true volume| in mL (ISLES'22 absolute volume difference, seed 004's ΔV)."""
    return abs(volume_error_ml(pred, truth, spacing_mm))


def hd95_mm(pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance between the mask surfaces, in mm (MONAI).

    0 when both masks are empty, infinite when only one is.
    """
    pred, truth = _binary(pred, truth)
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return math.inf
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's internal deprecation notices
        distance = compute_hausdorff_distance(
            pred[None, None].astype(np.float32),
            truth[None, None].astype(np.float32),
            include_background=True,
            percentile=95,
            spacing=[float(s) for s in spacing_mm],
        )
    return float(distance.item())


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    return labels, int(count)


def lesion_counts(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Lesion-wise counts as in ISLES'22, over connected components (26-connectivity in 3D).

    TP = true lesions overlapped by the prediction, FN = true lesions it misses, FP =
    predicted components that overlap no true lesion. A predicted component touching a
    true lesion is therefore never a false positive, and one predicted blob covering two
    true lesions detects both.

    Checked against the challenge's own scoring (issue 21): ``compute_lesion_f1_score`` and
    ``compute_absolute_lesion_difference`` in ezequieldlrosa/isles22 ``utils/eval_utils.py`` and
    ezequieldlrosa/isles22_docker_evaluation ``eval_metrics_isles.py`` (the same functions as
    npnl/atlas2_grand_challenge ``isles/scoring.py``): components by ``cc3d`` with connectivity 26
    (the docker's ``scipy.ndimage.label`` with a 3x3x3 block of ones is 26 as well, whatever its
    comment says); a true lesion is a hit when one voxel of it is predicted; a predicted component
    is a false positive only when none of its voxels is in the truth; both masks empty gives
    ``empty_value``, an empty truth with a prediction 0. This function makes the same decisions.
    """
    pred, truth = _binary(pred, truth)
    true_labels, n_true = _components(truth)
    pred_labels, n_pred = _components(pred)
    detected = np.unique(true_labels[pred & truth])
    hitting = np.unique(pred_labels[pred & truth])
    tp = int(detected.size)
    return {"tp": tp, "fn": n_true - tp, "fp": n_pred - int(hitting.size), "n_true": n_true, "n_pred": n_pred}


def lesion_f1(pred: np.ndarray, truth: np.ndarray, empty_value: float = 1.0) -> float:
    """ISLES'22 lesion-wise F1 = TP / (TP + (FP + FN) / 2); ``empty_value`` when both masks are empty."""
    c = lesion_counts(pred, truth)
    denominator = c["tp"] + (c["fp"] + c["fn"]) / 2
    return _ratio(c["tp"], denominator, c["n_true"] == 0 and c["n_pred"] == 0, empty_value)


def lesion_count_difference(pred: np.ndarray, truth: np.ndarray) -> int:
    """ISLES'22 absolute difference in the number of lesions (connected components)."""
    c = lesion_counts(pred, truth)
    return abs(c["n_pred"] - c["n_true"])


def false_positive_volume_ml(pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float], margin_voxels: float = 2.0) -> float:
    """Predicted volume in mL outside the true mask dilated by ``margin_voxels`` (Euclidean distance in
    voxels, a ball): lesion drawn where there is none, not the rim of a true lesion drawn a little wide.

    Written by hand: MONAI has no such metric. With an empty truth every predicted voxel counts."""
    pred, truth = _binary(pred, truth)
    if not pred.any():
        return 0.0
    if truth.any():
        # distance of each voxel to the nearest true voxel, in voxels (0 inside the truth)
        near = ndimage.distance_transform_edt(~truth) <= float(margin_voxels)
    else:
        near = truth
    return int(np.count_nonzero(pred & ~near)) * voxel_volume_ml(spacing_mm, pred.ndim)


def largest_lesion_detected(pred: np.ndarray, truth: np.ndarray) -> bool | None:
    """Does the prediction overlap the largest true lesion (26-connected component)? None with no true lesion."""
    pred, truth = _binary(pred, truth)
    labels, count = _components(truth)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    return bool((pred & (labels == int(np.argmax(sizes)) + 1)).any())


def pooled_dice(pairs: Iterable[tuple[np.ndarray, np.ndarray]], empty_value: float = 1.0) -> float:
    """Dice of several studies with the voxels summed first: 2 Σ|P∩T| / (Σ|P| + Σ|T|) over (pred, truth) pairs.

    Unlike the mean of per-study Dice, a tiny lesion weighs by its voxels, not as a whole study."""
    overlap = total = 0
    for pred, truth in pairs:
        pred, truth = _binary(pred, truth)
        overlap += int(np.count_nonzero(pred & truth))
        total += int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    return float(empty_value) if total == 0 else 2.0 * overlap / total


def segmentation_scores(pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float]) -> dict:
    """Every segmentation score of one study and one label, as a row for :func:`summarise`."""
    return {
        "dice": dice(pred, truth),
        "precision": precision(pred, truth),
        "recall": recall(pred, truth),
        "volume_error_ml": volume_error_ml(pred, truth, spacing_mm),
        "abs_volume_error_ml": absolute_volume_error_ml(pred, truth, spacing_mm),
        "hd95_mm": hd95_mm(pred, truth, spacing_mm),
        "lesion_f1": lesion_f1(pred, truth),
        "lesion_count_difference": lesion_count_difference(pred, truth),
        "fp_volume_ml": false_positive_volume_ml(pred, truth, spacing_mm),
        "largest_lesion_detected": largest_lesion_detected(pred, truth),
    }


def region_flag_scores(pred_flags: np.ndarray, true_flags: np.ndarray, empty_value: float = 1.0) -> dict:
    """Precision, recall, F1 and accuracy of region flags, pooled over every flag given (seed 002).

    Shapes: (15,) for one study, (n_slices, 15) per slice, or any stack of them; the
    counts are pooled (micro-averaged) over all elements, as the seed reports them.
    Accuracy is the fraction of flags right (absent regions included, hence high when
    few regions are affected); ``exact_match`` is the fraction of rows (slices/studies)
    with every flag right.
    """
    pred = np.asarray(pred_flags, dtype=bool)
    true = np.asarray(true_flags, dtype=bool)
    if pred.shape != true.shape:
        raise ValueError(f"predicted flags {pred.shape} and true flags {true.shape} differ in shape")
    tp = int(np.count_nonzero(pred & true))
    fp = int(np.count_nonzero(pred & ~true))
    fn = int(np.count_nonzero(~pred & true))
    both_empty = not pred.any() and not true.any()
    if pred.ndim == 0:
        raise ValueError("region flags need at least one axis (the regions)")
    rows = (pred == true).reshape(-1, pred.shape[-1])
    return {
        "precision": _ratio(tp, tp + fp, both_empty, empty_value),
        "recall": _ratio(tp, tp + fn, both_empty, empty_value),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, both_empty, empty_value),
        "accuracy": float(np.mean(pred == true)),
        "exact_match": float(np.mean(rows.all(axis=-1))),
    }


def clot_centre_distance_mm(pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float]) -> float | None:
    """Distance between the centres of mass of the predicted and true clot, in mm; None if either is empty."""
    pred, truth = _binary(pred, truth)
    if not pred.any() or not truth.any():
        return None
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    offset_vox = np.argwhere(pred).mean(axis=0) - np.argwhere(truth).mean(axis=0)
    return float(np.linalg.norm(offset_vox * spacing))


def clot_detection(pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float]) -> dict:
    """Clot detection of one study: presence, overlap, and centre distance in mm.

    ``clot_detected`` is True when the prediction overlaps the true clot; ``clot_present_*``
    allow study-level sensitivity/specificity of clot presence.
    """
    pred, truth = _binary(pred, truth)
    return {
        "clot_present_true": bool(truth.any()),
        "clot_present_pred": bool(pred.any()),
        "clot_detected": bool((pred & truth).any()),
        "clot_centre_distance_mm": clot_centre_distance_mm(pred, truth, spacing_mm),
    }


def limits_of_agreement(differences: Iterable[float]) -> dict:
    """Bland-Altman agreement of paired measurements from their differences (method - reference):
    ``bias`` (mean), ``low`` and ``high`` (bias -/+ 1.96 sample SD, the 95 % limits; None with fewer than 2), ``n``."""
    d = np.asarray(list(differences), dtype=np.float64)
    if d.size == 0:
        return {"n": 0, "bias": None, "low": None, "high": None}
    bias = float(d.mean())
    if d.size < 2:
        return {"n": 1, "bias": bias, "low": None, "high": None}
    half_width = 1.96 * float(d.std(ddof=1))
    return {"n": int(d.size), "bias": bias, "low": bias - half_width, "high": bias + half_width}


def _number(value) -> float | None:
    """A row value as a float for averaging (bools count 0/1); None for text, None and NaN."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and not math.isnan(float(value)):
        return float(value)
    return None


def summarise(rows: Iterable[Mapping], by: str | None = None, with_sd: bool = False) -> list[dict]:
    """Average per-study rows into a table: one row per value of ``by`` (one row if None).

    Numeric columns are averaged over the studies that have a value (None and NaN are
    skipped, so an undefined HD95 does not sink a mean; an infinite one does, on purpose);
    booleans average to a fraction. ``n`` is the number of studies in the group; with
    ``with_sd`` each mean ``c`` gets a sample standard deviation ``c_sd``.
    """
    rows = list(rows)
    groups: dict = {}
    for row in rows:
        groups.setdefault(row.get(by) if by else None, []).append(row)
    columns = [c for c in dict.fromkeys(k for row in rows for k in row) if c != by]
    table = []
    for key, members in groups.items():
        out: dict = {by: key} if by else {}
        out["n"] = len(members)
        for column in columns:
            values = [v for v in (_number(row.get(column)) for row in members) if v is not None]
            if not values:
                continue
            out[column] = float(np.mean(values)) if all(np.isfinite(values)) else math.inf
            if with_sd:
                out[f"{column}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 and all(np.isfinite(values)) else None
        table.append(out)
    return table


def _cell(value, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.{digits}f}")
    return str(value)


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, digits: int = 3, markdown: bool = False) -> str:
    """Aligned plain-text table of ``rows``; numbers right-aligned, text left-aligned, missing as ``-``.
    With ``markdown``, the same as a Markdown (GitHub) table."""
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c), digits) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(_number(row.get(c)) is not None or row.get(c) is None for row in rows) for c in columns]

    def line(values):
        cells = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return f"| {' | '.join(cells)} |" if markdown else "  ".join(cells).rstrip()

    rule = [("-" * max(w - 1, 1) + ":") if num and markdown else "-" * w for w, num in zip(widths, numeric)]
    out = [line(columns), line(rule)]
    out += [line(r) for r in cells]
    return "\n".join(out)
