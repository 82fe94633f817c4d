"""MLflow and pyplot imported when used, not by every process that loads the app (``python -m strokelabel.server``).

``monai.handlers`` imports ``monai.handlers.mlflow_handler``, which imports ``mlflow`` (and pandas with it) at
once through ``optional_import``: about 3 CPU-s in the server and in every cold training or scoring child, while
MONAI Label only makes an ``MLFlowHandler`` when tracking is on (``MONAI_LABEL_TRACKING_ENABLED``, off for this
app's tests and optional for a site). MONAI Label has no switch for this import, so :func:`defer_mlflow_handler`
puts a stand-in for that one module in ``sys.modules`` before ``monai.handlers`` is first imported (the app's
``main.py`` calls it before it imports its trainers): its ``MLFlowHandler`` imports the real module and returns
the real handler when a run makes one, and any other name of the module imports the real module and is
served from it. ``monai.utils`` likewise imports ``matplotlib.pyplot`` only to learn that it can (about 1 CPU-s);
:func:`defer_pyplot` puts a lazily executed ``matplotlib.pyplot`` (:class:`importlib.util.LazyLoader`) in its
place, which runs when the summary picture first draws. Both must be in place before ``import monai``, which
imports every MONAI module (``monai/__init__.py``), so they are installed by the server's launcher
(:mod:`strokelabel.server`) and by the warm-start zygote (:mod:`strokelabel.warm_start`), each before its first
import of MONAI. Nothing on disk is changed; ``STROKELABEL_DEFER_IMPORTS=0`` imports both as before.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types

MODULE = "monai.handlers.mlflow_handler"
_lock = threading.RLock()


def wanted() -> bool:
    return os.environ.get("STROKELABEL_DEFER_IMPORTS", "1") != "0"


class _Deferred(types.ModuleType):
    """A module whose code runs on first use of one of its names. Written here because the standard library's
    :class:`importlib.util.LazyLoader` runs it on any attribute read, and ``inspect.getmodule`` (torch calls it
    while importing) reads ``__file__`` of every module in ``sys.modules``."""

    def __getattr__(self, name):  # only for names the stand-in does not hold
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(real_module(self.__name__), name)


def real_module(name: str) -> types.ModuleType:
    """The real module ``name``, imported now if only its stand-in was; the stand-in then holds its names too."""
    with _lock:
        current = sys.modules.get(name)
        if not isinstance(current, _Deferred):
            return current if current is not None else importlib.import_module(name)
        del sys.modules[name]
        try:
            real = importlib.import_module(name)
        except BaseException:
            sys.modules[name] = current
            raise
        # Whoever bound the stand-in (``import matplotlib.pyplot as plt``) reads the real module's names from now on.
        current.__dict__.update({k: v for k, v in real.__dict__.items() if not (k.startswith("__") and k.endswith("__"))})
        return real


def _defer(name: str, origin: str, **names) -> bool:
    if name in sys.modules:
        return isinstance(sys.modules[name], _Deferred)
    stand_in = _Deferred(name, f"{name}, imported on first use (strokelabel.deferred_imports)")
    stand_in.__file__ = origin
    stand_in.__dict__.update(names)
    sys.modules[name] = stand_in
    return True


class MLFlowHandler:
    """Stand-in for ``monai.handlers.MLFlowHandler``: constructing it constructs the real handler (mlflow imported then)."""

    def __new__(cls, *args, **kwargs):
        return real_module(MODULE).MLFlowHandler(*args, **kwargs)


def defer_mlflow_handler() -> bool:
    """The stand-in of ``monai.handlers.mlflow_handler`` in place, if ``monai.handlers`` is not imported yet; whether it is."""
    if not wanted() or ("monai.handlers" in sys.modules and MODULE not in sys.modules):
        return False
    spec = importlib.util.find_spec("monai")  # not monai.handlers: finding it would import it
    origin = os.path.join(os.path.dirname(spec.origin), "handlers", "mlflow_handler.py") if spec and spec.origin else ""
    if not os.path.isfile(origin):
        return False
    return _defer(MODULE, origin, MLFlowHandler=MLFlowHandler)


def defer_pyplot() -> bool:
    """A stand-in for ``matplotlib.pyplot`` in place, if it is not imported yet; whether it is."""
    if not wanted():
        return False
    if "matplotlib.pyplot" in sys.modules:
        return isinstance(sys.modules["matplotlib.pyplot"], _Deferred)
    spec = importlib.util.find_spec("matplotlib.pyplot")  # imports the matplotlib package itself (small), not pyplot
    if spec is None or not spec.origin:
        return False
    return _defer("matplotlib.pyplot", spec.origin)


def install() -> dict:
    """Both deferrals, before MONAI is first imported; what is in place."""
    return {"mlflow_handler": defer_mlflow_handler(), "pyplot": defer_pyplot()}
