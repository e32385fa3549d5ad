"""Prediction with missing modalities (`nnunet-mm predict --missing`).

A missing modality is zeros in normalised space (filled after nnU-Net's preprocessing) plus an availability mask
for networks that take one (``forward(x, available=...)``). Networks that take no mask get the zeros alone,
with a warning unless they were trained with modality dropout.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nnunet_multimodal.atomic_files import write_text_atomic
from nnunet_multimodal.data.grid import geometry_mismatch, image_geometry
from nnunet_multimodal.data.verify import count_non_finite, group_case_files, read_image
from nnunet_multimodal.inference.output_folder import (
    output_folder_lock,
    record_files_written,
    refuse_files_we_did_not_write,
)
from nnunet_multimodal.training.base import unwrap_network
from nnunet_multimodal.training.checkpointing import read_checkpoint
from nnunet_multimodal.training.modality_dropout import accepts_availability

MODALITIES_USED = "modalities_used.json"


class PredictionInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``predict_folder``: the cases whose outputs are complete (each case's files are renamed
    into place whole, so the others have none)."""

    def __init__(self, output_folder: Path, completed: list[str], total: int):
        super().__init__(f"{len(completed)} of {total} case(s) complete in {output_folder}")
        self.output_folder, self.completed, self.total = output_folder, completed, total


class AvailabilityBoundNetwork(nn.Module):
    """A trained network with a fixed availability mask, called the way nnU-Net's predictor calls networks.
    The predictor loads each fold's weights into the bare network (under torch.compile's wrapper, whose
    state-dict keys carry an ``_orig_mod.`` prefix the checkpoints do not have); the forward goes through
    the compiled one."""

    def __init__(self, network: nn.Module, available: torch.Tensor):
        super().__init__()
        self.network = network
        self.register_buffer("available", available.bool(), persistent=False)
        self.takes_availability = accepts_availability(unwrap_network(network))

    def forward(self, x):
        if self.takes_availability:
            return self.network(x, available=self.available.expand(x.shape[0], -1))
        return self.network(x)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return unwrap_network(self.network).load_state_dict(state_dict, strict=strict, assign=assign)


def trained_with_modality_dropout(model_folder: Path, fold, checkpoint: str) -> bool:
    """From the plugin's checkpoint stamp (memory-mapped: the weights are not read)."""
    from nnunet_multimodal.training.checkpointing import PLUGIN_KEY

    stamp = torch.load(model_folder / f"fold_{fold}" / checkpoint, map_location="cpu", mmap=True,
                       weights_only=False).get(PLUGIN_KEY) or {}
    return stamp.get("knobs", {}).get("modality_dropout_p", 0) > 0


def ensure_writable(folder: Path) -> None:
    """Fail before any prediction work if ``folder`` cannot be created or written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write predictions to {folder} ({e.strerror or e}); choose another output "
                              f"folder (-o) or make this one writable") from e


def modality_labels(channel_names: list[str]) -> list[str]:
    """The names --missing and the subset sweep select modalities by: the dataset.json channel names, a name
    that several channels share (nnU-Net picks normalisation by name, e.g. two "CT" phases) suffixed with
    the channel's file number, as in CASE_0001."""
    return [name if channel_names.count(name) == 1 else f"{name}_{channel:04d}"
            for channel, name in enumerate(channel_names)]


def check_case_files(files: dict[int, Path], missing: set[int], case: str, modalities: list[str]) -> set[int]:
    """The case's absent modalities (``missing`` plus absent files) for a model with ``modalities`` (in channel
    order). Input that would crash the prediction midway or silently give a wrong one raises ValueError naming
    the file and the fix: channel files beyond the model's modalities, nothing left to predict from, unreadable
    or cut-short images, NaN/Inf voxels (SimpleITK's NIfTI reader would turn them into zeros), channels on
    different grids."""
    m = len(modalities)
    extra = sorted(set(files) - set(range(m)))
    if extra:
        raise ValueError(f"{case}: channel files {[files[c].name for c in extra]} are beyond the model's {m} "
                         f"modalities ({', '.join(modalities)}); remove them from the input folder")
    absent = missing | (set(range(m)) - set(files))
    if len(absent) == m:
        raise ValueError(f"{case}: every modality is missing; at least one of {modalities} is needed")
    reference = None
    for channel in sorted(set(range(m)) - absent):
        path = files[channel]
        image = read_image(path)
        if reference is None:
            reference = (path, image_geometry(image))
        else:
            mismatch = geometry_mismatch(reference[1], image_geometry(image))
            if mismatch:
                raise ValueError(f"{path}: {mismatch} (of {reference[0].name}); resample every channel of {case} "
                                 f"onto one grid (e.g. SimpleITK.Resample onto {reference[0].name}) and rerun")
        bad = count_non_finite(path, image)
        if bad:
            raise ValueError(f"{path}: {bad} NaN/Inf voxels would give a wrong prediction; replace them (e.g. "
                             f"numpy.nan_to_num) or re-export the image, or predict without this modality "
                             f"(--missing {modalities[channel]})")
    return absent


