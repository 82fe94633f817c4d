"""scripts/evaluate_maps.py's decision table: agreement figures and differing verdicts from per-study rows."""

import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import evaluate_maps as E  # noqa: E402


def row(true_core, core, true_mismatch, mismatch, flags="-", family="clean"):
    r = {"family": family, "true_core_ml": true_core, "core_ml": core, "true_mismatch_ml": true_mismatch, "mismatch_ml": mismatch,
         "core_err_ml": core - true_core, "mismatch_err_ml": mismatch - true_mismatch, "flags": flags}
    for criteria in E.CRITERIA:
        key = criteria.name.lower().replace(" ", "")
        r[f"{key}_true"] = criteria.met(true_core, true_core + true_mismatch)
        r[key] = criteria.met(core, core + mismatch)
    return r


def test_boundary_summary_gives_bias_limits_and_counts_each_differing_verdict():
    rows = [row(60, 62, 60, 58), row(65, 72, 60, 50), row(80, 66, 70, 60, flags="low SNR"), {"family": "clean", "refused": "no AIF"}]
    summary = E.boundary_summary("clean", rows)
    errors = np.array([2.0, 7.0, -14.0])
    assert summary["n"] == 3 and summary["refused"] == 1
    assert summary["core_bias_ml"] == pytest.approx(errors.mean())
    low, high = errors.mean() - 1.96 * errors.std(ddof=1), errors.mean() + 1.96 * errors.std(ddof=1)
    assert summary["core_loa_ml"] == f"{low:.1f} to {high:.1f}"
    # Row 2: core 72 mL is not < 70 (both trials flip to not met); row 3: core 66 mL < 70 (true 80): both flip to met.
    assert summary["defuse3_differs"] == "2/3" and summary["extend_differs"] == "2/3"
    assert summary["flagged"] == "1/3"


def test_false_alarms_count_flags_on_sound_families_only():
    rows = [row(60, 60, 60, 60), row(60, 60, 60, 60, flags="motion"), row(60, 60, 60, 60, flags="motion", family="motion")]
    rows += [row(60, 60, 60, 60, family="clinical_noise") for _ in range(7)]
    assert E.false_alarm_line(rows) == "false alarms (a flag on clean or clinical_noise): 1/9 = 11%, above the 10% target"
    assert E.false_alarm_line(rows[2:]).endswith("0/7 = 0%, within the 10% target")


def test_each_rcbf_reference_is_its_own_method_and_a_given_reference_moves_the_rule_s_core():
    assert E.method_name("osvd", "median") == "osvd"
    assert E.method_name("osvd_peak", "mean_curve") == "osvd_peak+mean_curve"
    # Healthy tissue CBF 50 on both sides, a block of CBF 12 (rCBF 0.24) with Tmax 10 s: core by the map's median;
    # against a reference read at 35 (rCBF 0.34) it is penumbra, and the core volume with it.
    cbf = np.full((40, 20, 4), 50.0, np.float32)
    tmax = np.full(cbf.shape, 1.0, np.float32)
    cbf[6:14, 5:15], tmax[6:14, 5:15] = 12.0, 10.0
    mask = np.ones(cbf.shape, bool)
    spacing = (2.0, 2.0, 5.0)
    by_median = E.task_volumes(cbf, tmax, mask, spacing)
    by_reference = E.task_volumes(cbf, tmax, mask, spacing, reference_cbf=35.0)
    assert by_median["core_volume_ml"] == pytest.approx(8 * 10 * 4 * 0.02)
    assert by_reference["core_volume_ml"] == 0.0
    assert by_reference["hypoperfusion_volume_ml"] == by_median["hypoperfusion_volume_ml"]
