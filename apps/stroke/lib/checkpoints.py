"""Where a model's checkpoints live, and which one is in use.

Every model has ``model/shipped/<name>.pt`` (the starting model trained on phantoms, if one
ships) and ``model/<name>.pt`` (written only by a training run that did not get worse). The
last existing path of that list is the one in use, as MONAI Label's BasicInferTask loads it.
"""

from __future__ import annotations

import os


def model_paths(model_dir: str, name: str) -> list[str]:
    """``[shipped starting model, model in use]`` of the model ``name``."""
    return [os.path.join(model_dir, "shipped", f"{name}.pt"), os.path.join(model_dir, f"{name}.pt")]


def checkpoint_in_use(paths) -> str | None:
    """The last existing path of ``paths`` (see ``model_paths``), or None when none exists."""
    found = [p for p in paths if p and os.path.exists(p)]
    return found[-1] if found else None
