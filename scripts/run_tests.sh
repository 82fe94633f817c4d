#!/usr/bin/env bash
# Set up the environment and run the test suite (unit tests and end-to-end tests that start the
# real MONAI Label server). Extra arguments go to pytest, e.g. `-m "not e2e"` or `-k phantom`.
# RUN_SLOW=1 also runs the tests marked slow (long training runs). The golden and determinism tests
# run a second time with numpy's CPU dispatch narrowed (tests/test_numpy_dispatch.py), inside this one
# pytest run, so its exit code and its closing summary line cover both runs.
# The tests run in parallel on the machine's cores (pytest-xdist; at most 4 workers: each may hold a
# server, Orthanc and a browser), each test module whole in one worker so that its shared server starts
# once, the longest modules first (tests/conftest.py). TEST_WORKERS=N chooses the number, 0 runs serially.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_system.sh"
# The viewer (npm) and the venv (pip) are fetched side by side: on a fresh machine both mostly wait on the network.
bash "$ROOT/scripts/setup_viewer.sh" &
viewer_setup=$!
bash "$ROOT/scripts/setup_env.sh"
wait "$viewer_setup" || { echo "[setup] scripts/setup_viewer.sh failed" >&2; exit 1; }
PY="${VENV:-$ROOT/.venv}/bin/python"
cd "$ROOT"
export MONAI_LABEL_TRACKING_ENABLED=false
# Byte code is written (once) even where the environment forbids it: otherwise each server, training and
# scoring process would compile torch, MONAI and the app from source again (scripts/setup_env.sh).
unset PYTHONDONTWRITEBYTECODE
marker=()
[ "${RUN_SLOW:-0}" = "1" ] || marker=(-m "not slow")
cores="$(nproc 2>/dev/null || echo 1)"
workers="${TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}"
[ "$workers" -gt 1 ] || workers=0
parallel=(-n "$workers")
[ "$workers" = "0" ] || parallel+=(--dist loadfile --no-loadscope-reorder)
exec "$PY" -m pytest -ra --durations=25 --timeout=1200 "${parallel[@]}" "${marker[@]}" "$@"
