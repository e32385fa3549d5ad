"""Derive a plans file from nnU-Net's own plans: a tiny CPU variant and/or method knobs.

The derived file keeps every configuration's ``data_identifier`` and spacing, so the data nnU-Net already
preprocessed is reused as it is; only the architecture, patch and batch size (``--tiny``) and the
``multimodal`` knobs change. Changed configurations are written resolved (no ``inherits_from``) with a
complete ``architecture`` block, because nnU-Net merges inherited configurations shallowly; configurations
inheriting from a changed one (the cascade from ``3d_fullres``) get its changes, and their knobs are checked.
"""

from __future__ import annotations

import json
from copy import deepcopy
from pathlib import Path

import numpy as np
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_multimodal.atomic_files import write_text_atomic
from nnunet_multimodal.evaluation.evaluate import read_dataset_json
from nnunet_multimodal.training.knobs import PLANS_KEY

TINY_MAX_STAGES = 4
TINY_FEATURES = (16, 32, 64, 128)
TINY_PATCH = {2: 64, 3: 32}
TINY_BATCH = {2: 4, 3: 2}


def resolve_configuration(plans: dict, name: str) -> dict:
    configurations = plans["configurations"]
    if name not in configurations:
        raise ValueError(f"configuration '{name}' is not in plans '{plans.get('plans_name')}' "
                       f"(it has {sorted(configurations)})")
    configuration = deepcopy(configurations[name])
    parent = configuration.pop("inherits_from", None)
    if parent is None:
        return configuration
    resolved = resolve_configuration(plans, parent)
    resolved.update(configuration)
    return resolved


def inheriting_configurations(plans: dict, names: list[str]) -> list[str]:
    """The configurations that inherit, directly or not, from one of ``names``: nnU-Net resolves them through
    it, so they get its changes (``3d_cascade_fullres`` those of ``3d_fullres``)."""
    def ancestors(name: str) -> list[str]:
        parent = plans["configurations"][name].get("inherits_from")
        return [] if parent is None else [parent, *ancestors(parent)]

    return sorted(c for c in plans["configurations"] if c not in names and set(ancestors(c)) & set(names))


