"""What one server start costs until it answers ``/info``, with and without the deferred imports.

Starts the server as the end-to-end tests do (``tests/e2e/server.py``: a copy of the app, a free port,
``python -m strokelabel.server``) on two small generated studies, ``--runs`` times with
``STROKELABEL_DEFER_IMPORTS=1`` (MLflow's handler and pyplot imported on first use,
:mod:`strokelabel.deferred_imports`) and as many with ``0``, alternating, and prints per start the wall
seconds until ``/info`` answers and the server's CPU seconds (user + system, psutil) at that moment, then the
medians. Nothing here is a pass/fail test: it prints figures. Say the load (``uptime``) beside them.

    PYTHONPATH=$PWD .venv/bin/python scripts/measure_server_start.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "apps" / "stroke")]


def one_start(work: Path, studies: Path, defer: str) -> tuple[float, float]:
    from tests.e2e.server import running_server

    os.environ["STROKELABEL_DEFER_IMPORTS"] = defer
    started = time.perf_counter()
    with running_server(work, studies, models="core_penumbra") as server:
        wall = time.perf_counter() - started
        process = psutil.Process(server.proc.pid)
        cpu = sum(p.cpu_times().user + p.cpu_times().system for p in [process, *process.children(recursive=True)])
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from strokelabel.phantom import generate_study

    with tempfile.TemporaryDirectory(prefix="server_start_") as tmp:
        studies = Path(tmp) / "studies"
        for i in range(2):
            generate_study(studies, "ctp", f"ctp{i:04d}", seed=i)
        figures = {"1": [], "0": []}
        for run in range(args.runs):
            for defer in ("1", "0"):
                wall, cpu = one_start(Path(tmp) / f"run{run}_{defer}", studies, defer)
                figures[defer].append((wall, cpu))
                print(f"run {run + 1}, deferred imports {'on ' if defer == '1' else 'off'}: /info after {wall:.1f} s wall, {cpu:.2f} CPU-s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
        for defer, rows in figures.items():
            print(f"median, deferred imports {'on ' if defer == '1' else 'off'}: {statistics.median(r[0] for r in rows):.1f} s wall, "
                  f"{statistics.median(r[1] for r in rows):.2f} CPU-s to /info ({len(rows)} starts)")


if __name__ == "__main__":
    main()
