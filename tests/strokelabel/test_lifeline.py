"""Background work tied to its server: only MONAI Label's background children are tied (the kill test is e2e)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from strokelabel import lifeline


def test_a_process_that_is_not_a_background_child_is_left_alone():
    assert not lifeline.is_background_child()
    assert lifeline.tie_to_server() is None and lifeline.server_alive()


def test_a_child_whose_parent_dies_is_killed_with_it():
    # A parent that ties a grandchild as MONAI Label's child would be tied, then exits: the grandchild must die.
    script = (
        "import subprocess, sys, time\n"
        "from strokelabel import lifeline\n"
        "lifeline.mark_as_server()\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import sys, time, runpy; from strokelabel import lifeline; lifeline.is_background_child = lambda: True; "
        "lifeline.tie_to_server(); print(\"tied\", flush=True); time.sleep(60)'], stdout=subprocess.PIPE, text=True)\n"
        "assert child.stdout.readline().strip() == 'tied'\n"
        "print(child.pid, flush=True)\n"
    )
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert parent.returncode == 0, parent.stderr
    pid = int(parent.stdout.strip())
    for _ in range(50):
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return  # gone
        if state == "Z":
            return
        time.sleep(0.1)
    raise AssertionError(f"the tied child {pid} outlived its parent")


def test_a_child_that_starts_after_its_server_died_stops_instead_of_running_on(tmp_path):
    # MONAI Label's child imports the app for ~15 s before it ties itself; a server killed in that window leaves it
    # re-parented, so its parent pid is not its server's: it must stop, not score or train (and publish) unseen.
    server_that_died = subprocess.Popen([sys.executable, "-c", "pass"])
    server_that_died.wait()
    env = {**os.environ, lifeline.SERVER_PID_ENV: str(server_that_died.pid)}
    child = subprocess.run(
        [sys.executable, "-c", "from strokelabel import lifeline; lifeline.is_background_child = lambda: True; "
         "lifeline.tie_to_server(); print('tied', flush=True)"],
        capture_output=True, text=True, timeout=60, env=env)
    assert child.returncode == 1 and "tied" not in child.stdout, (child.returncode, child.stdout, child.stderr)
    assert "the server that started this process is gone" in child.stderr


def test_a_clinicians_call_lowers_the_priority_of_the_servers_background_children(tmp_path, monkeypatch):
    # A stand-in for MONAI Label's child: its command line names the child module; it sleeps.
    monkeypatch.setenv(lifeline.BUSY_ENV, str(tmp_path / "busy"))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", lifeline.MONAILABEL_CHILD_MODULE])
    try:
        time.sleep(0.3)

        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == ours
        with lifeline.foreground_call():
            assert os.getpriority(os.PRIO_PROCESS, child.pid) == max(ours, lifeline.BACKGROUND_NICENESS)
    finally:
        child.kill()


def test_a_process_that_skips_the_final_collection_leaves_its_cyclic_garbage_to_the_kernel():
    # The cycle's finaliser runs at exit only if the interpreter's last cyclic collection visits it.
    script = ("import gc, sys\n"
              "from strokelabel import lifeline\n"
              "class Node:\n"
              "    def __del__(self): print('collected', flush=True)\n"
              "def make_cycle():\n"
              "    a, b = Node(), Node(); a.other, b.other = b, a\n"
              "gc.disable(); make_cycle()\n"
              "if sys.argv[1] == 'skip': lifeline.exit_without_final_collection()\n")
    normal = subprocess.run([sys.executable, "-c", script, "normal"], capture_output=True, text=True, timeout=60)
    skipped = subprocess.run([sys.executable, "-c", script, "skip"], capture_output=True, text=True, timeout=60)
    assert normal.returncode == skipped.returncode == 0, (normal.stderr, skipped.stderr)
    assert "collected" in normal.stdout, "the control must see the final collection, or the test proves nothing"
    assert "collected" not in skipped.stdout
