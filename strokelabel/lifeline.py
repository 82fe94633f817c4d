"""Background work tied to the server that started it, and yielding to the clinician's calls.

MONAI Label runs training, scoring and batch inference in child processes
(``python -m monailabel.interfaces.utils.app -m train ...``). If the server is killed (``kill -9``,
an out-of-memory kill), such a child would run on unseen and a trainer could publish a model into a
server restarted since, which never asked for it. Here a child asks the kernel to kill it with its
parent (Linux ``PR_SET_PDEATHSIG``), and a trainer checks before publishing that its server is still
the one that started it (the parent test holds where the kernel call does not exist).

Background children also run at a lower CPU priority (``nice`` 10) and, between studies, wait while
the server answers a clinician (an infer or a label save in flight: :func:`foreground_call` keeps a
marker file for as long as one runs), so active learning never starves the person at the viewer.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

MONAILABEL_CHILD_MODULE = "monailabel.interfaces.utils.app"
ZYGOTE_MODULE = "strokelabel.warm_start"  # the process the warm runs are forked from (strokelabel/warm_start.py)
_PR_SET_PDEATHSIG = 1
BACKGROUND_NICENESS = 10
_server_pid: int | None = None
# Where the server marks a clinician's call in flight; shared with its children through the environment.
BUSY_ENV = "STROKELABEL_FOREGROUND_MARKER"
# 0: background work neither lowers its priority nor waits (to measure what yielding buys: scripts/benchmark_scoring.py)
YIELD_ENV = "STROKELABEL_BACKGROUND_YIELD"
# The server's pid, inherited by its children: a child that starts importing after the server died has already
# been re-parented (to init or a subreaper), so its parent pid alone cannot tell it that its server is gone.
SERVER_PID_ENV = "STROKELABEL_SERVER_PID"
_in_flight = 0
_in_flight_lock = threading.Lock()


def is_background_child() -> bool:
    """Whether this process is one of MONAI Label's training/scoring/batch children."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == MONAILABEL_CHILD_MODULE


def exit_without_final_collection() -> None:
    """Let this process exit without the interpreter's last cyclic garbage collection.

    At exit, Python collects the cycles among the million or so objects torch, MONAI and the app
    created: 3.3 s of CPU for a process that imported the app, 0.8 s with the objects frozen first
    (measured here at load 4). Every training, scoring and batch child pays it at its end, after its
    result is written; files and models are already closed and renamed by then, so nothing waits on
    a finaliser of that garbage. The freeze runs among the exit handlers; the collection it spares comes after
    them all.
    """
    atexit.register(gc.freeze)


def tie_to_server() -> int | None:
    """In a background child: die with the server from now on; returns the server's pid (None elsewhere)."""
    global _server_pid
    if not is_background_child():
        return None
    if _server_pid is None:
        _server_pid = int(os.environ.get(SERVER_PID_ENV) or os.getppid())
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # not Linux: server_alive() still guards publishing
            logger.warning("this system cannot kill background work with the server; a trainer still never publishes without it")
        if not server_alive():  # the server died before the kernel call took effect
            logger.error("the server that started this process is gone: stopping")
            os._exit(1)
        if os.environ.get(YIELD_ENV, "1") != "0":
            if os.getpriority(os.PRIO_PROCESS, 0) < BACKGROUND_NICENESS:  # the server may have lowered it already
                os.setpriority(os.PRIO_PROCESS, 0, BACKGROUND_NICENESS)  # the clinician's infer gets the cores first
            _leave_a_core_free()
    return _server_pid


def _leave_a_core_free() -> None:
    """Background work computes on one core fewer than the machine has: a lower priority alone does not
    stop its threads from holding every core the moment the clinician's infer starts."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))


def mark_as_server() -> None:
    """In the server: tell the children it starts which pid their server has (see SERVER_PID_ENV)."""
    os.environ[SERVER_PID_ENV] = str(os.getpid())


def server_alive() -> bool:
    """False only in a background child whose server is gone (it was re-parented)."""
    return _server_pid is None or os.getppid() == _server_pid


def busy_marker() -> Path:
    """The marker file of the server's calls in flight (set up once per server, inherited by its children)."""
    if not os.environ.get(BUSY_ENV):
        os.environ[BUSY_ENV] = str(Path(tempfile.gettempdir()) / f"strokelabel-foreground-{os.getpid()}")
    return Path(os.environ[BUSY_ENV])


@contextlib.contextmanager
def foreground_call():
    """Around a clinician's call in the server (infer, label save): background work waits meanwhile."""
    global _in_flight
    marker = busy_marker()
    with _in_flight_lock:
        _in_flight += 1
        marker.touch()
    if os.environ.get(YIELD_ENV, "1") != "0":
        lower_background_priority()
    try:
        yield
    finally:
        with _in_flight_lock:
            _in_flight -= 1
            if _in_flight == 0:
                marker.unlink(missing_ok=True)


def background_children(parent_pid: int | None = None) -> dict[int, str]:
    """MONAI Label's background children of ``parent_pid`` (default: this process): {pid: command line}. A run
    started warm is a child of the server's zygote (strokelabel/warm_start.py) and carries a cold run's command line."""
    parent_pid = os.getpid() if parent_pid is None else parent_pid
    by_parent: dict[int, list[tuple[int, str]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):  # a process that just ended
            continue
        by_parent.setdefault(parent, []).append((int(stat.parent.name), cmdline))
    direct = by_parent.get(parent_pid, [])
    zygotes = [pid for pid, cmdline in direct if ZYGOTE_MODULE in cmdline]
    candidates = direct + [child for zygote in zygotes for child in by_parent.get(zygote, [])]
    return {pid: cmdline for pid, cmdline in candidates if MONAILABEL_CHILD_MODULE in cmdline and ZYGOTE_MODULE not in cmdline}


def lower_background_priority() -> int:
    """From the server: lower the CPU priority of its background children now. A child lowers its own
    once our app is imported in it, but its start-up before that (Python, torch, MONAI imports, several
    seconds of CPU) would otherwise compete at full priority with the call that is starting. Returns
    how many children were lowered."""
    lowered = 0
    for pid in background_children():
        try:
            if os.getpriority(os.PRIO_PROCESS, pid) < BACKGROUND_NICENESS:
                os.setpriority(os.PRIO_PROCESS, pid, BACKGROUND_NICENESS)
                lowered += 1
        except OSError:  # a child that just ended, or not ours to change
            continue
    return lowered


def wait_for_foreground(max_wait_s: float = 120.0, step_s: float = 0.2) -> float:
    """In background work, between units of work: wait while a clinician's call is in flight (at most
    ``max_wait_s``, so a stuck marker never stops the work for good); returns the seconds waited."""
    marker = os.environ.get(BUSY_ENV)
    if not marker or os.environ.get(YIELD_ENV, "1") == "0":
        return 0.0
    started = time.monotonic()
    while Path(marker).exists() and time.monotonic() - started < max_wait_s:
        time.sleep(step_s)
    return time.monotonic() - started
