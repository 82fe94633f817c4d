"""Training and scoring children that start warm: forked from a process that has imported the stack once.

MONAI Label runs every training, scoring and batch-inference run as a fresh interpreter
(``monailabel/utils/async_tasks/utils.py::_task_func``: ``Popen([python, -m, monailabel.interfaces.utils.app,
-m <method>, -r <request>])``), whose stdout it reads line by line into the task's ``details`` and the log,
and which ``stop_background_task`` kills with its children by pid. Each such child imports monailabel,
which pulls in torch, MONAI, ignite, mlflow, scipy and matplotlib: about 13 CPU-s on an idle core before
it reads a study (measured by ``scripts/measure_background_start.py``). MONAI Label has no way to reuse a
warm interpreter for these runs (its only other mode, ``force_sync``, runs the task inside the server,
without the isolation a kill needs), so this module adds one:

- a *zygote*: ``python -m strokelabel.warm_start``, started from a fresh interpreter (never forked from the
  server, which has threads and has run torch ops: forking it is unsafe with OpenMP), imports monailabel,
  torch, MONAI and every module of the app once, freezes its objects for the garbage collector, and then
  waits, single-threaded, for requests on a Unix socket;
- per request it forks one child that takes the request's argv, environment and working directory, with
  stdout and stderr on the pipe the server passed it, and runs ``monailabel.interfaces.utils.app`` as
  ``python -m`` would; the zygote reaps it and sends its exit code back;
- in the server, :class:`WarmProcess` stands in for the ``subprocess.Popen`` that ``_task_func`` uses
  (``poll``, ``returncode``, ``stdout``, ``kill``, ``pid``: the real pid, so psutil finds and kills the
  child and its children as before), and :func:`install` puts it in place of ``subprocess`` in that one
  module. MONAI Label gets that object at once (the run reads RUNNING and can be stopped while the zygote
  is still importing). If the zygote cannot start, dies, or refuses a request, the run starts cold exactly
  as before, with a log line saying so: a run never fails because of this optimisation.

Isolation as before: a fresh child process per run (its own memory, its own torch thread pool, which the
zygote never starts: before every fork it checks that it runs one Python thread and no native thread beyond
those its imports started, which stop and restart around a fork), tied to the server through the
zygote (``PR_SET_PDEATHSIG`` on the zygote and on each child, and the zygote kills its children and exits
when the server's end of the socket closes). The app's ``lib`` package is imported afresh in every child
(MONAI Label unloads it before loading ``main.py``), so only the third-party stack and ``strokelabel`` are
shared; restart the server after changing ``strokelabel`` code, as for the server itself.

``STROKELABEL_WARM_START``: ``lazy`` (default: the zygote starts with the first background run, which waits for
its imports instead of doing its own, so a server that never trains or scores pays nothing and one that does pays
the imports once), ``eager`` (it starts, at the background priority, as the server starts, so that the first run
finds it ready: costs the imports in every server, also those that never run one) or ``0`` (off: every run cold,
as MONAI Label starts it).
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import importlib
import io
import json
import logging
import os
import pkgutil
import runpy
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import types
from pathlib import Path

from strokelabel import lifeline
from strokelabel.lifeline import MONAILABEL_CHILD_MODULE as CHILD_MODULE
from strokelabel.lifeline import ZYGOTE_MODULE

logger = logging.getLogger(__name__)

MODE_ENV = "STROKELABEL_WARM_START"

# Keys in which a run's environment may differ from the server's (MONAI Label sets them per run in _task_func):
# monailabel's settings are read again from the run's environment in the child; no preloaded module reads the
# others at import. A run whose environment differs in any other key starts cold (a module may have read it).
# PYTEST_CURRENT_TEST: pytest names the running test in it, in a server started inside a test's process.
PER_RUN_ENV = frozenset({"MASTER_ADDR", "MASTER_PORT", "MONAI_LABEL_DATASTORE_AUTO_RELOAD", "CUDA_VISIBLE_DEVICES", "PYTEST_CURRENT_TEST"})
_PR_SET_PDEATHSIG = 1
_MAX_MESSAGE = 1 << 20
# A run waits this long at most for the zygote's imports before it starts cold (they take ~13 CPU-s, as a cold run's).
READY_WAIT_S = 900.0
_IMPORTS_SET_ENV: dict[str, str] = {}  # in the zygote: the variables its imports set (a cold run's set them too)


# ----------------------------------------------------------------------------------------------------------------
# The zygote (its own process)
# ----------------------------------------------------------------------------------------------------------------

def _die_with_parent(expected_parent: int) -> None:
    """Ask the kernel to kill this process when its parent dies; exit now if it already has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the zygote still exits when the server's socket closes
        pass
    if os.getppid() != expected_parent:
        os._exit(1)


