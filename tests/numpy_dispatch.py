"""numpy's CPU dispatch, narrowed: the golden and determinism tests (marker ``golden``) must pass
whichever vectorised kernels numpy picks, because another processor picks others.

numpy compiles each kernel for a baseline (X86_V2 on x86-64) and for groups it dispatches to at run
time (``__cpu_dispatch__``: X86_V3 = AVX2/FMA3, X86_V4 = AVX-512, ...); ``NPY_DISABLE_CPU_FEATURES``,
read when numpy is imported, switches groups off by name (numpy 2.4 takes the group names, not single
features such as AVX2: checked here on an AVX2 machine). Switching off every group the machine has
makes numpy run its baseline kernels, whose last bits differ from the AVX2 and AVX-512 ones.
"""

from __future__ import annotations

import os
import platform


ENV = "NPY_DISABLE_CPU_FEATURES"
NARROWED_RUN = "narrowed_dispatch_run"  # user property: the narrowed run's confirmation and summary, for the terminal summary
X86_GROUPS = ("X86_V3", "X86_V4", "AVX512_ICL", "AVX512_SPR")


def _multiarray():
    from numpy._core import _multiarray_umath  # numpy >= 2 (numpy.core before)

    return _multiarray_umath


def groups_to_narrow() -> tuple[list[str], str]:
    """The dispatch groups this machine runs that can be switched off, and a reason when there is nothing to do."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return [], f"not an x86-64 machine ({machine}): numpy's X86_V3/X86_V4 dispatch groups do not exist here"
    m = _multiarray()
    on = [g for g in X86_GROUPS if g in m.__cpu_dispatch__ and m.__cpu_features__.get(g)]
    if not on:
        return [], f"numpy runs its baseline kernels already ({', '.join(m.__cpu_baseline__[-1:])}): no dispatch group is on"
    return on, ""


def narrowing_report() -> str | None:
    """In a process started with ``NPY_DISABLE_CPU_FEATURES``: which groups ``__cpu_features__`` shows off, or
    an ``AssertionError`` naming a group numpy kept on (the narrowing did not take effect). None otherwise."""
    asked = os.environ.get(ENV, "").split()
    if not asked:
        return None
    m = _multiarray()
    still_on = [g for g in asked if m.__cpu_features__.get(g)]
    if still_on:
        raise AssertionError(f"{ENV}={' '.join(asked)} did not take effect: numpy's __cpu_features__ still shows {still_on} on")
    return (f"numpy CPU dispatch narrowed ({ENV}={' '.join(asked)}): __cpu_features__ confirms "
            f"{', '.join(f'{g}=off' for g in asked)}; kernels run at baseline {m.__cpu_baseline__[-1]}")
