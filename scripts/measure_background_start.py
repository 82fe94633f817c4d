"""Where a training or scoring child's time goes before it does real work, through the real server.

Starts the server as the end-to-end tests do (tests/e2e/server.py: a copy of the app, a free port) on a
few small generated ISLES'22-layout MRI studies with ``models=ischemic_lesion``, then starts one training
run (one short epoch) and one scoring run, and follows the child of each: its CPU seconds (user + system,
its own children included, sampled by psutil every 0.1 s) and wall seconds since its start at the
moment each of these lines reaches the server log:

- ``Initializing App``: the interpreter is up and ``monailabel.interfaces.utils.app`` imported;
- ``Subclass for MONAILabelApp Found``: the app's ``main.py`` imported (torch, MONAI, ignite, ... via monailabel);
- ``Session Expiry``: the task configs built and the app constructed (the last line of ``MONAILabelApp.__init__``);
- the end of the child (its exit).

A run started warm (strokelabel/warm_start.py) is followed from its fork: its CPU seconds are its own since then.
``--warm 0`` starts every run cold (MONAI Label's way); the default is the server's (``lazy``: the first run waits
for the zygote's imports, the later ones are forked from it at once).

Nothing here is a pass/fail test: it prints figures. Say the load (``uptime``) beside them.

    PYTHONPATH=$PWD .venv/bin/python scripts/measure_background_start.py [--runs 1] [--warm 0|1]
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]

# (phase name, regex on the child's own log lines); the first match after the child starts ends the phase.
MARKERS = [("interpreter + monailabel.interfaces.utils.app", r"Initializing App from"),
           ("main.py imports (torch, MONAI, ... via monailabel)", r"Subclass for MONAILabelApp Found"),
           ("task configs + app construction", r"Session Expiry"),  # the last line of MONAILabelApp.__init__
           ]


def tree_cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of ``proc`` and its living children (children that ended are counted by the kernel into the parent's
    children_* times once reaped)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
        except psutil.Error:
            pass
    return total


def background_child(server_pid: int, method: str, seen: set[int]) -> psutil.Process | None:
    from strokelabel.lifeline import background_children

    for pid, cmdline in background_children(server_pid).items():
        if f" -m {method} " in cmdline and pid not in seen:
            return psutil.Process(pid)
    return None


def follow(server, method: str, start_call, seen: set[int]) -> dict:
    """Start a run with ``start_call``, follow its child to its end; returns the phases' (wall s, CPU s)."""
    log_offset = server.log.stat().st_size
    start_call()
    deadline = time.time() + 120
    child = None
    while child is None and time.time() < deadline:
        child = background_child(server.proc.pid, method, seen)
        time.sleep(0.02)
    if child is None:
        raise RuntimeError(f"no {method} child appeared")
    seen.add(child.pid)
    started = child.create_time()
    markers = list(MARKERS)
    marks = []
    cpu = 0.0
    while True:
        try:
            cpu = tree_cpu_s(child)
            running = child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            running = False
        text = "\n".join(line for line in server.log.read_text(errors="replace")[log_offset:].splitlines() if f"] [{child.pid}] [" in line)
        while markers and re.search(markers[0][1], text):
            marks.append((markers.pop(0)[0], time.time() - started, cpu))
        if not running:
            break
        time.sleep(0.1)
    marks.append(("the run itself, to exit", time.time() - started, cpu))
    return {"pid": child.pid, "marks": marks}


def print_phases(title: str, result: dict) -> None:
    print(f"\n{title} (child pid {result['pid']})")
    print(f"{'phase':48s} {'wall s':>8s} {'CPU s':>8s}   {'cumulative wall / CPU s':>24s}")
    last_wall = last_cpu = 0.0
    for name, wall, cpu in result["marks"]:
        print(f"{name:48s} {wall - last_wall:8.1f} {cpu - last_cpu:8.1f}   {wall:11.1f} / {cpu:8.1f}")
        last_wall, last_cpu = wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="training and scoring runs, one after the other")
    parser.add_argument("--warm", choices=("0", "1"), default=None, help="STROKELABEL_WARM_START for the server (default: as set)")
    parser.add_argument("--first-after-s", type=float, default=0.0, help="wait this long after the server is up before the first run")
    args = parser.parse_args()

    from strokelabel.phantom.isles_layout import generate_isles_study
    from tests.e2e.server import running_server, wait_for_scoring, wait_for_training, http

    env = {} if args.warm is None else {"STROKELABEL_WARM_START": args.warm}
    print(f"load: {os.getloadavg()}; cores: {os.cpu_count()}; env: {env}")
    with tempfile.TemporaryDirectory() as tmp:
        studies = Path(tmp) / "studies"
        for i in range(1, 5):
            generate_isles_study(studies, i, seed=300 + i)
        up = time.time()
        with running_server(Path(tmp) / "server", studies, models="ischemic_lesion", env=env) as server:
            print(f"server up in {time.time() - up:.1f} s")
            time.sleep(args.first_after_s)
            seen: set[int] = set()
            for run in range(args.runs):
                request = {"max_epochs": 1, "slices_per_study": 4, "device": "cpu", "dataset": "Dataset", "val_split": 0.25}
                train = follow(server, "train", lambda: server.client.train_start("ischemic_lesion_mri", request), seen)
                status = wait_for_training(server.client)
                print_phases(f"training run {run + 1}: {status['status']}", train)
                scoring = follow(server, "scoring", lambda: http(server, "POST", "/scoring/ischemic_lesion_mc_dropout"), seen)
                wait_for_scoring(server)
                print_phases(f"scoring run {run + 1}", scoring)
    print(f"\nload after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