def preload(app_dir: str | None) -> list[str]:
    """Import what every child imports: monailabel's app machinery (torch, MONAI, ignite, ...), the app's
    ``main.py`` and every module of its ``lib`` package (some import their dependencies inside functions).
    Returns the modules that failed to import (they are imported, or fail, in the child as before)."""
    importlib.import_module("monailabel.interfaces.app")
    importlib.import_module(CHILD_MODULE)
    failed = []
    if app_dir and (Path(app_dir) / "main.py").exists():
        from monailabel.utils.others.class_utils import module_from_file

        try:
            module_from_file("main", str(Path(app_dir) / "main.py"))
            sys.path.insert(0, app_dir)
            lib = importlib.import_module("lib") if (Path(app_dir) / "lib").is_dir() else None
            for info in pkgutil.walk_packages(lib.__path__, "lib.") if lib else []:
                try:
                    importlib.import_module(info.name)
                except Exception as e:  # noqa: BLE001 - an optional module (e.g. the federated job's) may not import here
                    failed.append(f"{info.name}: {e.__class__.__name__}")
        except Exception as e:  # noqa: BLE001 - the child loads main.py itself and reports its error there
            failed.append(f"main.py: {e!r}")
        finally:
            if app_dir in sys.path:
                sys.path.remove(app_dir)
    return failed


def _threads() -> int:
    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else threading.active_count()


def _send(sock: socket.socket, message: dict) -> None:
    try:
        sock.send(json.dumps(message).encode())
    except OSError:  # the server is gone: the loop ends at the socket's EOF
        pass


def _check_fork_safe(native_threads: int) -> None:
    """Raise unless forking now is as safe as a fresh interpreter's start. A Python thread could hold a lock the child
    needs; a native pool started since the imports (torch's OpenMP pool after a torch op) does not survive a fork. The
    native threads the imports start (OpenBLAS' pools of numpy and scipy, pyarrow's jemalloc) stop and restart
    around a fork through their own pthread_atfork handlers, as in every multiprocessing fork of a numpy program."""
    if threading.active_count() != 1:
        raise RuntimeError(f"the zygote runs {threading.active_count()} Python threads; it forks only from one")
    if _threads() > native_threads:  # OpenBLAS leaves its threads stopped after a fork until its next call: fewer is fine
        raise RuntimeError(f"the zygote has {_threads()} threads, {native_threads} after its imports: a pool started since")


