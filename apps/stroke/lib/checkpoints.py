"""Where a model's checkpoints live, and which one is in use.

Every model has ``model/shipped/<name>.pt`` (the starting model trained on phantoms, if one
ships) and ``model/<name>.pt`` (written only by a training run that did not get worse). The
last existing path of that list is the one in use, as MONAI Label's BasicInferTask loads it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from strokelabel.errors import StrokeLabelError

if TYPE_CHECKING:
    import torch


class UnusableModel(StrokeLabelError):
    """The installed checkpoint does not fit the network this version of the app builds (an older
    layout, a truncated file). ``auto`` then serves the baseline and says why."""

    @classmethod
    def of(cls, path: str, error: Exception) -> "UnusableModel":
        """The error for checkpoint ``path``, naming the file and the first lines of what failed."""
        lines = str(error).strip().splitlines()
        what = lines[0] if lines else type(error).__name__
        if len(lines) > 1:
            what += "; " + lines[1].strip()
        return cls(f"the installed model {os.path.basename(path or '')} does not fit this version of the app ({what}); retrain it or remove it")


def model_paths(model_dir: str, name: str) -> list[str]:
    """``[shipped starting model, model in use]`` of the model ``name``."""
    return [os.path.join(model_dir, "shipped", f"{name}.pt"), os.path.join(model_dir, f"{name}.pt")]


def checkpoint_in_use(paths) -> str | None:
    """The last existing path of ``paths`` (see ``model_paths``), or None when none exists."""
    found = [p for p in paths if p and os.path.exists(p)]
    return found[-1] if found else None


def load_weights(network: torch.nn.Module, path: str, device="cpu") -> torch.nn.Module:
    """``network`` with the weights of checkpoint ``path`` (a state dict, possibly under ``model``,
    fp16 or fp32), or :class:`UnusableModel` naming the file and what does not fit."""
    import torch  # here: which model is in use is asked by processes that never load one (lib/model_versions.py)

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        state = state.get("model", state) if isinstance(state, dict) else state
        network.load_state_dict({k: v.float() if torch.is_floating_point(v) else v for k, v in state.items()})
    except (RuntimeError, EOFError, KeyError, AttributeError, OSError) as e:
        raise UnusableModel.of(path, e) from e
    return network.to(device)
