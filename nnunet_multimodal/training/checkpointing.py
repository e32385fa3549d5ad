"""Checkpoint files: atomic writes, readable errors, and the plugin's compatibility stamp."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from nnunet_multimodal import __version__
from nnunet_multimodal.atomic_files import atomic_path
from nnunet_multimodal.user_errors import UserError

# Bumped whenever a checkpoint written by this plugin can no longer be restored by an older reader.
CHECKPOINT_FORMAT = 1
PLUGIN_KEY = "nnunet_multimodal"


class CheckpointError(UserError):
    """A checkpoint that cannot be used, with the file and the fix in the message."""


def atomic_torch_save(obj, filename: str | os.PathLike) -> None:
    """torch.save that never leaves a truncated ``filename`` behind; the previous file stays intact until the
    new one is complete and on disk."""
    with atomic_path(filename, durable=True) as temporary:
        torch.save(obj, temporary)


def plugin_stamp(knobs: dict) -> dict:
    return {"format": CHECKPOINT_FORMAT, "version": __version__, "knobs": knobs}


def read_checkpoint(filename: str | os.PathLike, map_location="cpu") -> dict:
    filename = Path(filename)
    if not filename.is_file():
        raise CheckpointError(
            f"Checkpoint {filename} does not exist. Train first (nnUNetv2_train ...), or pass the folder that "
            f"holds it (with --c nnU-Net resumes from checkpoint_latest.pth, falling back to checkpoint_final/best)."
        )
    try:
        checkpoint = torch.load(filename, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises several types for truncated zip archives and bad pickles
        raise CheckpointError(
            f"Checkpoint {filename} is unreadable ({type(e).__name__}: {e}). The file is truncated or corrupt: "
            f"restore it from a copy, resume from another checkpoint of the same fold (checkpoint_best.pth or "
            f"checkpoint_final.pth), or retrain the fold."
        ) from e
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise CheckpointError(f"{filename} is not an nnU-Net checkpoint (no 'network_weights' entry).")
    return checkpoint


# What the network's weights and the data's meaning depend on: resuming across a change of these would load
# weights into another architecture or train on channels that mean something else.
WEIGHT_SHAPING_KNOBS = ("modalities", "architecture")


def unrecorded_knobs(written: dict, knobs_before_recorded: dict) -> dict:
    """The architecture knobs a checkpoint predates (its record has no value for them), at the values networks were
    built with before the knobs existed; none for a record without architecture knobs."""
    if "architecture" not in written:
        return {}
    return {name: value for name, value in knobs_before_recorded.items() if name not in written["architecture"]}


def changed_knobs(written: dict, current: dict) -> dict[str, tuple]:
    """{knob: (in the checkpoint, now)} for every knob that differs, the plugin version aside."""
    return {name: (written.get(name), current.get(name)) for name in sorted(set(written) | set(current))
            if name != "plugin_version" and written.get(name) != current.get(name)}


def check_plugin_checkpoint(checkpoint: dict, trainer_name: str, source: str) -> None:
    """Refuse checkpoints this trainer cannot restore: written without the plugin, by another trainer, or
    in a checkpoint format this plugin version does not read."""
    stamp = checkpoint.get(PLUGIN_KEY)
    if stamp is None:
        raise CheckpointError(
            f"Checkpoint {source} was not written by nnunet-multimodal (trainer "
            f"'{checkpoint.get('trainer_name', 'unknown')}'), so {trainer_name} cannot resume from it. To start from "
            f"its weights instead, train with -pretrained_weights {source} (the networks must match: a method "
            f"network does not take a plain nnU-Net network's weights; nnUNetTrainerMMPlain does)."
        )
    if checkpoint.get("trainer_name") != trainer_name:
        raise CheckpointError(
            f"Checkpoint {source} was written by trainer '{checkpoint.get('trainer_name')}', not '{trainer_name}'. "
            f"Use -tr {checkpoint.get('trainer_name')}, or point at this trainer's own results folder."
        )
    if stamp.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"Checkpoint {source} was written by nnunet-multimodal {stamp.get('version')} (checkpoint format "
            f"{stamp.get('format')}); the installed version {__version__} reads format {CHECKPOINT_FORMAT}. "
            f"Install nnunet-multimodal=={stamp.get('version')} to use it."
        )