def serve(sock: socket.socket, native_threads: int) -> None:
    """The zygote's loop: fork a child per request, report each child's pid and exit code, end with the server."""
    children: set[int] = set()
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd turns SIGCHLD into a readable byte
    try:
        while True:
            readable, _, _ = select.select([sock, wakeup_r], [], [], 5.0)
            if wakeup_r in readable:
                os.read(wakeup_r, 4096)
            while children:  # reap every child that ended, tell the server its exit code
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                children.discard(pid)
                _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})
            if sock not in readable:
                continue
            try:
                data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 4)
            except OSError:
                data, fds = b"", []
            if not data:  # the server closed its end: it is gone or stopping
                return
            try:
                request = json.loads(data)
                _check_fork_safe(native_threads)
                pid = _fork_child(request, fds, sock, wakeup_r, wakeup_w)
            except Exception as e:  # noqa: BLE001 - the server falls back to a cold start
                _send(sock, {"error": f"{e.__class__.__name__}: {e}"})
            else:
                children.add(pid)
                _send(sock, {"pid": pid})
            finally:
                for fd in fds:
                    os.close(fd)
    finally:
        for pid in children:  # the server is gone: its runs end with it
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _fork_child(request: dict, fds: list[int], sock: socket.socket, *zygote_fds: int) -> int:
    if len(fds) != 1:
        raise ValueError(f"a request carries one file descriptor (the child's stdout), got {len(fds)}")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid:
        return pid
    # The child: never returns into the zygote's loop.
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        for fd in zygote_fds:
            os.close(fd)
        _die_with_parent(int(request["zygote_pid"]))
        # What ps and psutil show, and what lifeline.background_children looks for: the command line of a cold run.
        import setproctitle

        setproctitle.setproctitle(" ".join([sys.executable, "-m", CHILD_MODULE, *request["args"]]))
        code = _run_child(request, fds[0])
    except BaseException:  # noqa: BLE001 - whatever happens, the child ends here with a code
        traceback.print_exc()
    finally:
        os._exit(code)


