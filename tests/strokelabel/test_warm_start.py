"""Background runs forked warm from a zygote (strokelabel/warm_start.py), driven through MONAI Label's own task
runner (``monailabel.utils.async_tasks.utils``): a run's output, exit code, stop and cold fallback as before.

The app here is a stand-in (a ``main.py`` whose ``train`` prints what the tests check), so that a run takes a
second; the stroke app's runs are exercised by the end-to-end tests. One zygote serves the module (its imports
cost ~13 CPU-s, as a cold run's do)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types

import psutil
import pytest

from strokelabel import lifeline, warm_start

FAKE_APP = '''
import json, os, subprocess, sys, time

from monailabel.interfaces.app import MONAILabelApp


class FakeApp(MONAILabelApp):
    """A training run that reports what the tests check, then prints progress lines."""

    def __init__(self, app_dir, studies, conf):
        self.app_dir, self.studies, self.conf = app_dir, studies, conf

    def train(self, request):
        import torch

        from strokelabel import lifeline

        a = torch.rand(600, 600)
        for _ in range(3):
            a = (a @ a).clamp(0, 1)  # a parallel op: hangs in a child forked after the OpenMP pool started
        report = {"pid": os.getpid(), "ppid": os.getppid(), "torch_threads": torch.get_num_threads(),
                  "threads_after_op": len(os.listdir("/proc/self/task")), "cwd": os.getcwd(), "argv0": sys.argv[0],
                  "mark": os.environ.get("WARM_TEST_MARK"), "master_port": os.environ.get("MASTER_PORT"),
                  "auto_reload": os.environ.get("MONAI_LABEL_DATASTORE_AUTO_RELOAD"),
                  "main": sys.modules["__main__"].__spec__.name}
        print("REPORT " + json.dumps(report), flush=True)
        if request.get("grandchild"):
            sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            print(f"GRANDCHILD {sleeper.pid}", flush=True)
        for k in range(int(request.get("epochs", 3))):
            print(f"Epoch: {k + 1}/{request.get('epochs', 3)}", flush=True)
            time.sleep(float(request.get("sleep_s", 0.05)))
        if request.get("fail"):
            raise RuntimeError("asked to fail")
        return {"trained": True}
'''


@pytest.fixture(scope="module")
def fake_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm_app")
    (root / "app").mkdir()
    (root / "app" / "main.py").write_text(FAKE_APP)
    (root / "studies").mkdir()
    saved = dict(os.environ)
    os.environ.update({"MONAI_LABEL_APP_DIR": str(root / "app"), "MONAI_LABEL_STUDIES": str(root / "studies"),
                       "MONAI_LABEL_APP_CONF": "{}", "WARM_TEST_MARK": "server", "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    os.environ.pop(lifeline.SERVER_PID_ENV, None)
    yield root / "app"
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def zygote(fake_app):
    from monailabel.utils.async_tasks import utils as task_runner

    warm_start.install(str(fake_app))
    z = warm_start.zygote()
    assert z.ready.wait(600) and z.alive, z.failure
    yield z
    task_runner.subprocess = subprocess
    warm_start._zygote = None
    z.stop()


def run_task(request: dict, method: str = "train") -> dict:
    """A run through MONAI Label's task runner, waited for (its debug mode runs it in this thread)."""
    from monailabel.utils.async_tasks.utils import run_background_task

    return run_background_task(request, method, debug=True)


def report_of(task: dict) -> dict:
    return json.loads(next(line for line in task["details"] if line.startswith("REPORT "))[len("REPORT "):])


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition, timeout_s: float = 60.0):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_a_run_forked_warm_trains_reports_its_progress_and_is_the_run_a_cold_start_would_be(zygote, fake_app, caplog):
    with caplog.at_level(logging.INFO):
        task = run_task({"epochs": 3})
    assert task["status"] == "DONE", list(task["details"])
    assert "forked from the zygote" in caplog.text
    report = report_of(task)
    assert report["ppid"] == zygote.proc.pid  # forked from the zygote, not started by us
    assert [line for line in task["details"] if line.startswith("Epoch")] == ["Epoch: 1/3", "Epoch: 2/3", "Epoch: 3/3"]
    assert any('Result: {"trained": true}' in line for line in task["details"])  # the app's result line, as a cold run logs it
    assert report["main"] == lifeline.MONAILABEL_CHILD_MODULE and report["auto_reload"] == "false"  # the run's own environment
    assert report["master_port"] and report["mark"] == "server" and report["cwd"] == os.getcwd()
    # torch's thread pool started in the child, not in the zygote: a parallel op ran on the configured threads.
    assert report["threads_after_op"] >= report["torch_threads"] >= 1


def test_a_failing_run_ends_in_error_with_its_traceback(zygote):
    task = run_task({"epochs": 1, "fail": True})
    assert task["status"] == "ERROR"
    assert any("RuntimeError: asked to fail" in line for line in task["details"])


