"""A deferred module runs when one of its names is used, not when it is imported or inspected; the server's
launcher keeps MLflow and pyplot out of MONAI's import, and a run with tracking on still gets the real handler."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from strokelabel import deferred_imports

REPO = Path(__file__).resolve().parents[2]


def test_a_deferred_module_runs_on_first_use_of_a_name_and_whoever_bound_it_reads_the_real_names(tmp_path, monkeypatch):
    runs = tmp_path / "runs.txt"
    (tmp_path / "heavy_for_test.py").write_text(f"open({str(runs)!r}, 'a').write('x')\nVALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "heavy_for_test", raising=False)
    try:
        assert deferred_imports._defer("heavy_for_test", str(tmp_path / "heavy_for_test.py"))
        import heavy_for_test as bound

        inspect.getmodule(inspect.currentframe())  # reads __file__ of every module, as torch's imports do
        assert not runs.exists() and bound.__file__.endswith("heavy_for_test.py")
        assert bound.VALUE == 42 and runs.read_text() == "x"  # ran on the first name asked for
        assert sys.modules["heavy_for_test"] is not bound and sys.modules["heavy_for_test"].VALUE == 42
        assert bound.VALUE == 42 and runs.read_text() == "x"  # and only once
    finally:
        sys.modules.pop("heavy_for_test", None)


def test_the_launcher_keeps_mlflow_and_pyplot_out_of_monai_and_tracking_still_gets_the_real_handler(tmp_path):
    # A fresh interpreter, as the server's: the deferral must come before MONAI's first import.
    script = textwrap.dedent(f"""
        import sys
        from strokelabel.deferred_imports import install
        assert install() == {{"mlflow_handler": True, "pyplot": True}}
        import monai, monai.handlers
        import matplotlib.pyplot as plt
        assert "mlflow" not in sys.modules and "matplotlib.figure" not in sys.modules, "imported at start"
        handler = monai.handlers.MLFlowHandler(tracking_uri={'sqlite:///' + str(tmp_path / 'mlruns.db')!r})
        assert type(handler).__module__ == "monai.handlers.mlflow_handler" and type(handler).__name__ == "MLFlowHandler"
        assert "mlflow" in sys.modules and hasattr(handler, "attach")
        figure = plt.figure()
        assert "matplotlib.figure" in sys.modules and figure is not None
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
