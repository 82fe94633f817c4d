"""The golden and determinism tests pass again with numpy's vectorised kernels narrowed to its baseline,
as another processor would run them (issue 20: a byte hash of floats passed on AVX-512, failed on AVX2).

The second run is a subprocess (numpy reads NPY_DISABLE_CPU_FEATURES only when it is imported), started
from this test so that the suite's one exit code and closing summary line cover both runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.numpy_dispatch import ENV, NARROWED_RUN, groups_to_narrow

REPO = Path(__file__).resolve().parents[1]


def test_the_golden_tests_pass_with_numpy_dispatch_narrowed(request):
    groups, why_not = groups_to_narrow()
    if not groups:
        pytest.skip(f"numpy dispatch not narrowed: {why_not}")
    env = {**os.environ, ENV: " ".join(groups), "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "golden and not slow and not e2e", "tests"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
    )
    out = run.stdout + run.stderr
    confirmed = re.search(r"^numpy CPU dispatch narrowed .*$", out, re.M)
    summary = out.strip().splitlines()[-1] if out.strip() else "(no output)"
    # Printed by the outer run's terminal summary (tests/conftest.py), before its closing line.
    request.config.stash[NARROWED_RUN] = [confirmed.group(0) if confirmed else f"{ENV}={' '.join(groups)}: narrowing not confirmed",
                                          f"narrowed-dispatch run of the golden tests: {summary.strip('= ')}"]
    assert run.returncode == 0, f"the golden tests fail with {ENV}={' '.join(groups)}:\n{out[-6000:]}"
    assert confirmed, f"the narrowed run did not confirm its dispatch:\n{out[-3000:]}"
    assert re.search(r"\d+ passed", summary) and " failed" not in summary, summary
