"""Test set-up shared by the suite: the app's ``lib`` package is importable as MONAI Label imports it."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_DIR = os.path.join(REPO_ROOT, "apps", "stroke")
if APP_DIR not in sys.path:
    sys.path.insert(0, APP_DIR)

# The real cases of ../shared/real (never copied into the repo); tests that read them skip without them.
REAL_DIR = os.environ.get("STROKELABEL_REAL_DIR", os.path.join(os.path.dirname(REPO_ROOT), "shared", "real"))

# Brain extraction (deepbet, ~15-30 s per study on 2 cores) would run on every MRI phantom with its skull
# that a test generates (the fixed look keeps the skull); the suite uses the threshold mask unless a test
# asks for the model (tests/strokelabel/test_brain_extraction.py), so it stays within its time budget.
os.environ.setdefault("STROKELABEL_BRAIN_EXTRACTION", "off")
