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

# In a parallel run (pytest-xdist, as scripts/run_tests.sh starts it) each worker, and the servers it starts,
# computes on its share of the cores: two workers with two OpenMP threads each on two cores would stall
# each other (threads spin-waiting on a busy CPU). Set here, before a worker imports torch or numpy.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

# The modules that take a minute or more (measured on 2 cores), longest first. A parallel run gives each
# module whole to one worker (``--dist loadfile``: its module-scoped server is started once) in collection
# order, so these start first and the many short modules fill in around them; a training loop started last
# would leave one worker running alone at the end.
LONGEST_MODULES = (
    "tests/e2e/test_crash_safety.py",
    "tests/e2e/test_browser_stroke.py",
    "tests/e2e/test_federated.py",
    "tests/e2e/test_core_penumbra_loop.py",
    "tests/e2e/test_pacs.py",
    "tests/e2e/test_ischemic_lesion_loop.py",
    "tests/e2e/test_clot_region_loop.py",
    "tests/app/test_real_conventions.py",
    "tests/e2e/test_model_lifecycle.py",
    "tests/test_numpy_dispatch.py",
    "tests/app/test_clot_region_infer.py",
    "tests/e2e/test_browser.py",
    "tests/e2e/test_access_control.py",
    "tests/e2e/test_server.py",
    "tests/e2e/test_ctp_series.py",
)


def pytest_report_header(config):
    # A run with numpy's dispatch narrowed (tests/test_numpy_dispatch.py) says so, and stops if it did not take effect.
    from tests.numpy_dispatch import narrowing_report

    try:
        report = narrowing_report()
    except AssertionError as e:
        raise __import__("pytest").UsageError(str(e)) from None
    return [report] if report else []


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # a serial run keeps pytest's order (and --failed-first's)
    # Stable: the tests of a module keep their order and stay together.
    rank = {module: i for i, module in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from tests.numpy_dispatch import NARROWED_RUN

    # The narrowed run's lines travel as the test's user property: in a parallel run the test runs in a worker.
    printed = set()
    for reports in terminalreporter.stats.values():
        for report in reports:
            lines = dict(getattr(report, "user_properties", ())).get(NARROWED_RUN)
            if lines and report.nodeid not in printed:
                printed.add(report.nodeid)
                for line in lines:
                    terminalreporter.write_line(line)