def check_trainer_importable(checkpoint_file: Path) -> None:
    """nnU-Net raises a RuntimeError naming neither the checkpoint nor the plugin when the trainer class a
    checkpoint was trained with cannot be found."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    trainer_name = read_checkpoint(checkpoint_file)["trainer_name"]
    try:
        recursive_find_trainer_class_by_name(trainer_name)
    except RuntimeError as e:
        raise ValueError(f"{checkpoint_file} was trained with {trainer_name}, which neither nnU-Net nor "
                         f"nnUNet_extTrainer ({os.environ.get('nnUNet_extTrainer', 'not set')}) defines; install the "
                         f"package that defines it (nnunet-mm env shows the nnUNet_extTrainer value for this "
                         f"plugin's trainers)") from e


class MissingModalityPredictor:
    """nnU-Net's predictor with modalities left out. Built from a trained model folder, or wrapping an
    ``nnUNetPredictor`` the user already holds (``MissingModalityPredictor.wrapping``)."""

    def __init__(self, model_folder: str | Path, folds, checkpoint: str = "checkpoint_final.pth",
                 device: str = "cpu", tile_step_size: float = 0.5, use_mirroring: bool = True):
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        from nnunet_multimodal.evaluation.evaluate import read_dataset_json

        predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_mirroring=use_mirroring,
                                    device=torch.device(device), perform_everything_on_device=device == "cuda",
                                    verbose=False, allow_tqdm=False)
        # nnU-Net's own error for a malformed dataset.json names no file
        read_dataset_json(Path(model_folder) / "dataset.json")
        try:
            predictor.initialize_from_trained_model_folder(str(model_folder), folds, checkpoint)
        except Exception:
            for fold in folds:  # nnU-Net's own error for a corrupt checkpoint does not name the file
                read_checkpoint(Path(model_folder) / f"fold_{fold}" / checkpoint)
            check_trainer_importable(Path(model_folder) / f"fold_{folds[0]}" / checkpoint)
            raise
        self._adopt(predictor, Path(model_folder).name,
                    trained_with_modality_dropout(Path(model_folder), folds[0], checkpoint))

    @classmethod
    def wrapping(cls, predictor, trained_with_dropout: bool = False) -> MissingModalityPredictor:
        """Missing-modality prediction with an ``nnUNetPredictor`` already initialised (from a model folder or by
        ``manual_initialization``). ``trained_with_dropout``: the model learnt with modality dropout, so zeros for a
        missing modality are what it saw in training (networks taking an availability mask need not say)."""
        if predictor.network is None:
            raise ValueError("the nnUNetPredictor is not initialised: call initialize_from_trained_model_folder or "
                             "manual_initialization first")
        wrapper = cls.__new__(cls)
        wrapper._adopt(predictor, predictor.trainer_name, trained_with_dropout)
        return wrapper

    def _adopt(self, predictor, model_name: str, trained_with_dropout: bool) -> None:
        configuration = predictor.configuration_manager
        if configuration.previous_stage_name is not None:
            raise ValueError(f"{model_name} is a cascade stage: its network also takes the segmentations "
                             f"of {configuration.previous_stage_name}, which nnunet-mm predict does not pass; predict "
                             f"it with nnUNetv2_predict -prev_stage_predictions (every modality present)")
        self.predictor = predictor
        self.network = predictor.network
        channels = predictor.dataset_json["channel_names"]
        self.modalities = modality_labels([channels[k] for k in sorted(channels, key=int)])
        self.file_ending = predictor.dataset_json["file_ending"]
        self.trained_for_missing = accepts_availability(unwrap_network(self.network)) or trained_with_dropout

    def resolve_missing(self, names) -> set[int]:
        unknown = sorted(set(names) - set(self.modalities))
        if unknown:
            raise ValueError(f"--missing names {unknown} are not modalities of this model; its modalities are "
                             f"{self.modalities} (dataset.json channel_names)")
        return {self.modalities.index(n) for n in names}

    def predict_case(self, files: dict[int, Path], missing: set[int], output_file_truncated: Path,
                     save_probabilities: bool = False) -> list[str]:
        """Check and predict one case; returns the modalities used. The output appears complete or not at all."""
        absent = check_case_files(files, missing, output_file_truncated.name, self.modalities)
        return self.predict_checked_case(files, absent, output_file_truncated, save_probabilities)

    def predict_checked_case(self, files: dict[int, Path], absent: set[int], output_file_truncated: Path,
                             save_probabilities: bool = False) -> list[str]:
        """Predict one case whose absent modalities ``check_case_files`` returned."""
        from nnunetv2.inference.export_prediction import export_prediction_from_logits

        m = len(self.modalities)
        if absent and not self.trained_for_missing:
            warnings.warn(f"{type(unwrap_network(self.network)).__name__} was not trained for missing modalities; "
                          f"{[self.modalities[i] for i in sorted(absent)]} are given as zeros", stacklevel=3)
        stand_in = files[min(set(files) - absent)]
        image_files = [str(files[i]) if i not in absent else str(stand_in) for i in range(m)]
        configuration = self.predictor.configuration_manager
        preprocessor = configuration.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case(image_files, None, self.predictor.plans_manager, configuration,
                                                    self.predictor.dataset_json)
        data = np.asarray(data, dtype=np.float32)
        data[sorted(absent)] = 0
        available = torch.tensor([i not in absent for i in range(m)])
        self.predictor.network = AvailabilityBoundNetwork(self.network, available)
        try:
            logits = self.predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        finally:
            self.predictor.network = self.network
        output_file_truncated.parent.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(dir=output_file_truncated.parent, prefix=".partial-") as tmp:
                export_prediction_from_logits(logits, properties, configuration, self.predictor.plans_manager,
                                              self.predictor.dataset_json, os.path.join(tmp, "case"),
                                              save_probabilities)
                for produced in Path(tmp).iterdir():
                    suffix = produced.name[len("case"):]
                    os.replace(produced, f"{output_file_truncated}{suffix}")
        except OSError as e:
            raise OSError(e.errno, f"writing {output_file_truncated}{self.file_ending} failed ({e.strerror or e}); "
                                   f"nothing of this case was left behind. Free disk space or choose another "
                                   f"output folder (-o), then rerun") from e
        return [self.modalities[i] for i in range(m) if i not in absent]

    def output_names(self, cases, save_probabilities: bool) -> list[str]:
        """The files predicting ``cases`` writes into the output folder."""
        endings = [self.file_ending, *((".npz", ".pkl") if save_probabilities else ())]
        return [f"{case}{ending}" for case in cases for ending in endings] + [MODALITIES_USED]

    def predict_folder(self, input_folder: str | Path, output_folder: str | Path, missing_names=(),
                       save_probabilities: bool = False, overwrite: bool = False) -> dict[str, list[str]]:
        """Every case is checked before the first is predicted, so bad input leaves no partial output. Files in
        ``output_folder`` of this run's names that no earlier run wrote are refused unless ``overwrite``; a
        run already writing there is refused. Ctrl-C raises PredictionInterrupted naming the complete cases."""
        missing = self.resolve_missing(missing_names)
        input_folder, output_folder = Path(input_folder), Path(output_folder)
        if output_folder.resolve() == input_folder.resolve():
            raise ValueError(f"-o {output_folder} is the input folder: the next run would read the predictions as "
                             f"images; choose another output folder")
        cases = group_case_files(input_folder, self.file_ending)
        if not cases:
            raise FileNotFoundError(f"no CASE_XXXX{self.file_ending} images in {input_folder}")
        absent = {case: check_case_files(files, missing, case, self.modalities)
                  for case, files in sorted(cases.items())}
        ensure_writable(output_folder)
        with output_folder_lock(output_folder):
            names = self.output_names(cases, save_probabilities)
            if not overwrite:
                refuse_files_we_did_not_write(output_folder, names, "pass --overwrite")
            record_files_written(output_folder, names)
            used = {}
            try:
                for case in sorted(cases):
                    used[case] = self.predict_checked_case(cases[case], absent[case], output_folder / case,
                                                           save_probabilities)
            except KeyboardInterrupt as e:
                raise PredictionInterrupted(output_folder, list(used), len(cases)) from e
            write_text_atomic(output_folder / MODALITIES_USED, json.dumps(used, indent=2))
        return used