def _run_child(request: dict, output_fd: int) -> int:
    """In the forked child: become the run ``python -m monailabel.interfaces.utils.app <args>`` would be."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(devnull)
    os.chdir(request["cwd"])
    env = {**request["env"], **_IMPORTS_SET_ENV}
    # The run's own lifeline: this zygote is the parent whose death means the server's (strokelabel.lifeline).
    env[lifeline.SERVER_PID_ENV] = str(os.getppid())
    os.environ.clear()
    os.environ.update(env)
    _reread_monailabel_settings()
    line_buffered = bool(env.get("PYTHONUNBUFFERED"))
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=line_buffered or stream is sys.stderr)
    gc.unfreeze()
    gc.enable()
    import warnings

    # python -m in a fresh interpreter would not have the module imported yet; here the zygote has (harmless: the
    # run's __main__ is its own copy of the module, as it is in a cold child that imports the app).
    warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package.*", category=RuntimeWarning)
    sys.argv = [CHILD_MODULE, *request["args"]]
    code = 0
    try:
        runpy.run_module(CHILD_MODULE, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = _exit_code(e.code)
    except BaseException:  # noqa: BLE001 - as the interpreter does for an uncaught exception
        traceback.print_exc()
        code = 1
    # What the interpreter does at exit, without the last cyclic collection of every preloaded object
    # (strokelabel.lifeline.exit_without_final_collection): wait for non-daemon threads, run the exit handlers.
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


def _exit_code(value) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1


def _reread_monailabel_settings() -> None:
    """monailabel reads its settings from the environment at import; the run's environment is not the zygote's."""
    from monailabel.config import settings

    fresh = type(settings)()
    for name in type(settings).model_fields:
        setattr(settings, name, getattr(fresh, name))


def zygote_main() -> None:
    """``python -m strokelabel.warm_start <socket fd> <server pid> <niceness> <app dir or "">``."""
    fd, server_pid, niceness = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    app_dir = sys.argv[4] or None
    _die_with_parent(server_pid)
    if niceness:
        os.nice(niceness)  # the children inherit it: every background run lowers itself to it at once anyway
    gc.disable()  # no collection while importing: the objects are frozen below, shared with every child
    started, cpu0 = time.monotonic(), time.process_time()
    start_env = dict(os.environ)
    failed = preload(app_dir)
    # What the imports set (torch, MONAI, mlflow write a few variables): a cold run's imports set them too.
    _IMPORTS_SET_ENV.update({k: v for k, v in os.environ.items() if start_env.get(k) != v})
    gc.freeze()  # children do not touch the preloaded objects' GC headers (copy-on-write memory stays shared)
    sock = socket.socket(fileno=fd)
    native_threads = _threads()
    _send(sock, {"ready": os.getpid(), "env": start_env, "imports_set": sorted(_IMPORTS_SET_ENV), "threads": native_threads,
                 "preload_s": round(time.monotonic() - started, 2), "preload_cpu_s": round(time.process_time() - cpu0, 2),
                 "failed": failed})
    serve(sock, native_threads)
    sys.stdout.flush()
    os._exit(0)


# ----------------------------------------------------------------------------------------------------------------
# The server's side
# ----------------------------------------------------------------------------------------------------------------

class _Stdout(io.TextIOBase):
    """The run's output as MONAI Label reads it (text lines); remembers reaching the end, so that ``poll`` can wait
    for the exit code instead of ``_task_func`` spinning on empty reads."""

    def __init__(self, fd: int):
        self._file = open(fd, "r", errors="replace")
        self.at_end = threading.Event()

    def readline(self, size: int = -1) -> str:
        line = self._file.readline(size)
        if not line:
            self.at_end.set()
        return line

    def read(self, size: int = -1) -> str:
        text = self._file.read(size)
        if not text:
            self.at_end.set()
        return text

    def __iter__(self):
        return iter(self.readline, "")

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed


class WarmProcess:
    """The parts of ``subprocess.Popen`` that MONAI Label's task runner uses (``pid``, ``stdout``, ``poll``,
    ``returncode``, ``kill``), for a run that starts as soon as the zygote is ready: forked from it, or started cold
    if the zygote cannot take it. MONAI Label has the object at once, so the run reads RUNNING and a ``DELETE``
    stops it while the zygote still imports; until the run has its own pid, ``pid`` is a placeholder process with
    no children (``cat`` on a pipe of ours: it ends with the server), which ``stop_background_task`` may kill."""

    def __init__(self, zygote: "Zygote", cmd: list[str], env: dict, cwd: str):
        self.args = cmd
        self.stdin = self.stderr = None
        self.returncode: int | None = None
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._cancelled = self._starting = False
        self.started_warm: bool | None = None
        read_fd, self._write_fd = os.pipe()
        self.stdout = _Stdout(read_fd)
        self._placeholder = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self._placeholder.pid
        submitted = time.monotonic()
        # This thread waits for the run (a cold one's parent-death signal follows the thread that started it).
        threading.Thread(target=self._start, args=(zygote, env, cwd, submitted), name="strokelabel-warm-run", daemon=True).start()

    def _start(self, zygote: "Zygote", env: dict, cwd: str, submitted: float) -> None:
        cold = None
        try:
            if not zygote.ready.wait(READY_WAIT_S):
                logger.warning(f"warm start: the zygote is not ready after {READY_WAIT_S:.0f} s")
            with self._lock:
                if self._cancelled:
                    return
                self._starting = True  # from here a stop waits for the pid (the pipe is in use)
            try:
                pid = zygote.spawn(self.args[3:], env, cwd, self._write_fd, self._set_exit)
                self.started_warm = True
                logger.info(f"warm start: {' '.join(self.args[3:5])} run forked from the zygote as pid {pid} "
                            f"({time.monotonic() - submitted:.1f} s after it was asked for)")
            except Exception as e:  # noqa: BLE001 - never fail a run because of the optimisation
                logger.warning(f"warm start unavailable ({e}): starting the run cold")
                cold = subprocess.Popen(self.args, stdout=self._write_fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, cwd=cwd)
                pid, self.started_warm = cold.pid, False
            with self._lock:
                self.pid = pid
                if self._cancelled:  # stopped while it was being started
                    os.kill(pid, signal.SIGKILL)
        except Exception as e:  # noqa: BLE001 - the run cannot start at all: it ends in ERROR, as a failed Popen would
            logger.error(f"background run could not start: {e}")
            self._set_exit(1)
        finally:
            self._close_write_end()  # the run holds its own copy: the pipe ends when the run does
            self._end_placeholder()
        if cold is not None:
            self._set_exit(cold.wait())

    def _close_write_end(self) -> None:
        with self._lock:
            if self._write_fd is not None:
                os.close(self._write_fd)
                self._write_fd = None

    def _end_placeholder(self) -> None:
        self._placeholder.kill()
        self._placeholder.stdin.close()
        self._placeholder.wait()

    def _set_exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        if self.returncode is None and self.stdout.at_end.is_set():
            self._ended.wait(0.5)  # the output ended: the exit code follows within milliseconds
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        with self._lock:
            if self.returncode is not None:
                return
            if self.pid == self._placeholder.pid:  # not started yet: it never will be (or is killed as it starts)
                self._cancelled = True
                self._set_exit(-signal.SIGKILL)
                if not self._starting and self._write_fd is not None:
                    os.close(self._write_fd)  # the reader sees the end of the output now
                    self._write_fd = None
                return
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The server's handle on its zygote: starts it, asks it for children, hears their exit codes."""

    def __init__(self, app_dir: str | None, niceness: int = 0):
        self.app_dir = app_dir
        self.niceness = niceness
        self.env: dict | None = None
        self.ready = threading.Event()
        self.failure: str | None = None
        self.info: dict = {}
        self._on_exit: dict[int, object] = {}
        self._replies: list[dict] = []
        self._reply = threading.Condition()
        self._spawn_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.proc: subprocess.Popen | None = None
        # The thread that starts the zygote stays alive as long as it does: the kernel's parent-death signal follows
        # the thread that forked, not the process.
        threading.Thread(target=self._run, name="strokelabel-zygote", daemon=True).start()

    def _run(self) -> None:
        server_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            cmd = [sys.executable, "-m", ZYGOTE_MODULE, str(zygote_end.fileno()), str(os.getpid()), str(self.niceness), self.app_dir or ""]
            self.proc = subprocess.Popen(cmd, pass_fds=[zygote_end.fileno()], env=dict(os.environ), stdin=subprocess.DEVNULL)
            logger.info(f"warm start: zygote pid {self.proc.pid} starting (imports the stack once for the background runs)")
        except Exception as e:  # noqa: BLE001
            self._fail(f"could not start: {e}")
            return
        finally:
            zygote_end.close()
        self._sock = server_end
        try:
            while True:
                try:
                    data = server_end.recv(_MAX_MESSAGE)
                except OSError:
                    data = b""
                if not data:
                    break
                message = json.loads(data)
                if "ready" in message:
                    self.env, self.info = message.pop("env"), message
                    self.ready.set()
                    logger.info(f"warm start: zygote pid {self.proc.pid} ready (imports {message['preload_s']} s, {message['preload_cpu_s']} CPU-s; "
                                f"{message['threads']} native threads; modules it could not import: {message['failed'] or 'none'})")
                elif "exit" in message:
                    on_exit = self._on_exit.pop(message["exit"], None)
                    if on_exit is not None:
                        on_exit(message["code"])
                else:
                    with self._reply:
                        self._replies.append(message)
                        self._reply.notify_all()
        finally:
            self._fail(f"ended (exit code {self.proc.wait()})")

    def _fail(self, reason: str) -> None:
        self.failure = self.failure or reason
        self.ready.set()
        for on_exit in list(self._on_exit.values()):  # the zygote's death killed its runs (PR_SET_PDEATHSIG)
            on_exit(-signal.SIGKILL)
        self._on_exit.clear()
        with self._reply:
            self._reply.notify_all()

    @property
    def alive(self) -> bool:
        return self.failure is None

    def spawn(self, args: list[str], env: dict, cwd: str, output_fd: int, on_exit) -> int:
        """Fork a run of ``python -m monailabel.interfaces.utils.app *args`` with ``env`` in ``cwd``, its stdout and
        stderr on ``output_fd``; returns its pid, calls ``on_exit(code)`` when it ends. Raises RuntimeError (start the
        run cold instead) if the zygote is gone or cannot take this run."""
        if not self.ready.is_set():
            raise RuntimeError("the zygote is not ready")
        if self.failure:
            raise RuntimeError(f"the zygote {self.failure}")
        differing = sorted(k for k in set(env) | set(self.env) if env.get(k) != self.env.get(k) and k not in PER_RUN_ENV)
        if differing:
            raise RuntimeError(f"the run's environment differs from the zygote's in {differing}")
        with self._spawn_lock, self._reply:
            request = {"args": args, "env": env, "cwd": cwd, "zygote_pid": self.proc.pid}
            socket.send_fds(self._sock, [json.dumps(request).encode()], [output_fd])
            deadline = time.monotonic() + 30
            while not self._replies and self.alive and time.monotonic() < deadline:
                self._reply.wait(1.0)
            if not self._replies:
                raise RuntimeError(f"the zygote did not answer ({self.failure or 'no reply in 30 s'})")
            reply = self._replies.pop(0)
            if "error" in reply:
                raise RuntimeError(f"the zygote refused: {reply['error']}")
            self._on_exit[reply["pid"]] = on_exit
            return reply["pid"]

    def stop(self) -> None:
        if self.proc is not None and not self.ready.is_set():  # still importing: nothing to end cleanly
            self.proc.kill()
        if self._sock is not None:  # the zygote kills its children and exits (shutdown: also wakes our reader thread)
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()
_app_dir: str | None = None


