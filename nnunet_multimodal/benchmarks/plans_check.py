"""The plans and configuration a benchmark runs, checked before any training or measurement starts: without this,
a missing plans file, a misspelt configuration or a cascade stage surfaces as a traceback from inside
``nnUNetv2_train`` or a measuring process, minutes in."""

from __future__ import annotations

import json
from pathlib import Path


def check_single_stage_configuration(preprocessed: Path, plans: str, configuration: str, command: str,
                                     cascade_advice: str = "") -> None:
    """``configuration`` is in the plans and runs on its own: a cascade stage also needs the previous stage's
    predictions, in training and in prediction, which no benchmark makes. ``command`` names the benchmark in the
    error; ``cascade_advice`` adds a way to still get the cascade's figure."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_file = preprocessed / f"{plans}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(f"{plans_file} does not exist: plan and preprocess the dataset first "
                                f"(nnUNetv2_plan_and_preprocess, and nnunet-mm plans for the plugin's plans) or "
                                f"pass the plans you made with -p")
    try:
        manager = PlansManager(json.loads(plans_file.read_text()))
        configurations = manager.available_configurations
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{plans_file} is no usable nnU-Net plans file ({type(error).__name__}: {error}); write it "
                         f"again with nnUNetv2_plan_and_preprocess (and nnunet-mm plans)") from error
    if configuration not in configurations:
        raise ValueError(f"configuration {configuration!r} is not in {plans_file}: pass -c with one of "
                         f"{', '.join(configurations)}")
    previous_stage = manager.get_configuration(configuration).previous_stage_name
    if previous_stage is not None:
        raise ValueError(f"{configuration} in {plans_file} is a cascade stage (it takes {previous_stage}'s "
                         f"segmentations): benchmark {command} runs single-stage configurations; pass -c "
                         f"{previous_stage} or 3d_fullres{cascade_advice}")
