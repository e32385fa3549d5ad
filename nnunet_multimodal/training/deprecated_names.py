"""Former trainer names, kept loadable.

A trained model records its trainer's class name (``trainer_name`` in the checkpoint, and the results folder's
name); nnU-Net's predictor, ``--c`` and ``-val`` find the class by that name. A renamed trainer therefore keeps its
old name as a subclass of the new one, which warns when instantiated (training or resuming under the old name)."""

from __future__ import annotations

import warnings

import torch


def deprecated_alias(old_name: str, new_class: type, reason: str = "") -> type:
    """A subclass of ``new_class`` named ``old_name`` (in ``new_class``'s module, so assign it to ``old_name``
    there) whose constructor emits a FutureWarning naming the new name."""
    why = f" ({reason})" if reason else ""
    message = f"{old_name} is renamed {new_class.__name__}{why}; the old name will be removed"

    # nnU-Net records the constructor's arguments by the names in its signature: keep them explicit
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        warnings.warn(message, FutureWarning, stacklevel=2)
        super(alias, self).__init__(plans, configuration, fold, dataset_json, device)

    __init__.__qualname__ = f"{old_name}.__init__"
    alias = type(old_name, (new_class,), {
        "__init__": __init__,
        "__module__": new_class.__module__,
        "__qualname__": old_name,
        "__doc__": f"Deprecated name of {new_class.__name__}{why}; kept so that models trained under it still "
                   f"predict and resume.",
        "renamed_to": new_class.__name__,
    })
    return alias
