"""Start the MONAI Label server (``python -m strokelabel.server start_server --app apps/stroke ...``, the arguments of
``monailabel start_server``) with what it never needs at start imported only when used (:mod:`strokelabel.deferred_imports`:
MLflow's handler and pyplot, about 2 CPU-s of every server start). MONAI Label imports MONAI before it loads the
app, so the app's own code comes too late for this: the launcher is the one place it can be done."""

import runpy

from strokelabel.deferred_imports import install

if __name__ == "__main__":
    install()
    runpy.run_module("monailabel.main", run_name="__main__", alter_sys=True)