def tiny_configuration(configuration: dict) -> dict:
    """Few stages, narrow features, a small patch and batch: a network that trains in seconds on a CPU."""
    configuration = deepcopy(configuration)
    arch = configuration["architecture"]["arch_kwargs"]
    n = min(arch["n_stages"], TINY_MAX_STAGES)
    dim = len(configuration["patch_size"])
    arch["n_stages"] = n
    arch["features_per_stage"] = list(TINY_FEATURES[:n])
    arch["kernel_sizes"] = arch["kernel_sizes"][:n]
    arch["strides"] = arch["strides"][:n]
    for per_stage in ("n_conv_per_stage", "n_blocks_per_stage"):
        if per_stage in arch:
            arch[per_stage] = [1] * n if per_stage == "n_blocks_per_stage" else arch[per_stage][:n]
    arch["n_conv_per_stage_decoder"] = arch["n_conv_per_stage_decoder"][: n - 1]
    divisors = np.prod(np.array(arch["strides"]), axis=0)
    patch = []
    for size, divisor in zip(configuration["patch_size"], divisors):
        target = min(size, TINY_PATCH[dim])
        patch.append(int(max(divisor, (target // divisor) * divisor)))
    configuration["patch_size"] = patch
    configuration["batch_size"] = TINY_BATCH[dim]
    return configuration


def parse_knob(assignment: str) -> tuple[str, str, object]:
    """``section.name=value`` with a JSON value (strings may be bare): ('section', 'name', value)."""
    key, sep, raw = assignment.partition("=")
    section, dot, name = key.partition(".")
    if not sep or not dot or not section or not name:
        raise ValueError(f"--set expects SECTION.KNOB=VALUE (e.g. maml.branch_width=0.25), got {assignment!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return section, name, value


def derive_plans(source_plans: dict, configurations: list[str], plans_name: str, tiny: bool,
                 knobs: list[str] = ()) -> dict:
    if "__" in plans_name:
        raise ValueError(f"plans name {plans_name!r} must not contain '__' (nnU-Net splits result folders on it)")
    plans = deepcopy(source_plans)
    plans["plans_name"] = plans_name
    for name in configurations:
        configuration = resolve_configuration(plans, name)
        if tiny:
            configuration = tiny_configuration(configuration)
        for section, knob, value in map(parse_knob, knobs):
            configuration.setdefault(PLANS_KEY, {}).setdefault(section, {})[knob] = value
        plans["configurations"][name] = configuration
    return plans


def method_trainers() -> dict[str, type]:
    """The trainer that reads each knob section of the plans."""
    from nnunet_multimodal.training.cmsad import nnUNetTrainerCMSAD
    from nnunet_multimodal.training.maml import nnUNetTrainerMAML
    from nnunet_multimodal.training.mkd import nnUNetTrainerMKD
    from nnunet_multimodal.training.sam_adapter import nnUNetTrainerSAMAdapter

    return {t.knob_section: t for t in (nnUNetTrainerCMSAD, nnUNetTrainerMAML, nnUNetTrainerMKD,
                                        nnUNetTrainerSAMAdapter)}


def check_method_knobs(plans: dict, configurations: list[str], dataset_json: dict) -> None:
    """Every knob section of the given configurations names a method, and that method's network can be built
    with its knobs (on the meta device: no memory, no weights), so a bad value fails now, not at training."""
    trainers = method_trainers()
    plans_manager = PlansManager(plans)
    for name in configurations:
        for section in (resolve_configuration(plans, name).get(PLANS_KEY) or {}):
            if section not in trainers:
                raise ValueError(f"unknown knob section {section!r} in configuration {name!r}; the sections are "
                                 f"{sorted(trainers)} (SECTION.KNOB=VALUE)")
            try:
                trainers[section].check_architecture(plans_manager, name, dataset_json)
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"configuration {name!r}, knobs {section}: {error}") from error


def write_derived_plans(preprocessed_dataset_folder: str | Path, source_plans_name: str,
                        configurations: list[str], plans_name: str, tiny: bool, knobs: list[str] = (),
                        force: bool = False) -> Path:
    """Write the derived plans as ``plans_name``. Rerunning with the same result is a no-op; a different result
    under an existing name is refused without ``force``: nnU-Net reads the plans again for every fold and for
    ``--c``, so folds trained with the old file would no longer match it."""
    folder = Path(preprocessed_dataset_folder)
    source_file = folder / f"{source_plans_name}.json"
    if not source_file.is_file():
        raise FileNotFoundError(
            f"{source_file} does not exist: run nnUNetv2_plan_and_preprocess -d <id> first "
            f"(or pass -p with the plans identifier nnU-Net wrote).")
    source = json.loads(source_file.read_text())
    unknown = [c for c in configurations if c not in source["configurations"]]
    if unknown:
        raise ValueError(f"{source_file} has no configuration {unknown}; it has {sorted(source['configurations'])}")
    if plans_name == source_plans_name:
        raise ValueError(f"-o {plans_name} is the source plans (-p): derived plans get their own identifier, so "
                         f"that nnU-Net's plans and the models trained with them stay as they are")
    target = folder / f"{plans_name}.json"
    derived = json.loads(json.dumps(derive_plans(source, configurations, plans_name, tiny, knobs)))
    if knobs:
        dataset_json_file = folder / "dataset.json"
        if not dataset_json_file.is_file():
            raise FileNotFoundError(f"{dataset_json_file} does not exist: nnUNetv2_plan_and_preprocess writes it; "
                                    f"run it for this dataset first")
        check_method_knobs(derived, [*configurations, *inheriting_configurations(derived, configurations)],
                           read_dataset_json(dataset_json_file))
    if target.exists() and not force:
        existing = json.loads(target.read_text())
        if existing != derived:
            changed = sorted(c for c in set(existing.get("configurations", {})) | set(derived["configurations"])
                             if existing.get("configurations", {}).get(c) != derived["configurations"].get(c))
            raise FileExistsError(
                f"{target} exists with other settings (configurations {changed}), and folds trained with it would no "
                f"longer match it. Derive every configuration in one command (-c 2d 3d_fullres ...), choose another "
                f"identifier (-o), or pass --force to replace it")
    write_text_atomic(target, json.dumps(derived, indent=4))
    return target
