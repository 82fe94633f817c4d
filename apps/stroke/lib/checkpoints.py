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


# ---- model cards -----------------------------------------------------------------------------------
# The JSON beside each checkpoint (``<name>.json`` beside ``<name>.pt``) says what the model learned
# from. ``trained_on_real`` lists the real cases its weights ever saw (directly or through the model
# it was fine-tuned from) as ``<data set>/sub-<subject>``; ``[]`` for a phantom-only model.


def card_path(checkpoint: str) -> str:
    return os.path.splitext(checkpoint)[0] + ".json"


def read_card(checkpoint: str) -> dict | None:
    """The model card beside ``checkpoint``, or None when there is none (or it is not JSON)."""
    import json

    try:
        with open(card_path(checkpoint)) as f:
            card = json.load(f)
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def real_cases_seen(checkpoint: str) -> list[str] | None:
    """The real cases the model at ``checkpoint`` learned from, or None when that is unknown (no card).

    A card written before the ``trained_on_real`` convention belongs to a phantom-only model: []."""
    card = read_card(checkpoint)
    if card is None:
        return None
    return [str(case) for case in card.get("trained_on_real", [])]


def saw_subject(cases: list[str], subject: str) -> bool:
    """Is ``sub-<subject>`` among ``cases`` (``<data set>/sub-<subject>``, or the subject alone)?

    Matched on the subject, whatever the data set folder is called: a copy of the tree under
    another name is the same patient."""
    wanted = subject if subject.startswith("sub-") else f"sub-{subject}"
    return any(case.rstrip("/").split("/")[-1] == wanted for case in cases)
