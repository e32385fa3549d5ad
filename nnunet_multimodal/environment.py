"""Where nnU-Net finds our trainers, and which nnU-Net folders are set."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def trainers_folder() -> Path:
    return Path(str(files("nnunet_multimodal.trainers")))


def ext_trainer_value(current: str | None = None) -> str:
    """nnUNet_extTrainer with our trainers folder appended (never replacing what the user set)."""
    ours = str(trainers_folder())
    existing = [p for p in (current or "").split(os.pathsep) if p]
    if ours in existing:
        return os.pathsep.join(existing)
    return os.pathsep.join(existing + [ours])


def env_with_plugin(base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env["nnUNet_extTrainer"] = ext_trainer_value(env.get("nnUNet_extTrainer"))
    return env


def env_report(environ: dict | None = None) -> str:
    environ = os.environ if environ is None else environ
    lines = ["# nnU-Net finds the nnunet-multimodal trainers through this (add it to your shell profile):",
             f"export nnUNet_extTrainer=\"{ext_trainer_value(environ.get('nnUNet_extTrainer'))}\""]
    unset = [name for name in NNUNET_FOLDERS if not environ.get(name)]
    if unset:
        lines.append("# These nnU-Net folders are not set; choose where your data should live, e.g.:")
        lines += [f"export {name}=\"$HOME/nnUNet_data/{name}\"" for name in unset]
    else:
        lines.append("# nnUNet_raw, nnUNet_preprocessed and nnUNet_results are set.")
    return "\n".join(lines)


def datasets_with_id(dataset_id: int, folders) -> list[Path]:
    """The ``Dataset{id:03d}_*`` folders in any of ``folders`` (nnU-Net resolves an id through its raw,
    preprocessed and results folders, so a new dataset must find its id free in all of them)."""
    return [found for folder in map(Path, folders) if folder.is_dir()
            for found in sorted(folder.glob(f"Dataset{dataset_id:03d}_*"))]


DATASET_FOLDER_FIXES = {
    "nnUNet_raw": "convert or copy the dataset there (nnunet-mm convert ...)",
    "nnUNet_preprocessed": "run nnUNetv2_plan_and_preprocess -d ID first",
    "nnUNet_results": "train it first (nnUNetv2_train ...)",
}


def dataset_folder(dataset: str, variable: str) -> Path:
    """The folder of dataset ``dataset`` (-d: name or id) under nnU-Net's folder ``variable``. An unknown id is a
    ValueError naming the id, the folder looked in and the fix: nnU-Net's own error lists its environment
    variables but names neither the folder missing the dataset nor what to do."""
    from nnunetv2 import paths
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    root = getattr(paths, variable)
    if not root.is_set():
        raise ValueError(f"{variable} is not set: run `nnunet-mm env` to see how to set it")
    try:
        folder = Path(root.get()) / maybe_convert_to_dataset_name(dataset)
    except RuntimeError:  # no DatasetXXX_* folder of this id in any of nnU-Net's three folders
        folder = None
    if folder is None or not folder.is_dir():
        expected = f"Dataset{int(dataset):03d}_*" if str(dataset).isdigit() else dataset
        raise ValueError(f"dataset {dataset} is not in {variable} ({root.get()}: no folder {expected}); check -d, "
                         f"or {DATASET_FOLDER_FIXES[variable]}, or set {variable} to the folder that holds it")
    return folder
