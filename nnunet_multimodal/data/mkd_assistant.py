"""MKD's assistant dataset: preprocessing it with the target's plans (``nnunet-mm mkd-prepare``) and finding it
again at training time.

The assistant (e.g. MRI) is resampled and cropped like the target (e.g. CT): same spacing, patch and network.
Its intensities keep their own normalisation (schemes and foreground statistics from the assistant's own
plans), because CT normalisation of MRI intensities, which ``nnUNetv2_move_plans_between_datasets`` alone
would give, is meaningless. The target gets a new plans file with a top-level ``mkd_assistant`` entry; the
trainer reads only that entry, so each assistant has its own plans name and results folder.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_multimodal.atomic_files import write_text_atomic
from nnunet_multimodal.training.knobs import PLANS_KEY

# the mkd.ensemble that mkd-prepare writes into new plans: the target segmentor alone, measured better than both
# ensembles on the phantom pair (docs/methods/mkd.md, "Where we chose"); plans written before keep their value
PREPARED_INFERENCE = "target_segmentor"

ENTRY_KEY = "mkd_assistant"
ASSISTANT_MARK = "mkd_assistant_of"  # in the assistant-side plans: written by mkd-prepare for this target


class AssistantError(ValueError):
    """The assistant dataset is absent, unprepared or incompatible; the message says how to fix it."""


def _preprocessed_root() -> Path:
    from nnunetv2.paths import nnUNet_preprocessed

    if not nnUNet_preprocessed.is_set():
        raise AssistantError("nnUNet_preprocessed is not set: run `nnunet-mm env` to see how to set it")
    return Path(nnUNet_preprocessed.get())


def _load_json(path: Path, fix: str) -> dict:
    if not path.is_file():
        raise AssistantError(f"{path} does not exist. {fix}")
    return json.loads(path.read_text())


def _dataset_name(dataset: str | int) -> str:
    try:
        return maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise AssistantError(f"dataset {dataset!r} not found ({e}). Check -d/-a and nnUNet_raw/nnUNet_preprocessed.") \
            from e


def check_compatible(target_json: dict, assistant_json: dict, target_name: str, assistant_name: str) -> None:
    """Same label set (names and values, regions included) and the same number of input channels."""
    if target_json["labels"] != assistant_json["labels"]:
        raise AssistantError(
            f"{assistant_name} has labels {assistant_json['labels']} but {target_name} has {target_json['labels']}. "
            f"MKD needs one label set for both datasets: convert the assistant's labels to the target's first.")
    target_channels = len(target_json["channel_names"])
    assistant_channels = len(assistant_json["channel_names"])
    if target_channels != assistant_channels:
        raise AssistantError(
            f"{assistant_name} has {assistant_channels} input channel(s) but {target_name} has {target_channels}. "
            f"The alignment module translates images channel for channel: give both datasets the same channels.")


def check_new_plans_identifier(name: str, plans_identifier: str, assistant_plans_identifier: str,
                               assistant_folder: Path) -> None:
    """The new identifier names plans written into both datasets and the assistant's preprocessed data, which
    nnU-Net's preprocessing deletes and rewrites: it must not be one of the plans the user already has."""
    if "__" in name:
        raise AssistantError(f"plans identifier {name!r} must not contain '__' (nnU-Net splits result folders on it)")
    if name in (plans_identifier, assistant_plans_identifier):
        raise AssistantError(f"-o {name} would overwrite the {'target' if name == plans_identifier else 'assistant'}'s "
                             f"own plans and the assistant's data preprocessed with them; choose a new identifier "
                             f"(default: {plans_identifier}_mkd_<assistant dataset name>)")
    existing = assistant_folder / f"{name}.json"
    if existing.is_file() and ASSISTANT_MARK not in json.loads(existing.read_text()):
        raise AssistantError(f"{existing} exists and was not written by mkd-prepare: preparing would replace it and "
                             f"the data preprocessed with it; choose another identifier with -o")