def test_stopping_a_warm_run_kills_it_and_its_children_as_monailabel_does_a_cold_one(zygote):
    from monailabel.utils.async_tasks.utils import processes, run_background_task, stop_background_task

    task = run_background_task({"epochs": 10_000, "sleep_s": 0.5, "grandchild": True}, "train")
    assert wait_until(lambda: any(line.startswith("GRANDCHILD") for line in task.get("details") or []), 120), task
    run_pid = report_of(task)["pid"]
    grandchild = int(next(line for line in task["details"] if line.startswith("GRANDCHILD")).split()[1])
    # MONAI Label's runner holds the real pid; our process tree shows the run as a background child of ours.
    assert next(iter(processes("train").values())).pid == run_pid
    assert " -m train " in lifeline.background_children()[run_pid]
    stopped = stop_background_task("train")
    assert stopped["status"] == "STOPPED"
    assert wait_until(lambda: gone(run_pid) and gone(grandchild), 30)
    assert wait_until(lambda: not processes("train"), 30)
    assert zygote.alive  # the zygote serves the next run


def test_a_run_whose_environment_differs_from_the_zygotes_starts_cold(zygote, caplog):
    env = {**os.environ, "WARM_TEST_MARK": "changed since the zygote started"}
    read_fd, write_fd = os.pipe()
    try:
        with pytest.raises(RuntimeError, match="WARM_TEST_MARK"):
            zygote.spawn(["-m", "train", "-r", "{}"], env, os.getcwd(), write_fd, lambda code: None)
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_run_stopped_while_the_zygote_still_imports_never_starts(monkeypatch):
    """MONAI Label has the run's process object at once (status RUNNING); until the zygote is ready its pid is a
    placeholder without children, so MONAI Label's stop kills nothing else, and the run is cancelled."""
    from monailabel.utils.async_tasks.utils import processes, run_background_task, stop_background_task

    importing = types.SimpleNamespace(ready=threading.Event())  # a zygote that is still importing
    monkeypatch.setattr(warm_start, "zygote", lambda: importing)
    task = run_background_task({"epochs": 1}, "train")
    assert wait_until(lambda: task["status"] == "RUNNING" and processes("train"), 30), task
    placeholder = next(iter(processes("train").values())).pid
    assert psutil.Process(placeholder).children() == []
    assert stop_background_task("train")["status"] == "STOPPED"
    assert wait_until(lambda: task.get("end_ts") and not processes("train"), 30)
    importing.ready.set()  # the imports end: nothing is started for the stopped run
    assert wait_until(lambda: gone(placeholder), 30)
    assert task["status"] == "STOPPED" and not any(line.startswith("REPORT") for line in task["details"])


def test_other_commands_go_to_subprocess_unchanged(zygote):
    process = warm_start.popen([sys.executable, "-c", "print('plain')"], stdout=subprocess.PIPE, text=True)
    assert isinstance(process, subprocess.Popen) and process.communicate()[0] == "plain\n"


def test_a_zygote_that_dies_is_started_again_and_one_that_cannot_start_means_a_cold_run(zygote, monkeypatch, caplog):
    warm = report_of(run_task({"epochs": 1}))
    os.kill(zygote.proc.pid, signal.SIGKILL)
    assert wait_until(lambda: not zygote.alive, 30)
    monkeypatch.setattr(warm_start, "ZYGOTE_MODULE", "strokelabel.no_such_module")  # the next zygote cannot start
    with caplog.at_level(logging.INFO):
        task = run_task({"epochs": 2})
    assert task["status"] == "DONE", list(task["details"])
    assert "warm start unavailable" in caplog.text and "starting the run cold" in caplog.text
    cold = report_of(task)
    assert cold["ppid"] == os.getpid()  # a cold child of ours, as MONAI Label starts it
    # The warm run was the run a cold start is: the same module as __main__, environment, directory and torch threads.
    for key in ("torch_threads", "cwd", "argv0", "mark", "auto_reload", "main"):
        assert warm[key] == cold[key], key
    monkeypatch.undo()
    replacement = warm_start.zygote()
    assert replacement is not zygote and replacement.failure is None  # started again for the next run
    replacement.stop()


def test_forking_is_refused_while_another_python_thread_runs_or_a_native_pool_started():
    check = textwrap.dedent("""
        import threading
        from strokelabel import warm_start
        warm_start._check_fork_safe(native_threads=10_000)  # one Python thread: safe
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        try:
            warm_start._check_fork_safe(native_threads=10_000)
        except RuntimeError as e:
            print("refused:", e)
        stop.set()
        thread.join()
        try:
            warm_start._check_fork_safe(native_threads=0)
        except RuntimeError as e:
            print("refused:", e)
    """)
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    refusals = out.stdout.splitlines()
    assert len(refusals) == 2 and "2 Python threads" in refusals[0] and "a pool started since" in refusals[1], refusals


def test_the_zygote_and_its_runs_die_with_the_server(fake_app, tmp_path):
    """kill -9 of the server: the kernel kills the zygote (its parent-death signal), which kills the run."""
    server = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import json, os, sys, time
        from strokelabel import warm_start
        z = warm_start.Zygote({str(fake_app)!r})
        assert z.ready.wait(600) and z.alive, z.failure
        read_fd, write_fd = os.pipe()
        run = z.spawn(["-m", "train", "-r", json.dumps({{"epochs": 10000, "sleep_s": 0.5}})], dict(os.environ), os.getcwd(),
                      write_fd, lambda code: None)
        print(json.dumps({{"zygote": z.proc.pid, "run": run}}), flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(server.stdout.readline())
        assert not gone(pids["zygote"]) and not gone(pids["run"])
        server.kill()
        server.wait(30)
        assert wait_until(lambda: gone(pids["zygote"]) and gone(pids["run"]), 30), pids
    finally:
        server.kill()
