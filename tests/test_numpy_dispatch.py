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
    # The modules of the golden tests this run collected (collecting the whole suite again costs ~20 CPU-s);
    # all of tests/ when this test runs alone.
    modules = sorted({item.nodeid.split("::")[0] for item in request.session.items if item.get_closest_marker("golden")}) or ["tests"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "golden and not slow and not e2e", *modules],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
    )
    out = run.stdout + run.stderr
    confirmed = re.search(r"^numpy CPU dispatch narrowed .*$", out, re.M)
    summary = out.strip().splitlines()[-1] if out.strip() else "(no output)"
    # Printed by the outer run's terminal summary (tests/conftest.py), before its closing line.
    request.node.user_properties.append((NARROWED_RUN, [confirmed.group(0) if confirmed else f"{ENV}={' '.join(groups)}: narrowing not confirmed",
                                                         f"narrowed-dispatch run of the golden tests: {summary.strip('= ')}"]))
    assert run.returncode == 0, f"the golden tests fail with {ENV}={' '.join(groups)}:\n{out[-6000:]}"
    assert confirmed, f"the narrowed run did not confirm its dispatch:\n{out[-3000:]}"
    assert re.search(r"\d+ passed", summary) and " failed" not in summary, summary


def test_a_machine_without_the_x86_groups_is_skipped_with_its_reason(monkeypatch):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    groups, why_not = groups_to_narrow()
    assert groups == [] and "not an x86-64 machine (aarch64)" in why_not


def test_a_narrowing_that_did_not_take_effect_is_an_error_naming_the_group(monkeypatch):
    from types import SimpleNamespace

    from tests import numpy_dispatch

    kept_on = SimpleNamespace(__cpu_features__={"X86_V3": True, "X86_V4": False}, __cpu_baseline__=["X86_V2"])
    monkeypatch.setattr(numpy_dispatch, "_multiarray", lambda: kept_on)  # as if numpy had ignored the variable
    monkeypatch.setenv(ENV, "X86_V3 X86_V4")
    with pytest.raises(AssertionError, match=r"did not take effect.*\['X86_V3'\]"):
        numpy_dispatch.narrowing_report()
    kept_on.__cpu_features__["X86_V3"] = False
    assert "X86_V3=off, X86_V4=off" in numpy_dispatch.narrowing_report()
    monkeypatch.delenv(ENV)
    assert numpy_dispatch.narrowing_report() is None
