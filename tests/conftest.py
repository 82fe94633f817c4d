"""Test set-up shared by the suite: the app's ``lib`` package is importable as MONAI Label imports it."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_DIR = os.path.join(REPO_ROOT, "apps", "stroke")
if APP_DIR not in sys.path:
    sys.path.insert(0, APP_DIR)
