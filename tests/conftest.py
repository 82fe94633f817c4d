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


def pytest_report_header(config):
    # A run with numpy's dispatch narrowed (tests/test_numpy_dispatch.py) says so, and stops if it did not take effect.
    from tests.numpy_dispatch import narrowing_report

    try:
        report = narrowing_report()
    except AssertionError as e:
        raise __import__("pytest").UsageError(str(e)) from None
    return [report] if report else []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from tests.numpy_dispatch import NARROWED_RUN

    for line in config.stash.get(NARROWED_RUN, []):
        terminalreporter.write_line(line)