def prepare_assistant(target: str | int, assistant: str | int, plans_identifier: str = "nnUNetPlans",
                      configurations: tuple[str, ...] = ("2d",), assistant_plans_identifier: str = "nnUNetPlans",
                      new_plans_identifier: str | None = None, num_processes: int = 1) -> Path:
    """Preprocess ``assistant`` with ``target``'s plans (own normalisation kept) and write the target's MKD
    plans file; returns its path. The target plans file is written last, so a failure leaves no entry
    pointing at a half-preprocessed assistant."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset
    from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import (
        move_plans_between_datasets,
    )

    root = _preprocessed_root()
    target_name, assistant_name = _dataset_name(target), _dataset_name(assistant)
    if target_name == assistant_name:
        raise AssistantError(f"target and assistant are both {target_name}; the assistant is another dataset")
    target_folder, assistant_folder = root / target_name, root / assistant_name
    target_plans = _load_json(target_folder / f"{plans_identifier}.json",
                              f"Plan the target first: nnUNetv2_plan_and_preprocess -d {target_name[7:10]}.")
    own_plans = _load_json(
        assistant_folder / f"{assistant_plans_identifier}.json",
        f"The assistant keeps its own intensity normalisation, which comes from its own plans: run "
        f"nnUNetv2_plan_and_preprocess -d {assistant_name[7:10]} -c {' '.join(configurations)} --no_pp first.")
    target_json = _load_json(target_folder / "dataset.json", "Preprocess the target first.")
    check_compatible(target_json, _load_json(assistant_folder / "dataset.json", "Plan the assistant first."),
                     target_name, assistant_name)
    unknown = [c for c in configurations if c not in target_plans["configurations"]]
    if unknown:
        raise AssistantError(f"configuration(s) {unknown} are not in {target_folder / plans_identifier}.json "
                             f"(it has {sorted(target_plans['configurations'])})")
    for c in configurations:
        if PlansManager(target_plans).get_configuration(c).previous_stage_name is not None:
            raise AssistantError(f"{c} is a cascade stage; MKD trains single-stage configurations (2d, 3d_fullres, "
                                 f"3d_lowres)")

    name = new_plans_identifier or f"{plans_identifier}_mkd_{assistant_name}"
    check_new_plans_identifier(name, plans_identifier, assistant_plans_identifier, assistant_folder)
    move_plans_between_datasets(target_name, assistant_name, plans_identifier, name)
    assistant_plans_file = assistant_folder / f"{name}.json"
    assistant_plans = json.loads(assistant_plans_file.read_text())
    assistant_plans[ASSISTANT_MARK] = target_name
    assistant_plans["foreground_intensity_properties_per_channel"] = \
        own_plans["foreground_intensity_properties_per_channel"]
    own = PlansManager(own_plans)
    for c in configurations:
        own_configuration = own.get_configuration(c if c in own_plans["configurations"]
                                                  else next(iter(own_plans["configurations"])))
        assistant_plans["configurations"][c]["normalization_schemes"] = own_configuration.normalization_schemes
        assistant_plans["configurations"][c]["use_mask_for_norm"] = own_configuration.use_mask_for_norm
    write_text_atomic(assistant_plans_file, json.dumps(assistant_plans, indent=4))

    preprocess_dataset(int(assistant_name[7:10]), name, configurations, [num_processes])

    assistant_manager = PlansManager(assistant_plans)
    mkd_plans = dict(copy.deepcopy(target_plans), plans_name=name)
    for c in configurations:
        knobs = mkd_plans["configurations"][c].setdefault(PLANS_KEY, {}).setdefault("mkd", {})
        knobs.setdefault("ensemble", PREPARED_INFERENCE)
    mkd_plans[ENTRY_KEY] = {
        "dataset": assistant_name, "plans": name, "source_plans": plans_identifier,
        "data_identifier": {c: assistant_manager.get_configuration(c).data_identifier for c in configurations}}
    target_file = target_folder / f"{name}.json"
    write_text_atomic(target_file, json.dumps(mkd_plans, indent=4))
    return target_file


@dataclass(frozen=True)
class Assistant:
    dataset: str
    plans: str
    data_identifier: str
    folder: Path  # preprocessed cases
    dataset_json: dict


def find_assistant(target_plans: dict, configuration: str, target_dataset_json: dict) -> Assistant:
    """The assistant named by the target plans' ``mkd_assistant`` entry, checked to be preprocessed with plans
    that match the target's configuration and to share its labels and channels."""
    name = target_plans.get("plans_name", "?")
    entry = target_plans.get(ENTRY_KEY)
    if entry is None:
        raise AssistantError(
            f"Plans '{name}' of {target_plans.get('dataset_name')} have no '{ENTRY_KEY}' entry, so MKD has no "
            f"assistant dataset. Run `nnunet-mm mkd-prepare -d TARGET -a ASSISTANT -p {name} -c {configuration}` "
            f"and train with the plans it writes (-p {name}_mkd_<assistant>).")
    if configuration not in entry["data_identifier"]:
        raise AssistantError(
            f"The assistant {entry['dataset']} was prepared for {sorted(entry['data_identifier'])}, not "
            f"{configuration}: run `nnunet-mm mkd-prepare ... -c {configuration}` again.")
    root = _preprocessed_root()
    source = f" -p {entry['source_plans']}" if "source_plans" in entry else ""
    rerun = (f"Run `nnunet-mm mkd-prepare -d {target_plans.get('dataset_name')} -a {entry['dataset']}{source} "
             f"-c {configuration} -o {entry['plans']}` again.")
    assistant_folder = root / entry["dataset"]
    folder = assistant_folder / entry["data_identifier"][configuration]
    if not folder.is_dir() or not any(folder.iterdir()):
        raise AssistantError(f"The assistant {entry['dataset']} is not preprocessed: {folder} is missing or empty. "
                             f"{rerun}")
    assistant_plans = _load_json(assistant_folder / f"{entry['plans']}.json", rerun)
    mine = PlansManager(target_plans).get_configuration(configuration)
    theirs = PlansManager(assistant_plans).get_configuration(configuration)
    for field in ("spacing", "patch_size"):
        if list(getattr(mine, field)) != list(getattr(theirs, field)):
            raise AssistantError(
                f"The assistant {entry['dataset']} was preprocessed with plans whose {field} "
                f"{list(getattr(theirs, field))} differs from the target's {list(getattr(mine, field))} "
                f"({assistant_folder / entry['plans']}.json). {rerun}")
    assistant_json = _load_json(assistant_folder / "dataset.json", rerun)
    check_compatible(target_dataset_json, assistant_json, target_plans.get("dataset_name", "the target"),
                     entry["dataset"])
    return Assistant(entry["dataset"], entry["plans"], entry["data_identifier"][configuration], folder,
                     assistant_json)
