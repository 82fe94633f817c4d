"""Background work tied to the server that started it.

MONAI Label runs training, scoring and batch inference in child processes
(``python -m monailabel.interfaces.utils.app -m train ...``). If the server is killed (``kill -9``,
an out-of-memory kill), such a child would run on unseen and a trainer could publish a model into a
server restarted since, which never asked for it. Here a child asks the kernel to kill it with its
parent (Linux ``PR_SET_PDEATHSIG``), and a trainer checks before publishing that its server is still
the one that started it (the parent test holds where the kernel call does not exist).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)

MONAILABEL_CHILD_MODULE = "monailabel.interfaces.utils.app"
_PR_SET_PDEATHSIG = 1
_server_pid: int | None = None


def is_background_child() -> bool:
    """Whether this process is one of MONAI Label's training/scoring/batch children."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == MONAILABEL_CHILD_MODULE


def tie_to_server() -> int | None:
    """In a background child: die with the server from now on; returns the server's pid (None elsewhere)."""
    global _server_pid
    if not is_background_child():
        return None
    if _server_pid is None:
        _server_pid = os.getppid()
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # not Linux: server_alive() still guards publishing
            logger.warning("this system cannot kill background work with the server; a trainer still never publishes without it")
        if not server_alive():  # the server died before the kernel call took effect
            logger.error("the server that started this process is gone: stopping")
            os._exit(1)
    return _server_pid


def server_alive() -> bool:
    """False only in a background child whose server is gone (it was re-parented)."""
    return _server_pid is None or os.getppid() == _server_pid
