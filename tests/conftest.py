"""Test set-up shared by the suite: the app's ``lib`` package is importable as MONAI Label imports it."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_DIR = os.path.join(REPO_ROOT, "apps", "stroke")
if APP_DIR not in sys.path:
    sys.path.insert(0, APP_DIR)

# The real cases of ../shared/real (never copied into the repo); tests that read them skip without them.
REAL_DIR = os.environ.get("STROKELABEL_REAL_DIR", os.path.join(os.path.dirname(REPO_ROOT), "shared", "real"))
