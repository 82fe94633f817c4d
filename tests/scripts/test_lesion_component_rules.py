"""scripts/lesion_component_rules.py, the parts that need no model: the shipped rule is measured first and
once, and the pooled Dice kept as voxel counts is the one of ``strokelabel.metrics``."""

import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import lesion_component_rules as rules  # noqa: E402
from lib.transforms.ischemic_lesion import MRI_COMPONENT_RULE, STRICT_MRI_COMPONENT_RULE  # noqa: E402

from strokelabel import metrics  # noqa: E402


def test_the_shipped_rule_comes_first_and_every_variant_once_the_strict_one_among_them():
    variants = rules.variants()
    assert variants[0] == MRI_COMPONENT_RULE
    assert len(set(variants)) == len(variants)
    assert STRICT_MRI_COMPONENT_RULE in variants


def test_the_summary_pools_dice_over_studies_as_metrics_does():
    rng = np.random.default_rng(0)
    pairs = [(rng.random((12, 12, 4)) > p, rng.random((12, 12, 4)) > q) for p, q in ((0.7, 0.8), (0.9, 0.6), (0.95, 0.99))]
    rows = [rules.score(pred.astype(np.uint8), truth, (1.0, 1.0, 2.0)) for pred, truth in pairs]
    summary = rules.summary(rows)
    assert summary["n"] == 3
    assert summary["pooled_dice"] == pytest.approx(metrics.pooled_dice(pairs))
    assert summary["mean_dice"] == pytest.approx(np.mean([metrics.dice(p, t) for p, t in pairs]))