def warm_start_mode() -> str:
    mode = os.environ.get(MODE_ENV, "lazy").strip().lower()
    return "off" if mode in ("0", "off", "false", "no") else mode if mode in ("lazy", "eager") else "lazy"


def zygote() -> Zygote:
    """The server's zygote, started on first use (or again after it died)."""
    global _zygote
    with _zygote_lock:
        if _zygote is None or (not _zygote.alive and _zygote.ready.is_set()):
            # Every run lowers its priority to the background's at once (lifeline.tie_to_server): start it there.
            niceness = lifeline.BACKGROUND_NICENESS if os.environ.get(lifeline.YIELD_ENV, "1") != "0" else 0
            niceness = max(0, niceness - os.nice(0))
            _zygote = Zygote(_app_dir, niceness)
        return _zygote


def popen(cmd, *args, **kwargs):
    """``subprocess.Popen`` for MONAI Label's task runner: a background run of the app starts from the zygote (the
    first one waits for its imports, which a cold start would spend too), anything else as before."""
    is_run = (isinstance(cmd, (list, tuple)) and len(cmd) > 3 and list(cmd[:3]) == [sys.executable, "-m", CHILD_MODULE]
              and not args and kwargs.get("stdout") == subprocess.PIPE and kwargs.get("stderr") == subprocess.STDOUT)
    if is_run and warm_start_mode() != "off":
        try:
            return WarmProcess(zygote(), list(cmd), dict(kwargs.get("env") or os.environ), kwargs.get("cwd") or os.getcwd())
        except Exception as e:  # noqa: BLE001 - never fail a run because of the optimisation
            logger.warning(f"warm start unavailable ({e}): starting the run cold")
    return subprocess.Popen(cmd, *args, **kwargs)


def install(app_dir: str) -> None:
    """In the server: MONAI Label's task runner starts its children through :func:`popen` (its module's
    ``subprocess`` is replaced by a copy whose ``Popen`` is :func:`popen`; nothing else in MONAI Label changes)."""
    global _app_dir
    from monailabel.utils.async_tasks import utils as task_runner

    _app_dir = app_dir
    if getattr(task_runner.subprocess, "__name__", "") != "subprocess":
        return  # installed already
    shim = types.ModuleType("strokelabel.warm_start.subprocess", "subprocess, with MONAI Label's runs started warm")
    shim.__dict__.update({k: v for k, v in vars(subprocess).items() if not k.startswith("__")})
    shim.Popen = popen
    task_runner.subprocess = shim
    mode = warm_start_mode()
    logger.info(f"warm start of background runs: {mode} ({MODE_ENV}=lazy|eager|0)")
    if mode == "eager":
        zygote()


if __name__ == "__main__":
    zygote_main()
